"""The company's own look: name, logo, favicon, accent colour, footer, and BRAND_DIR's
templates and files before the package's; all from 'self', nothing inline."""

from __future__ import annotations

import pytest

from portal import create_app
from portal.settings import ConfigError
from tests.conftest import demo_settings, make_app
from tests.servers import served


def settings(**overrides) -> dict:
    return demo_settings() | {"ENV": "development"} | overrides


@pytest.fixture
def brand_dir(tmp_path):
    """A company folder: its own logo, a replaced stylesheet and help box, an app icon."""
    (tmp_path / "static" / "icons").mkdir(parents=True)
    (tmp_path / "templates").mkdir()
    (tmp_path / "static" / "acme.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (tmp_path / "static" / "portal.css").write_text("/* acme */ body { color: black; }")
    (tmp_path / "static" / "icons" / "crm.svg").write_text("<svg/>")
    (tmp_path / "templates" / "_help.html").write_text('<p class="help">Ring Acme IT: 999.</p>')
    return tmp_path


def test_name_logo_footer_and_accent_colour(slapd, brand_dir):
    app = make_app(
        slapd, PORTAL_NAME="Acme intranet", BRAND_DIR=str(brand_dir), PORTAL_LOGO="acme.svg",
        ACCENT_COLOUR="#7a1f5c", FOOTER_TEXT="Acme Ltd, internal use only.",
        FOOTER_LINKS=[{"title": "Privacy", "url": "https://acme.example/privacy"}],
    )  # fmt: skip
    client = app.test_client()
    page = client.get("/login")
    body = page.get_data(as_text=True)
    assert "<title>Sign in · Acme intranet</title>" in body
    assert '<img class="logo" src="/static/acme.svg" alt="" height="32">Acme intranet</a>' in body
    assert '<link rel="stylesheet" href="/brand.css">' in body
    assert '<link rel="icon" href="/static/favicon.svg">' in body
    assert "<p>Acme Ltd, internal use only.</p>" in body
    assert '<a href="https://acme.example/privacy">Privacy</a>' in body
    assert "style=" not in body and "<style" not in body, "nothing inline: the CSP stays strict"
    assert "style-src 'self'" in page.headers["Content-Security-Policy"]
    css = client.get("/brand.css")
    assert css.mimetype == "text/css" and "--accent: #7a1f5c;" in css.get_data(as_text=True)
    app.extensions["portal.directory"].close()


def test_brand_dir_files_and_templates_come_first(slapd, brand_dir):
    """BRAND_DIR's portal.css and _help.html replace the package's; files it lacks (the
    favicon) still come from the package; an app icon may live there."""
    app = make_app(slapd, BRAND_DIR=str(brand_dir), HELP_TEXT="package help",
                   APPS=[{"title": "CRM", "url": "/app/crm/", "icon": "crm.svg"}])  # fmt: skip
    client = app.test_client()
    assert client.get("/static/portal.css").get_data(as_text=True).startswith("/* acme */")
    assert client.get("/static/favicon.svg").status_code == 200
    assert client.get("/static/icons/crm.svg").status_code == 200
    body = client.get("/login").get_data(as_text=True)
    assert "Ring Acme IT: 999." in body and "package help" not in body
    app.extensions["portal.directory"].close()


@pytest.mark.parametrize("path", ["/static/../secret.txt", "/static/..%2fsecret.txt",
                                  "/static/%2e%2e%2fsecret.txt", "/static/..%5csecret.txt",
                                  "/static/%2e%2e/%2e%2e/README.md"])  # fmt: skip
def test_static_files_stay_inside_their_folders(slapd, brand_dir, path):
    """A file beside BRAND_DIR/static is never served, whatever the spelling; the path goes
    out byte for byte (http.client, not a client that would tidy it)."""
    import http.client

    (brand_dir / "secret.txt").write_text("LDAP_BIND secret beside the static folder")
    with served(make_app(slapd, BRAND_DIR=str(brand_dir))) as running:
        connection = http.client.HTTPConnection("127.0.0.1", running.server.server_port, timeout=10)
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
    assert answer.status in (400, 403, 404), answer.status
    assert b"LDAP_BIND" not in body and b"make test" not in body


def test_a_file_name_too_long_for_the_file_system_is_a_404(slapd, brand_dir):
    """Anyone may ask for /static/<300 characters>: a 404, not a 500 and a traceback."""
    app = make_app(slapd, BRAND_DIR=str(brand_dir))
    for length in (256, 5000):
        assert app.test_client().get("/static/" + "a" * length).status_code == 404
    app.extensions["portal.directory"].close()


@pytest.mark.parametrize(
    "overrides, fix",
    [({"ACCENT_COLOUR": "#ffd700"}, r"ACCENT_COLOUR: #ffd700 is too light .*\(contrast 1\.4:1"),
     ({"ACCENT_COLOUR": "blue"}, r"ACCENT_COLOUR: 'blue'"),
     ({"PORTAL_LOGO": "missing.svg"}, r"PORTAL_LOGO: there is no file missing.svg"),
     ({"PORTAL_LOGO": "../../etc/passwd.svg"}, r"PORTAL_LOGO: '\.\./\.\./etc/passwd.svg'"),
     ({"BRAND_DIR": "/no/such/folder"}, r"BRAND_DIR: '/no/such/folder' is not a folder"),
     ({"PORTAL_NAME": " "}, r"PORTAL_NAME"),
     ({"FOOTER_LINKS": [{"title": "x", "url": "javascript:alert(1)"}]}, r"FOOTER_LINKS\[1\]"),
     # Addresses a browser reads as another host: never a link of the portal's.
     ({"FOOTER_LINKS": [{"title": "x", "url": "/\\evil.example/"}]}, r"FOOTER_LINKS\[1\]"),
     ({"HELP_URL": "//evil.example/help"}, r"HELP_URL"),
     ({"HELP_URL": "/\\evil.example/help"}, r"HELP_URL"),
     ({"PASSWORD_RESET_URL": "/\t/evil.example"}, r"PASSWORD_RESET_URL"),
     ({"PASSWORD_CHANGE_URL": "/\n/evil.example"}, r"PASSWORD_CHANGE_URL"),
     ({"HELP_URL": "https://svc:pw@help.example.org/"}, r"HELP_URL")],
)  # fmt: skip
def test_bad_brand_settings_are_refused_at_start(overrides, fix):
    with pytest.raises(ConfigError, match=fix):
        create_app(settings(**overrides))
