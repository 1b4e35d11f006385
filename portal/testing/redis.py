"""A throwaway Redis on 127.0.0.1, for tests of the shared user cache.

It runs the Debian `redis-server` binary as the current user from a temporary folder, with no
persistence (`--save '' --appendonly no`): nothing is written outside that folder, and `cleanup()`
leaves nothing behind.
"""

from __future__ import annotations

import socket

from .process import ChildServer
from .slapd import find_binary, free_port


class RedisMissingError(RuntimeError):
    """The redis-server binary is not installed."""


class RedisServer(ChildServer):
    """Start and stop one throwaway redis-server."""

    log_name = "redis.log"

    def __init__(self, port: int | None = None):
        super().__init__("portal-redis-")
        self.port = port or free_port()

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
        self.launch(command, self.ping, timeout)
        return self

    def ping(self, timeout: float = 0.5) -> bool:
        """Tell whether the server answers PING with PONG right now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
