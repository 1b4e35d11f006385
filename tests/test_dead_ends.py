"""Help at every dead end: the service desk (HELP_TEXT, HELP_URL) on the login problems, 403,
429 and 503 pages; a must-change page that always leads somewhere; the fields an error is
about, marked for screen readers; "Forgot your password?"."""

from __future__ import annotations

import re

import pytest

from portal.testing import trees
from tests.conftest import AuthActions, make_app, start_slapd
from tests.test_shaped_directories import example_app

HELP = {"HELP_TEXT": "Call the service desk on 4357.", "HELP_URL": "https://help.example.org/"}
HELP_LINK = '<a href="https://help.example.org/">Contact the service desk</a>'


def field(body: str, name: str) -> str:
    """The <input> tag of one form field."""
    return re.search(rf'<input id="{name}"[^>]*>', body).group(0)


@pytest.fixture(scope="module")
def help_app(slapd):
    app = make_app(slapd, PASSWORD_RESET_URL="https://reset.example.org/", **HELP)
    yield app
    app.extensions["portal.directory"].close()


def test_the_login_page_offers_help_and_a_reset_link(help_app):
    body = help_app.test_client().get("/login").get_data(as_text=True)
    assert "Call the service desk on 4357." in body and HELP_LINK in body
    assert '<a href="https://reset.example.org/">Forgot your password?</a>' in body


def test_without_help_settings_nothing_empty_is_shown(slapd):
    app = make_app(slapd, HELP_TEXT="", HELP_URL="")
    body = app.test_client().get("/login").get_data(as_text=True)
    assert 'class="help"' not in body and "Forgot your password?" not in body
    app.extensions["portal.directory"].close()


def test_a_wrong_password_marks_the_password_field_and_moves_the_cursor_there(help_app):
    """The name stays, the password field is the one described by the error, and has focus."""
    body = AuthActions(help_app.test_client()).login("alice", "wrong").get_data(as_text=True)
    password, username = field(body, "password"), field(body, "username")
    assert 'aria-invalid="true"' in password and 'aria-describedby="login-error"' in password
    assert "autofocus" in password and "autofocus" not in username
    assert "aria-invalid" not in username and 'value="alice"' in username
    assert '<p class="error" id="login-error" role="alert">Wrong username or password.</p>' in body
    assert "Call the service desk on 4357." in body


def test_an_empty_name_marks_the_name_field(help_app):
    body = AuthActions(help_app.test_client()).login("", "x").get_data(as_text=True)
    assert 'aria-invalid="true"' in field(body, "username")
    assert "autofocus" in field(body, "username")
    assert "aria-invalid" not in field(body, "password")


@pytest.mark.parametrize("username", ["carol", "dave"])
def test_a_refused_person_is_shown_who_to_ask(help_app, username):
    body = AuthActions(help_app.test_client()).login(username).get_data(as_text=True)
    assert HELP_LINK in body
    assert "aria-invalid" not in field(body, "password"), "the password was right"


def test_forbidden_and_outage_pages_offer_help(own_slapd):
    app = make_app(own_slapd, USER_STALE_GRACE=0, **HELP)
    bob = app.test_client()
    assert AuthActions(bob).login("bob").status_code == 302
    refused = bob.get("/pages/engineering")
    assert refused.status_code == 403 and HELP_LINK in refused.get_data(as_text=True)
    own_slapd.stop()
    down = AuthActions(app.test_client()).login("alice")
    assert down.status_code == 503 and HELP_LINK in down.get_data(as_text=True)
    app.extensions["portal.directory"].close()


def test_too_many_attempts_offers_help(slapd):
    app = make_app(slapd, THROTTLE_ACCOUNT_LIMIT="2 per minute", **HELP)
    client = app.test_client()
    answers = [AuthActions(client).login("alice", "wrong") for _ in range(3)]
    assert answers[-1].status_code == 429
    assert HELP_LINK in answers[-1].get_data(as_text=True)
    app.extensions["portal.directory"].close()


@pytest.fixture(scope="module")
def ppolicy_server():
    server = start_slapd(**trees.ppolicy_options())
    yield server
    server.cleanup()


@pytest.mark.parametrize(
    "settings, shown",
    [({"PASSWORD_CHANGE_URL": "https://pw.example.org/"},
      '<a class="button" href="https://pw.example.org/">Change your password</a>'),
     ({"PASSWORD_CHANGE_URL": ""}, '<a class="button" href="/password">Change your password</a>'),
     ({"PASSWORD_CHANGE_URL": "", "PASSWORD_SELF_SERVICE": False, **HELP}, HELP_LINK),
     ({"PASSWORD_CHANGE_URL": "", "PASSWORD_SELF_SERVICE": False, "HELP_TEXT": "",
       "HELP_URL": ""}, "Ask the service desk to reset your password")],
    ids=["change page", "own page", "help", "neither"],
)  # fmt: skip
def test_must_change_password_always_says_where_to_go(ppolicy_server, settings, shown):
    """reset (pwdReset in a real ppolicy directory) must change the password: a button to the
    change page elsewhere, else to the portal's own, else the service desk, else the plain
    advice: never a dead end."""
    app = example_app("ppolicy", ppolicy_server, **settings)
    response = AuthActions(app.test_client()).login("reset", "reset-secret")
    assert response.status_code == 403
    assert shown in response.get_data(as_text=True)
    app.extensions["portal.directory"].close()


def test_every_page_has_a_skip_link_and_notices_are_announced(help_app):
    client = help_app.test_client()
    AuthActions(client).login("alice")
    for path in ("/", "/logout", "/pages/finance"):
        body = client.get(path).get_data(as_text=True)
        assert '<a class="skip" href="#content">' in body and '<main id="content">' in body
    landing = help_app.test_client().get("/login?signed_out=1").get_data(as_text=True)
    assert '<p class="notice" role="status">You are signed out.</p>' in landing
