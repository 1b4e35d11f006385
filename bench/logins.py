"""P2: full HTTP sign-ins per second (GET the form, POST it), against two baselines.

- flask-ldap3-login's documented example (bench/ldap3_login_app.py), served the same way from a
  virtualenv of its own (.bench-venv, made on first use);
- the floor: ldap3 itself sending the three operations a sign-in needs (find the person, bind
  as them, read their groups) on open connections, from two processes as gunicorn has two
  workers, with no HTTP, no session and no CSRF;
- between the two, the least any Flask sign-in costs: a bare Flask app under the same gunicorn
  settings sending those three operations behind the same two requests (bench/login_floor.py),
  and how far that app itself stands from the raw sequence.

Also the failed-login timing: an unknown name against a known one with a wrong password.
"""

from __future__ import annotations

import multiprocessing
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import ldap3

from portal import create_app
from portal.testing.slapd import Slapd
from tests.conftest import csrf_token_in, demo_settings

from .harness import ROOT, WORKERS, Comparison, Server, Settings, interleaved, settle, wrk
from .hotpath import portal_env

SERVICE_DN = "cn=portal-reader,ou=services,dc=example,dc=org"
SERVICE_PASSWORD = "dev-only-reader-secret"  # noqa: S105 - the demo directory's
ALICE_DN = "uid=alice,ou=people,dc=example,dc=org"
# The demo settings' LDAP_GROUP_FILTER for alice, as the portal fills it in.
GROUP_FILTER = (
    f"(|(&(objectClass=groupOfNames)(member={ALICE_DN}))"
    "(&(objectClass=posixGroup)(memberUid=alice)))"
)
SCRIPT = Path(__file__).with_name("login.lua")
VENV = ROOT / ".bench-venv"
#: What the baseline's virtualenv holds (the extension and the server it is served by).
BASELINE_PACKAGES = [
    "flask-ldap3-login>=1.0",
    "flask-login",
    "flask-wtf",
    "gunicorn>=22",
    "pyasn1==0.6.1",
]


def measure(slapd: Slapd, settings: Settings) -> list[Comparison]:
    """The portal's sign-ins against flask-ldap3-login's and against the raw sequence."""
    # One wrk thread per connection: the script follows one browser per connection.
    connections = settings.connections
    env = portal_env(slapd, PORTAL_THROTTLE_ACCOUNT_LIMIT='"1000000 per minute"')
    python = baseline_python(settings)
    theirs_env = dict(env, BENCH_SECRET=secrets.token_hex(16), BENCH_LDAP_HOST="127.0.0.1",
                      BENCH_LDAP_PORT=str(slapd.port), BENCH_LDAP_PASSWORD=SERVICE_PASSWORD,
                      PYTHONPATH=str(ROOT))  # fmt: skip

    def logins(server: Server) -> float:
        return wrk(server.base_url + "/login", settings, script=SCRIPT, threads=connections) / 2

    bare_env = dict(env, BENCH_LDAP_URL=slapd.url, PYTHONPATH=str(ROOT))
    with (
        Server("portal:create_app()", env, ready_path="/healthz") as ours,
        Server("bench.ldap3_login_app:create_app()", theirs_env, python=python,
               ready_path="/login") as theirs,
        Server("bench.login_floor:create_app()", bare_env, ready_path="/login") as bare,
    ):  # fmt: skip
        versus_theirs = interleaved(
            Comparison(
                "P2 logins vs flask-ldap3-login",
                "portal sign-ins",
                "flask-ldap3-login's example",
                unit="logins/s",
            ),  # fmt: skip
            settings,
            lambda: logins(theirs),
            lambda: logins(ours),
        )
        floor = Comparison("P2 logins vs raw ldap3", "portal sign-ins (HTTP, CSRF, session)",
                           "3 ldap3 operations, no HTTP", target=0.6, unit="logins/s")  # fmt: skip
        versus_bare = Comparison("P2 logins vs bare Flask", "portal sign-ins",
                                 "bare Flask app, same 3 operations", unit="logins/s")  # fmt: skip
        bare_floor = Comparison("P2 bare Flask vs raw ldap3", "bare Flask app, same 3 operations",
                                "3 ldap3 operations, no HTTP", unit="logins/s")  # fmt: skip
        if not settings.smoke:
            logins(bare)  # warm its connections
        # One round: the raw sequence, the bare app, the portal; each rate serves two lines.
        for _ in range(settings.rounds):
            raw, least, portal = raw_sequence(slapd, settings), logins(bare), logins(ours)
            floor.baseline_rates.append(raw)
            floor.subject_rates.append(portal)
            versus_bare.baseline_rates.append(least)
            versus_bare.subject_rates.append(portal)
            bare_floor.baseline_rates.append(raw)
            bare_floor.subject_rates.append(least)
    settle()
    return [versus_theirs, floor, versus_bare, bare_floor]


def baseline_python(settings: Settings) -> str:
    """The Python of the baseline's own virtualenv, made (once) with its packages; the smoke
    run uses this Python (the dev extras hold flask-ldap3-login too)."""
    if settings.smoke:
        return sys.executable
    python = VENV / "bin" / "python"
    marker = VENV / ".installed"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *BASELINE_PACKAGES], check=True)
        marker.write_text("\n".join(BASELINE_PACKAGES))
    return str(python)


def raw_sequence(slapd: Slapd, settings: Settings) -> float:
    """Sign-ins per second as three bare ldap3 operations, from as many processes as workers."""
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        counts = pool.starmap(_sequence_loop, [(slapd.url, settings.seconds)] * WORKERS)
    return sum(counts) / settings.seconds


def _sequence_loop(url: str, seconds: float) -> int:
    # Connections opened once, as a pool keeps them: what is left is the three operations.
    server = ldap3.Server(url, get_info=ldap3.NONE)
    service = ldap3.Connection(server, SERVICE_DN, SERVICE_PASSWORD, auto_bind=True)
    person = ldap3.Connection(server, ALICE_DN, "alice-secret")
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        service.search("ou=people,dc=example,dc=org", "(&(objectClass=inetOrgPerson)(uid=alice))",
                       attributes=["uid", "displayName", "mail"])  # fmt: skip
        if not person.bind():
            raise RuntimeError("the raw bind failed")
        service.search("ou=groups,dc=example,dc=org", GROUP_FILTER, attributes=["cn"])
        done += 1
    return done


FAILURE_SAMPLES = 15


def failure_timing(slapd: Slapd, settings: Settings) -> list[tuple[int, float, float, float]]:
    """(floor ms, unknown ms, known ms, ratio) for failed logins without and with the floor."""
    samples = 3 if settings.smoke else FAILURE_SAMPLES
    rows = []
    for floor_ms in (0, 250):
        config = demo_settings() | {
            "ENV": "development", "SECRET_KEY": "bench-" + "x" * 40, "LDAP_URLS": [slapd.url],
            "LOGIN_FAILURE_FLOOR_MS": floor_ms, "WATCH_INTERVAL": 0,
            # Every attempt must reach the directory: no throttling in this measurement.
            "THROTTLE_ACCOUNT_LIMIT": "1000000 per minute",
            "THROTTLE_IP_LIMIT": "1000000 per minute",
        }  # fmt: skip
        app = create_app(config)
        client = app.test_client()
        token = csrf_token_in(client.get("/login").get_data(as_text=True))
        times: dict[str, list[float]] = {"unknown": [], "known": []}
        for number in range(samples + 1):
            for kind, name in (("unknown", f"nobody-{number}"), ("known", "alice")):
                form = {"csrf_token": token, "username": name, "password": "wrong"}
                started = time.perf_counter()
                response = client.post("/login", data=form)
                elapsed = time.perf_counter() - started
                if response.status_code != 401:
                    raise RuntimeError(f"a failed login answered {response.status_code}")
                if number:  # the first round warms the pools
                    times[kind].append(elapsed)
        app.extensions["portal.directory"].close()
        unknown, known = (statistics.median(times[kind]) * 1000 for kind in ("unknown", "known"))
        rows.append((floor_ms, unknown, known, unknown / known))
    return rows
