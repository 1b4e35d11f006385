"""Directory outages: closed port, black hole, restarts, failover, refused service account."""

from __future__ import annotations

import socket
import threading

import pytest

from portal.testing.slapd import free_port
from tests.conftest import AuthActions, make_app


@pytest.fixture
def black_hole():
    """A TCP server that accepts connections and never answers (a hung directory)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    stop = threading.Event()

    def accept_forever():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield f"ldap://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def assert_directory_unavailable(response):
    """A 503 that says the directory is down and to retry: never a 500, never "wrong password"."""
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "try again" in body
    assert "Wrong username or password" not in body


def test_login_with_directory_port_closed_is_503(slapd):
    """Nothing listens on the configured port: the login page says to try again, with 503."""
    app = make_app(None, LDAP_URLS=[f"ldap://127.0.0.1:{free_port()}"])
    assert_directory_unavailable(AuthActions(app.test_client()).login("alice"))


def test_login_against_a_server_that_never_answers_is_503(black_hole):
    """A hung server is given up on after the operation timeout, and the answer is a 503."""
    app = make_app(None, LDAP_URLS=[black_hole], LDAP_OPERATION_TIMEOUT=1, LDAP_CONNECT_TIMEOUT=1)
    assert_directory_unavailable(AuthActions(app.test_client()).login("alice"))


def test_second_server_is_used_when_the_first_is_down(slapd):
    """LDAP_URLS is tried in order: a dead first server does not stop logins."""
    dead = f"ldap://127.0.0.1:{free_port()}"
    app = make_app(None, LDAP_URLS=[dead, slapd.url])
    client = app.test_client()
    assert AuthActions(client).login("alice").status_code == 302
    assert client.get("/").status_code == 200


def test_second_server_is_used_when_the_first_hangs(slapd, black_hole):
    """A first server that accepts but never answers is skipped after the timeout."""
    app = make_app(None, LDAP_URLS=[black_hole, slapd.url], LDAP_OPERATION_TIMEOUT=1)
    assert AuthActions(app.test_client()).login("bob").status_code == 302


def test_pooled_connections_survive_a_directory_restart(own_slapd):
    """After slapd restarts, the stale pooled connection is replaced and logins work."""
    app = make_app(own_slapd)
    assert AuthActions(app.test_client()).login("alice").status_code == 302
    own_slapd.stop()
    own_slapd.start()
    assert AuthActions(app.test_client()).login("bob").status_code == 302


def test_refused_service_account_is_503_not_wrong_password(slapd):
    """A misconfigured service password is an outage for users, never "wrong password"."""
    app = make_app(slapd, LDAP_BIND_PASSWORD="not-the-password")
    assert_directory_unavailable(AuthActions(app.test_client()).login("alice"))


def test_signed_in_user_during_outage_sees_503_then_recovers(own_slapd):
    """A cache miss during an outage is a 503 page (not a 500), and access returns after."""
    app = make_app(own_slapd, CACHE_TYPE="NullCache")
    client = app.test_client()
    AuthActions(client).login("alice")
    own_slapd.stop()
    assert_directory_unavailable(client.get("/"))
    own_slapd.start()
    assert client.get("/").status_code == 200
