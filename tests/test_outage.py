"""Directory outages: closed port, black hole, restarts, failover, refused service account."""

from __future__ import annotations

import threading
from contextlib import suppress

import pytest

from portal.testing.slapd import free_port
from tests.conftest import SERVICE_DN, AuthActions, eventually, make_app
from tests.servers import tcp_server


@pytest.fixture
def black_hole():
    """A server that accepts connections and never answers (a hung directory)."""
    with tcp_server(lambda connection: None) as url:
        yield url


def assert_directory_unavailable(response):
    """A 503 that says the directory is down and to retry: never a 500, never "wrong password"."""
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "not answering" in body
    assert "try again" in body or "Reload this page in a minute" in body
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
    page = client.get("/")
    assert_directory_unavailable(page)
    # One "when" (it said "try again in a minute", then "Reload this page in a minute").
    said = page.get_data(as_text=True)
    assert "in a minute" in said and said.count("in a minute") == 1, said
    assert "Reload this page in a minute. You can still sign out." in said
    own_slapd.start()
    eventually(lambda: client.get("/").status_code == 200)  # after the server's back-off


# Long enough that ldap3 reads it whole as a (nonsense) BER message and fails decoding it.
HTTP_REPLY = (
    b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n"
    b"date: Tue, 24 Nov 2026 04:12:27 GMT\r\n\r\n"
)


@pytest.fixture
def garbage_server():
    """A server that answers anything with an HTTP error, as a wrongly configured port would."""

    def answer(connection):
        connection.settimeout(2)
        with suppress(OSError):
            connection.recv(4096)
            connection.sendall(HTTP_REPLY)
            connection.close()

    with tcp_server(answer) as url:
        yield url


def test_a_server_speaking_another_protocol_is_an_outage_not_a_500(garbage_server):
    """Bytes that are not LDAP are a directory failure: 503, never a crash."""
    app = make_app(None, LDAP_URLS=[garbage_server])
    assert_directory_unavailable(AuthActions(app.test_client()).login("alice"))


def test_signed_in_person_can_browse_errors_and_sign_out_during_an_outage(own_slapd):
    """With the directory down and the cache empty, error pages render and logout still works."""
    app = make_app(own_slapd, CACHE_TYPE="NullCache")
    client = app.test_client()
    auth = AuthActions(client)
    auth.login("alice", remember=True)
    token = auth.csrf_token("/")
    own_slapd.stop()
    assert client.get("/no-such-page").status_code == 404
    assert client.post("/logout").status_code == 400  # no token: refused, as a page, not a 500
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302
    removed = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("remember_token=")]
    assert removed and "Expires=Thu, 01 Jan 1970" in removed[0]
    own_slapd.start()
    assert client.get("/").status_code == 302, "still signed out after the directory is back"


def test_all_stale_pooled_connections_are_replaced_after_a_restart(own_slapd):
    """Several idle connections die with the server; the first login afterwards still works."""
    app = make_app(own_slapd)
    pool = app.extensions["portal.directory"].pool
    with pool.connection(), pool.connection(), pool.connection():
        pass  # three bound connections now idle in the pool
    own_slapd.stop()
    own_slapd.start()
    assert AuthActions(app.test_client()).login("alice").status_code == 302


def test_concurrent_lookups_use_at_most_pool_size_service_connections(slapd, ldap_spy):
    """Forty concurrent directory reads share LDAP_POOL_SIZE bound service connections."""
    app = make_app(slapd, LDAP_POOL_SIZE=3)
    directory = app.extensions["portal.directory"]
    names = ["alice", "bob", "erin", "frank"] * 10
    found = []
    start = threading.Barrier(len(names))

    def look_up(name):
        start.wait(timeout=30)
        found.append(directory.lookup(name)["username"])

    threads = [threading.Thread(target=look_up, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(found) == sorted(names)
    service_binds = [who for who in ldap_spy.binds_as() if who == SERVICE_DN]
    assert 1 <= len(service_binds) <= 3
    directory.close()
