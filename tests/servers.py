"""Helpers for tests that need real server binaries (slapd, redis-server, gunicorn, nginx)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from contextlib import contextmanager

import pytest
import requests

from portal.testing.slapd import find_binary

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str, install_hint: str) -> str:
    """Return the binary's path; when missing, fail under CI=true and skip on a laptop."""
    path = find_binary(name) or shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({install_hint})"
    if IN_CI:
        pytest.fail(message + " and CI=true: the CI script must install it", pytrace=False)
    pytest.skip(message)


def answers_login(base_url: str) -> bool:
    """Tell whether a portal at base_url serves its login page right now."""
    try:
        return requests.get(base_url + "/login", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@contextmanager
def tcp_server(handle):
    """A loopback TCP server calling handle(connection) for each client, in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            accepted.append(connection)
            handle(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"ldap://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()
