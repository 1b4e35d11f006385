"""Account state from directory data: disabled, locked, must change password. Pure functions.

Active Directory keeps it in userAccountControl (bit 0x2 disabled), the constructed
msDS-User-Account-Control-Computed (0x10 locked out, 0x800000 password expired) and pwdLastSet
(0: must change), and explains refused binds as "data 773" and the like. OpenLDAP's ppolicy
keeps pwdAccountLockedTime and pwdReset, and explains binds in a response control.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from .mapping import first_value

PPOLICY_CONTROL = "1.3.6.1.4.1.42.2.27.8.5.1"

_AD_DISABLED, _AD_LOCKED, _AD_PASSWORD_EXPIRED = 0x2, 0x10, 0x800000
# The "data NNN" code of an Active Directory bind refusal (AcceptSecurityContext error).
_AD_DATA = re.compile(r"\bdata ([0-9a-f]{3,4})\b", re.IGNORECASE)
_PPOLICY_ERRORS = {0: "expired", 1: "locked", 2: "reset"}

#: The attributes each mode needs read with the person's entry.
ATTRIBUTES = {
    "none": [],
    "ad": ["userAccountControl", "msDS-User-Account-Control-Computed", "pwdLastSet",
           "accountExpires"],
    "ppolicy": ["pwdAccountLockedTime", "pwdReset", "pwdGraceUseTime", "pwdChangedTime"],
}  # fmt: skip
#: The clock expiry is judged by (a function, so tests can move it without moving others').
clock = time.time
# accountExpires is a FILETIME (100 ns steps since 1601); 0 and the largest value mean never.
_FILETIME_EPOCH_OFFSET = 11644473600
_NEVER = {0, 0x7FFFFFFFFFFFFFFF}


class State(enum.Enum):
    """What an account may do."""

    OK = "ok"
    DISABLED = "disabled"
    LOCKED = "locked"
    MUST_CHANGE_PASSWORD = "must change password"  # noqa: S105 - a state, not a password


#: What tells when a password expires: AD computes it; with ppolicy, the policy an entry names.
EXPIRY_ATTRIBUTES = {
    "none": [],
    "ad": ["msDS-UserPasswordExpiryTimeComputed"],
    "ppolicy": ["pwdPolicySubentry"],
}


def password_expiry(settings, attributes: Mapping, policy_max_age) -> float:
    """When the person's password expires (epoch seconds), 0 when it never does or nobody
    says. `policy_max_age(dn)` reads a ppolicy entry's pwdMaxAge (seconds, 0: never)."""
    if settings.account_state == "ad":
        expires = _integer(attributes, "msDS-UserPasswordExpiryTimeComputed")
        return 0.0 if expires in _NEVER else expires / 10**7 - _FILETIME_EPOCH_OFFSET
    if settings.account_state != "ppolicy":
        return 0.0
    changed = _generalized_time(first_value(attributes, "pwdChangedTime"))
    if changed is None:
        return 0.0
    policy = first_value(attributes, "pwdPolicySubentry") or settings.password_policy_dn
    max_age = policy_max_age(policy) if policy else settings.password_max_age_days * 86400
    return changed + max_age if max_age > 0 else 0.0


def from_entry(settings, attributes: Mapping, now: float | None = None) -> State:
    """The account state the person's entry records (settings: LDAP_ACCOUNT_STATE and age)."""
    now = clock() if now is None else now
    if settings.account_state == "ad":
        return _active_directory_state(attributes, now)
    if settings.account_state == "ppolicy":
        if first_value(attributes, "pwdAccountLockedTime"):
            return State.LOCKED
        if first_value(attributes, "pwdReset").upper() == "TRUE":
            return State.MUST_CHANGE_PASSWORD
        if first_value(attributes, "pwdGraceUseTime"):  # expired, signing in on grace logins
            return State.MUST_CHANGE_PASSWORD
        changed = _generalized_time(first_value(attributes, "pwdChangedTime"))
        max_age = settings.password_max_age_days * 86400
        if max_age and changed is not None and changed + max_age < now:
            return State.MUST_CHANGE_PASSWORD
    return State.OK


def grace_logins_left(result: Mapping) -> int | None:
    """The grace logins an expired password has left after this bind, as the ppolicy response
    control says (graceAuthNsRemaining); None when it says nothing of them."""
    return _ppolicy_response(result)[0]


def _ppolicy_response(result: Mapping) -> tuple[int | None, str | None]:
    # (grace logins remaining, error name) of a bind answer's ppolicy control; (None, None)
    # without one, or for a malformed one, which tells nothing.
    control = (result.get("controls") or {}).get(PPOLICY_CONTROL) or {}
    if not control:
        return None, None
    try:
        return decode_ppolicy_response(control.get("value") or b"")
    except (IndexError, ValueError):
        return None, None


#: How service_password_problem's answer begins for an expiry still to come (not yet urgent).
EXPIRES_SOON = "its password expires"


def service_password_problem(result: Mapping) -> str:
    """What the ppolicy response control of a bind says must be done about that account's
    password ("" when it says nothing): for the portal's own service account, whose notice of
    an expiry comes only in the answers to its binds."""
    control = (result.get("controls") or {}).get(PPOLICY_CONTROL) or {}
    try:
        grace, error = decode_ppolicy_response(control.get("value") or b"")
        seconds = time_before_expiration(control.get("value") or b"")
    except (IndexError, ValueError):
        return ""
    if error == "expired":
        return "its password has expired (the directory's password policy)"
    if error == "reset":
        return ("its password was set by an administrator and must be changed before the "
                "directory lets it search (pwdReset)")  # fmt: skip
    if grace is not None:
        return (f"its password has expired: the directory takes it {grace} more time(s) "
                "(grace logins; each new connection and probe uses one), then refuses "
                "it")  # fmt: skip
    if seconds is not None:
        days = seconds // 86400
        when = f"in {days} day{'s' if days != 1 else ''}" if days else "within a day"
        return f"{EXPIRES_SOON} {when} (the directory's password policy)"
    return ""


def time_before_expiration(value: bytes) -> int | None:
    """The seconds before a password expires that a PasswordPolicyResponseValue warns of
    (timeBeforeExpiration), or None."""
    for tag, content in _children(value, expect=0x30):
        if tag == 0xA0:
            for choice, number in _children(content):
                if choice == 0x80:
                    return int.from_bytes(number, "big")
    return None


def from_bind(result: Mapping) -> State:
    """The account state a bind answer reveals (OK when it reveals nothing).

    Understands Active Directory's "data NNN" diagnostics and the ppolicy response control,
    whatever LDAP_ACCOUNT_STATE says: a server that explains a refusal is always listened to.
    """
    found = _AD_DATA.search(str(result.get("message") or ""))
    code = found.group(1).lower() if found else ""
    if code in ("532", "773"):
        return State.MUST_CHANGE_PASSWORD
    if code in ("533", "701"):
        return State.DISABLED
    if code == "775":
        return State.LOCKED
    grace, error = _ppolicy_response(result)
    if error == "locked":
        return State.LOCKED
    if error in ("expired", "reset") or grace is not None:
        return State.MUST_CHANGE_PASSWORD
    return State.OK


def _active_directory_state(attributes: Mapping, now: float) -> State:
    control = _integer(attributes, "userAccountControl")
    computed = _integer(attributes, "msDS-User-Account-Control-Computed")
    expires = _integer(attributes, "accountExpires")
    if control & _AD_DISABLED:
        return State.DISABLED
    if expires not in _NEVER and expires / 10**7 - _FILETIME_EPOCH_OFFSET < now:
        return State.DISABLED  # the account itself has expired
    if computed & _AD_LOCKED:
        return State.LOCKED
    if computed & _AD_PASSWORD_EXPIRED or first_value(attributes, "pwdLastSet") == "0":
        return State.MUST_CHANGE_PASSWORD
    return State.OK


def _generalized_time(text: str) -> float | None:
    try:
        return datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def decode_ppolicy_response(value: bytes) -> tuple[int | None, str | None]:
    """Decode a PasswordPolicyResponseValue: (grace logins remaining, error name).

    The value is a BER SEQUENCE of an optional [0] warning (a CHOICE of [0]
    timeBeforeExpiration or [1] graceAuthNsRemaining) and an optional [1] ENUMERATED error.
    """
    grace = error = None
    body = _children(value, expect=0x30)
    for tag, content in body:
        if tag == 0xA0:  # warning
            for choice, number in _children(content):
                if choice == 0x81:
                    grace = int.from_bytes(number, "big")
        elif tag == 0x81:  # error
            error = _PPOLICY_ERRORS.get(int.from_bytes(content, "big"), "other")
    return grace, error


def ppolicy_error_number(value: bytes) -> int | None:
    """The error number of a PasswordPolicyResponseValue (e.g. 6 passwordTooShort), or None."""
    for tag, content in _children(value, expect=0x30):
        if tag == 0x81:
            return int.from_bytes(content, "big")
    return None


def _children(data: bytes, expect: int | None = None) -> list[tuple[int, bytes]]:
    # Minimal BER: definite lengths only, which is all a ppolicy control uses.
    if expect is not None:
        if not data or data[0] != expect:
            return []
        data = _value(data, 0)[0]
    items, position = [], 0
    while position < len(data):
        tag = data[position]
        content, position = _value(data, position)
        items.append((tag, content))
    return items


def _value(data: bytes, position: int) -> tuple[bytes, int]:
    length, position = data[position + 1], position + 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[position : position + size], "big")
        position += size
    return data[position : position + length], position + length


def _integer(attributes: Mapping, name: str) -> int:
    try:
        return int(first_value(attributes, name) or 0)
    except ValueError:
        return 0
