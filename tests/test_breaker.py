"""Circuit breakers per directory server, proven with real slapd and loopback listeners that
stand in for a hung server (accepts, never answers) or a dead one (accepts, hangs up at once),
counting every connection the portal makes to them."""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from portal import directory
from portal.directory import deadline
from portal.directory.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from portal.directory.wire import LeanConnection
from portal.quietlog import QuietLog
from tests.conftest import PASSWORDS, AuthActions, eventually, make_app
from tests.servers import listener
from tests.test_metrics import scrape
from tests.test_password_change import change


@pytest.fixture
def clock(frozen_breakers):
    """Every breaker's clock, standing still until the test moves it (here by this name)."""
    return frozen_breakers


def hung(connection) -> None:
    """A server that accepts and never answers (SIGSTOPped, or a black hole)."""


def dead(connection) -> None:
    """A server that hangs up at once."""
    connection.close()


# Short timeouts; and no throttling, since twenty people sign in as alice at the same time.
# The sign-in deadline is not what these test: with the default (the timeout + 1 s), the one
# who waits out a hung server would have a second left for the other on a slow machine.
FAST = {
    "LDAP_CONNECT_TIMEOUT": 1,
    "LDAP_OPERATION_TIMEOUT": 1,
    "LDAP_LOGIN_DEADLINE": 30,
    "THROTTLE_ACCOUNT_LIMIT": "100000 per minute",
    "THROTTLE_IP_LIMIT": "100000 per minute",
}


def logins(app, count: int, username: str = "alice", threads: int = 20) -> list[int]:
    """`count` sign-ins from as many browsers, `threads` at a time: their statuses."""

    def one(_):
        return AuthActions(app.test_client()).login(username).status_code

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


def test_back_off_grows_doubles_and_is_capped_with_jitter():
    """1 s, 2 s, 4 s ... up to the cap, each within ±20 %."""
    now = [0.0]
    low = Breaker("a:1", cap=8, clock=lambda: now[0], jitter=lambda: 0.0)
    high = Breaker("a:1", cap=8, clock=lambda: now[0], jitter=lambda: 1.0)
    assert [round(low.failed(), 2) for _ in range(5)] == [0.8, 1.6, 3.2, 6.4, 6.4]
    assert [round(high.failed(), 2) for _ in range(5)] == [1.2, 2.4, 4.8, 9.6, 9.6]


def test_one_probe_at_a_time_then_closed_or_open_again():
    """Half-open lets exactly one caller through; success closes, failure opens longer."""
    now = [0.0]
    breaker = Breaker("a:1", clock=lambda: now[0], jitter=lambda: 0.5)
    assert breaker.admit() and not breaker.admit(), "a fresh process probes first, once"
    breaker.succeeded()
    assert breaker.snapshot().state == CLOSED and breaker.admit() and breaker.admit()
    breaker.failed("timed out")
    assert breaker.snapshot().state == OPEN and not breaker.admit()
    now[0] += 1.0
    assert breaker.snapshot().state == HALF_OPEN
    assert breaker.admit() and not breaker.admit()
    assert breaker.failed() == 2.0  # the probe failed: twice as long
    assert not breaker.admit()


def test_waiting_for_a_probe_ends_when_it_reports():
    """A caller with no other server to ask waits for the probe's outcome, not its timeout."""
    breaker = Breaker("a:1", jitter=lambda: 0.5)
    assert breaker.admit()
    waited = threading.Thread(target=breaker.wait, args=(30,))
    waited.start()
    breaker.succeeded()
    waited.join(timeout=10)  # a bound for the test run, not a timing assertion
    assert not waited.is_alive()


def test_a_hung_first_server_costs_one_person_its_timeout_not_everyone(slapd, clock):
    """The first replica accepts and never answers: 20 people sign in at once, all succeed,
    and only one connection ever reaches the hung server (the one probe)."""
    with listener(hung) as stuck:
        app = make_app(None, LDAP_URLS=[stuck.url, slapd.url], **FAST)
        assert logins(app, 20) == [302] * 20
        assert logins(app, 20) == [302] * 20
        assert stuck.connections == 1
        app.extensions["portal.directory"].close()


def test_with_every_server_down_each_gets_one_attempt_per_back_off(clock, caplog):
    """Two dead replicas, 60 sign-ins: every one is a quick 503, and each server sees one
    connection until its back-off ends, then one more."""
    with listener(dead) as first, listener(dead) as second:
        app = make_app(None, LDAP_URLS=[first.url, second.url], **FAST)
        with caplog.at_level(logging.WARNING, logger="portal.directory"):
            answers = logins(app, 60)
        assert answers == [503] * 60
        assert (first.connections, second.connections) == (1, 1)
        clock.now += 1.3  # past the first back-off (1 s, at most +20 %)
        assert logins(app, 30) == [503] * 30
        assert (first.connections, second.connections) == (2, 2)
        port = first.url.rsplit(":", 1)[1]
        assert any(f"127.0.0.1:{port}" in record.getMessage() for record in caplog.records)
        app.extensions["portal.directory"].close()


def test_the_status_page_and_metrics_show_each_breaker(slapd, clock):
    """A dead first server is "open" on the status page and 1 in portal_ldap_server_open."""
    with listener(dead) as down:
        app = make_app(None, LDAP_URLS=[down.url, slapd.url], **FAST)
        erin = app.test_client()
        assert AuthActions(erin).login("erin").status_code == 302
        page = erin.get("/admin/status").get_data(as_text=True)
        # A back-off of 1 s ± 20 %, rounded up: never "in 0 s" while it has time to run.
        assert re.search(r">open, tried again in [12] s \(1 failure in a row\)<", page)
        label = down.url.removeprefix("ldap://")
        assert scrape(app).value("portal_ldap_server_open", server=label) == 1
        clock.now += 1.3  # its back-off is over: the next request asks it
        page = erin.get("/admin/status").get_data(as_text=True)
        assert ">half-open, tried again by the next request (1 failure in a row)<" in page
        assert "tried again in 0 s" not in page
        clock.now += 5
        app.extensions["portal.directory"].close()


def test_a_breaker_says_when_it_is_due_and_when_it_is_being_probed():
    """Open: seconds left. Due: no seconds (not "0 s"), no probe yet. Probing: says so."""
    now = [0.0]
    breaker = Breaker("a:1", clock=lambda: now[0], jitter=lambda: 0.5, initial=CLOSED)
    breaker.failed("refused")
    assert (breaker.snapshot().state, breaker.snapshot().retry_in) == (OPEN, 1.0)
    now[0] = 1.5
    due = breaker.snapshot()
    assert (due.state, due.retry_in, due.probing) == (HALF_OPEN, None, False)
    assert breaker.admit()
    assert breaker.snapshot().probing
    breaker.succeeded()
    closed = breaker.snapshot()
    assert (closed.state, closed.failures, closed.retry_in, closed.probing) == (
        CLOSED,
        0,
        None,
        False,
    )


def test_repeated_warnings_are_one_line_a_minute_with_a_count():
    """The same failure logged 500 times: one line, then one a minute saying how many."""
    now = [0.0]
    records = []

    class Catch(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("portal.test.quiet")
    logger.addHandler(Catch())
    quiet = QuietLog(logger, clock=lambda: now[0])
    for _ in range(500):
        quiet.warning("a:1", "server %s failed", "a:1")
    now[0] += 61
    quiet.warning("a:1", "server %s failed", "a:1")
    assert records == [
        "server a:1 failed",
        "server a:1 failed (499 more like this in the last 60 s)",
    ]


def test_a_login_past_its_deadline_is_a_503_and_frees_the_worker(monkeypatch, audit_lines):
    """The only server hangs and the operation timeout is 4 s: with LDAP_LOGIN_DEADLINE 1 the
    person gets "try again" while the abandoned login is still waiting on the server."""
    from portal.directory.service import Directory

    finished = threading.Event()
    original = Directory.authenticate

    def authenticate(self, *args):
        try:
            return original(self, *args)
        finally:
            finished.set()

    monkeypatch.setattr(Directory, "authenticate", authenticate)
    with listener(hung) as stuck:
        app = make_app(None, LDAP_URLS=[stuck.url], LDAP_OPERATION_TIMEOUT=4,
                       LDAP_LOGIN_DEADLINE=1)  # fmt: skip
        response = AuthActions(app.test_client()).login("alice")
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert not finished.is_set(), "the answer waited for the directory"
        assert finished.wait(30)  # a bound for the test run: the abandoned login ends
        [line] = audit_lines("login.unavailable")
        assert line["user"] == "alice"
        app.extensions["portal.directory"].close()


@pytest.mark.slow
def test_under_gunicorn_each_worker_sends_one_person_to_a_hung_replica(slapd, tmp_path):
    """Two gunicorn workers, a hung first replica and a working second: 40 sign-ins, all
    through, and the hung one accepted at most one connection per worker."""
    import json

    import requests

    from tests.conftest import csrf_token_in
    from tests.servers import Gunicorn, portal_environment

    def sign_in(base: str) -> int:
        with requests.Session() as browser:
            token = csrf_token_in(browser.get(base + "/login", timeout=30).text)
            form = {"csrf_token": token, "username": "alice", "password": "alice-secret"}
            return browser.post(base + "/login", data=form, allow_redirects=False,
                                timeout=30).status_code  # fmt: skip

    with listener(hung) as stuck:
        environment = portal_environment(slapd.url)
        environment.update(
            PORTAL_LDAP_URLS=json.dumps([stuck.url, slapd.url]),
            PORTAL_LDAP_CONNECT_TIMEOUT="1",
            PORTAL_LDAP_OPERATION_TIMEOUT="2",
            PORTAL_LDAP_LOGIN_DEADLINE="30",
            PORTAL_THROTTLE_ACCOUNT_LIMIT='"100000 per minute"',
            PORTAL_THROTTLE_IP_LIMIT='"100000 per minute"',
        )
        server = Gunicorn(tmp_path, environment, workers=2)
        server.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(sign_in, [server.base_url] * 40))
        finally:
            server.stop()
        assert statuses == [302] * 40
        assert 1 <= stuck.connections <= 2


def test_after_a_full_outage_the_status_page_probe_closes_every_breaker(own_slapd, clock):
    """Both replicas stop, then come back; the first serves every request after, so no
    request ever needs the second. The status page's probe closes its breaker: the page and
    portal_ldap_server_open say both are well again."""
    from tests.conftest import start_slapd

    second = start_slapd()
    try:
        app = make_app(None, LDAP_URLS=[own_slapd.url, second.url], **FAST)
        erin = app.test_client()
        assert AuthActions(erin).login("erin").status_code == 302
        app.extensions["portal.directory"].close()
        own_slapd.stop()
        second.stop()
        assert AuthActions(app.test_client()).login("alice").status_code == 503
        own_slapd.start()
        second.start()
        clock.now += 3600
        assert AuthActions(app.test_client()).login("alice").status_code == 302
        page = erin.get("/admin/status").get_data(as_text=True)
        assert page.count('<td class="ok">closed</td>') == 2
        labels = [url.removeprefix("ldap://") for url in (own_slapd.url, second.url)]
        found = scrape(app)
        assert [found.value("portal_ldap_server_open", server=name) for name in labels] == [0, 0]
        app.extensions["portal.directory"].close()
    finally:
        second.cleanup()


def test_a_busy_service_pool_is_no_fault_of_the_bind_server(slapd, clock, monkeypatch):
    """LDAP_USER_DN_TEMPLATE: the bind works, then reading the entry finds every service
    connection busy. That is the portal's own limit: a 503, and the healthy server's breaker
    stays closed (else every sign-in would skip it for a back-off)."""
    from portal.directory import DirectoryUnavailable
    from portal.directory.connections import breaker_of
    from portal.directory.service import Directory

    app = make_app(slapd, LDAP_USER_DN_TEMPLATE="uid={username},ou=people,dc=example,dc=org")

    def busy(self, connection, name):
        raise DirectoryUnavailable("every directory connection is busy")

    monkeypatch.setattr(Directory, "_bound_entry", busy)
    assert AuthActions(app.test_client()).login("alice").status_code == 503
    [server] = app.extensions["portal.directory"].servers
    assert breaker_of(server).snapshot().failures == 0
    assert breaker_of(server).admit()
    app.extensions["portal.directory"].close()


def test_a_long_outage_writes_one_warning_a_minute_per_server(clock, caplog):
    """Two dead replicas for 20 back-offs (each ending, so each server is tried 20 times):
    one warning line per server, not one per attempt."""
    with listener(dead) as first, listener(dead) as second:
        app = make_app(None, LDAP_URLS=[first.url, second.url], **FAST)
        with caplog.at_level(logging.WARNING, logger="portal.directory"):
            for _ in range(20):
                assert logins(app, 1) == [503]
                clock.now += 120  # past any back-off: both are tried again
        assert (first.connections, second.connections) == (20, 20)
        for server in (first, second):
            port = server.url.rsplit(":", 1)[1]
            lines = [
                record for record in caplog.records if f":{port} failed" in record.getMessage()
            ]
            assert len(lines) == 1
        app.extensions["portal.directory"].close()


@pytest.mark.parametrize("code", [51, 52])
def test_a_server_answering_busy_to_the_bind_is_passed_over_for_the_next(
    slapd, clock, monkeypatch, code
):
    """The first replica answers every bind with busy (51) or unavailable (52): that is its
    state, not a refusal of anyone's password, so the next server in LDAP_URLS is asked and
    the busy one's breaker opens (every sign-in went back to it and got a 503). Fault
    injected: slapd is never busy on demand; both URLs reach the same real slapd."""

    from portal.directory.connections import breaker_of

    real_bind = LeanConnection.bind

    def busy_first(connection, *args, **kwargs):
        if connection.server.host == "127.0.0.1":
            connection.result = {"result": code, "description": "busy", "message": "busy"}
            return False
        return real_bind(connection, *args, **kwargs)

    monkeypatch.setattr(LeanConnection, "bind", busy_first)
    app = make_app(None, LDAP_URLS=[slapd.url, slapd.url.replace("127.0.0.1", "localhost")],
                   **FAST)  # fmt: skip
    try:
        assert logins(app, 4, threads=1) == [302] * 4
        first = app.extensions["portal.directory"].servers[0]
        assert not breaker_of(first).admit(), "the busy server's breaker stayed closed"
        assert AuthActions(app.test_client()).login("alice", "wrong").status_code == 401
    finally:
        app.extensions["portal.directory"].close()


def test_a_server_answering_busy_to_the_service_bind_is_reported_as_answering(slapd, monkeypatch):
    """The status page's probe and `portal check` of a server answering the service bind with
    busy (51) say so in its words: it answered, the bind failed. They said no directory server
    answered, which sends an operator to the network. Fault injected, as above."""

    from portal.directory import health

    real_bind = LeanConnection.bind

    def busy_service(connection, *args, **kwargs):
        if (connection.user or "").startswith("cn=portal-reader"):
            connection.result = {"result": 51, "description": "busy", "message": "too busy"}
            return False
        return real_bind(connection, *args, **kwargs)

    monkeypatch.setattr(LeanConnection, "bind", busy_service)
    app = make_app(slapd)
    try:
        directory = app.extensions["portal.directory"]
        found = health.probe(directory.servers[0], directory.settings)
        assert (found.reachable, found.service_bind_ok, found.error) == (True, False, "busy")
        checked = app.test_cli_runner().invoke(args=["check"]).output
        assert re.search(r"connect\W+ok", checked), checked
        assert re.search(r"service bind as cn=portal-reader\S+\W+FAILED: busy \(51\) too busy",
                         checked), checked  # fmt: skip
    finally:
        app.extensions["portal.directory"].close()


def test_while_a_failed_server_is_probed_other_sign_ins_do_not_wait_for_it(clock):
    """The only replica failed and hangs: once its back-off ends, one sign-in probes it (and
    waits out the timeout); another meanwhile gets its 503 at once, without waiting for the
    probe (it held a worker thread for the probe's timeout, so a burst filled every thread
    and /healthz waited behind them). Only a process's first probe is waited for. The probe
    hangs until the test lets it go (its timeout is a minute), so the other sign-in ending
    first is its order, not a race."""
    from portal.directory.connections import breaker_of

    with listener(hung) as stuck:
        slow = {**FAST, "LDAP_OPERATION_TIMEOUT": 60, "LDAP_LOGIN_DEADLINE": 120}
        app = make_app(None, LDAP_URLS=[stuck.url], **slow)
        [server] = app.extensions["portal.directory"].servers
        breaker_of(server).failed("it hung a moment ago")
        clock.now += 3600  # its back-off is over: the next sign-in probes it
        probe = threading.Thread(target=logins, args=(app, 1))
        probe.start()
        other: list[list[int]] = []
        meanwhile = threading.Thread(target=lambda: other.append(logins(app, 1)))
        try:
            for _ in range(500):  # until the probe's connection is accepted
                if stuck.connections:
                    break
                threading.Event().wait(0.01)
            assert stuck.connections == 1
            meanwhile.start()
            meanwhile.join(timeout=20)  # a bound for the failure only: the probe hangs 60 s
            assert other == [[503]], "the sign-in waited for the probe's outcome"
            assert probe.is_alive() and stuck.connections == 1
        finally:
            stuck.accepted[0].close()  # the hung server hangs up: the probe fails at once
            probe.join()
            meanwhile.join()
            app.extensions["portal.directory"].close()


def test_a_burst_of_sign_ins_on_a_healthy_directory_waits_its_turn_and_is_never_refused(
    slapd, monkeypatch
):
    """Four request threads (as the shipped gunicorn config tells the portal): two sign-ins
    wait on the directory at once, and 40 sign-ins four at a time all get in: the others
    wait for their turn, which a healthy directory gives within milliseconds."""

    monkeypatch.setattr(deadline, "_request_threads", 4)
    assert deadline.waiting_limit() == 2
    app = make_app(slapd, **FAST)
    most = []
    real_admit = deadline.Deadline._admit

    def counted(self):
        began = real_admit(self)
        most.append(len(self._waiting))
        return began

    monkeypatch.setattr(deadline.Deadline, "_admit", counted)
    try:
        assert logins(app, 40, threads=4) == [302] * 40
        assert max(most) <= 2, most
    finally:
        app.extensions["portal.directory"].close()


def test_while_the_directory_is_slow_further_sign_ins_do_not_wait_for_a_turn(monkeypatch):
    """Two sign-ins hang on the directory (half of four threads): once the oldest has waited
    SLOT_SECONDS, a burst of further sign-ins is told at once to try again. Each waited a
    quarter of a second for a turn first, and twenty at once held every free thread again
    (a signed-in person's page took a second)."""
    from portal.directory.errors import DirectoryBusy

    monkeypatch.setattr(deadline, "_request_threads", 4)
    hung = threading.Event()
    gate = deadline.Deadline(seconds=30, threads=8)
    held = [threading.Thread(target=gate.run, args=(hung.wait,)) for _ in range(2)]
    for thread in held:
        thread.start()
    try:
        eventually(lambda: len(gate._waiting) == 2)
        # The rule's own threshold, waited out: not a timing assertion.
        time.sleep(max(0.0, deadline.SLOT_SECONDS - (time.monotonic() - gate._waiting[0])))
        turns = []
        real_wait = gate._turn.wait_for
        monkeypatch.setattr(gate._turn, "wait_for", lambda *a: turns.append(1) or real_wait(*a))
        refused = []

        def one():
            try:
                gate.run(lambda: None)
            except DirectoryBusy:
                refused.append(1)

        burst = [threading.Thread(target=one) for _ in range(20)]
        for thread in burst:
            thread.start()
        for thread in burst:
            thread.join(10)
        assert len(refused) == 20 and turns == [], (len(refused), len(turns))
    finally:
        hung.set()
        for thread in held:
            thread.join(10)
    assert gate._waiting == []
    assert gate.run(lambda: "in") == "in"  # answering again: a turn at once


@pytest.mark.parametrize("form", ["sign-in", "password change"])
def test_a_count_full_of_sign_ins_waiting_on_a_hung_directory_is_a_503_not_a_long_wait(
    own_slapd, form, audit_lines
):
    """A stranger's two guesses at bob's password wait on a hung directory and fill his count
    (2 per 15 minutes, counted before the password is checked): bob's own sign-in or password
    change is then told the directory is not answering (503), not "wait 15 minutes" (429),
    which was untrue (the waiting ones are given back when the directory fails them). Still
    refused by the throttle, and logged so: no guess gets through."""
    app = make_app(own_slapd, LDAP_OPERATION_TIMEOUT=10, LDAP_LOGIN_DEADLINE=30,
                   THROTTLE_ACCOUNT_LIMIT="2 per 15 minutes")  # fmt: skip
    gate = app.extensions["portal.directory"].deadline
    own_slapd.process.send_signal(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(2) as pool:
            guesses = [pool.submit(AuthActions(app.test_client()).login, "bob", "guess")
                       for _ in range(2)]  # fmt: skip
            # Waiting long enough to tell a hung directory (the rule's own threshold).
            eventually(lambda: len(gate._waiting) == 2
                       and gate.waited_longest() >= directory.HUNG_SECONDS)  # fmt: skip
            if form == "sign-in":
                answer = AuthActions(app.test_client()).login("bob")
            else:
                answer = change(app.test_client(), PASSWORDS["bob"], "a-brand-new-secret",
                                username="bob")  # fmt: skip
            own_slapd.process.send_signal(signal.SIGCONT)
            assert [guess.result().status_code for guess in guesses] == [401, 401]
    finally:
        own_slapd.process.send_signal(signal.SIGCONT)
        app.extensions["portal.directory"].close()
    assert answer.status_code == 503, answer.get_data(as_text=True)
    assert "The directory is not answering" in answer.get_data(as_text=True)
    event = "login.throttled" if form == "sign-in" else "password.change_failed"
    [refused] = [line for line in audit_lines(event) if line.get("directory_hung")]
    assert refused["user"] == "bob", refused
    assert len(audit_lines("login.failure")) == 2  # the guesses only: bob's never reached it
