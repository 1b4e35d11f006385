"""Login throttling and enumeration safety, against a real slapd (and redis-server when shared).

Per account (any address, every spelling of the name, unknown names too) and per client address;
outages never count; the storage being down refuses logins; failed logins all look the same and
take at least the configured floor.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import ldap3
import pytest
import redis

from portal.directory import HUNG_SECONDS
from portal.signin import throttle
from portal.testing import trees
from portal.testing.slapd import free_port
from tests.conftest import (
    PASSWORDS,
    AuthActions,
    csrf_token_in,
    eventually,
    make_app,
    start_slapd,
)
from tests.servers import listener
from tests.test_metrics import scrape
from tests.test_shaped_directories import example_app

ALICE_DN = "uid=alice,ou=people,dc=example,dc=org"


def attempt(app, username="alice", password="wrong", address="10.0.0.1", **headers):
    """One login from a fresh browser at `address` (the TCP peer the portal sees)."""
    client = app.test_client()
    client.environ_base.update({"REMOTE_ADDR": address})
    for name, value in headers.items():
        client.environ_base["HTTP_" + name.upper()] = value
    return AuthActions(client).login(username, password)


@pytest.fixture
def throttled_app(slapd, build_app):
    """The demo portal with small limits: 3 failures per account, 6 per address."""
    return build_app(
        slapd, THROTTLE_ACCOUNT_LIMIT="3 per 15 minutes", THROTTLE_IP_LIMIT="6 per 15 minutes"
    )


def test_account_limit_counts_every_address_and_spelling(throttled_app, ldap_spy):
    """Three failures for alice from three addresses, spelled three ways: the fourth try waits,
    even with the right password, and the directory is not asked."""
    for number, spelling in enumerate(["alice", "ALICE", " Alice "]):
        assert attempt(throttled_app, spelling, address=f"10.0.0.{number}").status_code == 401
    ldap_spy.reset()
    response = attempt(throttled_app, "alice", PASSWORDS["alice"], address="10.0.9.9")
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 15 * 60
    assert "Too many failed sign-ins" in response.get_data(as_text=True)
    assert ldap_spy.operations == 0, "a throttled login must not reach the directory"
    assert attempt(throttled_app, "bob", PASSWORDS["bob"]).status_code == 302, "others unaffected"


def browser_at(app, address: str):
    """A test client (one browser, its cookies kept) at `address`."""
    client = app.test_client()
    client.environ_base.update({"REMOTE_ADDR": address})
    return client


def test_a_stranger_guessing_cannot_lock_a_person_out_of_their_own_browser(throttled_app):
    """alice signed in from her browser once; a stranger then uses up her attempts. A new
    browser waits, as before, but hers still signs her in; and her own wrong passwords there
    are limited as strictly, on their own."""
    hers = browser_at(throttled_app, "10.0.0.5")
    assert AuthActions(hers).login("alice").status_code == 302
    assert AuthActions(hers).logout().status_code == 302
    for _ in range(3):
        assert attempt(throttled_app, "alice", address="10.0.0.66").status_code == 401
    assert attempt(throttled_app, "alice", PASSWORDS["alice"], "10.0.0.7").status_code == 429
    assert AuthActions(hers).login("Alice", PASSWORDS["alice"]).status_code == 302
    AuthActions(hers).logout()
    for _ in range(3):
        assert AuthActions(hers).login("alice", "wrong").status_code == 401
    assert AuthActions(hers).login("alice").status_code == 429


@pytest.mark.parametrize("spelling", ["alice|known", "known-account:alice", "Alice|Known"])
def test_no_typed_name_reaches_the_known_browsers_count(throttled_app, spelling):
    """A stranger uses up alice's attempts, then types a name spelled like the key of her
    known browsers' count: that is a name of its own (it was that very count, so ten
    anonymous requests locked alice out of her own browser too)."""
    hers = browser_at(throttled_app, "10.0.0.5")
    assert AuthActions(hers).login("alice").status_code == 302
    assert AuthActions(hers).logout().status_code == 302
    for _ in range(3):
        assert attempt(throttled_app, "alice", address="10.0.0.66").status_code == 401
    for _ in range(4):
        assert attempt(throttled_app, spelling, address="10.0.0.67").status_code in (401, 429)
    assert AuthActions(hers).login("alice").status_code == 302


def test_a_stranger_guessing_cannot_keep_a_signed_in_person_from_changing_their_password(
    own_slapd, build_app
):
    """alice is signed in; a stranger uses up her attempts at the sign-in form. Her change on
    /password (no known-browser cookie goes there) counts with her own browsers, so it goes
    through (it counted with the strangers: 429); a signed-out change still waits with them."""
    from tests.test_password_change import change

    app = build_app(own_slapd, THROTTLE_ACCOUNT_LIMIT="3 per 15 minutes",
                    THROTTLE_IP_LIMIT="100 per 15 minutes")  # fmt: skip
    hers = browser_at(app, "10.0.0.5")
    assert AuthActions(hers).login("alice").status_code == 302
    for _ in range(3):
        assert attempt(app, "alice", address="10.0.0.66").status_code == 401
    hers.delete_cookie("portal-device", path="/login")  # as a browser keeps it from /password
    assert change(hers, PASSWORDS["alice"], "alice-new-secret").status_code == 302
    stranger = browser_at(app, "10.0.0.67")
    answer = change(stranger, "alice-new-secret", "alice-newer-secret", username="alice")
    assert answer.status_code == 429


def test_a_copy_of_a_session_changing_the_password_counts_with_the_strangers(own_slapd, build_app):
    """Under "basic" a copy of alice's session sent from elsewhere is still signed in (not
    fresh): its guesses of her current password on /password count with the strangers', not
    with her own browsers' (it got those, so three more guesses, and then her own browser
    waited at the sign-in form)."""
    from tests.test_password_change import change
    from tests.test_sessions import copy_cookies

    app = build_app(own_slapd, THROTTLE_ACCOUNT_LIMIT="3 per 15 minutes",
                    THROTTLE_IP_LIMIT="100 per 15 minutes")  # fmt: skip
    hers = browser_at(app, "10.0.0.5")
    assert AuthActions(hers).login("alice").status_code == 302
    copy = browser_at(app, "198.51.100.9")
    copy_cookies(hers, copy, names=("session",))
    for _ in range(3):
        assert attempt(app, "alice", address="10.0.0.66").status_code == 401
    assert change(copy, "guess", "alice-new-secret").status_code == 429
    AuthActions(hers).logout()
    assert AuthActions(hers).login("alice").status_code == 302


def test_collecting_known_browser_cookies_buys_no_more_guesses(throttled_app):
    """Signed in as alice from three browsers (while her password was known), someone holds
    three known-browser cookies: they share one count, so after the strangers' three failures
    only three more wrong passwords reach the directory, however they are spread."""
    browsers = [browser_at(throttled_app, f"10.0.1.{n}") for n in range(3)]
    for browser in browsers:
        assert AuthActions(browser).login("alice").status_code == 302
        AuthActions(browser).logout()
    for _ in range(3):
        assert attempt(throttled_app, "alice", address="10.0.0.66").status_code == 401
    answers = [AuthActions(b).login("alice", "wrong").status_code for b in browsers * 2]
    assert answers == [401, 401, 401, 429, 429, 429]


def test_a_known_browser_counts_apart_only_for_its_own_person_and_key(throttled_app, slapd,
                                                                      build_app):  # fmt: skip
    """bob's browser is no known browser for alice; a cookie altered, or signed with another
    SECRET_KEY, is none either: each of them waits behind alice's used-up attempts."""
    bobs = browser_at(throttled_app, "10.0.0.8")
    assert AuthActions(bobs).login("bob").status_code == 302
    AuthActions(bobs).logout()
    value = bobs.get_cookie("portal-device", path="/login").value
    other = build_app(slapd, SECRET_KEY="another-" + "k3y" * 12)
    stranger = browser_at(other, "10.0.0.9")
    assert AuthActions(stranger).login("alice").status_code == 302
    foreign = stranger.get_cookie("portal-device", path="/login").value
    for _ in range(3):
        assert attempt(throttled_app, "alice", address="10.0.0.66").status_code == 401
    assert AuthActions(bobs).login("alice").status_code == 429
    for forged in (value[:-2] + ("AA" if value[-2:] != "AA" else "BB"), foreign, "x" * 600):
        browser = browser_at(throttled_app, "10.0.0.10")
        browser.set_cookie("portal-device", forged, path="/login")
        assert AuthActions(browser).login("alice").status_code == 429, forged


def test_the_known_browser_cookie_is_host_only_secure_and_script_proof(slapd, build_app):
    """With Secure cookies it is __Secure-portal-device, HttpOnly, SameSite=Lax, host-only,
    and only for the login form's path: the apps behind the proxy never see it."""
    app = build_app(slapd, SESSION_COOKIE_SECURE=True)
    client = app.test_client()
    token = csrf_token_in(client.get("/login", base_url="https://localhost").get_data(True))
    answer = client.post("/login", base_url="https://localhost",
                         headers={"Referer": "https://localhost/login"},
                         data={"csrf_token": token, "username": "alice",
                               "password": PASSWORDS["alice"]})  # fmt: skip
    assert answer.status_code == 302
    (line,) = [h for h in answer.headers.getlist("Set-Cookie") if "portal-device" in h]
    assert line.startswith("__Secure-portal-device=")
    for part in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/login;", "Max-Age=7776000"):
        assert part in line, line
    assert "Domain" not in line


def test_unknown_usernames_are_counted_too(throttled_app):
    """Guessing at a name that does not exist is throttled like any other."""
    for _ in range(3):
        assert attempt(throttled_app, "nobody-here").status_code == 401
    assert attempt(throttled_app, "NOBODY-HERE").status_code == 429


def test_address_limit_stops_spraying_one_password_over_many_names(throttled_app):
    """Six different names from one address fail; the seventh waits; another address does not."""
    for number in range(6):
        assert attempt(throttled_app, f"user{number}", "Summer2026!").status_code == 401
    assert attempt(throttled_app, "user99", "Summer2026!").status_code == 429
    assert attempt(throttled_app, "bob", PASSWORDS["bob"], address="10.0.0.2").status_code == 302


def test_an_address_past_its_limit_uses_up_no_accounts_attempts(throttled_app):
    """Once an address is refused, its further guesses are not counted against the names it
    tries: bob can still sign in from his own address after being named five more times."""
    for number in range(6):
        assert attempt(throttled_app, f"sprayed-{number}").status_code == 401
    for _ in range(5):
        assert attempt(throttled_app, "bob").status_code == 429
    assert attempt(throttled_app, "bob", PASSWORDS["bob"], address="10.0.7.7").status_code == 302


def test_rotating_x_forwarded_for_does_not_reset_the_count(throttled_app):
    """With no trusted proxy, X-Forwarded-For is the client's own words: it changes nothing."""
    for number in range(6):
        response = attempt(throttled_app, f"user{number}", x_forwarded_for=f"192.0.2.{number}")
        assert response.status_code == 401
    assert attempt(throttled_app, "user9", x_forwarded_for="198.51.100.7").status_code == 429


def test_behind_one_trusted_proxy_only_the_proxys_entry_counts(slapd, build_app):
    """With TRUSTED_PROXY_HOPS=1 the address is the one the proxy appended, not the client's."""
    app = build_app(
        slapd,
        TRUSTED_PROXY_HOPS=1,
        THROTTLE_IP_LIMIT="2 per 15 minutes",
        THROTTLE_ACCOUNT_LIMIT="9 per minute",
    )
    proxy = "127.0.0.1"
    for forged in ("192.0.2.1", "192.0.2.2"):
        header = f"{forged}, 203.0.113.5"  # the client wrote the first, our proxy the last
        assert attempt(app, "bob", address=proxy, x_forwarded_for=header).status_code == 401
    header = "192.0.2.3, 203.0.113.5"
    assert attempt(app, "bob", address=proxy, x_forwarded_for=header).status_code == 429
    other = "192.0.2.3, 203.0.113.6"
    assert (
        attempt(app, "bob", PASSWORDS["bob"], address=proxy, x_forwarded_for=other).status_code
        == 302
    )


def test_successful_logins_are_not_counted(throttled_app):
    """Signing in many times in a row never throttles anyone."""
    for _ in range(8):
        assert attempt(throttled_app, "alice", PASSWORDS["alice"]).status_code == 302


def test_directory_outage_failures_do_not_count(own_slapd, build_app):
    """Logins refused because the directory is down (503) use up nobody's attempts."""
    app = build_app(own_slapd, THROTTLE_ACCOUNT_LIMIT="2 per 15 minutes")
    own_slapd.stop()
    for _ in range(5):
        response = attempt(app, "alice")
        assert response.status_code == 503
        assert "Retry-After" in response.headers
    own_slapd.start()
    # Once the server's back-off has passed: the outage used up nothing of the limit of 2.
    eventually(lambda: attempt(app, "alice").status_code == 401)
    assert attempt(app, "alice").status_code == 401
    assert attempt(app, "alice").status_code == 429


def test_retries_refused_while_the_directory_hangs_lock_nobody_out(
    own_slapd, build_app, audit_lines
):
    """The directory hangs (SIGSTOP) with two sign-ins waiting on it, which fill frank's limit
    of 2: his retries meanwhile are refused, as the directory not answering (503), not as too
    many failed sign-ins (429: the two are given back). None of them was a wrong password, so
    once the directory answers again his password signs him in."""
    # Long enough that the two keep waiting until the directory answers again: one that gave
    # up meanwhile would give its count back, and a retry would reach the directory.
    app = build_app(own_slapd, THROTTLE_ACCOUNT_LIMIT="2 per 15 minutes",
                    LDAP_OPERATION_TIMEOUT=60, LDAP_CONNECT_TIMEOUT=1)  # fmt: skip
    counted = app.extensions["portal.limiter"]
    key = counted.account_limits[0].key_for(counted.prefix, "account:frank")
    password = PASSWORDS["frank"]
    own_slapd.process.send_signal(signal.SIGSTOP)
    with ThreadPoolExecutor(2) as waiting:
        try:
            hanging = [waiting.submit(attempt, app, "frank", password) for _ in range(2)]
            eventually(lambda: counted.limiter.storage.get(key) == 2)
            gate = app.extensions["portal.directory"].deadline
            eventually(lambda: gate.waited_longest() >= HUNG_SECONDS)
            retries = [attempt(app, "frank", password).status_code for _ in range(3)]
        finally:  # before the pool waits for the two: they end once the directory answers
            own_slapd.process.send_signal(signal.SIGCONT)
        assert retries == [503] * 3
        refused = audit_lines("login.throttled")  # by the throttle: the directory not asked
        assert [line.get("directory_hung") for line in refused] == [True] * 3, refused
        assert {future.result().status_code for future in hanging} <= {302, 503}
    eventually(lambda: attempt(app, "frank", password).status_code == 302)


def test_throttle_stops_before_the_directory_locks_the_account():
    """With the ppolicy example's limit (twice it below pwdMaxFailure), guessing cannot lock
    alice out: not a stranger's guesses, nor those from a browser she signed in from."""
    server = start_slapd(**trees.ppolicy_options())
    try:
        app = example_app("ppolicy", server)
        hers = app.test_client()
        assert AuthActions(hers).login("alice", "alice-secret").status_code == 302
        AuthActions(hers).logout()
        answers = [attempt(app, "alice", f"guess-{n}").status_code for n in range(10)]
        answers += [AuthActions(hers).login("alice", f"typo-{n}").status_code for n in range(5)]
        assert answers == [401] + [429] * 9 + [401] + [429] * 4
        # The directory itself still lets her in: her account was never locked.
        connection = ldap3.Connection(server.url, trees.PPOLICY_PEOPLE["alice"], "alice-secret")
        assert connection.bind(), connection.result
        connection.unbind()
        app.extensions["portal.directory"].close()
    finally:
        server.cleanup()


def test_the_ppolicy_examples_limit_keeps_the_readmes_rule_against_its_trees_policy():
    """The README's rule, checked against the policy the ppolicy tree's slapd itself holds:
    twice the example's account limit (what strangers get through within one window's length)
    below pwdMaxFailure, and each window at least as long as the directory remembers a failure,
    which must be finite (the tree kept failures for ever, pwdFailureCountInterval 0, so one
    guess per window locked an account in three windows)."""
    import tomllib

    from limits import parse_many

    from tests.conftest import ROOT

    settings = tomllib.loads((ROOT / "examples" / "settings-ppolicy.toml").read_text())
    limits = parse_many(settings["THROTTLE_ACCOUNT_LIMIT"])
    server = start_slapd(**trees.ppolicy_options())
    try:
        connection = ldap3.Connection(server.url, trees.SERVICE_DN, trees.SERVICE_PASSWORD,
                                      auto_bind=True)  # fmt: skip
        asked = ["pwdMaxFailure", "pwdFailureCountInterval"]
        connection.search(trees.PPOLICY_DEFAULT_DN, "(objectClass=pwdPolicy)", ldap3.BASE,
                          attributes=asked)  # fmt: skip
        [policy] = connection.entries
        connection.unbind()
    finally:
        server.cleanup()
    threshold, memory = int(policy.pwdMaxFailure.value), int(policy.pwdFailureCountInterval.value)
    assert memory > 0, "a directory that never forgets a failure can be locked one guess a window"
    for limit in limits:
        assert 2 * limit.amount < threshold, limit
        assert limit.get_expiry() >= memory, limit


def test_storage_down_refuses_login_instead_of_allowing_unlimited_guesses(
    slapd, ldap_spy, audit_lines
):
    """Counts kept in a Redis that does not answer: 503 with Retry-After, no password checked;
    counted and audited as an outage, apart from the throttle's refusals of guessing."""
    app = make_app(slapd, THROTTLE_STORAGE_URL=f"redis://127.0.0.1:{free_port()}/0")
    try:
        ldap_spy.reset()
        before = scrape(app)
        response = attempt(app, "alice", PASSWORDS["alice"])
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert "cannot count failed attempts" in response.get_data(as_text=True)
        assert ldap_spy.user_binds() == []
        after = scrape(app)
        assert after.delta(before, "portal_logins_total", outcome="counts_unavailable") == 1
        assert after.delta(before, "portal_logins_total", outcome="throttled") == 0
        [line] = audit_lines("login.unavailable")
        assert line["reason"] == "throttle storage down" and not audit_lines("login.throttled")
    finally:
        app.extensions["portal.directory"].close()


def test_a_hung_storage_keeps_each_sign_in_waiting_once_not_every_time(
    slapd, caplog, frozen_breakers
):
    """The throttle's Redis accepts connections and never answers: the first sign-in waits out
    the timeout, and those right after it are paused (503) without asking it again. The log
    line names the Redis that hangs, and not its password."""
    with listener(lambda connection: None) as hung:
        where = hung.url.replace("ldap://", "redis://") + "/0"
        url = where.replace("redis://", "redis://:hunter2@")
        app = make_app(slapd, THROTTLE_STORAGE_URL=url, CACHE_REDIS_TIMEOUT=1)
        try:
            with caplog.at_level(logging.WARNING, logger="portal.signin.throttle"):
                assert attempt(app, "alice", PASSWORDS["alice"]).status_code == 503
            assert f"login throttling cannot count attempts in {where}: " in caplog.text
            assert "hunter2" not in caplog.text
            asked = hung.connections
            assert asked >= 1
            answers = [attempt(app, "alice", PASSWORDS["alice"]).status_code for _ in range(3)]
            assert answers == [503] * 3 and hung.connections == asked, "left alone meanwhile"
        finally:
            app.extensions["portal.directory"].close()


def test_counts_in_redis_are_shared_by_every_instance(slapd, build_app, redis_server):
    """Two portals sharing Redis: failures on either count against the same account."""
    settings = {
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": redis_server.url,
        "CACHE_KEY_PREFIX": "throttle-shared-test:",
        "THROTTLE_ACCOUNT_LIMIT": "3 per 15 minutes",
    }
    first, second = build_app(slapd, **settings), build_app(slapd, **settings)
    assert attempt(first, "carol").status_code == 401
    assert attempt(second, "carol").status_code == 401
    assert attempt(first, "carol").status_code == 401
    assert attempt(second, "carol", PASSWORDS["carol"]).status_code == 429


def test_a_give_back_after_its_window_ended_buys_no_extra_guess(slapd, build_app, redis_server):
    """A sign-in counted just before its window ends and given back just after (it succeeded):
    the next window must not start below zero, with a guess more than the limit in it."""
    prefix = "give-back-test:"
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=redis_server.url,
                    CACHE_KEY_PREFIX=prefix, THROTTLE_ACCOUNT_LIMIT="3 per 15 minutes")  # fmt: skip
    client = redis.Redis.from_url(redis_server.url)
    with app.test_request_context("/login", method="POST"):
        counted = throttle.begin_attempt("frank")
        for key in client.scan_iter(f"*{prefix}throttle*"):
            client.delete(key)  # the windows end while the directory answers
        throttle.give_back(counted)
    answers = [attempt(app, "frank", f"guess-{n}", f"10.0.1.{n}").status_code for n in range(4)]
    assert answers == [401, 401, 401, 429]
    client.close()


def test_throttled_login_is_audited_and_counted(throttled_app, audit_lines):
    """The refusal is one audit line (no password) and one throttled login in /metrics."""
    before = scrape(throttled_app)
    for _ in range(4):
        attempt(throttled_app, "frank", "hunter2-guess")
    after = scrape(throttled_app)
    assert after.delta(before, "portal_logins_total", outcome="throttled") == 1
    [line] = audit_lines("login.throttled")
    assert line["user"] == "frank" and line["ip"] == "10.0.0.1"
    assert "account" in line["reason"]
    assert all("hunter2-guess" not in str(entry) for entry in audit_lines())


# --- Enumeration safety --------------------------------------------------------------------

_TOKEN = re.compile(r'value="[^"]*"')


def comparable(response) -> tuple:
    """Status, body with the form's echoed values blanked, and the cookies' names and flags."""
    body = _TOKEN.sub('value=""', response.get_data(as_text=True))
    cookies = sorted(
        re.sub(r"^([^=]+)=[^;]*", r"\1", header)
        for header in response.headers.getlist("Set-Cookie")
    )
    return response.status_code, body, cookies


def test_unknown_wrong_disabled_and_locked_look_identical(ad_server):
    """On the AD-shaped tree: an unknown name, a wrong password, a disabled account (bob, UAC
    0x2) and a locked one (dave), each with its right password, get the same status, body and
    cookies."""
    app = example_app("ad", ad_server)
    cases = {
        "unknown": ("nobody", "whatever"),
        "wrong password": ("alice", "wrong"),
        "disabled": ("bob", "bob-secret"),
        "locked": ("dave", "dave-secret"),
    }
    seen = {name: comparable(attempt(app, *login)) for name, login in cases.items()}
    assert attempt(app, "frank", "frank-secret").status_code == 302, "the tree's normal account"
    app.extensions["portal.directory"].close()
    assert seen["unknown"][0] == 401
    for name, answer in seen.items():
        assert answer == seen["unknown"], f"{name} differs from an unknown name"


class FakeTime:
    """A monotonic clock the login view reads, and a sleep that only moves it."""

    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time(monkeypatch):
    """Replace the login view's clock and sleep, so the floor is observed, not waited for."""
    fake = FakeTime()
    monkeypatch.setattr("portal.auth.views._monotonic", fake.monotonic)
    monkeypatch.setattr("portal.auth.views._sleep", fake.sleep)
    return fake


def test_failed_logins_last_at_least_the_floor_whatever_the_reason(slapd, build_app, fake_time):
    """Unknown name and wrong password both wait out the floor; a success does not wait."""
    app = build_app(slapd, LOGIN_FAILURE_FLOOR_MS=250, THROTTLE_ACCOUNT_LIMIT="50 per minute")
    assert attempt(app, "nobody").status_code == 401
    assert attempt(app, "alice", "wrong").status_code == 401
    assert attempt(app, "carol", PASSWORDS["carol"]).status_code == 403  # refused: right password
    assert fake_time.slept == [0.25, 0.25, 0.25]
    assert attempt(app, "alice", PASSWORDS["alice"]).status_code == 302
    assert fake_time.slept == [0.25, 0.25, 0.25], "a successful login is not slowed down"


def test_the_floor_counts_the_time_already_spent(slapd, build_app, fake_time, monkeypatch):
    """Only the rest of the floor is waited: work that took 100 ms leaves 150 ms."""
    from portal import directory

    app = build_app(slapd, LOGIN_FAILURE_FLOOR_MS=250)
    real = directory.authenticate

    def slow_authenticate(*args):
        fake_time.now += 0.1
        return real(*args)

    monkeypatch.setattr(directory, "authenticate", slow_authenticate)
    assert attempt(app, "alice", "wrong").status_code == 401
    assert fake_time.slept == [pytest.approx(0.15)]


def test_simultaneous_guesses_cannot_all_slip_under_the_account_limit(slapd, build_app, ldap_spy):
    """20 guesses for alice arriving at once, limit 3: at most 3 passwords reach the directory
    (each attempt is counted before the bind, atomically)."""
    app = build_app(slapd, THROTTLE_ACCOUNT_LIMIT="3 per 15 minutes")
    browsers = []
    for number in range(20):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"10.9.0.{number}"
        browsers.append((client, AuthActions(client).csrf_token()))
    barrier, statuses = threading.Barrier(len(browsers)), []

    def guess(client, token):
        barrier.wait()
        form = {"csrf_token": token, "username": "alice", "password": "guess"}
        statuses.append(client.post("/login", data=form).status_code)

    ldap_spy.reset()
    threads = [threading.Thread(target=guess, args=pair) for pair in browsers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [401] * 3 + [429] * 17
    assert len(ldap_spy.user_binds()) == 3


# Spellings an LDAP server's matching rules fold to "alice" (fullwidth and ordinal letters).
COMPATIBLE_SPELLINGS = ["\uff41lice", "\u00aalice", "\uff41\uff4c\uff49\uff43\uff45"]


def test_compatibility_spellings_of_a_name_share_its_count(throttled_app):
    """Spellings slapd folds to alice (fullwidth, ordinal letters) share her budget."""
    assert [attempt(throttled_app, name).status_code for name in COMPATIBLE_SPELLINGS] == [401] * 3
    assert attempt(throttled_app, "alice", PASSWORDS["alice"]).status_code == 429


def test_an_ipv6_client_is_counted_by_its_64(throttled_app):
    """Addresses of one /64 (one subscriber) share the address limit; another /64 does not."""
    answers = [
        attempt(throttled_app, f"user{n}", address=f"2001:db8:1:2::{n:x}").status_code
        for n in range(7)
    ]
    assert answers == [401] * 6 + [429]
    other = attempt(throttled_app, "bob", PASSWORDS["bob"], address="2001:db8:1:3::1")
    assert other.status_code == 302


def test_a_redis_that_refuses_writes_pauses_login(slapd, build_app, own_redis, ldap_spy):
    """Redis answering PING but refusing writes (memory full, read-only replica): the attempt
    cannot be counted, so no password is checked (503)."""
    app = build_app(
        slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url, CACHE_KEY_PREFIX="full:"
    )
    client = redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    ldap_spy.reset()
    answers = [attempt(app, "alice", f"guess-{n}").status_code for n in range(4)]
    assert answers == [503] * 4
    assert ldap_spy.user_binds() == []
    client.close()


class _Clock:
    """A clock the test moves by hand (the windows are minutes long)."""

    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_in_memory_counts_end_with_their_window_and_start_no_threads():
    """The process's own counts (memory://) count within a window, start again after it,
    never go below zero when an attempt is given back late, and drop dead keys as they count:
    limits' MemoryStorage started a timer thread every 10 ms while logins were counted."""
    from limits import parse
    from limits.strategies import FixedWindowRateLimiter

    from portal.signin.counts import WindowCounts

    clock = _Clock()
    counts = WindowCounts(clock)
    limiter = FixedWindowRateLimiter(counts)
    item = parse("3 per 15 minutes")
    threads = threading.active_count()
    assert [limiter.hit(item, "alice") for _ in range(4)] == [True, True, True, False]
    assert threading.active_count() == threads, "counting must not start a thread"
    stats = limiter.get_window_stats(item, "alice")
    assert stats.remaining == 0 and stats.reset_time == clock.now + 15 * 60
    limiter.hit(item, "alice", cost=-1)  # the refused fourth and one more given back
    limiter.hit(item, "alice", cost=-1)
    assert limiter.hit(item, "alice") is True and limiter.hit(item, "alice") is False
    clock.now += 15 * 60
    assert counts.get(item.key_for("alice")) == 0, "the window has passed"
    assert counts.incr("late", 60, amount=-1) == 0, "nothing to give back buys no extra try"
    assert limiter.hit(item, "alice") is True
    for number in range(100):
        counts.incr(f"sprayed-{number}", 60)
    clock.now += WindowCounts.SWEEP_SECONDS + 61
    counts.incr("next", 60)
    # alice's window, started again above, is still open; the others' have ended.
    assert set(counts._counts) == {"next", item.key_for("alice")}, "ended windows are dropped"


def test_in_memory_counts_past_the_limit_share_counts_that_never_count_less(monkeypatch):
    """Past MAX_KEYS a new name is counted in a shared count, with every other name that falls
    in it (more than on its own, never less), and stays counted there while it lasts; the names
    already counted go on counting, and no live count is dropped to make room."""
    from portal.signin.counts import WindowCounts

    clock = _Clock()
    counts = WindowCounts(clock)
    monkeypatch.setattr(WindowCounts, "MAX_KEYS", 3)
    monkeypatch.setattr(WindowCounts, "OVERFLOW_COUNTS", 1)  # every new name in the one
    for name in ("a", "b", "c"):
        counts.incr(name, 60)
    assert counts.incr("d", 60) == 1 and counts.incr("e", 60) == 2, "d and e share one count"
    assert counts.get("d") == 2 and counts.get_expiry("d") == clock.now + 60
    assert counts.incr("a", 60) == 2 and counts.get("b") == 1
    clock.now += 30
    counts.clear("c")  # room again, but d's attempts are in the shared count: it stays there
    assert counts.incr("d", 60) == 3
    counts.incr("d", 60, amount=-1)  # given back: not from a count that holds e's attempts too
    assert counts.get("e") == 3
    clock.now += WindowCounts.SWEEP_SECONDS + 61
    assert counts.incr("d", 60) == 1 and "d" in counts._counts, "its own once the windows end"


def test_shared_counts_are_shared_within_one_limit_and_never_given_back_to(monkeypatch):
    """Names and addresses have limits of their own (5 and 50): they never share a count. An
    attempt counted on a name's own count just before its window ends, given back just after,
    takes nothing from a shared count that holds other names' attempts."""
    from limits import parse

    from portal.signin.counts import WindowCounts

    clock = _Clock()
    counts = WindowCounts(clock)
    monkeypatch.setattr(WindowCounts, "MAX_KEYS", 2)
    monkeypatch.setattr(WindowCounts, "OVERFLOW_COUNTS", 1)
    names, addresses = parse("5 per minute"), parse("50 per minute")
    own = names.key_for("portal", "account:own")
    counts.incr(own, 60)
    counts.incr(addresses.key_for("portal", "ip:10.0.0.1"), 60)
    clock.now += 30  # the shared counts' windows start later than own's
    for number in range(3):
        counts.incr(names.key_for("portal", f"account:sprayed-{number}"), 60)
        counts.incr(addresses.key_for("portal", f"ip:10.0.1.{number}"), 60)
    assert counts.get(names.key_for("portal", "account:newcomer")) == 3, "names with names"
    assert counts.get(addresses.key_for("portal", "ip:10.0.2.1")) == 3, "addresses apart"
    clock.now += 29
    counts.incr(own, 60)  # counted on its own count, in the last second of its window...
    clock.now += 2
    counts.incr(own, 60, amount=-1)  # ...and given back after it ended
    assert counts.get(names.key_for("portal", "account:newcomer")) == 3


def test_a_full_table_of_counts_never_stops_sign_in(slapd, build_app, monkeypatch):
    """Names and addresses sprayed until no count of its own is left (a flood from many IPv6
    networks): a wrong password is still answered as one, and the next person signs in."""
    from portal.signin.counts import WindowCounts

    monkeypatch.setattr(WindowCounts, "MAX_KEYS", 40)
    app = build_app(slapd, THROTTLE_STORAGE_URL="memory://")
    for number in range(25):
        attempt(app, f"sprayed-{number}", address=f"2001:db8:{number:x}::1")
    assert attempt(app, "bob", "not-his", address="10.9.9.9").status_code == 401
    assert attempt(app, "alice", "alice-secret", address="10.1.1.1").status_code == 302


def test_a_right_password_that_must_be_changed_uses_up_no_attempt():
    """With the ppolicy example's limit of one, "reset" signs in (right password, must change
    it: 403) and can still change it at once: the 403 was no guess. A wrong password counts."""
    server = start_slapd(**trees.ppolicy_options())
    try:
        app = example_app("ppolicy", server)
        for _ in range(3):
            assert attempt(app, "reset", "reset-secret").status_code == 403
        assert attempt(app, "reset", "wrong").status_code == 401
        assert attempt(app, "reset", "reset-secret").status_code == 429
        app.extensions["portal.directory"].close()
    finally:
        server.cleanup()


def test_the_service_desk_sees_and_forgets_a_throttled_account(
    slapd, build_app, redis_server, audit_lines
):
    """Bob mistyped her way into a 429, in a new browser: `portal whois bob` said she may
    use the portal and nothing of it, and only waiting the window out (or deleting a raw Redis
    key) let her in. whois now names the count and when it ends, `portal unthrottle bob`
    forgets it (audited), and her right password gets in at once."""
    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url,
                "CACHE_KEY_PREFIX": "unthrottle-test:",
                "THROTTLE_ACCOUNT_LIMIT": "3 per 15 minutes"}  # fmt: skip
    server, command_line = build_app(slapd, **settings), build_app(slapd, **settings)
    runner = command_line.test_cli_runner()
    assert "failed sign-ins: none counted now" in runner.invoke(args=["whois", "bob"]).output
    for _ in range(3):
        assert attempt(server, "bob").status_code == 401
    assert attempt(server, "bob", PASSWORDS["bob"]).status_code == 429
    whois = runner.invoke(args=["whois", "Bob"]).output
    assert ("failed sign-ins: 3 of 3 (3 per 15 minutes): sign-ins REFUSED (429) for 15 more min; "
            "`portal unthrottle bob` forgets them") in whois, whois  # fmt: skip
    done = runner.invoke(args=["unthrottle", "bob"])
    assert done.exit_code == 0 and "bob: 3 failed sign-in(s) forgotten" in done.output, done.output
    assert [line["target"] for line in audit_lines("admin.unthrottle")] == ["bob"]
    assert attempt(server, "bob", PASSWORDS["bob"]).status_code == 302
    assert "none counted now" in runner.invoke(args=["whois", "bob"]).output


def _throttled_and_an_administrator(app, typed: str):
    # bob mistypes his password three times as `typed` (the limit), then his right one is
    # refused; erin, an administrator, signs in from elsewhere.
    for _ in range(3):
        assert attempt(app, typed).status_code == 401
    assert attempt(app, typed, PASSWORDS["bob"]).status_code == 429
    erin = app.test_client()
    erin.environ_base["REMOTE_ADDR"] = "10.9.9.9"
    assert AuthActions(erin).login("erin").status_code == 302
    return erin


def test_the_admin_page_shows_and_forgets_a_persons_failed_sign_ins(throttled_app):
    """With the counts in the server's memory: the person's admin page says them and its
    button (CSRF-checked) forgets them; the command line, out of reach, says so (exit 1)."""
    erin = _throttled_and_an_administrator(throttled_app, "bob")
    page = erin.get("/admin/users/bob").get_data(as_text=True)
    assert "3 of 3 (3 per 15 minutes):" in page and "sign-ins refused for 15 more min." in page
    assert erin.post("/admin/users/bob/unthrottle").status_code == 400  # no CSRF token
    assert attempt(throttled_app, "bob", PASSWORDS["bob"]).status_code == 429
    token = csrf_token_in(page)
    done = erin.post("/admin/users/bob/unthrottle", data={"csrf_token": token})
    assert done.status_code == 302
    assert "None counted now." in erin.get("/admin/users/bob").get_data(as_text=True)
    assert attempt(throttled_app, "bob", PASSWORDS["bob"]).status_code == 302
    refused = throttled_app.test_cli_runner().invoke(args=["unthrottle", "bob"])
    assert refused.exit_code == 1 and "out of this command's reach" in refused.output
    # Where it can be done instead (the message named only a restart and the wait).
    assert "'Forget the failed sign-ins' of the person's admin page" in refused.output


def test_failed_sign_ins_typed_as_the_e_mail_address_are_shown_and_forgotten(slapd, build_app):
    """bob signs in by his e-mail address (the user filter matches mail too), which the
    throttle counts apart from "bob": his admin page and whois showed none counted, and the
    button cleared "bob" and said it was done while bob@example.org stayed refused."""
    by_uid_or_mail = "(&(objectClass=inetOrgPerson)(|(uid={username})(mail={login})))"
    app = build_app(slapd, LDAP_USER_FILTER=by_uid_or_mail, LDAP_LOGIN_DOMAINS=[],
                    THROTTLE_ACCOUNT_LIMIT="3 per 15 minutes")  # fmt: skip
    erin = _throttled_and_an_administrator(app, "bob@example.org")
    for looked_up in ("bob", "bob@example.org"):
        page = erin.get(f"/admin/users/{looked_up}").get_data(as_text=True)
        assert "3 of 3 (3 per 15 minutes):" in page, looked_up
    page = erin.get("/admin/users/bob").get_data(as_text=True)
    done = erin.post("/admin/users/bob/unthrottle", data={"csrf_token": csrf_token_in(page)})
    assert done.status_code == 302
    assert attempt(app, "bob@example.org", PASSWORDS["bob"]).status_code == 302
