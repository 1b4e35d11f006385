"""Redis for high availability, against real servers: Sentinel failover and TLS.

The portal on Redis Sentinel (a master, its replica and a sentinel, all redis-server processes
of the test's own) keeps the user cache, the sign-out marks and the throttle counts on the
master the sentinel names; when that master is killed (kill -9) and the replica promoted, the
portal follows: sessions, sign-outs and counts carry on, and what the portal did not sign is
still a miss on the new master. Over TLS (``rediss://``), the certificate and host name are
verified against CACHE_REDIS_CA_FILE; one the portal does not trust is Redis being down.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time

import pytest

from portal import create_app
from portal.cache.redis_clients import SentinelAddress, location, parse_sentinel_url
from portal.extensions import cache
from portal.settings import ConfigError
from portal.testing.redis import RedisSentinelGroup, RedisServer
from portal.testing.tls import make_ca, make_server_certificate
from tests.conftest import PASSWORDS, AuthActions
from tests.servers import require_binary
from tests.test_cache_integrity import ADMIN_GROUP, Touch, assert_replaced_from_directory, pickled
from tests.test_config import settings
from tests.test_redis_cache import copy_session, decode_redis_value
from tests.test_throttle import attempt

PREFIX = "portal:"


@pytest.fixture
def sentinel_group():
    """A master, its replica and a sentinel of this test alone (it may kill or freeze them)."""
    require_binary("redis-server", "apt-get install redis-server")
    group = RedisSentinelGroup().start()
    yield group
    for process in [server.process for server in group.servers] + [group.sentinel.process]:
        if process is not None:
            process.send_signal(signal.SIGCONT)  # a frozen one would not hear SIGTERM
    group.cleanup()


@pytest.fixture
def on_sentinel(slapd, build_app, sentinel_group):
    """Build portals whose cache and throttle counts (the default) live on the Sentinel group."""

    def build(**overrides):
        return build_app(
            slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=sentinel_group.url(), **overrides
        )

    return build


def keys_on(server: RedisServer, pattern: str) -> list[bytes]:
    """The keys matching a glob pattern on one server, read with SCAN."""
    with server.client() as client:
        return list(client.scan_iter(match=pattern))


def signed_in(app, username: str):
    """A fresh client of `app` in which `username` has just signed in with their password."""
    client = app.test_client()
    assert AuthActions(client).login(username).status_code == 302
    return client


def copy_of(client, app):
    """A client of `app` holding a copy of another client's session cookie."""
    copy = app.test_client()
    copy_session(client, copy)
    return copy


def quiet_cache_warnings_reset(monkeypatch) -> None:
    """Let the user loader log its next cache failure (it logs one a minute at most)."""
    # raising=False: only while accounts keeps the time of its last line in this global.
    monkeypatch.setattr("portal.accounts._last_cache_warning", float("-inf"), raising=False)


def finishes(request, bound: float = 60.0):
    """Run request() in a thread; its result, failing if it has not returned within `bound` s
    (a bound for the test run, not a timing assertion)."""
    results = []
    worker = threading.Thread(target=lambda: results.append(request()))
    worker.start()
    worker.join(timeout=bound)
    assert not worker.is_alive(), "a request waited on a frozen Redis without a timeout"
    return results[0]


# --- Sentinel -------------------------------------------------------------------------------


def test_on_sentinel_entries_marks_and_counts_live_on_the_master(
    on_sentinel, sentinel_group, ldap_spy
):
    """Signed in on one instance, alice is served by another from the master with no LDAP
    operation; bob's sign-out mark and carol's failed logins are on the master and shared."""
    app_a, app_b = (on_sentinel(THROTTLE_ACCOUNT_LIMIT="2 per 15 minutes") for _ in "ab")
    master = sentinel_group.master()
    alice = signed_in(app_a, "alice")
    alice_on_b = copy_of(alice, app_b)
    ldap_spy.reset()
    assert alice_on_b.get("/").status_code == 200
    assert ldap_spy.operations == 0, ldap_spy.calls
    with master.client() as client:
        assert json.loads(decode_redis_value(client.get(PREFIX + "user:alice")))["dn"].startswith(
            "uid=alice,"
        )

    bob = signed_in(app_a, "bob")
    bob_on_b = copy_of(bob, app_b)
    assert AuthActions(bob).logout().status_code == 302
    assert keys_on(master, PREFIX + "marks:bob") == [(PREFIX + "marks:bob").encode()]
    assert bob_on_b.get("/").headers["Location"].startswith("/login")

    assert attempt(app_a, "carol").status_code == 401
    assert keys_on(master, "*account:carol*"), "the failed login was not counted on the master"
    assert attempt(app_b, "carol").status_code == 401
    assert attempt(app_a, "carol", PASSWORDS["carol"]).status_code == 429


def test_after_the_master_is_killed_the_portal_follows_the_promoted_replica(
    build_app, slapd, sentinel_group, ldap_spy
):
    """kill -9 of the master: once the sentinel has promoted the replica, a session made before
    is served from the new master with no LDAP operation, a signed-out copy stays signed out, a
    new login works and lands there, and failed logins counted before still count."""
    overrides = {
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": sentinel_group.url(),
        "THROTTLE_ACCOUNT_LIMIT": "3 per 15 minutes",
    }
    app_a, app_b = build_app(slapd, **overrides), build_app(slapd, **overrides)
    alice = signed_in(app_a, "alice")
    alice_on_b = copy_of(alice, app_b)
    assert alice_on_b.get("/").status_code == 200
    bob = signed_in(app_a, "bob")
    bob_on_b = copy_of(bob, app_b)
    assert AuthActions(bob).logout().status_code == 302
    assert attempt(app_a, "carol").status_code == 401
    assert attempt(app_b, "carol").status_code == 401
    # Replication is asynchronous: only what the replica has acknowledged survives a crash.
    sentinel_group.replicate()
    old = sentinel_group.master()

    promoted = sentinel_group.fail_over()

    assert promoted is not old and old.process is None
    ldap_spy.reset()
    page = alice_on_b.get("/")
    assert page.status_code == 200 and "Alice Liddell" in page.get_data(as_text=True)
    assert ldap_spy.operations == 0, "not served from the promoted replica's cache"
    assert bob_on_b.get("/").headers["Location"].startswith("/login"), "bob's sign-out was lost"
    erin = signed_in(app_b, "erin")
    assert erin.get("/").status_code == 200
    assert keys_on(promoted, PREFIX + "user:erin"), "the new login's entry is not on the master"
    assert attempt(app_a, "carol").status_code == 401
    assert attempt(app_b, "carol", PASSWORDS["carol"]).status_code == 429, "counts were lost"


def test_a_pickle_or_a_forgery_on_the_promoted_master_is_a_miss(
    on_sentinel, sentinel_group, ldap_spy, tmp_path
):
    """After a failover, a pickle or an entry forged to grant the admin group, written to the
    new master, is not believed: alice is read from the directory, and nothing is unpickled."""
    app = on_sentinel()
    alice = signed_in(app, "alice")
    # What the master holds reaches the replica first (else the promoted one, without the
    # marks' start, rightly ends alice's sign-in, and this test is about something else).
    sentinel_group.replicate()
    promoted = sentinel_group.fail_over()
    key = PREFIX + "user:alice"
    marker = tmp_path / "unpickled"
    with promoted.client() as client:
        client.set(key, pickled(Touch(marker)))
        ldap_spy.reset()
        assert alice.get("/").status_code == 200
        assert not marker.exists(), "the planted pickle was unpickled"
        real = json.loads(decode_redis_value(client.get(key)))
        assert_replaced_from_directory(app, client, key, ldap_spy)

        forged = dict(real, groups=[*real["groups"], ADMIN_GROUP], fetched_at=time.time())
        envelope = {"k": key, "x": None, "v": json.dumps(forged)}
        client.set(key, json.dumps(envelope).encode() + b".bm90LWEtc2lnbmF0dXJl")
        ldap_spy.reset()
        assert alice.get("/admin/status").status_code == 403, "the forgery made her an admin"
        assert_replaced_from_directory(app, client, key, ldap_spy)


def test_a_frozen_sentinel_or_master_costs_a_bounded_wait(
    on_sentinel, sentinel_group, ldap_spy, caplog, monkeypatch
):
    """CACHE_REDIS_TIMEOUT bounds the connections to the sentinel and to the master: with the
    sentinel frozen (SIGSTOP) a portal that must ask it where the master is reads the directory
    instead; with the master frozen too, pages still answer and login pauses (503), each answer
    within a bound."""
    quiet_cache_warnings_reset(monkeypatch)
    app_a = on_sentinel()
    alice = signed_in(app_a, "alice")
    master = sentinel_group.master()  # asked before the sentinel stops answering
    sentinel_group.sentinel.process.send_signal(signal.SIGSTOP)
    app_b = on_sentinel()  # no connection yet: it must ask the sentinel
    alice_on_b = copy_of(alice, app_b)
    ldap_spy.reset()
    assert finishes(lambda: alice_on_b.get("/").status_code) == 200
    assert ldap_spy.operations > 0, "served without the cache answering?"
    assert "No master found" in caplog.text

    master.process.send_signal(signal.SIGSTOP)
    ldap_spy.reset()
    assert finishes(lambda: alice.get("/").status_code) == 200
    assert finishes(lambda: attempt(app_a, "bob", PASSWORDS["bob"]).status_code) == 503
    assert ldap_spy.user_binds() == [], "a password was checked without the attempt counted"


def test_sentinel_and_servers_asking_for_a_password(slapd, build_app, ldap_spy):
    """With requirepass on the master, the replica and the sentinel, the URL's password opens
    all of them; without it the cache is down (/readyz says so) and login pauses."""
    require_binary("redis-server", "apt-get install redis-server")
    with RedisSentinelGroup(password="s3cret-redis") as group:
        app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=group.url())
        alice = signed_in(app, "alice")
        ldap_spy.reset()
        assert alice.get("/").status_code == 200
        assert ldap_spy.operations == 0, ldap_spy.calls
        assert keys_on(group.master(), PREFIX + "user:alice")

        url = group.url().replace(":s3cret-redis@", "")
        without = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=url)
        assert AuthActions(without.test_client()).login("alice").status_code == 503
        ready = without.test_client().get("/readyz")
        # (The failed-login counts live in that Redis too: they cannot be counted either.)
        assert ready.status_code == 503
        assert ready.get_json()["failed"] == ["cache", "failed-login counts"]


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA with a certificate for 127.0.0.1, and one it signs for another host."""
    require_binary("openssl", "apt-get install openssl")
    folder = tmp_path_factory.mktemp("redis-tls")
    ca = make_ca(folder, "Portal Redis Test CA")
    return {
        "good": make_server_certificate(folder, ca, "IP:127.0.0.1,DNS:localhost"),
        "wrong-host": make_server_certificate(folder, ca, "DNS:redis.elsewhere.example"),
    }


@pytest.fixture
def tls_redis(certificates, request):
    """A redis-server speaking only TLS, with the certificate the test's parameter names."""
    require_binary("redis-server", "apt-get install redis-server")
    server = RedisServer(tls=certificates[request.param]).start()
    yield server
    server.cleanup()


@pytest.mark.parametrize("tls_redis", ["good"], indirect=True)
def test_rediss_with_the_ca_file_serves_from_the_cache(tls_redis, certificates, slapd, build_app,
                                                      ldap_spy):  # fmt: skip
    """Over rediss:// with CACHE_REDIS_CA_FILE naming the CA, a person signed in on one
    instance is served by another from the cache, and failed logins are counted there."""
    overrides = {
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": tls_redis.url,
        "CACHE_REDIS_CA_FILE": str(certificates["good"].ca_file),
    }
    assert tls_redis.url.startswith("rediss://")
    app_a, app_b = build_app(slapd, **overrides), build_app(slapd, **overrides)
    alice_on_b = copy_of(signed_in(app_a, "alice"), app_b)
    ldap_spy.reset()
    assert alice_on_b.get("/").status_code == 200
    assert ldap_spy.operations == 0, ldap_spy.calls
    assert keys_on(tls_redis, PREFIX + "user:alice")
    assert attempt(app_b, "carol").status_code == 401
    assert keys_on(tls_redis, "*account:carol*")


@pytest.mark.parametrize(
    ("tls_redis", "ca_file"),
    [("good", ""), ("wrong-host", "ca")],
    ids=["ca-not-trusted", "certificate-for-another-host"],
    indirect=["tls_redis"],
)
def test_rediss_with_a_certificate_not_trusted_is_redis_down(
    tls_redis, ca_file, certificates, slapd, build_app, ldap_spy, caplog, monkeypatch
):
    """A certificate from a CA the portal was not told to trust (the system's CAs only), or
    one for another host name: nothing is read from or written to that Redis, the cache counts
    as down (pages still answer, it is logged, /readyz 503) and login pauses (503) when the
    counts live there."""
    quiet_cache_warnings_reset(monkeypatch)
    ca = str(certificates["good"].ca_file) if ca_file else ""
    overrides = {
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": tls_redis.url,
        "CACHE_REDIS_CA_FILE": ca,
    }
    paused = build_app(slapd, **overrides)
    ldap_spy.reset()
    assert AuthActions(paused.test_client()).login("alice").status_code == 503
    assert ldap_spy.user_binds() == [], "a password was checked without the attempt counted"

    app = build_app(slapd, THROTTLE_STORAGE_URL="memory://", **overrides)
    alice = signed_in(app, "alice")
    assert alice.get("/").status_code == 200
    ready = alice.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["failed"] == ["cache"]
    assert "certificate verify failed" in caplog.text
    assert any("user cache" in record.getMessage() for record in caplog.records)
    assert keys_on(tls_redis, "*") == [], "something reached the Redis it should not trust"


def test_sentinel_over_tls_verifies_the_sentinel_and_the_master(certificates, slapd, build_app,
                                                                ldap_spy):  # fmt: skip
    """rediss+sentinel:// with the CA file: the cache works through a TLS sentinel and master,
    and follows a failover; without the CA file, the sentinel is not trusted: login pauses."""
    require_binary("redis-server", "apt-get install redis-server")
    ca = str(certificates["good"].ca_file)
    with RedisSentinelGroup(tls=certificates["good"]) as group:
        url = group.url()
        assert url.startswith("rediss+sentinel://")
        app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=url,
                        CACHE_REDIS_CA_FILE=ca)  # fmt: skip
        alice = signed_in(app, "alice")
        group.replicate()
        group.fail_over()
        ldap_spy.reset()
        assert alice.get("/").status_code == 200
        assert ldap_spy.operations == 0, ldap_spy.calls

        untrusting = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=url)
        assert AuthActions(untrusting.test_client()).login("alice").status_code == 503


# --- Settings -------------------------------------------------------------------------------


def test_a_sentinel_url_names_its_sentinels_master_database_and_password():
    """The documented form, with several sentinels, the default port and an escaped password."""
    found = parse_sentinel_url("redis+sentinel://:p%40ss@s1:26380,s2,[::1]:26381/cache/2")
    assert found == SentinelAddress(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        master="cache",
        db=2,
        password="p@ss",
    )
    assert parse_sentinel_url("rediss+sentinel://s1:26379/cache").tls is True
    assert parse_sentinel_url("rediss+sentinel://s1:26379/cache").db == 0


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("redis://user:p%40ss@cache.example.org:6380/2", "redis://cache.example.org:6380/2"),
        ("rediss://:s3cret@[::1]:6379/0?ssl_min_version=TLSv1_3", "rediss://[::1]:6379/0"),
        ("unix://:s3cret@/run/redis/redis.sock?db=1", "unix:///run/redis/redis.sock"),
        ("redis+sentinel://:p%40ss@s1:26380,s2/cache/2", "redis+sentinel://s1:26380,s2/cache/2"),
        # Unencoded passwords that end urlsplit's netloc early: cut at the last "@" anyway.
        ("redis://default:/Xk3q9+Zz@cache:6379/0", "redis://cache:6379/0"),
        ("redis://:12345/abc@cache:6379/0", "redis://cache:6379/0"),
        ("redis://:a?b#c@d@cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_logs_name_a_redis_by_its_address_never_its_password(url, logged):
    """What an on-call engineer reads in "... failed at <where>": enough to find it, no secret."""
    assert location(url) == logged


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({"CACHE_REDIS_URL": "redis+sentinel://s1:26379"}, "CACHE_REDIS_URL", "name the master"),
        ({"CACHE_REDIS_URL": "redis+sentinel://s1:26379/m/x"}, "CACHE_REDIS_URL", "not a number"),
        ({"CACHE_REDIS_URL": "redis+sentinel://s1:port/m"}, "CACHE_REDIS_URL", "valid port"),
        ({"CACHE_REDIS_URL": "redis+sentinel:///m"}, "CACHE_REDIS_URL", "not host:port"),
        ({"CACHE_REDIS_URL": "redis+sentinel://s1/m?db=1"}, "CACHE_REDIS_URL", "no ?options"),
        ({"CACHE_REDIS_URL": "rediss://c:6380/0?ssl_cert_reqs=none"}, "CACHE_REDIS_URL",
         "CACHE_REDIS_CA_FILE sets it"),
        ({"CACHE_REDIS_URL": "rediss://c:6380/0?ssl_check_hostname=false"}, "CACHE_REDIS_URL",
         "always verified"),
        ({"CACHE_REDIS_URL": "redis://c:6379/0?socket_timeout=60"}, "CACHE_REDIS_URL",
         "CACHE_REDIS_TIMEOUT sets it"),
        ({"THROTTLE_STORAGE_URL": "rediss://c/0?ssl_cert_reqs=none"}, "THROTTLE_STORAGE_URL",
         "CACHE_REDIS_CA_FILE"),
        ({"THROTTLE_STORAGE_URL": "redis+sentinel://s1:26379"}, "THROTTLE_STORAGE_URL",
         "name the master"),
        ({"CACHE_REDIS_CA_FILE": "/nonexistent/ca.pem"}, "CACHE_REDIS_CA_FILE", "no such file"),
        ({"CACHE_REDIS_CA_FILE": ["ca.pem"]}, "CACHE_REDIS_CA_FILE", "a file path"),
    ],
)  # fmt: skip
def test_a_bad_redis_setting_stops_start_up_naming_the_key(changes, key, reason):
    """Malformed Sentinel URLs, URL options that would undo the verification or the timeout,
    and a CA file that is not there are refused at start-up, naming the key."""
    values = settings(CACHE_TYPE="RedisCache", CACHE_REDIS_URL="redis://cache:6379/0")
    with pytest.raises(ConfigError, match=f"setting {key}: .*{re.escape(reason)}"):
        create_app(values | changes)


def test_sentinel_and_tls_urls_are_accepted_for_the_cache_and_the_counts(certificates):
    """The documented forms start (nothing is connected until the first request), with the
    timeout, and no retry, on the connections to the sentinels and to the master (redis-py's
    own defaults would wait 5 s and retry ten times; before 6.0, wait for ever)."""
    app = create_app(
        settings(
            CACHE_TYPE="RedisCache",
            CACHE_REDIS_URL="redis+sentinel://:pw@s1:26379,s2:26379/cache/1",
            THROTTLE_STORAGE_URL="rediss://counts.example:6380/0",
            CACHE_REDIS_CA_FILE=str(certificates["good"].ca_file),
        )
    )
    with app.app_context():
        pool = cache.cache.client.connection_pool
    assert pool.service_name == "cache"
    assert pool.connection_kwargs["db"] == 1
    timeout = app.config["CACHE_REDIS_TIMEOUT"]
    sentinels = [client.connection_pool for client in pool.sentinel_manager.sentinels]
    for connection_kwargs in [pool.connection_kwargs] + [s.connection_kwargs for s in sentinels]:
        assert connection_kwargs["socket_timeout"] == timeout
        assert connection_kwargs["socket_connect_timeout"] == timeout
        assert connection_kwargs["retry"].get_retries() == 0
    assert len(sentinels) == 2
    app.extensions["portal.directory"].close()
