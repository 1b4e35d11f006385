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


@pytest.mark.parametrize(
    ("header", "shown"),
    [
        ("en-GB,de;q=0.5", "en"),  # werkzeug's best_match: de, the one whole-tag match
        ("en-US;q=0.9,de;q=0.8", "en"),
        ("de-AT,en;q=0.9", "de"),  # best_match: en
        ("de-CH", "de"),
        ("fr-CA,de-DE;q=0.7,en;q=0.3", "de"),
        ("de;q=0,en-AU", "en"),
        ("fr,*;q=0.5", "en"),
        ("DE_de", "de"),
        ("en;q=0, *", "de"),  # anything but English
        ("*;q=1, de;q=0.1", "en"),  # anything, German least
    ],
)
def test_the_language_the_browser_wants_most_wins_by_its_language_alone(
    german_content_app, header, shown
):
    """A regional tag is its language: a British browser that also reads some German gets
    English, an Austrian one that also reads English gets German, in the browser's order."""
    page = german_content_app.test_client().get("/login", headers={"Accept-Language": header})
    assert f'<html lang="{shown}">' in page.get_data(as_text=True)


def test_the_default_portal_name_is_said_in_german_too(slapd):
    """Left unset, the portal's name in the title and header is German on German pages (every
    German page said "Intranet portal"), and English for an English browser; the setting stays
    a plain text, so a brand template that shows config.PORTAL_NAME as it is shows a name."""
    app = make_app(slapd)
    assert app.config["PORTAL_NAME"] == "Intranet portal"
    client = app.test_client()
    german = client.get("/login", headers=GERMAN).get_data(as_text=True)
    assert "<title>Anmelden · Intranetportal</title>" in german
    english = client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "<title>Sign in · Intranet portal</title>" in english
    app.extensions["portal.directory"].close()
    # Only the portal's name: an app of that title is shown as set, in German too.
    titled = make_app(slapd, APPS=[{"title": "Intranet portal", "url": "/app/wiki/"}])
    browser = titled.test_client()
    AuthActions(browser).login("alice")
    home = browser.get("/", headers=GERMAN).get_data(as_text=True)
    assert '<span class="title">Intranet portal</span>' in home
    titled.extensions["portal.directory"].close()


def test_a_regional_browser_gets_the_language_before_another_region():
    """With "pt" and "pt_BR" both offered, a "pt-PT" browser gets "pt", not Brazil's; an
    exact "pt-BR" gets Brazil's."""
    from werkzeug.datastructures import LanguageAccept
    from werkzeug.http import parse_accept_header

    from portal.web.i18n import preferred_language

    offered = ["en", "pt_BR", "pt"]
    for header, chosen in (("pt-PT", "pt"), ("pt-BR", "pt_BR"), ("pt-br, en", "pt_BR")):
        assert preferred_language(parse_accept_header(header, LanguageAccept), offered) == chosen


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


#: Settings whose own texts are given in English and German (settings/texts.py).
BILINGUAL = {
    "PORTAL_NAME": {"en": "Acme intranet", "de": "Acme-Intranet"},
    "HELP_TEXT": {"en": "Call extension 4357.", "de": "Rufen Sie Durchwahl 4357 an."},
    "HELP_URL": "https://help.example.org/",
    "HELP_LINK_TEXT": {"en": "Service desk", "de": "Zum Service-Desk"},
    "FOOTER_TEXT": {"en": "Acme Ltd", "de": "Acme GmbH"},
    "FOOTER_LINKS": [{"title": {"en": "Privacy", "de": "Datenschutz"},
                      "url": "https://acme.example/privacy"}],
    "APPS": [
        {"title": {"en": "Expenses", "de": "Spesen"}, "url": "/app/expenses/",
         "description": {"en": "Claim travel.", "de": "Reisekosten abrechnen."},
         "category": {"en": "Everyday", "de": "Alltag"}},
        # Given in English only, or with an empty German text: German readers see the English.
        {"title": "Wiki", "url": "/app/wiki/", "description": {"en": "Who is who.", "de": ""},
         "category": {"en": "Everyday", "de": "Alltag"}},
    ],
    "PAGES": [
        {"slug": "handbook", "title": {"en": "Handbook", "de": "Handbuch"}, "groups": ["staff"],
         "body": {"en": "Holidays.\n\nExpenses.", "de": "Urlaub.\n\nSpesen."}},
        {"slug": "finance", "title": {"en": "Finance reports", "de": "Finanzberichte"},
         "groups": ["finance"], "body": "Figures."},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def bilingual_app(slapd):
    app = make_app(slapd, **BILINGUAL)
    yield app
    app.extensions["portal.directory"].close()


def test_texts_set_in_settings_are_shown_in_the_readers_language(bilingual_app):
    """Portal name, footer, app tiles, categories and pages in German for a German browser,
    in English for the others (French is not among LANGUAGES: the first of them)."""
    for headers, wanted, unwanted in (
        (GERMAN, ["Acme-Intranet", "Acme GmbH", "Datenschutz", "Spesen",
                  "Reisekosten abrechnen.", "Alltag", "Handbuch"],
         ["Acme intranet", "Acme Ltd", "Privacy", "Expenses", "Claim travel.", "Everyday"]),
        ({"Accept-Language": "fr"}, ["Acme intranet", "Acme Ltd", "Privacy", "Expenses",
                                     "Claim travel.", "Everyday", "Handbook"],
         ["Acme-Intranet", "Acme GmbH", "Datenschutz", "Spesen", "Alltag", "Handbuch"]),
    ):  # fmt: skip
        client = bilingual_app.test_client()
        client.environ_base["HTTP_ACCEPT_LANGUAGE"] = headers["Accept-Language"]
        assert AuthActions(client).login("alice").status_code == 302
        shown = visible_text(client.get("/").get_data(as_text=True))
        assert [text for text in wanted if text not in shown] == [], headers
        assert [text for text in unwanted if text in shown] == [], headers
        # Where a language has no text (or an empty one), the first language's is shown.
        assert "Wiki" in shown and "Who is who." in shown
        # The tile's letter, shown where an app has no icon, is its title's in that language.
        initial = "S" if headers is GERMAN else "E"
        assert f'<span class="icon initial" aria-hidden="true">{initial}</span>' in (
            client.get("/").get_data(as_text=True)
        )


def test_a_page_its_refusal_and_the_help_are_in_the_readers_language(bilingual_app):
    client = german(bilingual_app)
    assert AuthActions(client).login("alice").status_code == 302
    page = client.get("/pages/handbook").get_data(as_text=True)
    assert "<title>Handbuch · Acme-Intranet</title>" in page
    assert "<h1>Handbuch</h1>" in page and "<p>Urlaub.</p><p>Spesen.</p>" in page
    refused = client.get("/pages/finance")
    assert refused.status_code == 403
    assert "Finanzberichte" in refused.get_data(as_text=True)
    assert "Finance reports" not in refused.get_data(as_text=True)
    wrong = AuthActions(german(bilingual_app)).login("alice", "wrong").get_data(as_text=True)
    assert "Rufen Sie Durchwahl 4357 an." in wrong and "Zum Service-Desk" in wrong
    english = AuthActions(bilingual_app.test_client()).login("alice", "wrong")
    assert "Call extension 4357." in english.get_data(as_text=True)


def test_the_look_up_names_pages_and_apps_in_the_readers_language(bilingual_app):
    """The administrator's look-up in German; the command line in the first language."""
    client = german(bilingual_app)
    assert AuthActions(client).login("erin").status_code == 302
    shown = visible_text(client.get("/admin/users/alice").get_data(as_text=True))
    assert "Handbuch" in shown and "Spesen" in shown and "Finanzberichte" in shown
    assert "Handbook" not in shown and "Expenses" not in shown
    check = bilingual_app.test_cli_runner().invoke(args=["whois", "alice"])
    assert "Handbook" in check.output and "Expenses" in check.output, check.output
    assert "{" not in check.output and "Spesen" not in check.output


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("HELP_TEXT", {"en": "x", "fr": "y"}, r"HELP_TEXT: 'fr': the portal has no such language"),
        ("HELP_TEXT", {"en": "x", "": "y"}, r"HELP_TEXT: '': the portal has no such language"),
        ("HELP_TEXT", {"de": "nur Deutsch"}, r"HELP_TEXT: the en text is missing"),
        ("HELP_TEXT", {}, r"HELP_TEXT: text, or a table of it per language such as "
                          r'\{ en = "\.\.\.", de = "\.\.\." \}'),
        ("HELP_TEXT", {"en": "x", "de": 4}, r"HELP_TEXT: de: text"),
        ("PASSWORD_RULES", ["at least 12"], r"PASSWORD_RULES: text, or a table"),
        ("PORTAL_NAME", {"en": " ", "de": "Acme"}, r"PORTAL_NAME: the en text is missing"),
        ("FOOTER_TEXT", 5, r"FOOTER_TEXT: text, or a table"),
        ("FOOTER_LINKS", [{"title": {"de": "Datenschutz"}, "url": "/privacy"}],
         r"FOOTER_LINKS\[1\]\.title: the en text is missing"),
        ("APPS", [{"title": {"en": "Wiki", "DE": "Wiki"}, "url": "/app/wiki/"}],
         r"APPS\[1\]\.title: 'DE': the portal has no such language"),
        ("APPS", [{"title": "Wiki", "url": "/app/wiki/", "category": ["Everyday"]}],
         r"APPS\[1\]\.category: text, or a table"),
        ("PAGES", [{"slug": "x", "title": {"en": ""}, "groups": ["staff"], "body": "b"}],
         r"PAGES\[1\]\.title: the en text is missing"),
        ("PAGES", [{"slug": "x", "title": "X", "groups": ["staff"], "body": {"de": "b"}}],
         r"PAGES\[1\]\.body: the en text is missing"),
    ],
)  # fmt: skip
def test_a_text_per_language_that_cannot_be_shown_is_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        create_app(demo_settings() | {"ENV": "development", key: value})


def test_the_first_of_languages_is_the_one_every_table_needs(slapd):
    """With German first, a table needs German; English readers get English where given."""
    with pytest.raises(ConfigError, match="HELP_TEXT: the de text is missing"):
        create_app(demo_settings() | {"ENV": "development", "LANGUAGES": ["de", "en"],
                                      "HELP_TEXT": {"en": "Call us."}})  # fmt: skip
    app = make_app(slapd, LANGUAGES=["de", "en"], PORTAL_NAME={"de": "Intranet", "en": "Ours"})
    try:
        client = app.test_client()
        assert "<title>Anmelden · Intranet</title>" in client.get("/login").get_data(as_text=True)
        english = client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)
        assert "· Ours</title>" in english
    finally:
        app.extensions["portal.directory"].close()


def test_a_text_per_language_can_come_from_the_environment(monkeypatch):
    """PORTAL_HELP_TEXT as JSON, like every other setting."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("PORTAL_SETTINGS", raising=False)
    monkeypatch.setenv("PORTAL_ENV", "development")
    monkeypatch.setenv("PORTAL_PORTAL_NAME", '{"en": "Acme intranet", "de": "Acme-Intranet"}')
    monkeypatch.setenv("PORTAL_WATCH_INTERVAL", "0")  # no directory at the settings' address
    app = create_app()
    page = german(app).get("/login").get_data(as_text=True)
    assert "· Acme-Intranet</title>" in page


def test_apps_share_a_heading_when_their_categories_read_the_same(slapd):
    """Categories are grouped as the reader reads them: a category given as one text and one
    given per language that read alike share a heading (apps translated one at a time)."""
    from tests.test_launcher import tiles

    apps = [
        {"title": "Wiki", "url": "/app/wiki/", "category": "Everyday"},
        {"title": "Expenses", "url": "/app/expenses/",
         "category": {"en": "Everyday", "de": "Alltag"}},
        {"title": "Budgets", "url": "/app/budgets/", "category": {"en": "Tools", "de": "Alltag"}},
    ]  # fmt: skip
    app = make_app(slapd, APPS=apps)
    try:
        for client, wanted in (
            (app.test_client(), {"Everyday": ["Wiki", "Expenses"], "Tools": ["Budgets"]}),
            (german(app), {"Everyday": ["Wiki"], "Alltag": ["Expenses", "Budgets"]}),
        ):
            assert AuthActions(client).login("alice").status_code == 302
            assert tiles(client.get("/").get_data(as_text=True)) == wanted
    finally:
        app.extensions["portal.directory"].close()


def test_the_command_line_names_pages_and_apps_in_english_when_german_comes_first(slapd):
    """With German first, pages default to German; `portal whois` keeps to English, titles
    included (German titles came out inside its English lines)."""
    app = make_app(slapd, LANGUAGES=["de", "en"], **BILINGUAL)
    try:
        whois = app.test_cli_runner().invoke(args=["whois", "alice"]).output
        assert "Handbook: member of staff" in whois and "Expenses (/app/expenses/)" in whois
        assert "Handbuch" not in whois and "Spesen" not in whois
        client = app.test_client()
        assert AuthActions(client).login("alice").status_code == 302
        assert "<h1>Handbuch</h1>" in client.get("/pages/handbook").get_data(as_text=True)
    finally:
        app.extensions["portal.directory"].close()


def test_brand_templates_written_for_plain_texts_keep_working(slapd, tmp_path):
    """A BRAND_DIR's copy of page.html and home.html from before texts per language (page.body
    split, app.initial, {{ page.title }}): the first language's text, never a 500."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "page.html").write_text(
        '{% extends "base.html" %}{% block content %}<h1>{{ page.title }}</h1>'
        '{% for paragraph in page.body.split("\\n\\n") %}<p>{{ paragraph }}</p>{% endfor %}'
        "{% endblock %}"
    )
    (templates / "home.html").write_text(
        '{% extends "base.html" %}{% block content %}{% for category, tiles in apps %}'
        "<h2>{{ category }}</h2>{% for app in tiles %}<i>{{ app.initial }}</i>"
        "<b>{{ app.title }}</b>{% endfor %}{% endfor %}{% endblock %}"
    )
    app = make_app(slapd, BRAND_DIR=str(tmp_path), **BILINGUAL)
    try:
        client = app.test_client()
        assert AuthActions(client).login("alice").status_code == 302
        page = client.get("/pages/handbook")
        assert page.status_code == 200
        assert "<h1>Handbook</h1><p>Holidays.</p><p>Expenses.</p>" in page.get_data(as_text=True)
        home = client.get("/").get_data(as_text=True)
        assert "<i>E</i><b>Expenses</b>" in home and "<h2>Everyday</h2>" in home
    finally:
        app.extensions["portal.directory"].close()


def test_one_part_of_a_text_set_by_a_nested_variable_is_refused_in_plain_words(
    monkeypatch, tmp_path
):
    """PORTAL_HELP_TEXT__de=... (Flask's nested form) where HELP_TEXT is one text was a
    TypeError traceback at start-up."""
    monkeypatch.chdir(tmp_path)  # no settings file: HELP_TEXT is the default, one text
    monkeypatch.delenv("PORTAL_SETTINGS", raising=False)
    monkeypatch.setenv("PORTAL_ENV", "development")
    monkeypatch.setenv("PORTAL_HELP_TEXT__de", "Hilfe")
    with pytest.raises(
        ConfigError,
        match=r"PORTAL_HELP_TEXT__de: sets one part of a setting "
        r"that is no table .*give the whole value as JSON",
    ):
        create_app()


def test_the_rules_and_the_template_page_of_the_admins_are_said_in_german(slapd):
    """frank's look-up said "gesperrt durch rule 2: deny paths=/app/engineering" on a German
    page, and the demo's template page (the admin guide) was English under a German title: the
    rule's number and the page are German, the rule itself in the settings' words; the command
    line keeps English."""
    app = make_app(slapd)
    client = german(app)
    assert AuthActions(client).login("erin").status_code == 302
    frank = visible_text(client.get("/admin/users/frank").get_data(as_text=True))
    assert "Regel 2: deny paths=/app/engineering" in frank, frank
    assert "rule " not in frank
    guide = visible_text(client.get("/pages/admin-guide").get_data(as_text=True))
    assert "Wer sich anmelden darf, entscheiden ACCESS_ALLOWED_GROUPS" in guide, guide
    for english in ("A page rendered", "Check the directory", "Who may sign in", "loses access"):
        assert english not in guide, english
    whois = app.test_cli_runner().invoke(args=["whois", "frank"])
    assert "rule 2: deny paths=/app/engineering" in whois.output, whois.output
