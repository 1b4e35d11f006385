"""The audit log: one JSON line per decision, with user, address, path and reason; never a
password. Lines are read through the portal's own JSON formatter (tests/conftest.py)."""

from __future__ import annotations

from portal.signin import audit
from tests.conftest import PASSWORDS, AuthActions


def test_each_login_outcome_is_one_line_with_user_address_and_reason(app, audit_lines):
    """Success, failure (unknown or wrong), refusal and sign-out: one line each, no password."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.9.8.7"
    auth = AuthActions(client)
    auth.login("alice", "not-her-password")
    auth.login("nobody", "guess-123")
    auth.login("carol")
    auth.login("alice")
    auth.logout()
    events = [(line["event"], line["user"]) for line in audit_lines()]
    assert events == [
        ("login.failure", "alice"),
        ("login.failure", "nobody"),
        ("login.refused", "carol"),
        ("login.success", "alice"),
        ("logout", "alice"),
    ]
    for line in audit_lines():
        assert line["ip"] == "10.9.8.7"
        assert line["time"].endswith("+00:00")
    assert audit_lines("login.refused")[0]["reason"] == "not in an allowed group"
    written = str(audit_lines())
    for secret in ("not-her-password", "guess-123", *PASSWORDS.values()):
        assert secret not in written


def test_a_refused_page_and_a_refused_app_request_are_audited(app, audit_lines):
    """bob opening the admin page, and an app path the rules deny him, are access.denied."""
    app.config["ACCESS_RULES"] = [
        {"paths": ["/app/engineering/"], "groups": ["engineering"], "policy": "allow"},
        {"paths": ["/app/engineering/"], "policy": "deny"},
    ]
    client = app.test_client()
    AuthActions(client).login("bob")
    assert client.get("/admin/status").status_code == 403
    verify = client.get(
        "/auth/verify",
        headers={
            "X-Original-URL": "https://apps.example/app/engineering/x",
            "X-Original-Method": "GET",
        },
    )
    assert verify.status_code == 403
    denied = audit_lines("access.denied")
    assert [(line["user"], line["path"]) for line in denied] == [
        ("bob", "/admin/status"),
        ("bob", "/auth/verify"),
    ]
    assert denied[1]["url"] == "https://apps.example/app/engineering/x"


def test_a_hostile_name_stays_one_line_of_json(audit_lines):
    """CR/LF and quotes in a typed name cannot forge a second line."""
    audit.record("login.failure", user='x"\r\n{"event":"login.success","user":"erin"}')
    lines = audit_lines()
    assert len(lines) == 1 and lines[0]["event"] == "login.failure"


def test_fields_named_like_secrets_are_never_written(audit_lines):
    """A careless caller passing a password or token field does not leak it."""
    audit.record("login.failure", user="alice", password="hunter2", csrf_token="abc", reason="x")
    [line] = audit_lines()
    assert "password" not in line and "csrf_token" not in line
