"""Hostile Host headers and request lines, sent byte for byte to the portal under gunicorn."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import make_app
from tests.proxies import raw_bytes, raw_request
from tests.servers import Gunicorn, portal_environment

pytestmark = pytest.mark.slow

LONG_LABEL = "a" * 64


@pytest.fixture(scope="module")
def portal(slapd, tmp_path_factory):
    """The portal under gunicorn (one worker is enough here)."""
    server = Gunicorn(tmp_path_factory.mktemp("hostile"), portal_environment(slapd.url), workers=1)
    try:
        yield server.start()
    finally:
        server.stop()


def assert_refused_page(answer) -> None:
    """A 400 that is the portal's own page, with every security header."""
    assert answer.status == 400, answer.body[:300]
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Cache-Control"] == "no-store"
    assert b"Bad request" in answer.body


@pytest.mark.parametrize(
    "host",
    [
        f"{LONG_LABEL}.corp.example",
        f"wiki.{LONG_LABEL}",
        "xn--zz.corp.example",
        "wiki.corp.example:99999",
        "wiki.corp.example:0",
        "wiki.corp.example:",
        "wiki.corp.example:8o",
        "[::1",
        "[zzz]",
        "[::1%x@wiki.corp.example:]",
        "[fe80::1%eth0]",
        "-wiki.corp.example",
        "wiki..corp.example",
        "wiki.corp.example/x",
        "wiki\\corp",
        "user@wiki.corp.example",
        "",
    ],
)
@pytest.mark.parametrize("path", ["/login", "/", "/healthz", "/pages/handbook", "/nowhere"])
def test_an_unusable_host_header_gets_the_400_page_with_every_header(portal, host, path):
    """Never a bare 500: a Host that is no host name is refused with the normal page."""
    assert_refused_page(raw_request(portal.port, path, {"Host": host}))


@pytest.mark.parametrize(
    "host",
    [
        "wiki.corp.example",
        "WIKI.Corp.Example.",
        "127.0.0.1:8080",
        "[::1]:5000",
        "xn--bcher-kva.example",
        "portal_web:8000",
    ],
)
def test_ordinary_hosts_are_served(portal, host):
    """Names, addresses, ports, a trailing dot, IDNA labels and container names are fine."""
    assert raw_request(portal.port, "/login", {"Host": host}).status == 200


def test_a_request_line_naming_another_host_is_refused(portal):
    """GET http://wiki.corp.example/login with Host: finance.corp.example: which one is meant?"""
    answer = raw_request(
        portal.port, "http://wiki.corp.example/login", {"Host": "finance.corp.example"}
    )
    assert_refused_page(answer)


@pytest.mark.parametrize(
    ("target", "host"),
    [
        ("http://wiki.corp.example/login", "wiki.corp.example"),
        ("http://WIKI.corp.example:80/login", "wiki.corp.example"),
    ],
)
def test_a_request_line_naming_the_same_host_is_served(portal, target, host):
    """The absolute form itself is allowed (RFC 9112 3.2.2) when both name one host."""
    assert raw_request(portal.port, target, {"Host": host}).status == 200


def test_an_http_1_0_request_line_naming_a_host_without_a_host_header_is_refused(portal):
    """HTTP/1.0 needs no Host; a request line that names one is then the only word on it, and
    the portal (which would judge its own name) refuses rather than guess."""
    import socket

    with socket.create_connection(("127.0.0.1", portal.port), timeout=10) as client:
        client.sendall(b"GET http://evil.example/login HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400"
    assert b"Content-Security-Policy" in head and b"Bad request" in body


@pytest.mark.parametrize(
    ("path", "query"), [("/login", "next=%2F\xff"), ("/auth/verify", "fresh=\xe9"), ("/", "x=\xc3")]
)
def test_a_query_string_that_is_not_utf8_gets_the_400_page(slapd, path, query):
    """Raw bytes no browser sends (it escapes them) in the query, from a server that passes
    them on (gunicorn refuses them itself): a 400 page, never a 500."""
    import io

    from werkzeug.test import EnvironBuilder

    from tests.conftest import make_app

    app = make_app(slapd, TESTING=False)
    environ = EnvironBuilder(path=path).get_environ()
    environ.update({"QUERY_STRING": query, "wsgi.input": io.BytesIO(b"")})
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen.update(status=status, headers=dict(headers))

    body = b"".join(app.wsgi_app(environ, start_response))
    assert seen["status"].startswith("400")
    assert "frame-ancestors 'none'" in seen["headers"]["Content-Security-Policy"]
    assert b"Bad request" in body
    app.extensions["portal.directory"].close()


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"-1\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcXX0\r\n\r\n",
        b"3\r\nabc\r\n0\r\n\xff\xff\r\n\r\n",
    ],
    ids=["size-zz", "size-minus-one", "no-chunk-end", "bad-trailer"],
)
@pytest.mark.parametrize("path", ["/login", "/logout", "/password"])
def test_a_broken_chunked_body_gets_the_400_page(portal, body, path):
    """A form sent in chunks that are no chunks: the portal's 400 page, never a 500 (the CSRF
    check reads every form before the view)."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")  # fmt: skip
    request = head.encode() + body
    answer = raw_bytes(portal.port, request)
    assert answer.status == 400, answer.body[:300]
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", ["/x/login", "/x/metrics", "/x/pages/handbook"])
def test_a_script_name_header_never_moves_the_path_the_portal_reads(portal, path):
    """gunicorn takes SCRIPT_NAME from a request on its own machine (a proxy there) as the
    prefix the portal lives under, and cuts it from the path: a client's, passed on by a proxy
    that keeps it, must not have /x/metrics read as /metrics (past the proxy's block) or
    /x/pages/handbook judged by the rules as another page than the one served."""
    assert_refused_page(raw_request(portal.port, path, {"SCRIPT_NAME": "/x"}))


def test_a_portal_mounted_under_a_prefix_serves_it_and_refuses_others(slapd, caplog):
    """Mounted at /portal (APPLICATION_ROOT, as a uWSGI or mod_wsgi mount sets SCRIPT_NAME):
    served there; another prefix gets the 400 page, and the log says why."""
    app = make_app(slapd, APPLICATION_ROOT="/portal")
    client = app.test_client()
    assert client.get("/login", environ_overrides={"SCRIPT_NAME": "/portal"}).status_code == 200
    with caplog.at_level(logging.WARNING):
        answer = client.get("/login", environ_overrides={"SCRIPT_NAME": "/x"})
    assert answer.status_code == 400 and "SCRIPT_NAME" in caplog.text
    app.extensions["portal.directory"].close()


def test_a_stray_byte_in_a_cookie_is_no_500(portal):
    """A Latin-1 cookie set by another app on the same host: the login page still works."""
    request = (b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: legacy=Jos\xe9; x=\xff\r\n"
               b"Connection: close\r\n\r\n")  # fmt: skip
    assert raw_bytes(portal.port, request).status == 200
