"""/healthz says the process runs; /readyz says the directory and the cache answer (and the
failed-login counts' storage, when it is a Redis)."""

import threading
import time

from flask import current_app, jsonify

from .. import directory, settings
from ..signin import throttle
from . import bp
from .probes import probe_cache

#: The clock /readyz's reuse window is judged by (a function, so tests can move it).
clock = time.monotonic
#: Held by the one request probing: the others answer at once (see readyz).
_probing = threading.Lock()


@bp.route("/healthz")
def healthz():
    """Process alive: no I/O at all."""
    return jsonify(status="ok")


@bp.route("/readyz")
def readyz():
    """200 when a service bind + search worked on some server and the cache answered, else 503.

    The answer is reused for HEALTH_CACHE_SECONDS, however often load balancers ask. One
    request probes at a time; while it does, the others get the last answer at once (503
    "checking" before the first): with the directory hung a probe takes an operation timeout,
    and probes waiting for it held the worker threads every app's forward auth needs.
    """
    window = current_app.config["HEALTH_CACHE_SECONDS"]
    when, body, status = current_app.extensions.get("portal.readiness", (None, None, 0))
    if when is not None and clock() - when < window:
        return jsonify(body), status
    if not _probing.acquire(blocking=False):
        if when is None:
            return jsonify(status="checking", checks={}, failed=[]), 503
        return jsonify(body), status
    try:
        body, status = _probe()
        current_app.extensions["portal.readiness"] = (clock(), body, status)
    finally:
        _probing.release()
    return jsonify(body), status


def _probe() -> tuple[dict, int]:
    checks = {
        # As soon as one server answers: a hung one must not make every instance look unready
        # to a load balancer whose probe gives up sooner than LDAP_OPERATION_TIMEOUT.
        "directory": directory.some_server_answers(),
        "cache": probe_cache(),
    }
    if settings.throttle_storage_url(current_app.config) != "memory://":
        # Every sign-in counts there first: a storage that cannot count pauses them all.
        checks["failed-login counts"] = not throttle.storage_problem()
    ready = all(checks.values())
    body = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "failed": sorted(name for name, ok in checks.items() if not ok),
    }
    return body, 200 if ready else 503
