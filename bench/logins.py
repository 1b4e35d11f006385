"""P2: full HTTP sign-ins per second (GET the form, POST it), against two baselines.

- flask-ldap3-login's documented example (bench/ldap3_login_app.py), served the same way from a
  virtualenv of its own (.bench-venv, made on first use);
- the floor: ldap3 itself sending the three operations a sign-in needs (find the person, bind
  as them, read their groups) on open connections, from two processes as gunicorn has two
  workers, with no HTTP, no session and no CSRF;
- between the two, the least any Flask sign-in costs: a bare Flask app under the same gunicorn
  settings sending those three operations behind the same two requests (bench/login_floor.py),
  and how far that app itself stands from the raw sequence.

Each sign-in's processor time is counted too, by process (the server's, slapd's, wrk's): on
a machine whose cores are all busy, that is what decides the rates, and it shows where a
sign-in's time goes.

Also the failed-login timing: an unknown name against a known one with a wrong password.
"""

from __future__ import annotations

import multiprocessing
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ldap3

from portal import create_app
from portal.testing.slapd import Slapd
from tests.conftest import csrf_token_in, demo_settings

from .harness import (
    ROOT,
    WORKERS,
    Comparison,
    Server,
    Settings,
    children_seconds,
    interleaved,
    processor_seconds,
    settle,
    wrk,
)
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


@dataclass
class ProcessorTime:
    """One subject's processor time over its rounds, by process, and the sign-ins it made."""

    subject: str
    server: float = 0.0  # seconds: gunicorn's processes, or the raw sequence's two
    slapd: float = 0.0
    load: float = 0.0  # wrk
    logins: float = 0.0

    def per_login_ms(self, part: str) -> float:
        """Milliseconds of one part ("server", "slapd", "load") per sign-in."""
        return getattr(self, part) / self.logins * 1000 if self.logins else 0.0


def measure(slapd: Slapd, settings: Settings) -> tuple[list[Comparison], list[ProcessorTime]]:
    """The portal's sign-ins against flask-ldap3-login's and against the raw sequence, and
    the processor time per sign-in of the portal, the bare Flask app and the raw sequence."""
    # One wrk thread per connection: the script follows one browser per connection.
    connections = settings.connections
    env = portal_env(slapd, PORTAL_THROTTLE_ACCOUNT_LIMIT='"1000000 per minute"')
    python = baseline_python(settings)
    theirs_env = dict(env, BENCH_SECRET=secrets.token_hex(16), BENCH_LDAP_HOST="127.0.0.1",
                      BENCH_LDAP_PORT=str(slapd.port), BENCH_LDAP_PASSWORD=SERVICE_PASSWORD,
                      PYTHONPATH=str(ROOT))  # fmt: skip

    def logins(server: Server, counted: ProcessorTime | None = None) -> float:
        if counted is None:
            return wrk(server.base_url + "/login", settings, script=SCRIPT, threads=connections) / 2
        pids = server.pids()
        before = processor_seconds(pids), processor_seconds([slapd.process.pid]), children_seconds()
        rate = logins(server)
        counted.server += processor_seconds(pids) - before[0]
        counted.slapd += processor_seconds([slapd.process.pid]) - before[1]
        counted.load += children_seconds() - before[2]
        counted.logins += rate * settings.seconds
        return rate

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
        times = [ProcessorTime("portal"), ProcessorTime("bare Flask app, same 3 operations"),
                 ProcessorTime("3 ldap3 operations, no HTTP")]  # fmt: skip
        # One round: the raw sequence, the bare app, the portal; each rate serves two lines.
        for _ in range(settings.rounds):
            raw = raw_sequence(slapd, settings, times[2])
            least, portal = logins(bare, times[1]), logins(ours, times[0])
            floor.baseline_rates.append(raw)
            floor.subject_rates.append(portal)
            versus_bare.baseline_rates.append(least)
            versus_bare.subject_rates.append(portal)
            bare_floor.baseline_rates.append(raw)
            bare_floor.subject_rates.append(least)
    settle()
    return [versus_theirs, floor, versus_bare, bare_floor], times


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


def raw_sequence(slapd: Slapd, settings: Settings, counted: ProcessorTime) -> float:
    """Sign-ins per second as three bare ldap3 operations, from as many processes as workers
    (their processor time and slapd's added to `counted`)."""
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        before = processor_seconds([slapd.process.pid])
        done = pool.starmap(_sequence_loop, [(slapd.url, settings.seconds)] * WORKERS)
        counted.slapd += processor_seconds([slapd.process.pid]) - before
    counted.server += sum(used for _, used in done)
    counted.logins += sum(count for count, _ in done)
    return sum(count for count, _ in done) / settings.seconds


def _sequence_loop(url: str, seconds: float) -> tuple[int, float]:
    # Connections opened once, as a pool keeps them: what is left is the three operations.
    server = ldap3.Server(url, get_info=ldap3.NONE)
    service = ldap3.Connection(server, SERVICE_DN, SERVICE_PASSWORD, auto_bind=True)
    person = ldap3.Connection(server, ALICE_DN, "alice-secret")
    done, deadline, started = 0, time.monotonic() + seconds, time.process_time()
    while time.monotonic() < deadline:
        service.search("ou=people,dc=example,dc=org", "(&(objectClass=inetOrgPerson)(uid=alice))",
                       attributes=["uid", "displayName", "mail"])  # fmt: skip
        if not person.bind():
            raise RuntimeError("the raw bind failed")
        service.search("ou=groups,dc=example,dc=org", GROUP_FILTER, attributes=["cn"])
        done += 1
    return done, time.process_time() - started


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
