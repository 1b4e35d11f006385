"""The SSO home page, configured group pages and the group_required decorator."""

from __future__ import annotations

import pytest

from portal.access import group_required
from tests.conftest import AuthActions, demo_settings, make_app

PAGES = demo_settings()["PAGES"]


@pytest.mark.parametrize(
    ("username", "opens", "refused"),
    [
        ("alice", ["handbook", "engineering"], ["finance", "admin-guide"]),
        ("bob", ["handbook"], ["engineering", "finance", "admin-guide"]),
        ("frank", ["handbook", "finance"], ["engineering", "admin-guide"]),
        ("erin", ["handbook", "admin-guide"], ["engineering", "finance"]),
    ],
)
def test_each_person_sees_and_opens_exactly_their_pages(client, auth, username, opens, refused):
    """Home lists the pages a person's groups open; the others answer a friendly 403."""
    auth.login(username)
    home = client.get("/").get_data(as_text=True)
    for slug in opens:
        assert f'href="/pages/{slug}"' in home
        assert client.get(f"/pages/{slug}").status_code == 200
    for slug in refused:
        assert f'href="/pages/{slug}"' not in home
        response = client.get(f"/pages/{slug}")
        assert response.status_code == 403
        # The refusal names the group to ask for (the page shows it to members as "Open to").
        group = next(page["groups"][0] for page in PAGES if page["slug"] == slug)
        assert f"is open to members of the group {group}, and your account is not in it" in (
            response.get_data(as_text=True)
        )


def test_a_page_open_to_several_groups_names_each_when_it_refuses(slapd):
    """Refused, a page open to two groups lists both (and the HTML in a name stays text)."""
    page = {"slug": "ops", "title": "Ops <b>room</b>", "groups": ["engineering", "finance"],
            "body": "For the on-call rota."}  # fmt: skip
    app = make_app(slapd, PAGES=[page])
    try:
        client = app.test_client()
        AuthActions(client).login("bob")
        english = client.get("/pages/ops")
        german = client.get("/pages/ops", headers={"Accept-Language": "de"})
        as_json = client.get("/pages/ops", headers={"Accept": "application/json"})
    finally:
        app.extensions["portal.directory"].close()
    assert english.status_code == german.status_code == as_json.status_code == 403
    assert (
        "“Ops &lt;b&gt;room&lt;/b&gt;” is open to members of the groups engineering or "
        "finance, and your account is in none of them"
    ) in english.get_data(as_text=True)
    assert "Mitglieder der Gruppen engineering oder finance" in german.get_data(as_text=True)
    assert "engineering or finance" in as_json.get_json()["message"]


def test_an_admin_page_refused_says_it_is_for_administrators(client, auth):
    """A person outside ACCESS_ADMIN_GROUPS is told what the page is for, and which group its
    administrators are in (who to ask)."""
    auth.login("alice")
    response = client.get("/admin/status")
    assert response.status_code == 403
    assert ("This page is for the portal&#39;s administrators (members of portal-admins)."
            in response.get_data(as_text=True))  # fmt: skip


def test_page_shows_its_body_and_groups_from_settings(client, auth):
    """A page's body and the groups it is open to come from settings."""
    auth.login("frank")
    body = client.get("/pages/finance").get_data(as_text=True)
    assert "Quarterly figures and budgets" in body
    assert "Open to: finance" in body


def alices_view(slapd, page: dict) -> tuple[int, str]:
    """The status and body of the configured `page` as alice opens it."""
    app = make_app(slapd, PAGES=[page])
    try:
        client = app.test_client()
        AuthActions(client).login("alice")
        response = client.get(f"/pages/{page['slug']}")
    finally:
        app.extensions["portal.directory"].close()
    return response.status_code, response.get_data(as_text=True)


def test_markup_in_a_page_body_is_shown_as_escaped_text(slapd):
    """A page body containing a script tag is shown as text, never run as markup."""
    page = {
        "slug": "markup",
        "title": "Markup",
        "groups": ["staff"],
        "body": "Before <script>alert(1)</script> after",
    }
    status, body = alices_view(slapd, page)
    assert status == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert" not in body


def test_a_line_break_in_a_page_body_stays_one_and_a_blank_line_starts_a_paragraph(slapd):
    """A rota written line by line was shown on one line ("Monday: Alice Tuesday: Bob"): each
    line break is kept, a blank line still starts a paragraph, markup in a line is text."""
    page = {"slug": "oncall", "title": "On call", "groups": ["staff"],
            "body": "This week:\nMonday: Alice\nTuesday: <b>Bob</b>\n\nCall 4357."}  # fmt: skip
    status, body = alices_view(slapd, page)
    assert status == 200 and (
        "<p>This week:<br>Monday: Alice<br>Tuesday: &lt;b&gt;Bob&lt;/b&gt;</p><p>Call 4357.</p>"
        in (body)
    ), body


def test_page_from_template(client, auth):
    """A page can be rendered from a template named in settings."""
    auth.login("erin")
    assert "A page rendered from a template" in client.get("/pages/admin-guide").get_data(
        as_text=True
    )


def test_unknown_page_is_404(client, auth):
    """A slug that is not configured is a 404 page."""
    auth.login("alice")
    assert client.get("/pages/no-such-page").status_code == 404


def test_group_names_compare_case_insensitively(slapd):
    """A page declared for "ENGINEERING" opens for a member of "engineering"."""
    page = {"slug": "eng", "title": "Eng", "groups": ["ENGINEERING"], "body": "x"}
    app = make_app(slapd, PAGES=[page], ACCESS_ALLOWED_GROUPS=["Staff"])
    client = app.test_client()

    AuthActions(client).login("alice")
    assert client.get("/pages/eng").status_code == 200


def test_group_required_decorator_guards_views_written_in_code(slapd):
    """group_required lets members in, refuses others with 403, sends strangers to login."""
    app = make_app(slapd)

    @app.route("/finance-tool")
    @group_required("Finance", "auditors")
    def finance_tool():
        return "finance tool"

    anonymous = app.test_client()
    response = anonymous.get("/finance-tool")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=%2Ffinance-tool")
    frank, alice = app.test_client(), app.test_client()
    AuthActions(frank).login("frank")
    AuthActions(alice).login("alice")
    assert frank.get("/finance-tool").get_data(as_text=True) == "finance tool"
    assert alice.get("/finance-tool").status_code == 403


def test_json_clients_get_json_errors(client, auth):
    """An API client that asks for JSON gets the error as JSON."""
    auth.login("alice")
    response = client.get("/pages/finance", headers={"Accept": "application/json"})
    assert response.status_code == 403
    assert response.get_json()["status"] == 403


def test_default_policy_deny_closes_apps_but_not_the_portal_itself(slapd):
    """ACCESS_DEFAULT_POLICY = "deny" is for the apps behind the proxy: the home page, the
    pages (by their own groups) and the admin pages still open; a rule that matches a portal
    page still decides it; an app no rule names stays closed."""
    rules = [
        {"paths": ["/pages/finance"], "policy": "deny"},
        {"paths": ["/app/board/"], "policy": "allow"},
    ]
    app = make_app(slapd, ACCESS_DEFAULT_POLICY="deny", ACCESS_RULES=rules, APPS=[])
    try:
        alice, erin = app.test_client(), app.test_client()
        AuthActions(alice).login("alice")
        AuthActions(erin).login("erin")
        assert alice.get("/").status_code == 200
        assert alice.get("/pages/engineering").status_code == 200
        assert alice.get("/pages/admin-guide").status_code == 403  # its own groups
        assert erin.get("/admin/status").status_code == 200
        frank = app.test_client()
        AuthActions(frank).login("frank")
        closed = frank.get("/pages/finance")  # the rule that matches, not its groups
        assert closed.status_code == 403
        assert "access rules close this page to your account" in closed.get_data(as_text=True)
        question = {"X-Original-URL": "https://apps.example.org/app/other/",
                    "X-Original-Method": "GET"}  # fmt: skip
        assert alice.get("/auth/verify", headers=question).status_code == 403
        question["X-Original-URL"] = "https://apps.example.org/app/board/"
        assert alice.get("/auth/verify", headers=question).status_code == 200
    finally:
        app.extensions["portal.directory"].close()
