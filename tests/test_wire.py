"""The requests LeanConnection writes without pyasn1 are ldap3's own, byte for byte.

Each case sends one request twice to the real demo slapd, through ldap3's Connection and
through LeanConnection, on connections alike in everything else, and compares what went down
the socket and what came back; random filters are compared with ldap3's pyasn1 encoding
directly, many at a time.
"""

from __future__ import annotations

import logging

import ldap3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ldap3.core.exceptions import (
    LDAPInvalidFilterError,
    LDAPPasswordIsMandatoryError,
    LDAPSocketOpenError,
    LDAPSocketSendError,
)
from ldap3.operation.search import compile_filter, parse_filter
from ldap3.protocol.controls import build_control
from ldap3.utils.asn1 import encode
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.log import ERROR, OFF, set_library_log_detail_level
from pyasn1.error import PyAsn1Error

from portal.directory import account_state
from portal.directory.wire import LeanConnection, NotPlain, encode_filter

SERVICE_DN = "cn=portal-reader,ou=services,dc=example,dc=org"
SERVICE_PASSWORD = "dev-only-reader-secret"  # noqa: S105 - the demo directory's
ALICE_DN = "uid=alice,ou=people,dc=example,dc=org"
PEOPLE, GROUPS, SUFFIX = (
    "ou=people,dc=example,dc=org",
    "ou=groups,dc=example,dc=org",
    "dc=example,dc=org",
)
PAGED = "1.2.840.113556.1.4.319"

FILTERS = [
    "(uid=alice)",
    "(objectClass=*)",
    "(cn=Ali*)",
    "(cn=*ice)",
    "(cn=A*l*c*e)",
    "(cn=*l*)",
    "(uidNumber>=1000)",
    "(uidNumber<=1000)",
    "(cn~=alice)",
    f"(member:1.2.840.113556.1.4.1941:={ALICE_DN})",
    "(cn:dn:=engineering)",
    "(:caseIgnoreMatch:=engineering)",
    "(cn:caseExactMatch:=Engineering)",
    "(&(objectClass=inetOrgPerson)(uid=alice))",
    f"(|(&(objectClass=groupOfNames)(member={ALICE_DN}))(&(objectClass=posixGroup)(memberUid=alice)))",
    "(!(uid=bob))",
    "(&(!(|(uid=alice)(uid=bob)))(cn=*))",
    "(cn=a\\2ab)",
    "(cn=\\28x\\29)",
    "(description=\\00\\ff)",
    "(displayName=Jürgen Müller)",
    "(cn=日本)",
    "(cn=" + "x" * 200 + ")",
    "(cn=" + "y" * 3000 + ")",
    "(&" + "(uid=alice)" * 40 + ")",
    "( uid = alice )",
]
OPTIONS = [
    {},
    {"search_scope": ldap3.BASE, "attributes": ["*", "+"]},
    {"search_scope": ldap3.LEVEL, "dereference_aliases": ldap3.DEREF_NEVER},
    {"search_scope": 0, "dereference_aliases": 1},
    {"search_scope": 2, "dereference_aliases": ldap3.DEREF_BASE},
    {"size_limit": 1, "time_limit": 5, "types_only": True},
    {"size_limit": 127, "time_limit": 128},
    {"size_limit": 255, "time_limit": 256},
    {"size_limit": 70000, "time_limit": 2**31 - 1},
    {"attributes": ["uid", "displayName", "mail", "pwdChangedTime", "entryUUID"]},
    {"attributes": []},
    {"attributes": ("cn",)},
    {"attributes": ["ñame"]},
    {"paged_size": 1},
    {"paged_size": 500, "paged_criticality": True},
    {"paged_size": 0, "paged_cookie": b""},
    {"controls": [(account_state.PPOLICY_CONTROL, False, None)]},
    {"controls": [("1.2.840.113556.1.4.417", True, None), ("1.3.6.1.1.13.1", False, b"\x30\x00")]},
    {"auto_escape": False},
]


def without_message_id(message: bytes) -> tuple[int, bytes]:
    """An LDAPMessage's outer length and all it holds after its message ID: ldap3 numbers the
    messages of all connections with one counter, so two connections never send the same ID."""
    assert message[0] == 0x30
    size, start = message[1], 2
    if size & 0x80:
        start = 2 + (size & 0x7F)
        size = int.from_bytes(message[2:start], "big")
    assert message[start] == 0x02 and message[start + 1] <= 4  # INTEGER messageID, small
    id_size = message[start + 1]
    assert len(message) == start + size
    return size - 2 - id_size, message[start + 2 + id_size :]


class Recorder:
    """A socket that keeps a copy of every message sent through it, less its message ID."""

    def __init__(self, inner):
        self.inner, self.sent = inner, []

    def sendall(self, data, *flags):
        self.sent.append(without_message_id(bytes(data)))
        return self.inner.sendall(data, *flags)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def connection(slapd, kind, user=SERVICE_DN, password=SERVICE_PASSWORD):
    """A bound connection of `kind`, its socket recording from after the bind."""
    server = ldap3.Server(slapd.url, get_info=ldap3.NONE)
    opened = kind(server, user, password, client_strategy=ldap3.SYNC, auto_referrals=False,
                  raise_exceptions=False, receive_timeout=5)  # fmt: skip
    opened.open(read_server_info=False)
    assert opened.bind(read_server_info=False), opened.result
    opened.socket = Recorder(opened.socket)
    return opened


@pytest.fixture
def pair(slapd):
    """ldap3's connection and ours, bound alike as the service account."""
    connections = connection(slapd, ldap3.Connection), connection(slapd, LeanConnection)
    yield connections
    for each in connections:
        each.unbind()


def same_search(pair, *args, **options):
    """Send one search through both; assert equal bytes sent and equal answers; the answer."""
    answers = []
    for each in pair:
        found = each.search(*args, **options)
        controls = (each.result or {}).get("controls") or {}
        answers.append((found, each.result["result"], each.response, sorted(controls)))
    assert pair[1].socket.sent == pair[0].socket.sent
    assert pair[1].socket.sent, "nothing was sent"
    assert answers[1] == answers[0]
    return answers[0]


@pytest.mark.parametrize("search_filter", FILTERS)
def test_every_filter_shape_is_sent_as_ldap3_sends_it(pair, search_filter):
    found, code, entries, _ = same_search(pair, SUFFIX, search_filter, attributes=["cn", "uid"])
    assert code == 0
    if search_filter in ("(uid=alice)", "( uid = alice )", "(cn=*l*)"):
        assert found and any(entry.get("dn") == ALICE_DN for entry in entries)


@pytest.mark.parametrize("options", OPTIONS, ids=[str(sorted(each)) for each in OPTIONS])
def test_every_search_option_is_sent_as_ldap3_sends_it(pair, options):
    found, code, *_ = same_search(pair, PEOPLE, "(objectClass=inetOrgPerson)", **options)
    # Success, the size limit asked for, or a critical control slapd does not know.
    assert code in (0, 4, 12)


def test_a_paged_search_goes_on_from_its_cookie_as_ldap3s(pair):
    cookies = []
    for each in pair:
        each.search(GROUPS, "(objectClass=*)", attributes=["cn"], paged_size=1)
        cookies.append(each.result["controls"][PAGED]["value"]["cookie"])
    assert all(cookies)
    for each, cookie in zip(pair, cookies, strict=True):
        each.socket.sent.clear()
        each.search(GROUPS, "(objectClass=*)", attributes=["cn"], paged_size=1, paged_cookie=cookie)
    # The cookies are the server's, one per connection: the bytes differ only there.
    sent = [
        each.socket.sent[0][1].replace(cookie, b"C" * len(cookie))
        for each, cookie in zip(pair, cookies, strict=True)
    ]
    assert len(cookies[0]) == len(cookies[1]) and sent[1] == sent[0]
    assert pair[1].response == pair[0].response


@pytest.mark.parametrize(
    ("who", "password", "controls"),
    [
        (ALICE_DN, "alice-secret", None),
        (ALICE_DN, "wrong", None),
        (ALICE_DN, "alice-secret", [(account_state.PPOLICY_CONTROL, False, None)]),
        (ALICE_DN, "pässwörd\u00a0ﬁ", [(account_state.PPOLICY_CONTROL, False, None)]),
        ("uid=nobody,ou=people,dc=example,dc=org", "x" * 300, None),
        ("uid=Jürgen,ou=people,dc=example,dc=org", "secret", None),
    ],
)
def test_a_simple_bind_is_sent_as_ldap3_sends_it(pair, who, password, controls):
    answers = []
    for each in pair:
        each.user, each.password = who, password
        bound = each.bind(read_server_info=False, controls=controls)
        answers.append((bound, each.bound, each.result["result"], each.result["description"]))
    assert pair[1].socket.sent == pair[0].socket.sent
    assert answers[1] == answers[0]
    assert answers[0][0] is (password == "alice-secret")


def test_the_bind_request_kept_on_the_connection_holds_no_password(pair):
    lean = pair[1]
    lean.user, lean.password = ALICE_DN, "alice-secret"
    assert lean.bind(read_server_info=False)
    assert lean.request["authentication"]["simple"] == "*"
    # Only the password attribute holds it (the portal clears that itself after each bind).
    assert "alice-secret" not in repr({k: v for k, v in vars(lean).items() if k != "password"})


@pytest.mark.parametrize(
    "search_filter", ["(uid=alice", "uid=alice", "(cn=**)", "(cn= *)", "(&(uid=a)(cn = *))"]
)
def test_filters_ldap3_refuses_are_refused_alike(pair, search_filter):
    # "(cn=**)" parses into a substring filter with no substring, which ldap3's encoder
    # refuses (SIZE 1..MAX); sent anyway, slapd would take it for Undefined: no entry, and no
    # entry for its negation either, so a group filter written so would match nobody.
    raised = []
    for each in pair:
        with pytest.raises(Exception) as refused:  # noqa: PT011 - ldap3's or pyasn1's own
            each.search(PEOPLE, search_filter, attributes=["uid"])
        raised.append((type(refused.value), str(refused.value)))
    assert raised[1] == raised[0]
    assert pair[1].socket.sent == pair[0].socket.sent == []


def test_refusals_before_sending_are_ldap3s_own(pair):
    for each in pair:
        each.user, each.password = ALICE_DN, ""
        with pytest.raises(LDAPPasswordIsMandatoryError):
            each.bind(read_server_info=False)
    assert pair[1].socket.sent == pair[0].socket.sent == []


def test_controls_given_as_a_generator_are_all_sent(pair):
    # Checking a generator would use it up: it is ldap3's to read, once.
    critical = ("1.2.3.4.5.6.7", True, None)
    policy = (account_state.PPOLICY_CONTROL, False, None)
    for each in pair:
        each.search(PEOPLE, "(uid=alice)", attributes=["uid"], controls=(c for c in [critical]))
        assert each.result["result"] == 12  # unavailableCriticalExtension: the control was sent
        each.user, each.password = ALICE_DN, "alice-secret"
        assert each.bind(read_server_info=False, controls=(c for c in [policy]))
    assert pair[1].socket.sent == pair[0].socket.sent
    assert b"1.3.6.1.4.1.42.2.27.8.5.1" in pair[1].socket.sent[1][1]


def test_a_connection_whose_socket_is_gone_fails_as_ldap3s(pair):
    for each in pair:
        each.socket.inner.close()
    for each in pair:
        with pytest.raises(LDAPSocketSendError):
            each.search(PEOPLE, "(uid=alice)", attributes=["uid"])
    for each in pair:
        each.strategy.close()
        with pytest.raises(LDAPSocketOpenError):
            each.search(PEOPLE, "(uid=alice)", attributes=["uid"])


def test_what_the_lean_path_does_not_cover_goes_through_ldap3(pair, slapd, monkeypatch):
    # A search with operational attributes, any search while ldap3's own log is on (even at
    # its least detail) and any on a connection that follows referrals are ldap3's to send:
    # its encoder runs for them, and their answers are the same.
    encoded = []
    real_encode = ldap3.strategy.base.encode
    monkeypatch.setattr(
        ldap3.strategy.base, "encode", lambda message: encoded.append(1) or real_encode(message)
    )
    same_search(pair, PEOPLE, "(uid=alice)", attributes=("uid",), get_operational_attributes=True)
    assert len(encoded) == 2
    ldap3_log = logging.getLogger("ldap3")
    level = ldap3_log.level
    set_library_log_detail_level(ERROR)
    ldap3_log.setLevel(logging.DEBUG)
    try:
        pair[1].search(PEOPLE, "(uid=alice)", attributes=["uid"])
    finally:
        set_library_log_detail_level(OFF)
        ldap3_log.setLevel(level)
    assert len(encoded) == 3
    pair[1].search(PEOPLE, "(uid=alice)", attributes=["uid"])
    assert len(encoded) == 3
    following = LeanConnection(
        ldap3.Server(slapd.url, get_info=ldap3.NONE), SERVICE_DN, SERVICE_PASSWORD
    )
    following.open(read_server_info=False)
    assert following.bind(read_server_info=False) and len(encoded) == 4
    assert following.search(PEOPLE, "(uid=alice)", attributes=["uid"]) and len(encoded) == 5
    following.unbind()


def test_a_sign_in_encodes_no_request_with_pyasn1(client, slapd, monkeypatch):
    from tests.conftest import AuthActions

    # The first sign-in opens the pools' connections (an anonymous bind each, ldap3's to send).
    assert AuthActions(client).login("alice").status_code == 302
    AuthActions(client).logout()
    encoded = []
    real_encode = ldap3.strategy.base.encode
    monkeypatch.setattr(
        ldap3.strategy.base, "encode", lambda message: encoded.append(1) or real_encode(message)
    )
    before = slapd.counters()
    assert AuthActions(client).login("alice").status_code == 302
    after = slapd.counters()
    assert after["bind"] - before["bind"] == 1 and after["search"] - before["search"] == 2
    assert encoded == []


def _attribute():
    return st.sampled_from(["cn", "uid", "member", "objectClass", "displayName", "x-ü", "1.2.3"])


def _value():
    text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
    return text.map(escape_filter_chars)


def _leaf():
    plain = st.builds(
        lambda a, op, v: f"({a}{op}{v})",
        _attribute(),
        st.sampled_from(["=", ">=", "<=", "~="]),
        _value(),
    )
    present = _attribute().map(lambda a: f"({a}=*)")
    pieces = st.lists(_value(), min_size=1, max_size=4)  # empty ones too: "(cn=**)"
    substring = st.builds(
        lambda a, parts, start, end: f"({a}={'*'[:not start]}{'*'.join(parts)}{'*'[:not end]})",
        _attribute(), pieces, st.booleans(), st.booleans(),
    )  # fmt: skip
    rules = st.sampled_from(["", "caseExactMatch", "1.2.840.113556.1.4.1941"])
    extensible = st.builds(
        lambda a, dn, rule, v: f"({a}{':dn' if dn else ''}{':' + rule if rule else ''}:={v})",
        _attribute(), st.booleans(), rules, _value(),
    )  # fmt: skip
    return st.one_of(plain, present, substring, extensible)


FILTER_TEXT = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4).map(lambda parts: "(&" + "".join(parts) + ")"),
        st.lists(inner, min_size=1, max_size=4).map(lambda parts: "(|" + "".join(parts) + ")"),
        inner.map(lambda part: f"(!{part})"),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(FILTER_TEXT)
def test_random_filters_encode_as_ldap3_encodes_them(search_filter):
    try:
        tree = parse_filter(search_filter, None, True, True, None, True)
    except LDAPInvalidFilterError:
        return  # refused by ldap3's parser, before either encoder
    node = tree.elements[0]
    try:
        expected = encode(compile_filter(node))
    except PyAsn1Error:  # refused by ldap3's encoder: then ours refuses it too
        with pytest.raises(NotPlain):
            encode_filter(node)
        return
    assert encode_filter(node) == expected


def _search_alice(connection):
    return connection.search(PEOPLE, "(uid=alice)", attributes=["uid"])


def _bind_alice(password):
    def bind(connection):
        connection.user, connection.password = ALICE_DN, password
        return connection.bind(read_server_info=False)

    return bind


def _anonymous(connection):
    connection.user, connection.password = None, None
    connection.authentication = ldap3.ANONYMOUS
    return connection.bind(read_server_info=False)


FALL_BACKS = {
    "a server whose schema was read": ({"get_info": ldap3.SCHEMA}, {}, _search_alice),
    "a lazy connection": ({}, {"lazy": True}, _search_alice),
    "the SAFE_SYNC strategy": ({}, {"client_strategy": ldap3.SAFE_SYNC}, _search_alice),
    "usage counters": ({}, {"collect_usage": True}, _search_alice),
    "a pyasn1 control": ({}, {}, lambda c: c.search(
        PEOPLE, "(uid=alice)", attributes=["uid"],
        controls=[build_control(account_state.PPOLICY_CONTROL, False, None)])),
    "an OID that is not ASCII": ({}, {}, lambda c: c.search(
        PEOPLE, "(uid=alice)", attributes=["uid"], controls=[("1.2.3.é", False, None)])),
    "a paged criticality that is not a bool": ({}, {}, lambda c: c.search(
        PEOPLE, "(uid=alice)", attributes=["uid"], paged_size=5, paged_criticality=None)),
    "an attribute name that is no UTF-8": ({}, {}, lambda c: c.search(
        PEOPLE, "(uid=alice)", attributes=["\udcff"])),
    "a password given as bytes": ({}, {}, _bind_alice(b"alice-secret")),
    "an anonymous bind": ({}, {}, _anonymous),
}  # fmt: skip


@pytest.mark.parametrize("case", FALL_BACKS, ids=list(FALL_BACKS))
def test_what_the_lean_path_leaves_to_ldap3_is_done_as_ldap3_does_it(slapd, monkeypatch, case):
    server_options, options, operation = FALL_BACKS[case]
    written = []  # requests this module wrote itself
    real_send = LeanConnection._send
    monkeypatch.setattr(
        LeanConnection, "_send", lambda *args: written.append(1) or real_send(*args)
    )
    outcomes = []
    for kind in (ldap3.Connection, LeanConnection):
        server = ldap3.Server(slapd.url, **({"get_info": ldap3.NONE} | server_options))
        connection = kind(server, SERVICE_DN, SERVICE_PASSWORD, auto_referrals=False, **options)
        connection.open(read_server_info=bool(server_options))
        connection.bind(read_server_info=False)
        written.clear()  # the service bind before it may well be this module's
        try:
            answer = operation(connection)
            outcomes.append((repr(answer), connection.result and connection.result["result"],
                             connection.last_error))  # fmt: skip
        except Exception as error:  # noqa: BLE001 - compared with ldap3's own
            outcomes.append((type(error).__name__, str(error)[:200]))
        assert written == [], f"{case} was written without ldap3"
        connection.unbind()
    assert outcomes[1] == outcomes[0]
