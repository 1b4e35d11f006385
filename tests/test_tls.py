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
    # The server's failure line says what to fix too (only `portal check` did).
    failed = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith("directory server ")]  # fmt: skip
    assert failed and all("set LDAP_CA_FILE to the CA certificate that signed it" in line
                          for line in failed), failed  # fmt: skip


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


@pytest.fixture(scope="module")
def two_tls_slapds(certificates):
    """One slapd with the good certificate (plain and ldaps ports), one with another host's."""
    good = start_slapd(tls_files=(certificates["good"].cert_file, certificates["good"].key_file))
    other = start_slapd(tls_files=(certificates["wrong-host"].cert_file,
                                   certificates["wrong-host"].key_file))  # fmt: skip
    yield good, other
    good.cleanup()
    other.cleanup()


@pytest.mark.parametrize(
    ("case", "hint"),
    [
        ("no CA", "the server's certificate is not signed by a CA this machine trusts; set "
                  "LDAP_CA_FILE to the CA certificate that signed it"),
        ("StartTLS, no CA", "set LDAP_CA_FILE to the CA certificate that signed it"),
        ("another CA", "the server's certificate is not signed by the CA in LDAP_CA_FILE"),
        ("another host", "the certificate is not for 127.0.0.1; name the server in LDAP_URLS "
                         "as its certificate does"),
        ("ldaps:// to the plain port", "a plain LDAP port? ldaps:// speaks TLS from the first "
                                       "byte (usually port 636); for a plain port use ldap:// "
                                       "with LDAP_START_TLS"),
        ("ldap:// to the TLS port", "is an ldaps:// port (usually 636), write ldaps:// in "
                                    "LDAP_URLS"),
    ],
)  # fmt: skip
def test_check_says_what_to_fix_when_tls_fails(two_tls_slapds, certificates, case, hint):
    """The usual TLS mistakes get the fix beside the TLS library's words in `portal check` (and
    the log); a host-name mismatch names the certificate's hosts, not its every field."""
    good, other = two_tls_slapds
    ca, self_signed = certificates["good"].ca_file, certificates["self-signed"].ca_file
    plain, secure = good.url.rsplit(":", 1)[1], good.ldaps_url.rsplit(":", 1)[1]
    settings = {
        "no CA": {"LDAP_URLS": [good.ldaps_url]},
        "StartTLS, no CA": {"LDAP_URLS": [good.url], "LDAP_START_TLS": True},
        "another CA": {"LDAP_URLS": [good.ldaps_url], "LDAP_CA_FILE": str(self_signed)},
        "another host": {"LDAP_URLS": [other.ldaps_url], "LDAP_CA_FILE": str(ca)},
        "ldaps:// to the plain port": {"LDAP_URLS": [f"ldaps://127.0.0.1:{plain}"],
                                       "LDAP_CA_FILE": str(ca)},
        "ldap:// to the TLS port": {"LDAP_URLS": [f"ldap://127.0.0.1:{secure}"]},
    }[case]  # fmt: skip
    app = make_app(None, **settings)
    try:
        result = app.test_cli_runner().invoke(args=["check"])
    finally:
        app.extensions["portal.directory"].close()
    assert result.exit_code == 1, result.output
    # A TLS server that hangs up on a plain bind took the connection: its bind is what failed.
    step = " service bind as " if case == "ldap:// to the TLS port" else " connect: "
    [failed] = [line for line in result.output.splitlines() if step in line and "FAILED: " in line]
    assert hint in failed, failed
    if case == "ldap:// to the TLS port":
        assert f"ldap://127.0.0.1:{secure} connect: ok (the connection was accepted)" in (
            result.output
        )
    assert "'subject'" not in failed and "serialNumber" not in failed, failed
    if case == "another host":
        assert "certificate for ldap.elsewhere.example doesn't match" in failed, failed


@pytest.mark.parametrize(
    ("url", "said", "hint"),
    [
        ("ldaps://ldap.corp.example:636", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
         "failed: certificate has expired (_ssl.c:1006)", ": the server's certificate has "
         "expired (or this machine's clock is wrong)"),
        ("ldaps://ldap.corp.example:636", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
         "failed: certificate is not yet valid (_ssl.c:1006)", ": the server's certificate is "
         "not valid yet (or this machine's clock is wrong)"),
        ("ldaps://ldap.corp.example:636", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
         "failed: unsupported certificate purpose (_ssl.c:1006)", ""),
        # A server that accepts and closes at once on its usual port: no port mix-up to hint.
        ("ldaps://ldap.corp.example:636", "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in "
         "violation of protocol (_ssl.c:1006)", ""),
        ("ldap://ldap.corp.example:389", "session terminated by server", ""),
        ("ldap://ldap.corp.example:10389", "Connection refused", ""),
    ],
)  # fmt: skip
def test_a_tls_hint_only_for_the_mistake_its_words_name(url, said, hint):
    """The TLS library's words for an expired or not yet valid certificate name the clock, not
    the CA (every certificate failure read "not signed by the CA"); other failures, and the
    usual ports, get no hint that would lead the wrong way."""
    import ldap3

    from portal.directory.connections import _tls_hint

    app = make_app(None, LDAP_URLS=["ldaps://ldap.corp.example"])  # no LDAP_CA_FILE
    settings = app.extensions["portal.directory"].settings
    app.extensions["portal.directory"].close()
    assert _tls_hint(ldap3.Server(url), settings, said) == hint


def test_a_certificate_without_alternative_names_is_named_by_its_common_name():
    """ldap3's host-name check says the whole certificate as a Python dict: shortened to the
    names it is for, its common name when it has no subjectAltName (it said "no name")."""
    from portal.directory.connections import _shortened

    dump = ("socket ssl wrapping error: certificate {'subject': ((('commonName', "
            "'ldap.corp.example'),),), 'issuer': ((('commonName', 'Corp CA'),),), 'version': 3, "
            "'serialNumber': '01'} doesn't match any name in ['10.0.0.5'] ")  # fmt: skip
    assert _shortened(Exception(dump)) == (
        "socket ssl wrapping error: certificate for ldap.corp.example doesn't match any name in "
        "['10.0.0.5']"
    )
