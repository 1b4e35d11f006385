"""`make soak`: a bounded run of mixed load, checking every answer and the portal's processes.

    python -m bench.soak                 60 s (after a 5 s warm-up): writes docs/soak.md and
                                         docs/soak.json, exits 1 on any failure below
    python -m bench.soak --smoke         a few seconds, same checks (the suite runs it)
    python -m bench.soak --redis         the portal with RedisCache against a real redis-server

The portal runs under gunicorn (2 workers x 4 threads, gthread) against a real slapd serving
the demo directory. Three `wrk` processes on loopback (compiled, so no Python client competes
with the portal for the cores) run bench/soak_load.lua at once, one connection per thread:

- sign-ins: 2 connections, each cycle GET /login, POST the form, GET / and GET /auth/verify
  with the new session, as alice, bob, erin and frank in turn;
- pages: one connection per person with their session cookie, their home page, the handbook
  and (alice, erin, frank) the page only their group may open;
- verify: one connection per person asking /auth/verify as nginx does.

Every answer is checked in wrk's response callback against the person whose cookie was sent: a
/auth/verify whose Remote-User is someone else, or a page signed in as (or naming) someone else,
is an identity crossover. The run fails (exit 1) on any 5xx, any crossover, any unexpected
answer (another status than the one expected, such as a 401 or 403 for a signed-in person, or no
Remote-User or name), any socket error or timeout, a replaced worker, or growth from the start of
the measured run to its end (both read at rest) of more than SOCKET_GROWTH (20) open sockets or
RSS_GROWTH (50%) of resident memory, arbiter and workers together.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from portal.testing.redis import RedisServer
from portal.testing.slapd import Slapd

from .harness import ROOT, THREADS, WORKERS, Server, machine
from .hotpath import portal_env, sign_in

SCRIPT = Path(__file__).with_name("soak_load.lua")
#: (username, password, display name, e-mail, pages) of the demo directory's people used.
PEOPLE = (
    ("alice", "alice-secret", "Alice Liddell", "alice@example.org", "/pages/engineering"),
    ("bob", "bob-secret", "Bob Builder", "bob@example.org", ""),
    ("erin", "erin-secret", "Erin Admin", "erin@example.org", "/pages/admin-guide"),
    ("frank", "frank-secret", "Frank Figures", "frank@example.org", "/pages/finance"),
)
COMMON_PAGES = ("/", "/pages/handbook")
#: Connections (one wrk thread each) per stream.
SIGNIN_CONNECTIONS = 2
#: Bounds on growth from the start of the measured run to its end, both read at rest.
SOCKET_GROWTH = 20
RSS_GROWTH = 0.5
KINDS = ("login_form", "sign_in", "page", "verify")
STREAMS = ("signin", "page", "verify")
#: A request taking this long counts as a socket error (a timeout), not a slow answer.
REQUEST_TIMEOUT = "10s"


@dataclass
class Reading:
    """Open sockets and resident memory of each portal process at one moment."""

    seconds: float
    processes: list[dict] = field(default_factory=list)
    at_rest: bool = True

    @property
    def sockets(self) -> int:
        """Open sockets of the arbiter and workers together."""
        return sum(process["sockets"] for process in self.processes)

    @property
    def rss_kb(self) -> int:
        """Resident memory of the arbiter and workers together, in KiB."""
        return sum(process["rss_kb"] for process in self.processes)

    @property
    def workers(self) -> list[int]:
        """The worker pids."""
        return [process["pid"] for process in self.processes if process["role"] == "worker"]


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print and write the report; 1 when anything failed or grew too much."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=60, help="seconds of measured load")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of load before it")
    parser.add_argument("--smoke", action="store_true", help="3 s after a 1 s warm-up")
    parser.add_argument("--redis", action="store_true", help="RedisCache on a real redis-server")
    parser.add_argument("--max-requests", type=int, default=1_000_000,
                        help="answers (warm-up and run, each) after which the load stops, "
                             "whatever the time")  # fmt: skip
    parser.add_argument("--output", type=Path, default=ROOT / "docs",
                        help="folder for soak.md and soak.json")  # fmt: skip
    options = parser.parse_args(argv)
    options.command = " ".join(["python -m bench.soak", *(sys.argv[1:] if argv is None else argv)])
    if options.smoke:
        options.duration, options.warmup = 3, 1
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: sudo apt-get install wrk")
    result = soak(options)
    body = document(result)
    print(body)
    options.output.mkdir(parents=True, exist_ok=True)
    (options.output / "soak.md").write_text(body)
    (options.output / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    if result["failures"]:
        print("\nfailed: " + "; ".join(result["failures"]), file=sys.stderr)
        return 1
    return 0


def soak(options) -> dict:
    """Start the directory (and Redis), the portal and the load; everything the report says."""
    with contextlib.ExitStack() as stack:
        slapd = stack.enter_context(Slapd())
        settings = {"PORTAL_THROTTLE_ACCOUNT_LIMIT": '"1000000 per minute"'}
        if options.redis:
            redis = stack.enter_context(RedisServer())
            settings |= {"PORTAL_CACHE_TYPE": '"RedisCache"',
                         "PORTAL_CACHE_REDIS_URL": json.dumps(redis.url)}  # fmt: skip
        portal = stack.enter_context(
            Server("portal:create_app()", portal_env(slapd, **settings), ready_path="/healthz")
        )
        people = [(*person, sign_in(portal.base_url, person[0], person[1])) for person in PEOPLE]
        began = time.monotonic()
        cold = read_processes(portal, began)
        # The warm-up opens what load keeps open (pooled directory connections, cache
        # entries, stored pages): growth is counted from its end, not from an idle server.
        warmup = run_load(portal, people, options.warmup, options.max_requests)
        start = read_at_rest(portal, began)
        measured = run_load(portal, people, options.duration, options.max_requests)
        end = read_at_rest(portal, began)
        log = portal.log_text()
    return summarise(options, cold, warmup, start, measured, end, log)


def run_load(portal: Server, people: list, seconds: int, max_requests: int):
    """Run the three wrk streams at once for `seconds`; (their results, readings meanwhile).

    `people` holds (username, password, display name, e-mail, own page or "", session cookie).
    """
    began = time.monotonic()
    lines = "\n".join(
        "\t".join((user, password, name, email, f"session={cookie}",
                   " ".join(filter(None, (*COMMON_PAGES, own)))))
        for user, password, name, email, own, cookie in people
    )  # fmt: skip
    connections = {"signin": SIGNIN_CONNECTIONS, "page": len(people), "verify": len(people)}
    total = sum(connections.values())
    running: dict[str, subprocess.Popen] = {}
    try:
        for mode, count in connections.items():
            env = dict(os.environ, SOAK_MODE=mode, SOAK_PEOPLE=lines,
                       SOAK_MAX_PER_THREAD=str(max(1, max_requests // total)))  # fmt: skip
            command = ["wrk", f"-t{count}", f"-c{count}", f"-d{seconds}s", "--latency",
                       f"--timeout={REQUEST_TIMEOUT}", "-s", str(SCRIPT),
                       portal.base_url]  # fmt: skip
            running[mode] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True)  # fmt: skip
        readings = _read_while_running(portal, running, seconds, began)
    finally:
        for process in running.values():  # on any failure here, no wrk is left running
            if process.poll() is None:
                process.kill()
                process.wait()
    results = {}
    for mode, process in running.items():
        out, err = process.communicate()
        line = next((ln for ln in out.splitlines() if ln.startswith("SOAK_RESULT ")), None)
        if process.returncode != 0 or line is None:
            raise RuntimeError(f"wrk ({mode}) failed ({process.returncode}):\n{out}\n{err}")
        results[mode] = json.loads(line.removeprefix("SOAK_RESULT "))
        results[mode]["connections"] = connections[mode]
        results[mode]["wrk_output"] = out.split("SOAK_RESULT ", 1)[0].rstrip()
    return results, readings


def _read_while_running(portal: Server, running: dict, seconds: int, began: float) -> list:
    # A reading every `interval` seconds while any wrk runs: wait() with a timeout on a
    # stream still running is the clock, so nothing sleeps for a fixed time and the loop
    # ends as soon as the last stream does.
    readings = []
    interval = max(1, seconds // 12)
    deadline = time.monotonic() + seconds + 30
    while any(process.poll() is None for process in running.values()):
        if time.monotonic() > deadline:
            raise RuntimeError("wrk did not end 30 s after its duration")
        with contextlib.suppress(subprocess.TimeoutExpired):
            next(p for p in running.values() if p.poll() is None).wait(timeout=interval)
        if any(process.poll() is None for process in running.values()):
            readings.append(asdict(read_processes(portal, began, at_rest=False)))
    return readings


def portal_pids(arbiter: int) -> list[tuple[int, str]]:
    """(pid, role) of the gunicorn arbiter and its workers (its children in /proc)."""
    found = [(arbiter, "arbiter")]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        # The command name in parentheses may hold spaces: the parent pid follows its ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == arbiter:
            found.append((int(entry.name), "worker"))
    return sorted(found, key=lambda item: (item[1] != "arbiter", item[0]))


def open_sockets(pid: int) -> int:
    """How many of the process's file descriptors are sockets."""
    count = 0
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return 0
    for descriptor in descriptors:
        with contextlib.suppress(OSError):  # closed between the listing and the read
            count += os.readlink(descriptor).startswith("socket:")
    return count


def resident_kb(pid: int) -> int:
    """The process's resident set size (VmRSS), in KiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def read_processes(portal: Server, began: float, at_rest: bool = True) -> Reading:
    """Sockets and RSS of every portal process now."""
    processes = [
        {"pid": pid, "role": role, "sockets": open_sockets(pid), "rss_kb": resident_kb(pid)}
        for pid, role in portal_pids(portal.process.pid)
    ]
    return Reading(round(time.monotonic() - began, 1), processes, at_rest)


def load_connections(port: int) -> int:
    """TCP connections to the portal's port still open (neither listening nor TIME_WAIT)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.split(":")[1], 16) == port and state not in ("0A", "06"):
            count += 1
    return count


def read_at_rest(portal: Server, began: float, timeout: float = 5.0) -> Reading:
    """The reading once the load generator's connections are closed on the portal's side too
    (bounded: a connection the portal never closes is itself a finding, and is counted)."""
    deadline = time.monotonic() + timeout
    while load_connections(portal.port) and time.monotonic() < deadline:
        time.sleep(0.05)  # poll until the closes are seen, not a timing measurement
    return read_processes(portal, began, at_rest=not load_connections(portal.port))


def phase(results: dict) -> dict:
    """Requests by kind, statuses, failures and latency of one run of the three streams."""
    by_kind = dict.fromkeys(KINDS, 0)
    statuses: dict[str, int] = {}
    totals = {"server_errors": 0, "unexpected": 0, "crossovers": 0}
    notes: list[str] = []
    streams = {}
    for mode, result in results.items():
        for thread in result["threads"]:
            for kind, count in thread["counts"].items():
                by_kind[kind] = by_kind.get(kind, 0) + count
            for key, count in thread["statuses"].items():
                statuses[key] = statuses.get(key, 0) + count
            for name in totals:
                totals[name] += thread[name]
            notes += [note for note in thread["notes"].splitlines() if note]
        errors = result["errors"]
        seconds = result["duration_us"] / 1e6
        streams[mode] = {
            "connections": result["connections"],
            "requests": result["requests"],
            "rate": round(result["requests"] / seconds, 1),
            "p50_ms": round(result["latency_us"]["p50"] / 1000, 2),
            "p90_ms": round(result["latency_us"]["p90"] / 1000, 2),
            "p99_ms": round(result["latency_us"]["p99"] / 1000, 2),
            "max_ms": round(result["latency_us"]["max"] / 1000, 2),
            "socket_errors": sum(errors[name] for name in ("connect", "read", "write", "timeout")),
            "wrk_output": result["wrk_output"],
        }
    return {
        "seconds": round(max(r["duration_us"] for r in results.values()) / 1e6, 1),
        "requests_by_kind": by_kind,
        "statuses": dict(sorted(statuses.items())),
        **totals,
        "socket_errors": sum(stream["socket_errors"] for stream in streams.values()),
        "latency": streams,
        "notes": notes[:20],
    }


def summarise(options, cold: Reading, warmup, start: Reading, measured, end: Reading,
              log: str) -> dict:  # fmt: skip
    """The report's data, with the list of failures (empty when the run passed)."""
    warm, soaked = phase(warmup[0]), phase(measured[0])
    failures = []
    for name, what in (("server_errors", "answers were 5xx"), ("crossovers", "identity crossovers"),
                       ("unexpected", "unexpected answers"),
                       ("socket_errors", "socket errors or timeouts")):  # fmt: skip
        count = warm[name] + soaked[name]
        if count:
            failures.append(f"{count} {what}")
    if start.workers != end.workers:
        failures.append(f"workers replaced: {start.workers} then {end.workers}")
    socket_growth = end.sockets - start.sockets
    if socket_growth > SOCKET_GROWTH:
        failures.append(f"open sockets grew by {socket_growth} (bound {SOCKET_GROWTH})")
    rss_growth = end.rss_kb / start.rss_kb - 1 if start.rss_kb else 0.0
    if rss_growth > RSS_GROWTH:
        failures.append(f"RSS grew by {rss_growth:.0%} (bound {RSS_GROWTH:.0%})")
    return {
        "command": options.command,
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "cache": "RedisCache" if options.redis else "SimpleCache",
        "gunicorn": f"{WORKERS} workers, {THREADS} threads each, gthread",
        "duration_s": soaked["seconds"],
        "warmup_s": warm["seconds"],
        "max_requests": options.max_requests,
        "requests_by_kind": soaked["requests_by_kind"],
        "requests": sum(soaked["requests_by_kind"].values()),
        "server_errors": warm["server_errors"] + soaked["server_errors"],
        "crossovers": warm["crossovers"] + soaked["crossovers"],
        "unexpected": warm["unexpected"] + soaked["unexpected"],
        "socket_errors": warm["socket_errors"] + soaked["socket_errors"],
        "latency": soaked["latency"],
        "sockets": {
            "start": start.sockets,
            "end": end.sockets,
            "growth": socket_growth,
            "bound": SOCKET_GROWTH,
            "cold": cold.sockets,
        },  # fmt: skip
        "rss_kb": {
            "start": start.rss_kb,
            "end": end.rss_kb,
            "growth": round(rss_growth, 3),
            "bound": RSS_GROWTH,
            "cold": cold.rss_kb,
        },  # fmt: skip
        "processes": {"cold": asdict(cold), "start": asdict(start), "end": asdict(end)},
        "timeline": measured[1],
        "phases": {"warmup": warm, "soak": soaked},
        "log_tracebacks": log.count("Traceback"),
        "log_tail": log[-3000:] if "Traceback" in log else "",
        "failures": failures,
    }


def document(result: dict) -> str:
    """The Markdown report."""
    soaked = result["phases"]["soak"]
    verdict = (
        "**passed**" if not result["failures"] else "**failed**: " + "; ".join(result["failures"])
    )
    lines = [
        "# Soak",
        "",
        f"Measured by `{result['command']}` on {result['machine']}, {result['date']}: "
        f"{result['duration_s']:g} s of mixed load after a {result['warmup_s']:g} s warm-up, "
        f"against the portal under gunicorn ({result['gunicorn']}) with {result['cache']} and a "
        "real slapd serving the demo directory; load from three `wrk` processes on loopback "
        "(bench/soak_load.lua), every answer checked against the person whose cookie was sent "
        "(see bench/soak.py).",
        "",
        f"Result: {verdict}.",
        "",
        "| kind | requests | answers by status |",
        "|---|---|---|",
    ]
    per_kind: dict[str, dict[str, int]] = {}
    for key, count in soaked["statuses"].items():
        kind, status = key.split(" ")
        per_kind.setdefault(kind, {})[status] = count
    for kind, count in result["requests_by_kind"].items():
        statuses = sorted(per_kind.get(kind, {}).items())
        answers = ", ".join(f"{status}: {n:,}" for status, n in statuses)
        lines.append(f"| {kind} | {count:,} | {answers or '—'} |")
    warm = result["phases"]["warmup"]
    lines += [
        f"| **all** | {result['requests']:,} | |",
        "",
        f"Over the warm-up ({sum(warm['requests_by_kind'].values()):,} requests, checked the "
        f"same way) and the run: {result['server_errors']} answers 5xx, "
        f"{result['crossovers']} identity crossovers, {result['unexpected']} unexpected "
        f"answers, {result['socket_errors']} socket errors or timeouts.",
        "",
        "| stream | connections | requests | req/s | p50 | p90 | p99 | max | socket errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, stream in result["latency"].items():
        lines.append(
            f"| {mode} | {stream['connections']} | {stream['requests']:,} | {stream['rate']:,.0f} "
            f"| {stream['p50_ms']:.2f} ms | {stream['p90_ms']:.2f} ms | {stream['p99_ms']:.2f} ms "
            f"| {stream['max_ms']:.1f} ms | {stream['socket_errors']} |"
        )
    lines += [
        "",
        "The signin stream's latency covers all four requests of its cycle (form, POST, home "
        "page, verify).",
        "",
        "| process | pid | sockets at start | at end | RSS at start | at end |",
        "|---|---|---|---|---|---|",
    ]
    start = {p["pid"]: p for p in result["processes"]["start"]["processes"]}
    end = {p["pid"]: p for p in result["processes"]["end"]["processes"]}
    for pid in sorted(start.keys() | end.keys()):
        before, after = start.get(pid), end.get(pid)
        role = (before or after)["role"]
        lines.append(
            f"| {role} | {pid} | {_cell(before, 'sockets')} | {_cell(after, 'sockets')} "
            f"| {_mb(before)} | {_mb(after)} |"
        )
    sockets, rss = result["sockets"], result["rss_kb"]
    lines += [
        f"| **all** | | {sockets['start']} | {sockets['end']} ({sockets['growth']:+d}, bound "
        f"+{sockets['bound']}) | {rss['start'] / 1024:.1f} MB | {rss['end'] / 1024:.1f} MB "
        f"({rss['growth']:+.1%}, bound +{rss['bound']:.0%}) |",
        "",
        "Start and end are read at rest (after the warm-up, after the run, once the load's "
        "connections are closed); before the warm-up the processes held "
        f"{sockets['cold']} sockets and {rss['cold'] / 1024:.1f} MB.",
        "",
        "During the run (under load):",
        "",
        "| second of the run | sockets | RSS |",
        "|---|---|---|",
    ]
    for reading in result["timeline"]:
        total_sockets = sum(p["sockets"] for p in reading["processes"])
        total_rss = sum(p["rss_kb"] for p in reading["processes"])
        lines.append(f"| {reading['seconds']:g} | {total_sockets} | {total_rss / 1024:.1f} MB |")
    notes = result["phases"]["warmup"]["notes"] + soaked["notes"]
    if notes:
        lines += ["", "First failed answers:", "", *(f"- {note}" for note in notes[:20])]
    if result["log_tracebacks"]:
        lines += ["", f"gunicorn's log holds {result['log_tracebacks']} tracebacks; its end:",
                  "", "```", result["log_tail"], "```"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _cell(process: dict | None, key: str) -> str:
    return "—" if process is None else str(process[key])


def _mb(process: dict | None) -> str:
    return "—" if process is None else f"{process['rss_kb'] / 1024:.1f} MB"


if __name__ == "__main__":
    sys.exit(main())
