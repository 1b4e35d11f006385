"""ldaps:// against a real slapd: certificates and host names are verified, never skipped."""

from __future__ import annotations

import pytest

from portal.testing.tls import make_ca, make_server_certificate
from tests.conftest import AuthActions, make_app, start_slapd
from tests.servers import require_binary


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA with a good certificate for 127.0.0.1, one for another host, and a self-signed one."""
    require_binary("openssl", "apt-get install openssl")
    folder = tmp_path_factory.mktemp("tls")
    ca = make_ca(folder)
    return {
        "good": make_server_certificate(folder, ca, "IP:127.0.0.1,DNS:localhost"),
        "wrong-host": make_server_certificate(folder, ca, "DNS:ldap.elsewhere.example"),
        "self-signed": make_server_certificate(folder, None, "IP:127.0.0.1"),
    }


@pytest.fixture
def tls_slapd(certificates, request):
    """A slapd serving ldaps:// with the certificate named by the test's parameter."""
    chosen = certificates[request.param]
    server = start_slapd(tls_files=(chosen.cert_file, chosen.key_file))
    yield server, chosen
    server.cleanup()


@pytest.mark.parametrize("tls_slapd", ["good"], indirect=True)
def test_ldaps_with_a_trusted_certificate_signs_people_in(tls_slapd):
    """With LDAP_CA_FILE naming the CA, ldaps:// logins and page views work."""
    server, certificate = tls_slapd
    app = make_app(None, LDAP_URLS=[server.ldaps_url], LDAP_CA_FILE=str(certificate.ca_file))
    client = app.test_client()
    assert AuthActions(client).login("alice").status_code == 302
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("tls_slapd", ["good"], indirect=True)
def test_ldaps_without_the_ca_is_refused(tls_slapd, caplog):
    """A certificate from a CA the portal was not told to trust is refused: 503, no login."""
    server, _ = tls_slapd
    app = make_app(None, LDAP_URLS=[server.ldaps_url])
    response = AuthActions(app.test_client()).login("alice")
    assert response.status_code == 503
    assert "certificate verify failed" in caplog.text


@pytest.mark.parametrize("tls_slapd", ["self-signed"], indirect=True)
def test_ldaps_with_a_self_signed_certificate_is_refused(tls_slapd, certificates):
    """A self-signed server certificate is refused even with a CA file configured."""
    server, _ = tls_slapd
    ca_file = certificates["good"].ca_file
    app = make_app(None, LDAP_URLS=[server.ldaps_url], LDAP_CA_FILE=str(ca_file))
    assert AuthActions(app.test_client()).login("alice").status_code == 503


@pytest.mark.parametrize("tls_slapd", ["wrong-host"], indirect=True)
def test_ldaps_with_a_certificate_for_another_host_is_refused(tls_slapd, caplog):
    """A certificate signed by the trusted CA but for another host name is refused."""
    server, certificate = tls_slapd
    app = make_app(None, LDAP_URLS=[server.ldaps_url], LDAP_CA_FILE=str(certificate.ca_file))
    response = AuthActions(app.test_client()).login("alice")
    assert response.status_code == 503
    assert "doesn't match" in caplog.text or "mismatch" in caplog.text


@pytest.mark.parametrize("tls_slapd", ["good"], indirect=True)
def test_start_tls_with_a_trusted_certificate_signs_people_in(tls_slapd):
    """ldap:// with LDAP_START_TLS upgrades the connection and works with the right CA."""
    server, certificate = tls_slapd
    app = make_app(
        None, LDAP_URLS=[server.url], LDAP_START_TLS=True, LDAP_CA_FILE=str(certificate.ca_file)
    )
    assert AuthActions(app.test_client()).login("alice").status_code == 302


@pytest.mark.parametrize("tls_slapd", ["self-signed", "wrong-host"], indirect=True)
def test_start_tls_with_a_bad_certificate_sends_no_password(tls_slapd, certificates, ldap_spy):
    """A StartTLS upgrade to an untrusted or wrong-host certificate fails: no bind is sent."""
    server, _ = tls_slapd
    ca_file = str(certificates["good"].ca_file)
    app = make_app(None, LDAP_URLS=[server.url], LDAP_START_TLS=True, LDAP_CA_FILE=ca_file)
    assert AuthActions(app.test_client()).login("alice").status_code == 503
    assert ldap_spy.count("bind") == 0


def test_start_tls_refused_by_the_server_sends_no_password(slapd, ldap_spy):
    """A server without TLS refuses StartTLS: the portal then binds nowhere (503)."""
    app = make_app(slapd, LDAP_START_TLS=True)
    assert AuthActions(app.test_client()).login("alice").status_code == 503
    assert ldap_spy.count("bind") == 0
