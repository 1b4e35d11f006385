"""Real reverse proxies in front of the portal and the sample app, for the forward-auth tests.

nginx (Debian's nginx-light) runs the shipped deploy/nginx/portal.conf and Caddy (Debian's
caddy) the shipped deploy/Caddyfile, each unprivileged from a temporary folder, with their
docker-compose addresses replaced by loopback ports: what is shipped is what is tested. The
sample app deploy/upstream/app.py echoes each request it gets as JSON (the path as sent and as
it decodes it), so a test sees exactly what an app behind the proxy is told.

`raw_request` sends a request line and headers byte for byte (http.client sends the target as
given); `requests` would re-quote the path (`%65` goes out as `e`), which is not what an
attacker sends.
"""

from __future__ import annotations

import html
import http.client
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from portal.testing.process import ChildServer, accepts_connections
from portal.testing.slapd import free_port
from tests.conftest import PASSWORDS, csrf_token_in
from tests.servers import ROOT, Gunicorn

NGINX_CONF = ROOT / "deploy" / "nginx" / "portal.conf"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
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
# Written by tests/proxies.py around the rendered deploy/nginx/portal.conf.
{user}
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
# Caddy's global options for a test: no admin endpoint, no certificates, storage in the folder.
CADDY_GLOBALS = """\
{{
	admin off
	auto_https off
	storage file_system {work}/storage
}}
"""


def render(path, replacements: dict[str, str]) -> str:
    """A shipped file with its docker-compose addresses replaced (each must appear once)."""
    return render_text(path.read_text(), replacements, str(path))


def render_text(text: str, replacements: dict[str, str], name: str = "the file") -> str:
    """`text` with each replacement made (each text replaced must appear once)."""
    for shipped, tested in replacements.items():
        assert text.count(shipped) == 1, f"{name} must say {shipped!r} exactly once"
        text = text.replace(shipped, tested)
    return text


#: The commented micro-cache lines (deploy/nginx/portal.conf): its zone and the verify
#: location's four.
MICRO_CACHE_LINES = ("proxy_cache_path ", "proxy_cache portal_verify;", "proxy_cache_key ",
                     "proxy_cache_valid ", "proxy_ignore_headers ")  # fmt: skip


def render_nginx_config(portal_port: int, upstream_port: int, listen_port: int, work: Path,
                        micro_cache: bool = False) -> str:  # fmt: skip
    """deploy/nginx/portal.conf with only its three docker-compose addresses replaced by
    loopback ports (as it must start on Debian's nginx); with `micro_cache`, its micro-cache
    lines uncommented, the cache in a folder of `work`."""
    text = render(
        NGINX_CONF,
        {
            "server portal:8000;": f"server 127.0.0.1:{portal_port};",
            "server upstream:8080;": f"server 127.0.0.1:{upstream_port};",
            "listen 80;": f"listen 127.0.0.1:{listen_port};",
        },
    )
    if micro_cache:
        for line in MICRO_CACHE_LINES:
            assert text.count(f"# {line}") == 1, f"{NGINX_CONF} must offer {line!r} once"
            text = text.replace(f"# {line}", line)
        cache = {"/var/cache/nginx/portal-verify": str(work / "verify-cache")}
        text = render_text(text, cache, str(NGINX_CONF))
    return text


class Nginx(ChildServer):
    """An unprivileged nginx in the foreground, configured and logging in its own folder."""

    log_name = "error.log"  # nginx -e: start-up errors and the error log, for failure messages

    def __init__(self, binary: str, portal_port: int, upstream_port: int,
                 micro_cache: bool = False, extra: str = ""):  # fmt: skip
        super().__init__("portal-nginx-")
        self.binary = binary
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        rendered = render_nginx_config(portal_port, upstream_port, self.port, self.work,
                                       micro_cache) + extra  # fmt: skip
        (self.work / "portal.conf").write_text(rendered)
        # Started by root, nginx would run its workers as "nobody", who cannot write request
        # bodies into this private folder: keep them as the user who owns it.
        user = "user root;" if os.geteuid() == 0 else ""
        (self.work / "nginx.conf").write_text(WRAPPER.format(work=self.work, user=user))

    def start(self, timeout: float = 15.0) -> Nginx:
        """Start nginx and wait until it accepts connections."""
        command = [self.binary, "-p", f"{self.work}/", "-c", str(self.work / "nginx.conf")]
        command += ["-e", str(self.work / "error.log")]
        command += ["-g", f"daemon off; pid {self.work / 'nginx.pid'};"]
        self.launch(command, lambda: accepts_connections(self.port), timeout)
        return self


class Caddy(ChildServer):
    """Caddy running the shipped deploy/Caddyfile on loopback ports, with no admin endpoint."""

    log_name = "caddy.log"

    def __init__(self, binary: str, portal_port: int, upstream_port: int):
        super().__init__("portal-caddy-")
        self.binary = binary
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        rendered = render(
            CADDYFILE,
            {
                "forward_auth portal:8000 {": f"forward_auth 127.0.0.1:{portal_port} {{",
                "reverse_proxy upstream:8080": f"reverse_proxy 127.0.0.1:{upstream_port}",
                "reverse_proxy portal:8000": f"reverse_proxy 127.0.0.1:{portal_port}",
                "http://127.0.0.1:8080 {": f"http://127.0.0.1:{self.port} {{",
            },
        )
        (self.work / "Caddyfile").write_text(CADDY_GLOBALS.format(work=self.work) + rendered)

    def start(self, timeout: float = 15.0) -> Caddy:
        """Start Caddy and wait until it accepts connections."""
        command = [self.binary, "run", "--adapter", "caddyfile"]
        command += ["--config", str(self.work / "Caddyfile")]
        # Caddy keeps its state under $HOME and $XDG_DATA_HOME: the temporary folder here.
        home = {"HOME": str(self.work), "XDG_DATA_HOME": str(self.work)}
        env = {**os.environ, **home}
        self.launch(command, lambda: accepts_connections(self.port), timeout, env=env)
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
    """The running servers: a proxy (nginx or Caddy) in front of the portal and the sample app."""

    proxy: Nginx | Caddy
    portal: Gunicorn
    app: SampleApp

    @property
    def nginx(self):
        """The proxy (the nginx tests' name for it)."""
        return self.proxy

    def url(self, path: str) -> str:
        """An address through the proxy."""
        return self.proxy.base_url + path

    def diagnostics(self) -> str:
        """The servers' logs, for failure messages."""
        return (
            f"--- proxy log\n{self.proxy.log_text()[-2000:]}\n"
            f"--- gunicorn\n{self.portal.output_text()[-2000:]}\n"
            f"--- upstream\n{self.app.log_text()[-1000:]}"
        )


@contextmanager
def running_stack(environment: dict[str, str], work: Path,
                  make_proxy: Callable[[int, int], Nginx | Caddy]) -> Iterator[Stack]:  # fmt: skip
    """The sample app, the portal under gunicorn with this environment and the proxy that
    make_proxy(portal port, app port) builds, started in that order and all stopped at the end."""
    with ExitStack() as cleanup:
        app = SampleApp()
        cleanup.callback(app.cleanup)
        app.start()
        # With the shipped configuration: its limits are part of what the proxy relies on.
        portal = Gunicorn(work, environment, config=ROOT / "deploy" / "gunicorn.conf.py")
        cleanup.callback(portal.stop)
        portal.start()
        proxy = make_proxy(portal.port, app.port)
        cleanup.callback(proxy.cleanup)
        proxy.start()
        yield Stack(proxy, portal, app)


@dataclass
class RawAnswer:
    """What a raw request got back."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        """The body as JSON (the sample app's echo)."""
        return json.loads(self.body)


def raw_request(port: int, target: str, headers: dict[str, str] | None = None,
                method: str = "GET") -> RawAnswer:  # fmt: skip
    """Send one request with the target and headers exactly as given (no re-quoting)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        # http.client adds Host (and Accept-Encoding) only when not given; the target goes out
        # byte for byte.
        connection.putrequest(method, target, skip_host="Host" in (headers or {}))
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return RawAnswer(response.status, response.headers, response.read())
    finally:
        connection.close()


def raw_bytes(port: int, request: bytes) -> RawAnswer:
    """Send one request as the exact bytes given (http.client cannot send non-ASCII targets);
    the connection is closed after the answer."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(request)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    message = http.client.HTTPMessage()
    for line in lines[1:]:
        name, _, value = line.partition(":")
        message[name.strip()] = value.strip()
    return RawAnswer(int(lines[0].split(" ")[1]), message, body)


def session_cookie(browser: requests.Session) -> str:
    """A Cookie header carrying the browser's portal session (plain-HTTP name)."""
    return f"session={browser.cookies['session']}"


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
    """Sign in through the portal's login form, reached through the proxy; return the answer."""
    token, _ = login_form(browser, stack.url("/login"))
    data = {"csrf_token": token, "username": username, "password": PASSWORDS[username]}
    answer = browser.post(stack.url("/login"), data=data, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text[:500]
    return answer


def seen_by_app(response: requests.Response | RawAnswer, stack: Stack) -> dict:
    """The sample app's echo of the request the proxy passed on."""
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    assert status == 200, f"{status}\n{stack.diagnostics()}"
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def header_values(echo: dict, name: str) -> list[str]:
    """Every value the app received for a header name (case-insensitive)."""
    return [value for key, value in echo["headers"] if key.lower() == name.lower()]


def login_return_address(stack: Stack, response: requests.Response) -> str:
    """For a redirect to the portal's login page, the `next` address it carries."""
    assert response.status_code == 302, f"{response.status_code}\n{stack.diagnostics()}"
    location = urljoin(stack.proxy.base_url + "/", response.headers["Location"])
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}" == stack.proxy.base_url
    assert parts.path == "/login"
    return parse_qs(parts.query)["next"][0]
