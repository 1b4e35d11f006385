"""Sign-ins that can be ended: expiry inside the signed id, revocation markers in the cache.

Flask-Login keeps `User.get_id()` in the session and in the remember-me cookie and hands it back
to the user loader on every request. The portal's id is ``username|sid|issued|expires|stamp``:

- the expiry travels inside the signed value (Flask-Login's remember cookie has none of its own,
  so a stolen one would otherwise work for as long as the secret key does);
- signing out marks that sign-in as ended, so copies of that session's cookies stop working too;
- "sign out everywhere" and an administrator's revoke mark every sign-in of the person issued
  until then as ended, remember-me cookies included;
- ``stamp`` names the password the sign-in was made with (a hash of the directory's
  password-changed time): once the directory says the password changed, sign-ins made with
  the old one end at the next directory read, as Django's session auth hash does.

No I/O here: portal.signin.revocations keeps the marks, apart from the user cache.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

_SEPARATOR = "|"
# The wall clock, looked up on each call so tests can move it instead of waiting.
_clock = time.time


def now_ms() -> int:
    """The current time in epoch milliseconds, the unit of a login's times."""
    return int(_clock() * 1000)


@dataclass(frozen=True)
class Login:
    """One sign-in: who, its random id, and when it began and ends (epoch milliseconds)."""

    username: str
    sid: str
    issued: int
    expires: int
    stamp: str = ""

    @property
    def id(self) -> str:
        """The string Flask-Login stores in the session and the remember-me cookie."""
        parts = (self.username, self.sid, str(self.issued), str(self.expires), self.stamp)
        return _SEPARATOR.join(parts)

    def expired(self, now_ms: int) -> bool:
        """Tell whether the sign-in has outlived its lifetime."""
        return now_ms >= self.expires

    def revoked(self, revoked_before: int | None, ended: bool) -> bool:
        """Tell whether the person's before mark, or this sign-in's own end mark, ends it."""
        return ended or (revoked_before is not None and self.issued <= revoked_before)


def new_login(username: str, now_ms: int, lifetime_ms: int, stamp: str = "") -> Login:
    """Start a sign-in for `username` lasting `lifetime_ms` from `now_ms`, made with the
    password `stamp` names (see `password_stamp`)."""
    return Login(username, secrets.token_urlsafe(16), now_ms, now_ms + lifetime_ms, stamp)


def password_stamp(changed: str) -> str:
    """A short name for the password-changed time the directory gave ("" when it gave none)."""
    if not changed:
        return ""
    return hashlib.sha256(b"portal.password|" + changed.encode()).hexdigest()[:16]


def entry_stamp(attrs) -> str:
    """A short name for the directory entry and password a login is made with: the password's
    changed time and the entry's id. A login ends when either differs, so a cookie of someone
    deleted or renamed never opens the entry that later takes the same username."""
    changed, entry = attrs.get("password_changed") or "", attrs.get("entry_id") or ""
    if not entry:
        return password_stamp(changed)
    text = f"{changed}|{entry}".encode()
    return hashlib.sha256(b"portal.entry|" + text).hexdigest()[:16]


def parse(login_id: object) -> Login | None:
    """Read a login id back; None for anything the portal did not write (old or forged)."""
    if not isinstance(login_id, str):
        return None
    # From the right: a directory username may itself contain the separator.
    parts = login_id.rsplit(_SEPARATOR, 4)
    if len(parts) != 5:
        return None
    username, sid, issued, expires, stamp = parts
    if not (username and sid and _is_number(issued) and _is_number(expires)):
        return None
    if stamp and not (len(stamp) == 16 and all(c in "0123456789abcdef" for c in stamp)):
        return None
    return Login(username, sid, int(issued), int(expires), stamp)


def _is_number(text: str) -> bool:
    # str.isdigit() alone also accepts digits such as "²" that int() refuses.
    return text.isascii() and text.isdigit()
