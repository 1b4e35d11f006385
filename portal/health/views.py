"""/healthz says the process runs; /readyz says the directory and the cache answer."""

from flask import jsonify

from .. import directory
from ..probes import probe_cache
from . import bp


@bp.route("/healthz")
def healthz():
    """Process alive: no I/O at all."""
    return jsonify(status="ok")


@bp.route("/readyz")
def readyz():
    """200 when a service bind + search worked on some server and the cache answered, else 503."""
    servers = directory.check_health()
    checks = {
        "directory": any(server.ok for server in servers),
        "cache": probe_cache(),
    }
    ready = all(checks.values())
    body = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "failed": sorted(name for name, ok in checks.items() if not ok),
    }
    return jsonify(body), 200 if ready else 503
