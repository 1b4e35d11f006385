"""The cached user loader: LDAP operations counted with a spy, revocation by ldapmodify."""

from __future__ import annotations

import pytest

from portal import accounts
from tests.conftest import AuthActions, eventually, make_app

REMOVE_ALICE_FROM_STAFF = """\
dn: cn=staff,ou=groups,dc=example,dc=org
changetype: modify
delete: member
member: uid=alice,ou=people,dc=example,dc=org
"""

SUSPEND_ALICE = """\
dn: cn=suspended,ou=groups,dc=example,dc=org
changetype: modify
add: member
member: uid=alice,ou=people,dc=example,dc=org
"""

ADD_ALICE_TO_FINANCE = """\
dn: cn=finance,ou=groups,dc=example,dc=org
changetype: modify
add: member
member: uid=alice,ou=people,dc=example,dc=org
"""

#: The TTL of the private-directory app: unlike the demo's 300 s it differs from Flask-Caching's
#: default timeout, so the TTL tests fail if USER_CACHE_TTL stops reaching the cache.
TTL = 60


@pytest.fixture
def own_app(own_slapd):
    """The portal against a private directory that the test may change, with a 60 s TTL."""
    application = make_app(own_slapd, USER_CACHE_TTL=TTL)
    yield application
    application.extensions["portal.directory"].close()


def test_request_served_from_cache_costs_no_ldap_operation(client, auth, ldap_spy):
    """After login, a page view rebuilds the user from the cache: 0 searches, 0 binds, 0 opens."""
    auth.login("alice")
    ldap_spy.reset()
    for path in ("/", "/pages/handbook", "/pages/engineering"):
        assert client.get(path).status_code == 200
    assert ldap_spy.count() == 0


def test_login_costs_at_most_three_ldap_operations(app, client, auth, ldap_spy):
    """A login is one user search, one bind as the returned DN, one group search."""
    AuthActions(app.test_client()).login("bob")  # opens the pooled service and bind connections
    ldap_spy.reset()
    auth.login("alice")
    assert ldap_spy.operations <= 3
    assert ldap_spy.user_binds() == ["uid=alice,ou=people,dc=example,dc=org"]
    assert ldap_spy.count("open") == 0, "warm pools: no connection is opened for a login"


def test_cache_miss_reads_the_directory_once_then_hits(app, client, auth, ldap_spy):
    """With the entry gone, one request reads the directory (no bind) and refills the cache."""
    auth.login("alice")
    with app.app_context():
        accounts.forget("alice")
    ldap_spy.reset()
    assert client.get("/").status_code == 200
    assert ldap_spy.count("search") == 2
    assert ldap_spy.user_binds() == []
    ldap_spy.reset()
    assert client.get("/").status_code == 200
    assert ldap_spy.count() == 0


def test_decoded_entries_kept_are_bounded_in_characters(app, monkeypatch):
    """Each sign-in writes a new entry, and a person in hundreds of groups has long ones: the
    decoded entries a process keeps are bounded by their text, not only by their number."""
    entry_length = None
    for _ in range(6):
        client = app.test_client()
        AuthActions(client).login("alice")
        assert client.get("/").status_code == 200
        kept = accounts.app_state(app).decoded
        entry_length = entry_length or len(next(iter(kept)))
        monkeypatch.setattr(accounts, "DECODED_CHARACTERS", 3 * entry_length, raising=False)
        assert sum(map(len, kept)) <= 3 * entry_length


def test_cached_value_is_plain_attribute_data(app, auth):
    """The cache holds JSON text of the person's attributes, nothing executable, no password."""
    auth.login("alice")
    with app.app_context():
        from portal.extensions import cache

        raw = cache.get(accounts.cache_key("alice"))
    assert isinstance(raw, str)
    assert '"dn":"uid=alice,ou=people,dc=example,dc=org"' in raw
    assert "alice-secret" not in raw


def test_removed_from_allowed_group_loses_access_within_the_ttl(own_app, own_slapd, clock):
    """Alice keeps access while her entry is cached, and loses it once the TTL has passed."""
    client = own_app.test_client()
    AuthActions(client).login("alice")
    own_slapd.modify(REMOVE_ALICE_FROM_STAFF)
    assert client.get("/").status_code == 200, "still cached: access lasts at most the TTL"
    clock.advance(TTL - 5)
    assert client.get("/").status_code == 200, "5 s before the TTL runs out"
    clock.advance(10)  # TTL + 5 s: past it
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_added_to_denied_group_loses_access_within_the_ttl(own_app, own_slapd, clock):
    """Joining a denied group ends access after the TTL, remember-me path included."""
    client = own_app.test_client()
    AuthActions(client).login("alice", remember=True)
    own_slapd.modify(SUSPEND_ALICE)
    clock.advance(TTL + 5)
    client.delete_cookie("session")
    assert client.get("/").status_code == 302


def test_deleted_account_is_signed_out_within_the_ttl(own_app, own_slapd, clock):
    """A person deleted from the directory is signed out once their cache entry expires."""
    client = own_app.test_client()
    AuthActions(client).login("bob")
    own_slapd.delete("uid=bob,ou=people,dc=example,dc=org")
    clock.advance(TTL + 5)
    assert client.get("/").status_code == 302


def test_new_group_opens_its_page_after_the_ttl(own_app, own_slapd, clock):
    """Freshness works both ways: a group added in the directory shows up after the TTL."""
    client = own_app.test_client()
    AuthActions(client).login("alice")
    own_slapd.modify(ADD_ALICE_TO_FINANCE)
    assert client.get("/pages/finance").status_code == 403
    clock.advance(TTL - 5)
    assert client.get("/pages/finance").status_code == 403, "5 s before the TTL runs out"
    clock.advance(10)
    assert client.get("/pages/finance").status_code == 200


def test_login_elsewhere_refreshes_the_shared_entry_without_anyone_signing_out(own_app, own_slapd):
    """Alice signing in on a second browser stores her new group for her first browser too."""
    first, second = own_app.test_client(), own_app.test_client()
    assert AuthActions(first).login("alice").status_code == 302
    assert first.get("/pages/finance").status_code == 403, "not in finance yet; entry cached"
    own_slapd.modify(ADD_ALICE_TO_FINANCE)
    assert first.get("/pages/finance").status_code == 403, "the cached entry still serves"

    assert AuthActions(second).login("alice").status_code == 302

    assert first.get("/pages/finance").status_code == 200


def test_directory_outage_on_cache_miss_is_a_503_and_caches_nothing(own_slapd, clock):
    """A miss during an outage (without stale grace) answers 503; the error is never cached as
    "no groups"."""
    own_app = make_app(own_slapd, USER_CACHE_TTL=TTL, USER_STALE_GRACE=0)
    client = own_app.test_client()
    AuthActions(client).login("alice")
    own_slapd.stop()
    clock.advance(TTL + 5)
    response = client.get("/")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "directory" in response.get_data(as_text=True).lower()
    with own_app.app_context():
        assert accounts.cached_attributes("alice") is None
    own_slapd.start()
    eventually(lambda: client.get("/").status_code == 200)  # recovers without a restart


def test_expired_entry_is_refreshed_once_for_many_concurrent_requests(app, auth, ldap_spy, clock):
    """Twenty requests arriving as the entry expires cost one directory read, not twenty."""
    import threading

    auth.login("alice")
    cookie = auth.client.get_cookie("session").value
    clock.advance(app.config["USER_CACHE_TTL"] + 1)
    ldap_spy.reset()
    statuses = []
    start = threading.Barrier(20)

    def view_home():
        client = app.test_client()
        client.set_cookie("session", cookie)
        start.wait(timeout=30)
        statuses.append(client.get("/").status_code)

    threads = [threading.Thread(target=view_home) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [200] * 20
    assert ldap_spy.count("search") == 2, "one lookup: the person's entry and their groups"


def test_first_login_of_a_process_costs_five_operations(slapd, ldap_spy):
    """Cold pools: service bind, user search, liveness bind of the new password-check
    connection, the person's bind, group search. Warm pools: 3."""
    app = make_app(slapd)
    ldap_spy.reset()
    assert AuthActions(app.test_client()).login("alice").status_code == 302
    assert ldap_spy.operations == 5
    assert ldap_spy.count("open") == 2, "one service and one password-check connection"


def test_pooled_connections_keep_no_password(app, auth):
    """After logins (right and wrong), nothing reachable from the pools holds a password."""
    auth.login("alice")
    AuthActions(app.test_client()).login("bob", "a-mistyped-password")
    directory = app.extensions["portal.directory"]
    pooled = directory.bind_pool._idle + directory.pool._idle
    assert pooled, "the logins left connections in the pools"
    for connection in pooled:
        dump = repr({name: getattr(connection, name, None) for name in dir(connection)
                     if not name.startswith("__")})  # fmt: skip
        for secret in ("alice-secret", "a-mistyped-password", "dev-only-reader-secret"):
            assert secret not in dump, f"a pooled connection keeps {secret!r}"
