"""Changing one's own password, with the directory's own policy deciding.

OpenLDAP and most directories: the Password Modify extended operation (RFC 3062), bound as the
person with the current password, so the server hashes the new one and applies its password
policy (ppolicy answers why it refused in its response control). Active Directory: a modify of
unicodePwd that deletes the current quoted UTF-16LE value and adds the new one, bound as the
person (the change a user may make, not an administrator's reset); AD accepts it only over an
encrypted connection. Refusals come back as a reason, never as the server's own diagnostic.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import ldap3
from ldap3.protocol.sasl.sasl import validate_simple_password

from . import account_state
from .connections import discard, open_connection, service_bind_refusal
from .errors import DirectoryError, DirectoryUnavailable
from .queries import check_password
from .search import OUTAGE_CODES, SERVER_DOWN_CODES
from .settings import DirectorySettings

#: Why a change was refused (PasswordRefused.reason).
WRONG_CURRENT = "wrong current password"
TOO_SHORT = "too short"
IN_HISTORY = "used before"
NOT_COMPLEX = "not complex enough"
TOO_YOUNG = "changed too recently"
NOT_ALLOWED = "changes not allowed"
POLICY = "does not meet the password policy"
EXPIRED = "expired, no grace login left"
ALTERED = "altered by the preparation for a bind"
#: The password was right, but the portal may not serve this person (their groups).
REFUSED_BY_PORTAL = "not allowed to use the portal"

# ppolicy's PasswordPolicyResponseValue error numbers (draft-behera 6.2) for a change.
# 4 (mustSupplyOldPassword) follows a bind with that very password: a refusal, not a guess.
_PPOLICY_REFUSALS = {3: NOT_ALLOWED, 4: NOT_ALLOWED, 5: NOT_COMPLEX, 6: TOO_SHORT,
                     7: TOO_YOUNG, 8: IN_HISTORY}  # fmt: skip
# Active Directory's "data"/error word in the diagnostic of a refused unicodePwd change.
_AD_WRONG_CURRENT = re.compile(r"\b00000056\b|\bdata 56\b", re.IGNORECASE)
_AD_POLICY = re.compile(r"\b0000052D\b", re.IGNORECASE)


class PasswordRefused(DirectoryError):
    """The directory refused the new password (or the current one was wrong): see `reason`.

    `grace_logins_left` is what remains of an expired password's grace logins after the
    change's own bind (ppolicy's graceAuthNsRemaining), or None when the directory did not say.
    """

    def __init__(self, reason: str, grace_logins_left: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.grace_logins_left = grace_logins_left


def check_new(password: object, max_length: int) -> str:
    """Return a new password unchanged if it can be set and then signed in with, else raise
    InvalidInput (as check_password) or PasswordRefused(ALTERED).

    Every bind sends a password prepared as RFC 4013 says ("\u00a0" a space, "\ufb01" "fi", a
    soft hyphen nothing), and the Password Modify operation sets the prepared form, while AD's
    unicodePwd is set as typed: either way one side would not match the other (signing in here,
    or on another system). So a new password must be its own preparation.
    """
    check_password(password, max_length)
    if validate_simple_password(password) != password.encode("utf-8"):
        raise PasswordRefused(ALTERED)
    return password


def change(servers, settings: DirectorySettings, dn: str, current: str, new: str,
           before_change: Callable[[], None] | None = None) -> None:  # fmt: skip
    """Change the password of the entry `dn` from `current` to `new`, bound as that entry;
    `before_change()` is called once the bind is done, before anything is changed (it may
    raise PasswordRefused).

    Raises PasswordRefused with the reason, DirectoryUnavailable when no server answers.
    """
    active_directory = settings.account_state == "ad"
    if active_directory and not _encrypted(settings):
        # AD refuses unicodePwd in clear; a clear-text password must not travel either.
        raise PasswordRefused(NOT_ALLOWED)
    policy_control = [(account_state.PPOLICY_CONTROL, False, None)]
    connection, bound = open_connection(servers, settings, dn, current, writable=True,
                                        controls=policy_control)  # fmt: skip
    # Each bind on an expired password uses a grace login, this one too: the person must
    # know how many a refused new password leaves them (read before other operations).
    grace = account_state.grace_logins_left(dict(connection.result or {})) if bound else None
    try:
        if not bound:
            state = account_state.from_bind(dict(connection.result or {}))
            code = (connection.result or {}).get("result")
            discard(connection)
            # 13: the server wants TLS: the portal's setup, not the person's password.
            if code in OUTAGE_CODES or code in SERVER_DOWN_CODES or code == 13:
                raise DirectoryUnavailable(f"the bind for a password change answered {code}")
            if not (active_directory and state is account_state.State.MUST_CHANGE_PASSWORD):
                # ppolicy: an expired password with no grace login left cannot bind at all.
                raise PasswordRefused(EXPIRED if state is account_state.State.MUST_CHANGE_PASSWORD
                                      else WRONG_CURRENT)  # fmt: skip
            # AD refuses the bind of a password that must be changed (data 532, 773): the
            # change goes over the service account, and deleting the old value is what proves
            # the person knows it (AD grants "Change Password" to everyone by default).
            connection, bound = open_connection(servers, settings, settings.bind_dn,
                                                settings.bind_password, writable=True)  # fmt: skip
            if not bound:
                raise service_bind_refusal(connection, settings)
        if before_change is not None:
            before_change()
        if active_directory:
            connection.modify(dn, unicode_pwd_change(current, new))
        else:
            connection.extend.standard.modify_password(
                user=dn, old_password=current, new_password=new,
                controls=[(account_state.PPOLICY_CONTROL, False, None)],
            )  # fmt: skip
        result = dict(connection.result or {})
    except DirectoryError:
        raise
    except Exception as error:  # noqa: BLE001 - the server failed mid-operation
        raise DirectoryUnavailable(f"the password change failed: {type(error).__name__}") from None
    finally:
        connection.password = connection.request = None  # no password kept
        discard(connection)
    refusal = refusal_of(result, active_directory)
    if refusal is not None:
        raise PasswordRefused(refusal, grace)


def unicode_pwd_change(current: str, new: str) -> dict:
    """The modify AD requires for a user's own change: delete the old value, add the new one,
    each the password in double quotes, UTF-16LE encoded."""

    def quoted(password: str) -> bytes:
        return f'"{password}"'.encode("utf-16-le")

    return {"unicodePwd": [(ldap3.MODIFY_DELETE, [quoted(current)]),
                           (ldap3.MODIFY_ADD, [quoted(new)])]}  # fmt: skip


def refusal_of(result: dict, active_directory: bool) -> str | None:
    """The reason a password change result says it was refused, None when it succeeded."""
    code = result.get("result")
    if code == 0:
        return None
    if code in (49, 50, 53) and not active_directory:
        # 50 insufficientAccessRights / 53 unwillingToPerform: the policy forbids own changes.
        return WRONG_CURRENT if code == 49 else NOT_ALLOWED
    control = (result.get("controls") or {}).get(account_state.PPOLICY_CONTROL) or {}
    number = account_state.ppolicy_error_number(control.get("value") or b"")
    if number in _PPOLICY_REFUSALS:
        return _PPOLICY_REFUSALS[number]
    message = str(result.get("message") or "")
    if active_directory and _AD_WRONG_CURRENT.search(message):
        return WRONG_CURRENT
    if active_directory and _AD_POLICY.search(message):
        return POLICY
    if code == 19:  # constraintViolation without a reason we know
        return POLICY
    if code in (50, 53) or code == 2:  # rights, unwilling, or an operation AD does not know
        return NOT_ALLOWED
    if code in OUTAGE_CODES or code in SERVER_DOWN_CODES:
        raise DirectoryUnavailable(f"the password change answered result {code}")
    return NOT_ALLOWED


def _encrypted(settings: DirectorySettings) -> bool:
    return settings.start_tls or all(url.lower().startswith("ldaps://") for url in settings.urls)
