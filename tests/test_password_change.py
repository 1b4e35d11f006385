"""Changing one's password in the portal (/password), against real slapd with the ppolicy
overlay deciding: success, each refusal in plain words, the must-change person, other sign-ins
ended, throttling and CSRF; Active Directory's request against a stand-in connection."""

from __future__ import annotations

import re
import subprocess

import ldap3
import pytest

from portal.directory import passwords
from portal.directory.errors import ServiceBindRefused
from portal.testing import trees
from tests.conftest import PASSWORDS, AuthActions, csrf_token_in, make_app, start_slapd
from tests.test_sessions import is_signed_in
from tests.test_shaped_directories import example_app

POLICY_DN = trees.PPOLICY_DEFAULT_DN


@pytest.fixture
def ppolicy():
    """A fresh ppolicy directory (changes alter it) with a minimum length of 10 and a history
    of 3, and the portal in front of it."""
    server = start_slapd(**trees.ppolicy_options())
    server.modify(f"dn: {POLICY_DN}\nchangetype: modify\nreplace: pwdMinLength\npwdMinLength: 10\n"
                  "-\nreplace: pwdInHistory\npwdInHistory: 3\n-\nreplace: pwdCheckQuality\n"
                  "pwdCheckQuality: 1\n")  # fmt: skip
    app = example_app("ppolicy", server, PASSWORD_CHANGE_URL="", USER_CACHE_TTL=60,
                      THROTTLE_ACCOUNT_LIMIT="5 per minute", THROTTLE_IP_LIMIT="100 per minute",
                      LDAP_PASSWORD_POLICY_DN=POLICY_DN)  # fmt: skip
    yield app, server
    app.extensions["portal.directory"].close()
    server.cleanup()


def change(client, current: str, new: str, confirm: str | None = None, username: str | None = None,
           headers: dict | None = None):  # fmt: skip
    form = client.get("/password").get_data(as_text=True)
    data = {"csrf_token": csrf_token_in(form), "current": current, "new": new,
            "confirm": new if confirm is None else confirm}  # fmt: skip
    if username is not None:
        data["username"] = username
    return client.post("/password", data=data, headers=headers)


def signed_in_client(app, username: str, password: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.0.0.1"
    assert AuthActions(client).login(username, password).status_code == 302
    return client


def test_a_change_takes_the_new_password_and_ends_other_sign_ins(ppolicy, audit_lines):
    """alice changes her password: the old one stops working, the new one works, her other
    sign-in (another device) ends, this browser stays signed in, the audit line has no password."""
    app, _ = ppolicy
    alice = signed_in_client(app, "alice", "alice-secret")
    other_device = signed_in_client(app, "alice", "alice-secret")
    answer = change(alice, "alice-secret", "a-much-longer-secret")
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    home = alice.get("/").get_data(as_text=True)
    assert "Your password has been changed. Any other sign-ins of yours have ended." in home
    assert not is_signed_in(other_device)
    assert AuthActions(app.test_client()).login("alice", "alice-secret").status_code == 401
    assert AuthActions(app.test_client()).login("alice", "a-much-longer-secret").status_code == 302
    [line] = audit_lines("password.changed")
    assert line["user"] == "alice"
    assert "a-much-longer-secret" not in str(audit_lines()) and "alice-secret" not in str(
        audit_lines()
    )


def test_a_sign_in_ended_by_a_password_changed_elsewhere_is_logged_once(ppolicy, caplog):
    """alice changes her password elsewhere (another tool's password modify, as herself): her
    sign-in here ends at the next read of her entry, and the log says why, once (it said
    nothing; only a metric counted)."""
    import logging

    from portal import accounts

    app, server = ppolicy
    alice = signed_in_client(app, "alice", "alice-secret")
    dn = "uid=alice,ou=people,dc=example,dc=org"
    with ldap3.Connection(server.url, dn, "alice-secret", auto_bind=True) as herself:
        assert herself.extend.standard.modify_password(dn, "alice-secret", "changed-elsewhere")
    with app.app_context():
        accounts.forget("alice")  # as the watcher, or the cache's lifetime, would
    caplog.set_level(logging.INFO, logger="portal.accounts")
    for _ in range(3):
        assert not is_signed_in(alice)
    said = [r.getMessage() for r in caplog.records if "no longer signed in" in r.getMessage()]
    assert said == ["alice is no longer signed in: the directory says the password (or the "
                    "entry) changed since that sign-in"], said  # fmt: skip


@pytest.mark.parametrize(
    "first, then, message",
    [(None, "short", "too short for the company's password policy"),
     ("second-long-secret", "alice-secret", "You have used this password before")],
    ids=["too short", "in history"],
)  # fmt: skip
def test_each_policy_refusal_is_said_in_plain_words(ppolicy, audit_lines, first, then, message):
    app, _ = ppolicy
    alice = signed_in_client(app, "alice", "alice-secret")
    current = "alice-secret"
    if first:
        assert change(alice, current, first).status_code == 302
        current = first
    answer = change(alice, current, then)
    assert answer.status_code == 400
    body = answer.get_data(as_text=True)
    assert message in body and "Password fails" not in body and "constraint" not in body
    assert 'id="new"' in body and 'aria-invalid="true"' in body.split('id="new"')[1].split(">")[0]


RULES = {
    "en": "At least 10 characters, and not one of your last 3 passwords.",
    "de": "Mindestens 10 Zeichen und keines Ihrer letzten 3 Passwörter.",
}


def test_the_password_rules_are_shown_where_the_new_password_is_typed(ppolicy):
    """PASSWORD_RULES on /password, in the page's language, read at the new password's field
    by a screen reader, and still there after the directory refused a new password."""
    _, server = ppolicy
    app = example_app("ppolicy", server, PASSWORD_CHANGE_URL="", PASSWORD_RULES=RULES,
                      LDAP_PASSWORD_POLICY_DN=POLICY_DN)  # fmt: skip
    alice = signed_in_client(app, "alice", "alice-secret")

    def rules_and_new_field(page: str) -> tuple[str, str]:
        [rules] = re.findall(r'<p class="hint" id="password-rules">([^<]*)</p>', page)
        [field] = re.findall(r'<input id="new"[^>]*>', page)
        return rules, field

    rules, field = rules_and_new_field(alice.get("/password").get_data(as_text=True))
    assert rules == RULES["en"] and 'aria-describedby="password-rules"' in field, field
    german = alice.get("/password", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert rules_and_new_field(german)[0] == RULES["de"]
    refused = change(alice, "alice-secret", "short")
    assert refused.status_code == 400
    rules, field = rules_and_new_field(refused.get_data(as_text=True))
    assert rules == RULES["en"] and 'aria-invalid="true"' in field
    assert 'aria-describedby="password-error password-rules"' in field, field
    # Without the setting, the page says only that the directory's policy decides.
    unset = example_app("ppolicy", server, PASSWORD_CHANGE_URL="", PASSWORD_RULES="",
                        LDAP_PASSWORD_POLICY_DN=POLICY_DN)  # fmt: skip
    plain, _ = rules_and_new_field(unset.test_client().get("/password").get_data(as_text=True))
    assert plain == "The company directory checks the new password against its policy."
    for built in (app, unset):
        built.extensions["portal.directory"].close()


@pytest.mark.parametrize(
    "new",
    ["\ufb01ne-Password-1", "Pass\u00a0word-2026", "\uff30assword-2026", "Pass\u00adword-2026"],
    ids=["ligature", "non-breaking space", "full-width letter", "soft hyphen"],
)
def test_a_new_password_a_sign_in_would_alter_is_refused(ppolicy, new):
    """Every bind sends the password prepared ("\ufb01" as "fi", a non-breaking space as a
    space), while a directory may keep what was typed: such a password could be set and then
    never match. It is refused, in words, and nothing changes."""
    app, _ = ppolicy
    alice = signed_in_client(app, "alice", "alice-secret")
    answer = change(alice, "alice-secret", new)
    assert answer.status_code == 400
    assert "signing in would change" in answer.get_data(as_text=True)
    assert AuthActions(app.test_client()).login("alice", "alice-secret").status_code == 302
    with pytest.raises(passwords.PasswordRefused) as refused:
        app.extensions["portal.directory"].change_password("alice", "alice-secret", new)
    assert refused.value.reason == passwords.ALTERED


def test_a_change_too_soon_after_the_last_is_refused(ppolicy):
    app, server = ppolicy
    server.modify(f"dn: {POLICY_DN}\nchangetype: modify\nreplace: pwdMinAge\npwdMinAge: 3600\n")
    alice = signed_in_client(app, "alice", "alice-secret")
    assert change(alice, "alice-secret", "second-long-secret").status_code == 302
    answer = change(alice, "second-long-secret", "third-long-secret")
    assert answer.status_code == 400
    assert "changed too recently" in answer.get_data(as_text=True)


def test_a_wrong_current_password_counts_as_a_failed_login(ppolicy, audit_lines):
    """401 with the field marked; the throttle counts it: after the account's limit, 429."""
    app, _ = ppolicy
    alice = signed_in_client(app, "alice", "alice-secret")
    answers = [change(alice, f"wrong-{n}", "a-much-longer-secret") for n in range(6)]
    assert answers[0].status_code == 401 and answers[-1].status_code == 429
    assert audit_lines("password.change_failed")[0]["reason"] == passwords.WRONG_CURRENT
    # The page says how long to wait, as the sign-in page does (it said "a few minutes"), and
    # that sign-ins count too: the wait is the one Retry-After gives, in minutes.
    wait = int(answers[-1].headers["Retry-After"])
    minutes = max(1, -(-wait // 60))
    said = answers[-1].get_data(as_text=True)
    assert "Too many wrong passwords for this account (sign-ins count too)." in said
    assert f"Please wait {minutes} minute{'s' if minutes > 1 else ''} and try again." in said
    # The cursor's field (the current password) is described by the message, not marked wrong.
    [current] = re.findall(r'<input id="current"[^>]*>', said)
    assert "autofocus" in current and 'aria-describedby="password-error"' in current, current
    assert "aria-invalid" not in current, current


def test_mismatch_and_csrf(ppolicy):
    """Two different new passwords: refused, the second field marked, and the cursor in the
    current password, the first of the three emptied fields (it was in the last, and the
    person had to go back up to type them all again); a forged form is refused."""
    app, _ = ppolicy
    alice = signed_in_client(app, "alice", "alice-secret")
    answer = change(alice, "alice-secret", "a-much-longer-secret", confirm="something-else")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 400 and "not the same" in page
    fields = dict(re.findall(r'<input id="(current|new|confirm)"([^>]*)>', page))
    assert [name for name, attributes in fields.items() if "autofocus" in attributes] == ["current"]
    assert 'aria-invalid="true"' in fields["confirm"] and "aria-invalid" not in fields["new"]
    forged = alice.post("/password", data={"current": "alice-secret", "new": "x" * 12,
                                           "confirm": "x" * 12})  # fmt: skip
    assert forged.status_code == 400
    assert AuthActions(app.test_client()).login("alice", "alice-secret").status_code == 302


def test_a_person_who_must_change_changes_and_is_signed_in(ppolicy):
    """reset (pwdReset in the directory) signs in: the page offers the change, with her name
    filled in; she changes it and lands signed in on her home page."""
    app, _ = ppolicy
    client = app.test_client()
    refused = AuthActions(client).login("reset", "reset-secret")
    assert refused.status_code == 403
    assert 'href="/password"' in refused.get_data(as_text=True)
    form = client.get("/password").get_data(as_text=True)
    assert 'value="reset"' in form
    answer = change(client, "reset-secret", "reset-new-long-secret", username="reset")
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    assert client.get("/").status_code == 200


def test_an_expired_password_is_changed_on_its_last_grace_login(ppolicy):
    """grace's password expired with 2 grace logins: the sign-in uses one and says one is
    left; the change, which binds with the old password, uses that last one and succeeds."""
    app, _ = ppolicy
    client = app.test_client()
    refused = AuthActions(client).login("grace", "grace-secret")
    assert refused.status_code == 403
    assert "You have 1 grace sign-in left with it" in refused.get_data(as_text=True)
    answer = change(client, "grace-secret", "grace-new-long-secret", username="grace")
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    assert client.get("/").status_code == 200


def test_a_refused_new_password_says_how_many_grace_logins_are_left(ppolicy):
    """grace's expired password has 2 grace logins. A too-short new password uses one (the
    change binds with the old password): the page says one is left (here in German), and a
    new password the policy accepts then succeeds on it. (It said the policy refusal alone,
    and a person who had signed in first tried again and failed as "expired".)"""
    app, _ = ppolicy
    client = app.test_client()
    german = change(client, "grace-secret", "short", username="grace",
                    headers={"Accept-Language": "de"})  # fmt: skip
    page = german.get_data(as_text=True)
    assert german.status_code == 400 and "zu kurz" in page
    assert "Sie haben damit noch 1 Anmeldung nach Ablauf" in page
    answer = change(client, "grace-secret", "grace-new-long-secret", username="grace")
    assert answer.status_code == 302 and answer.headers["Location"] == "/"


def test_a_refused_new_password_on_the_last_grace_login_sends_to_the_service_desk(ppolicy):
    """grace signs in (one grace login left), then types a too-short new password: that bind
    used the last, so the page says so and names the service desk."""
    app, _ = ppolicy
    client = app.test_client()
    assert AuthActions(client).login("grace", "grace-secret").status_code == 403
    short = change(client, "grace-secret", "short", username="grace")
    page = short.get_data(as_text=True)
    assert short.status_code == 400 and "too short" in page
    assert "that was its last grace sign-in" in page and "service desk" in page
    assert "left with it" not in page


def test_self_service_can_be_turned_off(slapd):
    app = make_app(slapd, PASSWORD_SELF_SERVICE=False)
    assert app.test_client().get("/password").status_code == 404
    app.extensions["portal.directory"].close()


def test_a_plain_openldap_without_ppolicy_changes_too(own_slapd):
    """The demo directory (no password policy, so no pwdChangedTime to tell the sessions):
    RFC 3062 all the same, and the other device's sign-in still ends (revoked)."""
    app = make_app(own_slapd)
    alice = signed_in_client(app, "alice", "alice-secret")
    other_device = signed_in_client(app, "alice", "alice-secret")
    assert change(alice, "alice-secret", "brand-new-secret").status_code == 302
    assert not is_signed_in(other_device)
    assert is_signed_in(alice)
    assert AuthActions(app.test_client()).login("alice", "brand-new-secret").status_code == 302
    app.extensions["portal.directory"].close()


def test_the_change_active_directory_requires():
    """A user's own change: delete the old quoted UTF-16LE value and add the new one."""
    change = passwords.unicode_pwd_change("old-Secret1", "new-Secret2")
    assert change == {"unicodePwd": [
        (ldap3.MODIFY_DELETE, ['"old-Secret1"'.encode("utf-16-le")]),
        (ldap3.MODIFY_ADD, ['"new-Secret2"'.encode("utf-16-le")]),
    ]}  # fmt: skip


@pytest.mark.parametrize(
    "result, reason",
    [({"result": 19, "message": "0000052D: Constraint violation - check_password_restrictions: "
       "the password does not meet the complexity criteria"}, passwords.POLICY),
     ({"result": 19, "message": "00000056: AtrErr: DSID-03191083, #1"}, passwords.WRONG_CURRENT),
     ({"result": 0}, None)],
)  # fmt: skip
def test_active_directory_refusals_are_read_as_reasons(result, reason):
    assert passwords.refusal_of(result, active_directory=True) == reason


def test_a_quality_refusal_of_ppolicy_is_read_as_not_complex():
    """OpenLDAP needs a quality-check module for this one (none ships with Debian's slapd): the
    control it would answer with is decoded here."""
    control = {"1.3.6.1.4.1.42.2.27.8.5.1": {"value": b"0\x03\x81\x01\x05"}}
    result = {
        "result": 19,
        "message": "Password fails quality checking policy",
        "controls": control,
    }
    assert passwords.refusal_of(result, active_directory=False) == passwords.NOT_COMPLEX


def test_active_directory_refuses_to_change_over_clear_text(slapd):
    """AD only takes unicodePwd over TLS; the portal does not even send it in clear."""
    from portal.directory.settings import DirectorySettings

    app = make_app(slapd)
    settings = DirectorySettings.from_config(app.config | {"LDAP_ACCOUNT_STATE": "ad"})
    with pytest.raises(passwords.PasswordRefused) as refused:
        passwords.change([], settings, "cn=x", "old", "new")
    assert refused.value.reason == passwords.NOT_ALLOWED
    app.extensions["portal.directory"].close()


def test_settings_warn_that_active_directory_over_clear_text_refuses_every_change(ad_server):
    """The AD example over plain ldap:// (a trial on this machine): start-up and `portal check`
    warn that /password will refuse every change (people typed three passwords to learn it,
    and the audit said only "changes not allowed"); with it turned off, no warning."""
    from portal.settings import validate

    app = example_app("ad", ad_server)
    said = [line for line in validate(app.config) if line.startswith("PASSWORD_SELF_SERVICE:")]
    assert said and "refuses every change" in said[0], said
    check = app.test_cli_runner().invoke(args=["check"]).output
    assert "PASSWORD_SELF_SERVICE: Active Directory changes passwords only over LDAPS" in check
    quiet = example_app("ad", ad_server, PASSWORD_SELF_SERVICE=False)
    assert not [line for line in validate(quiet.config) if "PASSWORD_SELF_SERVICE" in line]
    for built in (app, quiet):
        built.extensions["portal.directory"].close()


@pytest.fixture
def own_ad_server():
    """An AD-shaped directory of the test's own (it changes entries)."""
    server = start_slapd(**trees.ad_options())
    yield server
    server.cleanup()


# --- The expiry warning -------------------------------------------------------------------------

DAY = 86400


def warning_on_home(app, username: str, password: str) -> str:
    client = signed_in_client(app, username, password)
    body = client.get("/").get_data(as_text=True)
    found = re.search(r'<p class="notice warning".*?</p>', body, re.S)
    return found.group(0) if found else ""


def test_ppolicy_warns_at_n_days_and_not_at_n_plus_one(ppolicy, local_midday):
    """alice changes her password (the directory stamps pwdChangedTime), then the policy's
    pwdMaxAge is set through the directory so that it expires in 14 days and some hours: the
    home page warns (PASSWORD_WARN_DAYS 14); at 15 days and some hours it does not."""
    app, server = ppolicy
    alice = signed_in_client(app, "alice", "alice-secret")
    assert change(alice, "alice-secret", "a-much-longer-secret").status_code == 302
    for days, warned in ((14, True), (15, False)):
        server.modify(f"dn: {POLICY_DN}\nchangetype: modify\nreplace: pwdMaxAge\n"
                      f"pwdMaxAge: {days * DAY + 3 * 3600}\n")  # fmt: skip
        line = warning_on_home(app, "alice", "a-much-longer-secret")
        assert ("Your password expires in 14 days." in line) is warned, (days, line)
        if warned:
            assert 'href="/password"' in line


def test_active_directory_warns_from_the_computed_expiry(own_ad_server, local_midday):
    """AD computes msDS-UserPasswordExpiryTimeComputed (stored here, set through the
    directory): 3 days ahead warns, 30 days ahead does not, "never" does not."""
    import time

    app = example_app("ad", own_ad_server, PASSWORD_CHANGE_URL="https://pw.example/")
    for seconds, warned in ((3 * DAY + 3600, True), (30 * DAY, False), (None, False)):
        value = ("9223372036854775807" if seconds is None
                 else str(int((time.time() + seconds + 11644473600) * 10**7)))  # fmt: skip
        own_ad_server.modify(f"dn: {trees.AD_USERS['alice']}\nchangetype: modify\n"
                             f"replace: msDS-UserPasswordExpiryTimeComputed\n"
                             f"msDS-UserPasswordExpiryTimeComputed: {value}\n")  # fmt: skip
        line = warning_on_home(app, "alice", "alice-secret")
        assert ("Your password expires in 3 days." in line) is warned, (seconds, line)
    app.extensions["portal.directory"].close()


class StandIn:
    """A connection to Active Directory as the portal would get it (none runs here)."""

    def __init__(self, result, sent):
        self.result, self.sent = result, sent
        self.password = self.request = None

    def modify(self, dn, changes):
        self.sent.append((dn, changes))

    def unbind(self):
        pass


def ad_settings(app):
    from portal.directory.settings import DirectorySettings

    return DirectorySettings.from_config(
        app.config | {"LDAP_ACCOUNT_STATE": "ad", "LDAP_START_TLS": True}
    )


def test_the_request_sent_to_active_directory(slapd, monkeypatch):
    """AD cannot run here: a stand-in connection records what the portal sends. A writable
    connection bound as the person with the current password, one modify of unicodePwd
    (delete old, add new), and AD's policy refusal (0000052D) read as a reason."""
    sent = []

    def connect(servers, settings, user, password, writable=False, controls=None):
        sent.append(("bind", user, password, writable))
        return StandIn({"result": 19, "message": "0000052D: Constraint violation"}, sent), True

    monkeypatch.setattr(passwords, "open_connection", connect)
    app = make_app(slapd)
    dn = trees.AD_USERS["alice"]
    with pytest.raises(passwords.PasswordRefused) as refused:
        passwords.change([], ad_settings(app), dn, "Old-Secret1", "New-Secret2")
    assert refused.value.reason == passwords.POLICY
    assert sent == [("bind", dn, "Old-Secret1", True),
                    (dn, passwords.unicode_pwd_change("Old-Secret1", "New-Secret2"))]  # fmt: skip
    app.extensions["portal.directory"].close()


def test_an_ad_password_that_must_be_changed_is_changed_over_the_service_account(
    slapd, monkeypatch
):
    """AD refuses the bind of a password that must be changed (data 773): the same
    delete-old/add-new modify goes over the service account (the old value proves it)."""
    sent = []

    def connect(servers, settings, user, password, writable=False, controls=None):
        sent.append(("bind", user, writable))
        if user == settings.bind_dn:
            return StandIn({"result": 0}, sent), True
        refused = {"result": 49, "message": "80090308: LdapErr: DSID-0C09044E, comment: "
                   "AcceptSecurityContext error, data 773, v4563"}  # fmt: skip
        return StandIn(refused, sent), False

    monkeypatch.setattr(passwords, "open_connection", connect)
    app = make_app(slapd)
    settings, dn = ad_settings(app), trees.AD_USERS["carol"]
    passwords.change([], settings, dn, "Old-Secret1", "New-Secret2")
    assert sent == [("bind", dn, True), ("bind", settings.bind_dn, True),
                    (dn, passwords.unicode_pwd_change("Old-Secret1", "New-Secret2"))]  # fmt: skip
    app.extensions["portal.directory"].close()


def test_a_wrong_current_password_waits_out_the_floor(ppolicy, monkeypatch):
    """As at the login, a refused password answers no sooner than LOGIN_FAILURE_FLOOR_MS (an
    unknown name, with no bind, would otherwise answer sooner than a known one)."""
    app, _ = ppolicy
    app.config["LOGIN_FAILURE_FLOOR_MS"] = 250
    waits = []
    monkeypatch.setattr("portal.auth.views._sleep", waits.append)
    client = app.test_client()
    assert change(client, "wrong", "a-much-longer-secret", username="nobody").status_code == 401
    assert len(waits) == 1 and 0 < waits[0] <= 0.25


def test_a_new_password_that_cannot_be_sent_is_not_a_wrong_current_one(ppolicy, audit_lines):
    app, _ = ppolicy
    alice = signed_in_client(app, "alice", "alice-secret")
    answer = change(alice, "alice-secret", "x" * 5000)
    assert answer.status_code == 400
    assert "password policy" in answer.get_data(as_text=True)
    assert AuthActions(app.test_client()).login("alice", "alice-secret").status_code == 302


def test_days_left_are_counted_on_the_calendar(ppolicy, local_midday):
    """Twenty hours left at noon is tomorrow morning, not "today"; a password just changed
    under a 90-day policy expires in 90 days, not 89 (whole 24-hour periods said both)."""
    app, server = ppolicy
    app.config["PASSWORD_WARN_DAYS"] = 90
    alice = signed_in_client(app, "alice", "alice-secret")
    assert change(alice, "alice-secret", "a-much-longer-secret").status_code == 302
    for max_age, said in ((20 * 3600, "Your password expires tomorrow."),
                          (90 * DAY, "Your password expires in 90 days.")):  # fmt: skip
        server.modify(f"dn: {POLICY_DN}\nchangetype: modify\nreplace: pwdMaxAge\n"
                      f"pwdMaxAge: {max_age}\n")  # fmt: skip
        line = warning_on_home(app, "alice", "a-much-longer-secret")
        assert said in line, (max_age, line)


def test_a_sign_in_on_the_way_to_an_app_says_the_password_expires_soon(ppolicy, local_midday):
    """Signing in with a next address: the warning is kept for the next portal page."""
    app, server = ppolicy
    alice = signed_in_client(app, "alice", "alice-secret")
    assert change(alice, "alice-secret", "a-much-longer-secret").status_code == 302
    server.modify(f"dn: {POLICY_DN}\nchangetype: modify\nreplace: pwdMaxAge\n"
                  f"pwdMaxAge: {2 * DAY + 3600}\n")  # fmt: skip
    client = app.test_client()
    answer = AuthActions(client).login("alice", "a-much-longer-secret", next="/pages/handbook")
    assert answer.headers["Location"] == "/pages/handbook"
    page = client.get("/pages/handbook").get_data(as_text=True)
    assert "Your password expires in 2 days." in page


def test_a_password_expiring_today_is_said_once_and_as_today(ppolicy, local_midday):
    """Expiring this evening (six hours after about noon): "today", once. Signing in on the
    way to the home page (what `/` sends a visitor to) gave the home page's own notice and a
    flashed "in 0 days" beside it; on the way to another page the flashed notice says "today"
    too."""
    app, server = ppolicy
    alice = signed_in_client(app, "alice", "alice-secret")
    assert change(alice, "alice-secret", "a-much-longer-secret").status_code == 302
    server.modify(f"dn: {POLICY_DN}\nchangetype: modify\nreplace: pwdMaxAge\n"
                  "pwdMaxAge: 21600\n")  # fmt: skip
    home_bound = app.test_client()
    assert (
        AuthActions(home_bound).login("alice", "a-much-longer-secret", next="/").status_code == 302
    )
    home = home_bound.get("/").get_data(as_text=True)
    assert home.count("Your password expires today.") == 1 and "0 days" not in home, home
    page_bound = app.test_client()
    AuthActions(page_bound).login("alice", "a-much-longer-secret", next="/pages/handbook")
    page = page_bound.get("/pages/handbook").get_data(as_text=True)
    assert "Your password expires today." in page and "0 days" not in page
    # On the way to an app's own front page (its path is "/" too): said on the next portal page.
    to_app = example_app("ppolicy", server, PASSWORD_CHANGE_URL="", SSO_ALLOWED_DOMAINS=[
        "example.org"], LDAP_PASSWORD_POLICY_DN=POLICY_DN)  # fmt: skip
    app_bound = to_app.test_client()
    went = AuthActions(app_bound).login("alice", "a-much-longer-secret",
                                        next="https://wiki.example.org/")  # fmt: skip
    assert went.headers["Location"] == "https://wiki.example.org/"
    assert "Your password expires today." in app_bound.get("/pages/handbook").get_data(as_text=True)
    to_app.extensions["portal.directory"].close()


@pytest.mark.parametrize("name", ["dave", "carol"])
def test_people_the_portal_refuses_cannot_change_their_password_through_it(own_slapd, name):
    """dave (suspended) and carol (in no allowed group) name themselves on the change form with
    their right current password: 403, said plainly, and the password is unchanged. With a
    wrong current password they get the wrong-password answer anyone gets: nobody learns who
    is refused without knowing the password."""
    app = make_app(own_slapd)
    try:
        client = app.test_client()
        refused = change(client, PASSWORDS[name], "a-brand-new-secret", username=name)
        wrong = change(app.test_client(), "not-it", "a-brand-new-secret", username=name)
        alice = change(app.test_client(), "alice-secret", "a-brand-new-secret", username="alice")
    finally:
        app.extensions["portal.directory"].close()
    assert refused.status_code == 403
    assert "may not use the portal, so its password cannot be changed here" in (
        refused.get_data(as_text=True)
    )
    assert wrong.status_code == 401
    assert alice.status_code == 302
    person = ldap3.Connection(own_slapd.url, f"uid={name},ou=people,dc=example,dc=org",
                              PASSWORDS[name])  # fmt: skip
    assert person.bind(), "the refused change must not have changed the password"
    person.unbind()


def test_with_a_upn_template_the_standing_is_read_by_name(own_slapd, monkeypatch):
    """LDAP_USER_DN_TEMPLATE may be a UPN, which no base search can read: the standing check
    finds the person by name. (This OpenLDAP takes no UPN bind: the change itself is stood in
    for, calling the check where the real one does, after its bind.)"""
    app = make_app(own_slapd, LDAP_USER_DN_TEMPLATE="{username}@example.org")
    found = app.extensions["portal.directory"]

    def bound_then_checked(servers, settings, dn, current, new, before_change=None):
        assert dn.endswith("@example.org")
        before_change()

    monkeypatch.setattr(passwords, "change", bound_then_checked)
    staff_only = lambda groups: "suspended" not in groups  # noqa: E731
    try:
        assert found.change_password("alice", "x" * 8, "y" * 12, staff_only) == "alice"
        with pytest.raises(passwords.PasswordRefused) as refused:
            found.change_password("dave", "x" * 8, "y" * 12, staff_only)
    finally:
        found.close()
    assert refused.value.reason == passwords.REFUSED_BY_PORTAL


def test_a_change_while_the_directory_is_down_says_the_password_cannot_be_changed(own_slapd):
    """alice, signed in, changes her password while the directory is down: a 503 saying that
    passwords cannot be changed right now (it said nobody can sign in, though she had not
    tried to), and her password stays the one she had."""
    app = make_app(own_slapd)
    alice = signed_in_client(app, "alice", "alice-secret")
    form = alice.get("/password").get_data(as_text=True)
    own_slapd.stop()
    answer = alice.post("/password", data={"csrf_token": csrf_token_in(form),
                                           "current": "alice-secret", "new": "brand-new-secret",
                                           "confirm": "brand-new-secret"})  # fmt: skip
    page = answer.get_data(as_text=True)
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert "passwords cannot be changed right now" in page and "sign in" not in page.lower()
    own_slapd.start()
    app.extensions["portal.directory"].close()
    later = make_app(own_slapd)  # its breakers have not seen the outage
    assert AuthActions(later.test_client()).login("alice", "alice-secret").status_code == 302
    later.extensions["portal.directory"].close()


def test_a_refused_service_account_on_an_ad_change_names_the_settings_to_fix(
    slapd, monkeypatch, caplog
):
    """The AD change of a password that must be changed goes over the service account: when
    the directory refuses that account's credentials (49), the person sees an outage and the
    log names LDAP_BIND_DN and LDAP_BIND_PASSWORD, as for the pool's own binds."""
    sent = []

    def connect(servers, settings, user, password, writable=False, controls=None):
        sent.append(user)
        if user == settings.bind_dn:
            return StandIn({"result": 49, "description": "invalidCredentials"}, sent), False
        refused = {"result": 49, "message": "80090308: LdapErr: DSID-0C09044E, comment: "
                   "AcceptSecurityContext error, data 773, v4563"}  # fmt: skip
        return StandIn(refused, sent), False

    monkeypatch.setattr(passwords, "open_connection", connect)
    app = make_app(slapd)
    settings, dn = ad_settings(app), trees.AD_USERS["carol"]
    with pytest.raises(ServiceBindRefused) as refused:
        passwords.change([], settings, dn, "Old-Secret1", "New-Secret2")
    app.extensions["portal.directory"].close()
    assert sent == [dn, settings.bind_dn], "no modify may follow a refused bind"
    assert "LDAP_BIND_DN and LDAP_BIND_PASSWORD" in str(refused.value)
    assert any("LDAP_BIND_PASSWORD" in record.getMessage() for record in caplog.records)


def test_a_password_change_writes_no_second_sign_out(ppolicy, audit_lines):
    """A change ends every login of the person first; the sign-in that follows finds the old
    one ended and says nothing more of it (it wrote a "logout" line for a login already
    over)."""
    app, _ = ppolicy
    alice = signed_in_client(app, "alice", "alice-secret")
    assert change(alice, "alice-secret", "a-much-longer-secret").status_code == 302
    assert alice.get("/").status_code == 200
    assert audit_lines("logout") == []


def test_admin_tools_say_a_must_change_account_is_told_so_at_sign_in(ppolicy):
    """`reset` must change a reset password: whois says so in words ("the account is must
    change password" before), and the admin page no longer claims sign-ins tell nobody (with
    the right password the sign-in page says so)."""
    _, server = ppolicy
    app = example_app("ppolicy", server, PASSWORD_CHANGE_URL="", ACCESS_ADMIN_GROUPS=["staff"],
                      LDAP_PASSWORD_POLICY_DN=POLICY_DN)  # fmt: skip
    whois = app.test_cli_runner().invoke(args=["whois", "reset"]).output
    assert "reset: in the directory, but cannot sign in: its password must be changed first" in (
        whois
    ), whois
    admin = signed_in_client(app, "alice", "alice-secret")
    page = admin.get("/admin/users/reset").get_data(as_text=True)
    assert "the sign-in page tells them to change it first" in page, page
    assert "Sign-ins tell nobody this" not in page
    said = AuthActions(app.test_client()).login("reset", "reset-secret")
    assert "Your password has expired or was reset" in said.get_data(as_text=True)
    app.extensions["portal.directory"].close()


def test_the_home_page_after_a_sign_in_bound_for_an_app_says_the_expiry_once(ppolicy, local_midday):
    """Signed in on the way to an app, the warning is kept for the next portal page; when
    that is the home page, it said so twice (its own notice and the kept one)."""
    app, server = ppolicy
    alice = signed_in_client(app, "alice", "alice-secret")
    assert change(alice, "alice-secret", "a-much-longer-secret").status_code == 302
    server.modify(f"dn: {POLICY_DN}\nchangetype: modify\nreplace: pwdMaxAge\n"
                  f"pwdMaxAge: {2 * DAY + 3600}\n")  # fmt: skip
    to_app = example_app("ppolicy", server, PASSWORD_CHANGE_URL="", SSO_ALLOWED_DOMAINS=[
        "example.org"], LDAP_PASSWORD_POLICY_DN=POLICY_DN)  # fmt: skip
    try:
        browser = to_app.test_client()
        went = AuthActions(browser).login("alice", "a-much-longer-secret",
                                          next="https://wiki.example.org/")  # fmt: skip
        assert went.headers["Location"] == "https://wiki.example.org/"
        home = browser.get("/").get_data(as_text=True)
        assert home.count("Your password expires in 2 days.") == 1, home
        # The kept one is gone with that visit: the next page says nothing of it.
        assert "expires" not in browser.get("/pages/handbook").get_data(as_text=True)
    finally:
        to_app.extensions["portal.directory"].close()


SERVICE_DN = "cn=portal-reader,ou=services,dc=example,dc=org"


def _set_service_password_changed(server, when: str) -> None:
    # pwdChangedTime is the directory's own: only the relax control lets an administrator set it.
    ldif = (f"dn: {SERVICE_DN}\nchangetype: modify\nreplace: pwdChangedTime\n"
            f"pwdChangedTime: {when}\n")  # fmt: skip
    done = subprocess.run(["ldapmodify", "-x", "-H", server.url, "-D", server.root_dn, "-w",
                           server.root_password, "-e", "relax"], input=ldif, text=True,
                          capture_output=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr


def _service_bind_line(app) -> str:
    output = app.test_cli_runner().invoke(args=["check"]).output
    return next(line for line in output.splitlines() if "service bind" in line)


def test_the_service_accounts_expired_password_is_said_before_it_stops_the_portal(caplog):
    """The portal's own account's password expired (ppolicy, two grace logins): `portal
    check` said "service bind: ok" while each check used one, then "invalidCredentials; check
    LDAP_BIND_DN and LDAP_BIND_PASSWORD" of a password that was right. Now the check fails
    naming the expiry and the grace logins left, the portal logs it at its first bind, and
    the refusal after the last one says the password has expired."""
    server = start_slapd(**trees.ppolicy_options())
    try:
        _set_service_password_changed(server, "20000101000000Z")
        app = example_app("ppolicy", server, LDAP_PASSWORD_POLICY_DN=POLICY_DN)
        first = _service_bind_line(app)
        assert "FAILED" in first and "its password has expired" in first, first
        assert "takes it 1 more time(s)" in first, first
        # A sign-in's service connection takes the last one, and the log says so.
        assert AuthActions(app.test_client()).login("alice", "alice-secret").status_code == 302
        said = [r.getMessage() for r in caplog.records if "the service account" in r.getMessage()]
        assert any("takes it 0 more time(s)" in line for line in said), said
        last = _service_bind_line(app)
        assert "FAILED" in last and "its password has expired" in last, last
        assert "set a new password in the directory and in LDAP_BIND_PASSWORD" in last, last
        app.extensions["portal.directory"].close()
    finally:
        server.cleanup()


def test_the_service_accounts_password_expiring_soon_is_a_warning():
    """Within the policy's pwdExpireWarning (7 days) of its expiry: the check's service bind
    is ok, with a warning of the days left (it said nothing until the day it failed)."""
    import time

    server = start_slapd(**trees.ppolicy_options())
    try:
        changed = time.gmtime(time.time() - 87 * DAY - 3600)  # pwdMaxAge is 90 days
        _set_service_password_changed(server, time.strftime("%Y%m%d%H%M%SZ", changed))
        app = example_app("ppolicy", server, LDAP_PASSWORD_POLICY_DN=POLICY_DN)
        line = _service_bind_line(app)
        assert line.endswith("ok (warning: its password expires in 2 days (the directory's "
                             "password policy))"), line  # fmt: skip
        app.extensions["portal.directory"].close()
    finally:
        server.cleanup()


def test_a_password_expiring_past_the_year_9999_is_no_error():
    """LDAP_PASSWORD_MAX_AGE_DAYS of ten million ("practically never"): the expiry falls past
    the year 9999, which dates cannot hold; the home page and every sign-in gave a 500."""
    import time

    from portal.models import User

    user = User.from_attributes({"username": "alice", "dn": "uid=alice", "groups": [],
                                 "password_expires": 865704067200.0}, None)  # fmt: skip
    assert user.password_days_left(time.time()) > 9_000_000
