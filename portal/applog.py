"""The portal's own log lines (the audit lines are a stream of their own): on standard error
with their time, level, worker process and logger, from INFO up.

Under gunicorn nothing else sets up Python's logging, and its last-resort output is the bare
message, WARNING and worse only: no time to tell when a fault began or ended, no process to
tell the workers apart. A host that routes logging itself (a handler on the root logger, such as
gunicorn's --log-config or a deployer's dictConfig, or pytest's capture) keeps it as it is.
"""

from __future__ import annotations

import logging

from flask import Flask
from flask.logging import default_handler

from .logwriter import QueuedStreamHandler

#: The audit lines' logger (portal.signin.audit's), kept out of these lines.
AUDIT_LOGGER = "portal.audit"

#: How each line reads: 2026-12-01 03:12:45,123 WARNING [4711] portal.directory.connections: ...
LINE_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

# Line breaks and other control characters, as the text escapes of repr() show them.
_ESCAPES = {code: repr(chr(code))[1:-1] for code in (*range(0x20), 0x7F, 0x85, 0x2028, 0x2029)}


class OneLineFormatter(logging.Formatter):
    """LINE_FORMAT with each message on one line: a control character in it (a "%0a" a client
    put in a path, decoded by then) is shown escaped, so no text sent can forge a log line. A
    traceback, which follows the message, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """The line of one record, its message escaped."""
        record.message = record.message.translate(_ESCAPES)
        return super().formatMessage(record)


def init_app(app: Flask) -> None:
    """Send the portal's log lines to standard error, unless logging is routed already."""
    portal = logging.getLogger("portal")
    # Flask puts its own handler (WARNING and up, no process) on the app's logger, "portal",
    # once a settings warning is logged through app.logger: it is not a routing of the host's.
    portal.removeHandler(default_handler)
    if logging.getLogger().handlers or portal.handlers:
        return
    handler = QueuedStreamHandler()  # written by a thread of its own: see logwriter.py
    handler.setFormatter(OneLineFormatter(LINE_FORMAT))
    # The audit lines are a stream of their own, even when routed so they propagate up here.
    handler.addFilter(lambda record: not record.name.startswith(AUDIT_LOGGER))
    portal.addHandler(handler)
    if portal.level == logging.NOTSET:
        portal.setLevel(logging.INFO)
