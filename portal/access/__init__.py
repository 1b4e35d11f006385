"""Who may open what: the access rules, the group_required decorator, the configured pages."""

from __future__ import annotations

import re
from functools import wraps
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, request
from flask_babel import get_locale, gettext
from flask_login import current_user, login_fresh
from werkzeug.exceptions import MethodNotAllowed, NotFound

from ..extensions import login_manager
from ..settings.texts import Text
from . import apps, rules

_RULES = "portal.rules"
_APPS = "portal.apps"
_PAGES = "portal.pages"
#: WSGI environ key: this request's person comes from a cache entry past its freshness (the
#: directory did not answer, see accounts.py); pages say so, and the admin pages that act on
#: people refuse it.
STALE = "portal.stale"


def init_app(app: Flask) -> None:
    """Compile ACCESS_RULES once for every decision the app makes, and APPS against them."""
    config = app.config
    ruleset = rules.RuleSet(
        config["ACCESS_RULES"], config["ACCESS_DEFAULT_POLICY"], config["ACCESS_KEPT_ESCAPES"]
    )
    app.extensions[_RULES] = ruleset
    # Icons are looked for where the static view looks (portal.web.brand: BRAND_DIR first).
    folders = app.extensions.get("portal.static_folders") or [app.static_folder]
    languages = config["LANGUAGES"]
    app.extensions[_APPS] = apps.compile_apps(config["APPS"], ruleset, folders, languages)
    app.extensions[_PAGES] = [_compile_page(page, languages) for page in config["PAGES"]]


def _compile_page(page: dict, languages: list[str]) -> dict:
    # Title and body as Texts in each language given (a template page has no body).
    texts = {key: Text.of(page[key], languages) for key in ("title", "body") if key in page}
    return page | texts


def unguarded_apps(app: Flask) -> list[str]:
    """Warnings for the apps whose tiles hide from people the rules let open them, for tiles
    that lead to a page of the portal's it does not have, and for rules an earlier rule
    always decides first."""
    portal_host = urlsplit(app.config["SSO_PORTAL_URL"]).hostname
    return [
        *rules.shadowed(app.config["ACCESS_RULES"]),
        *apps.unguarded(app.extensions[_APPS], app.extensions[_RULES], portal_host),
        *_tiles_to_missing_pages(app, portal_host),
    ]


#: The portal's own page addresses, in any case, whole path segments (not /adminer/).
_OWN_PREFIXES = re.compile(r"(?i)/(pages|admin)(/|$)")
_OWN_ADDRESSES = (
    "the portal's pages are /pages/<slug>, its admin pages /admin/status and /admin/users/<name>"
)


def _tiles_to_missing_pages(app: Flask, portal_host: str | None) -> list[str]:
    # A tile for /pages/<a slug no page has> is hidden from everyone; one for /pages/finance/
    # or /ADMIN/status is shown to everyone and opens "Not found". Other addresses on the
    # portal's host may be apps the proxy serves there, which the portal cannot know of.
    prefix = (app.config.get("APPLICATION_ROOT") or "/").rstrip("/")
    slugs = {page["slug"] for page in app.extensions[_PAGES]}
    routes = app.url_map.bind("localhost")
    warnings = []
    for number, tile in enumerate(app.extensions[_APPS], 1):
        if tile.host is not None and (portal_host is None or rules.normal_host(tile.host)
                                      != rules.normal_host(portal_host)):  # fmt: skip
            continue
        if prefix and not tile.path.startswith(prefix + "/"):
            continue
        path = tile.path[len(prefix) :]
        name = f"APPS[{number}] ({tile.title.in_language('en')})"
        own = apps.own_page(tile, portal_host, prefix)
        if own is not None and own[0] == "page" and own[1] not in slugs:
            warnings.append(f"{name}: no page of PAGES has the slug {own[1]!r}, so its tile "
                            f"({tile.url}) is shown to nobody")  # fmt: skip
        elif own is None and _OWN_PREFIXES.match(path):
            try:
                routes.match(path)
            except (NotFound, MethodNotAllowed):  # a redirect (a missing slash) still opens it
                warnings.append(f"{name}: the portal has no page at {tile.url!r}, so its tile "
                                f"opens \"Not found\" ({_OWN_ADDRESSES})")  # fmt: skip
    return warnings


def rule_set() -> rules.RuleSet:
    """The current app's compiled ACCESS_RULES."""
    return current_app.extensions[_RULES]


def enforce_access_rules():
    """before_request hook: ACCESS_RULES also guard the portal's own pages (403 when a rule
    refuses; ACCESS_DEFAULT_POLICY is for the apps, see RuleSet.decide_portal_page).

    The path is judged as the portal itself reads it: Werkzeug has decoded it, and Flask routes
    on exactly that path, so an escape cannot make the rules and the routing disagree.
    """
    ruleset = rule_set()
    if not ruleset.judges:
        return None  # nothing to decide: skip the work on every page view
    user = current_user._get_current_object()
    if not user.is_authenticated:
        return None
    path = request.script_root + request.path
    if not ruleset.decide_portal_page(user.groups, request.host, path, request.method).allowed:
        abort(403, gettext("The portal's access rules close this page to your account."))
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
    session that began with a password (a "remember me" session must sign in again); during a
    directory outage (the administrator known only from a stale cache entry), 503."""
    return _admin_only(view, serve_stale=False)


def admin_diagnostics(view):
    """As admin_required, but also served during a directory outage from the administrator's
    stale cache entry (within USER_STALE_GRACE, as every page): for the status page, which
    shows the portal's state and settings (secrets masked) and acts on nobody, and which the
    on-call engineer needs most while the directory is down."""
    return _admin_only(view, serve_stale=True)


def _admin_only(view, serve_stale: bool):
    @wraps(view)
    def guarded(*args, **kwargs):
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if not current_user.is_admin:
            admins = ", ".join(current_app.config["ACCESS_ADMIN_GROUPS"])
            if not admins:
                abort(403, gettext("This page is for the portal's administrators, and none "
                                   "are set (ACCESS_ADMIN_GROUPS is empty)."))  # fmt: skip
            abort(403, gettext("This page is for the portal's administrators (members of "
                               "%(groups)s).", groups=admins))  # fmt: skip
        if request.environ.get(STALE) and not serve_stale:
            # An administrator acts on what the directory says now, never on a memory of it.
            abort(503, gettext("The company directory is not answering, and the admin pages "
                               "need it."))  # fmt: skip
        if not login_fresh():
            return login_manager.needs_refresh()
        return view(*args, **kwargs)

    return guarded


def configured_pages() -> list[dict]:
    """Return the PAGES declared in settings (title and body as Texts, see settings.texts)."""
    return current_app.extensions[_PAGES]


def find_page(slug: str) -> dict | None:
    """Return the configured page with this slug, or None."""
    return next((page for page in configured_pages() if page["slug"] == slug), None)


def compiled_apps() -> tuple[apps.App, ...]:
    """The current app's APPS, compiled (their hosts and paths split out)."""
    return current_app.extensions[_APPS]


def apps_for(user) -> list[tuple[str, list[apps.App]]]:
    """The APPS this person may open, by category in this request's language (see
    portal.access.apps)."""

    def opens_own_page(page: tuple[str, str]) -> bool:
        kind, slug = page
        if kind == "admin":
            return user.is_admin
        found = find_page(slug)
        return found is not None and may_open_page(user, found)

    return apps.apps_for(compiled_apps(), rule_set(), user.groups, request.host,
                         user.in_any_group, str(get_locale()), request.script_root,
                         opens_own_page)  # fmt: skip


def may_open_page(user, page: dict) -> bool:
    """Whether this person may open a configured page: in one of its groups, and not refused
    by ACCESS_RULES (as `enforce_access_rules` judges the page's address)."""
    if not user.in_any_group(page["groups"]):
        return False
    ruleset = rule_set()
    if not ruleset.judges:
        return True
    path = f"{request.script_root}/pages/{page['slug']}"
    return ruleset.decide_portal_page(user.groups, request.host, path).allowed


def pages_for(user) -> list[dict]:
    """Return the configured pages this user may open, in settings order."""
    return [page for page in configured_pages() if may_open_page(user, page)]
