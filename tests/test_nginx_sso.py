"""Single sign-on through a real nginx: the shipped deploy/nginx/portal.conf with auth_request.

nginx (Debian nginx-light, unprivileged, from a temporary folder) stands in front of the portal
under gunicorn and of the sample app deploy/upstream/app.py, which echoes each request it gets
as JSON, so a test sees exactly what an app behind the proxy is told.

The nginx configuration is deploy/nginx/portal.conf itself: its docker-compose addresses
(portal:8000, upstream:8080, listen 80) are replaced by loopback ports, and a minimal nginx.conf
written here supplies what a packaged nginx.conf would (events, http, temporary paths and logs
in the temporary folder, since a non-root nginx cannot write /var/lib/nginx or /var/log/nginx).
"""

from __future__ import annotations

import html
import http.client
import json
import re
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from portal.testing.process import ChildServer, accepts_connections
from portal.testing.slapd import free_port
from tests.conftest import PASSWORDS, csrf_token_in
from tests.servers import ROOT, Gunicorn, portal_environment, require_binary

pytestmark = pytest.mark.slow

NGINX_CONF = ROOT / "deploy" / "nginx" / "portal.conf"
SAMPLE_APP = ROOT / "deploy" / "upstream" / "app.py"
# Only engineering may open /app/engineering/; everything else is open to any portal user.
ENGINEERING_ONLY = [
    {"paths": ["/app/engineering/"], "groups": ["engineering"], "policy": "allow"},
    {"paths": ["/app/engineering/"], "policy": "deny"},
]
_NEXT_FIELD = re.compile(r'name="next" type="hidden" value="([^"]*)"')

# What a packaged nginx.conf provides around the included file, with every path nginx writes
# to (logs, temporary files; the pid file comes with -g) inside the temporary folder.
WRAPPER = """\
# Written by tests/test_nginx_sso.py around the rendered deploy/nginx/portal.conf.
worker_processes 1;
events {{
    worker_connections 256;
}}
http {{
    access_log {work}/access.log;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {work}/portal.conf;
}}
"""


def render_nginx_config(portal_port: int, upstream_port: int, listen_port: int) -> str:
    """deploy/nginx/portal.conf with its docker-compose addresses replaced by loopback ports."""
    text = NGINX_CONF.read_text()
    replacements = {
        "server portal:8000;": f"server 127.0.0.1:{portal_port};",
        "server upstream:8080;": f"server 127.0.0.1:{upstream_port};",
        "listen 80;": f"listen 127.0.0.1:{listen_port};",
    }
    for shipped, tested in replacements.items():
        assert text.count(shipped) == 1, f"{NGINX_CONF} must say {shipped!r} exactly once"
        text = text.replace(shipped, tested)
    return text


class Nginx(ChildServer):
    """An unprivileged nginx in the foreground, configured and logging in its own folder."""

    log_name = "error.log"  # nginx -e: start-up errors and the error log, for failure messages

    def __init__(self, binary: str, portal_port: int, upstream_port: int):
        super().__init__("portal-nginx-")
        self.binary = binary
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        rendered = render_nginx_config(portal_port, upstream_port, self.port)
        (self.work / "portal.conf").write_text(rendered)
        (self.work / "nginx.conf").write_text(WRAPPER.format(work=self.work))

    def start(self, timeout: float = 15.0) -> Nginx:
        """Start nginx and wait until it accepts connections."""
        command = [self.binary, "-p", f"{self.work}/", "-c", str(self.work / "nginx.conf")]
        command += ["-e", str(self.work / "error.log")]
        command += ["-g", f"daemon off; pid {self.work / 'nginx.pid'};"]
        self.launch(command, lambda: accepts_connections(self.port), timeout)
        return self


class SampleApp(ChildServer):
    """deploy/upstream/app.py on a loopback port; it logs one line per request it serves."""

    log_name = "upstream.log"

    def __init__(self):
        super().__init__("portal-upstream-")
        self.port = free_port()

    def start(self, timeout: float = 15.0) -> SampleApp:
        """Start the app and wait until it accepts connections."""
        command = [sys.executable, "-u", str(SAMPLE_APP), "--port", str(self.port)]
        self.launch(command, lambda: accepts_connections(self.port), timeout)
        return self

    def requests_served(self) -> int:
        """How many requests the app has answered (it logs each before sending the body)."""
        return sum(1 for line in self.log_text().splitlines() if '" 200 ' in line)


@dataclass
class Stack:
    """The running servers: nginx in front of the portal and the sample app."""

    nginx: Nginx
    portal: Gunicorn
    app: SampleApp

    def url(self, path: str) -> str:
        """An address through nginx."""
        return self.nginx.base_url + path

    def diagnostics(self) -> str:
        """The servers' logs, for failure messages."""
        return (
            f"--- nginx error.log\n{self.nginx.log_text()[-2000:]}\n"
            f"--- gunicorn\n{self.portal.output_text()[-2000:]}\n"
            f"--- upstream\n{self.app.log_text()[-1000:]}"
        )


@pytest.fixture(scope="module")
def stack(slapd, tmp_path_factory):
    """nginx, the portal under gunicorn and the sample app, all stopped at the end."""
    nginx_binary = require_binary("nginx", "apt-get install nginx-light")
    environment = portal_environment(slapd.url)
    environment.update(
        PORTAL_SSO_ALLOWED_DOMAINS='["127.0.0.1"]',
        PORTAL_ACCESS_RULES=json.dumps(ENGINEERING_ONLY),
    )
    with ExitStack() as cleanup:
        app = SampleApp()
        cleanup.callback(app.cleanup)
        app.start()
        portal = Gunicorn(tmp_path_factory.mktemp("sso-gunicorn"), environment)
        cleanup.callback(portal.stop)
        portal.start()
        nginx = Nginx(nginx_binary, portal.port, app.port)
        cleanup.callback(nginx.cleanup)
        nginx.start()
        yield Stack(nginx, portal, app)


@pytest.fixture
def browser():
    """A fresh requests session: its own cookies, like one browser."""
    with requests.Session() as session:
        yield session


def get(browser: requests.Session, url: str, **kwargs) -> requests.Response:
    """GET without following redirects, as the tests look at each hop."""
    return browser.get(url, allow_redirects=False, timeout=10, **kwargs)


def login_form(browser: requests.Session, url: str) -> tuple[str, str]:
    """Open a login page; return its CSRF token and the return address it carries."""
    page = get(browser, url)
    assert page.status_code == 200, page.text[:500]
    match = _NEXT_FIELD.search(page.text)
    assert match, "no hidden next field in the login form"
    return csrf_token_in(page.text), html.unescape(match.group(1))


def sign_in(stack: Stack, browser: requests.Session, username: str) -> requests.Response:
    """Sign in through the portal's login form, reached through nginx; return the answer."""
    token, _ = login_form(browser, stack.url("/login"))
    data = {"csrf_token": token, "username": username, "password": PASSWORDS[username]}
    answer = browser.post(stack.url("/login"), data=data, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text[:500]
    return answer


def seen_by_app(response: requests.Response, stack: Stack) -> dict:
    """The sample app's echo of the request nginx passed on."""
    assert response.status_code == 200, f"{response.status_code}\n{stack.diagnostics()}"
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def header_values(echo: dict, name: str) -> list[str]:
    """Every value the app received for a header name (case-insensitive)."""
    return [value for key, value in echo["headers"] if key.lower() == name.lower()]


def login_return_address(stack: Stack, response: requests.Response) -> str:
    """For a redirect to the portal's login page, the `next` address it carries."""
    assert response.status_code == 302, f"{response.status_code}\n{stack.diagnostics()}"
    location = urljoin(stack.nginx.base_url + "/", response.headers["Location"])
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}" == stack.nginx.base_url
    assert parts.path == "/login"
    return parse_qs(parts.query)["next"][0]


def test_anonymous_visitor_is_sent_to_login_and_back_to_the_app_after_signing_in(stack, browser):
    """An anonymous request for an app is redirected to login and returns there afterwards."""
    original = stack.url("/app/x?tab=1")
    redirect = get(browser, original)
    assert login_return_address(stack, redirect) == original
    assert redirect.headers["Cache-Control"] == "no-store"

    token, next_field = login_form(browser, urljoin(original, redirect.headers["Location"]))
    assert next_field == original
    data = {"csrf_token": token, "username": "alice", "password": PASSWORDS["alice"]}
    signed_in = browser.post(
        stack.url("/login"), data={**data, "next": next_field}, allow_redirects=False, timeout=10
    )
    assert signed_in.status_code == 302, signed_in.text[:500]
    assert signed_in.headers["Location"] == original

    echo = seen_by_app(get(browser, original), stack)
    assert echo["path"] == "/app/x?tab=1"
    assert header_values(echo, "Remote-User") == ["alice"]


def test_signed_in_person_reaches_the_app_with_identity_headers(stack, browser):
    """The app gets Remote-User, Remote-Groups, Remote-Name and Remote-Email from the portal."""
    sign_in(stack, browser, "alice")

    echo = seen_by_app(get(browser, stack.url("/app/x")), stack)

    assert header_values(echo, "Remote-User") == ["alice"]
    [groups] = header_values(echo, "Remote-Groups")
    assert {"engineering", "staff"} <= set(groups.split(","))
    assert header_values(echo, "Remote-Name") == ["Alice Liddell"]
    assert header_values(echo, "Remote-Email") == ["alice@example.org"]
    assert header_values(echo, "Host") == [f"127.0.0.1:{stack.nginx.port}"]


def test_the_portal_session_cookie_is_never_passed_to_the_app(stack, browser):
    """The app cannot read or replay a sign-in: nginx strips the portal's cookie, not others."""
    sign_in(stack, browser, "alice")
    assert "session" in browser.cookies

    sent = {"app_pref": "dark", "remember_token": "alice|0123", "theme": "x"}
    # The names used over HTTPS too, all at once (a browser can hold old and new names).
    sent |= {"__Host-portal-remember": "alice|0123", "__Secure-portal-session": "x"}

    echo = seen_by_app(get(browser, stack.url("/app/x"), cookies=sent), stack)

    assert header_values(echo, "Remote-User") == ["alice"]
    cookies = "; ".join(header_values(echo, "Cookie"))
    assert "app_pref=dark" in cookies and "theme=x" in cookies
    assert "session=" not in cookies
    assert "remember_token=" not in cookies
    assert "portal-" not in cookies


def test_only_engineering_members_open_the_engineering_path(stack):
    """bob (staff only) gets 403 under /app/engineering/, alice (engineering) gets in."""
    with requests.Session() as alice, requests.Session() as bob:
        sign_in(stack, alice, "alice")
        sign_in(stack, bob, "bob")

        assert get(bob, stack.url("/app/engineering/")).status_code == 403
        assert get(bob, stack.url("/app/engineering/wiki?page=1")).status_code == 403
        # Other spellings of the same path are judged as that path.
        assert get(bob, stack.url("/app/%65ngineering/")).status_code == 403
        echo = seen_by_app(get(bob, stack.url("/app/x")), stack)
        assert header_values(echo, "Remote-User") == ["bob"]

        echo = seen_by_app(get(alice, stack.url("/app/engineering/")), stack)
        assert echo["path"] == "/app/engineering/"
        assert header_values(echo, "Remote-User") == ["alice"]


def test_client_sent_original_address_headers_do_not_change_the_decision(stack, browser):
    """nginx replaces X-Original-* and X-Forwarded-* in its question: bob cannot point elsewhere."""
    sign_in(stack, browser, "bob")
    forged = {
        "X-Original-URL": stack.url("/app/x"),
        "X-Original-Method": "GET",
        "X-Forwarded-Uri": "/app/x",
        "X-Forwarded-Host": "elsewhere.example",
        "X-Forwarded-Proto": "https",
    }

    assert get(browser, stack.url("/app/engineering/"), headers=forged).status_code == 403


def test_identity_headers_sent_by_the_client_never_reach_the_app(stack, browser):
    """A client's Remote-User: erin (or Remote_User) is replaced by the portal's answer."""
    forged = {
        "Remote-User": "erin",
        "Remote-Groups": "portal-admins",
        "Remote-Name": "Erin",
        "Remote-Email": "erin@example.org",
        "Remote_User": "erin",
    }
    served_before = stack.app.requests_served()
    anonymous = get(browser, stack.url("/app/x"), headers=forged)
    assert login_return_address(stack, anonymous) == stack.url("/app/x")
    # The app logs a request before it answers, so one passed on would be counted by now.
    assert stack.app.requests_served() == served_before

    sign_in(stack, browser, "alice")
    echo = seen_by_app(get(browser, stack.url("/app/x"), headers=forged), stack)

    assert header_values(echo, "Remote-User") == ["alice"]
    assert header_values(echo, "Remote-Name") == ["Alice Liddell"]
    assert header_values(echo, "Remote-Email") == ["alice@example.org"]
    [groups] = header_values(echo, "Remote-Groups")
    assert set(groups.split(",")) == {"engineering", "staff"}
    assert header_values(echo, "Remote_User") == []
    assert not [header for header in echo["headers"] if header[1] in forged.values()]


def test_signing_out_at_the_portal_ends_access_to_the_app(stack, browser):
    """After POST /logout (through nginx) the app redirects to the login page again."""
    sign_in(stack, browser, "alice")
    seen_by_app(get(browser, stack.url("/app/x")), stack)
    home = get(browser, stack.url("/"))
    assert home.status_code == 200, home.text[:500]

    signed_out = browser.post(
        stack.url("/logout"),
        data={"csrf_token": csrf_token_in(home.text)},
        allow_redirects=False,
        timeout=10,
    )
    assert signed_out.status_code == 302, signed_out.text[:500]
    assert "session" not in browser.cookies

    after = get(browser, stack.url("/app/x"))
    assert login_return_address(stack, after) == stack.url("/app/x")


@pytest.mark.parametrize(
    "path",
    [
        "/app/engineering/report/../../x",
        "/app/engineering/report/..%2F..%2Fx",
        "/app/engineering/report/%2e%2e/%2e%2e/x",
        "/app/Engineering/report",
        "/app/engineering;x/report",
        "/app/engineering./report",
    ],
)
def test_spellings_of_a_denied_path_never_reach_the_app(stack, browser, path):
    """Sent raw through nginx, every other spelling of /app/engineering/ is refused for bob."""
    sign_in(stack, browser, "bob")
    connection = http.client.HTTPConnection("127.0.0.1", stack.nginx.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Cookie": f"session={browser.cookies['session']}"})
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 403, f"{path} answered {response.status}"
