"""SECURITY.md battery lines that no other module proves, each against a real slapd.

Blank and unsendable credentials, servers that accept unauthenticated binds, DNs holding filter
metacharacters, referrals, the directory's own words, identical refusals, hostile `next`
addresses, binds that fail half-way, concurrent logins, and how soon lost rights take effect.
"""

from __future__ import annotations

import html
import importlib.metadata
import json
import re
import subprocess
import threading
import tomllib
from contextlib import suppress
from urllib.parse import quote

import ldap3
import pytest
from werkzeug.datastructures import MultiDict

from portal.directory.wire import LeanConnection
from portal.extensions import cache
from portal.settings import ConfigError
from portal.testing import trees
from portal.testing.slapd import find_binary
from tests.conftest import (
    HOSTILE_NEXT,
    PASSWORDS,
    ROOT,
    SERVICE_DN,
    AuthActions,
    csrf_token_in,
    eventually,
    make_app,
    same_site_path,
    start_slapd,
)
from tests.servers import tcp_server

ALICE_DN = "uid=alice,ou=people,dc=example,dc=org"
BOB_DN = "uid=bob,ou=people,dc=example,dc=org"
DN_TEMPLATE = "uid={username},ou=people,dc=example,dc=org"
#: These tests fail one account's password on purpose, more often than a login throttle allows.
UNTHROTTLED = {
    "THROTTLE_ACCOUNT_LIMIT": "10000 per minute",
    "THROTTLE_IP_LIMIT": "10000 per minute",
}
#: What a forward-auth proxy asks about: the portal's own home page, which no demo rule closes.
VERIFY_HEADERS = {"X-Original-URL": "https://portal.example.org/", "X-Original-Method": "GET"}
#: The groups each active demo person is in, as Remote-Groups lists them.
GROUPS = {
    "alice": "engineering,staff",
    "bob": "staff",
    "erin": "portal-admins,staff",
    "frank": "finance,staff",
}


def who(client) -> tuple[str, str] | None:
    """(username, groups) the portal vouches for on this client's session, else None."""
    response = client.get("/auth/verify", headers=VERIFY_HEADERS)
    if response.status_code != 200:
        return None
    return response.headers["Remote-User"], response.headers["Remote-Groups"]


def post_login(client, fields, spy=None):
    """POST /login with a fresh CSRF token and `fields` (pairs; a None value leaves it out).

    With an LDAP spy, it is reset after the login page is fetched, so it counts the POST only.
    """
    token = AuthActions(client).csrf_token()
    if spy is not None:
        spy.reset()
    pairs = [("csrf_token", token)] + [(name, value) for name, value in fields if value is not None]
    return client.post("/login", data=MultiDict(pairs))


def response_text(response) -> str:
    """A response's headers and body as one text, to look for words that must not be there."""
    headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    return headers + "\n\n" + response.get_data(as_text=True)


def answer_shape(response) -> tuple:
    """What a refused login shows a stranger: status, page, cookies and headers set.

    Form values (the CSRF token, the name typed) are blanked, cookie values and expiry times too.
    """
    body = re.sub(r'value="[^"]*"', 'value=""', response.get_data(as_text=True))
    cookies = sorted(
        re.sub(r"(?i)expires=[^;]*", "expires", re.sub(r"^([^=]*)=[^;]*", r"\1", cookie))
        for cookie in response.headers.getlist("Set-Cookie")
    )
    names = sorted({name.lower() for name, _ in response.headers} - {"content-length"})
    return response.status_code, body, cookies, names


def people_in_cache(app) -> list[str]:
    """The person named by each in-process cache entry that holds someone's directory data."""
    found = []
    with app.app_context():
        backend = cache.cache
        for key in list(backend._cache):
            value = backend.get(key)
            with suppress(TypeError, ValueError):
                value = json.loads(value)
            if isinstance(value, dict) and "groups" in value and "username" in value:
                found.append(value["username"])
    return found


# --- Blank credentials and servers that accept unauthenticated binds ---------------------------


def accepts_unauthenticated_bind(server, dn: str, password: str) -> bool:
    """Whether the server answers a simple bind as `dn` with `password` with success."""
    result = subprocess.run(
        [find_binary("ldapwhoami"), "-x", "-H", server.url, "-D", dn, "-w", password],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result.returncode == 0


@pytest.fixture(scope="module")
def lax_slapd():
    """A directory that accepts unauthenticated binds: a DN with an empty password, or no DN."""
    server = start_slapd(global_config="allow bind_anon_cred bind_anon_dn")
    yield server
    server.cleanup()


def test_the_lax_directory_really_accepts_unauthenticated_binds(lax_slapd, slapd):
    """The lax server says yes to a DN without password and to a password without DN; the demo
    directory says no to both."""
    for server, accepted in ((lax_slapd, True), (slapd, False)):
        assert accepts_unauthenticated_bind(server, ALICE_DN, "") is accepted
        assert accepts_unauthenticated_bind(server, "", "anything") is accepted


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("alice", None, id="password-missing"),
        pytest.param("alice", "", id="password-empty"),
        pytest.param("alice", " ", id="password-space"),
        pytest.param("alice", " \t ", id="password-tab"),
        pytest.param("alice", "\u00a0\u3000", id="password-unicode-spaces"),
        pytest.param("alice", "\u00ad\ufeff", id="password-saslprep-maps-to-nothing"),
        pytest.param("alice", "\u200b", id="password-saslprep-maps-to-a-space"),
        pytest.param("", "alice-secret", id="username-empty"),
        pytest.param(None, "alice-secret", id="username-missing"),
        pytest.param(" \u00a0", "alice-secret", id="username-blank"),
        pytest.param("", "", id="both-empty"),
        pytest.param(None, None, id="both-missing"),
    ],
)
def test_blank_credentials_send_no_bind_even_where_the_server_would_accept_one(
    lax_slapd, build_app, ldap_spy, username, password
):
    """Empty, blank or missing names and passwords: a 4xx, nobody signed in, no LDAP traffic."""
    client = build_app(lax_slapd).test_client()
    response = post_login(client, [("username", username), ("password", password)], ldap_spy)
    assert response.status_code in (400, 401)
    assert ldap_spy.count() == 0, ldap_spy.calls
    assert who(client) is None


def test_the_lax_directory_signs_in_with_the_real_password_only(lax_slapd, build_app, ldap_spy):
    """On the lax server a real password still works, as one bind as the person."""
    app = build_app(lax_slapd)
    client = app.test_client()
    assert AuthActions(client).login("alice", "not-her-password").status_code == 401
    ldap_spy.reset()
    assert AuthActions(client).login("alice").status_code == 302
    assert ldap_spy.user_binds() == [ALICE_DN]
    assert who(client) == ("alice", GROUPS["alice"])


# --- Input a bind cannot carry -----------------------------------------------------------------


@pytest.mark.parametrize("template", ["", DN_TEMPLATE], ids=["search-then-bind", "dn-template"])
@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("al\x00ice", "alice-secret", id="nul-in-username"),
        pytest.param("alice\x00", "alice-secret", id="nul-after-username"),
        pytest.param("al\r\nice", "alice-secret", id="crlf-in-username"),
        pytest.param("al\tice", "alice-secret", id="tab-in-username"),
        pytest.param("a" * 10240, "alice-secret", id="10kB-username"),
        pytest.param("\u00e9" * 5120, "alice-secret", id="10kB-utf8-username"),
        pytest.param("", "alice-secret", id="empty-username"),
        pytest.param("alice", "alice-secret\x00", id="nul-in-password"),
        pytest.param("alice", "alice\r\nsecret", id="crlf-in-password"),
        pytest.param("alice", "alice-secret\t", id="tab-in-password"),
        pytest.param("alice", "x" * 10240, id="10kB-password"),
        pytest.param("alice", "x" * 1_000_000, id="1MB-password"),
    ],
)
def test_input_a_bind_cannot_carry_causes_no_ldap_traffic(
    slapd, build_app, ldap_spy, template, username, password
):
    """NUL, CR/LF, tab, 10 kB names, 1 MB passwords: refused, no connection, search or bind."""
    client = build_app(slapd, LDAP_USER_DN_TEMPLATE=template).test_client()
    response = post_login(client, [("username", username), ("password", password)], ldap_spy)
    assert response.status_code in (400, 401, 413)
    assert ldap_spy.count() == 0, ldap_spy.calls
    assert who(client) is None


@pytest.mark.parametrize("username", ["alice\n", "\r\nalice", "\talice", "alice\x1f"])
def test_control_white_space_around_a_name_never_reaches_the_directory(
    slapd, build_app, ldap_spy, username
):
    """Tab, CR, LF and other white-space controls at either end of a name are not sent."""
    client = build_app(slapd).test_client()
    post_login(client, [("username", username), ("password", "alice-secret")], ldap_spy)
    sent = ldap_spy.filters() + [dn or "" for dn in ldap_spy.binds_as()]
    assert not [text for text in sent if re.search(r"[\x00-\x1f\x7f]", text)]


# --- Types and duplicated fields ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"username": {"name": "alice"}, "password": {"value": "alice-secret"}},
        {"username": None, "password": None},
        {"username": "alice", "password": None},
        {"username": "alice", "password": ["alice-secret"]},
        {"username": 1.5, "password": 0},
        {"username": "alice", "password": "alice-secret"},
    ],
    ids=["dicts", "nulls", "null-password", "list-password", "numbers", "right-but-json"],
)
def test_json_logins_are_refused_whatever_the_types(app, body):
    """A JSON body (with a valid CSRF header) never fills the form: a 4xx, nobody signed in."""
    client = app.test_client()
    token = AuthActions(client).csrf_token()
    response = client.post("/login", json=body, headers={"X-CSRFToken": token})
    assert response.status_code in (400, 401)
    text = response.get_data(as_text=True)
    assert "The form expired" not in text and "form had expired" not in text, "token refused"
    assert who(client) is None


def test_credentials_in_the_address_sign_nobody_in(app):
    """Username and password in the query string are not read, on GET or on POST."""
    client = app.test_client()
    query = "?username=alice&password=alice-secret"
    assert client.get("/login" + query).status_code == 200
    assert who(client) is None
    token = AuthActions(client).csrf_token()
    assert client.post("/login" + query, data={"csrf_token": token}).status_code == 400
    assert who(client) is None


@pytest.mark.parametrize(
    "fields",
    [
        [("username", "alice"), ("username", "bob"), ("password", "alice-secret")],
        [("username", "alice"), ("password", "alice-secret"), ("password", "bob-secret")],
        [("username", "bob"), ("username", "alice"), ("password", "alice-secret")],
    ],
    ids=["two-usernames", "two-passwords", "right-name-second"],
)
def test_conflicting_duplicated_fields_sign_nobody_in(app, fields):
    """A form with two different usernames or passwords is refused: 400 or a generic 401."""
    client = app.test_client()
    response = post_login(client, fields)
    assert response.status_code in (400, 401)
    assert who(client) is None


# --- Names and DNs -----------------------------------------------------------------------------


def test_alice_spellings_are_one_identity_with_one_cache_entry_and_the_same_groups(
    slapd, build_app
):
    """`Alice`, ` alice ` and `alice`: the same person, the same groups, one cache entry."""
    app = build_app(slapd)
    answers = set()
    for typed in ("Alice", " alice ", "alice"):
        client = app.test_client()
        assert AuthActions(client).login(typed, "alice-secret").status_code == 302
        answers.add(who(client))
    assert answers == {("alice", GROUPS["alice"])}
    assert people_in_cache(app) == ["alice"]


CONTRACTORS = [
    ("cn=Smith (Contractor)*,ou=people,dc=example,dc=org", "Smith (Contractor)*"),
    (r"cn=Doe\, Jane (Temp) \5C*,ou=people,dc=example,dc=org", "Doe, Jane (Temp) \\*"),
]


@pytest.mark.parametrize(("dn", "cn"), CONTRACTORS, ids=["parentheses-star", "comma-backslash"])
def test_person_dns_with_filter_metacharacters_are_escaped_in_group_filters_and_resolve(
    own_slapd, build_app, ldap_spy, dn, cn
):
    """A person whose DN holds ( ) * , \\ signs in with every group: member DN escaped, found."""
    own_slapd.add(
        f"dn: {dn}\nobjectClass: inetOrgPerson\ncn: {cn}\nsn: Smith\nuid: smith\n"
        "userPassword: smith-secret\n\n"
        "dn: cn=contractors,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\n"
        f"cn: contractors\nmember: {dn}\n\n"
        "dn: cn=vpn,ou=groups,dc=example,dc=org\nobjectClass: posixGroup\ncn: vpn\n"
        "gidNumber: 7100\nmemberUid: smith\n"
    )
    own_slapd.modify(
        f"dn: cn=staff,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\nmember: {dn}\n"
    )
    client = build_app(own_slapd).test_client()
    assert AuthActions(client).login("smith", "smith-secret").status_code == 302
    assert who(client) == ("smith", "contractors,staff,vpn")
    member_filters = [sent for sent in ldap_spy.filters() if "(member=" in sent]
    assert member_filters, "no group search by member DN was sent"
    for sent in member_filters:
        value = sent.split("(member=", 1)[1].split(")", 1)[0]
        assert r"\28" in value and r"\2a" in value, f"DN not escaped in {sent}"


# --- Referrals ---------------------------------------------------------------------------------


def referral_entry(dn: str, url: str) -> str:
    """LDIF for a referral object at `dn` pointing at `url`."""
    ou = dn.split(",", 1)[0].split("=", 1)[1]
    return f"dn: {dn}\nobjectClass: referral\nobjectClass: extensibleObject\nou: {ou}\nref: {url}\n"


def test_referrals_to_a_foreign_host_are_never_followed(build_app):
    """Default referrals, referral results and continuations in user and group searches: the
    foreign host never sees a connection, let alone a bind or a password."""
    contacted = []

    def record(connection):
        connection.settimeout(1)
        with suppress(OSError):
            contacted.append(connection.recv(65536))

    with tcp_server(record) as foreign:
        server = start_slapd(global_config=f"referral {foreign}")
        try:
            people = "ou=partners,ou=people,dc=example,dc=org"
            groups = "ou=partners,ou=groups,dc=example,dc=org"
            server.add(
                referral_entry(people, f"{foreign}/ou=people,dc=example,dc=net")
                + "\n"
                + referral_entry(groups, f"{foreign}/ou=groups,dc=example,dc=net")
            )
            continuations = build_app(server)
            client = continuations.test_client()
            assert AuthActions(client).login("alice").status_code == 302
            assert who(client) == ("alice", GROUPS["alice"])
            assert AuthActions(continuations.test_client()).login("nobody", "x").status_code == 401
            outside = build_app(server, LDAP_USER_BASE="ou=people,dc=example,dc=net")
            assert AuthActions(outside.test_client()).login("alice").status_code == 503
            referred_groups = build_app(server, LDAP_GROUP_BASE=groups)
            assert AuthActions(referred_groups.test_client()).login("alice").status_code == 503
        finally:
            server.cleanup()
    assert contacted == []


# --- The directory's own words -----------------------------------------------------------------

AD_DIAGNOSTIC = (
    "80090308: LdapErr: DSID-0C090447, comment: AcceptSecurityContext error, data {}, v3839"
)
AD_SEARCH_DIAGNOSTIC = (
    "000004DC: LdapErr: DSID-0C090A5C, comment: In order to perform this operation a successful "
    "bind must be completed on the connection., data 0, v4563"
)


@pytest.fixture
def directory_words(monkeypatch):
    """Everything the directory answered besides success, as ldap3 reports it: result names,
    diagnostic messages, referral URLs."""
    words: set[str] = set()
    for name in ("bind", "search"):
        original = getattr(LeanConnection, name)

        def record(self, *args, _original=original, **kwargs):
            try:
                return _original(self, *args, **kwargs)
            finally:
                result = self.result or {}
                if result.get("result") not in (0, None):
                    said = [result.get("description"), result.get("message")]
                    words.update(
                        word for word in said + list(result.get("referrals") or ()) if word
                    )

        monkeypatch.setattr(LeanConnection, name, record)
    return words


def assert_says_nothing_of(response, words) -> None:
    """Fail if any of the directory's words shows in the response's headers or body."""
    text = response_text(response)
    shown = sorted(word for word in words if word in text)
    assert not shown, f"{response.status_code} {response.request.path} shows {shown}"


@pytest.mark.parametrize("code", ["52e", "530", "533", "701", "773", "532", "775"])
def test_active_directory_bind_diagnostics_never_reach_a_response(
    slapd, build_app, monkeypatch, code
):
    """AD's "data NNN" explanations of a refused bind are acted on, never shown."""
    message = AD_DIAGNOSTIC.format(code)
    original = LeanConnection.bind

    def bind_like_active_directory(self, *args, **kwargs):
        bound = original(self, *args, **kwargs)
        if not bound and self.user not in (None, SERVICE_DN):
            self.result = dict(self.result, message=message)
        return bound

    monkeypatch.setattr(LeanConnection, "bind", bind_like_active_directory)
    app = build_app(slapd, **UNTHROTTLED)
    erin = app.test_client()
    assert AuthActions(erin).login("erin").status_code == 302
    refused = AuthActions(app.test_client()).login("alice", "not-her-password")
    assert refused.status_code in (401, 403)
    words = {message, "AcceptSecurityContext", "LdapErr", "DSID-", f"data {code}", "80090308"}
    for response in (refused, erin.get("/admin/status"), app.test_client().get("/metrics")):
        assert_says_nothing_of(response, words)


@pytest.fixture
def refusing_slapd():
    """A directory that refuses in its own words: a size limit of 2 (alice is in 3 groups) and a
    default referral for names outside its tree."""
    server = start_slapd(global_config="sizelimit 2\nreferral ldap://127.0.0.1:9")
    server.modify(
        "dn: cn=suspended,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\n"
        f"member: {ALICE_DN}\n"
    )
    yield server
    server.cleanup()


@pytest.mark.parametrize(
    ("settings", "name", "password", "status"),
    [
        ({}, "alice", "alice-secret", 503),
        ({"LDAP_USER_BASE": "ou=people,dc=example,dc=net"}, "bob", "bob-secret", 503),
        ({"LDAP_BIND_PASSWORD": "not-the-service-password"}, "bob", "bob-secret", 503),
        ({}, "bob", "not-his-password", 401),
    ],
    ids=["size-limit", "referral", "service-bind-refused", "wrong-password"],
)
def test_directory_refusals_at_login_never_show_the_directorys_words(
    refusing_slapd, build_app, directory_words, settings, name, password, status
):
    """Size limits, referrals, refused binds: the login page uses its words, not the server's."""
    client = build_app(refusing_slapd, **settings).test_client()
    response = AuthActions(client).login(name, password)
    assert response.status_code == status
    assert directory_words, "the directory said nothing: the scenario tests nothing"
    assert_says_nothing_of(response, directory_words | {"result code", "Referral"})


@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_a_refused_search_on_a_page_view_never_shows_the_directorys_words(
    slapd, build_app, directory_words, monkeypatch, clock, accept
):
    """A signed-in person whose groups the directory refuses to list sees a plain 503."""
    app = build_app(slapd)
    client = app.test_client()
    assert AuthActions(client).login("bob").status_code == 302
    original = LeanConnection.search

    def search_like_active_directory(self, search_base, *args, **kwargs):
        found = original(self, search_base, *args, **kwargs)
        if search_base == "ou=groups,dc=example,dc=org":
            self.result = dict(
                self.result, result=1, description="operationsError", message=AD_SEARCH_DIAGNOSTIC
            )
            self.response = []
            return False
        return found

    monkeypatch.setattr(LeanConnection, "search", search_like_active_directory)
    clock.advance(app.config["USER_CACHE_TTL"] + 1)
    response = client.get("/", headers={"Accept": accept})
    assert response.status_code == 503
    words = directory_words | {AD_SEARCH_DIAGNOSTIC, "LdapErr", "DSID-", "operationsError"}
    assert_says_nothing_of(response, words | {"result code"})


# --- Identical refusals ------------------------------------------------------------------------


def example_app(server, name: str, **overrides):
    """The portal with examples/settings-<name>.toml, pointed at a test server over plain LDAP."""
    return make_app(
        server,
        settings_file=ROOT / "examples" / f"settings-{name}.toml",
        LDAP_START_TLS=False,
        LDAP_CA_FILE="",
        LDAP_BIND_PASSWORD=trees.SERVICE_PASSWORD,
        SESSION_COOKIE_SECURE=False,
        **UNTHROTTLED,
        **overrides,
    )


def refusals(app, attempts) -> dict[str, tuple]:
    """The answer shape of each (label, username, password) login, each from a new browser."""
    return {
        label: answer_shape(AuthActions(app.test_client()).login(username, password))
        for label, username, password in attempts
    }


def assert_all_alike(shapes: dict[str, tuple]) -> None:
    """Fail naming the refusal that differs from the wrong-password answer."""
    reference = shapes["wrong-password"]
    assert reference[0] == 401
    for label, shape in shapes.items():
        assert shape == reference, f"{label} answers differently from a wrong password"


def test_unknown_wrong_and_disabled_get_identical_answers_on_the_demo_tree(own_slapd, build_app):
    """LDAP_DISABLED_FILTER: a disabled account with its right password looks like any failure."""
    own_slapd.modify(f"dn: {BOB_DN}\nchangetype: modify\nadd: description\ndescription: off\n")
    app = build_app(own_slapd, LDAP_DISABLED_FILTER="(description=off)", **UNTHROTTLED)
    assert_all_alike(
        refusals(
            app,
            [
                ("wrong-password", "alice", "not-her-password"),
                ("unknown", "nobody-here", "whatever-secret"),
                ("disabled", "bob", "bob-secret"),
            ],
        )
    )


def test_unknown_wrong_and_locked_get_identical_answers_under_ppolicy():
    """A ppolicy-locked account with its right password looks like a wrong password."""
    server = start_slapd(**trees.ppolicy_options())
    app = example_app(server, "ppolicy")
    try:
        assert_all_alike(
            refusals(
                app,
                [
                    ("wrong-password", "alice", "not-her-password"),
                    ("unknown", "nobody-here", "whatever-secret"),
                    ("locked", "locked", "locked-secret"),
                ],
            )
        )
    finally:
        app.extensions["portal.directory"].close()
        server.cleanup()


def test_an_entry_the_template_names_and_the_filter_leaves_out_is_a_wrong_password_throughout():
    """With LDAP_USER_DN_TEMPLATE the bind comes before the entry is read. reset, disabled by
    LDAP_DISABLED_FILTER and with a password that must be changed (pwdReset), signing in or
    changing her password with the right one, is answered as a wrong password: she was told
    "must be changed" at the sign-in and "your current password is correct" at the change
    (in 5 ms, with no floor and no count), which confirmed a leaver's password to anyone."""
    server = start_slapd(**trees.ppolicy_options())
    reset_dn = "uid=reset,ou=people,dc=example,dc=org"
    app = None
    try:
        server.modify(f"dn: {reset_dn}\nchangetype: modify\nadd: description\ndescription: off\n")
        app = example_app(server, "ppolicy", LDAP_DISABLED_FILTER="(description=off)",
                          PASSWORD_CHANGE_URL="")  # fmt: skip
        assert_all_alike(
            refusals(
                app,
                [
                    ("wrong-password", "alice", "not-her-password"),
                    ("disabled, must change", "reset", "reset-secret"),
                ],
            )
        )
        changes = {}
        for label, username, current in [("wrong-password", "alice", "not-her-password"),
                                          ("disabled", "reset", "reset-secret")]:  # fmt: skip
            client = app.test_client()
            token = csrf_token_in(client.get("/password").get_data(as_text=True))
            answer = client.post("/password", data={
                "csrf_token": token, "username": username, "current": current,
                "new": "a-much-longer-secret", "confirm": "a-much-longer-secret"})  # fmt: skip
            changes[label] = answer.status_code, "Your current password is wrong." in answer.text
        assert changes == {"wrong-password": (401, True), "disabled": (401, True)}
        # Nothing was changed: her password is the one it was.
        assert ldap3.Connection(server.url, reset_dn, "reset-secret").bind()
        assert not ldap3.Connection(server.url, reset_dn, "a-much-longer-secret").bind()
    finally:
        if app is not None:
            app.extensions["portal.directory"].close()
        server.cleanup()


def test_with_a_upn_template_a_must_change_answer_is_judged_by_the_upns_holder(monkeypatch):
    """Active Directory answers a UPN bind whose password must be changed (773) before any
    entry is read: the portal asks who holds the UPN. alice.smith@corp.example is asmith's,
    while another entry is named alice.smith: asmith disabled by LDAP_DISABLED_FILTER, "must
    be changed" would confirm her password (the entry found by the typed name passed the
    filter), so it is a wrong password; asmith let back in, it is "must be changed"."""
    from portal.directory.errors import PasswordChangeRequired
    from portal.directory.service import Directory

    server = start_slapd(**trees.ad_options())
    asmith = "CN=Alice Smith,OU=Users,DC=corp,DC=example"
    real_bind = Directory._send_bind

    def active_directory_bind(self, connection, who, password):
        if who in ("alice.smith@corp.example", "asmith@corp.example"):  # asmith's, explicit
            # and implicit (AD binds sAMAccountName@domain too, held by no entry)
            raise PasswordChangeRequired(who)  # AD's 49 "data 773", for the right password
        return real_bind(self, connection, who, password)

    monkeypatch.setattr(Directory, "_send_bind", active_directory_bind)
    app = None
    try:
        server.add(
            "dn: CN=Alice Smith Two,OU=Users,DC=corp,DC=example\nobjectClass: top\n"
            "objectClass: person\nobjectClass: organizationalPerson\nobjectClass: user\n"
            "cn: Alice Smith Two\nsn: Smith\nsAMAccountName: alice.smith\n"
            "userPrincipalName: alice.smith2@corp.example\nuserAccountControl: 512\n"
            "memberOf: CN=Staff,OU=Groups,DC=corp,DC=example\n"
        )
        server.modify(f"dn: {asmith}\nchangetype: modify\nadd: description\ndescription: off\n")
        app = example_app(server, "ad", LDAP_USER_DN_TEMPLATE="{username}@corp.example",
                          LDAP_DISABLED_FILTER="(description=off)")  # fmt: skip
        attempts = [("wrong-password", "alice", "not-her-password"),
                    ("disabled holder", "alice.smith", "asmith-secret"),
                    ("disabled, implicit UPN", "asmith", "asmith-secret")]  # fmt: skip
        assert_all_alike(refusals(app, attempts))
        server.modify(f"dn: {asmith}\nchangetype: modify\ndelete: description\n")
        for typed in ("alice.smith", "asmith"):
            let_in = AuthActions(app.test_client()).login(typed, "asmith-secret")
            assert let_in.status_code == 403 and "must be changed" in let_in.text, typed
    finally:
        if app is not None:
            app.extensions["portal.directory"].close()
        server.cleanup()


# --- Hostile `next` ----------------------------------------------------------------------------


# SECURITY.md also lists "/%09/evil.example": a path on this site (browsers never decode it into
# a host), so it may be kept as a same-site path rather than refused.
@pytest.mark.parametrize("target", [*HOSTILE_NEXT, "/%09/evil.example"])
def test_hostile_next_from_security_md_only_ever_leads_to_this_site(app, target):
    """Posted, in the login address, carried by the form, or given to someone signed in: every
    Location after login is a path on this site."""
    query = "/login?next=" + quote(target, safe="")
    posted = AuthActions(app.test_client()).login("alice", next=target)
    client = app.test_client()
    token = AuthActions(client).csrf_token()
    in_address = client.post(
        query, data={"csrf_token": token, "username": "alice", "password": "alice-secret"}
    )
    client = app.test_client()
    page = client.get(query).get_data(as_text=True)
    carried = re.search(r'<input[^>]*name="next"[^>]*value="([^"]*)"', page)
    assert carried, "the login page has no next field"
    via_form = AuthActions(client).login("alice", next=html.unescape(carried.group(1)))
    signed_in = client.get(query)
    for response in (posted, in_address, via_form, signed_in):
        assert response.status_code == 302
        assert same_site_path(response.headers["Location"]), response.headers["Location"]


# --- Dependency pitfalls -----------------------------------------------------------------------


@pytest.mark.parametrize("password", ["alice-secret", "not-her-password"], ids=["right", "wrong"])
def test_directory_dying_during_the_password_bind_is_a_503_never_wrong_password(
    own_slapd, build_app, monkeypatch, password
):
    """ldap3 raises when the connection breaks in a bind: that is an outage, not a refusal."""
    app = build_app(own_slapd)
    assert AuthActions(app.test_client()).login("bob").status_code == 302  # pools now warm
    original = LeanConnection.bind

    def bind_while_the_directory_dies(self, *args, **kwargs):
        if self.user == ALICE_DN:
            own_slapd.stop()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LeanConnection, "bind", bind_while_the_directory_dies)
    client = app.test_client()
    response = AuthActions(client).login("alice", password)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "Wrong username or password" not in response.get_data(as_text=True)
    monkeypatch.setattr(LeanConnection, "bind", original)
    own_slapd.start()
    assert who(client) is None
    # Recovers without a restart, once the failed server's back-off has passed.
    eventually(lambda: AuthActions(client).login("alice").status_code == 302)


def test_concurrent_logins_never_cross_identities(slapd, build_app):
    """28 logins at once over two pooled connections each: every one is its own person."""
    app = build_app(slapd, LDAP_POOL_SIZE=2, **UNTHROTTLED)
    attempts = [(name, PASSWORDS[name]) for name in GROUPS] * 6
    attempts += [(name, "not-the-password") for name in ("alice", "bob")] * 2
    start = threading.Barrier(len(attempts))
    outcomes: dict[int, tuple] = {}

    def sign_in(index: int, name: str, password: str) -> None:
        client = app.test_client()
        token = AuthActions(client).csrf_token()
        start.wait(timeout=30)
        data = {"csrf_token": token, "username": name, "password": password}
        outcomes[index] = (client.post("/login", data=data).status_code, who(client))

    threads = [threading.Thread(target=sign_in, args=(index, *attempt))
               for index, attempt in enumerate(attempts)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for index, (name, password) in enumerate(attempts):
        right = password == PASSWORDS[name]
        expected = (302, (name, GROUPS[name])) if right else (401, None)
        assert outcomes.get(index) == expected, f"attempt {index} as {name}"


def test_ldap3_and_pyasn1_are_pinned_and_installed_as_pinned():
    """ldap3 2.9.1 breaks with some pyasn1 releases (ldap3 #981): both pinned, both as pinned."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(
        match.groups()
        for match in (re.fullmatch(r"([\w-]+)==([\w.]+)", dep) for dep in project["dependencies"])
        if match
    )
    assert pins.get("ldap3") == "2.9.1"
    assert pins.get("pyasn1"), "pyasn1 is not pinned"
    for name in ("ldap3", "pyasn1"):
        assert importlib.metadata.version(name) == pins[name]


@pytest.mark.parametrize("key", ["LDAP_CONNECT_TIMEOUT", "LDAP_OPERATION_TIMEOUT"])
@pytest.mark.parametrize("value", [1.5, True, "3"])
def test_ldap_timeouts_must_be_whole_seconds(slapd, key, value):
    """A float receive_timeout crashes ldap3 2.9.1 (#1068): only integers start the portal."""
    with pytest.raises(ConfigError, match=key):
        make_app(slapd, **{key: value})


def test_ldap3_gets_integer_timeouts(slapd, build_app):
    """The servers and pooled connections carry the configured whole-second timeouts."""
    app = build_app(slapd, LDAP_CONNECT_TIMEOUT=2, LDAP_OPERATION_TIMEOUT=4)
    assert AuthActions(app.test_client()).login("alice").status_code == 302
    directory = app.extensions["portal.directory"]
    pooled = directory.pool._idle + directory.bind_pool._idle
    assert pooled
    for connection in pooled:
        assert type(connection.server.connect_timeout) is int
        assert connection.server.connect_timeout == 2
        assert type(connection.receive_timeout) is int
        assert connection.receive_timeout == 4
        assert connection.auto_referrals is False


# --- Authorisation freshness -------------------------------------------------------------------

REMOVE_ALICE_FROM_STAFF = f"""\
dn: cn=staff,ou=groups,dc=example,dc=org
changetype: modify
delete: member
member: {ALICE_DN}
"""


def test_admin_flush_ends_a_removed_members_access_at_once(own_slapd, build_app):
    """Alice leaves staff; her cached entry lets her in until erin flushes it, then never."""
    app = build_app(own_slapd, USER_CACHE_TTL=3600)
    alice = app.test_client()
    assert AuthActions(alice).login("alice").status_code == 302
    own_slapd.modify(REMOVE_ALICE_FROM_STAFF)
    assert alice.get("/").status_code == 200, "still cached"
    erin = app.test_client()
    assert AuthActions(erin).login("erin").status_code == 302
    page = erin.get("/admin/users/alice").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token, "the user page has no flush form"
    flushed = erin.post("/admin/users/alice/flush", data={"csrf_token": token.group(1)})
    assert flushed.status_code == 302
    response = alice.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    assert who(alice) is None


@pytest.mark.parametrize("change", ["deleted", "disabled"])
def test_deleted_or_disabled_account_loses_access_within_the_ttl_through_remember_me(
    own_slapd, build_app, clock, change
):
    """A remember-me cookie brings nobody back once the account is gone or disabled and the
    cache entry has expired."""
    app = build_app(own_slapd, USER_CACHE_TTL=60, LDAP_DISABLED_FILTER="(description=off)")
    client = app.test_client()
    assert AuthActions(client).login("bob", remember=True).status_code == 302
    if change == "deleted":
        own_slapd.delete(BOB_DN)
    else:
        own_slapd.modify(f"dn: {BOB_DN}\nchangetype: modify\nadd: description\ndescription: off\n")
    client.delete_cookie("session")
    assert client.get("/").status_code == 200, "the remember-me cookie and the cache: still in"
    clock.advance(61)
    client.delete_cookie("session")
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    client.delete_cookie("session")
    assert who(client) is None


def stop_on_search(monkeypatch, server, starts: str) -> None:
    """Stop `server` just before the portal sends a search whose filter starts with `starts`."""
    original = LeanConnection.search

    def search(self, search_base, search_filter, *args, **kwargs):
        if search_filter.startswith(starts):
            server.stop()
        return original(self, search_base, search_filter, *args, **kwargs)

    monkeypatch.setattr(LeanConnection, "search", search)


def test_a_failing_nested_group_search_never_admits_a_member_of_a_denied_group(
    own_slapd, build_app, monkeypatch
):
    """Alice's engineering group is inside research, which is denied: if reading that level
    fails, the login is a 503, never a login on the groups read so far."""
    app = build_app(own_slapd, LDAP_GROUP_NESTING_DEPTH=1, ACCESS_DENIED_GROUPS=["research"])
    assert AuthActions(app.test_client()).login("alice").status_code == 403, "research denies"
    assert AuthActions(app.test_client()).login("bob").status_code == 302
    assert people_in_cache(app) == ["bob"]
    original = LeanConnection.search
    stop_on_search(monkeypatch, own_slapd, "(|(|(member=")
    client = app.test_client()
    assert AuthActions(client).login("alice").status_code == 503
    monkeypatch.setattr(LeanConnection, "search", original)
    own_slapd.start()
    assert who(client) is None
    assert people_in_cache(app) == ["bob"]


def test_a_failing_group_search_on_refresh_is_a_503_and_caches_nothing(
    own_slapd, build_app, monkeypatch, clock
):
    """The person is found but their groups cannot be read: 503, no cache entry, then back.
    (No stale grace here: with one the person would go on from the entry they had.)"""
    app = build_app(own_slapd, USER_CACHE_TTL=60, USER_STALE_GRACE=0)
    client = app.test_client()
    assert AuthActions(client).login("alice").status_code == 302
    assert people_in_cache(app) == ["alice"]
    clock.advance(61)
    original = LeanConnection.search
    stop_on_search(monkeypatch, own_slapd, "(|(&(objectClass=groupOfNames)")
    assert client.get("/").status_code == 503
    assert people_in_cache(app) == []
    monkeypatch.setattr(LeanConnection, "search", original)
    own_slapd.start()
    eventually(lambda: client.get("/").status_code == 200)
    assert who(client) == ("alice", GROUPS["alice"])
