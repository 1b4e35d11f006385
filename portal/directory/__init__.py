"""Everything that speaks LDAP, behind four functions: authenticate, lookup, check_health, init_app.

Vocabulary: a ``*_dn`` is a DN string as the server returned it; ``attrs`` is the plain dict a
person is cached as (username, dn, display_name, email, groups); ``username`` is always the
canonical, lower-cased login name. Expected failures (unknown user, wrong password, disabled
or locked account) return None; ``PasswordChangeRequired`` means the password was right but
has expired or was reset; ``DirectoryUnavailable`` means the directory could not answer;
``InvalidInput`` means the input was refused before any LDAP traffic. This package never
touches the request, the session or templates.
"""

from __future__ import annotations

from flask import Flask, current_app

from . import passwords
from .breaker import BreakerState
from .connections import breaker_of
from .errors import DirectoryError, DirectoryUnavailable, InvalidInput, PasswordChangeRequired
from .passwords import PasswordRefused
from .queries import login_forms, normalise_username
from .service import Directory, ServerHealth
from .settings import DirectorySettings

__all__ = [
    "Directory",
    "DirectoryError",
    "DirectoryUnavailable",
    "InvalidInput",
    "PasswordChangeRequired",
    "PasswordRefused",
    "ServerHealth",
    "BreakerState",
    "authenticate",
    "breaker_states",
    "canonical_username",
    "change_password",
    "check_health",
    "some_server_answers",
    "init_app",
    "lookup",
    "normalise_username",
]

_EXTENSION = "portal.directory"


def init_app(app: Flask) -> None:
    """Create the app's Directory from its LDAP_* settings (no connection is opened yet)."""
    app.extensions[_EXTENSION] = Directory(DirectorySettings.from_config(app.config))


def get_directory() -> Directory:
    """Return the current app's Directory."""
    return current_app.extensions[_EXTENSION]


def authenticate(username: object, password: object) -> dict | None:
    """Verify a password by search-then-bind; return the person's attrs, or None if refused.

    Within LDAP_LOGIN_DEADLINE: past it, DirectoryUnavailable (see deadline.py).
    """
    found = get_directory()
    return found.deadline.run(found.authenticate, username, password)


def lookup(username: str, nesting: dict[str, str] | None = None,
           for_sign_ins: bool = False) -> dict | None:  # fmt: skip
    """Read a person's current attrs by canonical username; None if they no longer exist.

    Pass a dict as `nesting` to learn, for each nested group, the group it was reached through;
    `for_sign_ins` when the answer decides the person's sign-ins (an unusable state is logged).
    """
    return get_directory().lookup(username, nesting, for_sign_ins)


def check_new_password(password: object) -> None:
    """Raise InvalidInput for a password that may never be sent (empty, too long, control
    characters), and PasswordRefused for one a sign-in would send altered, before a change is
    tried."""
    passwords.check_new(password, get_directory().settings.password_max_length)


def change_password(username: object, current: object, new: object, may_use=None) -> str:
    """Change a person's own password (the directory's policy deciding); their canonical name.
    With `may_use(groups)`, only for a person it accepts (asked once the current password is
    proved).

    Within LDAP_LOGIN_DEADLINE, like a sign-in. Raises InvalidInput, PasswordRefused (see
    passwords.py for the reasons) or DirectoryUnavailable.
    """
    found = get_directory()
    return found.deadline.run(found.change_password, username, current, new, may_use)


def unusable_reason(username: str) -> str:
    """Why a person has no usable account: "no such person", "disabled", "locked"... ("" when
    they have one). For the admin look-up: sign-ins never tell these apart."""
    return get_directory().unusable_reason(username)


def change_feed():
    """A feed of the people whose entries or groups change (one paged search per base per
    poll): see changes.py."""
    return get_directory().change_feed()


def identity(username: str, any_state: bool = False) -> str | None:
    """The portal's name for the person a name finds (another spelling, an e-mail), or None;
    with `any_state`, a disabled account's too."""
    return get_directory().identity(username, any_state)


def canonical_username(typed: object) -> str:
    """The name as sessions and the cache key it: trimmed, lower-cased, without a known domain."""
    settings = get_directory().settings
    name, _ = login_forms(typed, settings.username_max_length, settings.login_domains)
    return name


def breaker_states() -> list[BreakerState]:
    """Each server's circuit breaker in this process, in LDAP_URLS order."""
    return [breaker_of(server).snapshot() for server in get_directory().servers]


#: A sign-in waiting this long (seconds) on the directory says it is hung: a healthy one
#: answers in milliseconds, and within a second under a burst of sign-ins on a busy machine.
HUNG_SECONDS = 1.0


def struggling() -> bool:
    """Whether, as this process sees it, the directory cannot check passwords now: a sign-in
    here has waited on it HUNG_SECONDS."""
    return get_directory().deadline.waited_longest() >= HUNG_SECONDS


def some_server_answers() -> bool:
    """Whether some directory server answers now (a fresh service bind and search); as soon as
    the first one does."""
    return get_directory().some_server_answers()


def check_health() -> list[ServerHealth]:
    """Probe every configured server with a service bind and a base search."""
    return get_directory().check_health()
