"""Who may open what: the group_required decorator and the configured group pages."""

from __future__ import annotations

from functools import wraps

from flask import abort, current_app, request
from flask_login import current_user, login_fresh

from . import rules
from .extensions import login_manager


def enforce_access_rules():
    """before_request hook: ACCESS_RULES also guard the portal's own pages (403 on deny)."""
    config = current_app.config
    if not config["ACCESS_RULES"] and config["ACCESS_DEFAULT_POLICY"] == "allow":
        return None  # nothing to decide: skip the work on every page view
    if not current_user.is_authenticated:
        return None
    decision = rules.decide(config["ACCESS_RULES"], config["ACCESS_DEFAULT_POLICY"],
                            current_user.groups, request.host, request.path,
                            request.method)  # fmt: skip
    if not decision.allowed:
        abort(403)
    return None


def group_required(*groups: str):
    """Let a view through only for signed-in members of at least one of `groups` (else 403)."""

    def decorate(view):
        @wraps(view)
        def guarded(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if not current_user.in_any_group(groups):
                abort(403)
            return view(*args, **kwargs)

        return guarded

    return decorate


def admin_required(view):
    """Let a view through only for members of ACCESS_ADMIN_GROUPS (else 403), and only in a
    session that began with a password (a "remember me" session must sign in again)."""

    @wraps(view)
    def guarded(*args, **kwargs):
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if not current_user.is_admin:
            abort(403)
        if not login_fresh():
            return login_manager.needs_refresh()
        return view(*args, **kwargs)

    return guarded


def configured_pages() -> list[dict]:
    """Return the PAGES declared in settings."""
    return current_app.config["PAGES"]


def find_page(slug: str) -> dict | None:
    """Return the configured page with this slug, or None."""
    return next((page for page in configured_pages() if page["slug"] == slug), None)


def pages_for(user) -> list[dict]:
    """Return the configured pages this user may open, in settings order."""
    return [page for page in configured_pages() if user.in_any_group(page["groups"])]
