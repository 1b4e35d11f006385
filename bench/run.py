"""`make bench`: the portal's speed targets, as ratios against baselines measured in the same run.

1. A protected page under gunicorn (2 workers) against the same page without login: target
   >= 0.9x. The user loader runs on every request; this is what it costs.
2. Logins per second of the portal's directory layer against flask-ldap3-login's documented
   configuration, both in this process against the same throwaway slapd: target >= 8x.
3. Failed logins through the form: the median answer time for an unknown name against a known
   name with a wrong password (no bind is sent for the first), with LOGIN_FAILURE_FLOOR_MS off
   and at its default: target within 0.95x-1.05x with the floor, i.e. not measurable.

Absolute numbers depend on the machine; the ratios are the result.
"""

from __future__ import annotations

import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from portal import create_app  # noqa: E402
from portal.testing.slapd import Slapd  # noqa: E402
from tests.conftest import csrf_token_in, demo_settings  # noqa: E402
from tests.servers import Gunicorn, portal_environment  # noqa: E402

SERVICE_DN = "cn=portal-reader,ou=services,dc=example,dc=org"
SECONDS_PER_ROUND = 4.0
ROUNDS = 3
CLIENT_THREADS = 4


def main() -> int:
    """Run both measurements and print the table; exit 1 if a target is missed."""
    # flask-ldap3-login reads groups as the person who signed in: the common ACL that lets
    # signed-in people read the tree keeps the comparison like for like.
    with Slapd(users_may_read=True) as slapd:
        page_ratio = measure_pages(slapd)
        login_ratio = measure_logins(slapd)
        gap_without, gap_with = (measure_failure_timing(slapd, floor) for floor in (0, 250))
    print()
    print(f"protected page / open page:          {page_ratio:5.2f}x  (target >= 0.9x)")
    print(f"portal logins / flask-ldap3-login:   {login_ratio:5.2f}x  (target >= 8x)")
    print(f"failed login, unknown / known name:  {gap_without:5.2f}x without the floor")
    print(
        f"                                     {gap_with:5.2f}x with 250 ms  (target 0.95x-1.05x)"
    )
    met = page_ratio >= 0.9 and login_ratio >= 8 and 0.95 <= gap_with <= 1.05
    return 0 if met else 1


def measure_pages(slapd: Slapd) -> float:
    """Requests per second for the handbook page, signed in and not, rounds interleaved."""
    with tempfile.TemporaryDirectory(prefix="portal-bench-") as work:
        server = Gunicorn(Path(work), portal_environment(slapd.url),
                          app_spec="bench.app:create_bench_app()")  # fmt: skip
        server.start()
        try:
            cookie = sign_in(server.port, "alice", "alice-secret")
            rates = {"open": [], "protected": []}
            for _ in range(ROUNDS):
                rates["open"].append(hammer(server.port, "/bench/open", None))
                rates["protected"].append(hammer(server.port, "/pages/handbook", cookie))
        finally:
            server.stop()
    best = {name: max(values) for name, values in rates.items()}
    print(f"open page       {best['open']:8.0f} req/s   rounds {fmt(rates['open'])}")
    print(f"protected page  {best['protected']:8.0f} req/s   rounds {fmt(rates['protected'])}")
    return best["protected"] / best["open"]


def measure_logins(slapd: Slapd) -> float:
    """Password checks per second: the portal's directory layer and flask-ldap3-login's."""
    ours = portal_authenticator(slapd)
    theirs = flask_ldap3_login_authenticator(slapd)
    rate_ours = logins_per_second(ours, 400)
    rate_theirs = logins_per_second(theirs, 100)
    print(f"portal logins            {rate_ours:8.0f} /s")
    print(f"flask-ldap3-login logins {rate_theirs:8.0f} /s")
    return rate_ours / rate_theirs


FAILURE_SAMPLES = 15


def measure_failure_timing(slapd: Slapd, floor_ms: int) -> float:
    """Median failed-login time through the form: unknown name over known name (wrong password)."""
    import statistics

    settings = demo_settings() | {
        "ENV": "development", "SECRET_KEY": "bench-" + "x" * 40, "LDAP_URLS": [slapd.url],
        "LOGIN_FAILURE_FLOOR_MS": floor_ms,
        # Every attempt must reach the directory: no throttling in this measurement.
        "THROTTLE_ACCOUNT_LIMIT": "1000000 per minute", "THROTTLE_IP_LIMIT": "1000000 per minute",
    }  # fmt: skip
    client = create_app(settings).test_client()
    token = csrf_token_in(client.get("/login").get_data(as_text=True))
    times: dict[str, list[float]] = {"unknown": [], "known": []}
    for number in range(FAILURE_SAMPLES + 1):
        for kind, name in (("unknown", f"nobody-{number}"), ("known", "alice")):
            form = {"csrf_token": token, "username": name, "password": "wrong"}
            started = time.perf_counter()
            response = client.post("/login", data=form)
            elapsed = time.perf_counter() - started
            if response.status_code != 401:
                raise RuntimeError(f"a failed login answered {response.status_code}")
            if number:  # the first round warms the pools
                times[kind].append(elapsed)
    unknown, known = (statistics.median(times[kind]) * 1000 for kind in ("unknown", "known"))
    print(f"failed login, floor {floor_ms:3d} ms: unknown {unknown:6.1f} ms, known {known:6.1f} ms")
    return unknown / known


def portal_authenticator(slapd: Slapd):
    """authenticate(username, password) through the portal's directory layer."""
    settings = demo_settings() | {
        "ENV": "development", "SECRET_KEY": "bench-" + "x" * 40, "LDAP_URLS": [slapd.url],
    }  # fmt: skip
    app = create_app(settings)
    directory = app.extensions["portal.directory"]

    def authenticate(username: str, password: str) -> bool:
        return directory.authenticate(username, password) is not None

    return authenticate


def flask_ldap3_login_authenticator(slapd: Slapd):
    """authenticate() as flask-ldap3-login's documented basic example configures it."""
    from flask import Flask
    from flask_ldap3_login import AuthenticationResponseStatus, LDAP3LoginManager

    app = Flask("flask_ldap3_login_example")
    host, port = slapd.url.removeprefix("ldap://").split(":")
    app.config.update(
        LDAP_HOST=host,
        LDAP_PORT=int(port),
        LDAP_BASE_DN="dc=example,dc=org",
        LDAP_USER_DN="ou=people",
        LDAP_GROUP_DN="ou=groups",
        LDAP_USER_RDN_ATTR="uid",
        LDAP_USER_LOGIN_ATTR="uid",
        LDAP_BIND_USER_DN=SERVICE_DN,
        LDAP_BIND_USER_PASSWORD="dev-only-reader-secret",  # noqa: S106 - the demo directory's
        LDAP_USER_OBJECT_FILTER="(objectclass=inetOrgPerson)",
        LDAP_GROUP_OBJECT_FILTER="(objectclass=groupOfNames)",
        LDAP_GROUP_MEMBERS_ATTR="member",
        LDAP_SEARCH_FOR_GROUPS=True,
    )
    manager = LDAP3LoginManager(app)

    def authenticate(username: str, password: str) -> bool:
        with app.app_context():
            result = manager.authenticate(username, password)
        return result.status == AuthenticationResponseStatus.success

    return authenticate


def logins_per_second(authenticate, count: int) -> float:
    """Sequential successful logins per second (after one warm-up login)."""
    assert authenticate("alice", "alice-secret"), "the warm-up login failed"
    started = time.perf_counter()
    for _ in range(count):
        assert authenticate("alice", "alice-secret")
    return count / (time.perf_counter() - started)


def sign_in(port: int, username: str, password: str) -> str:
    """Sign in through the real form; return the session cookie."""
    import requests

    session = requests.Session()
    token = csrf_token_in(session.get(f"http://127.0.0.1:{port}/login", timeout=10).text)
    form = {"csrf_token": token, "username": username, "password": password}
    session.post(f"http://127.0.0.1:{port}/login", data=form, timeout=10)
    return session.cookies["session"]


def hammer(port: int, path: str, cookie: str | None) -> float:
    """Requests per second from CLIENT_THREADS clients for SECONDS_PER_ROUND seconds."""
    headers = {"Cookie": f"session={cookie}"} if cookie else {}
    counts = [0] * CLIENT_THREADS
    deadline = time.monotonic() + SECONDS_PER_ROUND

    def client(index: int) -> None:
        while time.monotonic() < deadline:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status != 200:
                raise RuntimeError(f"{path} answered {response.status}")
            counts[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / SECONDS_PER_ROUND


def fmt(values: list[float]) -> str:
    """Rates as a short list."""
    return ", ".join(f"{value:.0f}" for value in values)


if __name__ == "__main__":
    sys.exit(main())
