"""The status page: directory servers, cache, and the administrator's own session."""

import time

from flask import current_app, render_template, session
from flask_login import current_user

from .. import accounts, directory
from ..access import admin_required
from ..probes import probe_cache
from . import bp

_HIDDEN_SESSION_KEYS = frozenset({"csrf_token", "_id", "logout_token"})
# Settings whose values are never shown, only whether they are set.
_SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY")


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
        tls=_tls_in_use(),
        version=_version(),
        started=time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(current_app.config["PORTAL_STARTED_AT"])
        ),
        settings=settings_in_effect(current_app.config),
    )


def settings_in_effect(config) -> list[tuple[str, str]]:
    """The portal's own settings, secrets masked, for the status page."""
    from ..config import known_keys

    shown = []
    for key in sorted(known_keys() | {"SECRET_KEY"}):
        value = config.get(key)
        if any(word in key for word in _SECRET_WORDS) and key != "CACHE_KEY_PREFIX":
            value = "(set)" if value else "(not set)"
        shown.append((key, str(value)))
    return shown


def _tls_in_use() -> list[str]:
    # In LDAP_URLS order, as check_health answers.
    config = current_app.config
    return [
        "ldaps" if url.lower().startswith("ldaps://")
        else "StartTLS" if config["LDAP_START_TLS"] else "none (clear text)"
        for url in config["LDAP_URLS"]
    ]  # fmt: skip


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("portal")
    except PackageNotFoundError:
        return "unknown"
