"""Sign-in and sign-out through the real forms against the real demo directory."""

from __future__ import annotations

import functools
import io
import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest
from werkzeug.datastructures import MultiDict

from portal import accounts
from tests.conftest import HOSTILE_NEXT, AuthActions, csrf_token_in, make_app, session_username

INJECTIONS = [
    "*",
    "*)(uid=*",
    "admin)(|(uid=*",
    "*)(objectClass=*))(&(uid=x",
    "a\\",
    "(",
    ")",
    "\\2a",
    "alice*",
    "*alice",
    "al*ce",
]


@pytest.fixture
def app_with(slapd, build_app):
    """Build the portal against the shared directory with overrides; close their pools after."""
    return functools.partial(build_app, slapd)


def cookie_names(response) -> set[str]:
    """The names of the cookies a response sets."""
    return {cookie.split("=", 1)[0] for cookie in response.headers.getlist("Set-Cookie")}


def set_cookie(response, name: str) -> str:
    """The one Set-Cookie header a response sends for the cookie `name`."""
    (header,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(name + "=")]
    return header


def cookie_attributes(header: str) -> dict[str, str]:
    """A Set-Cookie header's attributes (after the name=value pair), keys lower-cased."""
    attributes = {}
    for part in header.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        attributes[key.lower()] = value
    return attributes


def without_tokens(body: str) -> str:
    """A page body with its per-session CSRF token blanked, for comparing two answers."""
    return re.sub(r'value="[^"]*"', 'value=""', body)


def test_right_password_lands_on_home_with_name_email_groups_and_pages(client, auth):
    """A member of staff signs in and sees who they are and what they may open."""
    response = auth.login("alice")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    body = client.get("/").get_data(as_text=True)
    assert "Alice Liddell" in body
    assert "alice@example.org" in body
    assert "<li>engineering</li><li>staff</li>" in body
    assert 'href="/pages/handbook"' in body
    assert 'href="/pages/engineering"' in body
    assert 'href="/pages/finance"' not in body


def test_wrong_password_and_unknown_user_get_the_same_answer(app, auth):
    """Status, message and cookie names do not tell a wrong password from an unknown user."""
    wrong = auth.login("alice", "not-her-password")
    nobody = AuthActions(app.test_client()).login("nobody-here", "whatever")
    assert wrong.status_code == nobody.status_code == 401
    assert "Wrong username or password." in wrong.get_data(as_text=True)
    assert without_tokens(wrong.get_data(as_text=True)) == without_tokens(
        nobody.get_data(as_text=True)
    )
    assert cookie_names(wrong) == cookie_names(nobody)


@pytest.mark.parametrize(
    "username, advice, other",
    [("carol", "not in any group that may use the portal", "suspended"),
     ("dave", "suspended from the portal", "not in any group")],
)  # fmt: skip
def test_right_password_without_allowed_group_is_refused_plainly(
    client, auth, username, advice, other
):
    """carol (no allowed group) is told to ask for her team's group; dave (in the denied
    group) that he is suspended, not to ask for a group he has. Neither is signed in."""
    response = auth.login(username)
    assert response.status_code == 403
    body = response.get_data(as_text=True)
    assert advice in body and other not in body
    assert client.get("/").status_code == 302


@pytest.mark.parametrize("password", ["", "   "])
def test_empty_password_never_reaches_the_directory(auth, ldap_spy, password):
    """An empty or blank password is refused before any search or bind."""
    token = auth.csrf_token()
    ldap_spy.reset()
    response = auth.client.post(
        "/login", data={"csrf_token": token, "username": "alice", "password": password}
    )
    assert response.status_code in (400, 401)
    assert ldap_spy.operations == 0
    assert auth.client.get("/").status_code == 302


@pytest.mark.parametrize("username", ["", "   ", "al\x00ice", "al\r\nice", "al\tice", "a" * 300])
def test_unusable_username_never_reaches_the_directory(auth, ldap_spy, username):
    """Empty, control-character and over-long names get a 4xx and cause no LDAP traffic."""
    token = auth.csrf_token()
    ldap_spy.reset()
    response = auth.client.post(
        "/login", data={"csrf_token": token, "username": username, "password": "alice-secret"}
    )
    assert response.status_code in (400, 401)
    assert ldap_spy.operations == 0


@pytest.mark.parametrize("username", INJECTIONS)
def test_filter_injection_finds_nobody_and_binds_nobody(auth, ldap_spy, username):
    """Filter metacharacters are escaped: the search matches no one and no bind is sent."""
    token = auth.csrf_token()
    ldap_spy.reset()
    response = auth.client.post(
        "/login", data={"csrf_token": token, "username": username, "password": "alice-secret"}
    )
    assert response.status_code == 401
    assert ldap_spy.user_binds() == []
    # A backslash reads as DOMAIN\\name: an unknown domain is refused before any search.
    assert len(ldap_spy.filters()) == (0 if "\\" in username else 1)
    for sent in ldap_spy.filters():
        value = sent.removeprefix("(&(objectClass=inetOrgPerson)(uid=").removesuffix("))")
        assert not set(value) & set("*()"), f"unescaped metacharacter in {sent}"
        assert re.fullmatch(r"(?:[^\\]|\\[0-9a-f]{2})*", value), f"bad escape in {sent}"


def test_one_identity_whatever_the_spelling(app, auth):
    """`Alice` and ` alice ` sign in as alice with the same session id and cache key."""
    response = auth.login(" Alice ", "alice-secret")
    assert response.status_code == 302
    assert session_username(auth.client) == "alice"
    with app.app_context():
        assert accounts.cached_attributes("alice")["groups"] == ["engineering", "staff"]


def test_login_without_csrf_token_is_rejected(client, ldap_spy):
    """A login POST without the CSRF token is a 400 and reaches no directory."""
    client.get("/login")
    ldap_spy.reset()
    response = client.post("/login", data={"username": "alice", "password": "alice-secret"})
    assert response.status_code == 400
    assert ldap_spy.operations == 0


def test_oversized_login_is_refused_before_ldap(auth, ldap_spy):
    """A 1 MB password is refused by the request size limit."""
    token = auth.csrf_token()
    ldap_spy.reset()
    response = auth.client.post(
        "/login", data={"csrf_token": token, "username": "alice", "password": "x" * 1_000_000}
    )
    assert response.status_code == 413
    assert ldap_spy.operations == 0


#: What the sign-in page says when its CSRF token was refused (the form is shown again).
CSRF_REFUSED = "The sign-in form had expired"


@pytest.mark.parametrize(
    "body",
    [
        {"username": ["alice"], "password": "alice-secret"},
        {"username": 5, "password": 5},
        {"username": True},
        [1, 2],
        "x",
    ],
    ids=["list-username", "numbers", "bool-no-password", "json-array", "json-string"],
)
def test_json_body_instead_of_form_is_a_clear_4xx_and_no_login(auth, body):
    """A login posted as JSON with a valid CSRF header is refused with a 4xx and signs no one in."""
    token = auth.csrf_token()
    response = auth.client.post("/login", json=body, headers={"X-CSRFToken": token})
    assert response.status_code in (400, 401), response.get_data(as_text=True)[:500]
    assert CSRF_REFUSED not in response.get_data(as_text=True), "the token was not accepted"
    assert auth.client.get("/").status_code == 302


def test_uploaded_file_as_username_is_a_clear_4xx_and_no_login(auth):
    """A multipart login whose username is a file upload is refused with a 4xx, never a 500."""
    token = auth.csrf_token()
    response = auth.client.post(
        "/login",
        data={
            "username": (io.BytesIO(b"alice"), "u.txt"),
            "password": "alice-secret",
            "csrf_token": token,
        },
        headers={"X-CSRFToken": token},
    )
    assert response.status_code in (400, 401), response.get_data(as_text=True)[:500]
    assert CSRF_REFUSED not in response.get_data(as_text=True), "the token was not accepted"
    assert auth.client.get("/").status_code == 302


def test_repeated_fields_do_not_break_login(auth):
    """A duplicated username field is a clear 400: which of the two would be meant?"""
    token = auth.csrf_token()
    response = auth.client.post(
        "/login",
        data=MultiDict(
            [
                ("csrf_token", token),
                ("username", "nobody"),
                ("username", "alice"),
                ("password", "alice-secret"),
            ]
        ),
    )
    assert response.status_code == 400


def test_anonymous_visitor_is_sent_to_login_and_back(auth):
    """A protected page sends an anonymous visitor to /login with next, and back after login."""
    response = auth.client.get("/pages/handbook")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=%2Fpages%2Fhandbook")
    page = auth.client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'value="/pages/handbook"' in page
    assert auth.login("alice", next="/pages/handbook").headers["Location"] == "/pages/handbook"


def test_the_empty_form_is_rendered_once_and_filled_in_per_visitor(app):
    """The first-visit page (and every app's redirect to /login?next=...) is rendered once per
    language and then filled in: each visitor still gets their own CSRF token and `next`,
    escaped as the template escapes it, byte for byte the page a full rendering gives."""
    from flask import render_template, template_rendered

    from portal.auth.forms import LoginForm

    rendered = []

    def note(sender, template, context, **extra):
        rendered.append(template.name)

    template_rendered.connect(note, app)
    tricky = "/pages/handbook?q=\"><b>&'"
    pages = []
    for language in ("en", "de", "en"):
        client = app.test_client()
        answer = client.get("/login", query_string={"next": tricky},
                            headers={"Accept-Language": language})  # fmt: skip
        assert answer.status_code == 200
        pages.append((language, answer.get_data(as_text=True)))
    assert rendered.count("login.html") == 2, "once per language"
    tokens = {csrf_token_in(page) for _, page in pages}
    assert len(tokens) == 3, "every visitor has a token of their own"
    for language, page in pages:
        token = csrf_token_in(page)
        with app.test_request_context(headers={"Accept-Language": language}):
            form = LoginForm(formdata=None, next=tricky)
            expected = render_template(
                "login.html", form=form, csrf_token=lambda token=token: token, error=None,
                signed_out=None, must_change=False, wrong_password=False, missing=False,
            )  # fmt: skip
        assert page == expected
    assert "&#34;&gt;&lt;b&gt;&amp;&#39;" in pages[0][1]


def test_a_remembered_or_flashed_visitor_gets_a_page_of_their_own(app, auth):
    """The shared empty form is never a signed-in person's page nor one with their messages:
    a remember-me sign-in (not fresh) and a visitor with a flashed message opening /login
    first see their own, and an anonymous visitor after them sees neither."""
    auth.login("bob", remember=True)
    auth.client.delete_cookie("session")  # the browser restarted: remember-me, not fresh
    remembered = auth.client.get("/login").get_data(as_text=True)
    assert 'class="who"' in remembered and "Sign out" in remembered
    flashed = app.test_client()
    with flashed.session_transaction() as session:
        session["_flashes"] = [("message", "A message for this visitor only")]
    assert "A message for this visitor only" in flashed.get("/login").get_data(as_text=True)
    anonymous = app.test_client().get("/login").get_data(as_text=True)
    assert 'class="who"' not in anonymous and "Sign out" not in anonymous
    assert "A message for this visitor only" not in anonymous
    assert csrf_token_in(anonymous) != csrf_token_in(remembered)


def test_asked_again_for_the_password_the_name_is_filled_in(app, auth):
    """A "keep me signed in" session opening an admin page is asked for the password: the
    form says why, holds erin's name, keeps "keep me signed in" ticked, and puts the cursor in
    the password field."""
    auth.login("erin", remember=True)
    auth.client.delete_cookie("session")  # the browser restarted: remember-me, not fresh
    asked = auth.client.get("/admin/status")
    assert asked.status_code == 302
    page = auth.client.get(asked.headers["Location"]).get_data(as_text=True)
    assert "Enter your password again to open this page" in page
    assert 'name="username" type="text" value="erin" autocomplete="username" required' in page
    # erin's sign-in: the name cannot be changed (another name took the browser over without
    # a word); whoever is not erin is offered the sign-out. Said once, not flashed as well.
    assert "<h1>Confirm your password</h1>" in page
    assert 'value="erin" autocomplete="username" required readonly' in page
    assert '<a href="/logout">Not erin? Sign out</a>' in page
    assert "Please enter your password again" not in page
    assert 'autocomplete="current-password" autofocus required' in page
    assert 'name="remember" type="checkbox" value="y" checked>' in page, "kept as chosen"
    # It still asks again after a wrong password, and another person's name and password sent
    # in erin's form are erin's name with a wrong password: the browser stays erin's.
    for typed, password in (("erin", "not-her-password"), ("alice", "alice-secret")):
        again = auth.client.post("/login", data={"csrf_token": csrf_token_in(page),
                                                 "username": typed, "password": password,
                                                 "next": "/admin/status"})  # fmt: skip
        page = again.get_data(as_text=True)
        assert again.status_code == 401, (typed, again.status_code)
        assert "<h1>Confirm your password</h1>" in page, typed
        assert 'value="erin" autocomplete="username" required readonly' in page, typed
        assert '<a href="/logout">Not erin? Sign out</a>' in page, typed
    home = auth.client.get("/").get_data(as_text=True)
    assert "Erin" in home and "Alice" not in home
    token = csrf_token_in(page)
    done = auth.client.post(
        "/login",
        data={
            "csrf_token": token,
            "username": "erin",
            "password": "erin-secret",
            "next": "/admin/status",
        },
    )
    assert done.headers["Location"] == "/admin/status"
    assert auth.client.get("/admin/status").status_code == 200


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_hostile_next_falls_back_to_home(auth, target):
    """After login, a `next` that could leave the site is replaced by the home page."""
    assert auth.login("alice", next=target).headers["Location"] == "/"


def test_head_request_for_the_login_page_is_answered(client):
    """HEAD /login answers like GET (link checkers and proxies use it), not a 400."""
    response = client.head("/login")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_signed_in_visit_to_login_goes_home(client, auth):
    """An already signed-in person opening /login is sent on to the home page."""
    auth.login("alice")
    assert client.get("/login").headers["Location"] == "/"


def test_remember_me_keeps_the_person_signed_in_after_the_browser_session(app, client, auth):
    """With remember-me, a hardened cookie signs the person in once the session cookie is gone."""
    response = auth.login("bob", remember=True)
    cookies = response.headers.getlist("Set-Cookie")
    remember = next(cookie for cookie in cookies if cookie.startswith("remember_token="))
    assert "HttpOnly" in remember
    assert "SameSite=Lax" in remember
    client.delete_cookie("session")
    assert client.get("/").status_code == 200


def test_without_remember_me_no_remember_cookie_is_set(client, auth):
    """Without remember-me, closing the browser ends the sign-in."""
    response = auth.login("bob")
    assert not any(c.startswith("remember_token=") for c in response.headers.getlist("Set-Cookie"))
    client.delete_cookie("session")
    assert client.get("/").status_code == 302


def test_login_replaces_the_pre_login_session(client, auth):
    """Nothing stored in the session before login survives it (no session fixation)."""
    with client.session_transaction() as session:
        session["planted"] = "by-an-attacker"
    auth.login("alice")
    with client.session_transaction() as session:
        assert "planted" not in session
    assert session_username(client) == "alice"


def test_logout_clears_session_remember_cookie_and_cache_entry(app, client, auth):
    """Logout is a POST that signs out, expires the remember cookie and drops the cache entry."""
    auth.login("alice", remember=True)
    response = auth.logout()
    assert response.status_code == 302
    expired = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("remember_token=")]
    assert expired and "Expires=Thu, 01 Jan 1970" in expired[0]
    assert client.get("/").status_code == 302
    with app.app_context():
        assert accounts.cached_attributes("alice") is None


def test_logout_lands_on_the_login_page_saying_signed_out(client, auth):
    """Following the logout redirect shows the login page with "You are signed out."."""
    auth.login("alice")
    response = auth.logout()
    assert response.status_code == 302
    landing = client.get(response.headers["Location"])
    assert landing.status_code == 200
    assert "You are signed out." in landing.get_data(as_text=True)


def test_logout_needs_post_with_csrf(client, auth):
    """GET /logout asks "Sign out?" and signs nobody out; a POST without the token does not."""
    auth.login("alice")
    page = client.get("/logout")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "<h1>Sign out?</h1>" in body and 'method="post" action="/logout"' in body
    assert 'name="everywhere"' not in body
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200


def test_the_sign_out_page_with_nobody_signed_in_says_so_instead_of_asking(client, auth):
    """GET /logout in a browser where nobody is signed in (a bookmark, a second tab after the
    first signed out) lands on "You are signed out." (it asked "Sign out?" of nobody); a
    browser holding only a remember-me cookie is still asked."""
    answer = client.get("/logout?everywhere=1")
    assert answer.status_code == 302 and answer.headers["Location"] == "/login?signed_out=1"
    assert "You are signed out." in client.get(answer.headers["Location"]).get_data(as_text=True)
    auth.login("alice", remember=True)
    remembered = client.get_cookie("remember_token")
    client.delete_cookie("session")
    assert remembered is not None and client.get_cookie("session") is None
    assert "<h1>Sign out?</h1>" in client.get("/logout").get_data(as_text=True)


def test_sign_out_everywhere_asks_first_then_says_what_it_did(client, auth):
    """The home page's link leads to a confirmation; its button ends every sign-in, and the
    login page then says so."""
    auth.login("alice")
    home = client.get("/").get_data(as_text=True)
    assert 'href="/logout?everywhere=1"' in home
    confirm = client.get("/logout?everywhere=1").get_data(as_text=True)
    assert "Sign out everywhere?" in confirm and 'name="everywhere" value="1"' in confirm
    token = confirm.split('name="csrf_token" value="')[1].split('"')[0]
    answer = client.post("/logout", data={"csrf_token": token, "everywhere": "1"})
    assert answer.headers["Location"].endswith("signed_out=everywhere")
    landing = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "every sign-in of yours has ended, on every device" in landing
    assert client.get("/").status_code == 302


def test_session_cookie_is_http_only_and_same_site_lax(auth):
    """The session cookie set at login cannot be read by scripts nor sent by other sites' posts."""
    attributes = cookie_attributes(set_cookie(auth.login("alice"), "session"))
    assert "httponly" in attributes
    assert attributes.get("samesite") == "Lax"


def test_secure_setting_marks_session_and_remember_cookies_secure(app_with):
    """With SESSION_COOKIE_SECURE=True both the session and the remember-me cookie are Secure."""
    app = app_with(SESSION_COOKIE_SECURE=True)
    response = AuthActions(app.test_client()).login("bob", remember=True)
    assert response.status_code == 302
    # Secure cookies carry the __Host- prefix (tests/test_headers.py).
    assert "secure" in cookie_attributes(set_cookie(response, "__Host-portal-session"))
    assert "secure" in cookie_attributes(set_cookie(response, "__Host-portal-remember"))


def test_demo_settings_send_cookies_without_secure_for_plain_http(auth):
    """The demo settings (SESSION_COOKIE_SECURE false) leave Secure off both cookies."""
    response = auth.login("bob", remember=True)
    assert response.status_code == 302
    assert "secure" not in cookie_attributes(set_cookie(response, "session"))
    assert "secure" not in cookie_attributes(set_cookie(response, "remember_token"))


@pytest.mark.parametrize("days", [None, 3], ids=["default-14", "three"])
def test_remember_cookie_lasts_remember_cookie_days(app_with, days):
    """The remember-me cookie expires REMEMBER_COOKIE_DAYS ahead (14 by default), not in a year."""
    app = app_with() if days is None else app_with(REMEMBER_COOKIE_DAYS=days)
    expected = timedelta(days=14 if days is None else days)
    response = AuthActions(app.test_client()).login("bob", remember=True)
    assert response.status_code == 302
    expires = parsedate_to_datetime(
        cookie_attributes(set_cookie(response, "remember_token"))["expires"]
    )
    ahead = expires - datetime.now(UTC)
    assert expected - timedelta(days=0.1) < ahead < expected + timedelta(days=0.1), ahead


def test_secret_key_rotation_keeps_sessions_signed_with_a_fallback(slapd):
    """A new SECRET_KEY with the old one in SECRET_KEY_FALLBACKS keeps people signed in."""
    old, new = "old-secret-key-" + "a" * 32, "new-secret-key-" + "b" * 32
    before = make_app(slapd, SECRET_KEY=old)
    client = before.test_client()
    AuthActions(client).login("alice")
    cookie = client.get_cookie("session").value

    def visit(app) -> int:
        visitor = app.test_client()
        visitor.set_cookie("session", cookie)
        return visitor.get("/").status_code

    assert visit(make_app(slapd, SECRET_KEY=new, SECRET_KEY_FALLBACKS=[old])) == 200
    assert visit(make_app(slapd, SECRET_KEY=new)) == 302, "without the fallback: signed out"
    rotating = make_app(slapd, SECRET_KEY=old)
    assert visit(rotating) == 200
    rotating.secret_key = new  # keys changed in a running app: the cached serializer follows
    assert visit(rotating) == 302


def test_a_sign_in_form_that_expired_is_shown_again_to_sign_in_afresh(client, auth):
    """The form is sent after its session cookie is gone (the browser was closed, the cookie
    cleared): the sign-in page again, the name kept, saying why, and signing in from it works
    (it was a "Bad request" page whose only link led home)."""
    token = auth.csrf_token()
    client.delete_cookie("session")
    form = {"csrf_token": token, "username": "alice", "password": "alice-secret",
            "next": "/pages/handbook"}  # fmt: skip
    expired = client.post("/login", data=form)
    page = expired.get_data(as_text=True)
    assert expired.status_code == 400
    assert CSRF_REFUSED in page and 'name="password"' in page and 'value="alice"' in page
    assert 'value="/pages/handbook"' in page, "where to go afterwards is kept"
    assert client.get("/").status_code == 302, "nobody was signed in"
    again = client.post("/login", data=dict(form, csrf_token=csrf_token_in(page)))
    assert again.status_code == 302 and again.headers["Location"].endswith("/pages/handbook")


def test_another_form_that_expired_still_gets_the_400_page(client, auth):
    """A sign-out form with a refused token: the portal's 400 page (only the sign-in form is
    shown again)."""
    auth.login("alice")
    answer = client.post("/logout", data={"csrf_token": "forged"})
    assert answer.status_code == 400
    assert "The form expired or was not sent from the portal." in answer.get_data(as_text=True)


@pytest.mark.parametrize(
    "sent_from",
    [{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
     {"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}],
    ids=["cross-site", "other-origin", "same-site-sibling", "opaque-origin"],
)  # fmt: skip
def test_a_sign_in_form_another_site_sends_writes_no_session(app, sent_from):
    """Another site posts the sign-in form (with no cookie, as a cross-site POST carries none):
    the 400 page, and no Set-Cookie (showing the form again wrote a new session, which would
    replace a signed-in visitor's cookie, signing them out, with a name of the site's choice
    filled in)."""
    signed_in = app.test_client()
    assert AuthActions(signed_in).login("alice").status_code == 302
    stranger = app.test_client()
    answer = stranger.post("/login", data={"username": "victim", "password": "x"},
                           headers=sent_from)  # fmt: skip
    assert answer.status_code == 400
    assert "Set-Cookie" not in answer.headers
    page = answer.get_data(as_text=True)
    assert "The form expired or was not sent from the portal." in page and "victim" not in page
    own = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    same_site = stranger.post("/login", data={"username": "victim", "password": "x"}, headers=own)
    assert CSRF_REFUSED in same_site.get_data(as_text=True), "from the portal: the form again"


def _field_attributes(page: str, field: str) -> str:
    # The attributes of one <input id="..."> of a page, as sent.
    [tag] = re.findall(rf'<input id="{field}"[^>]*>', page)
    return tag


def test_every_sign_in_message_describes_the_field_the_cursor_goes_to(slapd):
    """Refused (carol), throttled and expired: the message is tied to the field that gets the
    cursor (username, autofocus), without marking it wrong, so a screen reader says it there
    (only a wrong password and a missing field were tied to theirs)."""
    app = make_app(slapd, THROTTLE_ACCOUNT_LIMIT="2 per minute")
    carol = AuthActions(app.test_client())
    pages = {"refused": carol.login("carol")}
    bob = AuthActions(app.test_client())
    for _ in range(2):
        assert bob.login("bob", "wrong").status_code == 401
    pages["throttled"] = bob.login("bob", "wrong")
    expired = app.test_client()
    pages["expired"] = expired.post("/login", data={"csrf_token": "stale", "username": "erin",
                                                    "password": "x"})  # fmt: skip
    for name, response in pages.items():
        page = response.get_data(as_text=True)
        assert response.status_code in (400, 403, 429), (name, response.status_code)
        assert 'id="login-error" role="alert"' in page, name
        username = _field_attributes(page, "username")
        assert "autofocus" in username and 'aria-describedby="login-error"' in username, name
        assert "aria-invalid" not in username, name
        assert "aria-describedby" not in _field_attributes(page, "password"), name
    plain = app.test_client().get("/login").get_data(as_text=True)
    assert "aria-describedby" not in _field_attributes(plain, "username")
    # A wrong password: the password field, marked wrong, is the one described.
    wrong = AuthActions(app.test_client()).login("alice", "wrong").get_data(as_text=True)
    assert 'aria-invalid="true" aria-describedby="login-error"' in _field_attributes(
        wrong, "password"
    )
    assert "aria-describedby" not in _field_attributes(wrong, "username")
    app.extensions["portal.directory"].close()


def test_the_sign_in_page_says_why_only_when_a_page_was_asked_for(client):
    """A visitor sent from the home page (the portal's address itself) is not told "Please
    sign in to open that page": they asked for no page; one sent from a page is, in German
    too."""
    home = client.get("/", follow_redirects=True).get_data(as_text=True)
    assert 'name="csrf_token"' in home and "Please sign in to open that page." not in home
    page = client.get("/pages/handbook", follow_redirects=True).get_data(as_text=True)
    assert "Please sign in to open that page." in page
    german = client.get("/pages/handbook", headers={"Accept-Language": "de"},
                        follow_redirects=True).get_data(as_text=True)  # fmt: skip
    assert "Bitte melden Sie sich an" in german, german
