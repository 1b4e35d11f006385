"""`make soak` cannot rot, and its identity checks are not vacuous."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import soak
from bench.harness import Server
from bench.hotpath import portal_env, sign_in
from tests.conftest import ROOT
from tests.servers import require_binary

pytestmark = pytest.mark.slow


def test_the_soak_smoke_run_reports_every_field_and_no_failure(tmp_path):
    """Seconds of the mixed load: every kind of request made, every figure reported, no 5xx,
    no crossover, and the run ends well."""
    require_binary("wrk", "apt-get install wrk")
    require_binary("slapd", "apt-get install slapd ldap-utils")
    finished = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--smoke", "--output", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    report = json.loads((tmp_path / "soak.json").read_text())
    assert report["failures"] == []
    assert set(report["requests_by_kind"]) == set(soak.KINDS)
    assert all(count > 0 for count in report["requests_by_kind"].values())
    for name in ("server_errors", "crossovers", "unexpected", "socket_errors"):
        assert report[name] == 0, name
    assert set(report["latency"]) == set(soak.STREAMS)
    for stream in report["latency"].values():
        assert 0 < stream["p50_ms"] <= stream["p99_ms"]
    for reading in ("sockets", "rss_kb"):
        assert report[reading]["start"] > 0 and report[reading]["end"] > 0
        assert {"growth", "bound", "cold"} <= set(report[reading])
    assert [p["role"] for p in report["processes"]["end"]["processes"]] == [
        "arbiter", "worker", "worker",
    ]  # fmt: skip
    document = (tmp_path / "soak.md").read_text()
    for text in ("Result: **passed**", "| login_form |", "| sign_in |", "| page |", "| verify |",
                 "| p50 | p90 | p99 |", "0 answers 5xx, 0 identity crossovers",
                 "| sockets at start |", "| RSS at start |"):  # fmt: skip
        assert text in document, text


def test_a_cookie_answered_as_someone_else_is_a_crossover(slapd):
    """Expecting alice while sending bob's cookie, every page and /auth/verify answer counts as
    a crossover: the Lua checks look at whose answer it is."""
    require_binary("wrk", "apt-get install wrk")
    with Server("portal:create_app()", portal_env(slapd), ready_path="/healthz") as portal:
        bobs = sign_in(portal.base_url, "bob", "bob-secret")
        # Alice's name and the pages both may open, with bob's session cookie.
        alice = (*soak.PEOPLE[0][:4], "", bobs)
        results, _ = soak.run_load(portal, [alice], 1, 10**6)
    found = soak.phase(results)
    # The sign-in stream signs alice in itself, so only the two cookie streams cross over.
    assert found["crossovers"] == results["page"]["requests"] + results["verify"]["requests"]
    assert found["crossovers"] > 0
    assert found["server_errors"] == found["unexpected"] == 0
    notes = "\n".join(found["notes"])
    assert "Remote-User: bob" in notes
    assert "signed in as Bob Builder" in notes
