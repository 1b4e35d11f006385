"""Pure helpers: account state, ppolicy control decoding, login name forms, DN templates."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from portal.directory.account_state import (
    PPOLICY_CONTROL,
    State,
    decode_ppolicy_response,
    from_bind,
    from_entry,
)
from portal.directory.errors import InvalidInput
from portal.directory.groups import rdn_value
from portal.directory.queries import bind_name, login_forms

DOMAINS = frozenset({"corp.example", "corp"})
NOW = 1_795_000_000.0  # 2026-11-18, the clock every state below is judged at


def mode(name: str, max_age_days: int = 0):
    """Just the settings account_state reads."""
    return SimpleNamespace(account_state=name, password_max_age_days=max_age_days)


def filetime(unix_seconds: float) -> str:
    """An AD FILETIME (100 ns since 1601) for a Unix time."""
    return str(int((unix_seconds + 11644473600) * 10**7))


@pytest.mark.parametrize(
    ("attributes", "state"),
    [
        ({"userAccountControl": ["512"]}, State.OK),
        ({"userAccountControl": ["514"]}, State.DISABLED),
        ({"userAccountControl": ["66050"]}, State.DISABLED),  # 0x10202: bitwise, not == 514
        ({"userAccountControl": ["66048"]}, State.OK),  # 0x10200: never-expires, enabled
        ({"userAccountControl": [512], "msDS-User-Account-Control-Computed": [16]}, State.LOCKED),
        ({"msDS-User-Account-Control-Computed": ["8388608"]}, State.MUST_CHANGE_PASSWORD),
        ({"userAccountControl": ["512"], "pwdLastSet": ["0"]}, State.MUST_CHANGE_PASSWORD),
        ({"userAccountControl": ["512"], "pwdLastSet": ["133000000000000000"]}, State.OK),
        ({"userAccountControl": ["junk"]}, State.OK),
        ({"accountExpires": ["0"]}, State.OK),
        ({"accountExpires": ["9223372036854775807"]}, State.OK),
        ({"accountExpires": [filetime(NOW - 60)]}, State.DISABLED),
        ({"accountExpires": [filetime(NOW + 86400)]}, State.OK),
    ],
)
def test_active_directory_flags_are_read_bitwise(attributes, state):
    """userAccountControl bit 0x2, computed 0x10 and 0x800000, pwdLastSet 0, accountExpires."""
    assert from_entry(mode("ad"), attributes, now=NOW) is state


@pytest.mark.parametrize(
    ("message", "state"),
    [
        ("80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 52e, v4563",
         State.OK),
        ("80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 773, v4563",
         State.MUST_CHANGE_PASSWORD),
        ("... AcceptSecurityContext error, data 532, v4563", State.MUST_CHANGE_PASSWORD),
        ("... AcceptSecurityContext error, data 533, v4563", State.DISABLED),
        ("... AcceptSecurityContext error, data 775, v4563", State.LOCKED),
        ("", State.OK),
    ],
)  # fmt: skip
def test_active_directory_bind_diagnostics_are_understood(message, state):
    """AD explains refused binds as "data NNN": 773/532 must change, 533 disabled, 775 locked."""
    assert from_bind({"result": 49, "message": message}) is state


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        (bytes.fromhex("3000"), (None, None)),
        (bytes.fromhex("3005a003810102"), (2, None)),  # graceAuthNsRemaining 2
        (bytes.fromhex("3006a0048002012c"), (None, None)),  # timeBeforeExpiration 300
        (bytes.fromhex("3003810100"), (None, "expired")),
        (bytes.fromhex("3003810101"), (None, "locked")),
        (bytes.fromhex("3003810102"), (None, "reset")),
        (bytes.fromhex("3003810105"), (None, "other")),
    ],
)
def test_ppolicy_response_control_is_decoded(value, decoded):
    """The PasswordPolicyResponseValue BER forms slapd sends decode to (grace, error)."""
    assert decode_ppolicy_response(value) == decoded


@pytest.mark.parametrize(
    ("value", "state"),
    [
        (bytes.fromhex("3005a003810102"), State.MUST_CHANGE_PASSWORD),  # a grace login
        (bytes.fromhex("3003810102"), State.MUST_CHANGE_PASSWORD),  # changeAfterReset
        (bytes.fromhex("3003810101"), State.LOCKED),
        (bytes.fromhex("3006a0048002012c"), State.OK),
        (bytes.fromhex("30ff"), State.OK),  # malformed: tells nothing
    ],
)
def test_ppolicy_bind_answers_map_to_account_states(value, state):
    """A bind in grace or after a reset is not a full login; a locked account is refused."""
    result = {"result": 0, "controls": {PPOLICY_CONTROL: {"value": value}}}
    assert from_bind(result) is state


@pytest.mark.parametrize(
    ("attributes", "max_age_days", "state"),
    [
        ({"pwdAccountLockedTime": ["000001010000Z"]}, 0, State.LOCKED),
        ({"pwdReset": ["TRUE"]}, 0, State.MUST_CHANGE_PASSWORD),
        ({"pwdGraceUseTime": ["20261101000000Z"]}, 0, State.MUST_CHANGE_PASSWORD),
        ({"pwdChangedTime": ["20260101000000Z"]}, 90, State.MUST_CHANGE_PASSWORD),
        ({"pwdChangedTime": ["20261101000000Z"]}, 90, State.OK),
        ({"pwdChangedTime": ["20000101000000Z"]}, 0, State.OK),  # age not configured
        ({"pwdChangedTime": ["garbage"]}, 90, State.OK),
        ({}, 0, State.OK),
    ],
)
def test_ppolicy_entry_state(attributes, max_age_days, state):
    """Locked, reset, on grace logins, or older than LDAP_PASSWORD_MAX_AGE_DAYS."""
    assert from_entry(mode("ppolicy", max_age_days), attributes, now=NOW) is state


def test_account_state_none_reads_nothing():
    """With LDAP_ACCOUNT_STATE none, directory flags are not interpreted."""
    attributes = {"pwdReset": ["TRUE"], "userAccountControl": ["514"]}
    assert from_entry(mode("none"), attributes, now=NOW) is State.OK


@pytest.mark.parametrize(
    ("typed", "forms"),
    [
        ("alice", ("alice", "alice")),
        (" Alice ", ("alice", "alice")),
        ("alice@corp.example", ("alice", "alice@corp.example")),
        ("ALICE@Corp.Example", ("alice", "alice@corp.example")),
        ("CORP\\alice", ("alice", "corp\\alice")),
        ("alice.smith@corp.example", ("alice.smith", "alice.smith@corp.example")),
        ("alice@elsewhere.example", ("alice@elsewhere.example", "alice@elsewhere.example")),
    ],
)
def test_login_name_forms_give_one_username(typed, forms):
    """Plain, UPN and DOMAIN\\name forms of a known domain reduce to the bare name."""
    assert login_forms(typed, 256, DOMAINS) == forms


@pytest.mark.parametrize("typed", ["OTHER\\alice", "CORP\\", "\\alice", "a\\"])
def test_unknown_or_empty_domain_forms_are_refused(typed):
    """DOMAIN\\name with a domain not configured (or no name) is refused."""
    with pytest.raises(InvalidInput):
        login_forms(typed, 256, DOMAINS)


@pytest.mark.parametrize(
    ("template", "name", "bound_as"),
    [
        ("uid={username},ou=people", "alice", "uid=alice,ou=people"),
        ("uid={username},ou=people", "a,b+c=d", r"uid=a\,b\+c\=d,ou=people"),
        ("uid={username},ou=people", " x#", r"uid=\ x#,ou=people"),
        ("{username}@corp.example", "alice", "alice@corp.example"),
    ],
)  # fmt: skip
def test_dn_templates_escape_the_name(template, name, bound_as):
    """A DN template gets an RFC 4514-escaped name; a UPN template the name itself."""
    assert bind_name(template, name) == bound_as


@pytest.mark.parametrize(
    ("dn", "name"),
    [
        ("cn=staff,ou=groups,dc=example,dc=org", "staff"),
        ("CN=R&D (Europe)*,OU=Groups,DC=corp,DC=example", "R&D (Europe)*"),
        (r"cn=R\26D \28Europe\29\2a,ou=groups", "R&D (Europe)*"),
        (r"cn=Stra\C3\9F,ou=x", "Straß"),
        (r"cn=a\,b,ou=x", "a,b"),
        ("not a dn", ""),
    ],
)
def test_group_names_from_member_of_dns(dn, name):
    """With memberOf, a group's name is its DN's first RDN value, unescaped."""
    assert rdn_value(dn) == name
