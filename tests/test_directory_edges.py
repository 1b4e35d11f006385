"""Directory edge cases: ambiguous names, servers that allow unauthenticated binds."""

from __future__ import annotations

import logging
import subprocess

import ldap3
import pytest

from portal.testing.slapd import find_binary
from tests.conftest import (
    PASSWORDS,
    AuthActions,
    make_app,
    plant_login,
    session_username,
    start_slapd,
)

SECOND_ALICE = """\
dn: ou=contractors,ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: contractors

dn: uid=alice,ou=contractors,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Another Alice
sn: Alice
userPassword: alice-secret
"""


def test_two_entries_for_one_name_is_a_generic_failure_with_a_warning(own_slapd, ldap_spy, caplog):
    """When a login name matches two entries nobody is signed in and no bind is tried."""
    own_slapd.add(SECOND_ALICE)
    app = make_app(own_slapd)
    auth = AuthActions(app.test_client())
    auth.csrf_token()
    ldap_spy.reset()
    with caplog.at_level(logging.WARNING, logger="portal.directory"):
        response = auth.login("alice")
    assert response.status_code == 401
    assert "Wrong username or password." in response.get_data(as_text=True)
    assert ldap_spy.user_binds() == []
    assert "matches several directory entries" in caplog.text


@pytest.fixture
def lax_slapd():
    """A directory that accepts an unauthenticated bind (a DN with an empty password)."""
    server = start_slapd(global_config="allow bind_anon_dn")
    yield server
    server.cleanup()


def test_server_accepting_unauthenticated_binds_still_signs_nobody_in(lax_slapd, ldap_spy):
    """The server says yes to a DN with no password; the portal never asks it."""
    whoami = subprocess.run(
        [
            find_binary("ldapwhoami"),
            "-x",
            "-H",
            lax_slapd.url,
            "-D",
            "uid=alice,ou=people,dc=example,dc=org",
            "-w",
            "",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert whoami.returncode == 0, "this server must accept an unauthenticated bind"
    app = make_app(lax_slapd)
    auth = AuthActions(app.test_client())
    token = auth.csrf_token()
    for password in ("", " "):
        response = auth.client.post(
            "/login", data={"csrf_token": token, "username": "alice", "password": password}
        )
        assert response.status_code in (400, 401)
    assert ldap_spy.user_binds() == []
    assert auth.client.get("/").status_code == 302
    assert auth.login("alice", PASSWORDS["alice"]).status_code == 302


ALICE_SUSPENDED = """\
dn: cn=suspended,ou=groups,dc=example,dc=org
changetype: modify
add: member
member: uid=alice,ou=people,dc=example,dc=org
"""

STRAUSS = """\
dn: uid=strauß,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: strauß
cn: Johann Strauß
sn: Strauß
displayName: Johann Strauß
userPassword: walzer-secret

dn: cn=staff,ou=groups,dc=example,dc=org
changetype: modify
add: member
member: uid=strauß,ou=people,dc=example,dc=org
"""


def test_group_list_cut_short_by_a_size_limit_never_lets_anyone_in(ldap_spy):
    """A size limit that truncates the group list refuses the login: it may hide a denial."""
    server = start_slapd(global_config="sizelimit 2")
    try:
        server.modify(ALICE_SUSPENDED)  # alice: staff, engineering, suspended: 3 > 2
        app = make_app(server)
        client = app.test_client()
        response = AuthActions(client).login("alice")
        assert response.status_code == 503
        assert client.get("/").status_code == 302
        assert AuthActions(app.test_client()).login("bob").status_code == 302, "1 group fits"
    finally:
        server.cleanup()


def test_entries_without_the_username_attribute_sign_nobody_in(slapd, caplog):
    """If LDAP_ATTR_USERNAME is missing from entries, logins fail loudly instead of sharing ""."""
    app = make_app(slapd, LDAP_ATTR_USERNAME="employeeNumber")
    alice, erin = app.test_client(), app.test_client()
    with caplog.at_level(logging.ERROR, logger="portal.directory"):
        assert AuthActions(alice).login("alice").status_code == 401
        assert AuthActions(erin).login("erin").status_code == 401
    assert "has no employeeNumber value" in caplog.text
    assert alice.get("/").status_code == 302


def test_session_for_another_name_than_the_directory_gives_is_not_loaded(slapd):
    """A session id that the directory answers with a different canonical name loads nobody."""
    either = "(&(objectClass=inetOrgPerson)(|(uid={username})(mail={username})))"
    app = make_app(slapd, LDAP_USER_FILTER=either)
    client = app.test_client()
    plant_login(client, "alice@example.org")
    assert client.get("/").status_code == 302


def test_names_with_sharp_s_sign_in(own_slapd):
    """A uid with "ß" is matched as the directory stores it, not folded to "ss"."""
    own_slapd.add(STRAUSS.split("\n\ndn: cn=staff")[0] + "\n")
    own_slapd.modify("dn: cn=staff" + STRAUSS.split("\n\ndn: cn=staff")[1])
    app = make_app(own_slapd)
    client = app.test_client()
    assert AuthActions(client).login("Strauß", "walzer-secret").status_code == 302
    assert "Johann Strauß" in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("password", ["alice\rsecret", "al\nice", "bell\x07", "nul\x00"])
def test_passwords_a_bind_cannot_carry_are_refused_before_any_connection(slapd, ldap_spy, password):
    """Passwords SASLprep prohibits read as a failed login and open no connection."""
    auth = AuthActions(make_app(slapd).test_client())
    token = auth.csrf_token()
    ldap_spy.reset()
    response = auth.client.post(
        "/login", data={"csrf_token": token, "username": "alice", "password": password}
    )
    assert response.status_code == 401
    assert ldap_spy.count("open") == 0


@pytest.mark.parametrize("password", ["soft\xadhyphen", "\ufeffbom"])
def test_passwords_with_characters_saslprep_drops_are_checked_by_the_directory(slapd, password):
    """Characters SASLprep maps to nothing leave a real (wrong) password: a 401, not a 503."""
    response = AuthActions(make_app(slapd).test_client()).login("alice", password)
    assert response.status_code == 401


def add_person(server, rdn: str, password: str, *lines: str) -> str:
    """Add a staff member with extra attribute lines; return the DN."""
    dn = f"{rdn},ou=people,dc=example,dc=org"
    extra = "".join(f"{line}\n" for line in lines)
    server.add(
        f"dn: {dn}\nobjectClass: inetOrgPerson\ncn: x\nsn: x\nuserPassword: {password}\n{extra}"
    )
    server.modify(
        f"dn: cn=staff,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\nmember: {dn}\n"
    )
    return dn


def test_an_entry_with_two_usernames_signs_nobody_in(own_slapd, caplog):
    """mallory2's entry also lists uid: erin (first): she must not become erin, nor overwrite
    erin's cache entry."""
    app = make_app(own_slapd)
    erin = app.test_client()
    assert AuthActions(erin).login("erin").status_code == 302
    with app.app_context():
        from portal import accounts

        before = accounts.cached_attributes("erin")
    add_person(own_slapd, "uid=mallory2", "mallory-secret", "uid: erin", "uid: mallory2")
    mallory = app.test_client()
    with caplog.at_level(logging.ERROR, logger="portal.directory"):
        assert AuthActions(mallory).login("mallory2", "mallory-secret").status_code == 401
    assert "has more than one uid value" in caplog.text
    assert session_username(mallory) is None
    with app.app_context():
        assert accounts.cached_attributes("erin") == before
    assert erin.get("/").status_code == 200


def test_an_identity_that_names_another_entry_signs_nobody_in(own_slapd, caplog):
    """Signing in by e-mail address to an entry whose one uid is erin's is refused."""
    add_person(own_slapd, "cn=mallory3", "mallory-secret", "uid: erin", "mail: m3@example.org")
    app = make_app(own_slapd, LDAP_USER_FILTER="(|(uid={username})(mail={login}))")
    mallory = app.test_client()
    with caplog.at_level(logging.ERROR, logger="portal.directory"):
        assert AuthActions(mallory).login("m3@example.org", "mallory-secret").status_code == 401
    assert "which names another entry" in caplog.text
    assert session_username(mallory) is None
    # The administrator's tools resolve the address as the sign-in does: to nobody, not erin.
    runner = app.test_cli_runner()
    whois = runner.invoke(args=["whois", "m3@example.org"]).output
    assert "erin" not in whois, whois
    with app.app_context():
        from portal import accounts

        assert accounts.revocation_target("m3@example.org").owner != "erin"


def test_an_identity_other_than_the_typed_name_still_signs_in(own_slapd, ldap_spy):
    """An e-mail login whose uid leads back to the same entry works (one search more)."""
    app = make_app(
        own_slapd, LDAP_USER_FILTER="(|(uid={username})(mail={login}))", LDAP_LOGIN_DOMAINS=[]
    )
    client = app.test_client()
    auth = AuthActions(client)
    auth.csrf_token()
    ldap_spy.reset()
    assert auth.login("alice@example.org", PASSWORDS["alice"]).status_code == 302
    assert session_username(client) == "alice"
    direct = ldap_spy.count("search")
    ldap_spy.reset()
    assert AuthActions(app.test_client()).login("alice").status_code == 302
    assert ldap_spy.count("search") == direct - 1


def test_names_fold_inner_spaces_as_the_directory_does(own_slapd):
    """slapd matches "john   smith" to uid "john smith": one person, one session name."""
    add_person(own_slapd, "uid=john smith", "john-secret", "uid: john smith")
    root = ldap3.Connection(own_slapd.url, own_slapd.root_dn, own_slapd.root_password)
    with root:
        root.search("ou=people,dc=example,dc=org", "(uid=john   smith)")
        assert len(root.entries) == 1, "slapd itself folds the spaces"
    app = make_app(own_slapd)
    for spelling in ("john   smith", " John  Smith ", "JOHN\u3000SMITH", "john\u00a0smith"):
        client = app.test_client()
        assert AuthActions(client).login(spelling, "john-secret").status_code == 302, spelling
        assert session_username(client) == "john smith"


def test_spellings_with_more_spaces_share_one_throttle_count(own_slapd):
    """Three wrong passwords spelled with extra spaces use up john smith's one budget, so a
    stranger cannot run the directory's own lockout past the portal's limit."""
    add_person(own_slapd, "uid=john smith", "john-secret", "uid: john smith")
    app = make_app(own_slapd, THROTTLE_ACCOUNT_LIMIT="3 per 15 minutes")
    for spelling in ("john  smith", "john   smith", " john \u2003smith"):
        assert AuthActions(app.test_client()).login(spelling, "wrong").status_code == 401
    answer = AuthActions(app.test_client()).login("john smith", "john-secret")
    assert answer.status_code == 429


LEAVE_GROUP = """\
dn: cn=leave,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: portal-admins
cn: leave
member: uid=bob,ou=people,dc=example,dc=org
"""


def test_a_group_answers_only_to_the_name_in_its_dn(own_slapd):
    """Whoever may edit cn=leave (its owner) lists "cn: portal-admins" first on it: its members
    do not become administrators (the group's name is the one in its DN, which only a rename
    changes); nor does a nested group's other value open a page."""
    own_slapd.add(
        LEAVE_GROUP + "\ndn: cn=labs,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\n"
        "cn: finance\ncn: labs\nmember: cn=engineering,ou=groups,dc=example,dc=org\n"
    )
    app = make_app(own_slapd, LDAP_GROUP_NESTING_DEPTH=2)
    bob = app.test_client()
    assert AuthActions(bob).login("bob").status_code == 302
    assert bob.get("/admin/status").status_code == 403
    alice = app.test_client()
    assert AuthActions(alice).login("alice").status_code == 302
    assert alice.get("/pages/finance").status_code == 403
    with app.app_context():
        from portal import accounts

        assert accounts.cached_attributes("bob")["groups"] == ["leave", "staff"]
        groups = accounts.cached_attributes("alice")["groups"]
    assert "labs" in groups and "finance" not in groups


@pytest.mark.parametrize(
    ("dn", "name"),
    [
        ("cn=leave,ou=groups,dc=example,dc=org", "leave"),
        ("ou=b+cn=leave,ou=groups,dc=example,dc=org", "leave"),
        ("commonName=leave,ou=groups,dc=example,dc=org", "leave"),
        ("2.5.4.3=leave,ou=groups,dc=example,dc=org", ""),  # ldap3 parses no OID types
        ("CN=R\\2C D,ou=groups,dc=example,dc=org", "R, D"),
        ("ou=leave,ou=groups,dc=example,dc=org", "portal-admins"),  # no cn in the DN
        ("not a dn", ""),
    ],
)
def test_a_group_name_comes_from_its_dn_whatever_the_spelling(dn, name):
    """Every value of the first RDN is looked at, under any spelling of the type; only a DN
    without the name attribute falls back to the first value, and a broken DN names nothing."""
    from portal.directory.groups import group_name

    entry = {"dn": dn, "attributes": {"cn": ["portal-admins", "leave"]}}
    assert group_name(entry, "cn") == name


def test_group_dns_are_parsed_once_per_process(slapd):
    """A sign-in reads every group DN of the person several times (its key, its name, under
    the group base or not), and the next person's groups are mostly the same ones: ldap3's
    pure-Python parse runs once per DN, not on every sign-in."""
    from unittest import mock

    from portal import directory
    from portal.directory import groups

    app = make_app(slapd)
    with app.app_context():
        assert directory.authenticate("alice", "alice-secret")["groups"]
        with mock.patch.object(groups, "parse_dn", wraps=groups.parse_dn) as parse:
            again = directory.authenticate("alice", "alice-secret")
    assert again["groups"] == ["engineering", "staff"]
    assert parse.call_count == 0
