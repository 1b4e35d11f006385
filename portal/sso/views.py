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
from urllib.parse import quote

from flask import Response, current_app, redirect, request, url_for
from flask_login import current_user, login_fresh

from ..access import rule_set
from ..extensions import csrf
from ..quietlog import QuietLog
from ..signin import audit
from . import bp
from .questions import (
    REQUIRED_HEADERS,
    Original,
    identity_of,
    identity_settings,
    read_original,
    why_unusable,
)

log = logging.getLogger(__name__)
quiet = QuietLog(log)  # a proxy set up wrong sends every request so: one line a minute

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
#: The longest sign-in address that carries the address to come back to: the browser sends it
#: as a request line, and gunicorn takes 4,094 bytes at most in one ("GET " and " HTTP/1.1"
#: included). A longer one would be refused (414) before the sign-in page shows.
LONGEST_SIGN_IN_ADDRESS = 4000


@bp.route("/auth/verify", methods=_METHODS)
@csrf.exempt  # proxies pass the original method; nothing here changes state
def verify():
    """Answer whether the original request may go through, with the person's identity."""
    original = original_request()
    user = current_user._get_current_object()  # once: each proxy lookup has its cost
    if original is None:
        _log_unusable("a 401 without a return address" if not user.is_authenticated else "403")
    if not user.is_authenticated:
        return _sign_in_first(original)
    if original is None:
        # Without the headers that say which request this is, nothing can be judged: closed.
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
    identity = identity_of(user, identity_settings(current_app.config))
    if identity is None:
        # Larger than the proxy and the apps take (the log says what to set): closed.
        audit.record("access.denied", user=user.username, url=original.url,
                     reason="identity headers over SSO_IDENTITY_HEADERS_MAX_BYTES")  # fmt: skip
        return _answer(403)
    return _answer(200, identity)


def original_request() -> Original | None:
    """The original request, from the header family SSO_REQUEST_HEADERS names; None if unusable."""
    return read_original(request.headers.get, _family())


def _sign_in_first(original: Original | None):
    portal = current_app.config["SSO_PORTAL_URL"].rstrip("/")
    login = f"{portal}{url_for('auth.login')}"
    if original is not None:
        carrying = f"{login}?next={quote(original.url, safe='')}"
        if len(carrying) <= LONGEST_SIGN_IN_ADDRESS:
            login = carrying
        else:
            # The sign-in page then leads to the home page: the address cannot come along.
            quiet.warning("long next", "an address of %d characters is too long to come back "
                          "to after signing in (host %r): the sign-in leads to the home page",
                          len(original.url), original.host)  # fmt: skip
    if request.args.get("redirect") == "1":
        return redirect(login)
    response = _answer(401)
    response.headers["Location"] = login
    return response


def _family() -> str:
    return current_app.config["SSO_REQUEST_HEADERS"]


def _log_unusable(answered: str) -> None:
    # What the on-call engineer needs to fix the proxy: which header, and which are expected.
    family = _family()
    reason = why_unusable(request.headers.get, family)
    # Kept apart by what was answered too: anyone can ask /auth/verify without the headers
    # and get the 401, which must not hide the signed-in people's 403s (a proxy set up wrong).
    quiet.warning(f"unusable {reason} {answered}", "/auth/verify cannot tell which request it "
                  "is asked about: %s (SSO_REQUEST_HEADERS = %r: the proxy must send %s); "
                  "answered %s (to %s)", reason, family,
                  " and ".join(REQUIRED_HEADERS[family]), answered,
                  request.remote_addr)  # fmt: skip


def _answer(status: int, headers: tuple = ()):
    # A bare Response: no template, no body, nothing to negotiate.
    return Response(b"", status, headers=[("Cache-Control", "no-store"), *headers])
