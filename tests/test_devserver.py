"""`make run`'s entry point, `python -m portal.devserver`, as a real process: serve, stop clean."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from portal.testing.process import stop_process, wait_until
from portal.testing.slapd import free_port
from tests.conftest import csrf_token_in
from tests.servers import answers_login, require_binary

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
#: This virtualenv's `portal` command (pyproject's [project.scripts]).
PORTAL_COMMAND = Path(sys.executable).parent / "portal"
DIRECTORY_LINE = re.compile(r"Demo directory at ldap://127\.0\.0\.1:(\d+)")


class DevServer:
    """`python -m portal.devserver` in its own process group, its output going to a file."""

    def __init__(self, work: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.output = work / "devserver.out"
        self.process: subprocess.Popen | None = None
        self.slapd_pid: int | None = None
        self.slapd_work: Path | None = None

    def start(self, timeout: float = 30.0) -> DevServer:
        """Start the dev server and wait until /login answers 200."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
        # PYTHONUNBUFFERED: print() reaches the file at once, as it reaches a terminal.
        environment.update(PORTAL_DEV_PORT=str(self.port), PYTHONUNBUFFERED="1")
        with open(self.output, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "portal.devserver"],
                cwd=ROOT,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own process group, like a shell job: Ctrl-C signals the whole group.
                start_new_session=True,
            )
        try:
            wait_until(
                lambda: answers_login(self.base_url), self.process, timeout, "the dev server",
                self.output_text,
            )  # fmt: skip
        except BaseException:
            stop_process(self.process)
            raise
        self.slapd_pid, self.slapd_work = slapd_child(self)
        return self

    def output_text(self) -> str:
        """Everything the dev server printed so far (stdout and stderr)."""
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def directory_port(self) -> int:
        """The demo directory's port, from the line the dev server prints at start-up."""
        match = DIRECTORY_LINE.search(self.output_text())
        assert match, f"no 'Demo directory at' line:\n{self.output_text()}"
        return int(match.group(1))

    def stop(self) -> None:
        """Teardown: SIGTERM for its own clean stop, then SIGKILL whatever is left of the group."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(15)
            with contextlib.suppress(ProcessLookupError):  # nothing left of the group
                os.killpg(self.process.pid, signal.SIGKILL)  # whatever outlived the dev server
            self.process.wait(10)
        if self.slapd_work is not None:
            # Only left behind if the dev server was killed before its own cleanup ran.
            shutil.rmtree(self.slapd_work, ignore_errors=True)


def children_of(pid: int) -> list[int]:
    """The pids whose parent is pid (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Field 4 is the parent pid; the command name (field 2) may contain spaces.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def slapd_child(server: DevServer) -> tuple[int, Path]:
    """The dev server's slapd child: its pid and its temporary folder (from `-f <folder>/...`)."""
    for pid in children_of(server.process.pid):
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if command and command[0].endswith(b"slapd") and b"-f" in command:
            work = Path(os.fsdecode(command[command.index(b"-f") + 1])).parent
            assert int((work / "slapd.pid").read_text()) == pid
            return pid, work
    raise AssertionError(f"no slapd child of the dev server:\n{server.output_text()}")


def is_running(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def accepts_connections(port: int) -> bool:
    """Whether anything listens on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def devserver(tmp_path):
    """The dev server, started; stopped afterwards even if the test failed."""
    require_binary("slapd", "apt-get install slapd ldap-utils")
    require_binary("ldapmodify", "apt-get install ldap-utils")
    server = DevServer(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()


def sign_in(base_url: str, username: str, password: str) -> requests.Session:
    """Sign in through the real form and return the browser session."""
    browser = requests.Session()
    token = csrf_token_in(browser.get(base_url + "/login", timeout=5).text)
    response = browser.post(
        base_url + "/login",
        data={"csrf_token": token, "username": username, "password": password},
        timeout=10,
    )
    assert response.status_code == 200, response.text[:500]
    return browser


@pytest.mark.parametrize(
    ("signum", "to_group"),
    [
        pytest.param(signal.SIGINT, True, id="ctrl-c-to-the-process-group"),
        pytest.param(signal.SIGINT, False, id="sigint-to-the-dev-server-alone"),
        pytest.param(signal.SIGTERM, False, id="sigterm-to-the-dev-server-alone"),
    ],
)
def test_devserver_serves_the_portal_and_stops_its_directory_on_interrupt(
    devserver, signum, to_group
):
    """The dev server signs erin in, then exits 0 on Ctrl-C or SIGTERM leaving no slapd behind."""
    directory_port = devserver.directory_port()
    slapd_pid, slapd_work = devserver.slapd_pid, devserver.slapd_work
    assert accepts_connections(directory_port)

    with sign_in(devserver.base_url, "erin", "erin-secret") as browser:
        home = browser.get(devserver.base_url + "/", timeout=5)
    assert home.status_code == 200
    assert "Erin Admin" in home.text

    if to_group:
        os.killpg(devserver.process.pid, signum)  # what the terminal does on Ctrl-C
    else:
        devserver.process.send_signal(signum)  # `kill -s`: the dev server must stop slapd itself
    returncode = devserver.process.wait(20)

    output = devserver.output_text()
    assert returncode == 0, output
    assert "Stopped the portal and the demo directory." in output
    assert not is_running(slapd_pid), f"slapd {slapd_pid} outlived the dev server"
    assert not accepts_connections(directory_port)
    assert not slapd_work.exists(), f"{slapd_work} was left behind"


def test_the_operator_commands_the_dev_server_prints_work_against_its_demo(devserver):
    """The banner's command line, run as printed (with this virtualenv's `portal`), reads
    alice from the demo directory: a newcomer can try the operator commands at once."""
    [line] = [text for text in devserver.output_text().splitlines() if "portal whois" in text]
    command = line.split("e.g.: ", 1)[1].replace(".venv/bin/portal", str(PORTAL_COMMAND))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uid=alice,ou=people,dc=example,dc=org" in result.stdout


def test_the_ldapmodify_line_the_dev_server_prints_changes_its_demo(devserver):
    """The banner's ldapmodify line, run as printed with the change it describes, puts alice
    in the denied group: a newcomer can watch a group change reach the portal."""
    lines = [text for text in devserver.output_text().splitlines() if "ldapmodify" in text]
    assert [line.split(": ", 1)[0] for line in lines] == [
        "Suspend alice (her sign-ins end within seconds)",
        "Lift it (she signs in again)",
    ]
    for line in lines:  # pasted whole, as printed
        result = subprocess.run(["bash", "-c", line.split(": ", 1)[1]], capture_output=True,
                                text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert 'modifying entry "cn=suspended,ou=groups,dc=example,dc=org"' in result.stdout


def test_a_port_in_use_is_said_before_anything_starts(tmp_path):
    """Port taken: one line naming PORTAL_DEV_PORT, exit status 2, no directory started."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
        environment["PORTAL_DEV_PORT"] = str(port)
        result = subprocess.run([sys.executable, "-m", "portal.devserver"], cwd=ROOT,
                                env=environment, capture_output=True, text=True,
                                timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"Port {port} is in use" in result.stderr
    assert f"PORTAL_DEV_PORT={port + 1} make run" in result.stderr
    assert "Demo directory at" not in result.stdout


@pytest.mark.parametrize("typed", ["abc", "70000", "\u00b2"])
def test_a_port_that_is_no_port_is_said_in_one_line(typed):
    """PORTAL_DEV_PORT=abc: one line naming it, exit status 2, no directory started (a
    traceback ended in "invalid literal for int()")."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    environment["PORTAL_DEV_PORT"] = typed
    result = subprocess.run([sys.executable, "-m", "portal.devserver"], cwd=ROOT,
                            env=environment, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (f"PORTAL_DEV_PORT={typed} is no port: give a number such as 5001 "
                             "(PORTAL_DEV_PORT=5001 make run)\n")  # fmt: skip
    assert "Demo directory at" not in result.stdout


def test_the_dev_server_stops_when_its_directory_dies(devserver):
    """slapd killed with SIGKILL: the dev server says so and stops (exit status 1), cleaning
    up, instead of serving on with every sign-in answering 503 and nothing said."""
    directory_port = devserver.directory_port()
    slapd_work = devserver.slapd_work
    os.kill(devserver.slapd_pid, signal.SIGKILL)
    returncode = devserver.process.wait(20)
    output = devserver.output_text()
    assert returncode == 1, output
    assert "The demo directory stopped on its own (exit status -9)" in output
    assert "Stopped the portal and the demo directory." in output
    assert not accepts_connections(devserver.port) and not accepts_connections(directory_port)
    assert not slapd_work.exists(), f"{slapd_work} was left behind"
