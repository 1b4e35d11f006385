"""The status page: directory servers, cache, and the administrator's own session."""

import time

from flask import current_app, render_template, session
from flask_login import current_user

from .. import accounts, directory
from ..access import admin_required
from ..probes import probe_cache
from . import bp

_HIDDEN_SESSION_KEYS = frozenset({"csrf_token", "_id"})


@bp.route("/status")
@admin_required
def status():
    """Show whether each directory server and the cache answer, and this session's data."""
    cached = accounts.cached_attributes(current_user.username)
    cache_age = round(time.time() - cached["fetched_at"]) if cached else None
    return render_template(
        "admin/status.html",
        servers=directory.check_health(),
        cache_type=current_app.config["CACHE_TYPE"],
        cache_ok=probe_cache(),
        session_items=sorted(
            (key, value) for key, value in session.items() if key not in _HIDDEN_SESSION_KEYS
        ),
        cache_age=cache_age,
        user=current_user,
    )
