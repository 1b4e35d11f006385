"""The portal under real gunicorn with two sync workers, configured only by the environment."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
import requests

from tests.conftest import PASSWORDS, csrf_token_in, eventually
from tests.servers import ROOT, Gunicorn, portal_environment

pytestmark = pytest.mark.slow


@pytest.fixture
def gunicorn_server(slapd, tmp_path):
    """gunicorn with two sync workers in front of the session's demo directory."""
    server = Gunicorn(tmp_path, portal_environment(slapd.url))
    try:
        yield server.start()
    finally:
        server.stop()


def get_retrying_connection_errors(session: requests.Session, url: str, timeout: float = 15.0):
    """GET url; retry only while the connection fails (e.g. the listener is briefly busy)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return session.get(url, allow_redirects=False, timeout=5)
        except requests.ConnectionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)  # bounded retry on connection errors only


def test_session_from_one_worker_is_honoured_by_another(gunicorn_server, browser):
    """A session created on one worker opens the home page on another after the first is killed."""
    form = browser.get(gunicorn_server.base_url + "/login", timeout=5)
    token = csrf_token_in(form.text)
    lines_before = len(gunicorn_server.access_lines())

    login = browser.post(
        gunicorn_server.base_url + "/login",
        data={"csrf_token": token, "username": "alice", "password": "alice-secret"},
        allow_redirects=False,
        timeout=10,
    )
    assert login.status_code == 302, login.text
    assert "session" in browser.cookies
    login_line = gunicorn_server.wait_for_access("POST", "/login", after=lines_before)
    assert login_line["status"] == "302"
    login_pid = int(login_line["pid"])
    assert login_pid != gunicorn_server.process.pid, "the arbiter itself served a request"

    os.kill(login_pid, signal.SIGKILL)  # the arbiter notices and starts a replacement
    lines_before = len(gunicorn_server.access_lines())
    home = get_retrying_connection_errors(browser, gunicorn_server.base_url + "/")

    assert home.status_code == 200, home.text[:500]
    assert "Alice Liddell" in home.text
    home_line = gunicorn_server.wait_for_access("GET", "/", after=lines_before)
    assert home_line["status"] == "200"
    assert int(home_line["pid"]) != login_pid


def test_the_portals_log_lines_say_when_which_worker_and_what(tmp_path):
    """Under gunicorn the portal's own lines carry their time, level, worker and logger (at
    3 a.m. the question is when a fault began and ended), and INFO lines are kept."""
    from portal.testing.slapd import free_port

    environment = portal_environment(f"ldap://127.0.0.1:{free_port()}")  # nothing listens
    # A second server across the network, in clear (a documentation address: it never
    # answers): a settings warning at start-up, logged through Flask's app.logger.
    environment["PORTAL_LDAP_URLS"] = json.dumps(
        [f"ldap://127.0.0.1:{free_port()}", "ldap://192.0.2.1:389"]
    )
    environment.update(PORTAL_LDAP_ALLOW_CLEARTEXT="true", PORTAL_LDAP_CONNECT_TIMEOUT="1")
    server = Gunicorn(tmp_path, environment, workers=1).start()
    try:
        with requests.Session() as browser:
            token = csrf_token_in(browser.get(server.base_url + "/login", timeout=10).text)
            form = {"csrf_token": token, "username": "alice", "password": "alice-secret"}
            answer = browser.post(server.base_url + "/login", data=form, timeout=30)
        assert answer.status_code == 503
    finally:
        server.stop()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    line = re.compile(rf"^{stamp} WARNING \[\d+\] portal\.directory\.connections: "
                      "no directory server answered", re.M)  # fmt: skip
    assert line.search(server.output_text()), server.output_text()
    settings = re.compile(rf"^{stamp} WARNING \[\d+\] portal: settings: LDAP_ALLOW_CLEARTEXT", re.M)
    assert settings.search(server.output_text()), server.output_text()


def test_no_text_a_client_sends_can_forge_a_log_line():
    """A path with "%0a" (decoded before any log line is written) or a Unicode line separator
    stays on its own line, shown escaped: the next line of the log is never the client's."""
    import logging

    from portal.applog import LINE_FORMAT, OneLineFormatter

    forged = "/pages/x\n2026-12-01 21:50:00,000 WARNING [1] portal.auth.views: admin signed in"
    sent = (forged + "\u2028\r\x1b[2J",)
    record = logging.LogRecord("portal.web.errors", logging.WARNING, __file__, 1,
                               "answering 503 for %s", sent, None)  # fmt: skip
    line = OneLineFormatter(LINE_FORMAT).format(record)
    assert "\n" not in line and "\r" not in line and "\u2028" not in line and "\x1b" not in line
    assert line.endswith(r"answering 503 for /pages/x\n2026-12-01 21:50:00,000 WARNING [1] "
                         r"portal.auth.views: admin signed in\u2028\r\x1b[2J")  # fmt: skip


def _sign_in(base_url: str, username: str = "alice") -> int:
    with requests.Session() as browser:
        token = csrf_token_in(browser.get(base_url + "/login", timeout=10).text)
        form = {"csrf_token": token, "username": username, "password": PASSWORDS[username]}
        return browser.post(base_url + "/login", data=form, allow_redirects=False,
                            timeout=10).status_code  # fmt: skip


def test_a_log_reader_that_stops_reading_never_stops_the_portal(slapd, tmp_path):
    """gunicorn (with the shipped configuration, its access log on standard output) writes to
    a pipe whose reader stopped (a stuck log shipper), its buffer shrunk to one page: 60
    sign-ins write far more audit and access lines than it holds, and each still answers
    (each request wrote its own lines and waited with them: the first past the buffer held its
    worker, and nothing answered again, not even /healthz). When the reader comes back, every
    line held meanwhile is there."""
    import fcntl
    import threading

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)  # F_SETPIPE_SZ: one page
    server = Gunicorn(tmp_path, portal_environment(slapd.url), workers=1,
                      config=ROOT / "deploy" / "gunicorn.conf.py")  # fmt: skip
    server.output_fd = write_end
    server.access_log_target = "-"  # gunicorn's own access lines go to the stalled pipe too
    try:
        server.start()
        for _ in range(60):
            assert _sign_in(server.base_url) == 302
        assert requests.get(server.base_url + "/healthz", timeout=10).status_code == 200
        received = bytearray()
        reader = threading.Thread(target=lambda: _read_until(read_end, received, 60))
        reader.start()
        reader.join(30)
        assert received.count(b'"event":"login.success"') >= 60, received[-2000:]
    finally:
        os.close(write_end)
        server.stop()
        os.close(read_end)


def _read_until(fd: int, into: bytearray, successes: int) -> None:
    while into.count(b'"event":"login.success"') < successes:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        into += chunk


def test_the_shipped_config_takes_every_request_line_nginx_passes(slapd, tmp_path):
    """nginx passes request lines of up to 8 KB (large_client_header_buffers 4 8k): with the
    shipped config a 6,000-byte address reaches the portal, which answers with its own page and
    headers; gunicorn's default (4,094 bytes) answered its own bare 414 page, without the
    portal's security headers."""
    import http.client

    server = Gunicorn(tmp_path, portal_environment(slapd.url), workers=1,
                      config=ROOT / "deploy" / "gunicorn.conf.py").start()  # fmt: skip
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
        connection.request("GET", "/login?next=/" + "a" * 6000)
        answer = connection.getresponse()
        body = answer.read().decode()
        assert answer.status == 200, (answer.status, body[:200])
        assert answer.getheader("Content-Security-Policy") and "<h1>Sign in</h1>" in body
        connection.close()
    finally:
        server.stop()


def _login_form(base_url: str) -> tuple[str, bytes]:
    # A sign-in form's session cookie and the POST body for bob, to be sent later as bytes.
    browser = requests.Session()
    token = csrf_token_in(browser.get(base_url + "/login", timeout=10).text)
    cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    body = f"csrf_token={token}&username=bob&password={PASSWORDS['bob']}".encode()
    return cookie, body


def _send_sign_in(port: int, form: tuple[str, bytes], timeout: float):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    cookie, body = form
    connection.request("POST", "/login", body=body, headers={
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    return connection


def _waiting_sign_ins(base_url: str) -> float:
    text = requests.get(base_url + "/metrics", timeout=10).text
    found = re.search(r"^portal_logins_waiting(?:\{[^}]*\})? ([0-9.e+-]+)$", text, re.M)
    return float(found[1]) if found else 0.0


def test_a_hung_directory_holds_half_the_threads_and_signed_in_people_go_on(own_slapd, tmp_path):
    """The directory hangs (SIGSTOP) under a worker of four threads (the shipped config):
    sign-ins waited out the deadline on every thread, and alice, signed in already, waited
    with them for a page that needs no directory (3.8 s, six sign-ins). Now two sign-ins
    wait, the next are told at once to try again (503), and alice's page is served while the
    two still wait."""
    import select

    environment = portal_environment(own_slapd.url) | {
        # Far longer than the test: a sign-in held by the hung directory stays held.
        "PORTAL_LDAP_OPERATION_TIMEOUT": "60", "PORTAL_LDAP_LOGIN_DEADLINE": "90",
        "GUNICORN_CMD_ARGS": "--threads 4"}  # fmt: skip
    server = Gunicorn(tmp_path, environment, workers=1,
                      config=ROOT / "deploy" / "gunicorn.conf.py").start()  # fmt: skip
    held = []
    try:
        alice = requests.Session()
        token = csrf_token_in(alice.get(server.base_url + "/login", timeout=10).text)
        form = {"csrf_token": token, "username": "alice", "password": PASSWORDS["alice"]}
        assert alice.post(server.base_url + "/login", data=form, allow_redirects=False,
                          timeout=10).status_code == 302  # fmt: skip
        assert alice.get(server.base_url + "/pages/handbook", timeout=10).status_code == 200
        forms = [_login_form(server.base_url) for _ in range(4)]
        own_slapd.process.send_signal(signal.SIGSTOP)
        try:
            held = [_send_sign_in(server.port, forms[n], timeout=60) for n in range(2)]
            eventually(lambda: _waiting_sign_ins(server.base_url) == 2, timeout=20)
            for form in forms[2:]:
                turned = _send_sign_in(server.port, form, timeout=20).getresponse()
                assert turned.status == 503, turned.status
                assert turned.getheader("Retry-After")
            page = alice.get(server.base_url + "/pages/handbook", timeout=20)
            assert page.status_code == 200
            waiting = [connection.sock for connection in held]
            assert select.select(waiting, [], [], 0)[0] == [], "a held sign-in was answered"
            assert _waiting_sign_ins(server.base_url) == 2
        finally:
            own_slapd.process.send_signal(signal.SIGCONT)
    finally:
        for connection in held:
            connection.close()
        server.stop()
