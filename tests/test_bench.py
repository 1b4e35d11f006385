"""`make bench` cannot rot: its smoke run (a second per measurement, no thresholds) runs here."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.servers import require_binary

pytestmark = pytest.mark.slow


def test_the_benchmark_harness_runs_every_measurement(tmp_path, slapd):
    """Every measurement produces its line, the chart is drawn, the run ends well."""
    for binary, package in (
        ("wrk", "wrk"),
        ("nginx", "nginx-light"),
        ("redis-server", "redis-server"),
    ):
        require_binary(binary, f"apt-get install {package}")
    finished = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--output", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    document = (tmp_path / "benchmarks.md").read_text()
    for line in ("P1 page |", "P1 verify |", "P1 page (Redis)", "P1 verify (Redis)", "P1 proxy |",
                 "P1 proxy (micro-cache 2 s)", "P2 logins vs flask-ldap3-login",
                 "P2 logins vs raw ldap3", "P3 scale, sign-in", "P3 scale, cache miss",
                 "| Memory |", "Failed login, floor 250 ms"):  # fmt: skip
        assert line in document, line
    assert (tmp_path / "benchmarks.png").stat().st_size > 10_000
