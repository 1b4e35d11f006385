"""Start-and-wait and stop for the child servers the tests run (slapd, redis, gunicorn, ...)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def wait_until(
    ready: Callable[[], bool],
    process: subprocess.Popen,
    timeout: float,
    what: str,
    output: Callable[[], str] = str,
) -> None:
    """Poll `ready()` until it is true; fail early, with the child's output, if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start-up:\n{output()[-3000:]}")
        if ready():
            return
        time.sleep(0.05)  # readiness poll, not a timing assertion
    raise RuntimeError(f"{what} was not ready within {timeout}s:\n{output()[-3000:]}")


def accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether something listens on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_process(process: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM a child and wait for it; SIGKILL it if it has not gone within `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ChildServer:
    """A server run as a child process from a temporary folder of its own, logging into it."""

    log_name = "server.log"

    def __init__(self, prefix: str):
        self.work = Path(tempfile.mkdtemp(prefix=prefix))
        self.process: subprocess.Popen | None = None

    def launch(
        self,
        command: list[str],
        ready: Callable[[], bool],
        timeout: float,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start the child with its output in the log, then wait until `ready()`."""
        with open(self.work / self.log_name, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        try:
            wait_until(ready, self.process, timeout, Path(command[0]).name, self.log_text)
        except BaseException:  # failed or interrupted (Ctrl-C): leave no child behind
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the child; its folder stays so it can be started again."""
        stop_process(self.process)
        self.process = None

    def cleanup(self) -> None:
        """Stop the child and delete its temporary folder."""
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def log_text(self) -> str:
        """What the child has logged so far (for failure messages)."""
        path = self.work / self.log_name
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 15.0):  # pragma: no cover - every subclass has its own
        """Start the server and wait until it answers."""
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
