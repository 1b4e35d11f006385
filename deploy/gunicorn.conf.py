"""gunicorn hooks for the portal's Prometheus metrics with several workers.

Use with PROMETHEUS_MULTIPROC_DIR naming a folder only gunicorn writes to:

    PROMETHEUS_MULTIPROC_DIR=/run/portal-metrics \\
        gunicorn --config deploy/gunicorn.conf.py --workers 2 'portal:create_app()'

Each worker then writes its counters there and every GET /metrics adds up all workers'. Only
hooks live here, so the command line (or GUNICORN_CMD_ARGS) keeps choosing bind, workers and the
rest.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import multiprocess


def on_starting(server):
    """Before any worker starts: create the folder, and empty it of a previous run's values."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        server.log.warning("PROMETHEUS_MULTIPROC_DIR is not set: /metrics shows one worker only")
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # prometheus_client's files only
        stale.unlink()


def child_exit(server, worker):
    """A worker ended: its live gauges stop counting (its counters keep adding up)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
