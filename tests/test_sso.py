"""Forward authentication (/auth/verify), access rules, return addresses and access-check."""

from __future__ import annotations

import logging

import pytest

from portal.access.rules import PathRefused, RuleSet, app_path, decide
from portal.settings import ConfigError
from portal.web.urls import safe_next
from tests.conftest import AuthActions, make_app
from tests.test_fastpath import call, flask_only, request_of

RULES = [
    {
        "hosts": ["wiki.example.org"],
        "paths": ["/finance"],
        "groups": ["finance"],
        "policy": "allow",
    },
    {"hosts": ["wiki.example.org"], "paths": ["/finance"], "policy": "deny"},
    {"hosts": ["*.example.org"], "methods": ["DELETE"], "policy": "deny"},
    {"hosts": ["grafana.example.org"], "groups": ["engineering"], "policy": "allow"},
    {"hosts": ["grafana.example.org"], "policy": "deny"},
]


def nginx_asks(client, url: str, method: str = "GET", **query):
    """What nginx's auth_request subrequest sends for an original request."""
    return client.get(
        "/auth/verify",
        query_string=query,
        headers={"X-Original-URL": url, "X-Original-Method": method},
    )


@pytest.fixture
def sso_app(slapd):
    """The portal with the rules above and example.org as a return domain."""
    return make_app(slapd, ACCESS_RULES=RULES, SSO_ALLOWED_DOMAINS=["example.org"])


def signed_in(app, name: str):
    """A test client signed in as `name`."""
    client = app.test_client()
    assert AuthActions(client).login(name).status_code == 302
    return client


def test_verify_for_a_signed_in_person_returns_identity_headers(sso_app):
    """200 with Remote-User, Remote-Groups, Remote-Name and Remote-Email."""
    response = nginx_asks(signed_in(sso_app, "alice"), "https://wiki.example.org/page")
    assert response.status_code == 200
    assert response.headers["Remote-User"] == "alice"
    assert response.headers["Remote-Groups"] == "engineering,staff"
    assert response.headers["Remote-Name"] == "Alice Liddell"
    assert response.headers["Remote-Email"] == "alice@example.org"
    assert response.headers["Cache-Control"] == "no-store"


def test_verify_for_a_cached_person_costs_no_ldap_operation(sso_app, ldap_spy):
    """It runs on every request to every protected app: served from the user cache."""
    client = signed_in(sso_app, "alice")
    ldap_spy.reset()
    for path in ("/a", "/b", "/c"):
        assert nginx_asks(client, f"https://wiki.example.org{path}").status_code == 200
    assert ldap_spy.count() == 0


def test_verify_without_a_session_answers_401_with_the_login_address(sso_app):
    """Anonymous: 401 and a Location the proxy can send the browser to, carrying the return URL."""
    response = nginx_asks(sso_app.test_client(), "https://wiki.example.org/page?x=1")
    assert response.status_code == 401
    assert response.headers["Location"] == (
        "/login?next=https%3A%2F%2Fwiki.example.org%2Fpage%3Fx%3D1"
    )
    assert "Remote-User" not in response.headers


def test_verify_with_redirect_answers_302_for_traefik_and_caddy(slapd):
    """?redirect=1 turns the 401 into a redirect, to SSO_PORTAL_URL when set."""
    app = make_app(
        slapd, SSO_PORTAL_URL="https://portal.example.org/", SSO_REQUEST_HEADERS="forwarded"
    )
    response = app.test_client().get(
        "/auth/verify?redirect=1",
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "grafana.example.org",
            "X-Forwarded-Uri": "/d/1",
            "X-Forwarded-Method": "GET",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == (
        "https://portal.example.org/login?next=https%3A%2F%2Fgrafana.example.org%2Fd%2F1"
    )


@pytest.mark.parametrize(
    ("name", "url", "method", "status"),
    [
        ("alice", "https://grafana.example.org/d/1", "GET", 200),
        ("bob", "https://grafana.example.org/d/1", "GET", 403),
        ("frank", "https://wiki.example.org/finance/q3", "GET", 200),
        ("alice", "https://wiki.example.org/finance/q3", "GET", 403),
        ("alice", "https://wiki.example.org/public/../finance/q3", "GET", 403),
        ("alice", "https://wiki.example.org/public/%2e%2e/finance/q3", "GET", 403),
        ("alice", "https://wiki.example.org/Finance/q3", "GET", 403),
        ("alice", "https://wiki.example.org//finance/q3", "GET", 403),
        ("alice", "https://wiki.example.org/financeteam", "GET", 200),
        ("alice", "https://wiki.example.org/page", "DELETE", 403),
        ("alice", "https://WIKI.example.org:443/page", "GET", 200),
        ("alice", "https://wiki.example.org./finance/q3", "GET", 403),
    ],
)
def test_access_rules_decide_for_each_app(sso_app, name, url, method, status):
    """Host, path prefix (normalised), method and group rules; the first match decides."""
    assert nginx_asks(signed_in(sso_app, name), url, method).status_code == status


def test_verify_reads_only_the_configured_header_family(slapd):
    """Traefik and Caddy send X-Forwarded-*; a client-added X-Original-URL is then ignored."""
    app = make_app(slapd, ACCESS_RULES=RULES, SSO_REQUEST_HEADERS="forwarded")
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "grafana.example.org",
               "X-Forwarded-Uri": "/d/1", "X-Forwarded-Method": "GET",
               "X-Original-URL": "https://wiki.example.org/page",
               "X-Original-Method": "GET"}  # fmt: skip
    assert signed_in(app, "alice").get("/auth/verify", headers=headers).status_code == 200
    assert signed_in(app, "bob").get("/auth/verify", headers=headers).status_code == 403
    nginx_style = make_app(slapd, ACCESS_RULES=RULES)  # "original": X-Forwarded-* ignored
    assert signed_in(nginx_style, "bob").get("/auth/verify", headers=headers).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Original-URL": "https://wiki.example.org/page"},  # no method
        {"X-Original-Method": "GET"},  # no URL
        {"X-Original-URL": "http://[/", "X-Original-Method": "GET"},
        {"X-Original-URL": "http://[zzz]/x", "X-Original-Method": "GET"},
        {"X-Original-URL": "http://wiki.example.org:abc/x", "X-Original-Method": "GET"},
        {"X-Original-URL": "https://bob@wiki.example.org/x", "X-Original-Method": "GET"},
        {"X-Original-URL": "https://wiki example.org/x", "X-Original-Method": "GET"},
        {"X-Original-URL": "https://wiki\u00e9.org/x", "X-Original-Method": "GET"},
        # A zone id a URL parser cannot split ("Invalid IPv6 URL").
        {"X-Original-URL": "https://[::1%a?b]/x", "X-Original-Method": "GET"},
        # Methods HTTP has no room for: too long, or not a token.
        {"X-Original-URL": "https://wiki.example.org/x", "X-Original-Method": "G" * 33},
        {"X-Original-URL": "https://wiki.example.org/x", "X-Original-Method": "GET /x"},
    ],
)
def test_missing_or_garbled_original_request_is_refused_never_a_500(sso_app, headers):
    """Without a usable description of the request, a signed-in person gets 403, never 200/500."""
    client = signed_in(sso_app, "alice")
    assert client.get("/auth/verify", headers=headers).status_code == 403
    assert sso_app.test_client().get("/auth/verify", headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("family", "headers", "says"),
    [
        ("original", {"X-Original-URL": "https://wiki.example.org/x"},
         "X-Original-Method is missing"),
        ("original", {}, "X-Original-Method and X-Original-URL are missing"),
        ("original", {"X-Original-URL": "ftp://wiki.example.org/x", "X-Original-Method": "GET"},
         "X-Original-URL is neither http nor https"),
        ("original", {"X-Original-URL": "https://wiki.example.org", "X-Original-Method": "GET"},
         "X-Original-URL holds no path"),
        ("original", {"X-Original-URL": "https://a b/x", "X-Original-Method": "GET"},
         "the host in X-Original-URL is not a plain host name"),
        ("forwarded", {"X-Forwarded-Host": "wiki.example.org", "X-Forwarded-Method": "GET"},
         "X-Forwarded-Uri is missing"),
        ("forwarded", {"X-Forwarded-Host": "wiki.example.org", "X-Forwarded-Method": "GET /",
                       "X-Forwarded-Uri": "/x"}, "X-Forwarded-Method is not an HTTP method"),
        ("forwarded", {"X-Forwarded-Host": "wiki.example.org", "X-Forwarded-Method": "GET",
                       "X-Forwarded-Uri": "/x", "X-Forwarded-Proto": "gopher"},
         "X-Forwarded-Proto is neither http nor https"),
    ],
)  # fmt: skip
def test_a_proxy_set_up_wrong_is_told_which_header_it_must_send(
    slapd, caplog, family, headers, says
):
    """A proxy that sends no (or a garbled) description of the request gets its 403 or 401,
    and the log says which header is wrong and which ones the setting expects (once a minute,
    not once per request), never the header's value."""
    app = make_app(slapd, ACCESS_RULES=RULES, SSO_REQUEST_HEADERS=family)
    alice = signed_in(app, "alice")
    with caplog.at_level(logging.WARNING, logger="portal.sso.views"):
        # Anyone may ask so first: their 401 must not hide the signed-in people's 403s.
        assert app.test_client().get("/auth/verify", headers=headers).status_code == 401
        for _ in range(3):
            assert alice.get("/auth/verify", headers=headers).status_code == 403
    lines = [record.getMessage() for record in caplog.records if record.name == "portal.sso.views"]
    assert len(lines) == 2, lines
    assert lines[1].count("answered 403 (to 127.0.0.1)") == 1
    for line in lines:
        assert says in line and f"SSO_REQUEST_HEADERS = '{family}'" in line
        assert "gopher" not in line and "a b" not in line


@pytest.mark.parametrize("through", ["fast path", "Flask"])
@pytest.mark.parametrize(
    "host", ["[::1%x@grafana.example.org:]", "[::1%x@grafana.example.org]", "[fe80::1%eth0]"]
)
def test_a_host_with_a_zone_id_is_never_judged_as_another_host(slapd, through, host):
    """Python takes any text after "%" in an IPv6 address as a zone id, and a URL parser
    reads "[::1%x@grafana.example.org:]" as grafana.example.org: bob (denied by default, open
    to grafana) must not reach the app behind such a Host as if it were grafana's."""
    rules = [{"hosts": ["grafana.example.org"], "policy": "allow"}]
    app = make_app(slapd, ACCESS_DEFAULT_POLICY="deny", ACCESS_RULES=rules)
    client = signed_in(app, "bob")
    target = app.wsgi_app if through == "fast path" else flask_only(app)
    for url, status in (("https://grafana.example.org/x", "200"), (f"https://{host}/x", "403")):
        environ = request_of(client, "/auth/verify", **{"X-Original-URL": url,
                                                        "X-Original-Method": "GET"})  # fmt: skip
        assert call(target, environ)[0].startswith(status), url


def test_forwarded_uri_must_be_a_path(slapd):
    """X-Forwarded-Uri must start with "/": "@evil/x" cannot change the host being judged."""
    app = make_app(slapd, ACCESS_RULES=RULES, SSO_REQUEST_HEADERS="forwarded")
    headers = {"X-Forwarded-Host": "grafana.example.org", "X-Forwarded-Uri": "@evil/x",
               "X-Forwarded-Method": "GET", "X-Forwarded-Proto": "https"}  # fmt: skip
    assert signed_in(app, "alice").get("/auth/verify", headers=headers).status_code == 403


def test_group_names_with_commas_are_left_out_of_remote_groups(own_slapd):
    """A group named "Sales, portal-admins" cannot read as membership of portal-admins."""
    own_slapd.add(
        "dn: cn=Sales\\, portal-admins,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\n"
        "cn: Sales, portal-admins\nmember: uid=bob,ou=people,dc=example,dc=org\n"
    )
    app = make_app(own_slapd)
    response = nginx_asks(signed_in(app, "bob"), "https://wiki.example.org/")
    assert response.headers["Remote-Groups"] == "staff"


def test_session_cookie_domain_also_scopes_the_remember_cookie(slapd):
    """SESSION_COOKIE_DOMAIN shares the sign-in across apps; remember-me follows it."""
    app = make_app(slapd, SESSION_COOKIE_DOMAIN=".example.org", SERVER_NAME="portal.example.org")
    client = app.test_client()
    response = AuthActions(client).login("alice", remember=True)
    cookies = response.headers.getlist("Set-Cookie")
    assert any(c.startswith("session=") and "Domain=example.org" in c for c in cookies)
    assert any(c.startswith("remember_token=") and "Domain=example.org" in c for c in cookies)


def test_group_parameter_demands_membership_for_one_upstream(sso_app):
    """?group= adds a requirement for one upstream."""
    url = "https://tickets.example.org/"
    assert nginx_asks(signed_in(sso_app, "alice"), url, group="Engineering").status_code == 200
    assert nginx_asks(signed_in(sso_app, "bob"), url, group="engineering").status_code == 403


def test_fresh_parameter_demands_a_password_session(sso_app):
    """?fresh=1 (an admin app): a session restored from "keep me signed in", or one that came
    back from another address, is sent to enter the password; a password session passes."""
    url = "https://grafana.example.org/admin"
    browser = sso_app.test_client()
    browser.environ_base["REMOTE_ADDR"] = "10.0.0.1"
    assert AuthActions(browser).login("alice", remember=True).status_code == 302
    assert nginx_asks(browser, url, group="engineering", fresh="1").status_code == 200

    restored = sso_app.test_client()
    restored.set_cookie("remember_token", browser.get_cookie("remember_token").value)
    assert nginx_asks(restored, url, group="engineering").status_code == 200
    refused = nginx_asks(restored, url, group="engineering", fresh="1")
    assert refused.status_code == 401
    assert refused.headers["Location"].startswith("/login?next=https%3A%2F%2Fgrafana")

    moved = sso_app.test_client()
    moved.environ_base["REMOTE_ADDR"] = "10.9.9.9"
    moved.set_cookie("session", browser.get_cookie("session").value)
    assert nginx_asks(moved, url, fresh="1").status_code == 401
    assert nginx_asks(moved, url).status_code == 200


def test_default_policy_deny_closes_unlisted_apps(slapd):
    """With ACCESS_DEFAULT_POLICY deny, an app no rule names is closed to everyone."""
    app = make_app(slapd, ACCESS_RULES=RULES, ACCESS_DEFAULT_POLICY="deny")
    client = signed_in(app, "alice")
    assert nginx_asks(client, "https://unlisted.example.org/").status_code == 403
    assert nginx_asks(client, "https://grafana.example.org/").status_code == 200


def test_verify_accepts_the_methods_proxies_send_without_csrf(sso_app):
    """A POST or DELETE subrequest is a question, not a form: no CSRF token needed."""
    client = signed_in(sso_app, "alice")
    headers = {"X-Original-URL": "https://grafana.example.org/api", "X-Original-Method": "POST"}
    assert client.post("/auth/verify", headers=headers).status_code == 200


def test_logout_at_the_portal_ends_access_to_the_apps(sso_app):
    """After signing out at the portal, the next verify is a 401."""
    client = signed_in(sso_app, "alice")
    assert nginx_asks(client, "https://grafana.example.org/").status_code == 200
    AuthActions(client).logout()
    assert nginx_asks(client, "https://grafana.example.org/").status_code == 401


def test_identity_headers_carry_no_control_characters(own_slapd):
    """A display name with CR/LF cannot split headers; non-Latin text travels as UTF-8 bytes."""
    own_slapd.modify(
        "dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\n"
        "replace: displayName\ndisplayName:: "
        + __import__("base64").b64encode("Łucja\r\nX-Evil: 1".encode()).decode()
        + "\n"
    )
    app = make_app(own_slapd)
    response = nginx_asks(signed_in(app, "alice"), "https://wiki.example.org/")
    assert response.status_code == 200
    assert "X-Evil" not in response.headers
    raw = response.headers["Remote-Name"].encode("latin-1").decode("utf-8")
    assert raw == "ŁucjaX-Evil: 1"


def test_the_same_rules_guard_the_portals_own_pages(slapd):
    """A rule denying /admin to admins closes the status page, whatever the admin groups say."""
    rules = [{"paths": ["/admin"], "groups": ["portal-admins"], "policy": "deny"}]
    app = make_app(slapd, ACCESS_RULES=rules)
    client = signed_in(app, "erin")
    assert client.get("/admin/status").status_code == 403
    assert client.get("/pages/handbook").status_code == 200


@pytest.mark.parametrize(
    ("target", "landing"),
    [
        ("http://wiki.example.org/page?x=1", "http://wiki.example.org/page?x=1"),
        ("http://example.org/", "http://example.org/"),
        ("http://evil.example/", "/"),
        ("http://example.org.evil.example/", "/"),
        ("http://user@wiki.example.org/", "/"),
        ("javascript://example.org/%0aalert(1)", "/"),
        ("https://[/", "/"),
        ("http://[zzz]/", "/"),
        ("http://wiki.example.org:evil.example/", "/"),
        ("http://evil.example%2F.example.org/", "/"),
        ("http://evil.example／.example.org/", "/"),
    ],
)
def test_login_returns_only_to_allowed_domains(sso_app, target, landing):
    """After login, an absolute return address is followed only into SSO_ALLOWED_DOMAINS."""
    response = AuthActions(sso_app.test_client()).login("alice", next=target)
    assert response.headers["Location"] == landing


@pytest.mark.parametrize(
    "target",
    [
        "https://.example.org/",
        "https://wiki..example.org/x",
        "https://" + "a" * 64 + ".example.org/",
    ],
)
def test_a_return_address_no_location_can_carry_leads_home(sso_app, target):
    """A host under an allowed domain with an empty or 64-character label passed, and the
    answer failed while it was sent (a bare 500): the sign-in from such a link lost its
    cookie, and a signed-in person following it got the 500 too. Both land at home."""
    browser = sso_app.test_client()
    signed = AuthActions(browser).login("alice", next=target)
    assert signed.status_code == 302 and signed.headers["Location"] == "/"
    assert browser.get_cookie("session") is not None
    again = browser.get("/login", query_string={"next": target})
    assert again.status_code == 302 and again.headers["Location"] == "/"


@pytest.mark.parametrize(
    ("target", "landing"),
    [
        ("http://localhost/app/engineering/x?y=1", "http://localhost/app/engineering/x?y=1"),
        ("http://LOCALHOST/app/x", "http://localhost/app/x"),
        ("http://localhost:8080/app/x", "/"),  # another port: another site
        ("https://localhost/app/x", "/"),  # another scheme: another site
        ("http://localhost.evil.example/app/x", "/"),
        ("http://evil@localhost/app/x", "/"),
    ],
)
def test_login_returns_to_an_app_under_the_portals_own_host(slapd, caplog, target, landing):
    """One host with apps under paths (the setup deploy/README recommends): /auth/verify names
    the app by its full URL on the portal's own host, which needs no SSO_ALLOWED_DOMAINS entry.
    Anything else is refused, and the refusal is logged (else nobody knows why the person lands
    on the home page)."""
    app = make_app(slapd, ACCESS_RULES=RULES)  # SSO_ALLOWED_DOMAINS empty, as shipped
    with caplog.at_level(logging.WARNING, logger="portal.auth.views"):
        response = AuthActions(app.test_client()).login("alice", next=target)
    assert response.headers["Location"] == landing
    logged = [r.getMessage() for r in caplog.records if r.name == "portal.auth.views"]
    assert bool(logged) is (landing == "/")
    assert all("SSO_ALLOWED_DOMAINS" in line for line in logged)
    assert not any("/app/" in line for line in logged), "only the host: a path may hold secrets"


@pytest.mark.parametrize(
    ("target", "allow_http", "kept"),
    [
        ("https://wiki.example.org/x", False, True),
        ("http://wiki.example.org/x", False, False),
        ("http://wiki.example.org/x", True, True),
        ("https:/wiki.example.org/x", False, False),
        ("https://wiki.example.org\\@evil.example/", False, False),
        ("https://wiki.example.org:8443/x", False, True),
    ],
)
def test_absolute_return_addresses_need_https_unless_cookies_are_plain_http(
    target, allow_http, kept
):
    """https only, unless the portal itself runs on plain HTTP (SESSION_COOKIE_SECURE false)."""
    assert (safe_next(target, ["example.org"], allow_http) == target) is kept


@pytest.mark.parametrize(
    "path",
    [
        "/finance/../public",
        "/public/../finance",
        "/a/./b",
        "/a//b",
        "/a/%2e%2e/b",
        "/a%2Fb",
        "/a%5cb",
        "/a\\b",
        "/a;x/b",
        "/finance./x",
        "/a/..",
        "/x%00",
        "/finance::$DATA",
        "/finance:$I30/x",
        "/FINANC~1/x",
        "/a/FINANC~1.TXT",
    ],
)
def test_ambiguous_path_spellings_are_refused_outright(path):
    """Spellings apps read differently are refused, whatever the rules would say."""
    decision = decide(RULES, "allow", ["finance"], "wiki.example.org", path)
    assert not decision.allowed and decision.reason.startswith(
        "the address itself, before any rule ("
    )
    assert decision.rule == 0


@pytest.mark.parametrize(
    ("sent", "read"),
    [
        ("/finance/q3", "/finance/q3"),
        ("/%66inance/q3", "/finance/q3"),
        ("/fin%61nce/q3?x=%2F", "/finance/q3"),
        ("/%46%49%4e%41%4E%43%45/", "/FINANCE/"),
        ("/a%2db%2Ec%5fd%7ee%30", "/a-b.c_d~e0"),
        ("/a%20b", None),
        ("/finance%2Fq3", None),
        ("/%2566inance", None),
        ("/a%2", None),
        ("/a%g0", None),
        ("/%c3%a9", None),
        ("/é", None),
        ("/a%2e%2e/b", None),
        ("/a/%2E/b", None),
        ("/a/.%2e/b", None),
        ("/finance/q3?x=#y", "/finance/q3"),  # in the query, a "#" is the query's
        ("/a#/../finance", None),  # a raw "#" in the path: apps read on past it, or stop
        ("/finance#", None),
    ],
)
def test_paths_are_read_as_the_app_reads_them(sent, read):
    """Escapes of unreserved characters are decoded; any other escape is refused."""
    if read is None:
        with pytest.raises(PathRefused):
            app_path(sent)
    else:
        assert app_path(sent) == read


@pytest.mark.parametrize("path", ["/%66inance/q3", "/FIN%41NCE/q3", "/%46INANCE"])
def test_escaped_letters_cannot_dodge_a_rule(path):
    """/%66inance is /finance: refused to staff, allowed to finance (rule 1)."""
    assert not decide(RULES, "allow", ["staff"], "wiki.example.org", path).allowed
    decision = decide(RULES, "allow", ["finance"], "wiki.example.org", path)
    assert decision.allowed and decision.rule == 1


def test_kept_escapes_pass_as_they_are(slapd):
    """ACCESS_KEPT_ESCAPES = ["%20", "%C3", "%A9"]: /docs/a%20b and /docs/caf%C3%A9 are judged
    (and allowed) as sent; control characters and structural escapes cannot be kept."""
    rules = RuleSet(RULES, "allow", ["%20", "%C3", "%A9"])
    assert rules.decide(["staff"], "wiki.example.org", "/docs/a%20b").allowed
    assert rules.decide(["staff"], "wiki.example.org", "/docs/caf%C3%A9").allowed
    assert not rules.decide(["staff"], "wiki.example.org", "/finance/a%20b").allowed
    assert not rules.decide(["staff"], "wiki.example.org", "/docs/a%2Fb").allowed
    for escape in ("%2F", "%2e", "%25", "%5C", "%3B", "%09", "%0a", "%7F", "%00", "20", "%2"):
        with pytest.raises(ConfigError) as raised:
            make_app(slapd, ACCESS_KEPT_ESCAPES=[escape])
        assert "ACCESS_KEPT_ESCAPES" in str(raised.value)


def test_paths_are_not_refused_where_no_rule_looks_at_them():
    """A host whose rules name no paths: no spelling of a path can change the decision, so
    none is refused (a rule for another host does not make every %20 a 403)."""
    rules = RuleSet([{"hosts": ["wiki.example.org"], "paths": ["/x"], "policy": "deny"},
                     {"hosts": ["grafana.example.org"], "policy": "deny"}], "allow")  # fmt: skip
    assert rules.decide(["staff"], "tickets.example.org", "/a%20b/%C3%A9").allowed
    assert not rules.decide(["staff"], "grafana.example.org", "/a%20b").allowed
    refused = rules.decide(["staff"], "wiki.example.org", "/a%20b")
    assert not refused.allowed and refused.reason.startswith(
        "the address itself, before any rule ("
    )


def test_rule_paths_with_capitals_also_match_the_lower_cased_reading():
    """A deny rule for /Admin also refuses /admin and /ADMIN (servers that ignore case)."""
    rules = RuleSet([{"paths": ["/Admin"], "policy": "deny"}], "allow")
    for path in ("/Admin/x", "/admin/x", "/ADMIN", "/aDmin/"):
        assert not rules.decide([], "wiki.example.org", path).allowed, path
    assert rules.decide([], "wiki.example.org", "/administration").allowed


def test_a_decision_is_remembered_only_for_the_very_same_question(monkeypatch):
    """/auth/verify asks the same questions again and again: each is worked out once, while a
    question that differs in groups, host, path, method or reading is worked out on its own,
    and a flood of new questions cannot grow the memory without bound."""
    rules = RuleSet(RULES, "allow")
    worked_out = []
    real = rules._decide
    monkeypatch.setattr(rules, "_decide", lambda *question: worked_out.append(question) or
                        real(*question))  # fmt: skip
    for _ in range(3):
        assert not rules.decide(["staff"], "wiki.example.org", "/finance/q").allowed
    assert len(worked_out) == 1
    assert rules.decide(["finance"], "wiki.example.org", "/finance/q").allowed
    assert not rules.decide(["staff"], "wiki.example.org", "/%66inance/q").allowed
    assert not rules.decide(["staff"], "wiki.example.org", "/finance/q", decoded=True).allowed
    assert rules.decide(["staff"], "wiki.example.org", "/docs/q").allowed
    assert not rules.decide(["staff"], "wiki.example.org", "/docs/q", "DELETE").allowed
    assert rules.decide(["engineering"], "grafana.example.org", "/docs/q").allowed
    assert not rules.decide(["staff"], "grafana.example.org", "/docs/q").allowed
    assert len(worked_out) == 8
    long_path = "/docs/" + "x" * RuleSet.QUESTION_KEPT_LENGTH
    kept = len(rules._decided)
    assert rules.decide(["staff"], "wiki.example.org", long_path).allowed
    assert len(rules._decided) == kept, "a long question is answered, not remembered"
    monkeypatch.setattr(RuleSet, "DECISIONS_KEPT", 10)
    for number in range(25):
        rules.decide(["staff"], "wiki.example.org", f"/docs/{number}")
    assert len(rules._decided) <= 10


def test_the_portals_own_pages_are_judged_as_flask_reads_them(slapd):
    """The portal routes on the path Werkzeug decoded, and the rules judge that same path:
    /%61dmin/status is the status page (refused by the rule); a person page whose name has a
    space stays open although other paths are under rules."""
    rules = [{"paths": ["/admin/status"], "groups": ["portal-admins"], "policy": "deny"}]
    client = signed_in(make_app(slapd, ACCESS_RULES=rules), "erin")
    for path in ("/admin/status", "/%61dmin/status", "/admin/st%61tus"):
        assert client.get(path).status_code == 403, path
    assert client.get("/pages/h%61ndbook").status_code == 200
    assert client.get("/admin/users/john%20smith").status_code == 404  # no such person, not 403


def test_a_path_must_be_allowed_as_sent_and_lower_cased():
    """Some servers match paths case-insensitively: /FINANCE is judged like /finance."""
    assert not decide(RULES, "allow", ["staff"], "wiki.example.org", "/FINANCE/q3").allowed
    assert decide(RULES, "allow", ["finance"], "wiki.example.org", "/FINANCE/q3").allowed


def test_a_get_rule_covers_head():
    """HEAD is a GET without a body: a GET-only rule applies to it."""
    rules = [{"methods": ["GET"], "policy": "allow"}]
    assert decide(rules, "deny", [], "a.example", "/", "HEAD").allowed
    assert not decide(rules, "deny", [], "a.example", "/", "POST").allowed


def test_first_matching_rule_wins_and_groups_compare_case_insensitively():
    """An allow before a deny wins; group names compare case-insensitively."""
    decision = decide(RULES, "deny", ["FINANCE"], "wiki.example.org", "/finance/x")
    assert decision.allowed and decision.rule == 1
    assert decide(RULES, "allow", ["staff"], "wiki.example.org", "/finance").rule == 2


@pytest.mark.parametrize(
    ("rules", "says"),
    [
        ([{"policy": "maybe"}], "ACCESS_RULES[1].policy"),
        ([{"policy": "allow", "path": ["/x"]}], "unknown key ['path'] (known: groups, hosts,"),
        ([{"policy": "allow", "paths": ["x"]}], "must be a plain path"),
        ([{"policy": "allow", "paths": ["/a;b"]}], "must be a plain path"),
        (
            [{"policy": "deny", "hosts": ["https://wiki.example.org"]}],
            "a host name or address only",
        ),
        ([{"policy": "deny", "hosts": ["wiki.example.org:443"]}], "a host name or address only"),
        ("allow", "ACCESS_RULES"),
    ],
)
def test_bad_access_rules_stop_start_up(slapd, rules, says):
    """A wrong rule is refused at start-up, naming the rule."""
    with pytest.raises(ConfigError) as raised:
        make_app(slapd, ACCESS_RULES=rules)
    assert says in str(raised.value)


def test_access_check_command_explains_a_decision(sso_app):
    """`flask access-check USER URL` prints the verdict and the rule; exit 0 allow, 1 deny."""
    runner = sso_app.test_cli_runner()
    allowed = runner.invoke(args=["access-check", "alice", "https://grafana.example.org/d/1"])
    assert allowed.exit_code == 0
    assert "ALLOWED by rule 4: allow hosts=grafana.example.org groups=engineering" in (
        allowed.output
    )
    denied = runner.invoke(args=["access-check", "bob", "grafana.example.org/d/1"])
    assert denied.exit_code == 1
    assert "DENIED by rule 5" in denied.output
    nobody = runner.invoke(args=["access-check", "nobody", "https://grafana.example.org/"])
    assert nobody.exit_code == 1
    assert "no such person" in nobody.output
    # With no path, a query or fragment follows the host's "/" (it was read as the host's).
    for address in ("https://grafana.example.org?x=1", "grafana.example.org#top"):
        judged = runner.invoke(args=["access-check", "alice", address])
        assert judged.exit_code == 0, (address, judged.output)
        assert "ALLOWED by rule 4" in judged.output, (address, judged.output)


def test_access_check_takes_a_path_and_judges_portal_pages_by_their_groups(sso_app):
    """A path is an address on the portal's own host (as APPS write them); a configured page
    is judged as the page view judges it, its groups included; an address without a host is a
    usage error, not a traceback."""
    runner = sso_app.test_cli_runner()
    page = runner.invoke(args=["access-check", "bob", "/pages/finance"])
    assert page.exit_code == 1, page.output
    assert "DENIED by the page's groups: needs finance" in page.output
    opened = runner.invoke(args=["access-check", "frank", "/pages/finance"])
    assert opened.exit_code == 0, opened.output
    assert "ALLOWED by the page's groups: member of finance" in opened.output
    # A path without its leading "/" was read as a host ("pages"): ALLOWED by the default
    # policy, exit 0, where /pages/finance is DENIED. Both readings are offered instead.
    for slashless in ("pages/finance", "app/finance/", "admin/status"):
        ambiguous = runner.invoke(args=["access-check", "bob", slashless])
        assert ambiguous.exit_code == 2, (slashless, ambiguous.output)
        first, _, rest = slashless.partition("/")
        assert f"write /{slashless} for a path on the portal's host, or https://{first}/{rest}" in (
            ambiguous.output
        ), ambiguous.output
    app_path = runner.invoke(args=["access-check", "alice", "/app/wiki/"])
    assert app_path.exit_code == 0, app_path.output
    assert "GET https://localhost/app/wiki/: ALLOWED by default policy: allow" in app_path.output
    for hostless in ("https:///app/crm/", "//", "https://[::1/x"):
        refused = runner.invoke(args=["access-check", "alice", hostless])
        assert refused.exit_code == 2, (hostless, refused.output)
        assert "/auth/verify would refuse this address: the host" in refused.output, hostless
    # What /auth/verify refuses is not answered ALLOWED here (it was, by the default policy).
    for address, says in (
        ("ftp://grafana.example.org/d", "the URL is neither http nor https"),
        ("https://grafana.example.org:99999/d", "not a plain host name"),
        ("https://grafana.example.org/d", "--method is not an HTTP method"),
    ):
        method = "BO GUS" if "method" in says else "GET"
        refused = runner.invoke(args=["access-check", "alice", address, "--method", method])
        assert refused.exit_code == 2, (address, refused.output)
        assert says in refused.output, (address, refused.output)


def test_access_check_judges_every_portal_page_as_its_view_does(slapd):
    """Under a default deny: the home page opens (the default is for apps), the admin pages
    need ACCESS_ADMIN_GROUPS, the sign-in page is judged by no rule, an unknown page is a 404,
    and an app path no rule opens is closed; under APPLICATION_ROOT the prefix is the portal's."""
    rules = [{"paths": ["/app/board"], "policy": "allow"}]
    app = make_app(slapd, ACCESS_DEFAULT_POLICY="deny", ACCESS_RULES=rules, APPS=[])
    prefixed = make_app(slapd, ACCESS_DEFAULT_POLICY="deny", ACCESS_RULES=rules, APPS=[],
                        APPLICATION_ROOT="/portal")  # fmt: skip
    try:
        for target, name, path, status, says in (
            (app, "alice", "/", 0, "the portal's own page: no access rule matches it"),
            (app, "alice", "/admin/status", 1, "not in ACCESS_ADMIN_GROUPS"),
            (
                app,
                "erin",
                "/admin/status",
                0,
                "the portal's admin pages: in ACCESS_ADMIN_GROUPS, and no access rule matches it",
            ),
            (app, "alice", "/login", 0, "which no access rule judges"),
            (app, "alice", "/pages/nothing", 1, "no such page in PAGES"),
            (app, "alice", "/app/other/", 1, "default policy: deny"),
            (app, "alice", "/app/board/", 0, "rule 1"),
            (prefixed, "alice", "/portal/pages/handbook", 0, "member of staff"),
        ):
            result = target.test_cli_runner().invoke(args=["access-check", name, path])
            assert result.exit_code == status, (path, result.output)
            assert says in result.output, (path, result.output)
    finally:
        for built in (app, prefixed):
            built.extensions["portal.directory"].close()


@pytest.mark.parametrize("through", ["fast path", "Flask"])
def test_an_app_on_an_ipv6_address_is_judged_by_that_address(slapd, through):
    """With ACCESS_RULES in force, bob opens apps on IPv6 addresses (he was refused: the last
    group of the address was cut off as if it were a port, leaving no usable host), and a rule
    naming an address applies to every spelling of it, an IPv4 one to the IPv4-mapped IPv6
    spelling too; a rule host written with a trailing dot applies to the host (it matched
    nothing)."""
    rules = [{"hosts": ["[2001:DB8:0::1]", "10.0.0.1", "wiki.example.org."], "policy": "deny"}]
    app = make_app(slapd, ACCESS_RULES=rules)
    client = signed_in(app, "bob")
    target = app.wsgi_app if through == "fast path" else flask_only(app)
    for url, status in (("http://[::1]:8080/app/x", "200"), ("http://[2001:db8::8080]/x", "200"),
                        ("https://[2001:db8::1]/x", "403"),
                        ("https://[2001:db8:0:0::1]:8443/x", "403"),
                        # The IPv4 address the rule names, as an IPv4-mapped IPv6 address.
                        ("http://[::ffff:10.0.0.1]/x", "403"), ("http://[::ffff:a00:1]/x", "403"),
                        # A rule host written with the trailing dot of a full name.
                        ("https://wiki.example.org/x", "403"),
                        ("https://wiki.example.org./x", "403")):  # fmt: skip
        environ = request_of(client, "/auth/verify", **{"X-Original-URL": url,
                                                        "X-Original-Method": "GET"})  # fmt: skip
        assert call(target, environ)[0].startswith(status), url


def test_the_portal_on_an_ipv6_address_serves_its_pages(slapd):
    """The portal reached as http://[::1]:5000 with ACCESS_RULES in force: alice's home page
    and pages open (the page check refused "[::1]" as no usable host name)."""
    app = make_app(slapd, ACCESS_RULES=RULES)
    cookie = f"session={signed_in(app, 'alice').get_cookie('session').value}"
    # Sent as the browser would (the test client's own jar keeps cookies for "localhost").
    browser = app.test_client(use_cookies=False)
    for path in ("/", "/pages/handbook"):
        answer = browser.get(path, headers={"Host": "[::1]:5000", "Cookie": cookie})
        assert answer.status_code == 200, path


def test_access_check_says_what_opens_an_admin_page_and_tells_an_outage_apart(own_slapd):
    """Under the default allow, erin's admin page is opened by her admin group (it said
    "default policy: allow", which is for the apps); a bare host name is judged as the https
    address it stands for, and said so; with the directory down the exit status is 3, not the
    1 of a refusal (whois too), so a script does not take an outage for a "no"."""
    app = make_app(own_slapd)
    runner = app.test_cli_runner()
    try:
        admin_page = runner.invoke(args=["access-check", "erin", "/admin/status"])
        assert admin_page.exit_code == 0, admin_page.output
        assert "by the portal's admin pages: in ACCESS_ADMIN_GROUPS" in admin_page.output
        assert "default policy" not in admin_page.output
        bare = runner.invoke(args=["access-check", "alice", "wiki"])
        assert bare.exit_code == 0 and "GET https://wiki/: ALLOWED" in bare.output, bare.output
        own_slapd.stop()
        for command in (["access-check", "alice", "/"], ["whois", "alice"]):
            down = runner.invoke(args=command)
            assert down.exit_code == 3, down.output
            assert "the directory did not answer" in down.output
    finally:
        app.extensions["portal.directory"].close()


def test_the_access_check_of_an_address_with_a_fragment_judges_what_a_browser_sends():
    """A browser keeps "#top" to itself: the address is judged by its path, not refused for a
    "#" the proxy never sees."""
    from portal.access.explain import judge_url

    rules = RuleSet(RULES, "allow")
    assert judge_url(["finance"], rules, "https://wiki.example.org/finance/q3#top").allowed
    assert not judge_url(["staff"], rules, "https://wiki.example.org/finance/q3#top").allowed


@pytest.mark.parametrize("answer", ["fast path", "flask"])
def test_the_groups_forwarded_to_the_apps_can_be_chosen(slapd, answer):
    """SSO_FORWARDED_GROUPS lists names or patterns, without regard to case: Remote-Groups
    then names only alice's groups that match, while the rules and ?group= still judge all of
    them (by the fast path and by Flask alike)."""
    app = make_app(slapd, SSO_FORWARDED_GROUPS=["STAFF", "eng*", "finance"])
    client = signed_in(app, "alice")
    target = app.wsgi_app if answer == "fast path" else flask_only(app)
    url = {"X-Original-URL": "http://h.example/x", "X-Original-Method": "GET"}
    status, headers, _ = call(target, request_of(client, "/auth/verify", **url))
    assert status == "200 OK" and dict(headers)["Remote-Groups"] == "engineering,staff"
    only = make_app(slapd, SSO_FORWARDED_GROUPS=["staff"])
    client = signed_in(only, "alice")
    target = only.wsgi_app if answer == "fast path" else flask_only(only)
    asked = request_of(client, "/auth/verify?group=engineering", **url)
    status, headers, _ = call(target, asked)
    assert status == "200 OK" and dict(headers)["Remote-Groups"] == "staff"


@pytest.mark.parametrize("answer", ["fast path", "flask"])
def test_an_identity_too_large_for_the_proxy_closes_the_apps_with_a_403(slapd, audit_lines, answer):
    """alice's four identity values take 52 bytes: with SSO_IDENTITY_HEADERS_MAX_BYTES 51 the
    apps get a 403 (audited), not headers past what the proxy and the apps take (nginx gave
    a 500 on every app); 52 lets them through, as does 0 (no bound)."""
    url = {"X-Original-URL": "http://h.example/x", "X-Original-Method": "GET"}
    for bound, status in [(51, "403"), (52, "200"), (0, "200")]:
        app = make_app(slapd, SSO_IDENTITY_HEADERS_MAX_BYTES=bound)
        client = signed_in(app, "alice")
        target = app.wsgi_app if answer == "fast path" else flask_only(app)
        assert call(target, request_of(client, "/auth/verify", **url))[0].startswith(status)
    refused = [line for line in audit_lines("access.denied") if line["user"] == "alice"]
    assert [line["reason"] for line in refused] == [
        "identity headers over SSO_IDENTITY_HEADERS_MAX_BYTES"
    ]
