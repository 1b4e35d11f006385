"""Directory shapes on a real slapd: nesting, template bind, several bases, referrals, scale."""

from __future__ import annotations

import logging
import socket
from types import SimpleNamespace

import pytest

from portal.settings import ConfigError
from portal.testing.slapd import free_port
from tests.conftest import SERVICE_DN, AuthActions, make_app, session_username, start_slapd
from tests.servers import tcp_server

ALICE_DN = "uid=alice,ou=people,dc=example,dc=org"
RESEARCH_PAGE = {"slug": "research", "title": "Research", "groups": ["research"], "body": "r"}


def groups_of(app, client) -> list[str]:
    """The groups the portal holds for the signed-in person."""
    from portal import accounts

    username = session_username(client)
    with app.app_context():
        return accounts.cached_attributes(username)["groups"]


def test_nested_group_membership_is_followed_to_the_configured_depth(slapd, ldap_spy):
    """engineering is inside research: depth 1 gives alice research, at one search a level."""
    flat = make_app(slapd, PAGES=[RESEARCH_PAGE])
    flat_client = flat.test_client()
    AuthActions(flat_client).login("alice")
    assert "research" not in groups_of(flat, flat_client)
    assert flat_client.get("/pages/research").status_code == 403

    nested = make_app(slapd, PAGES=[RESEARCH_PAGE], LDAP_GROUP_NESTING_DEPTH=3)
    AuthActions(nested.test_client()).login("bob")  # warm the service connection
    client = nested.test_client()
    ldap_spy.reset()
    AuthActions(client).login("alice")
    assert groups_of(nested, client) == ["engineering", "research", "staff"]
    assert client.get("/pages/research").status_code == 200
    # user search, bind, group search, level 1 (finds research), level 2 (finds nothing)
    assert ldap_spy.operations == 5


def test_group_cycles_end(own_slapd, ldap_spy):
    """Two groups that contain each other do not loop, however deep nesting may go."""
    own_slapd.add(
        "dn: cn=loop-a,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: loop-a\n"
        f"member: {ALICE_DN}\n\n"
        "dn: cn=loop-b,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: loop-b\n"
        "member: cn=loop-a,ou=groups,dc=example,dc=org\n"
    )
    own_slapd.modify(
        "dn: cn=loop-a,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\n"
        "member: cn=loop-b,ou=groups,dc=example,dc=org\n"
    )
    app = make_app(own_slapd, LDAP_GROUP_NESTING_DEPTH=10)
    AuthActions(app.test_client()).login("bob")  # warm the service connection
    client = app.test_client()
    ldap_spy.reset()
    assert AuthActions(client).login("alice").status_code == 302
    assert {"loop-a", "loop-b"} <= set(groups_of(app, client))
    # user search, bind, groups, level 1 (research, loop-b), level 2 (loop-a again: nothing new)
    assert ldap_spy.operations == 5


def test_group_dns_with_filter_metacharacters_are_escaped_and_resolve(own_slapd, ldap_spy):
    """A group named R&D (Europe)* is found and its parent group too (its DN is escaped)."""
    rnd = "cn=R&D (Europe)*,ou=groups,dc=example,dc=org"
    own_slapd.add(
        f"dn: {rnd}\nobjectClass: groupOfNames\ncn: R&D (Europe)*\nmember: {ALICE_DN}\n\n"
        "dn: cn=all-rnd,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: all-rnd\n"
        f"member: {rnd}\n"
    )
    app = make_app(own_slapd, LDAP_GROUP_NESTING_DEPTH=1)
    client = app.test_client()
    AuthActions(client).login("alice")
    assert {"R&D (Europe)*", "all-rnd"} <= set(groups_of(app, client))
    assert any(r"R&D \28Europe\29\2a" in sent for sent in ldap_spy.filters())


def test_template_bind_binds_first_and_reads_the_bound_entry(slapd, ldap_spy):
    """With LDAP_USER_DN_TEMPLATE the first operation is the person's own bind."""
    app = make_app(slapd, LDAP_USER_DN_TEMPLATE="uid={username},ou=people,dc=example,dc=org")
    AuthActions(app.test_client()).login("bob")  # warm the service connection
    client = app.test_client()
    ldap_spy.reset()
    assert AuthActions(client).login("Alice", "alice-secret").status_code == 302
    assert ldap_spy.binds_as() == [ALICE_DN]
    assert ldap_spy.operations == 3  # bind, read own entry, group search
    assert groups_of(app, client) == ["engineering", "staff"]
    assert AuthActions(app.test_client()).login("alice", "wrong").status_code == 401


def test_template_bind_signs_in_only_whom_the_user_filter_finds(slapd):
    """LDAP_USER_FILTER says who the portal's people are: with LDAP_USER_DN_TEMPLATE an entry
    it leaves out signed in with its right password and was refused only at the next
    directory read, a cache lifetime later (and could sign in again). It is refused now."""
    template = "uid={username},ou=people,dc=example,dc=org"
    no_bob = "(&(objectClass=inetOrgPerson)(uid={username})(!(uid=bob)))"
    app = make_app(slapd, LDAP_USER_DN_TEMPLATE=template, LDAP_USER_FILTER=no_bob)
    try:
        assert AuthActions(app.test_client()).login("bob").status_code == 401
        assert AuthActions(app.test_client()).login("alice").status_code == 302
    finally:
        app.extensions["portal.directory"].close()


@pytest.mark.parametrize(
    ("typed", "bound_as"),
    [
        ("alice,ou=people", r"uid=alice\,ou\=people,ou=people,dc=example,dc=org"),
        ("alice+cn=x", r"uid=alice\+cn\=x,ou=people,dc=example,dc=org"),
        ("#alice ", r"uid=\#alice,ou=people,dc=example,dc=org"),
    ],
)
def test_template_bind_escapes_the_name(slapd, ldap_spy, typed, bound_as):
    """A name with DN metacharacters is sent RFC 4514-escaped and cannot bind as someone else."""
    app = make_app(slapd, LDAP_USER_DN_TEMPLATE="uid={username},ou=people,dc=example,dc=org")
    ldap_spy.reset()
    assert AuthActions(app.test_client()).login(typed, "alice-secret").status_code == 401
    assert ldap_spy.user_binds() == [bound_as]


def test_several_user_bases_are_searched_and_must_agree_on_one_person(own_slapd):
    """People in either base sign in; a name present in both bases signs nobody in."""
    own_slapd.add(
        "dn: ou=contractors,dc=example,dc=org\nobjectClass: organizationalUnit\nou: contractors\n\n"
        "dn: uid=zoe,ou=contractors,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: zoe\n"
        "cn: Zoe\nsn: Zoe\nuserPassword: zoe-secret\n\n"
        "dn: uid=bob,ou=contractors,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: bob\n"
        "cn: Other Bob\nsn: Bob\nuserPassword: bob-secret\n"
    )
    own_slapd.modify(
        "dn: cn=staff,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\n"
        "member: uid=zoe,ou=contractors,dc=example,dc=org\n"
    )
    bases = ["ou=people,dc=example,dc=org", "ou=contractors,dc=example,dc=org"]
    app = make_app(own_slapd, LDAP_USER_BASE=bases)
    assert AuthActions(app.test_client()).login("alice").status_code == 302
    assert AuthActions(app.test_client()).login("zoe", "zoe-secret").status_code == 302
    assert AuthActions(app.test_client()).login("bob").status_code == 401


def test_anonymous_search_never_binds_the_service_account(slapd, ldap_spy):
    """LDAP_ANONYMOUS_SEARCH binds anonymously (this demo directory then shows nobody)."""
    app = make_app(slapd, LDAP_ANONYMOUS_SEARCH=True, LDAP_BIND_DN="", LDAP_BIND_PASSWORD="")
    assert AuthActions(app.test_client()).login("alice").status_code == 401
    assert SERVICE_DN not in ldap_spy.binds_as()
    with pytest.raises(ConfigError, match="LDAP_BIND_DN"):
        make_app(slapd, LDAP_ANONYMOUS_SEARCH=True)


def test_referrals_in_the_tree_are_ignored_and_never_followed(own_slapd, ldap_spy):
    """A referral object under the user base is skipped; its host is never contacted."""
    elsewhere = socket.create_server(("127.0.0.1", 0))
    elsewhere.settimeout(0.5)
    port = elsewhere.getsockname()[1]
    try:
        own_slapd.add(
            "dn: ou=partners,ou=people,dc=example,dc=org\nobjectClass: referral\n"
            f"objectClass: extensibleObject\nou: partners\nref: ldap://127.0.0.1:{port}/"
            "ou=partners,dc=other,dc=example\n"
        )
        app = make_app(own_slapd)
        client = app.test_client()
        assert AuthActions(client).login("alice").status_code == 302
        assert AuthActions(app.test_client()).login("nobody", "x").status_code == 401
        # A base inside the referral gets a referral result (code 10): an answer, not chased.
        partners = ["ou=people,dc=example,dc=org", "ou=partners,ou=people,dc=example,dc=org"]
        referred = make_app(own_slapd, LDAP_USER_BASE=partners)
        assert AuthActions(referred.test_client()).login("nobody", "x").status_code == 503
        with pytest.raises(TimeoutError):
            elsewhere.accept()  # nobody came: the referral was not chased
    finally:
        elsewhere.close()


def test_first_of_two_servers_stopping_leaves_logins_working(own_slapd):
    """Kill the first of two live servers: the next logins go to the second."""
    second = start_slapd()
    try:
        app = make_app(None, LDAP_URLS=[own_slapd.url, second.url])
        assert AuthActions(app.test_client()).login("alice").status_code == 302
        own_slapd.stop()
        client = app.test_client()
        assert AuthActions(client).login("bob").status_code == 302
        assert client.get("/").status_code == 200
    finally:
        second.cleanup()


def test_all_servers_down_is_a_prompt_503(slapd):
    """With every server down the answer is a 503 (bounded tries, no endless pool loop)."""
    urls = [f"ldap://127.0.0.1:{free_port()}", f"ldap://127.0.0.1:{free_port()}"]
    app = make_app(None, LDAP_URLS=urls)
    assert AuthActions(app.test_client()).login("alice").status_code == 503


def test_cleartext_to_a_remote_host_is_refused_unless_allowed(slapd, caplog):
    """ldap:// to another host needs LDAP_START_TLS or an explicit LDAP_ALLOW_CLEARTEXT."""
    remote = ["ldap://ldap.corp.example:389"]
    with pytest.raises(ConfigError, match="clear text"):
        make_app(slapd, LDAP_URLS=remote)
    make_app(slapd, LDAP_URLS=remote, LDAP_START_TLS=True)
    with caplog.at_level(logging.WARNING):
        make_app(slapd, LDAP_URLS=remote, LDAP_ALLOW_CLEARTEXT=True)
    assert "passwords cross the network in clear" in caplog.text


def test_hundreds_of_groups_in_a_large_tree_cost_a_few_paged_searches(tmp_path, ldap_spy):
    """A person in 600 of 2000 groups: every group read, in ceil(600 / page size) pages."""
    lines = []
    for number in range(2000):
        members = f"member: {ALICE_DN}\n" if number % 10 < 3 else "member: cn=nobody\n"
        lines.append(
            f"dn: cn=team-{number:04d},ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\n"
            f"cn: team-{number:04d}\n{members}"
        )
    extra = tmp_path / "teams.ldif"
    extra.write_text("\n".join(lines))
    from portal.testing.slapd import FIXTURES

    server = start_slapd(
        ldif_files=[*sorted(FIXTURES.glob("*.ldif")), extra],
        global_config="sizelimit size.soft=500 size.hard=500 size.prtotal=unlimited",
    )
    try:
        app = make_app(server, LDAP_PAGE_SIZE=200)
        AuthActions(app.test_client()).login("bob")  # warm the service connection
        client = app.test_client()
        ldap_spy.reset()
        assert AuthActions(client).login("alice").status_code == 302
        assert len(groups_of(app, client)) == 602  # 600 teams + staff + engineering
        assert ldap_spy.operations == 1 + 1 + 4  # user search, bind, 4 pages of up to 200
    finally:
        server.cleanup()


def test_disabled_filter_refuses_login_and_signs_out_within_the_ttl(own_slapd, clock):
    """Accounts matching LDAP_DISABLED_FILTER cannot sign in, and lose access after the TTL."""
    disable = "changetype: modify\nadd: description\ndescription: disabled\n"
    app = make_app(own_slapd, LDAP_DISABLED_FILTER="(description=disabled)", USER_CACHE_TTL=60)
    client = app.test_client()
    AuthActions(client).login("alice")
    own_slapd.modify(f"dn: {ALICE_DN}\n{disable}")
    own_slapd.modify(f"dn: uid=bob,ou=people,dc=example,dc=org\n{disable}")
    assert AuthActions(app.test_client()).login("bob").status_code == 401
    assert client.get("/").status_code == 200, "cached until the TTL"
    clock.advance(61)
    assert client.get("/").status_code == 302


def test_template_bind_honours_the_disabled_filter(own_slapd):
    """The entry read after a template bind is filtered like a search: disabled stays out."""
    own_slapd.modify(f"dn: {ALICE_DN}\nchangetype: modify\nadd: description\ndescription: off\n")
    app = make_app(
        own_slapd,
        LDAP_USER_DN_TEMPLATE="uid={username},ou=people,dc=example,dc=org",
        LDAP_DISABLED_FILTER="(description=off)",
    )
    assert AuthActions(app.test_client()).login("alice").status_code == 401
    assert AuthActions(app.test_client()).login("bob").status_code == 302


def test_server_failing_right_after_a_template_bind_is_a_503():
    """A server that accepts the bind and then drops the connection: 503, never a 500."""

    def accept_bind_then_hang_up(connection):
        request = connection.recv(4096)
        message_id = request[4]  # 30 LL 02 01 <id>: ldap3's short message ids
        result = b"\x0a\x01\x00\x04\x00\x04\x00"  # bindResponse: success, no DN, no message
        operation = b"\x61" + bytes([len(result)]) + result
        message = b"\x02\x01" + bytes([message_id]) + operation
        connection.sendall(b"\x30" + bytes([len(message)]) + message)
        connection.recv(4096)  # the next request (Who-am-I)
        connection.close()

    with tcp_server(accept_bind_then_hang_up) as url:
        app = make_app(
            None,
            LDAP_URLS=[url],
            LDAP_USER_DN_TEMPLATE="uid={username},ou=people,dc=example,dc=org",
        )
        assert AuthActions(app.test_client()).login("alice").status_code == 503


def test_unique_member_groups_are_found(own_slapd):
    """groupOfUniqueNames membership (uniqueMember) works with a filter that names it."""
    own_slapd.add(
        "dn: cn=auditors,ou=groups,dc=example,dc=org\nobjectClass: groupOfUniqueNames\n"
        f"cn: auditors\nuniqueMember: {ALICE_DN}\n"
    )
    either = "(|(member={user_dn})(uniqueMember={user_dn})(memberUid={username}))"
    app = make_app(own_slapd, LDAP_GROUP_FILTER=either)
    client = app.test_client()
    AuthActions(client).login("alice")
    assert "auditors" in groups_of(app, client)


def test_paging_that_never_ends_is_refused():
    """A server that keeps returning the same paging cookie is stopped, not followed forever."""
    from portal.directory.errors import DirectoryError
    from portal.directory.search import run_search

    class EndlessPages:
        response = [{"type": "searchResEntry", "dn": "cn=g", "attributes": {"cn": ["g"]}}]
        result = {"result": 0, "controls": {"1.2.840.113556.1.4.319": {"value": {"cookie": b"x"}}}}

        def search(self, *args, **kwargs):
            return True

    settings = SimpleNamespace(operation_timeout=5, page_size=100)
    with pytest.raises(DirectoryError, match="did not end"):
        run_search(EndlessPages(), settings, "ou=groups", "(cn=*)", ["cn"], paged=True)


def test_binary_member_of_values_do_not_break_group_reading():
    """memberOf values that are not UTF-8 are read with replacement characters, not a crash."""
    from portal.directory.groups import resolve_groups

    settings = SimpleNamespace(
        group_base="ou=groups,dc=example,dc=org", group_membership="memberof",
        attr_member_of="memberOf", attr_username="uid", nesting_depth=0,
    )  # fmt: skip
    entry = {
        "dn": ALICE_DN,
        "attributes": {"memberOf": [b"cn=\xff\xfe,ou=groups,dc=example,dc=org",
                                    b"cn=staff,ou=groups,dc=example,dc=org"]},
    }  # fmt: skip
    assert resolve_groups(entry, settings, search=None) == ["staff", "\ufffd\ufffd"]
