"""`make bench` cannot rot: its smoke run (a second per measurement, no thresholds) runs here."""

from __future__ import annotations

import re
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
                 "P1 proxy (micro-cache, at most 2 s)", "P2 logins vs flask-ldap3-login",
                 "P2 logins vs raw ldap3", "P2 logins vs bare Flask", "P2 bare Flask vs raw ldap3",
                 "P3 scale, sign-in", "P3 scale, cache miss",
                 "| Memory |", "Failed login, floor 250 ms", "| portal |",
                 "| 3 ldap3 operations, no HTTP |", "of processor time per sign-in"):  # fmt: skip
        assert line in document, line
    # The directory operations of each P3 call are counted, on both trees.
    counts = re.findall(
        r"\| P3 scale, [^|]+(?:\|[^|]*){3}\(([0-9]+) ops\) \| [^|]*\(([0-9]+) ops\)", document
    )
    assert len(counts) == 2 and all(int(count) > 0 for pair in counts for count in pair), counts
    assert (tmp_path / "benchmarks.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("subject", "baseline", "target", "shown"),
    [(1745, 2191, 0.8, "0.796"), (1760, 2191, 0.8, "0.80"), (1000, 2000, 0.8, "0.50"),
     (1745, 2191, None, "0.80")],
)  # fmt: skip
def test_a_missed_target_never_reads_as_met(subject, baseline, target, shown):
    """A ratio of 0.796 against 0.8 is printed with three decimals: "0.80× ... no" reads as a
    contradiction in the table."""
    from bench.harness import Comparison
    from bench.report import table

    item = Comparison("P1", "s", "b", [subject], [baseline], target)
    scale = {"large": {"people": 1, "groups": 1, "login_ms": 1, "login_ops": 1, "miss_ms": 1,
                       "miss_ops": 1}, "login_ratio": 1.0, "miss_ratio": 1.0}  # fmt: skip
    scale["small"] = scale["large"]
    memory = {"people": 1, "after_mb": 1.0, "before_mb": 0.0, "mb_per_1000": 1.0}
    revocation = {"on": 1.0, "off": 2.0, "interval": 2, "ttl": 20}
    row = table([item], scale, memory, [], revocation).splitlines()[2]
    assert f"| {shown}× |" in row
