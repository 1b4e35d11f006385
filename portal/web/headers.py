"""Security headers on every answer the portal sends, whatever its status.

Content-Security-Policy, X-Content-Type-Options, X-Frame-Options and Referrer-Policy are the
same for every response (assigned, so a view that sets its own cannot weaken them);
Strict-Transport-Security goes only on answers to requests that came over TLS; everything but
the static files themselves is marked ``Cache-Control: no-store``.
"""

from __future__ import annotations

import ipaddress
import logging
import re

from flask import Flask, request

log = logging.getLogger(__name__)

# A host name or IPv4 address CSP can name as is: anything else (an IPv6 literal, a stray
# ";" or space) would not match, or would end the directive and start another.
_CSP_HOST = re.compile(r"^[a-z0-9-]+(?:\.[a-z0-9-]+)*$")
# The no-store directive among a Cache-Control header's (RFC 9111 5.2: case-insensitive tokens).
_NO_STORE = re.compile(r"(?:^|,)\s*no-store\s*(?:,|$)", re.IGNORECASE)


def init_app(app: Flask) -> None:
    """Add the security headers to every response of the app, error pages included.

    Call it before any other extension registers an after_request function: Flask runs them
    in reverse order, so this one runs last and has the final word.
    """
    fixed = list(security_headers(app.config).items())
    names = frozenset(name.lower() for name, _ in fixed)
    hsts = f"max-age={app.config['HSTS_MAX_AGE']}"

    @app.after_request
    def add_security_headers(response):
        headers = response.headers
        if names.isdisjoint(name.lower() for name, _ in headers.items()):
            headers.extend(fixed)  # the usual case, in one step
        else:
            for name, value in fixed:  # a view set one of them: replaced, never weakened
                headers[name] = value
        # Over plain HTTP a browser ignores it, and a proxy in between could strip or forge it.
        if request.is_secure:
            headers["Strict-Transport-Security"] = hsts
        # Pages show who is signed in and what they may open: no shared or browser cache may
        # keep them. A view's own no-store (with more directives) stays; anything weaker goes.
        # Only a static file itself may be kept: the static route's 404 page names whoever is
        # signed in and holds their sign-out token, and a 404 may be cached by default.
        if (request.endpoint != "static" or response.status_code >= 400) and not _NO_STORE.search(
            headers.get("Cache-Control", "")
        ):
            headers["Cache-Control"] = "no-store"
        return response


def security_headers(config) -> dict[str, str]:
    """The headers every response carries, for these settings."""
    return {
        "Content-Security-Policy": content_security_policy(config),
        "X-Content-Type-Options": "nosniff",
        # For browsers that predate CSP's frame-ancestors.
        "X-Frame-Options": "DENY",
        # Same-origin requests keep their Referer: Flask-WTF refuses a form POST over HTTPS
        # without one (WTF_CSRF_SSL_STRICT), so "no-referrer" would break every form there.
        # Links to other hosts (the apps) get none, so portal addresses do not leak to them.
        "Referrer-Policy": "same-origin",
    }


def content_security_policy(config) -> str:
    """The Content-Security-Policy: the portal's own stylesheet and images, nothing inline.

    The portal serves no JavaScript, so no script may run at all. form-action names the
    portal and the SSO_ALLOWED_DOMAINS hosts: Chromium applies form-action to the redirect
    that follows a form's submission, and signing in redirects back to the app the person
    came from.
    """
    form_action = " ".join(["'self'", *_return_sources(config)])
    return "; ".join(
        [
            "default-src 'none'",
            "style-src 'self'",
            "img-src 'self'",
            f"form-action {form_action}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


def _return_sources(config) -> list[str]:
    # The same addresses portal.web.urls.safe_next lets a login return to: the host and its
    # subdomains, any port; https only unless the portal itself runs on plain HTTP (a CSP
    # "http" source also matches https).
    scheme = "https" if config["SESSION_COOKIE_SECURE"] else "http"
    sources = []
    for domain in config["SSO_ALLOWED_DOMAINS"]:
        host = domain.lower().strip(".")
        if not _CSP_HOST.match(host):
            log.warning(
                "SSO_ALLOWED_DOMAINS: %r cannot be named in the Content-Security-Policy; "
                "browsers may block the return there after signing in",
                domain,
            )
            continue
        sources.append(f"{scheme}://{host}:*")
        if not _is_ip_address(host):
            sources.append(f"{scheme}://*.{host}:*")
    return sources


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
