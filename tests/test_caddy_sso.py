"""Single sign-on through a real Caddy: the shipped deploy/Caddyfile with forward_auth.

The portal reads the Traefik/Caddy header family (SSO_REQUEST_HEADERS = "forwarded":
X-Forwarded-Method, -Proto, -Host, -Uri). Caddy (Debian's caddy, unprivileged, no admin
endpoint) runs deploy/Caddyfile itself with its docker-compose addresses replaced by loopback
ports; every attack is sent byte for byte (tests/proxies.py).
"""

from __future__ import annotations

import json
from contextlib import ExitStack

import pytest
import requests

from tests.proxies import (
    ENGINEERING_ONLY,
    Caddy,
    SampleApp,
    Stack,
    get,
    header_values,
    login_return_address,
    raw_request,
    seen_by_app,
    session_cookie,
    sign_in,
)
from tests.servers import Gunicorn, portal_environment, require_binary
from tests.test_nginx_sso import ESCAPED_LETTERS, OTHER_ESCAPES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(slapd, tmp_path_factory):
    """Caddy, the portal under gunicorn (forwarded headers) and the sample app."""
    caddy_binary = require_binary("caddy", "apt-get install caddy")
    environment = portal_environment(slapd.url)
    environment.update(
        PORTAL_SSO_REQUEST_HEADERS='"forwarded"',
        PORTAL_SSO_ALLOWED_DOMAINS='["127.0.0.1"]',
        PORTAL_ACCESS_RULES=json.dumps(ENGINEERING_ONLY),
    )
    with ExitStack() as cleanup:
        app = SampleApp()
        cleanup.callback(app.cleanup)
        app.start()
        portal = Gunicorn(tmp_path_factory.mktemp("caddy-gunicorn"), environment)
        cleanup.callback(portal.stop)
        portal.start()
        caddy = Caddy(caddy_binary, portal.port, app.port)
        cleanup.callback(caddy.cleanup)
        caddy.start()
        yield Stack(caddy, portal, app)


@pytest.fixture
def browser():
    """A fresh requests session: its own cookies, like one browser."""
    with requests.Session() as session:
        yield session


def test_anonymous_visitor_is_sent_to_the_login_page(stack, browser):
    """Caddy passes the portal's 302 (?redirect=1) to the browser, with the way back."""
    answer = get(browser, stack.url("/app/x?tab=1"))
    assert login_return_address(stack, answer) == stack.url("/app/x?tab=1")


def test_signed_in_person_reaches_the_app_with_identity_headers(stack, browser):
    """The app gets Remote-User and Remote-Groups from the portal's answer, not the client's."""
    sign_in(stack, browser, "alice")
    forged = {"Remote-User": "erin", "Remote-Groups": "portal-admins"}

    echo = seen_by_app(get(browser, stack.url("/app/x"), headers=forged), stack)

    assert header_values(echo, "Remote-User") == ["alice"]
    [groups] = header_values(echo, "Remote-Groups")
    assert set(groups.split(",")) == {"engineering", "staff"}
    assert "session=" not in "; ".join(header_values(echo, "Cookie"))


@pytest.mark.parametrize("path", ESCAPED_LETTERS)
def test_escaped_letters_are_judged_as_the_app_reads_them(stack, path):
    """Through Caddy too: bob is refused every spelling of /app/engineering/, alice let in."""
    with requests.Session() as alice, requests.Session() as bob:
        sign_in(stack, alice, "alice")
        sign_in(stack, bob, "bob")
        served = stack.app.requests_served()

        refused = raw_request(stack.proxy.port, path, {"Cookie": session_cookie(bob)})
        assert refused.status == 403, f"{path}: {refused.status}\n{stack.diagnostics()}"
        assert stack.app.requests_served() == served

        echo = seen_by_app(raw_request(stack.proxy.port, path, {"Cookie": session_cookie(alice)}),
                           stack)  # fmt: skip
        assert echo["decoded_path"].lower().startswith("/app/engineering/")
        assert header_values(echo, "Remote-User") == ["alice"]


@pytest.mark.parametrize("path", OTHER_ESCAPES)
def test_other_escapes_never_reach_the_app(stack, browser, path):
    """Any escape but a letter's, digit's or "-._~" is refused before the app, even for alice."""
    sign_in(stack, browser, "alice")
    served = stack.app.requests_served()

    answer = raw_request(stack.proxy.port, path, {"Cookie": session_cookie(browser)})

    assert answer.status in (400, 403), f"{path}: {answer.status}\n{stack.diagnostics()}"
    assert stack.app.requests_served() == served


def test_method_override_headers_never_reach_the_app(stack, browser):
    """Caddy removes X-HTTP-Method-Override and its cousins before the app."""
    sign_in(stack, browser, "alice")
    overrides = {
        "X-HTTP-Method-Override": "DELETE",
        "X-HTTP-Method": "DELETE",
        "X-Method-Override": "DELETE",
    }

    echo = seen_by_app(get(browser, stack.url("/app/x"), headers=overrides), stack)

    assert echo["method"] == "GET"
    for name in overrides:
        assert header_values(echo, name) == []
