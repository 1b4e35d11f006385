"""GET /metrics: the portal's Prometheus metrics (portal.metrics) for allowed clients.

Under gunicorn every worker is its own process with its own counters. With the environment
variable PROMETHEUS_MULTIPROC_DIR naming an empty folder, prometheus_client writes each process's
values to files there and each scrape adds them up (MultiProcessCollector into a fresh registry);
without it the process's default registry is exposed. deploy/gunicorn.conf.py has the hooks.

/metrics answers requests from METRICS_ALLOWED_NETWORKS, or that carry
``Authorization: Bearer <METRICS_BEARER_TOKEN>`` when a token is set; anything else gets 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time

from flask import Flask, Response, current_app, request
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.exposition import choose_encoder

from ..settings.values import ConfigError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_EXPORTER = "portal.metrics"


class _Exporter:
    """Who may read /metrics (allowed networks or the bearer token) and which registry it shows."""

    def __init__(self, networks: list[str], token: str, multiprocess_dir: str | None):
        self.networks = [ipaddress.ip_network(network, strict=False) for network in networks]
        self.token = token.encode() if token else None
        self.multiprocess_dir = multiprocess_dir

    def allows(self, remote_addr: str | None, authorization: str | None) -> bool:
        """True for a client in an allowed network or one that sent the right bearer token."""
        if self.token is not None and authorization:
            scheme, _, credentials = authorization.partition(" ")
            # Constant-time comparison: the answer's timing says nothing about the token.
            if scheme.lower() == "bearer" and hmac.compare_digest(
                credentials.strip().encode(), self.token
            ):
                return True
        address = _address(remote_addr)
        return address is not None and any(address in network for network in self.networks)

    def registry(self):
        """Every process's values (a fresh registry per scrape), else this process's."""
        if not self.multiprocess_dir:
            return REGISTRY
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        return registry


def _address(remote_addr: str | None):
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return None  # e.g. a Unix socket: only the token lets it in
    # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
    return getattr(address, "ipv4_mapped", None) or address


def init_app(app: Flask) -> None:
    """Add GET /metrics; refuse to start when PROMETHEUS_MULTIPROC_DIR is not a folder."""
    folder = os.environ.get(MULTIPROC_ENV) or None
    if folder and not os.path.isdir(folder):
        raise ConfigError(
            f"{MULTIPROC_ENV}: no such folder {folder} (create it empty before starting)"
        )
    app.extensions[_EXPORTER] = _Exporter(
        app.config["METRICS_ALLOWED_NETWORKS"], app.config["METRICS_BEARER_TOKEN"], folder
    )
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])


def metrics_view() -> Response:
    """The metrics in Prometheus text format, or 403 for a client that may not read them."""
    exporter: _Exporter = current_app.extensions[_EXPORTER]
    if not exporter.allows(request.remote_addr, request.headers.get("Authorization")):
        return Response("forbidden\n", 403, {"Cache-Control": "no-store"}, mimetype="text/plain")
    # The Prometheus text format, or OpenMetrics for a scraper that asks for it. A version
    # that is no version ("version=x") makes prometheus_client raise: the text format then.
    _note_a_watcher_elsewhere()
    try:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    except (TypeError, ValueError):
        encode, content_type = choose_encoder("")
    return Response(
        encode(exporter.registry()),
        headers={"Content-Type": content_type, "Cache-Control": "no-store"},
    )


def _note_a_watcher_elsewhere() -> None:
    # Where no watcher runs in these processes (a `portal watch` sidecar beside servers with
    # WATCH_INTERVAL = 0), the lag is what the sidecar last published: it read 0 while the
    # sidecar was dead, and an alert on it never fired.
    from .. import metrics
    from ..watcher import read_shared_state, watcher_of

    if watcher_of(current_app) is not None:
        return  # this process's own watcher keeps the gauge
    state = read_shared_state(current_app)  # None without Redis, or before a first poll
    if state is not None and state.last_poll:
        metrics.watch_lag(time.time() - state.last_poll)
