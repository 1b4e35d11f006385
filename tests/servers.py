"""Helpers for tests that need real server binaries (slapd, redis-server, gunicorn, nginx)."""

from __future__ import annotations

import os
import shutil

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
