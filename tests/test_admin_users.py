"""The admin user page: what the directory says, why a person may or may not sign in, flush."""

from __future__ import annotations

from portal import accounts
from tests.conftest import PASSWORDS, AuthActions, csrf_token_in


def admin(app):
    """A test client signed in (with a password) as erin, a portal administrator."""
    client = app.test_client()
    assert AuthActions(client).login("erin").status_code == 302
    return client


def test_user_page_explains_groups_standing_and_pages(app):
    """alice: DN, groups, allowed by staff, which pages open and which stay closed and why."""
    body = admin(app).get("/admin/users/alice").get_data(as_text=True)
    assert "uid=alice,ou=people,dc=example,dc=org" in body
    assert "<li>engineering</li><li>staff</li>" in body
    assert "yes: allowed by staff" in body
    assert "<td>Finance reports</td><td>closed</td><td>needs finance</td>" in body
    assert "<td>Employee handbook</td><td>open</td>" in body


def test_user_page_says_why_someone_is_refused(app):
    """dave: in staff, refused by the denied group; carol: in no allowed group."""
    client = admin(app)
    assert "refused by denied group suspended" in client.get("/admin/users/dave").get_data(
        as_text=True
    )
    assert "in no allowed group" in client.get("/admin/users/carol").get_data(as_text=True)


def test_unknown_or_unusable_names_are_404_not_500(app):
    """A person the directory does not know, or a name that cannot be one, is a 4xx page."""
    client = admin(app)
    assert client.get("/admin/users/nobody").status_code == 404
    # A backslash in a path is refused by the access rules before the page (403): a 4xx either way.
    assert client.get("/admin/users/OTHER%5Calice").status_code in (403, 404)
    assert client.get("/admin/users/" + "a" * 300).status_code == 404


def test_look_up_form_leads_to_the_user_page(app):
    """The status page's form sends the administrator to /admin/users/<name>."""
    response = admin(app).get("/admin/users?username=Alice")
    assert response.headers["Location"] == "/admin/users/Alice"


def test_user_page_is_for_admins_only(app, auth):
    """alice (not an administrator) gets 403."""
    auth.login("alice")
    assert auth.client.get("/admin/users/bob").status_code == 403


def test_flush_drops_the_entry_and_is_audited(app, audit_lines, ldap_spy):
    """POST with the page's CSRF token drops the entry; the next request reads the directory."""
    bob = app.test_client()
    AuthActions(bob).login("bob")
    client = admin(app)
    page = client.get("/admin/users/bob").get_data(as_text=True)
    response = client.post("/admin/users/bob/flush", data={"csrf_token": csrf_token_in(page)})
    assert response.status_code == 302
    [line] = audit_lines("admin.flush")
    assert (line["user"], line["target"], line["path"]) == ("erin", "bob", "/admin/users/bob/flush")
    with app.app_context():
        assert accounts.cached_attributes("bob") is None
    ldap_spy.reset()
    assert bob.get("/").status_code == 200
    assert ldap_spy.count("search") == 2


def test_flush_without_csrf_token_is_refused(app):
    """A flush without the form's token is a 400 and changes nothing."""
    client = admin(app)
    AuthActions(app.test_client()).login("bob")
    assert client.post("/admin/users/bob/flush").status_code == 400
    with app.app_context():
        assert accounts.cached_attributes("bob") is not None


def test_user_page_and_whois_show_the_nesting_path_of_each_group(slapd, build_app):
    """With nesting followed, research is shown as reached via engineering (alice's direct
    group); the cached login path still uses batched searches."""
    app = build_app(slapd, LDAP_GROUP_NESTING_DEPTH=3)
    page = admin(app).get("/admin/users/alice").get_data(as_text=True)
    assert "research via engineering" in page
    assert "staff via" not in page
    assert '("a via b": a member of b, which is in a)' in page
    # Without nesting there is nothing to explain: the legend is not shown.
    flat = admin(app).get("/admin/users/bob").get_data(as_text=True)
    assert "via" not in flat
    result = app.test_cli_runner().invoke(args=["whois", "alice"])
    assert "groups: engineering, research via engineering, staff" in result.output


def test_nesting_path_follows_the_chain_and_stops_at_cycles():
    """a via b via c for a chain; a cycle ends instead of looping."""
    from portal.access.explain import nesting_path

    assert nesting_path("a", {"a": "b", "b": "c"}) == ("b", "c")
    assert nesting_path("staff", {"a": "b"}) == ()
    assert nesting_path("a", {"a": "b", "b": "a"}) == ("b", "a")


def test_look_up_tells_no_such_person_from_a_disabled_account(own_slapd):
    """nobody: "no such person", 404, no buttons to press; alice disabled (matched by
    LDAP_DISABLED_FILTER): in the directory but cannot sign in, with the sign-out button."""
    from tests.conftest import make_app

    app = make_app(own_slapd, LDAP_DISABLED_FILTER="(description=disabled)")
    client = admin(app)
    missing = client.get("/admin/users/nobody")
    assert missing.status_code == 404
    body = missing.get_data(as_text=True)
    assert "The directory has no person called nobody." in body
    assert "<form" not in body.split("<main")[1].split("</main>")[0].replace(
        'method="get" action="/admin/users"', ""
    ), "no actions for a person who does not exist"
    own_slapd.modify(
        "dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\n"
        "add: description\ndescription: disabled\n"
    )
    disabled = client.get("/admin/users/alice")
    assert disabled.status_code == 200
    body = disabled.get_data(as_text=True)
    assert "alice is in the directory but cannot sign in: the account is disabled." in body
    assert 'action="/admin/users/alice/revoke"' in body
    app.extensions["portal.directory"].close()


def test_an_empty_look_up_says_so(app):
    client = admin(app)
    answer = client.get("/admin/users?username=+")
    assert answer.status_code == 302 and answer.headers["Location"].endswith(
        "/admin/status#look-up"
    )
    page = client.get("/admin/status").get_data(as_text=True)
    assert '<p class="notice" role="status">Type a username to look up.</p>' in page


def test_the_summary_names_what_fails(slapd):
    """One dead replica of two: the line on top says so before any table does."""
    from tests.conftest import make_app
    from tests.servers import listener

    with listener(lambda connection: connection.close()) as dead:
        app = make_app(None, LDAP_URLS=[slapd.url, dead.url], LDAP_CONNECT_TIMEOUT=1,
                       LDAP_OPERATION_TIMEOUT=1)  # fmt: skip
        body = admin(app).get("/admin/status").get_data(as_text=True)
        main = body.split('<main id="content"')[1].split(">", 1)[1]
        assert main.lstrip().startswith(
            '<p class="summary bad" role="status">Directory: 1 of 2 servers failing</p>'
        )
        app.extensions["portal.directory"].close()


def test_a_name_the_filter_matches_for_another_account_explains_that_account(slapd):
    """With a filter that also matches e-mail addresses, looking up alice@example.org
    explains alice (she signs in that way), not "no such person"."""
    from tests.conftest import make_app

    by_mail = "(&(objectClass=inetOrgPerson)(|(uid={username})(mail={username})))"
    app = make_app(slapd, LDAP_LOGIN_DOMAINS=[], LDAP_USER_FILTER=by_mail)
    answer = admin(app).get("/admin/users/alice@example.org")
    assert answer.status_code == 200
    assert "uid=alice,ou=people,dc=example,dc=org" in answer.get_data(as_text=True)
    app.extensions["portal.directory"].close()


def test_a_look_up_while_the_directory_is_down_names_who_cannot_be_read(own_slapd):
    """erin, just signed in (her own entry fresh), looks up bob while the directory is down:
    the 503 says bob cannot be looked up (it said the portal could not check who she is)."""
    from tests.conftest import make_app

    app = make_app(own_slapd)
    erin = admin(app)
    own_slapd.stop()
    answer = erin.get("/admin/users/bob")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 503
    assert "bob cannot be looked up right now" in page and "who you are" not in page
    assert page.count("in a minute") == 1, page  # said once, by the page (it was twice)
    german = erin.get("/admin/users/bob", headers={"Accept-Language": "de"})
    assert "kann bob gerade nicht nachgeschlagen werden" in german.get_data(as_text=True)
    app.extensions["portal.directory"].close()


def test_signing_someone_out_everywhere_is_asked_first(app):
    """The user page's button opens "Sign bob out everywhere?", which ends nothing (one click
    ended every sign-in of the person at once); its own button, CSRF-checked, does."""
    from tests.test_sessions import is_signed_in, signed_in

    bob = signed_in(app, "bob", remember=True)
    erin = admin(app)
    page = erin.get("/admin/users/bob").get_data(as_text=True)
    assert '<form method="get" action="/admin/users/bob/revoke">' in page
    asked = erin.get("/admin/users/bob/revoke")
    body = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "Sign bob out everywhere?" in body
    assert 'href="/admin/users/bob">Cancel' in body
    assert is_signed_in(bob), "asking ended nothing"
    forged = erin.post("/admin/users/bob/revoke", data={"csrf_token": "forged"})
    assert forged.status_code == 400 and is_signed_in(bob)
    done = erin.post("/admin/users/bob/revoke", data={"csrf_token": csrf_token_in(body)})
    assert done.status_code == 302 and not is_signed_in(bob)


def test_user_page_lists_the_apps_their_home_page_shows_and_why_not_the_others(app):
    """bob's look-up lists each app with whether his home page shows it, and why: exactly the
    tiles his own home page shows (the look-up listed the pages only, so "why does bob not see
    Dashboards?" needed access-check and the app's address)."""
    import html
    import re

    body = admin(app).get("/admin/users/bob").get_data(as_text=True)
    rows = dict(re.findall(r"<td>([^<]+)<br><small[^>]*>[^<]*</small></td><td>(yes|no)</td>", body))
    assert len(rows) == len(app.config["APPS"]) >= 5, rows
    bob = app.test_client()
    assert AuthActions(bob).login("bob").status_code == 302
    home = bob.get("/").get_data(as_text=True)
    tiles = {
        html.unescape(title) for title in re.findall(r'<span class="title">([^<]+)</span>', home)
    }
    assert {html.unescape(title) for title, shown in rows.items() if shown == "yes"} == tiles
    assert "<td>no</td><td>closed by rule 2: deny paths=/app/engineering</td>" in body
    assert "<td>no</td><td>needs finance</td>" in body
    assert "<td>yes</td><td>shown to everyone signed in</td>" in body
    whois = app.test_cli_runner().invoke(args=["whois", "bob"]).output
    assert "apps on the home page:\n" in whois
    assert "  hidden Budgets (/app/finance/): needs finance\n" in whois


def test_an_app_a_rule_opens_is_listed_with_that_rule(app):
    """Runbooks has no groups of its own: rule 1 opens it to engineering, rule 2 closes it to
    everyone else. alice's look-up and whois name rule 1 (they said "shown to everyone signed
    in", which bob's hidden tile belies)."""
    rule = "rule 1: allow paths=/app/engineering groups=engineering"
    body = admin(app).get("/admin/users/alice").get_data(as_text=True)
    assert f"<td>yes</td><td>opened by {rule}</td>" in body
    whois = app.test_cli_runner().invoke(args=["whois", "alice"]).output
    assert f"  shown  Runbooks (/app/engineering/runbooks/): opened by {rule}\n" in whois
    assert "shown to everyone signed in" in whois  # the tiles no rule speaks of


def test_a_look_up_the_directory_refuses_is_not_called_an_outage(app, monkeypatch, caplog):
    """The directory answers the look-up with a refusal (a size limit, a result code): the
    portal's 503 page, and the log line saying what the directory said (the page called it an
    outage and the log said nothing)."""
    from portal import directory

    erin = admin(app)

    def refused(*args, **kwargs):
        raise directory.DirectoryError("search under ou=groups refused with result code 50")

    monkeypatch.setattr(directory, "lookup", refused)
    with caplog.at_level("WARNING"):
        answer = erin.get("/admin/users/bob")
    assert answer.status_code == 503
    assert "cannot be looked up" not in answer.get_data(as_text=True)
    assert any("result code 50" in record.getMessage() for record in caplog.records)


def test_look_up_with_the_portals_account_refused_names_the_settings_to_fix(own_slapd):
    """The directory answers but refuses the portal's service account (its password changed
    in the directory): the look-up says so and names the settings, not "not answering"."""
    from tests.conftest import SERVICE_DN, make_app

    app = make_app(own_slapd)
    client = admin(app)
    own_slapd.modify(f"dn: {SERVICE_DN}\nchangetype: modify\nreplace: userPassword\n"
                     "userPassword: changed-behind-the-portals-back\n")  # fmt: skip
    app.extensions["portal.directory"].close()  # no bound connection kept from before
    answer = client.get("/admin/users/bob")
    app.extensions["portal.directory"].close()
    assert answer.status_code == 503
    body = answer.get_data(as_text=True)
    assert "refuses the portal&#39;s own account" in body or "refuses the portal's own" in body
    assert "LDAP_BIND_PASSWORD" in body
    assert "not answering" not in body


def test_admin_pages_with_no_admin_groups_say_none_are_set(slapd):
    """ACCESS_ADMIN_GROUPS empty: the 403 says no administrators are set, not "(members of )"."""
    from tests.conftest import make_app

    app = make_app(slapd, ACCESS_ADMIN_GROUPS=[])
    client = admin(app)
    answer = client.get("/admin/status")
    app.extensions["portal.directory"].close()
    assert answer.status_code == 403
    body = answer.get_data(as_text=True)
    assert "none are set (ACCESS_ADMIN_GROUPS is empty)" in body
    assert "(members of )" not in body


BY_UID_OR_MAIL = {
    "LDAP_USER_FILTER": "(&(objectClass=inetOrgPerson)(|(uid={username})(mail={login})))",
    "LDAP_LOGIN_DOMAINS": [],
    "LDAP_DISABLED_FILTER": "(description=disabled)",
}


def test_signing_out_everywhere_by_an_email_address_signs_out_its_owner(own_slapd, build_app):
    """/admin/users/bob@example.org/revoke, typed by hand (the user filter also matches mail):
    the question is asked of bob's account, and the button ends bob's sign-ins, the one made
    by his address too (it marked the address, said every sign-in of it had ended, and bob
    stayed signed in)."""
    from tests.test_sessions import is_signed_in, signed_in

    app = build_app(own_slapd, **BY_UID_OR_MAIL)
    bob = signed_in(app, "bob", remember=True)
    by_mail = app.test_client()
    assert AuthActions(by_mail).login("bob@example.org", PASSWORDS["bob"]).status_code == 302
    erin = admin(app)
    asked = erin.get("/admin/users/bob@example.org/revoke")
    assert asked.status_code == 302 and asked.headers["Location"] == "/admin/users/bob/revoke"
    form = erin.get("/admin/users/bob/revoke").get_data(as_text=True)
    done = erin.post("/admin/users/bob@example.org/revoke",
                     data={"csrf_token": csrf_token_in(form)})  # fmt: skip
    assert done.status_code == 302 and done.headers["Location"] == "/admin/users/bob"
    assert not is_signed_in(bob) and not is_signed_in(by_mail)
    said = erin.get("/admin/users/bob").get_data(as_text=True)
    assert "Every sign-in of bob has ended" in said


def test_an_address_kept_on_two_entries_signs_nobody_out(own_slapd, build_app):
    """Off-boarding: bob is disabled and his address is kept on alice's entry too. Signing the
    address out everywhere is refused (409, the page says why) and alice stays signed in."""
    from tests.test_sessions import BOB, is_signed_in, signed_in

    app = build_app(own_slapd, **BY_UID_OR_MAIL)
    alice = signed_in(app, "alice")
    own_slapd.modify(f"dn: {BOB}\nchangetype: modify\nadd: description\ndescription: disabled\n")
    own_slapd.modify("dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\n"
                     "add: mail\nmail: bob@example.org\n")  # fmt: skip
    erin = admin(app)
    asked = erin.get("/admin/users/bob@example.org/revoke")
    assert asked.status_code == 409
    assert "finds more than one account" in asked.get_data(as_text=True)
    form = erin.get("/admin/users/erin/revoke").get_data(as_text=True)
    done = erin.post("/admin/users/bob@example.org/revoke",
                     data={"csrf_token": csrf_token_in(form)})  # fmt: skip
    assert done.status_code == 409 and is_signed_in(alice)
    german = erin.get("/admin/users/bob@example.org/revoke", headers={"Accept-Language": "de"})
    assert "findet mehr als ein Konto" in german.get_data(as_text=True)


def test_signing_out_a_name_the_directory_does_not_know_says_so(app, audit_lines):
    """A typo: nobody the directory knows is signed out, and the page says so instead of "every
    sign-in has ended" (the person meant would stay signed in, the admin thinking otherwise)."""
    erin = admin(app)
    form = erin.get("/admin/users/bob/revoke").get_data(as_text=True)
    done = erin.post("/admin/users/bbo/revoke", data={"csrf_token": csrf_token_in(form)})
    assert done.status_code == 302 and done.headers["Location"] == "/admin/status#look-up"
    page = erin.get("/admin/status").get_data(as_text=True)
    assert "The directory has no account bbo" in page and "has ended" not in page
    assert [line["target"] for line in audit_lines("admin.revoke")] == ["bbo"]


def test_the_sign_out_card_says_whether_the_person_can_sign_in_again(app):
    """dave is in the denied group suspended: signing him out everywhere does not let him
    sign in again with his password (the card said it did); alice can."""
    client = admin(app)
    dave = client.get("/admin/users/dave").get_data(as_text=True)
    assert "They cannot sign in again while the portal refuses them (above)." in dave
    assert "They can sign in again with their password." not in dave
    alice = client.get("/admin/users/alice").get_data(as_text=True)
    assert "They can sign in again with their password." in alice


def test_signing_out_an_address_while_the_directory_is_down_ends_nothing_and_says_so(
    own_slapd, build_app
):
    """The directory stops answering: whose address bob@example.org is cannot be told, so
    the revoke is refused with a 503 saying so, and nobody's sign-ins are said to have ended
    (the address was marked, "Every sign-in of bob@example.org has ended" flashed, and bob
    stayed signed in)."""
    from tests.test_sessions import signed_in

    app = build_app(own_slapd, **BY_UID_OR_MAIL)
    by_mail = app.test_client()
    assert AuthActions(by_mail).login("bob@example.org", PASSWORDS["bob"]).status_code == 302
    bob = signed_in(app, "bob")
    erin = admin(app)
    form = erin.get("/admin/users/bob/revoke").get_data(as_text=True)
    own_slapd.stop()
    answer = erin.post("/admin/users/bob@example.org/revoke",
                       data={"csrf_token": csrf_token_in(form)})  # fmt: skip
    assert answer.status_code == 503
    assert "whose address bob@example.org is cannot be told" in answer.get_data(as_text=True)
    assert erin.get("/").status_code == 200 and bob.get("/").status_code == 200
