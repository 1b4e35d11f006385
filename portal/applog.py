"""The portal's own log lines (the audit lines are a stream of their own): on standard error
with their time, level, worker process and logger, from INFO up.

Under gunicorn nothing else sets up Python's logging, and its last-resort output is the bare
message, WARNING and worse only: no time to tell when a fault began or ended, no process to
tell the workers apart. A host that routes logging itself (a handler on the root logger, such as
gunicorn's --log-config or a deployer's dictConfig, or pytest's capture) keeps it as it is.
"""

from __future__ import annotations

import logging
import sys

from flask import Flask
from flask.logging import default_handler

#: The audit lines' logger (portal.signin.audit's), kept out of these lines.
AUDIT_LOGGER = "portal.audit"

#: How each line reads: 2026-12-01 03:12:45,123 WARNING [4711] portal.directory.connections: ...
LINE_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def init_app(app: Flask) -> None:
    """Send the portal's log lines to standard error, unless logging is routed already."""
    portal = logging.getLogger("portal")
    # Flask puts its own handler (WARNING and up, no process) on the app's logger, "portal",
    # once a settings warning is logged through app.logger: it is not a routing of the host's.
    portal.removeHandler(default_handler)
    if logging.getLogger().handlers or portal.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LINE_FORMAT))
    # The audit lines are a stream of their own, even when routed so they propagate up here.
    handler.addFilter(lambda record: not record.name.startswith(AUDIT_LOGGER))
    portal.addHandler(handler)
    if portal.level == logging.NOTSET:
        portal.setLevel(logging.INFO)
