"""The fast path: a signed-in person's everyday requests, answered before Flask is entered.

`/auth/verify` runs before every request to every app behind the proxy, and a person's pages
are opened again and again; through Flask each costs a request context, Flask-Login, the
before/after hooks and, for a page, a template. This WSGI middleware answers the common case
itself with the same parts Flask would use, and hands everything else to Flask unchanged:

- **What it checks, every time**: the session cookie (verified once per distinct value by
  `PortalSessionInterface.verified`, its age checked on each use), the login id in it (expiry,
  revocation marks, password stamp, an active person: `accounts.load_cached`, which counts the
  same metrics), and session protection (the client fingerprint must be the session's).
- **/auth/verify** for such a person whose question the rules allow (and `?group=` / `?fresh=`
  too): the 200 with the identity headers, exactly as the view answers it.
- **Pages** (home and configured pages): the very response Flask gave for the same session
  cookie, path, host, scheme and language, while the person's cache entry is the same text, so
  the same groups and the same decisions. Flask marks a response storable only when it is a 200
  of one of those views that changed nothing in the session (no flashed message shown).

Anything else (no or an unusable session, a remember-me cookie to restore, a moved client, a
cache miss, a refusal to audit, another path or method) goes to Flask as if the fast path did
not exist; a login it already loaded is handed over (`accounts.LOADED`), so nothing is read or
counted twice. tests/test_fastpath.py compares both paths response for response.
"""

from __future__ import annotations

import threading
from urllib.parse import parse_qs

from flask import Flask
from werkzeug.sansio.http import parse_cookie

from .. import accounts
from ..main.views import STORABLE
from ..signin.sessions import fingerprint
from ..sso.questions import identity_of, identity_settings, read_original
from . import headers
from .request_guard import MARK

#: Stored page responses each process keeps.
PAGES_KEPT = 2048
_VERIFY = "/auth/verify"


class FastPath:
    """WSGI middleware in front of the Flask app (inside ProxyFix and the request guard)."""

    def __init__(self, app: Flask, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app
        config = app.config
        self.session_cookie = config["SESSION_COOKIE_NAME"]
        self.remember_cookie = config["REMEMBER_COOKIE_NAME"]
        self.protection = config["SESSION_PROTECTION"] in ("basic", "strong")
        self.family = config["SSO_REQUEST_HEADERS"]
        self.fixed = list(headers.security_headers(config).items())
        self.identity = identity_settings(config)
        self.hsts = ("Strict-Transport-Security", f"max-age={config['HSTS_MAX_AGE']}")
        self.pages: dict[tuple, tuple[str, list, bytes]] = {}
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        """Answer from the fast path when it can, else let Flask answer."""
        path = environ.get("PATH_INFO", "")
        # Only where a signed-in person's answer can be given: other paths (static files,
        # probes, forms) never load anyone here.
        wanted = path == _VERIFY or path == "/" or path.startswith("/pages/")
        if not wanted or environ.get("REQUEST_METHOD") != "GET" or MARK in environ:
            return self.wsgi_app(environ, start_response)
        try:
            signed_in = self._signed_in(environ)
        except Exception:  # noqa: BLE001 - whatever it is, Flask answers it (and handles it)
            signed_in = None
        if signed_in is None:
            return self.wsgi_app(environ, start_response)
        user, fresh, cookie = signed_in
        if path == _VERIFY:
            answer = self._verify(environ, user, fresh)
        else:
            key = self._page_key(environ, cookie)
            answer = self.pages.get(key)
            if answer is None:
                return self._flask_storing(environ, start_response, key)
        if answer is None:
            return self.wsgi_app(environ, start_response)
        status, response_headers, body = answer
        start_response(status, response_headers)
        return [body]

    def _signed_in(self, environ):
        # (active User, fresh, session cookie) for a request whose session holds a login the
        # cache vouches for; None for anything Flask must see itself.
        # Werkzeug's own request parser (as Flask reads request.cookies): no decoding that a
        # stray byte in another app's cookie could break.
        value = parse_cookie(environ.get("HTTP_COOKIE")).get(self.session_cookie)
        if not value:
            return None
        known = self.app.session_interface.verified(self.app, value)
        if known is None:
            return None
        data, _ = known
        login_id = data.get("_user_id")
        if login_id is None or "_remember" in data or "_flashes" in data:
            return None
        if self.protection and data.get("_id") != fingerprint(
            environ.get("REMOTE_ADDR"), environ.get("HTTP_USER_AGENT", "")
        ):
            return None  # a moved session: Flask-Login demotes or drops it
        loaded = accounts.load_cached(accounts.app_state(self.app), login_id)
        # Whatever Flask does next with this request, it gets this login as the cache gave it
        # (read and counted once): on a miss it reads the directory; with no user,
        # Flask-Login tries the remember-me cookie or answers as to nobody.
        environ[accounts.LOADED] = (login_id, loaded)
        if loaded.user is None:
            return None
        environ[accounts.ENTRY] = loaded.entry
        return loaded.user, data.get("_fresh", False), value

    def _verify(self, environ, user, fresh: bool):
        # The view's 200, or None for every other answer (the view gives it, with its audit).
        original = read_original(lambda name: environ.get(_environ_name(name)), self.family)
        if original is None:
            return None
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        rules = self.app.extensions["portal.rules"]
        if not rules.decide(user.groups, original.host, original.path, original.method).allowed:
            return None
        demanded = _first(query, "group")
        if demanded and not user.in_any_group([demanded]):
            return None
        if _first(query, "fresh") == "1" and not fresh:
            return None
        identity = identity_of(user, self.identity)
        if identity is None:
            return None
        answer = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", "0"),
            ("Cache-Control", "no-store"),
            *identity,
            *self.fixed,
        ]
        if environ.get("wsgi.url_scheme") in ("https", "wss"):  # as request.is_secure
            answer.append(self.hsts)
        answer.append(("Vary", "Cookie"))
        return "200 OK", answer, b""

    def _page_key(self, environ, cookie: str) -> tuple:
        # Everything a stored page's bytes depend on besides static settings: the session
        # (login, CSRF and sign-out tokens), the person's cache entry (groups, name), the
        # address, and the language the browser asks for.
        return (
            cookie,
            self.app.session_interface.generation,  # pages signed tokens with these keys
            environ.get(accounts.ENTRY),
            environ.get("SCRIPT_NAME", ""),
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            environ.get("HTTP_HOST", ""),
            environ.get("wsgi.url_scheme"),
            environ.get("HTTP_ACCEPT_LANGUAGE", ""),
        )

    def _flask_storing(self, environ, start_response, key: tuple):
        # Let Flask answer, and keep the answer when Flask says it may be given again.
        seen: dict = {}

        def capture(status, response_headers, exc_info=None):
            seen["status"], seen["headers"] = status, list(response_headers)
            return start_response(status, response_headers, exc_info)

        body = self.wsgi_app(environ, capture)
        storable = (
            environ.get(STORABLE)
            and seen.get("status", "").startswith("200")
            and not any(name.lower() == "set-cookie" for name, _ in seen.get("headers", ()))
        )
        if not storable:
            return body
        try:
            data = b"".join(body)
        finally:
            if hasattr(body, "close"):
                body.close()
        with self._lock:
            if len(self.pages) >= PAGES_KEPT:
                self.pages.clear()  # bounded: pages in use are rendered again, once
            self.pages[key] = (seen["status"], seen["headers"], data)
        return [data]


def _environ_name(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def _first(query: dict, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None
