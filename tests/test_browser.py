"""The pages as people see them: Debian's Chromium driven by Playwright against a served portal.

Every page is checked with axe-core (the npm package, injected from tests/browser/node_modules:
`make test` installs it) for 0 violations, at desktop and phone width (390 px) with no sideways
scrolling, and nothing may be loaded from anywhere but the portal. Sign-in works with the
keyboard alone and with JavaScript off. With PORTAL_SCREENSHOTS=1 (`make screenshots`) the main
pages are saved under docs/screenshots/ for the README.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from portal.testing import trees
from tests.conftest import ROOT, eventually, make_app, start_slapd
from tests.servers import listener, require, require_binary, served
from tests.test_shaped_directories import example_app

AXE = ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "screenshots"
# Without the background-networking flags Chromium keeps calling its update and sync services,
# which a closed network refuses; --no-sandbox because CI runs as root.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
#: The screenshots the README shows (name-width), saved by `make screenshots`.
SHOWN = {
    "login-1280", "home-1280", "home-390", "wrong-password-1280", "forbidden-1280",
    "must-change-1280", "status-failing-1280", "status-failing-390", "home-de-1280",
    "password-refused-1280",
}  # fmt: skip
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

RULES = [
    {"paths": ["/app/engineering"], "groups": ["engineering"], "policy": "allow"},
    {"paths": ["/app/engineering"], "policy": "deny"},
]
APPS = [
    {"title": "Company wiki", "url": "/app/wiki/", "icon": "book.svg",
     "category": {"en": "Everyday", "de": "Alltag"},
     "description": {"en": "Policies, how-tos and who is who.",
                     "de": "Richtlinien, Anleitungen und wer wer ist."}},
    {"title": {"en": "Expenses", "de": "Spesen"}, "url": "/app/expenses/", "icon": "receipt.svg",
     "category": {"en": "Everyday", "de": "Alltag"},
     "description": {"en": "Claim travel and purchases.", "de": "Reisen und Einkäufe abrechnen."}},
    {"title": "Runbooks", "url": "/app/engineering/runbooks/",
     "category": {"en": "Engineering", "de": "Technik"},
     "description": {"en": "What to do when something breaks.",
                     "de": "Was zu tun ist, wenn etwas ausfällt."}},
    {"title": "Dashboards", "url": "/app/engineering/dashboards/", "icon": "chart.svg",
     "category": {"en": "Engineering", "de": "Technik"},
     "description": {"en": "Service health and on-call graphs.",
                     "de": "Zustand der Dienste und Bereitschaftsgrafiken."}},
    {"title": "Budgets", "url": "/app/finance/", "category": "Finance", "groups": ["finance"],
     "description": "Quarterly budgets and forecasts."},
]  # fmt: skip
LOOK = {
    "APPS": APPS,
    "ACCESS_RULES": RULES,
    "HELP_TEXT": "The service desk answers on extension 4357, weekdays 8:00 to 18:00.",
    "HELP_URL": "https://help.example.org/",
    "PASSWORD_RESET_URL": "https://help.example.org/reset",
    "FOOTER_TEXT": {
        "en": "Example Ltd · for employees only",
        "de": "Example GmbH · nur für Mitarbeitende",
    },
    "THROTTLE_ACCOUNT_LIMIT": "3 per minute",
}


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium under Playwright (never a downloaded browser)."""
    path = require_binary("chromium", "apt-get install chromium")
    require(AXE.is_file(), f"{AXE.relative_to(ROOT)} is missing (npm ci --prefix tests/browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def portal(slapd):
    with served(make_app(slapd, **LOOK)) as running:
        yield running


class Visitor:
    """One person's browser tab at one width: every request it makes is recorded."""

    def __init__(self, browser, base: str, viewport: dict, javascript: bool = True,
                 locale: str = "en-GB"):  # fmt: skip
        # bypass_csp: axe is injected into pages whose policy (rightly) forbids any script.
        self.context = browser.new_context(viewport=viewport, bypass_csp=True, locale=locale,
                                           java_script_enabled=javascript)  # fmt: skip
        self.page = self.context.new_page()
        self.base = base
        self.requested: list[str] = []
        self.page.on("request", lambda request: self.requested.append(request.url))

    def open(self, path: str):
        return self.page.goto(self.base + path)

    def sign_in(self, username: str, password: str | None = None):
        self.open("/login")
        self.page.fill("#username", username)
        self.page.fill("#password", password or trees.password_of(username))
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")

    def check(self, name: str) -> None:
        """0 axe violations, no sideways scrolling, nothing from outside; a screenshot."""
        self.page.add_script_tag(path=str(AXE))
        violations = self.page.evaluate(
            "async () => (await axe.run()).violations.map("
            "v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
        )
        assert violations == [], name
        overflow = self.page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name}: {overflow} px of sideways scrolling"
        foreign = [url for url in self.requested if urlsplit(url).hostname != "127.0.0.1"]
        assert foreign == [], name
        shot = f"{name}-{self.page.viewport_size['width']}"
        if os.environ.get("PORTAL_SCREENSHOTS") and shot in SHOWN:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SCREENSHOTS / f"{shot}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture(params=[DESKTOP, PHONE], ids=["desktop", "phone"])
def visitor_at(request, chromium):
    """Make visitors at the parametrised width; closed after the test."""
    made = []

    def make(base: str, javascript: bool = True, locale: str = "en-GB") -> Visitor:
        visitor = Visitor(chromium, base, request.param, javascript, locale)
        made.append(visitor)
        return visitor

    yield make
    for visitor in made:
        visitor.close()


def tile_titles(visitor: Visitor) -> list[str]:
    return visitor.page.locator(".tile .title").all_inner_texts()


def test_sign_in_and_the_launcher_of_two_people(portal, visitor_at):
    """alice (engineering) and bob (staff) see their own tiles; the rules hide engineering's
    from bob and the app's groups hide Budgets from both."""
    alice = visitor_at(portal.url)
    alice.open("/login")
    alice.check("login")
    alice.sign_in("alice")
    assert alice.page.url == portal.url + "/"
    assert tile_titles(alice) == ["Company wiki", "Expenses", "Runbooks", "Dashboards"]
    alice.check("home")
    bob = visitor_at(portal.url)
    bob.sign_in("bob")
    assert tile_titles(bob) == ["Company wiki", "Expenses"]
    bob.check("home-bob")
    bob.open("/pages/engineering")
    assert bob.page.locator("h1").inner_text() == "Not allowed"
    refusal = bob.page.locator("main").inner_text()
    assert "4357" in refusal and "members of the group engineering" in refusal
    bob.check("forbidden")
    alice.open("/pages/engineering")
    alice.check("page")
    alice.open("/no/such/page")
    alice.check("not-found")


def test_wrong_password_refused_suspended_and_throttled(portal, visitor_at):
    visitor = visitor_at(portal.url)
    visitor.sign_in("alice", "not-her-password")
    # autofocus is applied at the browser's next rendering step, not by the time of "load".
    visitor.page.wait_for_function("document.activeElement.id === 'password'", timeout=5000)
    assert visitor.page.get_attribute("#password", "aria-invalid") == "true"
    visitor.check("wrong-password")
    for name in ("carol", "dave"):
        visitor.sign_in(name)
        assert "your account" in visitor.page.locator("#login-error").inner_text()
        visitor.check(f"refused-{name}")
    for _ in range(4):
        visitor.sign_in("frank", "wrong")
    assert "Too many failed sign-ins" in visitor.page.locator("#login-error").inner_text()
    visitor.check("throttled")


def test_sign_out_and_sign_out_everywhere_ask_first(portal, visitor_at):
    visitor = visitor_at(portal.url)
    visitor.sign_in("alice")
    visitor.page.click("text=Sign out everywhere")
    assert visitor.page.locator("h1").inner_text() == "Sign out everywhere?"
    visitor.check("sign-out-everywhere")
    with visitor.page.expect_navigation():
        visitor.page.click("main button[type=submit]")
    assert "every sign-in of yours has ended" in visitor.page.locator("main").inner_text()
    visitor.check("signed-out")
    visitor.sign_in("alice")
    visitor.open("/logout")
    assert visitor.page.locator("h1").inner_text() == "Sign out?"
    visitor.check("sign-out")


def test_keyboard_alone_signs_in_with_javascript_off(portal, visitor_at):
    """The cursor starts in the name field; Tab, the password, Enter; then Tab reaches the
    first tile and Enter opens it. No script runs at all."""
    visitor = visitor_at(portal.url, javascript=False)
    visitor.open("/login")
    # The name field has the cursor as soon as the page is shown (autofocus, no script).
    visitor.page.wait_for_function("document.activeElement.id === 'username'", timeout=5000)
    keyboard = visitor.page.keyboard
    keyboard.type("alice")
    keyboard.press("Tab")
    keyboard.type(trees.password_of("alice"))
    with visitor.page.expect_navigation():
        keyboard.press("Enter")
    assert visitor.page.url == portal.url + "/"
    for _ in range(10):
        keyboard.press("Tab")
        focused = visitor.page.evaluate("document.activeElement.className")
        if focused == "tile":
            break
    assert focused == "tile"
    with visitor.page.expect_navigation():
        keyboard.press("Enter")
    assert visitor.page.url == portal.url + "/app/wiki/"


def test_admin_status_healthy_and_failing(slapd, visitor_at):
    """erin's status page with every server answering, then with one of two dead: the
    summary line says so first, and the tables scroll inside their card on a phone."""
    with served(make_app(slapd, **LOOK)) as healthy:
        erin = visitor_at(healthy.url)
        erin.sign_in("erin")
        erin.open("/admin/status")
        assert erin.page.locator(".summary").inner_text().startswith("All good")
        erin.check("status")
        erin.open("/admin/users/alice")
        erin.check("admin-user")
        with erin.page.expect_navigation():
            erin.page.get_by_role("button", name="Sign this person out everywhere").click()
        assert erin.page.locator("h1").inner_text() == "Sign alice out everywhere?"
        erin.check("admin-revoke")
        erin.open("/admin/users/nobody")
        erin.check("admin-no-such-person")
    with listener(lambda connection: connection.close()) as dead:
        failing = make_app(None, LDAP_URLS=[slapd.url, dead.url], LDAP_CONNECT_TIMEOUT=1,
                           LDAP_OPERATION_TIMEOUT=1, **LOOK)  # fmt: skip
        with served(failing) as running:
            erin = visitor_at(running.url)
            erin.sign_in("erin")
            erin.open("/admin/status")
            summary = erin.page.locator(".summary").inner_text()
            assert summary == "Directory: 1 of 2 servers failing"
            erin.check("status-failing")


def test_admin_status_during_an_outage_in_german(own_slapd, visitor_at):
    """The on-call engineer's status page in German with the directory stopped: the breaker's
    state in German, and the watcher's last error, one long text, wrapped inside its card (on
    a phone it ran off the screen)."""
    app = make_app(own_slapd, WATCH_INTERVAL=1, **LOOK)
    watcher = app.extensions["portal.watcher"]
    try:
        with served(app) as running:
            erin = visitor_at(running.url, locale="de-DE")
            erin.sign_in("erin")
            erin.open("/admin/status")
            own_slapd.stop()
            eventually(lambda: watcher.state.error, timeout=15)  # its poll failed
            erin.open("/admin/status")
            page = erin.page.locator("main").inner_text()
            assert "Letzter Fehler" in page and "DirectoryUnavailable" in page
            breaker = erin.page.locator("table tbody tr").first.locator("td").nth(6).inner_text()
            assert breaker.startswith(("offen", "halb offen")), breaker
            erin.check("status-outage-de")
    finally:
        # Else its loop goes on after the test, and the lag it reports grows in the metrics
        # every later test of this process reads.
        watcher.stop()
        app.extensions["portal.directory"].close()


def test_three_hundred_groups_scroll_down_not_sideways(own_slapd, visitor_at):
    """frank in 300 more groups: his home page's list (folded) opens into a list that scrolls
    down, every group within its width, at a desktop's width and a phone's, and a keyboard
    can reach it to scroll; so for the admin look-up. (Laid out in columns under a height
    limit, it spilled sideways: 15 of 302 groups visible, no scroll bar, the wheel did
    nothing.)"""
    frank = "uid=frank,ou=people,dc=example,dc=org"
    own_slapd.add(
        "\n".join(
            f"dn: cn=project-team-{n:03d},ou=groups,dc=example,dc=org\n"
            f"objectClass: groupOfNames\nmember: {frank}\n"
            for n in range(300)
        )
    )
    with served(make_app(own_slapd, **LOOK)) as running:
        visitor = visitor_at(running.url)
        visitor.sign_in("frank")
        visitor.page.click("details summary")
        lists = {"home": visitor.page.locator("ul.groups")}
        erin = visitor_at(running.url)
        erin.sign_in("erin")
        erin.open("/admin/users/frank")
        lists["look-up"] = erin.page.locator("ul.groups")
        for name, groups in lists.items():
            box = groups.evaluate(
                "list => ({scrollWidth: list.scrollWidth, clientWidth: list.clientWidth,"
                " scrollHeight: list.scrollHeight, clientHeight: list.clientHeight,"
                " outside: [...list.children].filter(item => item.getBoundingClientRect().right"
                " > list.getBoundingClientRect().right + 1).length, count: list.children.length,"
                " tabIndex: list.tabIndex})"
            )
            assert box["count"] >= 300, (name, box)
            assert box["scrollWidth"] <= box["clientWidth"] and box["outside"] == 0, (name, box)
            assert box["scrollHeight"] > box["clientHeight"], (name, box)  # it scrolls down
            assert box["tabIndex"] == 0, (name, box)
        visitor.check("many-groups")
        erin.check("many-groups-look-up")


NARROWEST = {"width": 320, "height": 640}  # WCAG's reflow width (a 1280 px screen at 400%)


def test_a_long_mail_address_stays_inside_its_card_on_the_narrowest_screen(own_slapd, chromium):
    """bob with a long mail address, at 320 px: the address wraps inside the card of facts
    (it ran 97 px past the screen, and alice's short one 32 px past the card's padding)."""
    own_slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modify\n"
        "replace: mail\nmail: robert.bobson-smithers@engineering.example.org\n"
    )
    with served(make_app(own_slapd, **LOOK)) as running:
        visitor = Visitor(chromium, running.url, NARROWEST)
        try:
            visitor.sign_in("bob")
            assert "robert.bobson-smithers@" in visitor.page.locator(".facts").inner_text()
            spill = visitor.page.evaluate(
                "() => [...document.querySelectorAll('.facts dd')].map(item => {"
                " const card = item.closest('.card'), style = getComputedStyle(card);"
                " return item.getBoundingClientRect().right - (card.getBoundingClientRect().right"
                " - parseFloat(style.paddingRight) - parseFloat(style.borderRightWidth)); })"
            )
            assert spill and max(spill) <= 0.5, spill
            visitor.check("home-long-mail")
        finally:
            visitor.close()


def test_long_german_words_stay_on_the_narrowest_screen(portal, chromium):
    """German compounds in headings ("Mitarbeiterhandbuch", "Verzeichnisbeobachter") at 320 px:
    they break inside the card instead of widening the page (414 and 342 px wide)."""
    for name, path in (("alice", "/pages/handbook"), ("erin", "/admin/status")):
        visitor = Visitor(chromium, portal.url, NARROWEST, locale="de-DE")
        try:
            visitor.sign_in(name)
            visitor.open(path)
            assert visitor.page.get_attribute("html", "lang") == "de"
            visitor.check(f"german-{name}")
        finally:
            visitor.close()


def _contrast(first: str, second: str) -> float:
    # WCAG's contrast ratio of two computed CSS colours ("rgb(r, g, b)").
    def luminance(colour: str) -> float:
        channels = [int(part) / 255 for part in colour[colour.index("(") + 1 : -1].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    lighter, darker = sorted((luminance(first), luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_the_edges_of_text_fields_can_be_seen(portal, visitor_at):
    """Every text field's border stands out from the card behind it by at least 3:1 (WCAG
    1.4.11, non-text contrast; it was 1.35:1), on the sign-in and password change pages."""
    visitor = visitor_at(portal.url)
    for path in ("/login", "/password"):
        visitor.open(path)
        fields = visitor.page.evaluate(
            "() => [...document.querySelectorAll('input[type=text], input[type=password]')]"
            ".map(field => [field.id, getComputedStyle(field).borderTopColor,"
            " getComputedStyle(field.closest('.card') || document.body).backgroundColor])"
        )
        assert fields, path
        for name, border, behind in fields:
            assert _contrast(border, behind) >= 3, (path, name, border, behind)


def test_the_look_up_tables_fit_the_screen(portal, visitor_at):
    """erin looks up alice, and carol in German: every table of the page fits its card, at a
    desktop's width and a phone's (on a phone the "Why" column ran past the card's edge,
    cut mid-word, behind a scroll nothing showed)."""
    for name, locale in (("alice", "en-GB"), ("carol", "de-DE")):
        erin = visitor_at(portal.url, locale=locale)
        erin.sign_in("erin")
        erin.open(f"/admin/users/{name}")
        hidden = erin.page.evaluate(
            "() => [...document.querySelectorAll('.scroll')].map(region => region.scrollWidth"
            " - region.clientWidth)"
        )
        assert hidden and all(width <= 0 for width in hidden), (name, hidden)
        erin.check(f"look-up-{name}")


def test_directory_down(own_slapd, visitor_at):
    """Signing in while the directory is down: the page says so and who to ask."""
    with served(make_app(own_slapd, **LOOK)) as running:
        own_slapd.stop()
        visitor = visitor_at(running.url)
        visitor.sign_in("bob")
        assert "not answering" in visitor.page.locator("#login-error").inner_text()
        assert "4357" in visitor.page.locator(".help").inner_text()
        visitor.check("directory-down")


def test_a_german_browser_gets_the_portal_in_german(portal, visitor_at):
    """Chromium set to German: the pages say lang="de" and read in German, still clean."""
    visitor = visitor_at(portal.url, locale="de-DE")
    visitor.open("/login")
    assert visitor.page.get_attribute("html", "lang") == "de"
    assert visitor.page.locator("h1").inner_text() == "Anmelden"
    visitor.check("login-de")
    assert "Example GmbH" in visitor.page.locator("footer").inner_text()
    visitor.sign_in("alice")
    assert visitor.page.locator("#account").inner_text() == "Ihr Konto"
    # The texts settings give in German too: the tiles, their category, the pages.
    assert "Spesen" in visitor.page.locator(".launcher").first.inner_text()
    assert visitor.page.locator(".launcher h2").first.text_content() == "Alltag"
    assert "Mitarbeiterhandbuch" in visitor.page.locator("main").inner_text()
    visitor.check("home-de")


def test_must_change_password_then_change_it_in_the_portal(visitor_at):
    """reset (pwdReset) signs in: the page offers the portal's own change page, with her name
    filled in; a too-short password is refused in plain words with the field marked; a good
    one signs her in."""
    server = start_slapd(**trees.ppolicy_options())
    server.modify(f"dn: {trees.PPOLICY_DEFAULT_DN}\nchangetype: modify\n"
                  "replace: pwdMinLength\npwdMinLength: 10\n-\n"
                  "replace: pwdCheckQuality\npwdCheckQuality: 1\n")  # fmt: skip
    try:
        app = example_app("ppolicy", server, PASSWORD_CHANGE_URL="",
                          **{key: LOOK[key] for key in ("HELP_TEXT", "HELP_URL")})  # fmt: skip
        with served(app) as running:
            visitor = visitor_at(running.url)
            visitor.sign_in("reset", "reset-secret")
            assert visitor.page.locator("a.button").inner_text() == "Change your password"
            visitor.check("must-change")
            with visitor.page.expect_navigation():
                visitor.page.click("a.button")
            assert visitor.page.input_value("#username") == "reset"
            visitor.page.wait_for_function("document.activeElement.id === 'current'",
                                           timeout=5000)  # fmt: skip
            visitor.check("password")
            for new in ("short", "reset-new-long-secret"):
                visitor.page.fill("#current", "reset-secret")
                visitor.page.fill("#new", new)
                visitor.page.fill("#confirm", new)
                with visitor.page.expect_navigation():
                    visitor.page.click("main button[type=submit]")
                if new == "short":
                    assert "too short" in visitor.page.locator("#password-error").inner_text()
                    assert visitor.page.get_attribute("#new", "aria-invalid") == "true"
                    visitor.check("password-refused")
            assert visitor.page.url == running.url + "/"
            assert "Your password has been changed" in visitor.page.locator("main").inner_text()
            visitor.check("password-changed")
    finally:
        server.cleanup()


def test_screenshots_in_the_readme_exist():
    """The README shows the pages: the files it names are committed."""
    readme = (ROOT / "README.md").read_text()
    named = [line.split("(")[1].split(")")[0] for line in readme.splitlines()
             if line.startswith("![") and "screenshots/" in line]  # fmt: skip
    assert named, "the README shows screenshots"
    for name in named:
        assert Path(ROOT, name).is_file(), name
