"""The fast path (portal/web/fastpath.py) answers exactly as Flask would, and only when it may.

Each case sends the same request through the whole app (fast path first) and through Flask
alone, and compares status, headers and body; the metrics and the directory traffic show that
nothing is read or counted twice. Real slapd throughout.
"""

from __future__ import annotations

import io

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder

from tests.conftest import AuthActions, make_app
from tests.test_metrics import scrape
from tests.test_sessions import signed_in

RULES = [
    {"paths": ["/app/engineering/"], "groups": ["engineering"], "policy": "allow"},
    {"paths": ["/app/engineering/"], "policy": "deny"},
]


@pytest.fixture
def app(slapd):
    """The portal with the engineering rule."""
    application = make_app(slapd, ACCESS_RULES=RULES)
    yield application
    application.extensions["portal.directory"].close()


def call(wsgi, environ: dict) -> tuple[str, list, bytes]:
    """One WSGI call: status, headers, body."""
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen.update(status=status, headers=headers)

    environ = dict(environ, **{"wsgi.input": io.BytesIO(b"")})
    body = b"".join(wsgi(environ, start_response))
    return seen["status"], sorted(seen["headers"]), body


def request_of(client, path: str, **headers) -> dict:
    """The environ a browser holding the client's cookies would send."""
    cookie = "; ".join(f"{c.key}={c.value}" for c in client._cookies.values())
    headers = {"Cookie": cookie, "User-Agent": client.environ_base["HTTP_USER_AGENT"], **headers}
    environ = EnvironBuilder(path=path, headers=headers).get_environ()
    environ.update(client.environ_base)
    return environ


def flask_only(app):
    """Flask itself, without the middleware in front of it."""
    return lambda environ, start_response: Flask.wsgi_app(app, environ, start_response)


ORIGINAL = {"X-Original-Method": "GET"}


@pytest.mark.parametrize(
    ("who", "path", "headers"),
    [
        ("alice", "/auth/verify", {**ORIGINAL, "X-Original-URL": "http://h.example/app/x"}),
        ("alice", "/auth/verify?group=engineering",
         {**ORIGINAL, "X-Original-URL": "https://h.example/app/engineering/"}),
        ("alice", "/auth/verify?fresh=1", {**ORIGINAL, "X-Original-URL": "http://h/app/x"}),
        ("bob", "/auth/verify", {**ORIGINAL, "X-Original-URL": "http://h.example/app/engineering/"}),
        ("bob", "/auth/verify?group=engineering", {**ORIGINAL, "X-Original-URL": "http://h/x"}),
        ("bob", "/auth/verify", {}),
        ("alice", "/", {}),
        ("alice", "/pages/handbook", {}),
        ("bob", "/pages/engineering", {}),
        ("erin", "/", {}),
    ],
)  # fmt: skip
def test_the_fast_path_answers_exactly_as_flask_does(app, who, path, headers):
    """Twice (the second time a page is given from store): the same status, headers, body."""
    client = signed_in(app, who)
    environ = request_of(client, path, **headers)
    expected = call(flask_only(app), environ)
    assert call(app.wsgi_app, environ) == expected
    assert call(app.wsgi_app, environ) == expected


def test_a_cached_verify_and_a_stored_page_never_enter_flask(app, ldap_spy):
    """No Flask request hook runs and no LDAP operation is sent for them."""
    entered = []
    app.before_request(lambda: entered.append(1))
    client = signed_in(app, "alice")
    verify = request_of(client, "/auth/verify", **ORIGINAL, **{"X-Original-URL": "http://h/x"})
    page = request_of(client, "/pages/handbook")
    call(app.wsgi_app, page)  # rendered by Flask, and stored
    entered.clear()
    ldap_spy.reset()
    for _ in range(5):
        assert call(app.wsgi_app, verify)[0] == "200 OK"
        assert call(app.wsgi_app, page)[0] == "200 OK"
    assert entered == []
    assert ldap_spy.operations == 0


def test_each_request_is_counted_once_whichever_path_answers(app):
    """A page rendered by Flask after the fast path read the login, and one given from store,
    each count one cache hit and one cached user load."""
    client = signed_in(app, "alice")
    before = scrape(app)
    call(app.wsgi_app, request_of(client, "/pages/handbook"))  # fast path reads, Flask renders
    call(app.wsgi_app, request_of(client, "/pages/handbook"))  # from store
    call(app.wsgi_app, request_of(client, "/pages/nowhere"))  # fast path reads, Flask's 404
    after = scrape(app)
    assert after.delta(before, "portal_cache_requests_total", result="hit") == 3
    assert after.delta(before, "portal_user_loads_total", source="cache") == 3


def test_a_stored_page_follows_the_directory_once_the_entry_changes(own_slapd):
    """alice joins finance; once her entry is read again (here an admin flush) her home page
    lists the Finance reports, although it was stored before."""
    app = make_app(own_slapd)
    client = signed_in(app, "alice")
    assert "Finance reports" not in client.get("/").get_data(as_text=True)
    assert "Finance reports" not in client.get("/").get_data(as_text=True)  # from store
    own_slapd.modify(
        "dn: cn=finance,ou=groups,dc=example,dc=org\nchangetype: modify\n"
        "add: member\nmember: uid=alice,ou=people,dc=example,dc=org\n"
    )
    assert "Finance reports" not in client.get("/").get_data(as_text=True), "cached: the TTL"
    with app.app_context():
        from portal import accounts

        accounts.forget("alice")
    # Another request (an app's question) reads her entry again first; the page then comes
    # from the cache, not from the directory.
    assert (
        client.get("/auth/verify", headers={**ORIGINAL, "X-Original-URL": "http://h/x"}).status_code
        == 200
    )
    assert "Finance reports" in client.get("/").get_data(as_text=True)
    assert client.get("/pages/finance").status_code == 200
    app.extensions["portal.directory"].close()


def test_a_flashed_message_is_shown_once_and_never_stored(app):
    """A page that shows a flashed message changes the session: it is not given again."""
    client = signed_in(app, "alice")
    client.get("/")  # stored without a message
    with client.session_transaction() as session:
        session["_flashes"] = [("message", "The cache entry of alice was dropped.")]
    assert "was dropped" in client.get("/").get_data(as_text=True)
    assert "was dropped" not in client.get("/").get_data(as_text=True)


def test_a_signed_out_session_is_not_served_from_store(app):
    """A stored page is given only while the login stands: a copy of the cookie after sign-out
    gets the login page."""
    browser = signed_in(app, "alice")
    copy = app.test_client()
    copy.set_cookie("session", browser.get_cookie("session").value)
    assert copy.get("/").status_code == 200
    assert copy.get("/").status_code == 200  # from store
    AuthActions(browser).logout()
    assert copy.get("/").status_code == 302
    assert (
        copy.get("/auth/verify", headers={**ORIGINAL, "X-Original-URL": "http://h/x"}).status_code
        == 401
    )


def test_other_paths_never_load_anyone(app):
    """Static files and probes: the fast path leaves them to Flask, which does not load the
    person either (nothing counted, nothing read)."""
    client = signed_in(app, "alice")
    before = scrape(app)
    for path in ("/static/portal.css", "/healthz", "/metrics"):
        call(app.wsgi_app, request_of(client, path))
    after = scrape(app)
    assert after.delta(before, "portal_cache_requests_total", result="hit") == 0
    assert after.delta(before, "portal_user_loads_total", source="cache") == 0


def test_a_stored_page_is_not_given_after_a_key_rotation(app):
    """Pages hold a sign-out token signed with the key of their time: after SECRET_KEY changes
    (the old one a fallback), the page is made again and its sign-out works."""
    client = signed_in(app, "alice")
    client.get("/")
    client.get("/")  # stored
    old = app.secret_key
    app.secret_key = app.config["SECRET_KEY"] = "rotated-secret-key-" + "c" * 32
    app.config["SECRET_KEY_FALLBACKS"] = [old]
    page = client.get("/").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302, "signed out"


def test_a_stray_byte_in_another_cookie_breaks_nothing(app):
    """An app behind the proxy sets a Latin-1 cookie: the portal still answers normally."""
    client = signed_in(app, "alice")
    environ = request_of(client, "/")
    environ["HTTP_COOKIE"] += "; legacy=Jos\xe9"
    assert call(app.wsgi_app, environ)[0] == "200 OK"
    verify = request_of(client, "/auth/verify", **ORIGINAL, **{"X-Original-URL": "http://h/x"})
    verify["HTTP_COOKIE"] = "legacy=\xff; " + verify["HTTP_COOKIE"]
    assert call(app.wsgi_app, verify)[0] == "200 OK"
