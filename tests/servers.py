"""Helpers for tests that need real server binaries (slapd, redis-server, gunicorn, nginx)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gunicorn
import pytest
import requests
from werkzeug.serving import make_server

from portal.testing.process import stop_process, wait_until
from portal.testing.slapd import find_binary, free_port

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(present: bool, message: str) -> None:
    """Go on when a part the test needs is there; else fail under CI=true (the CI script must
    provide it) and skip on a laptop."""
    if present:
        return
    if IN_CI:
        pytest.fail(message + " and CI=true: the CI script must provide it", pytrace=False)
    pytest.skip(message)


def require_binary(name: str, install_hint: str) -> str:
    """Return the binary's path; when missing, fail under CI=true and skip on a laptop."""
    path = find_binary(name) or shutil.which(name)
    require(bool(path), f"{name} is not installed ({install_hint})")
    return path


def answers_login(base_url: str) -> bool:
    """Tell whether a portal at base_url serves its login page right now."""
    try:
        return requests.get(base_url + "/login", timeout=2).status_code == 200
    except (requests.ConnectionError, requests.Timeout):
        # Not up yet, or too busy to answer in time (a loaded machine): asked again.
        return False


def answers_at_all(base_url: str) -> bool:
    """Tell whether a portal at base_url answers GET /login at all, whatever the status."""
    try:
        requests.get(base_url + "/login", timeout=2)
    except (requests.ConnectionError, requests.Timeout):
        return False
    return True


@dataclass
class Listener:
    """A loopback TCP listener standing in for a server: its ldap:// URL and what it accepted."""

    url: str
    accepted: list

    @property
    def connections(self) -> int:
        """How many connections it has accepted so far."""
        return len(self.accepted)


@contextmanager
def listener(handle):
    """A loopback TCP server calling handle(connection) for each client, in a thread; counts
    the connections it accepts (a dead server's stand-in: handle closes at once; a hung one's:
    handle does nothing)."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    sock.settimeout(0.2)
    accepted: list = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection, _ = sock.accept()
            except OSError:
                continue
            accepted.append(connection)
            handle(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield Listener(f"ldap://127.0.0.1:{sock.getsockname()[1]}", accepted)
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        sock.close()


@contextmanager
def tcp_server(handle):
    """A loopback TCP server calling handle(connection) for each client; its ldap:// URL."""
    with listener(handle) as server:
        yield server.url


# --access-logformat '%(p)s %(r)s %(s)s': gunicorn's `p` atom is "<pid>" of the worker that
# served the request (os.getpid() in the worker, which writes its own access log lines).
ACCESS_LINE = re.compile(
    r"^<(?P<pid>\d+)> (?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+ (?P<status>\d+)$"
)


class Gunicorn:
    """One gunicorn serving `portal:create_app()` from the repository root."""

    def __init__(
        self,
        work: Path,
        environment: dict[str, str],
        workers: int = 2,
        app_spec: str = "portal:create_app()",
        config: Path | None = None,
    ):
        self.work = work
        self.app_spec = app_spec
        self.config = config  # a gunicorn configuration file, such as the shipped one
        #: A file descriptor for gunicorn's standard output and error instead of `output`.
        self.output_fd: int | None = None
        #: Where the access log goes: `access_log` (read by access_lines), or "-" (output).
        self.access_log_target: str | None = None
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.access_log = work / "access.log"
        self.output = work / "gunicorn.out"
        self.environment = environment
        self.workers = workers
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0, ready=answers_login) -> Gunicorn:
        """Start gunicorn and wait until `ready(base_url)`: a worker answers GET /login."""
        binary = Path(sys.executable).with_name("gunicorn")
        assert binary.exists(), f"gunicorn is not installed next to {sys.executable}"
        command = [str(binary), "--bind", f"127.0.0.1:{self.port}"]
        command += ["--workers", str(self.workers), "--worker-class", "sync"]
        command += ["--graceful-timeout", "5", "--timeout", "30"]
        if self.config is not None:
            command += ["--config", str(self.config)]
        command += ["--access-logfile", self.access_log_target or str(self.access_log)]
        command += ["--access-logformat", "%(p)s %(r)s %(s)s"]
        if gunicorn.version_info >= (25, 1):
            command += ["--no-control-socket"]  # else it would create ~/.gunicorn/gunicorn.ctl
        command += [self.app_spec]
        with open(self.output, "wb") as output:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.environment,
                stdout=output if self.output_fd is None else self.output_fd,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_until(
                lambda: ready(self.base_url), self.process, timeout, "gunicorn",
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
        # Its polls would add to the operations tests count (test_watcher.py turns it on).
        PORTAL_WATCH_INTERVAL="0",
    )
    return environment


class Served:
    """A portal app served on 127.0.0.1 by a threaded Werkzeug server."""

    def __init__(self, app):
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.app.extensions["portal.directory"].close()


@contextmanager
def served(app):
    portal = Served(app)
    try:
        yield portal
    finally:
        portal.close()
