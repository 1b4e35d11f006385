"""Directory edge cases: ambiguous names, servers that allow unauthenticated binds."""

from __future__ import annotations

import logging
import subprocess

import pytest

from portal.testing.slapd import find_binary
from tests.conftest import PASSWORDS, AuthActions, make_app, start_slapd

SECOND_ALICE = """\
dn: ou=contractors,ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: contractors

dn: uid=alice,ou=contractors,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Another Alice
sn: Alice
userPassword: alice-secret
"""


def test_two_entries_for_one_name_is_a_generic_failure_with_a_warning(own_slapd, ldap_spy, caplog):
    """When a login name matches two entries nobody is signed in and no bind is tried."""
    own_slapd.add(SECOND_ALICE)
    app = make_app(own_slapd)
    auth = AuthActions(app.test_client())
    auth.csrf_token()
    ldap_spy.reset()
    with caplog.at_level(logging.WARNING, logger="portal.directory"):
        response = auth.login("alice")
    assert response.status_code == 401
    assert "Wrong username or password." in response.get_data(as_text=True)
    assert ldap_spy.user_binds() == []
    assert "matches several directory entries" in caplog.text


@pytest.fixture
def lax_slapd():
    """A directory that accepts an unauthenticated bind (a DN with an empty password)."""
    server = start_slapd(global_config="allow bind_anon_dn")
    yield server
    server.cleanup()


def test_server_accepting_unauthenticated_binds_still_signs_nobody_in(lax_slapd, ldap_spy):
    """The server says yes to a DN with no password; the portal never asks it."""
    whoami = subprocess.run(
        [
            find_binary("ldapwhoami"),
            "-x",
            "-H",
            lax_slapd.url,
            "-D",
            "uid=alice,ou=people,dc=example,dc=org",
            "-w",
            "",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert whoami.returncode == 0, "this server must accept an unauthenticated bind"
    app = make_app(lax_slapd)
    auth = AuthActions(app.test_client())
    token = auth.csrf_token()
    for password in ("", " "):
        response = auth.client.post(
            "/login", data={"csrf_token": token, "username": "alice", "password": password}
        )
        assert response.status_code in (400, 401)
    assert ldap_spy.user_binds() == []
    assert auth.client.get("/").status_code == 302
    assert auth.login("alice", PASSWORDS["alice"]).status_code == 302
