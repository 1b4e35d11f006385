"""The home page's launcher: APPS shown to exactly the people ACCESS_RULES let open them, by
category; the start-up check for apps nobody could open; the account area."""

from __future__ import annotations

import re

import pytest

from portal import create_app
from portal.settings import ConfigError
from tests.conftest import AuthActions, demo_settings, make_app

RULES = [
    {"paths": ["/app/engineering"], "groups": ["engineering"], "policy": "allow"},
    {"paths": ["/app/engineering"], "policy": "deny"},
    {"hosts": ["grafana.example.org"], "groups": ["engineering"], "policy": "allow"},
    {"hosts": ["grafana.example.org"], "policy": "deny"},
]
APPS = [
    {"title": "Company wiki", "url": "/app/wiki/", "category": "Everyday", "icon": "book.svg",
     "description": "Policies and how-tos."},
    {"title": "Runbooks", "url": "/app/engineering/runbooks/", "category": "Engineering"},
    {"title": "Grafana", "url": "https://grafana.example.org/d/home", "category": "Engineering"},
    {"title": "Budgets", "url": "/app/finance/", "category": "Finance", "groups": ["finance"]},
    {"title": "Time sheets", "url": "/app/time/"},
]  # fmt: skip


def tiles(body: str) -> dict[str, list[str]]:
    """{category: [app titles]} as the home page shows them, in order."""
    found = {}
    for section in re.findall(r'<section class="launcher".*?</section>', body, re.S):
        category = re.search(r"<h2[^>]*>(.*?)</h2>", section).group(1)
        found[category] = re.findall(r'<span class="title">(.*?)</span>', section)
    return found


def home_of(app, username: str) -> str:
    client = app.test_client()
    assert AuthActions(client).login(username).status_code == 302
    return client.get("/").get_data(as_text=True)


@pytest.fixture(scope="module")
def launcher_app(slapd):
    app = make_app(slapd, ACCESS_RULES=RULES, APPS=APPS)
    yield app
    app.extensions["portal.directory"].close()


def test_each_person_sees_the_apps_the_rules_let_them_open(launcher_app):
    """alice (engineering, staff) sees the engineering apps; bob (staff) does not, and
    neither sees the finance app (its groups); apps without a category come under "Apps"."""
    assert tiles(home_of(launcher_app, "alice")) == {
        "Everyday": ["Company wiki"],
        "Engineering": ["Runbooks", "Grafana"],
        "Apps": ["Time sheets"],
    }
    assert tiles(home_of(launcher_app, "bob")) == {
        "Everyday": ["Company wiki"],
        "Apps": ["Time sheets"],
    }


def test_the_launcher_agrees_with_auth_verify_for_every_tile(launcher_app):
    """For each app, shown on a person's home page exactly when /auth/verify allows its url."""

    for username in ("alice", "bob", "frank"):
        client = launcher_app.test_client()
        assert AuthActions(client).login(username).status_code == 302
        shown = {title for titles in tiles(client.get("/").get_data(as_text=True)).values()
                 for title in titles}  # fmt: skip
        for app in APPS:
            # As nginx asks for that url (the portal's own host for a path: localhost here).
            url = app["url"] if "://" in app["url"] else "http://localhost" + app["url"]
            answer = client.get(
                "/auth/verify", headers={"X-Original-URL": url, "X-Original-Method": "GET"}
            )
            verify_allows = answer.status_code == 200
            in_groups = not app.get("groups") or username == "frank"  # frank is in finance
            assert (app["title"] in shown) == (verify_allows and in_groups), (username, app)


def test_a_tile_links_to_its_app_with_icon_or_initial(launcher_app):
    body = home_of(launcher_app, "alice")
    assert '<a class="tile" href="/app/wiki/">' in body
    assert 'src="/static/icons/book.svg"' in body
    assert '<span class="icon initial" aria-hidden="true">R</span>' in body
    assert '<span class="description">Policies and how-tos.</span>' in body


def test_an_app_no_rule_allows_under_default_deny_stops_the_start():
    """Default deny and an app whose url no allow rule covers: nobody could open it."""
    settings = demo_settings() | {
        "ENV": "development",
        "ACCESS_DEFAULT_POLICY": "deny",
        "ACCESS_RULES": [{"paths": ["/app/wiki"], "policy": "allow", "groups": ["staff"]}],
        "APPS": [{"title": "Wiki", "url": "/app/wiki/"},
                 {"title": "Grafana", "url": "https://grafana.example.org/"}],
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"APPS\[2\].*grafana.example.org"):
        create_app(settings)
    settings["ACCESS_RULES"].append({"hosts": ["grafana.example.org"], "policy": "allow"})
    create_app(settings)


def test_an_app_whose_groups_hide_a_door_the_rules_open_is_warned_of(slapd, caplog):
    """Budgets' tile is for finance, but no rule closes /app/finance/ to others: start-up and
    `portal check` say so, naming the app and who may open it. Guarded by rules, or by rules
    that name the same groups, nothing is said; a rule that opens it to engineering is named."""
    app = make_app(slapd, ACCESS_RULES=RULES, APPS=APPS)
    try:
        checked = app.test_cli_runner().invoke(args=["check"]).output
    finally:
        app.extensions["portal.directory"].close()
    said = [r.getMessage() for r in caplog.records if "do not guard it" in r.getMessage()]
    assert said == [
        "settings: APPS[4] (Budgets): its tile is shown to members of finance only, but "
        "ACCESS_RULES let anyone signed in open /app/finance/: an app's groups do not guard it; "
        "add a rule for its url with those groups (or guard it at the proxy with ?group=)"
    ]
    assert "settings: warning: APPS[4] (Budgets)" in checked
    for rules, warned in (
        ([{"paths": ["/app/finance"], "groups": ["finance"], "policy": "allow"},
          {"paths": ["/app/finance"], "policy": "deny"}], ""),
        ([{"paths": ["/app/finance"], "groups": ["finance", "engineering"], "policy": "allow"},
          {"paths": ["/app/finance"], "policy": "deny"}], "members of engineering"),
    ):  # fmt: skip
        caplog.clear()
        make_app(slapd, ACCESS_RULES=RULES + rules, APPS=APPS).extensions[
            "portal.directory"
        ].close()
        said = [r.getMessage() for r in caplog.records if "do not guard it" in r.getMessage()]
        assert (said == []) if not warned else (len(said) == 1 and warned in said[0]), said


def test_the_shipped_settings_warn_of_no_unguarded_app(slapd, caplog):
    """The demo's Budgets tile is guarded by rules as its groups say, and no rule of its
    stands behind another that always decides first."""
    make_app(slapd).extensions["portal.directory"].close()
    assert not [r for r in caplog.records if "do not guard it" in r.getMessage()]
    assert not [r for r in caplog.records if "never decides" in r.getMessage()]


def test_a_rule_an_earlier_rule_always_decides_first_is_named(app, slapd, caplog):
    """An allow of "/" before a deny of "/app/wiki" leaves the wiki open (tried as a new
    administrator would: start-up and `portal check` said nothing, and only access-check
    showed rule 1 deciding): both name the rule that never decides and the one before it.
    The specific rule first, or a first rule of one group only, is not named."""
    wiki_denied = {"paths": ["/app/wiki"], "policy": "deny"}
    for rules, named in (
        ([{"paths": ["/"], "policy": "allow"}, wiki_denied], "rule 1: allow paths=/"),
        ([{"paths": ["/app"], "methods": ["GET"], "policy": "allow"},
          {"paths": ["/app/wiki"], "methods": ["GET"], "policy": "deny"}], "rule 1: allow"),
        ([wiki_denied, {"paths": ["/"], "policy": "allow"}], ""),
        ([{"paths": ["/"], "groups": ["staff"], "policy": "allow"}, wiki_denied], ""),
        ([{"paths": ["/"], "methods": ["GET"], "policy": "allow"}, wiki_denied], ""),
        ([{"hosts": ["*.corp.example"], "policy": "allow"},
          {"hosts": ["wiki.corp.example"], **wiki_denied}], "hosts=*.corp.example"),
        ([{"hosts": ["wiki.corp.example"], "policy": "allow"},
          {"hosts": ["*.corp.example"], **wiki_denied}], ""),
    ):  # fmt: skip
        caplog.clear()
        made = make_app(slapd, ACCESS_RULES=rules)
        made.extensions["portal.directory"].close()
        said = [r.getMessage() for r in caplog.records if "never decides" in r.getMessage()]
        if not named:
            assert said == [], (rules, said)
            continue
        assert len(said) == 1 and "ACCESS_RULES[2] never decides anything" in said[0], said
        assert named in said[0], said
        checked = made.test_cli_runner().invoke(args=["check"]).output
        assert "ACCESS_RULES[2] never decides anything" in checked, checked


@pytest.mark.parametrize(
    "app, fix",
    [({"title": "x", "url": "javascript:alert(1)"}, r"APPS\[1\]\.url"),
     ({"title": "x", "url": "//evil.example/"}, r"APPS\[1\]\.url"),
     ({"title": "", "url": "/app/x/"}, r"APPS\[1\]\.title"),
     ({"title": "x", "url": "/app/x/", "group": ["staff"]}, r"unknown key \['group'\]"),
     ({"title": "x", "url": "/app/x/", "icon": "../secret.svg"}, r"APPS\[1\]\.icon"),
     ({"title": "x", "url": "/app/x/", "icon": "missing.svg"}, r"no file static/icons/missing"),
     ({"title": "x", "url": "/app/x/", "groups": "staff"}, r"APPS\[1\]\.groups"),
     ({"title": "x", "url": "/\\evil.example/wiki"}, r"APPS\[1\]\.url"),
     # Paths a browser would send otherwise than written: the launcher and /auth/verify
     # would judge two different paths.
     ({"title": "x", "url": "/app/tools/a|b"}, r"as browsers send it"),
     ({"title": "x", "url": "https://dash.example.org/d/{uid}"}, r"as browsers send it"),
     ({"title": "x", "url": "/app/a/./b"}, r"as browsers send it"),
     ({"title": "x", "url": "/app/%2e%2e/x"}, r"as browsers send it"),
     ({"title": "x", "url": "/app/x;y"}, r"as browsers send it")],
)  # fmt: skip
def test_bad_apps_are_refused_at_start_naming_the_key(app, fix):
    with pytest.raises(ConfigError, match=fix):
        create_app(demo_settings() | {"ENV": "development", "APPS": [app]})


def test_the_coverage_check_reads_paths_only_where_a_rule_does():
    """A host whose rules name no paths allows any path there, as /auth/verify decides."""
    from portal.access.rules import RuleSet

    rules = RuleSet([{"hosts": ["wiki.example.org"], "groups": ["staff"], "policy": "allow"},
                     {"hosts": ["portal.example.org"], "paths": ["/app/private"],
                      "policy": "deny"}], "deny")  # fmt: skip
    for path in ("/pages/A%2FB", "/a/./b", "/x;y"):
        assert rules.decide(["staff"], "wiki.example.org", path).allowed
        assert rules.could_allow("wiki.example.org", path), path
    assert not rules.could_allow("other.example.org", "/")


def test_three_hundred_groups_stay_readable(slapd, monkeypatch):
    """An AD account in 300 groups: the list is folded (a count to open), sorted, and in a
    box of its own, not one 300-name line (test_browser.py checks it scrolls down, in a
    browser)."""
    from portal import accounts

    app = make_app(slapd)
    client = app.test_client()
    assert AuthActions(client).login("alice").status_code == 302
    with app.app_context():
        entry = accounts.cached_attributes("alice")
        entry["groups"] = ["staff"] + [f"team-{number:03d}" for number in range(299)]
        accounts.remember(entry)
    body = client.get("/").get_data(as_text=True)
    assert re.search(r"<details>\s*<summary[^>]*>300 groups</summary>", body)
    listed = re.findall(r"<li>(team-\d+|staff)</li>", body)
    assert listed == sorted(listed) and len(listed) == 300
    app.extensions["portal.directory"].close()


OWN_PAGE_APPS = [
    {"title": "Handbook", "url": "/pages/handbook", "category": "Portal"},
    {"title": "Finance page", "url": "/pages/finance", "category": "Portal"},
    {"title": "Status", "url": "/admin/status", "category": "Portal"},
    {"title": "Gone page", "url": "/pages/no-such-page", "category": "Portal"},
    {"title": "Wiki", "url": "/app/wiki/", "category": "Portal"},
]
#: Finance may not read the handbook (a rule on the page's address, not its groups).
HANDBOOK_CLOSED_TO_FINANCE = [{"paths": ["/pages/handbook"], "groups": ["finance"],
                               "policy": "deny"}]  # fmt: skip


def pages_listed(body: str) -> list[str]:
    """The titles the home page lists under "Pages"."""
    section = re.search(r"<h2>Pages</h2>(.*?)</section>", body, re.S)
    return re.findall(r'<li><a href="[^"]*">(.*?)</a></li>', section.group(1)) if section else []


def test_tiles_and_pages_of_the_portal_itself_show_only_to_whom_they_open(slapd):
    """Tiles for the portal's own pages (a page's groups, the admin pages, a slug that names no
    page) and the home page's list of pages follow what opening them does, ACCESS_RULES
    included: a tile or link is shown exactly when its address answers 200 for that person,
    and `portal whois` says the same (bob was shown the finance page and the admin status
    page, frank the handbook a rule closes to finance: each opened to a 403)."""
    app = make_app(slapd, APPS=OWN_PAGE_APPS, ACCESS_RULES=HANDBOOK_CLOSED_TO_FINANCE)
    try:
        for username in ("alice", "bob", "erin", "frank"):
            client = app.test_client()
            assert AuthActions(client).login(username).status_code == 302
            body = client.get("/").get_data(as_text=True)
            shown = set(tiles(body).get("Portal", []))
            for tile in OWN_PAGE_APPS[:-1]:  # the portal's own addresses (not the wiki's)
                opens = client.get(tile["url"]).status_code == 200
                assert (tile["title"] in shown) == opens, (username, tile["url"])
            assert "Wiki" in shown
            listed = pages_listed(body)
            for page in demo_settings()["PAGES"]:
                opens = client.get(f"/pages/{page['slug']}").status_code == 200
                assert (page["title"]["en"] in listed) == opens, (username, page["slug"])
            whois = app.test_cli_runner().invoke(args=["whois", username]).output
            for tile in OWN_PAGE_APPS:
                [line] = [line for line in whois.splitlines() if f"({tile['url']})" in line]
                assert line.split()[0] == ("shown" if tile["title"] in shown else "hidden"), line
        # Who sees what, spelled out: the finance page for frank only, status for erin only,
        # the handbook for everyone but frank (finance), the gone page for nobody.
        assert "Finance page" not in tiles(home_of(app, "bob"))["Portal"]
        assert tiles(home_of(app, "frank"))["Portal"] == ["Finance page", "Wiki"]
        assert tiles(home_of(app, "erin"))["Portal"] == ["Handbook", "Status", "Wiki"]
        assert "Employee handbook" not in pages_listed(home_of(app, "frank"))
        why = app.test_cli_runner().invoke(args=["whois", "bob"]).output
        assert "no page of PAGES has the slug no-such-page" in why, why
    finally:
        app.extensions["portal.directory"].close()


def test_whois_judges_pages_where_the_portal_is_mounted(slapd):
    """Mounted under /portal, a rule closing /portal/pages/handbook to finance: the home page
    hides it from frank and `portal whois frank` says it is closed (it judged /pages/handbook,
    which no rule names, and called it open)."""
    closed = [{"paths": ["/portal/pages/handbook"], "groups": ["finance"], "policy": "deny"}]
    app = make_app(slapd, APPLICATION_ROOT="/portal", ACCESS_RULES=closed)
    try:
        client = app.test_client()
        client.environ_base["SCRIPT_NAME"] = "/portal"
        assert AuthActions(client).login("frank").status_code == 302
        assert client.get("/pages/handbook").status_code == 403
        assert "Employee handbook" not in pages_listed(client.get("/").get_data(as_text=True))
        whois = app.test_cli_runner().invoke(args=["whois", "frank"]).output
        [line] = [line for line in whois.splitlines() if "handbook" in line]
        assert line.split()[0] == "closed", line
    finally:
        app.extensions["portal.directory"].close()


def test_tiles_to_pages_the_portal_does_not_have_are_warned_of(slapd, caplog):
    """A tile for /pages/finance/ or /ADMIN/status was shown to everyone and opened "Not
    found"; one for a slug no page has was shown to nobody; neither was said at start-up or
    by `portal check`. Now each is named; the portal's real pages and an app the proxy serves
    on the portal's host (the wiki) are not."""
    missing = [
        {"title": "Finance, slash", "url": "/pages/finance/", "category": "Portal"},
        {"title": "Status, capitals", "url": "/ADMIN/status", "category": "Portal"},
    ]
    # Apps the proxy serves on the portal's host whose paths merely begin with the same
    # letters: no warning.
    lookalikes = [{"title": "Adminer", "url": "/adminer/", "category": "Tools"},
                  {"title": "Pagespeed", "url": "/pagespeed/", "category": "Tools"}]  # fmt: skip
    app = make_app(slapd, APPS=OWN_PAGE_APPS + missing + lookalikes)
    try:
        checked = app.test_cli_runner().invoke(args=["check"]).output
        erin = app.test_client()  # an administrator, in every group a page asks for
        assert AuthActions(erin).login("erin").status_code == 302
        for tile in missing:
            assert erin.get(tile["url"]).status_code == 404, tile["url"]
    finally:
        app.extensions["portal.directory"].close()
    said = [r.getMessage() for r in caplog.records if "APPS[" in r.getMessage()]
    assert said == [
        "settings: APPS[4] (Gone page): no page of PAGES has the slug 'no-such-page', so its "
        "tile (/pages/no-such-page) is shown to nobody",
        "settings: APPS[6] (Finance, slash): the portal has no page at '/pages/finance/', so its "
        'tile opens "Not found" (the portal\'s pages are /pages/<slug>, its admin pages '
        "/admin/status and /admin/users/<name>)",
        "settings: APPS[7] (Status, capitals): the portal has no page at '/ADMIN/status', so its "
        'tile opens "Not found" (the portal\'s pages are /pages/<slug>, its admin pages '
        "/admin/status and /admin/users/<name>)",
    ], said
    for line in said:
        assert f"settings: warning: {line.removeprefix('settings: ')}" in checked, checked
