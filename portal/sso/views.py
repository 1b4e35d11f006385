"""/auth/verify: the question nginx auth_request, Traefik forwardAuth and Caddy forward_auth ask.

200 with Remote-User/-Groups/-Name/-Email for a signed-in, active person the access rules allow;
401 (with the login URL in Location) when nobody is signed in, or 302 to it with ?redirect=1;
403 when signed in but not allowed. ``?group=NAME`` demands one more group; ``?fresh=1`` demands
a session that began with the password (a "keep me signed in" or moved session gets the 401 or
302 to the login page, which asks for the password again). A signed-in person is served from the
user cache: no LDAP operation per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, urlsplit

from flask import Response, current_app, redirect, request, url_for
from flask_login import current_user, login_fresh

from .. import audit
from ..access import rule_set
from ..extensions import csrf
from ..request_guard import usable_host
from . import bp

log = logging.getLogger(__name__)

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(frozen=True)
class Original:
    """The request the proxy is asking about."""

    method: str
    url: str
    host: str
    path: str


@bp.route("/auth/verify", methods=_METHODS)
@csrf.exempt  # proxies pass the original method; nothing here changes state
def verify():
    """Answer whether the original request may go through, with the person's identity."""
    original = original_request()
    user = current_user._get_current_object()  # once: each proxy lookup has its cost
    if not user.is_authenticated:
        return _sign_in_first(original)
    if original is None:
        # Without the headers that say which request this is, nothing can be judged: closed.
        log.warning("/auth/verify without usable %s headers", _family())
        audit.record(
            "access.denied", user=user.username, reason="no usable original request headers"
        )
        return _answer(403)
    decision = rule_set().decide(user.groups, original.host, original.path, original.method)
    demanded = request.args.get("group")
    if not decision.allowed or (demanded and not user.in_any_group([demanded])):
        reason = decision.reason if not decision.allowed else f"not in group {demanded}"
        audit.record("access.denied", user=user.username, url=original.url, reason=reason)
        return _answer(403)
    if request.args.get("fresh") == "1" and not login_fresh():
        # An upstream that asks for a password session (an admin app, as the portal's own admin
        # pages do): a "keep me signed in" or moved session enters the password again first.
        audit.record("access.denied", user=user.username, url=original.url,
                     reason="needs a password sign-in in this session")  # fmt: skip
        return _sign_in_first(original)
    return _answer(200, identity_headers(user.username, user.display_name, user.email,
                                         user.groups))  # fmt: skip


@lru_cache(maxsize=4096)
def identity_headers(username: str, name: str, email: str, groups: tuple[str, ...]) -> tuple:
    """The Remote-* headers of a person, cleaned for a header (computed once per person)."""
    return (
        ("Remote-User", header_value(username)),
        ("Remote-Groups", header_value(",".join(_listable(groups)))),
        ("Remote-Name", header_value(name)),
        ("Remote-Email", header_value(email)),
    )


def original_request() -> Original | None:
    """The original request, from the header family SSO_REQUEST_HEADERS names; None if unusable.

    The URL is split by hand, not by a URL parser: a host that carries "#", "?", "@" or "/"
    ("GET /app/engineering/" with "Host: x#") would otherwise move the real path into a
    fragment or query and leave "/" to be judged, while the app serves the real one. The host
    must be a plain host name (optionally with a port) and the rest a path.
    """
    headers = request.headers
    if _family() == "forwarded":
        method = headers.get("X-Forwarded-Method") or ""
        host = headers.get("X-Forwarded-Host") or ""
        target = headers.get("X-Forwarded-Uri") or ""
        scheme = headers.get("X-Forwarded-Proto", "https")
    else:
        method = headers.get("X-Original-Method") or ""
        scheme, _, rest = (headers.get("X-Original-URL") or "").partition("://")
        host, slash, target = rest.partition("/")
        target = slash + target
    if not method or scheme.lower() not in ("http", "https") or not target.startswith("/"):
        return None
    if not usable_host(host):
        return None
    hostname = urlsplit("//" + host).hostname or ""
    return Original(method.upper(), f"{scheme}://{host}{target}", hostname, target)


def header_value(text: str) -> str:
    """Text safe for a response header: no control characters; UTF-8 carried byte for byte."""
    cleaned = "".join(char for char in text if ord(char) >= 0x20 and ord(char) != 0x7F)
    return cleaned.encode("utf-8").decode("latin-1")


def _sign_in_first(original: Original | None):
    portal = current_app.config["SSO_PORTAL_URL"].rstrip("/")
    login = f"{portal}{url_for('auth.login')}"
    if original is not None:
        login += f"?next={quote(original.url, safe='')}"
    if request.args.get("redirect") == "1":
        return redirect(login)
    response = _answer(401)
    response.headers["Location"] = login
    return response


def _family() -> str:
    return current_app.config["SSO_REQUEST_HEADERS"]


def _listable(groups) -> list[str]:
    # Apps split Remote-Groups on commas: a group named "Sales, portal-admins" must not read
    # as two groups, so such names are left out (and logged).
    for group in groups:
        if "," in group:
            log.warning("group %r left out of Remote-Groups: its name has a comma", group)
    return [group for group in groups if "," not in group]


def _answer(status: int, headers: tuple = ()):
    # A bare Response: no template, no body, nothing to negotiate.
    return Response(b"", status, headers=[("Cache-Control", "no-store"), *headers])
