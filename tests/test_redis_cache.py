"""The user cache in a real Redis, shared by separate app instances as gunicorn workers share it."""

from __future__ import annotations

import json
import signal
import threading

import redis

from portal.testing.slapd import free_port
from tests.conftest import AuthActions, make_app

STAFF_DN = "cn=staff,ou=groups,dc=example,dc=org"
ALICE_DN = "uid=alice,ou=people,dc=example,dc=org"


def copy_session(source, target) -> None:
    """Give the target client the source client's session cookie, as a browser would resend it."""
    cookie = source.get_cookie("session")
    assert cookie is not None, "the source client has no session cookie"
    target.set_cookie("session", cookie.value)


def decode_redis_value(raw: bytes) -> object:
    """Undo portal.cache.backend's format: a signed JSON envelope {"k", "x", "v"}, then "." and
    the signature (integers are stored bare).

    The one place these tests know the cache's storage format (tests/test_cache_integrity.py
    checks the signature): a later change to the backend's format must update it.
    """
    body, _, signature = raw.rpartition(b".")
    assert body.startswith(b"{") and signature, f"not a signed JSON entry: {raw[:20]!r}"
    return json.loads(body)["v"]


def cached_payload(client: redis.Redis, key: str) -> dict:
    """The attribute data of one cache entry, which the portal stores as JSON text."""
    raw = client.get(key)
    assert raw is not None, f"no cache entry {key!r}"
    value = decode_redis_value(raw)
    assert type(value) is str, f"the cache holds a {type(value).__name__}, not JSON text"
    return json.loads(value)


def test_sign_in_on_one_instance_is_served_from_redis_by_another(
    slapd, make_instance, key_prefix, redis_client, ldap_spy
):
    """A person signed in on instance A is served by instance B from Redis with no LDAP work."""
    app_a, app_b = make_instance(slapd), make_instance(slapd)
    client_a, client_b = app_a.test_client(), app_b.test_client()
    assert AuthActions(client_a).login("alice").status_code == 302
    assert redis_client.exists(key_prefix + "user:alice") == 1
    copy_session(client_a, client_b)

    ldap_spy.reset()
    response = client_b.get("/")

    assert response.status_code == 200
    assert "Alice Liddell" in response.get_data(as_text=True)
    assert ldap_spy.operations == 0, ldap_spy.calls


def test_redis_entry_is_plain_json_attributes_with_a_bounded_ttl(
    slapd, make_instance, key_prefix, redis_client
):
    """The Redis entry is JSON attribute data without the password, expiring within the TTL."""
    application = make_instance(slapd)
    assert AuthActions(application.test_client()).login("alice").status_code == 302
    key = key_prefix + "user:alice"

    payload = cached_payload(redis_client, key)
    ttl = redis_client.ttl(key)

    assert payload["username"] == "alice"
    assert payload["dn"] == ALICE_DN
    assert {"staff", "engineering"} <= set(payload["groups"])
    # Attribute data, when the password last changed (a time) and which entry this is, never
    # a password.
    assert set(payload) == {
        "username", "dn", "display_name", "email", "groups", "password_changed",
        "password_expires", "entry_id", "fetched_at"
    }  # fmt: skip
    assert "alice-secret" not in json.dumps(payload)
    # Kept past its freshness for USER_STALE_GRACE (an outage of the directory), no longer.
    config = application.config
    assert config["USER_CACHE_TTL"] < ttl <= config["USER_CACHE_TTL"] + config["USER_STALE_GRACE"]


def test_logout_on_one_instance_ends_copies_of_the_session_on_another(
    slapd, make_instance, key_prefix, redis_client, ldap_spy
):
    """Signing out on A ends that login on B too: a copy of the cookie no longer signs in."""
    app_a, app_b = make_instance(slapd), make_instance(slapd)
    client_a, client_b = app_a.test_client(), app_b.test_client()
    auth_a = AuthActions(client_a)
    assert auth_a.login("alice").status_code == 302
    copy_session(client_a, client_b)  # the cookie as it was before signing out
    key = key_prefix + "user:alice"
    ldap_spy.reset()
    assert client_b.get("/").status_code == 200
    assert ldap_spy.operations == 0, "before sign-out B is served from the shared entry"

    assert auth_a.logout().status_code == 302
    assert redis_client.exists(key) == 0

    replayed = client_b.get("/")
    assert replayed.status_code == 302
    assert replayed.headers["Location"].startswith("/login")


def test_group_removal_ends_access_on_every_instance_when_the_entry_expires(
    own_slapd, make_instance, key_prefix, redis_client, ldap_spy
):
    """After losing her allowed group, alice keeps access only until the shared entry expires."""
    app_a, app_b = make_instance(own_slapd), make_instance(own_slapd)
    client_a, client_b = app_a.test_client(), app_b.test_client()
    assert AuthActions(client_a).login("alice").status_code == 302
    copy_session(client_a, client_b)
    key = key_prefix + "user:alice"

    own_slapd.modify(f"dn: {STAFF_DN}\nchangetype: modify\ndelete: member\nmember: {ALICE_DN}\n")

    ldap_spy.reset()
    cached = client_b.get("/")
    assert cached.status_code == 200, "within the TTL the shared entry still serves her"
    assert ldap_spy.operations == 0, ldap_spy.calls

    # What the TTL does when it runs out; that the entry has a TTL at all is proven by
    # test_redis_entry_is_plain_json_attributes_with_a_bounded_ttl, so no test sleeps for it.
    assert redis_client.delete(key) == 1

    ldap_spy.reset()
    expired = client_b.get("/")
    assert expired.status_code == 302
    assert expired.headers["Location"].startswith("/login")
    assert ldap_spy.operations > 0, "B refused her without reading the directory"


def test_redis_down_degrades_to_the_directory_never_a_500(slapd, ldap_spy):
    """With the cache's Redis unreachable, pages work from the directory; /readyz says why."""
    app = make_app(
        slapd,
        CACHE_TYPE="RedisCache",
        CACHE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        # Login counts elsewhere: with them in the dead Redis too, login is refused (see
        # test_throttle.py); this test is about pages.
        THROTTLE_STORAGE_URL="memory://",
    )
    client = app.test_client()
    assert AuthActions(client).login("alice").status_code == 302
    ldap_spy.reset()
    assert [client.get("/").status_code for _ in range(10)] == [200] * 10
    # The entry read at login is kept in this process while Redis is down (cache_guard.py).
    assert ldap_spy.operations == 0, "the directory is read once per person, not per request"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["failed"] == ["cache"]
    app.extensions["portal.directory"].close()


def test_hung_redis_costs_a_bounded_wait_not_a_hung_worker(slapd, own_redis, caplog, monkeypatch):
    """A frozen Redis (accepts, never answers) times out; pages come from the directory."""
    app = make_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)
    client = app.test_client()
    AuthActions(client).login("alice")
    own_redis.process.send_signal(signal.SIGSTOP)
    statuses = []
    worker = threading.Thread(target=lambda: statuses.append(client.get("/").status_code))
    worker.start()
    worker.join(timeout=60)  # a bound for the test run, not a timing assertion
    assert not worker.is_alive(), "a request waited on the frozen Redis without a timeout"
    assert statuses == [200]
    warnings = [r for r in caplog.records if "user cache" in r.getMessage()]
    assert len(warnings) == 1, "a read and a write failed: logged once, not per failure"
    assert f" at {own_redis.url} failed " in warnings[0].getMessage(), "which Redis hangs"
    app.extensions["portal.directory"].close()


def test_status_page_counts_the_people_cached_in_redis(slapd, make_instance, redis_client):
    """Three people signed in on two instances: the page counts 3 entries, not the revocation
    markers or login counts stored beside them."""
    app_a, app_b = make_instance(slapd), make_instance(slapd)
    AuthActions(app_a.test_client()).login("alice")
    bob = app_b.test_client()
    AuthActions(bob).login("bob")
    AuthActions(bob).logout()  # leaves an "ended" marker, and drops bob's entry
    AuthActions(app_b.test_client()).login("frank", "wrong")  # a throttle count
    AuthActions(app_b.test_client()).login("frank")
    erin = app_a.test_client()
    AuthActions(erin).login("erin")
    body = erin.get("/admin/status").get_data(as_text=True)
    assert "<dt>People cached</dt><dd>3</dd>" in body
