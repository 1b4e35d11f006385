"""A throwaway Redis on 127.0.0.1, for tests of the shared user cache.

It runs the Debian `redis-server` binary as the current user from a temporary folder, with no
persistence (`--save '' --appendonly no`): nothing is written outside that folder, and `cleanup()`
leaves nothing behind.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .slapd import find_binary, free_port


class RedisMissingError(RuntimeError):
    """The redis-server binary is not installed."""


class RedisServer:
    """Start and stop one throwaway redis-server."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.work = Path(tempfile.mkdtemp(prefix="portal-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The redis:// URL (database 0) clients use to reach this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start redis-server in the temporary folder and wait until it answers PING."""
        binary = find_binary("redis-server")
        if not binary:
            raise RedisMissingError(
                "Redis is not installed: run `sudo apt-get install redis-server`"
            )
        log = open(self.work / "redis.log", "ab")  # noqa: SIM115 - owned by the child
        options = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "dir": str(self.work),
            "save": "",  # no RDB snapshots
            "appendonly": "no",
            "daemonize": "no",
            "loglevel": "notice",
        }
        command = [binary] + [arg for key, value in options.items() for arg in (f"--{key}", value)]
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self._wait_until_ready(timeout)
        return self

    def stop(self) -> None:
        """Stop the server (its data is lost: nothing is persisted)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        """Stop the server and delete its temporary folder."""
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def ping(self, timeout: float = 0.5) -> bool:
        """Tell whether the server answers PING with PONG right now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def log_text(self) -> str:
        """Return what redis-server has logged so far (for failure messages)."""
        path = self.work / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start-up:\n{self.log_text()[-2000:]}")
            if self.ping():
                return
            time.sleep(0.05)  # readiness poll, not a timing assertion
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on {self.url} within {timeout}s")
