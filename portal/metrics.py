"""Prometheus metrics: the counters and histograms the portal records (GET /metrics is
portal.web.exporter).

The recording functions (login, user_load, cache_request, ldap_operation, ldap_error) use only
prometheus_client, so the directory layer records into them without touching the request.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

from .recent import RECENT  # the status page's in-process record

#: The exit status of a process that cannot start: gunicorn's "app failed to load", on which
#: its master stops (with most others it starts the worker again, and again; 3 would be that
#: for werkzeug's reloader).
CANNOT_START = 4

#: Free space a process needs in PROMETHEUS_MULTIPROC_DIR: prometheus_client maps three files
#: of 64 KiB per process there and doubles them as they fill (about 200 KiB in all).
SPACE_NEEDED = 1 << 20


def folder_problem(folder: str) -> str:
    """Why PROMETHEUS_MULTIPROC_DIR cannot hold this process's metrics ("" when it can)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        return (f"PROMETHEUS_MULTIPROC_DIR: {folder} is a file, not a folder (move it away and "
                "create the folder empty before starting)")  # fmt: skip
    if not os.path.isdir(folder):
        # prometheus_client opens a file there for each metric made below: without the folder
        # every process (a worker, each `portal` command) ended in a FileNotFoundError traceback.
        return (f"PROMETHEUS_MULTIPROC_DIR: no such folder {folder} (create it empty before "
                "starting; the shipped deploy/gunicorn.conf.py does)")  # fmt: skip
    if not os.access(folder, os.W_OK | os.X_OK):
        # A read-only mount, or a folder of another user: prometheus_client's first metric
        # ended the process in a 40-line traceback.
        return (f"PROMETHEUS_MULTIPROC_DIR: {folder} is not writable by this process (user "
                f"{os.getuid()}; a read-only mount or another user's folder): give gunicorn's "
                "user a folder of its own")  # fmt: skip
    found = os.statvfs(folder)
    free = found.f_bavail * found.f_frsize
    if free < SPACE_NEEDED:
        # Its files are mapped into memory: writing past a full disk kills the process with
        # SIGBUS, at its first request, and gunicorn starts another that dies the same way.
        return (f"PROMETHEUS_MULTIPROC_DIR: {folder} has {free // 1024} KiB free, and each "
                f"process needs {SPACE_NEEDED // 1024} KiB for its metrics files: free some, or "
                "give the folder more room")  # fmt: skip
    return ""


_MULTIPROC_FOLDER = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _MULTIPROC_FOLDER and (_problem := folder_problem(_MULTIPROC_FOLDER)):
    print(_problem, file=sys.stderr)
    raise SystemExit(CANNOT_START)

LOGIN_OUTCOMES = (
    "success",
    "failed",
    "refused",
    "must_change_password",
    "throttled",
    "counts_unavailable",
    "directory_error",
)
# "revoked": the login was signed out (here or elsewhere) or revoked by an administrator.
USER_LOAD_SOURCES = ("cache", "directory", "stale", "none", "revoked")
CACHE_RESULTS = ("hit", "miss")
LDAP_OPERATIONS = ("search", "bind")
#: What can fail with a directory server: an operation, or opening a connection to it.
LDAP_FAILURES = (*LDAP_OPERATIONS, "connect")

LOGINS = Counter(
    "portal_logins",
    "Password logins by outcome: success; failed (wrong password, unknown or disabled account, "
    "input refused); refused (not in an allowed group, or in a denied one); "
    "must_change_password; throttled (too many failed logins); counts_unavailable (the "
    "throttle's storage could not count the attempt); directory_error (the directory could not "
    "answer).",
    ["outcome"],
)
USER_LOADS = Counter(
    "portal_user_loads",
    "Signed-in requests by where the person's data came from: cache; directory (the cache "
    "missed); stale (the directory did not answer: an entry within USER_STALE_GRACE); none "
    "(the person is gone or no longer active); revoked (signed out, revoked, password changed).",
    ["source"],
)
CACHE_REQUESTS = Counter(
    "portal_cache_requests",
    "User-cache lookups made by the user loader, by result (hit or miss).",
    ["result"],
)
LDAP_SECONDS = Histogram(
    "portal_ldap_operation_seconds",
    "Time of each LDAP search (one per page) and password bind, by directory server.",
    ["operation", "server"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LDAP_SERVER_OPEN = Gauge(
    "portal_ldap_server_open",
    "1 while a directory server's circuit breaker is open (it failed and has not answered "
    "since: left alone until its back-off ends, then tried again), else 0; with several "
    "workers, 1 when any live worker has it open.",
    ["server"],
    # livemax: a worker that exits while a server is failing must not pin the value at 1.
    multiprocess_mode="livemax",
)
LOGINS_WAITING = Gauge(
    "portal_logins_waiting",
    "Sign-ins and password changes waiting on the directory now; while it is slow to answer, "
    "at most half of a worker's threads wait and the rest are told to try again.",
    multiprocess_mode="livesum",
)
CACHE_DOWN = Gauge(
    "portal_cache_down",
    "1 while a worker leaves Redis alone after it failed (no answer, a timeout): requests use "
    "that process's copies and the directory, and sign-outs wait in it; else 0; with several "
    "workers, 1 when any live worker has it so.",
    multiprocess_mode="livemax",
)
CACHE_WRITES_WAITING = Gauge(
    "portal_cache_writes_waiting",
    "Writes Redis could not take, waiting in the workers to be written once it answers: kind "
    "sign-out (those sign-ins still work in the other processes until then) or entry.",
    ["kind"],
    multiprocess_mode="livesum",
)
LDAP_ERRORS = Counter(
    "portal_ldap_errors",
    "LDAP searches and binds that failed (no answer, a broken connection, an outage result "
    "code, a refused or cut-short search), and connections to a server that could not be "
    "opened (operation=connect: refused, timed out, TLS failed).",
    ["operation"],
)

# Every label value known in advance is exported from the start (as 0), so rate() and alerts
# see a series before its first event.
for _outcome in LOGIN_OUTCOMES:
    LOGINS.labels(_outcome)
# Each label's child once: the hot path counts every request, and a label lookup costs more
# than the count (safe across forks: a child notices a new process and starts its own values).
_USER_LOADS = {source: USER_LOADS.labels(source) for source in USER_LOAD_SOURCES}
_CACHE_REQUESTS = {result: CACHE_REQUESTS.labels(result) for result in CACHE_RESULTS}
for _operation in LDAP_FAILURES:
    LDAP_ERRORS.labels(_operation)
for _kind in ("sign-out", "entry"):
    CACHE_WRITES_WAITING.labels(_kind)


def login(outcome: str) -> None:
    """Count one password login attempt by outcome (one of LOGIN_OUTCOMES)."""
    LOGINS.labels(outcome).inc()
    RECENT.login(outcome)


def user_load(source: str) -> None:
    """Count one user-loader answer by source (one of USER_LOAD_SOURCES)."""
    _USER_LOADS[source].inc()


def cache_request(hit: bool) -> None:
    """Count one user-cache lookup as a hit or a miss."""
    _CACHE_REQUESTS["hit" if hit else "miss"].inc()
    RECENT.cache(hit)


WATCH_LAG = Gauge(
    "portal_watch_lag_seconds",
    "Seconds since the directory watcher last polled the directory (0 before its first poll); "
    "with several workers, the one set last (each scrape sets it from what the watcher "
    "published).",
    # Set last, not the largest: each worker sets it when it answers a scrape, and the largest
    # kept another worker's old answer (a restarted sidecar's lag read 22 s for a while).
    multiprocess_mode="livemostrecent",
)
WATCH_FLUSHES = Counter(
    "portal_watch_flushes",
    "People re-read at once because the directory watcher saw their entry or a group of theirs "
    "change.",
)


def watch_poll(flushed: int) -> None:
    """Count the people one poll of the directory watcher re-read."""
    WATCH_FLUSHES.inc(flushed)


def watch_lag(seconds: float) -> None:
    """Note how long ago the watcher last polled."""
    WATCH_LAG.set(seconds)


LOG_LINES_LOST = Counter(
    "portal_log_lines_lost",
    "Log and audit lines this process could not write to standard error: stalled (its reader "
    "stopped taking lines and the lines waiting filled their queue) or unwritable (the write "
    "failed: a full disk, a closed stream).",
    ["reason"],
)
for _reason in ("stalled", "unwritable"):
    LOG_LINES_LOST.labels(_reason)


def log_line_lost(reason: str) -> None:
    """Count one log or audit line that could not be written ("stalled" or "unwritable")."""
    LOG_LINES_LOST.labels(reason).inc()


def breaker_open(server: str, is_open: bool) -> None:
    """Note that a server's circuit breaker opened or closed."""
    LDAP_SERVER_OPEN.labels(server).set(1 if is_open else 0)


def ldap_error(operation: str, connection=None, detail: str = "") -> None:
    """Count one failed LDAP operation or connection (one of LDAP_FAILURES); given its
    connection, it is also the server's last error on the status page."""
    LDAP_ERRORS.labels(operation).inc()
    if connection is not None:
        RECENT.error(server_label(connection), f"{operation}: {detail}")


@contextmanager
def ldap_operation(operation: str, connection) -> Iterator[None]:
    """Time the block as one LDAP operation on an ldap3 connection; an exception counts an error."""
    started, failure = time.perf_counter(), None
    try:
        yield
    except Exception as error:
        ldap_error(operation)
        failure = f"{operation}: {type(error).__name__}: {error}"
        raise
    finally:
        elapsed = time.perf_counter() - started
        server = server_label(connection)
        LDAP_SECONDS.labels(operation, server).observe(elapsed)
        RECENT.ldap(server, elapsed, failure)


def server_label(connection) -> str:
    """The `server` label of a connection: host:port ("unknown" rather than ever failing)."""
    server = getattr(connection, "server", None)
    host, port = getattr(server, "host", None), getattr(server, "port", None)
    return f"{host}:{port}" if host else "unknown"
