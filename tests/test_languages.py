"""Pages in the browser's language: English and German, chosen from Accept-Language among
LANGUAGES; the German catalog complete, compiled and in step with the texts in the code."""

from __future__ import annotations

import gettext
import html
import re
import subprocess
import sys

import pytest
from babel.messages.pofile import read_po

from portal import create_app
from portal.settings import ConfigError
from tests.conftest import ROOT, AuthActions, demo_settings, make_app

CATALOGS = ROOT / "portal" / "translations"
GERMAN = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}


def german(app):
    """A test client whose browser asks for German first."""
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = GERMAN["Accept-Language"]
    return client


def catalog():
    with open(CATALOGS / "de" / "LC_MESSAGES" / "messages.po", "rb") as po:
        return read_po(po)


def visible_text(body: str) -> str:
    """What a reader sees, without the data the portal quotes (settings, directory errors):
    tags removed, entities decoded."""
    body = re.sub(r'<pre class="settings">.*?</pre>', "", body, flags=re.S)
    body = re.sub(r'<(td|span) class="error-text">.*?</\1>', "", body, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


@pytest.fixture(scope="module")
def german_content_app(slapd):
    """Settings whose own texts (apps, pages, help) hold no English the test could mistake."""
    app = make_app(
        slapd, HELP_TEXT="Telefon 4357.", HELP_URL="https://hilfe.example.org/",
        APPS=[{"title": "Wiki", "url": "/app/wiki/", "category": "Alltag"}],
        PAGES=[{"slug": "handbuch", "title": "Handbuch", "groups": ["staff"],
                "body": "Urlaub und Spesen."}],
    )  # fmt: skip
    yield app
    app.extensions["portal.directory"].close()


def test_a_german_browser_gets_german_pages_and_others_english(german_content_app):
    client = german_content_app.test_client()
    german = client.get("/login", headers=GERMAN).get_data(as_text=True)
    assert '<html lang="de">' in german and "<h1>Anmelden</h1>" in german
    assert 'for="password">Passwort</label>' in german
    english = client.get("/login", headers={"Accept-Language": "fr, en;q=0.1"})
    assert '<html lang="en">' in english.get_data(as_text=True)
    nothing = client.get("/login").get_data(as_text=True)
    assert "<h1>Sign in</h1>" in nothing


def test_languages_limits_the_choice(slapd):
    app = make_app(slapd, LANGUAGES=["en"])
    body = app.test_client().get("/login", headers=GERMAN).get_data(as_text=True)
    assert "<h1>Sign in</h1>" in body
    app.extensions["portal.directory"].close()
    with pytest.raises(
        ConfigError, match=r"LANGUAGES: no translation for fr \(available: de, en\)"
    ):
        create_app(demo_settings() | {"ENV": "development", "LANGUAGES": ["en", "fr"]})


def test_messages_from_the_code_are_translated_too(german_content_app):
    """A wrong password, a refusal, the plural of the throttle, a flashed message."""
    client = german(german_content_app)
    wrong = AuthActions(client).login("alice", "wrong")
    assert "Falscher Benutzername oder falsches Passwort." in wrong.get_data(as_text=True)
    refused = AuthActions(client).login("dave").get_data(as_text=True)
    assert "für das Portal gesperrt" in refused
    assert "Telefon 4357." in refused and "Service Desk kontaktieren" in refused


PAGES = ["/", "/logout", "/logout?everywhere=1", "/password", "/pages/handbuch", "/no/such/page",
         "/admin/status", "/admin/users/alice", "/admin/users/nobody"]  # fmt: skip


@pytest.mark.parametrize("path", PAGES)
def test_german_pages_hold_no_english_text_of_the_portal(german_content_app, path):
    """Every English text the catalog knows is absent from the German page (the names of
    people, groups, servers and settings are data, not text)."""
    client = german(german_content_app)
    assert AuthActions(client).login("erin").status_code == 302
    shown = visible_text(client.get(path).get_data(as_text=True))
    leftovers = []
    for message in catalog():
        for english in message.id if isinstance(message.id, tuple) else (message.id,):
            plain = re.sub(r"%\(\w+\)[.\d]*[sd]", "\x00", english)
            parts = [part.strip() for part in plain.split("\x00") if len(part.strip()) > 6]
            if english not in (message.string or ()) and any(part in shown for part in parts):
                leftovers.append(english)
    assert leftovers == [], path


def test_the_fast_path_keeps_each_language_apart(german_content_app):
    """One session asks for its home page in English, then German, then English again."""
    client = german_content_app.test_client()
    assert AuthActions(client).login("alice").status_code == 302
    for headers, expected in (({}, "Your account"), (GERMAN, "Ihr Konto"), ({}, "Your account")):
        assert expected in client.get("/", headers=headers).get_data(as_text=True)


def test_the_german_catalog_is_complete_and_compiled():
    """Every text has a German translation with the same placeholders, none fuzzy, and the
    compiled .mo says the same as the .po."""
    found = catalog()
    with open(CATALOGS / "de" / "LC_MESSAGES" / "messages.mo", "rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    for message in found:
        if not message.id:
            continue
        assert not message.fuzzy, message.id
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(strings), message.id
        wanted = set(re.findall(r"%\(\w+\)", ids[0]))
        assert all(set(re.findall(r"%\(\w+\)", text)) == wanted for text in strings), message.id
        if isinstance(message.id, tuple):
            assert compiled.ngettext(ids[0], ids[1], 1) == strings[0], message.id
            assert compiled.ngettext(ids[0], ids[1], 5) == strings[1], message.id
        else:
            assert compiled.gettext(message.id) == message.string, message.id


def test_the_catalog_holds_every_text_the_code_marks(tmp_path):
    """Collecting the texts again finds none the catalog lacks (run `make translations`)."""
    collected = tmp_path / "messages.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "extract",
         "-F", str(CATALOGS / "babel.cfg"), "-k", "_l", "-k", "lazy_gettext",
         "-o", str(collected), str(ROOT / "portal")],
        check=True, capture_output=True,
    )  # fmt: skip
    with open(collected, "rb") as pot:
        wanted = {message.id for message in read_po(pot) if message.id}
    have = {message.id for message in catalog() if message.id}
    assert sorted(map(str, wanted - have)) == []


def test_the_account_state_on_the_look_up_is_translated(own_slapd):
    app = make_app(own_slapd, LDAP_DISABLED_FILTER="(description=disabled)")
    own_slapd.modify("dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modify\n"
                     "add: description\ndescription: disabled\n")  # fmt: skip
    client = german(app)
    assert AuthActions(client).login("erin").status_code == 302
    body = client.get("/admin/users/bob").get_data(as_text=True)
    assert "Das Konto ist deaktiviert." in body
    app.extensions["portal.directory"].close()


def test_why_someone_may_or_may_not_sign_in_and_open_a_page_is_said_in_german(slapd):
    """The look-up's reasons (who lets a person in, which group a page needs) in German: they
    were English inside German sentences. The command line keeps them in English."""
    app = make_app(slapd)
    client = german(app)
    assert AuthActions(client).login("erin").status_code == 302
    alice = client.get("/admin/users/alice").get_data(as_text=True)
    assert "zugelassen durch staff" in alice and "braucht finance" in alice
    assert "Mitglied von staff" in alice
    carol = client.get("/admin/users/carol").get_data(as_text=True)
    assert "in keiner zugelassenen Gruppe (braucht staff)" in carol
    assert "kann sich nicht anmelden; braucht staff" in carol
    whois = app.test_cli_runner().invoke(args=["whois", "alice"])
    assert "allowed by staff" in whois.output, whois.output
    status = client.get("/admin/status").get_data(as_text=True)
    assert re.search(r"<td>\d+,\d ms</td>", status), "a server's latency, written the German way"


def test_the_command_line_speaks_english_whatever_language_comes_first(slapd):
    """LANGUAGES with German first: the pages default to German, the command line's reasons
    stay English (they came out German inside English lines)."""
    app = make_app(slapd, LANGUAGES=["de", "en"])
    try:
        whois = app.test_cli_runner().invoke(args=["whois", "carol"])
        assert "in no allowed group (needs staff)" in whois.output, whois.output
        assert "braucht" not in whois.output
        assert 'lang="de"' in app.test_client().get("/login").get_data(as_text=True)
    finally:
        app.extensions["portal.directory"].close()
