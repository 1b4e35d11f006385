"""Admin status page and the /healthz and /readyz probes, with the directory up and down."""

from __future__ import annotations

from tests.conftest import AuthActions, make_app


def test_status_page_is_for_admins_only(client, auth):
    """Alice (not in portal-admins) gets 403; anonymous visitors are sent to login."""
    assert client.get("/admin/status").status_code == 302
    auth.login("alice")
    assert client.get("/admin/status").status_code == 403


def test_status_page_shows_directory_cache_and_session(client, auth, slapd):
    """Erin sees the server reachable with a latency, the bind ok, the cache, her session."""
    auth.login("erin")
    body = client.get("/admin/status").get_data(as_text=True)
    port = slapd.url.rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}" in body
    assert " ms</td>" in body
    assert "FAILED" not in body
    assert "SimpleCache" in body
    assert "read from the directory 0 s ago" in body
    assert "uid=erin,ou=people,dc=example,dc=org" in body
    assert "_user_id" in body


def test_status_page_shows_a_down_server(own_slapd):
    """With the directory stopped, the status page still renders and says it is unreachable."""
    app = make_app(own_slapd)
    client = app.test_client()
    AuthActions(client).login("erin")
    own_slapd.stop()
    response = client.get("/admin/status")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "<td>NO</td>" in body
    assert "no answer" in body


def test_healthz_is_ok_without_any_io(client, ldap_spy):
    """/healthz answers from the process alone."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert ldap_spy.count() == 0


def test_readyz_follows_the_directory(own_slapd):
    """/readyz is 200 with the directory up, 503 naming the directory when it is down."""
    client = make_app(own_slapd).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"directory": True, "cache": True}
    own_slapd.stop()
    down = client.get("/readyz")
    assert down.status_code == 503
    assert down.get_json()["failed"] == ["directory"]
    own_slapd.start()
    assert client.get("/readyz").status_code == 200


def test_readyz_reports_a_refused_service_account(slapd):
    """A wrong service password makes the portal not ready (the bind is what is checked)."""
    client = make_app(slapd, LDAP_BIND_PASSWORD="wrong").test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["failed"] == ["directory"]
