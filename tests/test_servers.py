"""require_binary: a missing server binary fails the run under CI and skips it on a laptop."""

from __future__ import annotations

import pytest

from tests import servers

#: What require_binary may raise; caught together so that a skip where a failure is due (or the
#: reverse) fails the test instead of turning it into a skipped or failed test of its own.
OUTCOMES = (pytest.fail.Exception, pytest.skip.Exception)


@pytest.fixture
def nothing_installed(monkeypatch):
    """Make every binary look missing, whichever way require_binary looks it up."""
    monkeypatch.setattr(servers, "find_binary", lambda name: None)
    monkeypatch.setattr(servers.shutil, "which", lambda *args, **kwargs: None)


def test_missing_binary_fails_the_run_under_ci(monkeypatch, nothing_installed):
    """Under CI=true a missing binary is a failure naming the binary and how to install it."""
    monkeypatch.setattr(servers, "IN_CI", True)
    with pytest.raises(OUTCOMES) as failure:
        servers.require_binary("x", "apt-get install x")
    assert failure.type is pytest.fail.Exception, "skipped under CI instead of failing"
    assert "x is not installed (apt-get install x)" in str(failure.value)
    assert "CI=true" in str(failure.value)


def test_missing_binary_skips_the_test_outside_ci(monkeypatch, nothing_installed):
    """Outside CI a missing binary skips the test instead of failing it."""
    monkeypatch.setattr(servers, "IN_CI", False)
    with pytest.raises(OUTCOMES) as skipped:
        servers.require_binary("x", "apt-get install x")
    assert skipped.type is pytest.skip.Exception, "failed outside CI instead of skipping"
    assert "x is not installed (apt-get install x)" in str(skipped.value)


def test_installed_binary_returns_its_path(monkeypatch):
    """A binary that is found is returned, under CI or not."""
    monkeypatch.setattr(servers, "IN_CI", True)
    monkeypatch.setattr(servers, "find_binary", lambda name: f"/opt/bin/{name}")
    assert servers.require_binary("x", "apt-get install x") == "/opt/bin/x"
