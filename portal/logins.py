"""Sign-ins that can be ended: expiry inside the signed id, revocation markers in the cache.

Flask-Login keeps `User.get_id()` in the session and in the remember-me cookie and hands it back
to the user loader on every request. The portal's id is ``username|sid|issued|expires``:

- the expiry travels inside the signed value (Flask-Login's remember cookie has none of its own,
  so a stolen one would otherwise work for as long as the secret key does);
- signing out stores ``ended:<sid>`` in the shared cache, so copies of that session's cookies
  stop working too;
- "sign out everywhere" and an administrator's revoke store ``revoked:<username>`` with the
  time, so every sign-in issued before it ends, remember-me cookies included.

No I/O here: reading and writing the markers is the caller's business.
"""

from __future__ import annotations

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

    @property
    def id(self) -> str:
        """The string Flask-Login stores in the session and the remember-me cookie."""
        return _SEPARATOR.join((self.username, self.sid, str(self.issued), str(self.expires)))

    def expired(self, now_ms: int) -> bool:
        """Tell whether the sign-in has outlived its lifetime."""
        return now_ms >= self.expires

    def revoked(self, revoked_before: object, ended: object) -> bool:
        """Tell whether a revocation marker read from the cache ends this sign-in."""
        if ended:
            return True
        # Markers are numbers the portal wrote; anything else is not a marker (ignored).
        return isinstance(revoked_before, int | float) and self.issued <= revoked_before


def new_login(username: str, now_ms: int, lifetime_ms: int) -> Login:
    """Start a sign-in for `username` lasting `lifetime_ms` from `now_ms`."""
    return Login(username, secrets.token_urlsafe(16), now_ms, now_ms + lifetime_ms)


def parse(login_id: object) -> Login | None:
    """Read a login id back; None for anything the portal did not write (old or forged)."""
    if not isinstance(login_id, str):
        return None
    # From the right: a directory username may itself contain the separator.
    parts = login_id.rsplit(_SEPARATOR, 3)
    if len(parts) != 4:
        return None
    username, sid, issued, expires = parts
    if not (username and sid and _is_number(issued) and _is_number(expires)):
        return None
    return Login(username, sid, int(issued), int(expires))


def revoked_key(username: str) -> str:
    """Cache key of a person's "every sign-in before this time has ended" marker."""
    return "revoked:" + username


def ended_key(sid: str) -> str:
    """Cache key of the marker that one sign-in was signed out."""
    return "ended:" + sid


def _is_number(text: str) -> bool:
    # str.isdigit() alone also accepts digits such as "²" that int() refuses.
    return text.isascii() and text.isdigit()
