"""Fixtures: a real slapd seeded from ldap_fixtures/, the app against it, and an auth helper."""

from __future__ import annotations

import functools
import io
import json
import logging
import re
import signal
import time
import tomllib
import uuid
from pathlib import Path

import pytest
from ldap3.strategy.base import BaseStrategy

from portal import create_app, quietlog
from portal.directory.wire import LeanConnection
from portal.testing.slapd import Slapd
from tests.servers import require_binary

ROOT = Path(__file__).resolve().parents[1]
SERVICE_DN = "cn=portal-reader,ou=services,dc=example,dc=org"
# The hostile `next` addresses of SECURITY.md: each could send a browser to another site.
HOSTILE_NEXT = [
    "//evil.example",
    "https://evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "%2F%2Fevil.example",
    "/\t/evil.example",
    "http:evil.example",
    "////evil.example",
    "https:/evil.example",
    "data:text/html,x",
]
PASSWORDS = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "carol": "carol-secret",
    "dave": "dave-secret",
    "erin": "erin-secret",
    "frank": "frank-secret",
}
_CSRF = re.compile(
    r'name="csrf_token" type="hidden" value="([^"]+)"|'
    r'name="csrf_token" value="([^"]+)"'
)


def csrf_token_in(html: str) -> str:
    """Return the CSRF token of the first form in a page; fail the test when there is none."""
    match = _CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1) or match.group(2)


def session_username(client) -> str | None:
    """The username of the login a test client's session holds, or None."""
    from portal.signin import logins

    with client.session_transaction() as session:
        login = logins.parse(session.get("_user_id"))
    return login.username if login else None


def plant_login(client, username: str, password_changed: str = "") -> None:
    """Put a current login for `username` into the client's session, as if they had signed in
    (with the password the directory says was set at `password_changed`)."""
    from portal.signin import logins

    stamp = logins.password_stamp(password_changed)
    login = logins.new_login(username, logins.now_ms(), 3_600_000, stamp)
    with client.session_transaction() as session:
        session["_user_id"] = login.id
        session["_fresh"] = True


def same_site_path(location: str) -> bool:
    """A Location every browser resolves on this site: "/path", not "//host", "/\\host" or alike."""
    return (
        location.startswith("/")
        and not location.startswith(("//", "/\\"))
        and "\\" not in location
        and not any(ord(char) < 0x20 or ord(char) == 0x7F for char in location)
    )


def eventually(check, timeout: float = 10.0):
    """Poll check() until it gives something true (returned), failing after `timeout` seconds.

    For outcomes that follow a back-off (a directory server that failed is tried again after
    about a second): a bound on the wait, not a timing assertion.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() >= deadline:
            assert found, f"not within {timeout} s"
            return found
        time.sleep(0.05)  # a readiness poll


#: More people than stock slapd's size limit (500) lets one search return, paged or not.
CROWD = 600
#: What an OpenLDAP administrator gives the portal's service account (README, the watcher).
PAGE_THROUGH_ALL = f'limits dn.exact="{SERVICE_DN}" size.prtotal=unlimited'


def crowd_ldif() -> str:
    """CROWD more people under the user base."""
    return "".join(f"dn: uid=crowd{number},ou=people,dc=example,dc=org\n"
                   f"objectClass: inetOrgPerson\nuid: crowd{number}\ncn: C{number}\nsn: C\n\n"
                   for number in range(CROWD))  # fmt: skip


def demo_settings() -> dict:
    """The shipped settings.toml, as the tests' starting point."""
    return tomllib.loads((ROOT / "settings.toml").read_text())


def start_slapd(**options) -> Slapd:
    """Start a throwaway slapd seeded from ldap_fixtures/ (fails under CI when missing)."""
    require_binary("slapd", "apt-get install slapd ldap-utils")
    require_binary("ldapmodify", "apt-get install ldap-utils")
    return Slapd(**options).start()


@pytest.fixture(autouse=True)
def fresh_quiet_logs():
    """Each test starts with every once-a-minute log line unwritten: their kinds name loopback
    ports, which an earlier test may have used (its line would hold this test's back)."""
    quietlog.forget_all()


@pytest.fixture(autouse=True)
def no_replays_left_over():
    """After each test, the portals it built stop retrying their kept sign-outs in the
    background (else they would go on against a Redis the test stopped, or another test's on
    the same port)."""
    yield
    from portal.cache.guard import CacheGuard

    for guard in list(CacheGuard.live):
        guard.stop()
        guard.forget_waiting()  # nor written at the run's end, to a Redis long gone


@pytest.fixture(scope="session")
def slapd():
    """One read-only demo directory for the whole session: tests must not change it."""
    server = start_slapd()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def ad_server():
    """One Active-Directory-shaped directory (portal.testing.trees) for read-only tests."""
    from portal.testing import trees

    server = start_slapd(**trees.ad_options())
    yield server
    server.cleanup()


@pytest.fixture
def own_slapd():
    """A private demo directory for a test that changes entries, stops or restarts the server."""
    server = start_slapd()
    yield server
    server.cleanup()


def make_app(slapd_server: Slapd | None, settings_file: Path | None = None, **overrides):
    """Build the portal against a server with the demo (or given) settings plus overrides."""
    settings = tomllib.loads(settings_file.read_text()) if settings_file else demo_settings()
    settings.update(
        TESTING=True,
        ENV="development",
        SECRET_KEY="test-secret-key-0123456789abcdef0123",
        # The floor on failed logins has its own tests (test_throttle.py); elsewhere it would
        # only make the suite wait.
        LOGIN_FAILURE_FLOOR_MS=0,
        # The watcher has its own tests (test_watcher.py); elsewhere a polling thread per app
        # would outlive its test and its directory.
        WATCH_INTERVAL=0,
    )
    if slapd_server is not None:
        settings["LDAP_URLS"] = [slapd_server.url]
    settings.update(overrides)
    return create_app(settings)


@pytest.fixture
def build_app():
    """Build portals with make_app(directory, **overrides); their LDAP pools close afterwards."""
    built = []

    def build(directory, **overrides):
        application = make_app(directory, **overrides)
        built.append(application)
        return application

    yield build
    for application in built:
        application.extensions["portal.directory"].close()


@pytest.fixture
def app(slapd):
    """The portal against the shared demo directory."""
    application = make_app(slapd)
    yield application
    application.extensions["portal.directory"].close()


@pytest.fixture
def client(app):
    """A test client for the app."""
    return app.test_client()


class AuthActions:
    """Sign in and out through the real forms, CSRF token included."""

    def __init__(self, client):
        self.client = client

    def csrf_token(self, path: str = "/login") -> str:
        """Fetch a page and return the CSRF token from its form."""
        return csrf_token_in(self.client.get(path).get_data(as_text=True))

    def login(self, username="alice", password=None, remember=False, next=None, **extra):
        """POST the login form; the password defaults to the demo one."""
        if password is None:
            password = PASSWORDS.get(username, "nope")
        data = {"csrf_token": self.csrf_token(), "username": username, "password": password}
        if remember:
            data["remember"] = "y"
        if next is not None:
            data["next"] = next
        data.update(extra)
        return self.client.post("/login", data=data)

    def logout(self, everywhere: bool = False):
        """POST the sign-out form from the home page (or "sign out everywhere")."""
        data = {"csrf_token": self.csrf_token("/")}
        if everywhere:
            data["everywhere"] = "1"
        return self.client.post("/logout", data=data)


@pytest.fixture
def browser():
    """A fresh requests session: its own cookies, like one browser (for real servers)."""
    import requests

    with requests.Session() as session:
        yield session


@pytest.fixture
def auth(client):
    """Sign-in helper bound to the test client."""
    return AuthActions(client)


class LdapSpy:
    """Counts the LDAP operations ldap3 sends (searches and binds) and the connections opened."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, str | None]] = []

    def count(self, operation: str | None = None) -> int:
        """How many operations (of one kind, or all) were sent."""
        return sum(1 for op, _, _ in self.calls if operation in (None, op))

    def binds_as(self) -> list[str | None]:
        """The DN each bind was sent as, in order."""
        return [who for op, _, who in self.calls if op == "bind"]

    def user_binds(self) -> list[str | None]:
        """Binds sent as a person (password checks): not the service account, not anonymous."""
        return [who for who in self.binds_as() if who not in (SERVICE_DN, None)]

    @property
    def operations(self) -> int:
        """Searches plus binds: the LDAP requests that cost the directory work."""
        return self.count("search") + self.count("bind")

    def filters(self) -> list[str]:
        """The filters of every search sent."""
        return [args[1] for op, args, _ in self.calls if op == "search"]

    def reset(self) -> None:
        """Forget what was counted so far."""
        self.calls.clear()


@pytest.fixture
def ldap_spy(monkeypatch):
    """Wrap ldap3.Connection's open, bind and search so a test can count them."""
    spy = LdapSpy()
    # Connection.open is the strategy's open, looked up when a Connection is created.
    targets = [(BaseStrategy, "open"), (LeanConnection, "bind"), (LeanConnection, "search")]
    for owner, name in targets:
        original = getattr(owner, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            spy.calls.append((_name, args, getattr(self, "user", None)))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)
    return spy


@pytest.fixture
def audit_lines():
    """The audit lines written during a test, each parsed from its JSON."""
    from portal.signin.audit import LOGGER_NAME, JsonLineFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    logger = logging.getLogger(LOGGER_NAME)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def lines(event: str | None = None) -> list[dict]:
        parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
        return [line for line in parsed if event in (None, line["event"])]

    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="session")
def redis_server():
    """One throwaway redis-server for the session; tests keep apart by their own key prefix."""
    require_binary("redis-server", "apt-get install redis-server")
    from portal.testing.redis import RedisServer

    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.fixture
def own_redis():
    """A private redis-server the test may freeze (SIGSTOP), reconfigure, kill or restart: it
    keeps its data across a restart, as production's must (README, Deployment)."""
    require_binary("redis-server", "apt-get install redis-server")
    from portal.testing.redis import RedisServer

    server = RedisServer(persistent=True).start()
    yield server
    if server.process:
        server.process.send_signal(signal.SIGCONT)
    server.cleanup()


@pytest.fixture
def key_prefix():
    """A cache key prefix of this test alone, so tests sharing the session's Redis keep apart."""
    return f"portal-test-{uuid.uuid4().hex}:"


@pytest.fixture
def redis_client(redis_server, key_prefix):
    """A plain Redis client (as an operator, or an intruder, would use); deletes this test's
    keys afterwards."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    yield client
    for key in client.scan_iter(match=key_prefix + "*"):
        client.delete(key)
    client.close()


@pytest.fixture
def make_instance(redis_server, key_prefix, build_app):
    """Build portal instances against the session's Redis under this test's prefix."""
    return functools.partial(
        build_app,
        CACHE_TYPE="RedisCache",
        CACHE_REDIS_URL=redis_server.url,
        CACHE_KEY_PREFIX=key_prefix,
    )


@pytest.fixture
def frozen_breakers(monkeypatch):
    """Breakers (directory servers, Redis, the throttle's storage) whose back-off never ends
    unless the test moves their clock: a slow machine cannot let one half-open mid-test."""
    from portal.directory import breaker

    class Clock:
        now = 1000.0

        def __call__(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr(breaker, "_now", clock)
    return clock


@pytest.fixture
def local_midday(monkeypatch):
    """The process's local time zone set so that it is about noon now: dates a few hours
    either side of now fall on today's date, whenever the suite runs."""
    offset = 12 - time.gmtime().tm_hour  # hours east of UTC, -11 to 12
    monkeypatch.setenv("TZ", f"NOON{-offset:+d}")  # POSIX: the sign is west of UTC
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def clock(monkeypatch):
    """Move the in-process cache's and the sign-ins' clock forward instead of sleeping."""

    class Clock:
        offset = 0.0

        def advance(self, seconds: float) -> None:
            self.offset += seconds

    fake = Clock()
    real = time.time
    monkeypatch.setattr("cachelib.simple.time", lambda: real() + fake.offset)
    # ...and the clocks that sign-ins expire by and cache entries go stale by.
    monkeypatch.setattr("portal.signin.logins._clock", lambda: real() + fake.offset)
    monkeypatch.setattr("portal.accounts._clock", lambda: real() + fake.offset)
    return fake
