"""Test-server helpers: a missing binary fails the run under CI and skips it on a laptop; free
ports never collide with a client connection's own end or with each other."""

from __future__ import annotations

import socket

import pytest

from portal.testing import slapd as slapd_helpers
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


def test_free_ports_are_outside_the_range_for_outgoing_connections():
    """A free port is never one the kernel may give the local end of a client's connection:
    such a port could be taken between choosing it and the server binding it."""
    low, high = slapd_helpers._ephemeral_port_range()
    # The local ends of real outgoing connections come from that range on this machine.
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()) as client:
        assert low <= client.getsockname()[1] <= high
    ports = [slapd_helpers.free_port() for _ in range(200)]
    assert not [port for port in ports if low <= port <= high]
    assert len(set(ports)) == len(ports), "a port was handed out twice"


def test_a_port_something_listens_on_is_not_handed_out(monkeypatch):
    """A port that is in use is skipped for the next candidate."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        offered = []
        choose = slapd_helpers.random.choice

        def busy_first(choices):
            offered.append(busy if not offered else choose(choices))
            return offered[-1]

        monkeypatch.setattr(slapd_helpers.random, "choice", busy_first)
        port = slapd_helpers.free_port()
    assert offered[0] == busy and port != busy
