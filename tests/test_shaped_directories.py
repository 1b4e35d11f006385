"""The portal on Active-Directory-shaped, memberOf-overlay and ppolicy trees (real slapd).

Each app starts from the shipped example settings (examples/settings-*.toml), so the examples an
administrator copies are the ones proven here; only the server address, the service password
and plain-HTTP cookies are changed for the test.
"""

from __future__ import annotations

import logging
import subprocess
import time
from types import SimpleNamespace

import pytest

from portal import accounts
from portal.testing import trees
from portal.testing.slapd import find_binary
from tests.conftest import ROOT, AuthActions, csrf_token_in, make_app, session_username, start_slapd

EXAMPLES = ROOT / "examples"
MUST_CHANGE = "must be changed before you can sign in"


def example_app(name: str, server, **overrides):
    """The portal with examples/settings-<name>.toml, pointed at a test server."""
    return make_app(
        server,
        settings_file=EXAMPLES / f"settings-{name}.toml",
        LDAP_START_TLS=False,
        LDAP_CA_FILE="",
        LDAP_BIND_PASSWORD=trees.SERVICE_PASSWORD,
        SESSION_COOKIE_SECURE=False,
        **overrides,
    )


def signed_in_as(app, client) -> tuple[str, list[str]]:
    """The session's username and the groups cached for it."""
    username = session_username(client)
    with app.app_context():
        return username, accounts.cached_attributes(username)["groups"]


@pytest.fixture
def ad_app(ad_server):
    """The portal with the AD example settings."""
    return example_app("ad", ad_server)


@pytest.mark.parametrize("typed", ["alice", "ALICE", "alice@corp.example", "CORP\\alice"])
def test_ad_login_forms_are_one_identity(ad_app, typed):
    """Plain, UPN and DOMAIN\\name forms all sign in as the sAMAccountName, same groups."""
    client = ad_app.test_client()
    assert AuthActions(client).login(typed, "alice-secret").status_code == 302
    username, groups = signed_in_as(ad_app, client)
    assert username == "alice"
    assert {"Engineering", "Staff", "Loop A", "Loop B"} <= set(groups)


def test_ad_upn_that_differs_from_the_account_name(ad_app):
    """alice.smith@corp.example signs in as asmith: the identity is the directory's value."""
    client = ad_app.test_client()
    assert AuthActions(client).login("alice.smith@corp.example", "asmith-secret").status_code == 302
    assert signed_in_as(ad_app, client)[0] == "asmith"


def test_ad_unknown_domain_is_refused(ad_app, ldap_spy):
    """OTHER\\alice is not a form this directory knows: a generic failure, no LDAP traffic."""
    auth = AuthActions(ad_app.test_client())
    token = auth.csrf_token()
    ldap_spy.reset()
    response = auth.client.post(
        "/login", data={"csrf_token": token, "username": "OTHER\\alice", "password": "x"}
    )
    assert response.status_code == 401
    assert ldap_spy.operations == 0


@pytest.mark.parametrize("name", ["bob", "dave"])
def test_ad_disabled_and_locked_look_like_a_wrong_password(ad_app, name):
    """UAC 0x2 (bob) and lockout (dave) get the same answer as a wrong password."""
    refused = AuthActions(ad_app.test_client()).login(name, f"{name}-secret")
    wrong = AuthActions(ad_app.test_client()).login("alice", "wrong")
    assert refused.status_code == wrong.status_code == 401
    assert "Wrong username or password." in refused.get_data(as_text=True)


def test_ad_flags_are_tested_bitwise(ad_app):
    """frank's userAccountControl is 66048 (never-expires + normal): enabled, not 512."""
    client = ad_app.test_client()
    assert AuthActions(client).login("frank").status_code == 302
    username, groups = signed_in_as(ad_app, client)
    assert {"R&D (Europe)*", "Research", "Staff"} <= set(groups)
    assert client.get("/pages/research").status_code == 200


@pytest.mark.parametrize("name", ["carol", "erin"])
def test_ad_must_change_password_is_said_plainly_with_the_right_password_only(ad_app, name):
    """pwdLastSet 0 (carol) and an expired password (erin): told to change it, not signed in."""
    client = ad_app.test_client()
    response = AuthActions(client).login(name, f"{name}-secret")
    body = response.get_data(as_text=True)
    assert response.status_code == 403
    assert MUST_CHANGE in body
    assert ad_app.config["PASSWORD_CHANGE_URL"] in body
    assert client.get("/").status_code == 302
    wrong = AuthActions(ad_app.test_client()).login(name, "not-the-password")
    assert wrong.status_code == 401
    assert MUST_CHANGE not in wrong.get_data(as_text=True)


def test_ad_memberof_mode_costs_no_group_search(ad_app, ldap_spy):
    """memberOf gives direct groups for free; only the nesting levels cost a search each."""
    AuthActions(ad_app.test_client()).login("asmith", "asmith-secret")  # warm the pool
    ldap_spy.reset()
    AuthActions(ad_app.test_client()).login("alice")
    # user search, bind, nesting level 1 (Staff, Loop B), level 2 (nothing new)
    assert ldap_spy.operations == 4


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ("replace: userAccountControl\nuserAccountControl: 514", "disabled"),
        ("replace: msDS-User-Account-Control-Computed\nmsDS-User-Account-Control-Computed: 16",
         "locked"),
        ("replace: pwdLastSet\npwdLastSet: 0", "must change"),
        ("replace: accountExpires\naccountExpires: 1", "account expired"),
    ],
)  # fmt: skip
def test_ad_account_state_change_signs_out_within_the_ttl(clock, change, name):
    """Disabled, locked or expired after signing in: access ends once the cache entry expires."""
    server = start_slapd(**trees.ad_options())
    try:
        app = example_app("ad", server, USER_CACHE_TTL=60)
        client = app.test_client()
        AuthActions(client).login("alice")
        server.modify(f"dn: {trees.AD_USERS['alice']}\nchangetype: modify\n{change}\n")
        assert client.get("/").status_code == 200, "cached until the TTL"
        clock.advance(61)
        assert client.get("/").status_code == 302, f"{name}: signed out"
    finally:
        server.cleanup()


def test_memberof_overlay_tree_gives_groups_without_a_group_search(ldap_spy):
    """On OpenLDAP with the memberof overlay, groups come from the entry, nesting by search."""
    server = start_slapd(**trees.memberof_options())
    try:
        app = example_app("openldap-memberof", server)
        AuthActions(app.test_client()).login("bob")  # warm the pool
        client = app.test_client()
        ldap_spy.reset()
        assert AuthActions(client).login("alice").status_code == 302
        assert signed_in_as(app, client)[1] == ["engineering", "research", "staff"]
        assert ldap_spy.operations == 4  # user search, bind, 2 nesting levels
        refused = AuthActions(app.test_client()).login("dave")
        assert refused.status_code == 403, "suspended (a denied group) via memberOf"
    finally:
        server.cleanup()


@pytest.fixture
def ppolicy_app():
    """A fresh ppolicy tree (binds change its state) and the portal with its example settings."""
    server = start_slapd(**trees.ppolicy_options())
    yield example_app("ppolicy", server, USER_CACHE_TTL=60), server
    server.cleanup()


def test_ppolicy_normal_account_signs_in_with_a_template_bind(ppolicy_app):
    """alice binds through LDAP_USER_DN_TEMPLATE with the ppolicy control and is signed in."""
    app, _ = ppolicy_app
    client = app.test_client()
    assert AuthActions(client).login("alice").status_code == 302
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("name", ["reset", "grace"])
def test_ppolicy_reset_or_grace_bind_is_not_a_full_login(ppolicy_app, name):
    """A bind that succeeds after a reset or on a grace login asks for a new password."""
    app, _ = ppolicy_app
    client = app.test_client()
    response = AuthActions(client).login(name, f"{name}-secret")
    assert response.status_code == 403
    assert MUST_CHANGE in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_ppolicy_grace_sign_in_says_how_many_grace_logins_are_left(ppolicy_app):
    """Each bind on an expired password uses one of its grace logins (2 in this tree), the
    change's too: the first sign-in says one is left and leads to the change, which uses it;
    had it been the last, the page says so and sends the person to the service desk instead
    of a change page that must fail (it led there, and the change said "expired")."""
    app, _ = ppolicy_app
    first = AuthActions(app.test_client()).login("grace", "grace-secret")
    assert first.status_code == 403
    page = first.get_data(as_text=True)
    assert MUST_CHANGE in page and "You have 1 grace sign-in left with it" in page
    assert "Change your password" in page
    last = AuthActions(app.test_client()).login("grace", "grace-secret")
    assert last.status_code == 403
    page = last.get_data(as_text=True)
    assert "that was its last grace sign-in" in page and "ask the service desk" in page
    assert "Change your password" not in page


def test_ppolicy_lockout_looks_like_a_wrong_password():
    """A locked account, and one locked by failed attempts, get the wrong-password answer."""
    server = start_slapd(**trees.ppolicy_options())
    # The example's throttle stops guessing before the lockout; lift it to reach the lockout.
    try:
        app = example_app("ppolicy", server, THROTTLE_ACCOUNT_LIMIT="100 per minute")
        assert AuthActions(app.test_client()).login("locked", "locked-secret").status_code == 401
        for _ in range(trees.PPOLICY_MAX_FAILURE):
            AuthActions(app.test_client()).login("alice", "wrong")
        response = AuthActions(app.test_client()).login("alice")
        assert response.status_code == 401
        assert "Wrong username or password." in response.get_data(as_text=True)
        app.extensions["portal.directory"].close()
    finally:
        server.cleanup()


def test_ppolicy_lock_after_sign_in_ends_access_within_the_ttl(ppolicy_app, clock):
    """An administrator locks a signed-in account: signed out once the cache entry expires."""
    app, server = ppolicy_app
    client = app.test_client()
    assert AuthActions(client).login("alice").status_code == 302
    server.modify(
        f"dn: {trees.PPOLICY_PEOPLE['alice']}\nchangetype: modify\n"
        "replace: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n"
    )
    assert client.get("/").status_code == 200, "cached until the TTL"
    clock.advance(61)
    assert client.get("/").status_code == 302


def test_ppolicy_password_ageing_while_signed_in_ends_access_within_the_ttl(clock, monkeypatch):
    """With LDAP_PASSWORD_MAX_AGE_DAYS, a password that expires during a session signs out."""
    server = start_slapd(**trees.ppolicy_options())
    try:
        alice = trees.PPOLICY_PEOPLE["alice"]
        changed = subprocess.run(
            [find_binary("ldappasswd"), "-x", "-H", server.url, "-D", alice, "-w",
             "alice-secret", "-s", "alice-new-secret"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert changed.returncode == 0, changed.stderr  # sets pwdChangedTime to now
        app = example_app("ppolicy", server, USER_CACHE_TTL=60, LDAP_PASSWORD_MAX_AGE_DAYS=90)
        client = app.test_client()
        assert AuthActions(client).login("alice", "alice-new-secret").status_code == 302
        later = time.time() + 91 * 86400
        monkeypatch.setattr("portal.directory.account_state.clock", lambda: later)
        assert client.get("/").status_code == 200, "cached until the TTL"
        clock.advance(61)
        assert client.get("/").status_code == 302
    finally:
        server.cleanup()


def test_ppolicy_password_change_ends_the_sign_ins_made_with_the_old_one(ppolicy_app, clock):
    """alice changes her password (ldappasswd, as she would): copies of her old session and
    "keep me signed in" cookie stop working at the next directory read; a sign-in with the
    new password keeps working."""
    app, server = ppolicy_app
    browser = app.test_client()
    assert AuthActions(browser).login("alice", remember=True).status_code == 302
    thief = app.test_client()
    for name in ("session", "remember_token"):
        thief.set_cookie(name, browser.get_cookie(name).value)
    remembered = app.test_client()
    remembered.set_cookie("remember_token", browser.get_cookie("remember_token").value)
    alice = trees.PPOLICY_PEOPLE["alice"]
    changed = subprocess.run(
        [find_binary("ldappasswd"), "-x", "-H", server.url, "-D", alice, "-w",
         "alice-secret", "-s", "alice-new-secret"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert thief.get("/").status_code == 200, "cached until the TTL"

    clock.advance(61)

    assert thief.get("/").status_code == 302
    assert remembered.get("/").status_code == 302
    assert browser.get("/").status_code == 302
    fresh = app.test_client()
    assert AuthActions(fresh).login("alice", "alice-new-secret").status_code == 302
    clock.advance(61)
    assert fresh.get("/").status_code == 200, "the new password's sign-in stays"


def test_ad_password_change_ends_the_sign_ins_made_with_the_old_one(clock):
    """AD records a change in pwdLastSet: older sign-ins end within the TTL."""
    server = start_slapd(**trees.ad_options())
    try:
        app = example_app("ad", server, USER_CACHE_TTL=60)
        client = app.test_client()
        assert AuthActions(client).login("alice").status_code == 302
        server.modify(
            f"dn: {trees.AD_USERS['alice']}\nchangetype: modify\n"
            "replace: pwdLastSet\npwdLastSet: 134100000000000000\n"
        )
        clock.advance(61)
        assert client.get("/").status_code == 302
    finally:
        server.cleanup()


def test_login_ids_from_before_password_stamps_are_refused():
    """An id in the older four-part form ends (people sign in once more after the upgrade)."""
    from portal.signin import logins

    assert logins.parse("alice|sid|1|99999999999999") is None
    current = logins.new_login("alice", 1, 10**13, logins.password_stamp("20260101000000Z"))
    assert logins.parse(current.id) == current
    assert logins.parse(current.id[:-1] + "Z") is None


def test_memberof_and_search_together_take_groups_from_both(ldap_spy):
    """In "both" mode memberOf and search both count; groups outside the group base never do."""
    frank = "uid=frank,ou=people,dc=example,dc=org"
    server = start_slapd(**trees.memberof_options())
    try:
        server.add(
            "dn: ou=teams,dc=example,dc=org\nobjectClass: organizationalUnit\nou: teams\n\n"
            f"dn: cn=portal-admins,ou=teams,dc=example,dc=org\nobjectClass: groupOfNames\n"
            f"cn: portal-admins\nmember: {frank}\n\n"
            "dn: cn=ops,ou=groups,dc=example,dc=org\nobjectClass: posixGroup\ncn: ops\n"
            "gidNumber: 7000\nmemberUid: frank\n"
        )
        posix_only = "(&(objectClass=posixGroup)(memberUid={username}))"
        found = {}
        for mode in ("memberof", "search", "both"):
            app = example_app("openldap-memberof", server, LDAP_GROUP_MEMBERSHIP=mode,
                              LDAP_GROUP_FILTER=posix_only,
                              ACCESS_ALLOWED_GROUPS=["staff", "ops"])  # fmt: skip
            client = app.test_client()
            assert AuthActions(client).login("frank").status_code == 302
            found[mode] = set(signed_in_as(app, client)[1])
            assert client.get("/admin/status").status_code == 403, "ou=teams grants nothing"
        assert found["memberof"] == {"finance", "staff"}
        assert found["search"] == {"ops"}
        assert found["both"] == {"finance", "ops", "staff"}
    finally:
        server.cleanup()


def test_active_directory_in_chain_filter_is_sent_with_the_escaped_dn(ad_server, ldap_spy):
    """The AD in-chain matching rule is accepted and sent as written (slapd answers nothing)."""
    app = example_app(
        "ad",
        ad_server,
        LDAP_GROUP_MEMBERSHIP="search",
        LDAP_GROUP_FILTER="(member:1.2.840.113556.1.4.1941:={user_dn})",
        LDAP_GROUP_NESTING_DEPTH=0,
    )
    AuthActions(app.test_client()).login("frank")
    assert "(member:1.2.840.113556.1.4.1941:=cn=Frank Figures,ou=Users,dc=corp,dc=example)" in (
        ldap_spy.filters()
    )


def test_upn_bind_signs_in_the_account_the_server_says_is_bound(ad_server):
    """After a UPN bind the identity comes from Who-am-I (u:DOMAIN\\account), not the name typed."""
    app = example_app("ad", ad_server, LDAP_USER_DN_TEMPLATE="{username}@corp.example")
    directory = app.extensions["portal.directory"]

    class BoundAs:
        def __init__(self, answer):
            self.extend = SimpleNamespace(standard=SimpleNamespace(who_am_i=lambda: answer))

    with app.app_context():
        # The name typed is another's: the bound account decides.
        entry = directory._bound_entry(BoundAs("u:CORP\\asmith"), "someone-else")
        assert entry["dn"].lower().startswith("cn=alice smith,")
        assert directory._bound_entry(BoundAs(""), "asmith") is None


@pytest.mark.parametrize("typed", ["asmith", "alice.smith@corp.example", "CORP\\asmith"])
def test_admin_tools_find_a_person_by_each_name_they_sign_in_with(ad_app, typed):
    """asmith signs in as alice.smith@corp.example (her user principal name, unlike
    <sAMAccountName>@<domain>): whois, access-check and the admin pages' "explain a person"
    find her by it too (they looked for "alice.smith" and said there is no such person)."""
    client = ad_app.test_client()
    assert AuthActions(client).login(typed, "asmith-secret").status_code == 302
    assert session_username(client) == "asmith"
    runner = ad_app.test_cli_runner()
    whois = runner.invoke(args=["whois", typed])
    assert whois.exit_code == 0 and "asmith" in whois.output, whois.output
    assert "no such person" not in whois.output
    check = runner.invoke(args=["access-check", typed, "/"])
    assert check.exit_code == 0 and "no such person" not in check.output, check.output
    with ad_app.app_context():
        assert accounts.explain_person(typed, "localhost").username == "asmith"


SHARED_NAME_ENTRY = """dn: CN=Alice Smithers,OU=Users,DC=corp,DC=example
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: user
cn: Alice Smithers
sn: Smithers
displayName: Alice Smithers
sAMAccountName: alice.smith
userPrincipalName: alice.smithers@corp.example
userAccountControl: 512
memberOf: CN=Staff,OU=Groups,DC=corp,DC=example
userPassword: smithers-secret
"""


def test_admin_tools_say_a_name_two_entries_share_signs_nobody_in():
    """alice.smith@corp.example is asmith's user principal name and, as <name>@<domain>, the
    sign-in name of another entry whose sAMAccountName is alice.smith: a sign-in with it is
    refused. whois, access-check and the admin pages said so of nobody: they described the
    entry the bare name finds as able to sign in (exit 0, ALLOWED)."""
    server = start_slapd(**trees.ad_options())
    try:
        server.add(SHARED_NAME_ENTRY)
        app = example_app("ad", server, ACCESS_ADMIN_GROUPS=["Staff"])
        typed = "alice.smith@corp.example"
        assert AuthActions(app.test_client()).login(typed, "asmith-secret").status_code == 401
        assert AuthActions(app.test_client()).login(typed, "smithers-secret").status_code == 401
        runner = app.test_cli_runner()
        whois = runner.invoke(args=["whois", typed])
        assert whois.exit_code == 1, whois.output
        assert "finds more than one entry" in whois.output, whois.output
        check = runner.invoke(args=["access-check", typed, "/"])
        assert check.exit_code == 1 and "ALLOWED" not in check.output, check.output
        assert "finds more than one entry" in check.output, check.output
        admin = app.test_client()
        assert AuthActions(admin).login("frank", "frank-secret").status_code == 302
        page = admin.get(f"/admin/users/{typed}").get_data(as_text=True)
        assert "finds more than one entry" in page, page
        # Each by a name of its own is described as ever.
        assert runner.invoke(args=["whois", "asmith"]).exit_code == 0
        assert runner.invoke(args=["whois", "alice.smithers@corp.example"]).exit_code == 0
        app.extensions["portal.directory"].close()
    finally:
        server.cleanup()


def test_revoke_by_a_user_principal_name_ends_its_owners_sign_ins(ad_server, redis_server):
    """`portal revoke alice.smith@corp.example` ends asmith's sign-ins and names her (it looked
    for "alice.smith", found nobody, and asmith stayed signed in)."""
    shared = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url,
              "CACHE_KEY_PREFIX": "revoke-upn-test:"}  # fmt: skip
    server = example_app("ad", ad_server, **shared)
    command_line = example_app("ad", ad_server, **shared)
    try:
        client = server.test_client()
        assert AuthActions(client).login("asmith", "asmith-secret").status_code == 302
        result = command_line.test_cli_runner().invoke(args=["revoke", "alice.smith@corp.example"])
        assert result.exit_code == 0, result.output
        assert (
            "asmith (found by 'alice.smith@corp.example'): every sign-in made until now has ended"
            in (result.output)
        )
        assert client.get("/").status_code == 302  # to the sign-in page
    finally:
        for app in (server, command_line):
            app.extensions["portal.directory"].close()


def test_an_administrators_look_up_of_a_locked_account_logs_no_sign_out(ad_app, caplog):
    """whois of dave (locked) says his state, and the log does not claim he "is no longer
    signed in" (it read as if whois had just signed him out); a sign-in's re-read still says
    it."""
    caplog.set_level(logging.INFO)
    whois = ad_app.test_cli_runner().invoke(args=["whois", "dave"])
    assert "cannot sign in: the account is locked" in whois.output, whois.output
    assert not [r for r in caplog.records if "no longer signed in" in r.getMessage()]
    with ad_app.app_context():
        assert accounts._read_directory("dave") is None
    assert [r for r in caplog.records if "dave is no longer signed in: account locked" in
            r.getMessage()]  # fmt: skip


def test_admin_pages_revoke_by_a_user_principal_name_revokes_its_owner(ad_server, redis_server):
    """An administrator opens /admin/users/alice.smith@corp.example/revoke by hand: asked about
    asmith, and the POST ends asmith's sign-ins (it looked for "alice.smith": nobody)."""
    shared = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url,
              "CACHE_KEY_PREFIX": "admin-revoke-upn-test:",
              "ACCESS_ADMIN_GROUPS": ["Staff"]}  # fmt: skip
    app = example_app("ad", ad_server, **shared)
    try:
        asmith, admin = app.test_client(), app.test_client()
        assert AuthActions(asmith).login("asmith", "asmith-secret").status_code == 302
        assert AuthActions(admin).login("frank", "frank-secret").status_code == 302
        asked = admin.get("/admin/users/alice.smith@corp.example/revoke")
        assert asked.status_code == 302 and asked.headers["Location"].endswith(
            "/admin/users/asmith/revoke"), asked.headers.get("Location")  # fmt: skip
        token = csrf_token_in(admin.get("/admin/users/asmith/revoke").get_data(as_text=True))
        done = admin.post("/admin/users/alice.smith@corp.example/revoke",
                          data={"csrf_token": token})  # fmt: skip
        assert done.status_code == 302 and done.headers["Location"].endswith("/admin/users/asmith")
        assert asmith.get("/").status_code == 302  # signed out
    finally:
        app.extensions["portal.directory"].close()
