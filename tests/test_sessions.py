"""Sessions that end: rotation, sign-out that ends copies, expiry inside remember-me cookies,
"sign out everywhere", administrator revoke (page and command), session protection that reads
no client-written header, and ProxyFix only for configured hops. Real slapd throughout.
"""

from __future__ import annotations

import logging
import re
import time
from types import SimpleNamespace

import pytest

from portal import accounts
from portal.signin import logins
from tests.conftest import PASSWORDS, AuthActions, csrf_token_in, make_app, session_username

REMEMBER = "remember_token"


def signed_in(app, username="alice", remember=False, address="10.0.0.1"):
    """A client at `address` that signed in through the form."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    assert AuthActions(client).login(username, remember=remember).status_code == 302
    return client


def copy_cookies(source, target, names=("session", REMEMBER)) -> None:
    """Give target the source's cookies, as a thief with a copy of them would."""
    for name in names:
        cookie = source.get_cookie(name)
        if cookie is not None:
            target.set_cookie(name, cookie.value)


def is_signed_in(client) -> bool:
    """Home answers 200 to a signed-in person and redirects anyone else to the login page."""
    response = client.get("/")
    assert response.status_code in (200, 302), response.status_code
    return response.status_code == 200


def remember_only(app, source, address="10.0.0.1"):
    """A new browser holding only the source's remember-me cookie."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    copy_cookies(source, client, names=(REMEMBER,))
    return client


def test_login_rotates_the_session_cookie(app):
    """The cookie after signing in is a new one: a value planted before login is not reused."""
    client = app.test_client()
    client.get("/login")
    before = client.get_cookie("session").value
    AuthActions(client).login("alice")
    assert client.get_cookie("session").value != before
    with client.session_transaction() as session:
        assert set(session) >= {"_user_id", "_fresh", "logout_token"}


def test_a_copy_of_the_session_taken_before_logout_is_not_signed_in_after_it(app):
    """Sign-out ends the login itself: a replayed copy of the cookie is anonymous."""
    browser = signed_in(app)
    thief = app.test_client()
    copy_cookies(browser, thief)
    assert is_signed_in(thief)
    AuthActions(browser).logout()
    assert not is_signed_in(thief)


def test_a_copy_of_the_remember_cookie_stops_working_after_logout(app):
    """ "Keep me signed in": the remember-me cookie alone signs in, until its login signs out."""
    browser = signed_in(app, remember=True)
    assert is_signed_in(remember_only(app, browser))
    thief = remember_only(app, browser)
    response = AuthActions(browser).logout()
    assert "remember_token=;" in response.headers.get("Set-Cookie", "") or any(
        header.startswith(REMEMBER + "=;") for header in response.headers.getlist("Set-Cookie")
    )
    assert not is_signed_in(thief)


def test_remember_cookie_expires_after_remember_cookie_days(app, clock):
    """The expiry is inside the signed cookie: after REMEMBER_COOKIE_DAYS it no longer works."""
    browser = signed_in(app, remember=True)
    days = app.config["REMEMBER_COOKIE_DAYS"]
    clock.advance(days * 86400 - 60)
    assert is_signed_in(remember_only(app, browser)), "still valid a minute before"
    clock.advance(120)
    assert not is_signed_in(remember_only(app, browser))


def test_a_login_without_remember_me_ends_after_session_max_age_hours(slapd, build_app, clock):
    """However active the session, it ends SESSION_MAX_AGE_HOURS after the password was typed."""
    app = build_app(slapd, SESSION_MAX_AGE_HOURS=2)
    browser = signed_in(app)
    clock.advance(2 * 3600 - 60)
    assert is_signed_in(browser)
    clock.advance(120)
    assert not is_signed_in(browser)


@pytest.mark.parametrize("kept", ["session", REMEMBER])
def test_a_dead_copy_of_a_cookie_cannot_sign_its_person_out_everywhere(app, kept):
    """A copy of bob's cookie taken before he signed out (a lost phone's, a former owner's of
    the name) asks "sign out everywhere", again and again: his sign-in elsewhere stands, and
    the copy's own browser is signed out only (it ended bob's every sign-in each time)."""
    old = signed_in(app, "bob", remember=True)
    thief, copied = app.test_client(), old.get_cookie(kept).value
    assert AuthActions(old).logout().status_code == 302
    bob = signed_in(app, "bob", address="10.0.0.2")
    for _ in range(2):
        thief.set_cookie(kept, copied)  # the copy is sent again, as the thief would
        token = csrf_token_in(thief.get("/logout?everywhere=1").get_data(as_text=True))
        thief.set_cookie(kept, copied)
        answer = thief.post("/logout", data={"csrf_token": token, "everywhere": "1"})
        assert answer.status_code == 302
        assert "signed_out=everywhere" not in answer.headers["Location"]
        assert is_signed_in(bob)
    # bob's own, live, sign-in still signs him out everywhere.
    token = csrf_token_in(bob.get("/logout?everywhere=1").get_data(as_text=True))
    answer = bob.post("/logout", data={"csrf_token": token, "everywhere": "1"})
    assert "signed_out=everywhere" in answer.headers["Location"]


@pytest.mark.parametrize("kept", ["session", REMEMBER])
def test_a_former_owners_cookie_cannot_sign_the_new_one_out_everywhere(own_slapd, build_app,
                                                                        kept):  # fmt: skip
    """bob left and a new bob has the name (his entry deleted and made again). The former
    owner's copy asks "sign out everywhere" once the cache holds no entry for bob (the new bob
    signed out of his phone, which drops it): the directory's entry decides, and the new bob's
    laptop stays signed in."""
    app = build_app(own_slapd)
    departed = signed_in(app, "bob", remember=True)
    own_slapd.delete(BOB)
    own_slapd.add(f"dn: {BOB}\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob Newhire\n"
                  "sn: Newhire\nuserPassword: new-hire-secret\n")  # fmt: skip
    with app.app_context():
        accounts.forget("bob")
    laptop, phone = app.test_client(), app.test_client()
    for device in (laptop, phone):
        assert AuthActions(device).login("bob", "new-hire-secret").status_code == 302
    thief = app.test_client()
    copy_cookies(departed, thief, names=(kept,))
    token = csrf_token_in(thief.get("/logout?everywhere=1").get_data(as_text=True))
    copy_cookies(departed, thief, names=(kept,))
    assert AuthActions(phone).logout().status_code == 302
    answer = thief.post("/logout", data={"csrf_token": token, "everywhere": "1"})
    assert "signed_out=everywhere" not in answer.headers["Location"]
    assert is_signed_in(laptop)


def test_sign_out_everywhere_works_when_the_directory_refuses_to_say(app, monkeypatch):
    """With no cache entry for bob, whether his sign-in still works is the directory's to say;
    refusing to (a size limit, a result code) must not stop him signing out everywhere (it
    was the 503 page, and he stayed signed in). Fault injected: slapd refuses nothing here."""
    from portal import directory

    laptop, phone = signed_in(app, "bob"), signed_in(app, "bob", address="10.0.0.2")
    token = csrf_token_in(laptop.get("/logout?everywhere=1").get_data(as_text=True))
    with app.app_context():
        accounts.forget("bob")

    def refused(*args, **kwargs):
        raise directory.DirectoryError("search under ou=groups refused with result code 50")

    monkeypatch.setattr(directory, "lookup", refused)
    answer = laptop.post("/logout", data={"csrf_token": token, "everywhere": "1"})
    assert answer.status_code == 302 and "signed_out=everywhere" in answer.headers["Location"]
    monkeypatch.undo()
    assert not is_signed_in(phone)


def test_sign_out_everywhere_ends_every_session_and_remember_cookie(app):
    """From the laptop: the phone's session and its remember-me cookie end too; signing in
    again afterwards works."""
    laptop = signed_in(app)
    phone = signed_in(app, remember=True, address="10.0.0.2")
    phone_cookie_only = remember_only(app, phone, address="10.0.0.2")
    bob = signed_in(app, "bob")
    home = laptop.get("/").get_data(as_text=True)
    assert "Sign out everywhere" in home
    assert AuthActions(laptop).logout(everywhere=True).status_code == 302
    assert not is_signed_in(phone)
    assert not is_signed_in(phone_cookie_only)
    assert is_signed_in(bob), "only alice's logins end"
    assert is_signed_in(signed_in(app)), "a login made afterwards works"


def test_a_device_whose_sign_in_ended_elsewhere_is_told_so_at_the_sign_in(app):
    """After "sign out everywhere" on the laptop, the phone was shown the plain sign-in page,
    as if nothing had happened: it now says the sign-in ended; a visitor who never signed in
    is told nothing of the kind."""
    laptop, phone = signed_in(app), signed_in(app, address="10.0.0.2")
    assert AuthActions(laptop).logout(everywhere=True).status_code == 302
    said = "Your sign-in has ended (signed out elsewhere, or it ran out). Please sign in again."
    for path in ("/", "/pages/handbook"):
        sent = phone.get(path)
        assert sent.status_code == 302, path
        assert said in phone.get(sent.headers["Location"]).get_data(as_text=True), path
    stranger = app.test_client()
    sent = stranger.get("/pages/handbook")
    assert said not in stranger.get(sent.headers["Location"]).get_data(as_text=True)


def test_admin_revoke_ends_every_login_of_the_person_and_is_audited(app, audit_lines):
    """erin (admin, password session) revokes bob: his session and remember cookie end."""
    bob = signed_in(app, "bob", remember=True)
    bob_elsewhere = remember_only(app, bob, address="10.0.0.7")
    erin = signed_in(app, "erin")
    page = erin.get("/admin/users/bob").get_data(as_text=True)
    assert "Sign this person out everywhere" in page
    response = erin.post("/admin/users/bob/revoke", data={"csrf_token": csrf_token_in(page)})
    assert response.status_code == 302
    assert not is_signed_in(bob)
    assert not is_signed_in(bob_elsewhere)
    assert is_signed_in(erin)
    [line] = audit_lines("admin.revoke")
    assert (line["user"], line["target"]) == ("erin", "bob")


def test_admin_revoke_needs_the_csrf_token(app):
    """A cross-site POST cannot sign people out."""
    bob = signed_in(app, "bob")
    erin = signed_in(app, "erin")
    assert erin.post("/admin/users/bob/revoke").status_code == 400
    assert is_signed_in(bob)


def test_revoke_command_reaches_servers_sharing_redis(slapd, build_app, redis_server):
    """`flask revoke bob` with the shared Redis ends bob's login on a running server."""
    settings = {
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": redis_server.url,
        "CACHE_KEY_PREFIX": "revoke-command-test:",
    }
    server, command_line = build_app(slapd, **settings), build_app(slapd, **settings)
    bob = signed_in(server, "bob", remember=True)
    assert is_signed_in(bob)
    result = command_line.test_cli_runner().invoke(args=["revoke", "BOB"])
    assert result.exit_code == 0, result.output
    assert "bob: every sign-in" in result.output
    assert not is_signed_in(bob)
    assert not is_signed_in(remember_only(server, bob))
    # A name the directory does not know (a typo of bob's): said, exit status 1; bob's new
    # sign-in stands, as the warning says.
    again = signed_in(server, "bob")
    typo = command_line.test_cli_runner().invoke(args=["revoke", "bbo"])
    assert typo.exit_code == 1, typo.output
    assert "the directory has no account 'bbo'" in typo.output
    assert "has ended" not in typo.output  # no success line before the warning
    assert is_signed_in(again)


def test_revoke_command_after_the_entry_was_deleted_says_the_sign_ins_ended(
    own_slapd, build_app, redis_server
):
    """Off-boarding that deletes the entry first, then `portal revoke bob`: his sign-ins end,
    and the command said none had ("the directory has no account 'bob' ... a typo?", exit 1).
    Now it says they ended (exit 0), the cache having held an entry for the name."""
    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url,
                "CACHE_KEY_PREFIX": "revoke-deleted-test:"}  # fmt: skip
    server, command_line = build_app(own_slapd, **settings), build_app(own_slapd, **settings)
    bob = signed_in(server, "bob", remember=True)
    own_slapd.delete("uid=bob,ou=people,dc=example,dc=org")
    result = command_line.test_cli_runner().invoke(args=["revoke", "bob"])
    assert result.exit_code == 0, result.output
    assert "bob: every sign-in made until now under this name has ended" in result.output
    assert "warning" not in result.output
    assert not is_signed_in(bob)
    assert not is_signed_in(remember_only(server, bob))


def test_revoke_command_on_a_disabled_account_says_its_sign_ins_ended(own_slapd, build_app,
                                                                      redis_server):  # fmt: skip
    """Off-boarding: bob's account is disabled in the directory, then `portal revoke bob`. His
    sign-ins end, and the command says so with exit status 0, naming the account's state (it
    said the directory had no such account, a typo?, exit 1)."""
    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url,
                "CACHE_KEY_PREFIX": "revoke-disabled-test:",
                "LDAP_DISABLED_FILTER": "(description=disabled)"}  # fmt: skip
    server, command_line = build_app(own_slapd, **settings), build_app(own_slapd, **settings)
    bob = signed_in(server, "bob", remember=True)
    own_slapd.modify(f"dn: {BOB}\nchangetype: modify\nadd: description\ndescription: disabled\n")
    result = command_line.test_cli_runner().invoke(args=["revoke", "bob"])
    assert result.exit_code == 0, result.output
    assert "bob: every sign-in made until now has ended" in result.output
    assert "disabled" in result.output
    assert "no account" not in result.output
    assert not is_signed_in(remember_only(server, bob))


@pytest.mark.parametrize("disabled", [False, True], ids=["active", "disabled"])
def test_revoke_command_by_an_email_address_ends_its_owners_sign_ins(
    own_slapd, build_app, redis_server, disabled
):
    """The user filter also matches mail: `portal revoke bob@example.org` ends bob's sign-ins,
    the one made by his address too, and names him (it marked "bob@example.org", said every
    sign-in had ended, exit 0, and bob stayed signed in); so for his disabled account."""
    by_uid_or_mail = "(&(objectClass=inetOrgPerson)(|(uid={username})(mail={login})))"
    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url,
                "CACHE_KEY_PREFIX": f"revoke-alias-test-{disabled}:", "LDAP_LOGIN_DOMAINS": [],
                "LDAP_USER_FILTER": by_uid_or_mail,
                "LDAP_DISABLED_FILTER": "(description=disabled)"}  # fmt: skip
    server, command_line = build_app(own_slapd, **settings), build_app(own_slapd, **settings)
    bob = signed_in(server, "bob", remember=True)
    by_mail = server.test_client()
    assert AuthActions(by_mail).login("bob@example.org", PASSWORDS["bob"]).status_code == 302
    if disabled:
        own_slapd.modify(f"dn: {BOB}\nchangetype: modify\nadd: description\n"
                         "description: disabled\n")  # fmt: skip
    result = command_line.test_cli_runner().invoke(args=["revoke", "bob@example.org"])
    assert result.exit_code == 0, result.output
    assert "bob (found by 'bob@example.org'): every sign-in made until now has ended" in (
        result.output
    )
    assert not is_signed_in(remember_only(server, bob))
    if not disabled:  # (a disabled account is signed out by its state alone)
        assert not is_signed_in(bob) and not is_signed_in(by_mail)


def test_revoke_command_by_a_disabled_persons_address_kept_on_another_entry_revokes_neither(
    own_slapd, build_app, redis_server
):
    """Off-boarding: bob is disabled and his address is kept on alice's entry too. The address
    names two accounts, so it is nobody's: alice is not revoked, nor named (only the active
    entry was seen, and alice was revoked and named as the owner), and the command says the
    name finds several accounts, exit status 1."""
    by_uid_or_mail = "(&(objectClass=inetOrgPerson)(|(uid={username})(mail={login})))"
    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url,
                "CACHE_KEY_PREFIX": "revoke-kept-address-test:", "LDAP_LOGIN_DOMAINS": [],
                "LDAP_USER_FILTER": by_uid_or_mail,
                "LDAP_DISABLED_FILTER": "(description=disabled)"}  # fmt: skip
    server, command_line = build_app(own_slapd, **settings), build_app(own_slapd, **settings)
    alice = signed_in(server, "alice")
    own_slapd.modify(f"dn: {BOB}\nchangetype: modify\nadd: description\ndescription: disabled\n")
    own_slapd.modify("dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\n"
                     "add: mail\nmail: bob@example.org\n")  # fmt: skip
    result = command_line.test_cli_runner().invoke(args=["revoke", "bob@example.org"])
    assert "alice" not in result.output, result.output
    assert is_signed_in(alice)
    assert result.exit_code == 1, result.output
    assert "'bob@example.org' finds more than one account" in result.output
    assert "has ended" not in result.output


def test_revoke_command_with_the_directory_down_revokes_the_name_as_typed_and_says_so(
    slapd, build_app, redis_server
):
    """No directory server answers the command: bob is revoked by his user name all the same,
    and the note says the name was taken as one, unchecked (another of his names would not be
    his, so it says to run it again once the directory answers)."""
    from portal.testing.slapd import free_port

    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url,
                "CACHE_KEY_PREFIX": "revoke-unchecked-test:"}  # fmt: skip
    server = build_app(slapd, **settings)
    command_line = build_app(slapd, LDAP_URLS=[f"ldap://127.0.0.1:{free_port()}"], **settings)
    bob = signed_in(server, "bob")
    result = command_line.test_cli_runner().invoke(args=["revoke", "bob"])
    assert result.exit_code == 0, result.output
    assert "bob: every sign-in made until now has ended" in result.output
    assert "'bob' could not be checked, so it was taken as a user name" in result.output
    assert "run this again once the directory answers" in result.output
    assert not is_signed_in(bob)


def test_revoke_command_refuses_a_cache_the_servers_do_not_share(app):
    """With SimpleCache the command cannot reach the servers: it says so and fails."""
    result = app.test_cli_runner().invoke(args=["revoke", "bob"])
    assert result.exit_code != 0
    assert "do not share" in result.output


def test_revocation_is_shared_by_instances_using_one_redis(slapd, build_app, redis_server):
    """Signing out everywhere on one instance ends the login on the other."""
    settings = {
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": redis_server.url,
        "CACHE_KEY_PREFIX": "revoke-shared-test:",
    }
    first, second = build_app(slapd, **settings), build_app(slapd, **settings)
    on_first = signed_in(first, "frank")
    on_second = second.test_client()
    copy_cookies(on_first, on_second)
    assert is_signed_in(on_second)
    AuthActions(on_first).logout(everywhere=True)
    assert not is_signed_in(on_second)


@pytest.mark.parametrize(
    "planted",
    [
        "alice",  # the format before logins could end: no expiry, nothing to revoke
        "alice|sid|1|99999999999999|extra",
        "alice|sid|1",
        "alice|sid|²|99999999999999",
        "|sid|1|99999999999999",
    ],
)
def test_a_session_id_the_portal_did_not_write_is_anonymous(app, planted):
    """A validly signed session whose login id is not one of ours signs nobody in."""
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = planted
        session["_fresh"] = True
    assert not is_signed_in(client)


def test_login_id_names_the_person_and_a_random_session(app):
    """Two logins of one person differ; each names her."""
    first, second = signed_in(app), signed_in(app)
    with first.session_transaction() as one, second.session_transaction() as two:
        a, b = logins.parse(one["_user_id"]), logins.parse(two["_user_id"])
    assert a.username == b.username == "alice" == session_username(first)
    assert a.sid != b.sid and len(a.sid) >= 16


# --- Session protection and proxies -----------------------------------------------------------


def move(client, address: str, agent: str | None = None) -> None:
    """The same cookies, now sent from another address (and browser)."""
    client.environ_base["REMOTE_ADDR"] = address
    if agent is not None:
        client.environ_base["HTTP_USER_AGENT"] = agent


def test_basic_protection_demotes_a_session_used_from_elsewhere(app):
    """Default "basic": the copy still opens pages but admin pages ask for the password."""
    erin = signed_in(app, "erin")
    assert erin.get("/admin/status").status_code == 200
    move(erin, "198.51.100.9")
    assert erin.get("/").status_code == 200
    response = erin.get("/admin/status")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_strong_protection_signs_out_a_session_used_from_elsewhere(slapd, build_app):
    """ "strong": the session is dropped when the address or browser changes."""
    app = build_app(slapd, SESSION_PROTECTION="strong")
    browser = signed_in(app)
    assert is_signed_in(browser)
    move(browser, "10.0.0.1", agent="another browser")
    assert not is_signed_in(browser)


@pytest.mark.parametrize("everywhere", ["1", ""])
def test_under_strong_protection_a_moved_session_cannot_sign_its_owner_out(slapd, build_app,
                                                                           everywhere):  # fmt: skip
    """ "strong": a copy of bob's session sent from another address is no sign-in, so its
    sign-out (of every device, or of that login) ends nothing of bob's: the copy only clears
    its own browser (it ended bob's sign-ins, his token being in the session it carried)."""
    app = build_app(slapd, SESSION_PROTECTION="strong")
    bob = signed_in(app, "bob", address="10.0.0.1")
    thief = app.test_client()
    thief.environ_base["REMOTE_ADDR"] = "10.9.9.9"
    copy_cookies(bob, thief, names=("session",))
    assert not is_signed_in(thief)
    copy_cookies(bob, thief, names=("session",))
    token = csrf_token_in(thief.get("/logout?everywhere=1").get_data(as_text=True))
    copy_cookies(bob, thief, names=("session",))
    answer = thief.post("/logout", data={"csrf_token": token, "everywhere": everywhere})
    assert answer.status_code == 302
    assert "signed_out=everywhere" not in answer.headers["Location"]
    assert is_signed_in(bob)
    # bob's own session, from his own address, still signs him out everywhere.
    token = csrf_token_in(bob.get("/logout?everywhere=1").get_data(as_text=True))
    answer = bob.post("/logout", data={"csrf_token": token, "everywhere": "1"})
    assert "signed_out=everywhere" in answer.headers["Location"]


def test_under_strong_protection_a_moved_owner_asking_to_sign_out_everywhere_is_told(
    slapd, build_app
):
    """bob's laptop loaded "Sign out everywhere" at 10.0.0.1, then its network changed: the
    sign-out cannot tell him from a copy, so it ends nothing else, and the page says so and
    how to end them (it said "You are signed out." while his phone stayed signed in)."""
    app = build_app(slapd, SESSION_PROTECTION="strong")
    phone = signed_in(app, "bob", address="10.0.0.5")
    laptop = signed_in(app, "bob", address="10.0.0.1")
    token = csrf_token_in(laptop.get("/logout?everywhere=1").get_data(as_text=True))
    move(laptop, "10.0.0.2")
    answer = laptop.post("/logout", data={"csrf_token": token, "everywhere": "1"})
    assert answer.headers["Location"].endswith("signed_out=moved")
    page = laptop.get(answer.headers["Location"]).get_data(as_text=True)
    assert "your other sign-ins were not ended" in page
    assert 'sign in again and choose "Sign out everywhere"' in page.replace("&#34;", '"')
    assert "You are signed out.<" not in page
    assert is_signed_in(phone), "as the page says"
    # Signed in again there, he ends them.
    laptop = signed_in(app, "bob", address="10.0.0.2")
    token = csrf_token_in(laptop.get("/logout?everywhere=1").get_data(as_text=True))
    answer = laptop.post("/logout", data={"csrf_token": token, "everywhere": "1"})
    assert answer.headers["Location"].endswith("signed_out=everywhere")
    assert not is_signed_in(phone)


def test_protection_ignores_client_written_forwarded_headers(app):
    """X-Forwarded-For from the client is not the address: changing it keeps the session fresh."""
    erin = signed_in(app, "erin")
    erin.environ_base["HTTP_X_FORWARDED_FOR"] = "192.0.2.44"
    assert erin.get("/admin/status").status_code == 200


@pytest.mark.parametrize(
    ("hops", "peer", "forwarded_for", "seen"),
    [
        # No trusted proxy: the address is the peer and the scheme the connection's.
        (0, "10.1.1.1", "192.0.2.1", {"address": "10.1.1.1", "secure": False}),
        # One: the entry our proxy appended (the last) and its X-Forwarded-Proto count.
        (1, "127.0.0.1", "192.0.2.1, 203.0.113.8", {"address": "203.0.113.8", "secure": True}),
    ],
    ids=["no-trusted-proxy", "one-trusted-proxy"],
)
def test_forwarded_headers_count_only_for_configured_proxy_hops(
    slapd, hops, peer, forwarded_for, seen
):
    """TRUSTED_PROXY_HOPS decides whether X-Forwarded-For/-Proto are believed, and how many."""
    from flask import request

    app = make_app(slapd, TRUSTED_PROXY_HOPS=hops)
    observed = {}

    @app.get("/test-only/whoami")
    def whoami():
        observed.update(address=request.remote_addr, secure=request.is_secure)
        return "ok"

    headers = {"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "https"}
    app.test_client().get("/test-only/whoami", headers=headers, environ_base={"REMOTE_ADDR": peer})
    assert observed == seen
    app.extensions["portal.directory"].close()


def test_sign_out_everywhere_says_so_when_it_could_not_be_recorded(
    slapd, build_app, own_redis, audit_lines
):
    """Redis refusing writes (memory full): this browser is signed out, the page says other
    sign-ins may still work, and the audit line says why (never a plain "signed out")."""
    import redis

    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)
    browser = signed_in(app, remember=True)
    client = redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    response = AuthActions(browser).logout(everywhere=True)
    client.close()
    assert response.headers["Location"].endswith("signed_out=incomplete")
    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert "could not record it" in page and "You are signed out." not in page
    assert not is_signed_in(browser)
    [line] = audit_lines("logout.everywhere")
    assert line["reason"] == "cache down"


def test_revoking_works_with_a_cache_that_keeps_nothing(slapd, build_app):
    """Marks do not live in the cache: with NullCache this process still ends the sign-ins."""
    app = build_app(slapd, CACHE_TYPE="NullCache")
    browser = signed_in(app, remember=True)
    with app.app_context():
        from portal import accounts

        assert accounts.revoke_all("alice") is True
    assert not is_signed_in(browser)
    assert not is_signed_in(remember_only(app, browser))


def test_strong_protection_keeps_a_session_restored_from_the_remember_cookie(slapd, build_app):
    """ "strong" with "keep me signed in": the restored session stays on the next pages."""
    app = build_app(slapd, SESSION_PROTECTION="strong")
    first = signed_in(app, remember=True)
    browser = remember_only(app, first)  # the browser restarted: only the remember cookie
    assert is_signed_in(browser)
    assert is_signed_in(browser), "signed out on the second page"


def test_sign_out_works_after_a_secret_key_rotation(slapd):
    """Sessions signed with the old key (now a fallback) can still sign out."""
    old, new = "old-secret-key-" + "a" * 32, "new-secret-key-" + "b" * 32
    before = make_app(slapd, SECRET_KEY=old)
    browser = signed_in(before)
    after = make_app(slapd, SECRET_KEY=new, SECRET_KEY_FALLBACKS=[old])
    rotated = after.test_client()
    copy_cookies(browser, rotated, names=("session",))
    assert is_signed_in(rotated)
    assert AuthActions(rotated).logout().status_code == 302
    assert not is_signed_in(rotated)
    for application in (before, after):
        application.extensions["portal.directory"].close()


def test_forms_served_by_one_instance_are_taken_by_another_while_the_key_rotates(slapd):
    """Mid-rotation, one instance signs with the new key and the other still with the old,
    each with the other's key as a fallback: a form one serves and the other receives (as a
    load balancer sends them) answered 400 for every sign-in and sign-out. Now each instance
    takes the other's tokens; a token of a key neither knows, or of another browser's
    session, is still refused."""
    old, new = "old-secret-key-" + "a" * 32, "new-secret-key-" + "b" * 32
    renewed = make_app(slapd, SECRET_KEY=new, SECRET_KEY_FALLBACKS=[old])
    not_yet = make_app(slapd, SECRET_KEY=old, SECRET_KEY_FALLBACKS=[new])
    stranger = make_app(slapd, SECRET_KEY="another-secret-key-" + "c" * 32)

    def post(served_by, sent_to, path, form, served_path="/login"):
        # One browser: the page from one instance, the form to the other, its cookie along.
        viewer, poster = served_by.test_client(), sent_to.test_client()
        page = viewer.get(served_path)
        poster.set_cookie("session", viewer.get_cookie("session").value)
        token = csrf_token_in(page.get_data(as_text=True))
        return poster, poster.post(path, data=dict(form, csrf_token=token))

    alice = {"username": "alice", "password": "alice-secret"}
    for served_by, sent_to in ((renewed, not_yet), (not_yet, renewed)):
        browser, answer = post(served_by, sent_to, "/login", alice)
        assert answer.status_code == 302, answer.status_code
        assert session_username(browser) == "alice"
        # Signing out: the form from the other instance, with this browser's session.
        page = served_by.test_client()
        page.set_cookie("session", browser.get_cookie("session").value)
        token = csrf_token_in(page.get("/logout").get_data(as_text=True))
        assert browser.post("/logout", data={"csrf_token": token}).status_code == 302
        assert not is_signed_in(browser)
    _, forged = post(stranger, renewed, "/login", alice)
    assert forged.status_code == 400, "a token of a key neither instance knows"
    # A token signed with the fallback key but for another browser's session.
    other = not_yet.test_client()
    token = csrf_token_in(other.get("/login").get_data(as_text=True))
    mine = renewed.test_client()
    mine.get("/login")
    assert mine.post("/login", data=dict(alice, csrf_token=token)).status_code == 400
    for application in (renewed, not_yet, stranger):
        application.extensions["portal.directory"].close()


def test_a_cookie_verified_while_the_key_rotates_is_not_kept_under_the_new_key(slapd):
    """One thread takes the serializer of the old key, another rotates the key (the old one
    dropped), then the first verifies a cookie of the old key: that cookie must not be
    remembered as good under the new key, which refuses it."""
    app = make_app(slapd)
    sessions = app.session_interface
    cookie = sessions.get_signing_serializer(app).dumps({"_user_id": "someone"})
    taken, rotated = sessions.get_signing_serializer, "rotated-" + "z" * 40

    def rotate() -> None:
        app.secret_key = rotated
        taken(app)

    def serializer_then_rotation(application):
        serializer = taken(application)  # this thread's serializer, of the old key...
        rotate()  # ...and the other thread's rotation, before this one reads the memo
        return serializer

    sessions.get_signing_serializer = serializer_then_rotation
    sessions.verified(app, cookie)
    del sessions.get_signing_serializer
    rotate()  # (if the verification above took no serializer apart, the rotation is now)
    assert sessions.verified(app, cookie) is None
    app.extensions["portal.directory"].close()


@pytest.mark.parametrize("value", ["a|\u00e9", "bob|x|1|2||\u20ac", "\u00ff"])
def test_a_remember_cookie_that_is_not_ascii_breaks_no_page_and_no_sign_out(app, value):
    """The portal writes only ASCII remember-me cookies, and checking the signature of other
    text raises: such a cookie is no sign-in, and signing out works beside it."""
    visitor = app.test_client()
    visitor.set_cookie(REMEMBER, value)
    assert visitor.get("/login").status_code == 200
    assert visitor.get("/").status_code == 302
    browser = signed_in(app, "alice")
    browser.set_cookie(REMEMBER, value)
    assert is_signed_in(browser)
    assert AuthActions(browser).logout().status_code == 302
    assert not is_signed_in(browser)


def test_signing_in_without_remember_me_drops_the_previous_persons_remember_cookie(app):
    """bob signs in where alice's remember-me cookie was left: when bob's login ends, the
    browser is nobody's, not alice's. While her kept sign-in works, the form there asks for
    her password (bob's name and password are a wrong password of hers: he signs her out
    first); once it has ended elsewhere, he signs in."""
    from portal import accounts

    alice = signed_in(app, "alice", remember=True)
    browser = remember_only(app, alice)
    assert AuthActions(browser).login("bob").status_code == 401
    assert "Alice" in browser.get("/").get_data(as_text=True)
    with app.app_context():
        accounts.revoke_all("alice")  # e.g. "sign out everywhere" from her phone
    assert AuthActions(browser).login("bob").status_code == 302
    assert browser.get_cookie(REMEMBER) is None
    with app.app_context():
        accounts.revoke_all("bob")
    assert not is_signed_in(browser)


def sign_in_over(client, username: str):
    """POST the sign-in form in a browser someone is signed in in, with the token its pages
    carry (a fresh sign-in's GET /login leads home; a remembered one's asks again)."""
    token = csrf_token_in(client.get("/").get_data(as_text=True))
    form = {"csrf_token": token, "username": username, "password": f"{username}-secret"}
    return client.post("/login", data=form)


def test_signing_in_over_someone_ends_their_sign_in_as_signing_out_would(app, audit_lines):
    """alice (kept signed in) leaves a shared computer signed in; bob signs in on it: her
    session and remember-me cookie, copied before, no longer sign anyone in (they kept
    working for 12 hours and 14 days), the audit says why, and bob is signed in."""
    shared = signed_in(app, "alice", remember=True)
    thief = app.test_client()
    copy_cookies(shared, thief)
    kept = remember_only(app, shared)
    assert is_signed_in(thief) and is_signed_in(kept)
    assert sign_in_over(shared, "bob").status_code == 302
    assert not is_signed_in(thief) and not is_signed_in(kept)
    assert is_signed_in(shared)
    assert [line["reason"] for line in audit_lines("logout") if line["user"] == "alice"] == [
        "another person signed in here"
    ]


def test_entering_the_password_again_keeps_one_working_sign_in(app, audit_lines):
    """erin, kept signed in, opens an admin page: it asks for her password again (the form
    comes with her name filled in); the new login works and opens the page, and the one it
    replaced is over, so a copy of the old remember-me cookie is no sign-in; the audit says
    she signed in again, not that someone else did."""
    erin = remember_only(app, signed_in(app, "erin", remember=True))
    old_copy = remember_only(app, erin)
    assert erin.get("/admin/status").status_code == 302
    asked = erin.get("/login?next=/admin/status").get_data(as_text=True)
    assert 'value="erin"' in asked and "Enter your password again" in asked
    form = {"csrf_token": csrf_token_in(asked), "username": "erin", "password": "erin-secret",
            "next": "/admin/status"}  # fmt: skip
    assert erin.post("/login", data=form).status_code == 302
    assert erin.get("/admin/status").status_code == 200
    assert not is_signed_in(old_copy)
    assert [line["reason"] for line in audit_lines("logout")] == ["signed in again in this browser"]


@pytest.mark.parametrize("remember", [False, True], ids=["session", "kept signed in"])
def test_signing_out_in_a_second_tab_says_signed_out_not_bad_request(app, remember):
    """Two tabs, one sign-in: signed out in one, "Sign out" in the other (its form's token
    belongs to the session that ended) leads to the signed-out page, not a 400 "Bad request"
    that left a person on a shared computer wondering whether it worked."""
    browser = signed_in(app, "alice", remember=remember)
    other_tab = csrf_token_in(browser.get("/").get_data(as_text=True))
    assert AuthActions(browser).logout().status_code == 302
    again = browser.post("/logout", data={"csrf_token": other_tab})
    assert again.status_code == 302
    assert again.headers["Location"].endswith("/login?signed_out=1")
    assert "You are signed out." in browser.get(again.headers["Location"]).get_data(as_text=True)
    assert not is_signed_in(browser)


def test_another_sites_sign_out_form_does_not_say_signed_out(app):
    """Another site's POST to /logout comes without the portal's (SameSite) cookies: it gets
    the 400 page, not "You are signed out", which a person still kept signed in would read
    beside the request for their password."""
    browser = app.test_client()
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        refused = browser.post("/logout", data={"csrf_token": "theirs"}, headers=headers)
        assert refused.status_code == 400, headers


def test_a_sign_out_form_without_its_token_still_cannot_sign_anyone_out(app):
    """Someone signed in (by session, or by a remember-me cookie alone): a sign-out without the
    right token is still the 400 page, and they stay signed in (another site cannot sign
    them out)."""
    session_only = signed_in(app, "alice")
    kept = remember_only(app, signed_in(app, "bob", remember=True))
    for browser in (session_only, kept):
        refused = browser.post("/logout", data={"csrf_token": "forged"})
        assert refused.status_code == 400
        assert is_signed_in(browser)


def test_keep_me_signed_in_survives_a_secret_key_rotation(slapd):
    """A remember-me cookie signed with the old key (now a fallback) still signs in, and comes
    back signed with the new key; a cookie signed with an unknown key does not."""
    old, new = "old-secret-key-" + "a" * 32, "new-secret-key-" + "b" * 32
    before = make_app(slapd, SECRET_KEY=old)
    browser = signed_in(before, remember=True)
    after = make_app(slapd, SECRET_KEY=new, SECRET_KEY_FALLBACKS=[old])
    reopened = remember_only(after, browser)
    assert is_signed_in(reopened)
    renewed = reopened.get_cookie(REMEMBER).value
    assert renewed != browser.get_cookie(REMEMBER).value, "re-signed with the new key"
    only_new = make_app(slapd, SECRET_KEY=new)
    assert is_signed_in(remember_only(only_new, reopened))
    assert not is_signed_in(remember_only(only_new, browser)), "old key no longer listed"
    for application in (before, after, only_new):
        application.extensions["portal.directory"].close()


BOB = "uid=bob,ou=people,dc=example,dc=org"


def test_a_cookie_of_someone_gone_never_opens_the_next_holder_of_their_username(
    own_slapd, build_app
):
    """bob's entry is deleted and, later, a new hire is given the username bob (the same
    DN, so the groups that listed it too). The departed bob's session and remember-me cookies,
    unused meanwhile and no longer cached, signed in as the new bob, with his groups. A login
    names the entry it was made for (its creation time): the new entry is another one."""
    app = build_app(own_slapd)
    departed = signed_in(app, "bob", remember=True)
    kept = remember_only(app, departed)
    own_slapd.delete(BOB)
    with app.app_context():
        accounts.forget("bob")  # as the cache's lifetime would, before anyone asked again
    own_slapd.add(f"dn: {BOB}\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob Newhire\n"
                  "sn: Newhire\nuserPassword: new-hire-secret\n")  # fmt: skip
    assert not is_signed_in(departed), "the departed bob's session opened the new bob's"
    assert not is_signed_in(kept), "the departed bob's remember-me cookie opened the new bob's"
    newcomer = app.test_client()
    assert AuthActions(newcomer).login("bob", "new-hire-secret").status_code == 302
    assert is_signed_in(newcomer) and is_signed_in(newcomer)


def test_a_copied_cookie_stays_ended_when_its_account_is_enabled_again(own_slapd, build_app):
    """alice, not cached, is disabled: the first request with a copy of her cookie finds her
    gone, and her logins end then (as the watcher ends them for a cached person). Enabled
    again, the copy does not come back; alice signs in afresh."""
    app = build_app(own_slapd, LDAP_DISABLED_FILTER="(description=disabled)")
    alice = signed_in(app, "alice")
    copy = app.test_client()
    copy.environ_base["REMOTE_ADDR"] = "10.0.0.1"
    copy_cookies(alice, copy)
    with app.app_context():
        accounts.forget("alice")
    disable = ("dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\n"
               "{}: description\ndescription: disabled\n")  # fmt: skip
    own_slapd.modify(disable.format("add"))
    assert not is_signed_in(copy)
    own_slapd.modify(disable.format("delete"))
    with app.app_context():
        accounts.forget("alice")  # the "gone" entry's lifetime is over
    assert not is_signed_in(copy), "the copied cookie works again"
    assert not is_signed_in(alice)
    assert is_signed_in(signed_in(app, "alice"))


@pytest.mark.parametrize(("ahead", "accepted"), [(3, True), (30, False)])
def test_a_session_signed_by_an_instance_a_little_ahead_is_taken(
    slapd, build_app, monkeypatch, caplog, ahead, accepted
):
    """Another instance's clock runs 3 s ahead: the sessions it signs are taken here (they were
    refused as signed in the future, and its every fresh sign-in bounced to the sign-in page
    here until this clock caught up); 30 s ahead is too far, and said in a warning naming the
    clocks (nothing was logged: people were only sent back to sign in)."""
    import itsdangerous.timed

    fast, here = build_app(slapd), build_app(slapd)
    real = time.time
    ahead_clock = SimpleNamespace(time=lambda: real() + ahead)
    monkeypatch.setattr(itsdangerous.timed, "time", ahead_clock)  # the whole instance ahead
    monkeypatch.setattr("portal.signin.sessions.time", ahead_clock)
    monkeypatch.setattr("portal.signin.logins._clock", ahead_clock.time)
    monkeypatch.setattr("portal.accounts._clock", ahead_clock.time)
    browser = signed_in(fast, "alice")
    monkeypatch.undo()
    there = here.test_client()
    copy_cookies(browser, there)
    caplog.set_level(logging.WARNING, logger="portal.signin.sessions")
    assert is_signed_in(there) is accepted
    said = [r.getMessage() for r in caplog.records if "ahead of this machine's clock" in
            r.getMessage()]  # fmt: skip
    assert len(said) == (0 if accepted else 1), said
    if not accepted:
        # 30 s ahead when signed, a moment less by the time it is read here.
        ahead_said = re.search(r"a session signed (\d+) s ahead", said[0])
        assert ahead_said and 28 <= int(ahead_said[1]) <= 30 and "NTP" in said[0], said


def test_a_session_no_key_of_this_instance_verifies_is_logged_and_the_rounds_shown(slapd, caplog):
    """A key rotation rolled out wrong (an instance with only the old key, where the session
    was signed with the new one): the person was sent to the sign-in page and nothing was
    logged anywhere. Now a warning names the keys to check, once a minute; the status page
    says how many SECRET_KEY_FALLBACKS an instance has (never which)."""
    import html
    import logging

    old, new = "old-secret-key-" + "a" * 32, "new-secret-key-" + "b" * 32
    rotated = make_app(slapd, SECRET_KEY=new, SECRET_KEY_FALLBACKS=[old],
                       ACCESS_ADMIN_GROUPS=["staff"])  # fmt: skip
    browser = signed_in(rotated)
    behind = make_app(slapd, SECRET_KEY=old)
    stale = behind.test_client()
    copy_cookies(browser, stale, names=("session",))
    caplog.set_level(logging.WARNING, logger="portal.signin.sessions")
    for _ in range(3):
        assert not is_signed_in(stale)
    said = [r.getMessage() for r in caplog.records if "session cookie" in r.getMessage()]
    assert len(said) == 1 and "SECRET_KEY_FALLBACKS" in said[0], said
    status = html.unescape(browser.get("/admin/status").get_data(as_text=True))
    assert 'SECRET_KEY_FALLBACKS = "(1 set)"' in status, status
    assert old not in status and new not in status
    for application in (rotated, behind):
        application.extensions["portal.directory"].close()
