"""The portal under real gunicorn with two sync workers, configured only by the environment."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import gunicorn
import pytest
import requests

from portal.testing.process import stop_process, wait_until
from portal.testing.slapd import free_port
from tests.conftest import csrf_token_in
from tests.servers import answers_login

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# --access-logformat '%(p)s %(r)s %(s)s': gunicorn's `p` atom is "<pid>" of the worker that
# served the request (os.getpid() in the worker, which writes its own access log lines).
ACCESS_LINE = re.compile(
    r"^<(?P<pid>\d+)> (?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+ (?P<status>\d+)$"
)


class Gunicorn:
    """One gunicorn serving `portal:create_app()` from the repository root."""

    def __init__(self, work: Path, environment: dict[str, str], workers: int = 2):
        self.work = work
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.access_log = work / "access.log"
        self.output = work / "gunicorn.out"
        self.environment = environment
        self.workers = workers
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Gunicorn:
        """Start gunicorn and wait until a worker answers GET /login."""
        binary = Path(sys.executable).with_name("gunicorn")
        assert binary.exists(), f"gunicorn is not installed next to {sys.executable}"
        command = [str(binary), "--bind", f"127.0.0.1:{self.port}"]
        command += ["--workers", str(self.workers), "--worker-class", "sync"]
        command += ["--graceful-timeout", "5", "--timeout", "30"]
        command += ["--access-logfile", str(self.access_log)]
        command += ["--access-logformat", "%(p)s %(r)s %(s)s"]
        if gunicorn.version_info >= (25, 1):
            command += ["--no-control-socket"]  # else it would create ~/.gunicorn/gunicorn.ctl
        command += ["portal:create_app()"]
        with open(self.output, "wb") as output:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_until(
                lambda: answers_login(self.base_url), self.process, timeout, "gunicorn",
                self.output_text,
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM the arbiter (graceful stop of every worker) and wait; SIGKILL if it hangs."""
        stop_process(self.process, grace=15)

    def output_text(self) -> str:
        """What gunicorn printed (arbiter and worker logs), for failure messages."""
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def access_lines(self) -> list[re.Match]:
        """The access log lines written so far, parsed."""
        if not self.access_log.exists():
            return []
        lines = self.access_log.read_text().splitlines()
        return [match for line in lines if (match := ACCESS_LINE.match(line))]

    def wait_for_access(self, method: str, path: str, after: int, timeout: float = 10.0):
        """The first access line for method and path after the first `after` lines.

        A sync worker writes the line just after it has sent the response, so the client may
        see the response first: poll, bounded.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.access_lines()[after:]:
                if line["method"] == method and line["path"] == path:
                    return line
            time.sleep(0.02)  # readiness poll, not a timing assertion
        raise AssertionError(f"no access log line for {method} {path}:\n{self.output_text()}")


def portal_environment(slapd_url: str) -> dict[str, str]:
    """This process's environment without PORTAL_* keys, plus the portal's settings."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    environment.update(
        PORTAL_ENV="development",  # the demo settings hold dev-only secrets
        PORTAL_SETTINGS=str(ROOT / "settings.toml"),
        PORTAL_LDAP_URLS=f'["{slapd_url}"]',
        # Not valid JSON, so from_prefixed_env keeps it as a string.
        PORTAL_SECRET_KEY="gunicorn-test-" + secrets.token_hex(24),
    )
    return environment


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


@pytest.fixture
def browser():
    """A requests session: cookies kept between requests, like a browser."""
    with requests.Session() as session:
        yield session


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
