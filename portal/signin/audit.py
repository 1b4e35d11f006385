"""The audit trail: one JSON line per security decision, on the "portal.audit" logger.

Events: login.success, login.failure, login.refused, login.throttled, login.unavailable,
logout, logout.everywhere, access.denied, admin.flush, admin.revoke. Each line has the time,
the event, the user (as typed for logins, else the signed-in person), the client address, the
path and a reason. Passwords never reach this module: callers pass named fields only, and any
field whose name mentions a password or secret is dropped.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from flask import has_request_context, request

from ..logwriter import QueuedStreamHandler

LOGGER_NAME = "portal.audit"
_logger = logging.getLogger(LOGGER_NAME)
_FORBIDDEN = ("password", "secret", "token")
_MAX_FIELD = 256


class JsonLineFormatter(logging.Formatter):
    """Formats an audit record as one line of JSON (its `audit` dict), newline-free."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record's audit fields, with its time, as compact JSON."""
        fields = getattr(record, "audit", None) or {"event": record.getMessage()}
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        # ensure_ascii keeps a hostile name from breaking the line (no raw CR/LF or escapes).
        return json.dumps({"time": stamp, **fields}, ensure_ascii=True, separators=(",", ":"))


def init_app(app) -> None:
    """Send audit lines to standard error, one JSON object per line, unless already routed."""
    if not _logger.handlers:
        handler = QueuedStreamHandler()  # a stalled reader must not hold the requests
        handler.setFormatter(JsonLineFormatter())
        _logger.addHandler(handler)
        _logger.setLevel(logging.INFO)
        # Audit lines are their own stream: not repeated, differently formatted, in the app log.
        _logger.propagate = False


def record(event: str, *, user: object = None, reason: str = "", **fields: object) -> None:
    """Write one audit line for `event` about `user` (with the request's address and path)."""
    entry: dict[str, object] = {"event": event, "user": _clean(user) if user else None}
    if has_request_context():
        entry["ip"] = request.remote_addr
        entry["method"] = request.method
        entry["path"] = _clean(request.path)
    if reason:
        entry["reason"] = reason
    for name, value in fields.items():
        if not any(word in name.lower() for word in _FORBIDDEN):
            entry[name] = _clean(value) if isinstance(value, str) else value
    _logger.info(event, extra={"audit": entry})


def _clean(value: object) -> str:
    # A login name is whatever the client typed: keep the line short and printable.
    return str(value)[:_MAX_FIELD]
