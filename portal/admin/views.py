"""The status page: directory servers, cache, and the administrator's own session."""

import re
import time
from urllib.parse import urlsplit

from flask import (
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user

from .. import accounts, directory
from ..access import admin_required
from ..directory import InvalidInput
from ..health.probes import count_person_entries, probe_cache
from ..recent import RECENT
from ..signin import audit
from . import bp

_HIDDEN_SESSION_KEYS = frozenset({"csrf_token", "_id", "logout_token", "logout_key"})
# Settings whose values are never shown, only whether they are set.
_SECRETS = frozenset({"SECRET_KEY", "LDAP_BIND_PASSWORD", "METRICS_BEARER_TOKEN"})
# Greedy to the last "@": an unencoded password may hold "/", "#" or "?" (masking too much is
# the safe mistake).
_URL_USERINFO = re.compile(r"(://).*@")
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&]*(?:pass|token|secret)[^=&]*=)[^&#]*")


@bp.route("/status")
@admin_required
def status():
    """Show whether each directory server and the cache answer, and this session's data."""
    cached = accounts.cached_attributes(current_user.username)
    cache_age = round(time.time() - cached["fetched_at"]) if cached else None
    servers = directory.check_health()
    return render_template(
        "admin/status.html",
        servers=servers,
        cache_type=current_app.config["CACHE_TYPE"],
        cache_ok=probe_cache(),
        cache_entries=count_person_entries(),
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
        activity=[RECENT.server(server.url) for server in servers],
        breakers=directory.breaker_states(),
        logins=RECENT.login_outcomes(),
        cache_hits=RECENT.cache_hits(),
        when=_when,
    )


def settings_in_effect(config) -> list[tuple[str, str]]:
    """The portal's own settings, secrets masked, for the status page."""
    from ..settings import known_keys

    shown = []
    for key in sorted(known_keys() | {"SECRET_KEY"}):
        value = config.get(key)
        if key in _SECRETS:
            value = "(set)" if value else "(not set)"
        elif isinstance(value, str):
            value = _without_password(value)
        elif isinstance(value, list):
            value = [_without_password(item) if isinstance(item, str) else item for item in value]
        shown.append((key, str(value)))
    return shown


def _without_password(text: str) -> str:
    # URLs such as redis://:secret@host/0 or redis://host/0?password=secret carry secrets.
    if "://" not in text:
        return text
    text = _URL_USERINFO.sub(r"\1(set)@", text)
    return _SECRET_QUERY.sub(r"\1(set)", text)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


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


@bp.route("/users")
@admin_required
def find_user():
    """The status page's look-up form lands here: go to that person's page."""
    username = request.args.get("username", "").strip()
    if not username:
        return redirect(url_for("admin.status"))
    return redirect(url_for("admin.user", username=username))


@bp.route("/users/<path:username>")
@admin_required
def user(username: str):
    """What the directory says about a person, whether they may sign in and why, each page."""
    try:
        # The host the rules are judged for, without the port ("[::1]:5000" gives "::1").
        found = accounts.explain_person(username, urlsplit("//" + request.host).hostname or "")
    except InvalidInput:
        abort(404)
    return render_template("admin/user.html", found=found), 200 if found.found else 404


@bp.route("/users/<path:username>/flush", methods=["POST"])
@admin_required
def flush_user(username: str):
    """Drop a person's cache entry (CSRF-checked); their next request reads the directory."""
    name = _canonical_or_404(username)
    accounts.forget(name)
    audit.record("admin.flush", user=current_user.username, target=name)
    flash(f"The cache entry of {name} was dropped: the next request reads the directory.")
    return redirect(url_for("admin.user", username=name))


@bp.route("/users/<path:username>/revoke", methods=["POST"])
@admin_required
def revoke_user(username: str):
    """End every session and remember-me cookie of a person (CSRF-checked)."""
    name = _canonical_or_404(username)
    if not accounts.revoke_all(name):
        # The mark is held by this process and written to the shared store once it answers:
        # the admin must know the other servers do not refuse those sign-ins yet.
        audit.record("admin.revoke", user=current_user.username, target=name,
                     reason="cache down: held in this process")  # fmt: skip
        flash(
            f"The sign-ins of {name} have ended on this server only: the portal's shared store "
            "is not answering, so the other servers will refuse them once it answers again "
            "(not if this server restarts first). Try again in a minute to be sure."
        )
        return redirect(url_for("admin.user", username=name))
    audit.record("admin.revoke", user=current_user.username, target=name)
    flash(
        f'Every sign-in of {name} has ended, on every device, "keep me signed in" included. '
        "They can sign in again with their password unless the directory says otherwise."
    )
    return redirect(url_for("admin.user", username=name))


def _canonical_or_404(typed: str) -> str:
    try:
        return directory.canonical_username(typed)
    except InvalidInput:
        abort(404)
