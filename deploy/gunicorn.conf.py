"""gunicorn hooks for the portal: a start-up check of the worker model, Prometheus metrics with
several workers, a directory watcher that lets its lease go when its worker stops, and each
worker's thread count for the sign-ins (at most half of them wait on a directory that hangs).

    PROMETHEUS_MULTIPROC_DIR=/run/portal-metrics \\
        gunicorn --config deploy/gunicorn.conf.py --workers 2 'portal:create_app()'

Before any worker starts, gunicorn refuses to serve (exit status 1, one line naming the
setting) when a setting is refused, or when several worker processes would each keep state
that must be shared: in production, more than one worker needs CACHE_TYPE = "RedisCache" and
throttle counts in Redis (`portal.settings.check_processes`). One worker with threads needs
neither.

With PROMETHEUS_MULTIPROC_DIR naming a folder only gunicorn writes to, each worker writes its
counters there and every GET /metrics adds up all workers'. Only hooks and one limit live here, so
the command line (or GUNICORN_CMD_ARGS, WEB_CONCURRENCY) keeps choosing bind, workers and the
rest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import multiprocess

# The question a proxy asks before each request to an app carries the whole address
# (X-Original-URL: nginx's 8 KB request line, with scheme and host) and a client's repeated
# Cookie and X-Forwarded-For headers joined into one field (nginx takes 32 KB of request
# headers): past gunicorn's 8,190 bytes a field it answered 431, which nginx's auth_request
# makes a 500 on every app.
limit_request_field_size = 40960
# nginx passes request lines of up to 8 KB (an app's deep link in `next`): past gunicorn's
# default 4,094 bytes gunicorn answered its own bare 414 page, without the portal's headers.
limit_request_line = 8190  # gunicorn's largest
# gunicorn 25.1 and later open a control socket at ~/.gunicorn/gunicorn.ctl, which the portal
# does not use: two instances on one host shared that path, and the shipped unit's
# ProtectHome made it fail at every start with an error line. (Older gunicorn ignores this.)
control_socket_disable = True
#: Where a worker started into a full metrics folder keeps its own (see post_fork): the
#: temporary folder, else memory, most often another file system. mkdtemp: private, random.
_OWN_METRICS_PLACES = (tempfile.gettempdir(), "/dev/shm")  # noqa: S108


def on_starting(server):
    """Before any worker starts: check the worker model; create the metrics folder, and empty
    it of a previous run's values."""

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        # First: the check imports the portal, whose metrics open their files in the folder.
        path = Path(folder)
        try:
            path.mkdir(parents=True, exist_ok=True)
            for stale in path.glob("*.db"):  # prometheus_client's files only
                stale.unlink()
        except OSError as error:
            server.log.error("portal: PROMETHEUS_MULTIPROC_DIR: %s: %s (the folder must be "
                             "writable by gunicorn's user)", folder, error.strerror)  # fmt: skip
            raise SystemExit(1) from None
    _check_workers(server, server.cfg.workers)
    if not folder:
        server.log.warning("PROMETHEUS_MULTIPROC_DIR is not set: /metrics shows one worker only")


def nworkers_changed(server, new_value, old_value):
    """SIGTTIN asks for another worker: refused (the count stays, one line says why) when the
    settings keep sign-outs in each process, instead of stopping the whole portal."""
    if old_value is None or new_value <= old_value:
        return
    from portal.settings import ConfigError, check_processes, load

    try:
        check_processes(load(), new_value)
    except ConfigError as error:
        server.log.error("portal: not adding worker %d: %s", new_value, error)
        server._num_workers = old_value  # the property's own store: no second notice


def pre_fork(server, worker):
    """Before each worker starts (also one added later with SIGTTIN): check the count again."""
    _check_workers(server, server.num_workers)


def post_fork(server, worker):
    """In each new worker, before the portal loads: a metrics folder with no room for its files
    (filled while running) costs that worker's share of /metrics, never the service. Each new
    worker died of SIGBUS at its first request; refusing to start one stopped gunicorn, and
    with it sign-in and every app behind the proxy. Such a worker keeps its metrics in a
    folder of its own, and its /metrics shows its own values alone, until a restart once
    the folder has room."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return
    from portal.metrics import LOGINS_WAITING, folder_problem

    problem = folder_problem(folder)
    if not problem:
        return
    own = ""
    for place in _OWN_METRICS_PLACES:
        with contextlib.suppress(OSError):
            own = tempfile.mkdtemp(prefix=f"portal-metrics-{os.getpid()}-", dir=place)
            if not folder_problem(own):
                break
            shutil.rmtree(own, ignore_errors=True)
            own = ""
    if not own:
        server.log.error("portal: %s; and no folder of its own has room either: worker %d "
                         "may die at its first request", problem, os.getpid())  # fmt: skip
        return
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = own
    LOGINS_WAITING.inc(0)  # opens this worker's files now, there (a fork's first write)
    server.log.error("portal: %s; worker %d keeps its metrics in %s: its /metrics shows its "
                     "own values alone, and the others' lack them (totals then jump between "
                     "scrapes), until a restart once the folder has room",
                     problem, os.getpid(), own)  # fmt: skip


def post_worker_init(worker):
    """In each worker: gunicorn's own lines on standard output and error (an access log of
    "-") are written by the portal's log thread, as the portal's are, so a log reader that
    stops reading costs lines (counted), never the requests (portal/logwriter.py). The
    sign-ins learn the worker's thread count: while the directory is slow to answer, at most
    half of them wait on it, and the others keep serving people already signed in
    (portal/directory/deadline.py)."""
    from portal.directory.deadline import set_request_threads
    from portal.logwriter import queue_console_handlers

    queue_console_handlers(worker.log.access_log)
    queue_console_handlers(worker.log.error_log)
    set_request_threads(worker.cfg.threads)


def worker_exit(server, worker):
    """A worker stops (graceful restart, scale-down, shutdown): the sign-outs it still keeps
    for Redis are written (a reload during a Redis outage dropped them), and its directory
    watcher lets the lease go, so another process takes over at once instead of when the lease
    runs out."""
    from portal.accounts import write_waiting_marks
    from portal.watcher import watcher_of

    app = getattr(worker, "wsgi", None)
    if app is None or not hasattr(app, "extensions"):
        return
    write_waiting_marks(app)
    watcher = watcher_of(app)
    if watcher is not None:
        watcher.stop()


def child_exit(server, worker):
    """A worker ended: its live gauges stop counting (its counters keep adding up); a folder of
    its own (see post_fork) is removed, also when it was killed outright."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
    for place in _OWN_METRICS_PLACES:
        for own in Path(place).glob(f"portal-metrics-{worker.pid}-*"):
            shutil.rmtree(own, ignore_errors=True)


def _check_workers(server, workers: int) -> None:
    from portal.settings import ConfigError, check_processes, environment_hint, load, validate

    try:
        config = load()
        # Every setting first, before a worker forks: else each worker would print the same
        # refused setting inside a traceback of its own, and gunicorn "Worker failed to boot".
        validate(config)
        check_processes(config, workers)
    except ConfigError as error:
        server.log.error("portal: %s%s", error, environment_hint(str(error)))
        raise SystemExit(1) from None
