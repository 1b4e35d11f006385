"""Security headers on every answer and __Host-/__Secure- cookie names, against real slapd."""

from __future__ import annotations

import functools
from html.parser import HTMLParser

import pytest
from flask import make_response
from flask_login import logout_user

from portal.settings import ConfigError
from portal.testing.slapd import free_port
from tests.conftest import AuthActions

HTTPS = "https://localhost"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# What nginx's auth_request says is being opened.
ORIGINAL = {"X-Original-URL": "http://localhost/app/", "X-Original-Method": "GET"}
EVERY_RESPONSE = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"  # the expiry of a removed cookie


class Https:
    """A test client speaking HTTPS, with the same-origin Referer a browser sends on a POST.

    Flask-WTF refuses a form POST over HTTPS without one; Referrer-Policy: same-origin keeps it.
    """

    def __init__(self, client, origin: str = HTTPS):
        self.client = client
        self.origin = origin

    def get(self, path: str, **kwargs):
        """GET over HTTPS."""
        return self.client.get(path, base_url=self.origin, **kwargs)

    def post(self, path: str, **kwargs):
        """POST over HTTPS, as sent from one of the portal's own pages."""
        headers = {"Referer": self.origin + "/login", **kwargs.pop("headers", {})}
        return self.client.post(path, base_url=self.origin, headers=headers, **kwargs)


@pytest.fixture
def app_with(slapd, build_app):
    """Build the portal against the shared directory with overrides."""
    return functools.partial(build_app, slapd)


def with_test_routes(application):
    """Add routes for this file only: a crash, views that set headers, Flask-Login's logout."""

    def crash():
        raise RuntimeError("an unexpected bug")

    def weak_headers():
        response = make_response("weak")
        response.headers["Content-Security-Policy"] = "default-src *"
        response.headers["X-Frame-Options"] = "ALLOWALL"
        response.headers["Referrer-Policy"] = "unsafe-url"
        response.headers["Cache-Control"] = "public, max-age=600"
        return response

    def own_no_store():
        return "kept", {"Cache-Control": "no-store, private"}

    def forget():
        logout_user()  # Flask-Login's own removal of the remember-me cookie
        return "forgotten"

    for rule, view in [
        ("/test/crash", crash),
        ("/test/weak-headers", weak_headers),
        ("/test/own-no-store", own_no_store),
        ("/test/forget", forget),
    ]:
        application.add_url_rule(rule, view.__name__, view)
    return application


@pytest.fixture
def app(app_with):
    """The demo portal with the routes above."""
    # A crash must become the 500 page, as in production, instead of reaching the test.
    return with_test_routes(app_with(PROPAGATE_EXCEPTIONS=False))


@pytest.fixture
def client(app):
    """A plain-HTTP test client of the app above."""
    return app.test_client()


@pytest.fixture
def auth(client):
    """Sign-in helper bound to that client."""
    return AuthActions(client)


def assert_security_headers(response, *, stored: bool = False) -> None:
    """The fixed headers are exactly ours; no-store unless the answer may be stored."""
    for name, value in EVERY_RESPONSE.items():
        assert response.headers.getlist(name) == [value], name
    if stored:
        assert "no-store" not in response.headers.get("Cache-Control", "")
    else:
        assert response.headers.getlist("Cache-Control") == ["no-store"]


def directory_down(client, auth, app_with):
    """A login while no directory server answers: 503."""
    down = app_with(LDAP_URLS=[f"ldap://127.0.0.1:{free_port()}"], LDAP_CONNECT_TIMEOUT=1)
    return AuthActions(down.test_client()).login("alice")


def signed_in_as(name: str, path: str, **kwargs):
    """A request maker that signs in as `name` first, then GETs a path."""

    def request(client, auth, app_with):
        assert auth.login(name).status_code == 302
        return client.get(path, **kwargs)

    return request


ANSWERS = {
    "200 login page": (200, lambda client, auth, app_with: client.get("/login")),
    "302 home to login": (302, lambda client, auth, app_with: client.get("/")),
    "400 form without CSRF token": (400, lambda client, auth, app_with: client.post("/login")),
    "401 verify, nobody signed in": (
        401,
        lambda client, auth, app_with: client.get("/auth/verify", headers=ORIGINAL),
    ),
    "403 page of another group": (403, signed_in_as("bob", "/pages/engineering")),
    "403 metrics from afar": (
        403,
        lambda client, auth, app_with: client.get(
            "/metrics", environ_base={"REMOTE_ADDR": "192.0.2.9"}
        ),
    ),
    "404": (404, lambda client, auth, app_with: client.get("/no/such/page")),
    "405": (405, lambda client, auth, app_with: client.put("/logout")),
    "413": (
        413,
        lambda client, auth, app_with: client.post("/login", data={"username": "x" * 20000}),
    ),
    "500 unexpected exception": (500, lambda client, auth, app_with: client.get("/test/crash")),
    "503 directory down": (503, directory_down),
    "healthz": (200, lambda client, auth, app_with: client.get("/healthz")),
    "readyz": (200, lambda client, auth, app_with: client.get("/readyz")),
    "metrics": (200, lambda client, auth, app_with: client.get("/metrics")),
    "verify, signed in": (200, signed_in_as("alice", "/auth/verify", headers=ORIGINAL)),
    "home, signed in": (200, signed_in_as("alice", "/")),
    "admin status": (200, signed_in_as("erin", "/admin/status")),
}


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_every_answer_carries_the_security_headers(client, auth, app_with, answer):
    """Whatever the status, error pages and probes included: CSP, nosniff, DENY, no-store."""
    status, send = ANSWERS[answer]
    response = send(client, auth, app_with)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert_security_headers(response)
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP


def test_static_files_carry_the_headers_and_stay_cacheable(client, auth):
    """The stylesheet gets nosniff and the CSP but no no-store, even for a signed-in person."""
    auth.login("alice")
    response = client.get("/static/portal.css")
    assert response.status_code == 200
    assert response.mimetype == "text/css"
    assert_security_headers(response, stored=True)
    assert response.headers["ETag"]
    again = client.get("/static/portal.css", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    assert_security_headers(again, stored=True)


def test_the_static_routes_error_pages_are_not_stored(client, auth):
    """A missing file under /static/ for a signed-in person is the portal's 404 page, with her
    name and her sign-out token on it: no-store like every page (it had no Cache-Control, and
    a 404 may be kept by a cache by default); so for a method the route refuses."""
    auth.login("alice")
    missing = client.get("/static/no-such-file.css")
    assert missing.status_code == 404
    assert "Alice" in missing.get_data(as_text=True)
    assert_security_headers(missing)
    refused = client.post("/static/portal.css")
    assert refused.status_code in (400, 405)
    assert_security_headers(refused)


def test_a_view_cannot_weaken_the_headers_but_keeps_its_own_no_store(client):
    """Headers a view sets are replaced when weaker; its own no-store (with more) stays."""
    weak = client.get("/test/weak-headers")
    assert weak.get_data(as_text=True) == "weak"
    assert_security_headers(weak)
    assert client.get("/test/own-no-store").headers.getlist("Cache-Control") == [
        "no-store, private"
    ]


def test_verify_keeps_its_identity_headers(client, auth):
    """/auth/verify's Remote-* answer passes through untouched, next to the security headers."""
    auth.login("alice")
    response = client.get("/auth/verify", headers=ORIGINAL)
    assert response.status_code == 200
    assert response.headers["Remote-User"] == "alice"
    assert response.headers["Remote-Groups"] == "engineering,staff"
    assert response.headers["Remote-Name"] == "Alice Liddell"
    assert response.headers["Remote-Email"] == "alice@example.org"
    assert_security_headers(response)


@pytest.mark.parametrize(
    "name, path",
    [
        ("alice", "/"),
        ("alice", "/pages/handbook"),
        ("alice", "/login"),  # signed in: sent on home
        ("erin", "/admin/status"),
        ("erin", "/admin/users/alice"),
        ("erin", "/pages/admin-guide"),
    ],
)
def test_pages_for_a_signed_in_person_are_never_stored(client, auth, name, path):
    """Personal pages and admin pages: Cache-Control: no-store."""
    auth.login(name)
    response = client.get(path)
    assert response.status_code in (200, 302)
    assert response.headers.getlist("Cache-Control") == ["no-store"]


def test_hsts_only_over_https(app_with):
    """Strict-Transport-Security on answers to HTTPS requests (any status), never over HTTP."""
    app = app_with(SESSION_COOKIE_SECURE=True)
    client = app.test_client()
    for path in ("/login", "/no/such/page", "/static/portal.css", "/healthz"):
        assert client.get(path, base_url=HTTPS).headers["Strict-Transport-Security"] == (
            "max-age=31536000"
        )
        assert "Strict-Transport-Security" not in client.get(path).headers


def test_hsts_max_age_is_a_setting(app_with):
    """HSTS_MAX_AGE tunes it (0 makes browsers forget it); it must be whole seconds."""
    for seconds in (600, 0):
        client = app_with(HSTS_MAX_AGE=seconds).test_client()
        response = client.get("/login", base_url=HTTPS)
        assert response.headers["Strict-Transport-Security"] == f"max-age={seconds}"
    for wrong in (-1, "1 year", True):
        with pytest.raises(ConfigError, match="HSTS_MAX_AGE"):
            app_with(HSTS_MAX_AGE=wrong)


@pytest.mark.parametrize(
    "secure, scheme", [(True, "https"), (False, "http")], ids=["https", "plain-http"]
)
def test_form_action_lets_a_login_return_to_the_allowed_apps(app_with, secure, scheme):
    """Browsers check form-action on the redirect after a form: SSO_ALLOWED_DOMAINS are in it."""
    app = app_with(
        SESSION_COOKIE_SECURE=secure,
        SSO_ALLOWED_DOMAINS=["Example.org", "127.0.0.1", "bad;domain", "::1"],
    )
    client = Https(app.test_client()) if secure else app.test_client()
    directives = parse_csp(client.get("/login").headers["Content-Security-Policy"])
    assert directives["form-action"] == [
        "'self'",
        f"{scheme}://example.org:*",
        f"{scheme}://*.example.org:*",
        f"{scheme}://127.0.0.1:*",
    ]
    # Names CSP cannot hold are left out, never pasted in as a directive of their own.
    assert set(directives) == {
        "default-src",
        "style-src",
        "img-src",
        "form-action",
        "frame-ancestors",
        "base-uri",
    }
    back = f"{scheme}://wiki.example.org:8443/x"
    assert AuthActions(client).login("alice", next=back).headers["Location"] == back


def parse_csp(header: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as {directive: [sources]}."""
    directives = {}
    for part in header.split(";"):
        name, *sources = part.split()
        assert name not in directives, f"{name} twice"
        directives[name] = sources
    return directives


class PageResources(HTMLParser):
    """What a page would ask its CSP for: inline code, style and the addresses it loads."""

    def __init__(self):
        super().__init__()
        self.inline: list[str] = []  # needs 'unsafe-inline', which the CSP never grants
        self.loads: list[tuple[str, str]] = []  # (directive, address)
        self.open_tag = None

    def handle_starttag(self, tag, attrs):
        """Record each element's inline code and the addresses it loads."""
        attributes = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.inline.append(f"<{tag} {name}=...> (script-src)")
            if name == "style":
                self.inline.append(f"<{tag} style=...> (style-src)")
            if name in ("href", "src", "action") and (value or "").lower().startswith(
                "javascript:"
            ):
                self.inline.append(f"<{tag} {name}=javascript:...> (script-src)")
        if tag == "style":
            self.inline.append("<style> (style-src)")
        elif tag == "script":
            if "src" in attributes:
                self.loads.append(("script-src", attributes["src"]))
            else:
                self.inline.append("<script> (script-src)")
        elif tag == "link" and "stylesheet" in (attributes.get("rel") or "").split():
            self.loads.append(("style-src", attributes["href"]))
        elif tag == "img":
            self.loads.append(("img-src", attributes["src"]))
        elif tag == "form":
            # No action: the form posts to the page's own address.
            self.loads.append(("form-action", attributes.get("action") or "/"))
        elif tag == "base":
            self.loads.append(("base-uri", attributes.get("href") or "/"))


def allowed(directives: dict[str, list[str]], directive: str, address: str) -> bool:
    """Whether the CSP lets the page use a same-origin address for that directive."""
    # Fetch directives fall back to default-src; form-action and base-uri do not.
    fallback = directive.endswith("-src")
    sources = directives.get(directive, directives["default-src"] if fallback else ["*"])
    same_origin = address.startswith("/") and not address.startswith("//")
    return same_origin and "'self'" in sources


PAGES = {
    "login": (None, "/login"),
    "login, signed out": (None, "/login?signed_out=1"),
    "error": (None, "/no/such/page"),
    "home": ("alice", "/"),
    "a page": ("alice", "/pages/handbook"),
    "a template page": ("erin", "/pages/admin-guide"),
    "error, signed in": ("bob", "/pages/engineering"),
    "admin status": ("erin", "/admin/status"),
    "admin user": ("erin", "/admin/users/alice"),
}


@pytest.mark.parametrize("page", list(PAGES))
def test_every_template_works_under_its_own_policy(client, auth, page):
    """No inline script or style in any page, and the stylesheet and forms it uses are allowed."""
    name, path = PAGES[page]
    if name:
        auth.login(name)
    response = client.get(path)
    assert response.mimetype == "text/html"
    directives = parse_csp(response.headers["Content-Security-Policy"])
    resources = PageResources()
    resources.feed(response.get_data(as_text=True))
    assert resources.inline == []
    blocked = [(d, a) for d, a in resources.loads if not allowed(directives, d, a)]
    assert blocked == []
    stylesheets = [address for directive, address in resources.loads if directive == "style-src"]
    assert stylesheets, "the page is unstyled"
    for address in stylesheets:
        assert client.get(address).mimetype == "text/css"


def cookie(response, name: str) -> tuple[str, dict[str, str]]:
    """The one Set-Cookie for `name`: its value and attributes (keys lower-cased)."""
    (header,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(name + "=")]
    pair, *parts = header.split(";")
    attributes = {}
    for part in parts:
        key, _, value = part.strip().partition("=")
        attributes[key.lower()] = value
    return pair.partition("=")[2], attributes


@pytest.mark.parametrize(
    "overrides, session_name, remember_name",
    [
        ({"SESSION_COOKIE_SECURE": True}, "__Host-portal-session", "__Host-portal-remember"),
        (
            {"SESSION_COOKIE_SECURE": True, "SESSION_COOKIE_DOMAIN": ".example.org"},
            "__Secure-portal-session",
            "__Secure-portal-remember",
        ),
        (
            {"SESSION_COOKIE_SECURE": True, "APPLICATION_ROOT": "/portal"},
            "__Secure-portal-session",
            "__Host-portal-remember",
        ),
        (
            {"SESSION_COOKIE_SECURE": True, "SESSION_COOKIE_NAME": "corp-sso"},
            "corp-sso",
            "__Host-portal-remember",
        ),
        (
            {"SESSION_COOKIE_SECURE": True, "REMEMBER_COOKIE_NAME": "__Host-corp-remember"},
            "__Host-portal-session",
            "__Host-corp-remember",
        ),
    ],
    ids=["https", "parent-domain", "sub-path", "chosen-name", "chosen-prefixed"],
)
def test_cookie_names_follow_the_settings(app_with, overrides, session_name, remember_name):
    """__Host- when Secure, host-only and at /; __Secure- otherwise; names set by hand stay."""
    app = app_with(**overrides)
    assert app.config["SESSION_COOKIE_NAME"] == session_name
    assert app.config["REMEMBER_COOKIE_NAME"] == remember_name


@pytest.mark.parametrize(
    "overrides, key",
    [
        (
            {
                "SESSION_COOKIE_SECURE": True,
                "SESSION_COOKIE_DOMAIN": ".example.org",
                "SESSION_COOKIE_NAME": "__Host-corp",
            },
            "SESSION_COOKIE_NAME",
        ),
        ({"REMEMBER_COOKIE_NAME": "__secure-corp"}, "REMEMBER_COOKIE_NAME"),
    ],
    ids=["host-with-domain", "secure-on-plain-http"],
)
def test_a_chosen_prefix_the_cookie_cannot_satisfy_stops_start_up(app_with, overrides, key):
    """Browsers would drop such a cookie silently, so nobody could sign in: refuse to start."""
    with pytest.raises(ConfigError, match=key):
        app_with(**overrides)


def test_secure_sign_in_uses_host_prefixed_cookies_end_to_end(app_with):
    """Over HTTPS: __Host- cookies (Secure, HttpOnly, Lax, Path=/, no Domain) that work."""
    client = Https(app_with(SESSION_COOKIE_SECURE=True).test_client())
    auth = AuthActions(client)
    response = auth.login("alice", remember=True)
    assert response.status_code == 302
    for name in ("__Host-portal-session", "__Host-portal-remember"):
        value, attributes = cookie(response, name)
        assert value
        assert {"secure", "httponly", "path", "samesite"} <= set(attributes), name
        assert attributes["path"] == "/"
        assert attributes["samesite"] == "Lax"
        assert "domain" not in attributes
    assert not [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]

    assert client.get("/").status_code == 200
    # The browser was closed: the remember-me cookie signs alice in again.
    client.client.delete_cookie("__Host-portal-session")
    assert client.get("/").status_code == 200

    signed_out = auth.logout()
    assert signed_out.status_code == 302
    for name in ("__Host-portal-session", "__Host-portal-remember"):
        # A removal browsers accept for a __Host- cookie: Secure, Path=/, no Domain.
        _, attributes = cookie(signed_out, name)
        assert attributes["expires"] == EPOCH
        assert "secure" in attributes and attributes["path"] == "/" and "domain" not in attributes
    assert client.get("/").status_code == 302


def test_parent_domain_cookies_are_secure_prefixed(app_with):
    """With SESSION_COOKIE_DOMAIN the __Host- prefix is impossible: __Secure-, for the domain."""
    app = app_with(
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_DOMAIN=".example.org",
        SERVER_NAME="portal.example.org",
    )
    client = Https(app.test_client(), "https://portal.example.org")
    response = AuthActions(client).login("alice", remember=True)
    assert response.status_code == 302
    for name in ("__Secure-portal-session", "__Secure-portal-remember"):
        _, attributes = cookie(response, name)
        assert "secure" in attributes
        assert attributes["domain"] == "example.org"
    assert client.get("/").status_code == 200


def test_flask_logins_own_removal_of_the_remember_cookie_is_secure(app_with):
    """logout_user() (or a failed session protection check) removes a __Host- cookie for real."""
    client = Https(with_test_routes(app_with(SESSION_COOKIE_SECURE=True)).test_client())
    AuthActions(client).login("alice", remember=True)
    response = client.get("/test/forget")
    _, attributes = cookie(response, "__Host-portal-remember")
    assert attributes["expires"] == EPOCH
    assert "secure" in attributes
    assert attributes["path"] == "/"


def test_development_sign_in_keeps_plain_cookie_names_and_gets_the_headers(auth):
    """Plain-HTTP development: session and remember_token (prefixes need Secure); headers too."""
    response = auth.login("alice", remember=True)
    for name in ("session", "remember_token"):
        _, attributes = cookie(response, name)
        assert "secure" not in attributes
    # Every answer carries the headers, the login redirect included.
    assert_security_headers(response)
