"""The SSO home page, configured group pages and the group_required decorator."""

from __future__ import annotations

import pytest

from portal.access import group_required
from tests.conftest import AuthActions, make_app


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
        assert "not in a group that may open this page" in response.get_data(as_text=True)


def test_page_shows_its_body_and_groups_from_settings(client, auth):
    """A page's body and the groups it is open to come from settings."""
    auth.login("frank")
    body = client.get("/pages/finance").get_data(as_text=True)
    assert "Quarterly figures and budgets" in body
    assert "Open to: finance" in body


def test_markup_in_a_page_body_is_shown_as_escaped_text(slapd):
    """A page body containing a script tag is shown as text, never run as markup."""
    page = {
        "slug": "markup",
        "title": "Markup",
        "groups": ["staff"],
        "body": "Before <script>alert(1)</script> after",
    }
    app = make_app(slapd, PAGES=[page])
    try:
        client = app.test_client()
        AuthActions(client).login("alice")
        response = client.get("/pages/markup")
    finally:
        app.extensions["portal.directory"].close()
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert" not in body


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
