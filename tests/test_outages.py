"""The portal through a directory or Redis outage: stale grace, the 503 page, a cheap cache
outage, sign-outs that survive it. Real slapd and redis-server, stopped, frozen and killed."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import redis

from portal import accounts
from tests.conftest import ROOT, AuthActions, make_app, session_username
from tests.test_metrics import scrape
from tests.test_sessions import copy_cookies, is_signed_in, signed_in

TTL = 60


def test_a_signed_in_person_goes_on_through_a_directory_outage_within_the_grace(own_slapd, clock):
    """The directory stops and alice's entry is due: she keeps working from it (the page says
    so, the metric counts it), admin pages but the status page wait for the directory, and once
    the grace is over she gets the 503 page, from which she can sign out."""
    app = make_app(own_slapd, USER_CACHE_TTL=TTL, USER_STALE_GRACE=600)
    alice, erin = signed_in(app, "alice"), signed_in(app, "erin")
    own_slapd.stop()
    clock.advance(TTL + 1)
    before = scrape(app)
    page = alice.get("/pages/engineering")
    assert page.status_code == 200
    assert "The company directory is not answering" in page.get_data(as_text=True)
    assert scrape(app).delta(before, "portal_user_loads_total", source="stale") == 1
    assert alice.get("/pages/finance").status_code == 403, "no more rights than she had"
    # The status page acts on nobody and is what the on-call engineer needs now; the pages
    # that act on other people wait for the directory.
    status = erin.get("/admin/status")
    assert status.status_code == 200
    shown = status.get_data(as_text=True)
    assert "The company directory is not answering" in shown
    assert '<p class="summary bad" role="status">Directory: 1 of 1 server failing</p>' in shown
    assert erin.get("/admin/users/alice").status_code == 503
    assert erin.get("/admin/users?username=alice").status_code == 503
    clock.advance(600)
    assert erin.get("/admin/status").status_code == 503, "the grace is over for it too"
    closed = alice.get("/")
    assert closed.status_code == 503
    body = closed.get_data(as_text=True)
    assert 'action="/logout"' in body and 'href="/"' not in body.split('<main id="content">')[1]
    token = body.split('name="csrf_token" value="')[1].split('"')[0]
    assert alice.post("/logout", data={"csrf_token": token}).status_code == 302
    assert session_username(alice) is None
    app.extensions["portal.directory"].close()


def test_without_grace_the_outage_is_a_503_at_once(own_slapd, clock):
    """USER_STALE_GRACE = 0: due entry, no directory, the 503 page."""
    app = make_app(own_slapd, USER_CACHE_TTL=TTL, USER_STALE_GRACE=0)
    alice = signed_in(app, "alice")
    own_slapd.stop()
    clock.advance(TTL + 1)
    assert alice.get("/").status_code == 503
    app.extensions["portal.directory"].close()


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_with_redis_down_the_directory_sees_one_read_per_person(
    slapd, own_redis, frozen_breakers, fault
):
    """Redis killed (or frozen by SIGSTOP) while three people browse: 90 page views cost one
    directory read (entry and groups: two searches, as slapd counts them) per person, and only
    one request waits for the frozen Redis."""
    app = make_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                   THROTTLE_STORAGE_URL="memory://")  # fmt: skip
    people = {name: signed_in(app, name) for name in ("alice", "bob", "frank")}
    if fault == "kill":
        own_redis.process.kill()
        own_redis.process.wait()
    else:
        own_redis.process.send_signal(signal.SIGSTOP)
    before = slapd.counters()
    for _ in range(30):
        for client in people.values():
            assert client.get("/").status_code == 200
    assert slapd.counters()["search"] - before["search"] == 2 * len(people)
    with app.app_context():
        from portal import accounts

        guard = accounts.app_state(app).guard
        assert guard.breaker.snapshot().failures == 1, "one wait on Redis, then it is let be"
    app.extensions["portal.directory"].close()


def test_a_sign_out_while_redis_is_down_holds_here_and_reaches_redis_after(
    slapd, own_redis, frozen_breakers
):
    """bob signs out while Redis is down: the page says it could not be recorded everywhere,
    this process refuses the copied cookie at once, and once Redis is back the mark is written
    there, so another instance refuses it too."""
    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": own_redis.url,
                "THROTTLE_STORAGE_URL": "memory://"}  # fmt: skip
    here, elsewhere = make_app(slapd, **settings), make_app(slapd, **settings)
    bob = signed_in(here, "bob", remember=True)
    thief = elsewhere.test_client()
    thief.environ_base["REMOTE_ADDR"] = "10.0.0.1"
    copy_cookies(bob, thief)
    copy_here = here.test_client()
    copy_here.environ_base["REMOTE_ADDR"] = "10.0.0.1"
    copy_cookies(bob, copy_here)
    own_redis.stop()
    answer = AuthActions(bob).logout()
    assert answer.headers["Location"].endswith("signed_out=incomplete")
    assert not is_signed_in(copy_here), "this process knows"
    own_redis.start()
    frozen_breakers.now += 2  # past the back-off: the next use of Redis probes it
    assert not is_signed_in(copy_here)  # Redis answers; the kept mark is written there
    assert not is_signed_in(thief), "the other instance reads it from Redis"
    client = redis.Redis.from_url(own_redis.url)
    assert client.exists("portal:marks:bob")
    client.close()
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


def _bob_and_a_copy_elsewhere(slapd, own_redis):
    # Two instances sharing Redis: bob signed in on `here`, a copy of his cookie at `elsewhere`.
    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": own_redis.url,
                "THROTTLE_STORAGE_URL": "memory://"}  # fmt: skip
    here, elsewhere = make_app(slapd, **settings), make_app(slapd, **settings)
    bob = signed_in(here, "bob")
    thief = elsewhere.test_client()
    thief.environ_base["REMOTE_ADDR"] = "10.0.0.1"
    copy_cookies(bob, thief)
    return here, elsewhere, bob, thief


def _signed_out_while_redis_is_down(slapd, own_redis):
    # bob signs out on `here` while Redis is stopped; a copy of his cookie waits at `elsewhere`.
    here, elsewhere, bob, thief = _bob_and_a_copy_elsewhere(slapd, own_redis)
    own_redis.stop()
    assert AuthActions(bob).logout().headers["Location"].endswith("signed_out=incomplete")
    return here, elsewhere, thief


def _marked_in_redis(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        return bool(client.exists("portal:marks:bob"))
    finally:
        client.close()


def test_a_kept_sign_out_reaches_redis_without_a_request_to_the_process_keeping_it(
    slapd, own_redis, frozen_breakers
):
    """The sign-out kept while Redis was down is written once Redis answers although the
    process keeping it serves no request (it waited for that process's next signed-in request:
    the other instance let the copied cookie in for as long)."""
    here, elsewhere, thief = _signed_out_while_redis_is_down(slapd, own_redis)
    own_redis.start()
    frozen_breakers.now += 2  # past the back-off
    deadline = time.monotonic() + 20
    while not _marked_in_redis(own_redis.url) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the process's own retry, bounded; no timing asserted
    assert _marked_in_redis(own_redis.url)
    assert not is_signed_in(thief)
    with here.app_context():
        assert accounts.app_state(here).guard.waiting == []
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


def test_the_metrics_say_redis_is_left_alone_and_a_sign_out_waits(
    slapd, own_redis, frozen_breakers
):
    """Redis down: /metrics said nothing of it (the on-call engineer's alert had only the
    readiness probe). Now portal_cache_down is 1 and the waiting sign-out is counted, both
    back to 0 once Redis answers and the sign-out is written."""
    here, elsewhere, thief = _signed_out_while_redis_is_down(slapd, own_redis)
    down = scrape(here)
    assert down.value("portal_cache_down") == 1
    assert down.value("portal_cache_writes_waiting", kind="sign-out") >= 1
    own_redis.start()
    frozen_breakers.now += 2  # past the back-off
    deadline = time.monotonic() + 20
    while not _marked_in_redis(own_redis.url) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the process's own retry, bounded; no timing asserted
    up = scrape(here)
    assert up.value("portal_cache_down") == 0
    assert up.value("portal_cache_writes_waiting", kind="sign-out") == (
        down.value("portal_cache_writes_waiting", kind="sign-out") - 1)  # fmt: skip
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


def test_a_process_ending_writes_its_kept_sign_outs_or_logs_each(
    slapd, own_redis, frozen_breakers, caplog
):
    """A worker ends (a reload) holding a sign-out Redis did not take: gunicorn's worker_exit
    writes it (the reload dropped it, and the copied cookie worked everywhere from then on);
    what still cannot be written is logged, naming the person."""
    import runpy
    from types import SimpleNamespace

    hooks = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))
    here, elsewhere, thief = _signed_out_while_redis_is_down(slapd, own_redis)
    with here.app_context():
        assert accounts.app_state(here).guard.waiting == ["a sign-out of bob"]
    assert accounts.write_waiting_marks(here) == ["a sign-out of bob"]  # Redis is still down
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(line.startswith("a sign-out of bob could not be written to ") for line in said)
    own_redis.start()  # its breaker stays open (frozen): only the exit's write reaches it
    hooks["worker_exit"](None, SimpleNamespace(wsgi=here))
    assert _marked_in_redis(own_redis.url)
    assert not is_signed_in(thief)
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


def test_sign_outs_made_before_a_redis_outage_still_hold_through_it(
    slapd, own_redis, frozen_breakers
):
    """bob signs out on A and alice signs out everywhere on A, Redis up; B refuses a copy of
    bob's cookie. Then Redis stops: the copies stay refused where the sign-out was made or read
    (with Redis unreadable no mark counted, and every copy was let in again)."""
    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": own_redis.url,
                "THROTTLE_STORAGE_URL": "memory://"}  # fmt: skip
    here, elsewhere = make_app(slapd, **settings), make_app(slapd, **settings)

    def copy_of(person, app):
        copy = app.test_client()
        copy.environ_base["REMOTE_ADDR"] = "10.0.0.1"
        copy_cookies(person, copy)
        return copy

    bob, alice = signed_in(here, "bob"), signed_in(here, "alice")
    bob_here, bob_elsewhere, alice_here = (copy_of(bob, here), copy_of(bob, elsewhere),
                                           copy_of(alice, here))  # fmt: skip
    assert AuthActions(bob).logout().status_code == 302
    with here.test_request_context():
        assert accounts.revoke_all("alice")
    assert not is_signed_in(bob_elsewhere), "read from Redis"
    own_redis.stop()
    assert not is_signed_in(bob_elsewhere), "read before the outage"
    assert not is_signed_in(bob_here) and not is_signed_in(alice_here), "made here"
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


def test_an_error_redis_answers_a_replay_with_leaves_it_read_again(
    slapd, own_redis, frozen_breakers
):
    """Redis comes back full (noeviction): the kept sign-out's replay is refused with an out of
    memory error. That is Redis answering: reads go on at once (the replay held the breaker's
    one probe, never reported it, and every read was refused for 30 s), the sign-out waits,
    and it is written once Redis takes writes."""
    here, elsewhere, thief = _signed_out_while_redis_is_down(slapd, own_redis)
    own_redis.start()
    client = redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # every write refused: OOM
    guard = accounts.app_state(here).guard
    frozen_breakers.now += 2  # past the back-off: the replay thread probes with its write

    def refused_writes() -> int:
        return int(client.info("errorstats").get("errorstat_OOM", {}).get("count", 0))

    deadline = time.monotonic() + 20
    while not refused_writes() and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the thread's try, bounded; no timing asserted
    assert refused_writes(), "the replay thread tried its write"
    # Refused reads now would be the breaker's probe left taken (the frozen clock never gives
    # it up); the poll only covers the moment between Redis's answer and the thread reading it.
    deadline = time.monotonic() + 10
    while guard.call("ping", client.ping) != (True, True) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert guard.call("ping", client.ping) == (True, True)
    assert guard.waiting == ["a sign-out of bob"]
    client.config_set("maxmemory", 0)
    deadline = time.monotonic() + 20
    while guard.waiting and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _marked_in_redis(own_redis.url) and not is_signed_in(thief)
    client.close()
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


def test_a_kept_sign_out_is_written_when_the_process_ends_whatever_serves_it(
    slapd, own_redis, frozen_breakers, monkeypatch
):
    """Served without the shipped gunicorn config (no worker_exit), a process ending with a
    kept sign-out still writes it: the guard registers that with the interpreter's exit (a
    reload of plain `gunicorn -w 2` dropped it, silently). The registration is captured and
    called, as the interpreter would call it."""
    from portal.cache import guard as cache_guard

    at_exit = []
    monkeypatch.setattr(cache_guard.atexit, "register", at_exit.append)
    here, elsewhere, thief = _signed_out_while_redis_is_down(slapd, own_redis)
    own_redis.start()  # its breaker stays open (frozen): only the exit's write reaches it
    assert len(at_exit) == 1
    at_exit[0]()
    assert _marked_in_redis(own_redis.url) and not is_signed_in(thief)
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


def test_a_process_ending_mid_replay_still_names_the_sign_out_it_holds(caplog):
    """The replay thread is writing a kept sign-out (Redis hung) when the process ends: the
    end finds it still waiting and logs it by name (it had been taken off the list for the
    write, so the end found nothing and said nothing). The hung write is injected."""
    from portal.cache.guard import CacheGuard
    from portal.signin.revocations import MemoryMarks

    guard = CacheGuard(True, 60, MemoryMarks())
    writing, release = threading.Event(), threading.Event()

    def hung_write():
        writing.set()
        release.wait(30)

    guard.replay_later(hung_write, "a sign-out of bob", ends_sign_ins=True)
    assert writing.wait(20), "the replay thread tries the write"
    assert guard.flush(wait=0.2) == ["a sign-out of bob"]
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(line.startswith("a sign-out of bob could not be written") for line in said)
    release.set()


def test_the_marks_remembered_for_an_outage_are_sign_outs_not_every_sign_in(
    slapd, own_redis, frozen_breakers, monkeypatch
):
    """Only sign-ins with marks are remembered: bob's sign-out, read on B, still counts there
    through an outage after three other people browsed (each sign-in read was remembered, for
    everyone has the marks' start as a before time, and pushed bob's out)."""
    from portal.cache import guard as cache_guard

    monkeypatch.setattr(cache_guard, "MARKS_REMEMBERED", 4)
    here, elsewhere, bob, copy = _bob_and_a_copy_elsewhere(slapd, own_redis)
    assert AuthActions(bob).logout().status_code == 302
    assert not is_signed_in(copy)  # read on B: remembered there
    for name in ("alice", "erin", "frank"):
        person = signed_in(elsewhere, name)
        for _ in range(3):
            assert is_signed_in(person)
    own_redis.stop()
    assert not is_signed_in(copy)
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


ALICE_DN = "uid=alice,ou=people,dc=example,dc=org"


@pytest.mark.parametrize("change", ["deleted", "disabled"])
def test_a_person_the_directory_said_is_gone_is_not_served_from_the_grace(own_slapd, clock, change):
    """alice's entry is due; the directory says she is gone (deleted, or matched by the
    disabled filter), so she is signed out; then the directory stops. Her old entry must not
    come back for the grace: her copied cookie is refused."""
    app = make_app(own_slapd, USER_CACHE_TTL=TTL, USER_STALE_GRACE=600,
                   LDAP_DISABLED_FILTER="(description=disabled)")  # fmt: skip
    alice = signed_in(app, "alice", remember=True)
    copy = app.test_client()
    copy.environ_base["REMOTE_ADDR"] = "10.0.0.1"
    copy_cookies(alice, copy)
    clock.advance(TTL + 1)
    if change == "deleted":
        own_slapd.delete(ALICE_DN)
    else:
        own_slapd.modify(
            f"dn: {ALICE_DN}\nchangetype: modify\nadd: description\ndescription: disabled\n"
        )
    assert not is_signed_in(alice), "the directory answered: she is gone"
    own_slapd.stop()
    assert not is_signed_in(copy), "an outage does not bring her old entry back"
    app.extensions["portal.directory"].close()


def test_an_entry_from_a_clock_far_ahead_is_not_fresh(slapd, clock):
    """An entry stamped an hour in the future (another instance's clock wrong) is read again
    from the directory at once, instead of staying fresh for an hour more than USER_CACHE_TTL."""
    import json

    from portal import accounts

    app = make_app(slapd, USER_CACHE_TTL=TTL)
    alice = signed_in(app, "alice")
    with app.app_context():
        entry = accounts.cached_attributes("alice")
        entry["fetched_at"] += 3600
        entry["groups"] = ["staff", "finance"]  # what the wrong instance had read
        state = accounts.app_state(app)
        state.backend.set(accounts.cache_key("alice"), json.dumps(entry), 600)
    before = slapd.counters()["search"]
    assert alice.get("/pages/finance").status_code == 403, "the directory's answer is used"
    assert slapd.counters()["search"] > before
    app.extensions["portal.directory"].close()


def test_a_sign_out_during_the_grace_ends_the_copies(own_slapd, clock):
    """The directory is down and alice works from the grace; she signs out: a copy of her
    cookie is refused (the marks are read on the stale path too)."""
    app = make_app(own_slapd, USER_CACHE_TTL=TTL, USER_STALE_GRACE=600)
    alice = signed_in(app, "alice", remember=True)
    copy = app.test_client()
    copy.environ_base["REMOTE_ADDR"] = "10.0.0.1"
    copy_cookies(alice, copy)
    own_slapd.stop()
    clock.advance(TTL + 1)
    assert alice.get("/").status_code == 200, "served from the grace"
    assert AuthActions(alice).logout().status_code == 302
    assert not is_signed_in(copy)
    app.extensions["portal.directory"].close()


REDIS = {"CACHE_TYPE": "RedisCache", "THROTTLE_STORAGE_URL": "memory://"}


def test_a_write_redis_refuses_does_not_stop_the_marks_being_read(slapd, own_redis, clock):
    """Redis full (noeviction): it refuses writes and still answers reads. A refused write
    (alice's refresh) must not make this process stop reading marks: bob's revoked cookie
    stays refused."""
    here = make_app(slapd, CACHE_REDIS_URL=own_redis.url, USER_CACHE_TTL=TTL, **REDIS)
    elsewhere = make_app(slapd, CACHE_REDIS_URL=own_redis.url, USER_CACHE_TTL=TTL, **REDIS)
    bob = signed_in(here, "bob", remember=True)
    thief = here.test_client()
    thief.environ_base["REMOTE_ADDR"] = "10.0.0.1"
    copy_cookies(bob, thief)
    alice = signed_in(here, "alice")
    other = signed_in(elsewhere, "bob")
    assert (
        AuthActions(other)
        .logout(everywhere=True)
        .headers["Location"]
        .endswith("signed_out=everywhere")
    )
    assert not is_signed_in(thief)
    client = redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    clock.advance(TTL + 1)  # alice's entry is due: writing her new one is refused
    assert alice.get("/").status_code == 200
    assert not is_signed_in(thief), "the marks in Redis are still read"
    client.config_set("maxmemory", "0")
    client.close()
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


def test_a_gone_entry_redis_missed_is_written_there_when_it_answers(
    own_slapd, own_redis, clock, frozen_breakers
):
    """alice is deleted while Redis is down: the "gone" entry is kept here and written to
    Redis once it answers, so another instance cannot serve her old entry in a later outage."""
    settings = dict(REDIS, CACHE_REDIS_URL=own_redis.url, USER_CACHE_TTL=TTL,
                    USER_STALE_GRACE=600)  # fmt: skip
    here, elsewhere = make_app(own_slapd, **settings), make_app(own_slapd, **settings)
    alice = signed_in(here, "alice", remember=True)
    copy = elsewhere.test_client()
    copy.environ_base["REMOTE_ADDR"] = "10.0.0.1"
    copy_cookies(alice, copy)
    erin = signed_in(here, "erin")
    own_redis.stop()
    clock.advance(TTL + 1)
    own_slapd.delete(ALICE_DN)
    assert not is_signed_in(alice)
    own_redis.start()
    frozen_breakers.now += 10  # past the back-off: the next use of Redis probes it
    assert erin.get("/").status_code == 200  # Redis answers: what it missed is written
    own_slapd.stop()
    assert not is_signed_in(copy), "the other instance reads the gone entry"
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


def test_while_redis_is_down_local_entries_last_cache_fallback_seconds(
    slapd, own_redis, frozen_breakers, monkeypatch
):
    """With Redis killed, alice's entry is read from the directory once, then kept here for
    CACHE_FALLBACK_SECONDS: after that the directory is read again (her groups can change)."""
    from portal.cache import guard as guard_module

    now = [500.0]
    monkeypatch.setattr(guard_module, "_now", lambda: now[0])
    app = make_app(slapd, CACHE_REDIS_URL=own_redis.url, CACHE_FALLBACK_SECONDS=30, **REDIS)
    alice = signed_in(app, "alice")
    own_redis.process.kill()
    own_redis.process.wait()
    before = slapd.counters()["search"]
    for _ in range(5):
        assert alice.get("/").status_code == 200
    assert slapd.counters()["search"] - before == 2, "one read: entry and groups"
    now[0] += 31
    for _ in range(5):
        assert alice.get("/").status_code == 200
    assert slapd.counters()["search"] - before == 4, "read again once, after the 30 s"
    app.extensions["portal.directory"].close()


def test_an_admin_revocation_redis_refuses_is_held_here_and_says_so(slapd, own_redis, audit_lines):
    """Redis refuses writes while erin revokes bob: bob's copies are refused by this server
    at once, and the admin page says the other servers do not know yet (not "nothing was
    revoked", and never "every sign-in has ended")."""
    from tests.conftest import csrf_token_in

    app = make_app(slapd, CACHE_REDIS_URL=own_redis.url, **REDIS)
    bob = signed_in(app, "bob", remember=True)
    erin = app.test_client()
    assert AuthActions(erin).login("erin").status_code == 302
    form = erin.get("/admin/users/bob").get_data(as_text=True)
    client = redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    answer = erin.post("/admin/users/bob/revoke", data={"csrf_token": csrf_token_in(form)})
    assert answer.status_code == 302
    page = erin.get(answer.headers["Location"]).get_data(as_text=True)
    assert "ended on this server only" in page and "Every sign-in of bob has ended" not in page
    assert not is_signed_in(bob)
    [line] = audit_lines("admin.revoke")
    assert line["reason"] == "cache down: held in this process"
    client.config_set("maxmemory", "0")
    client.close()
    app.extensions["portal.directory"].close()


def test_each_kind_of_redis_failure_is_logged_within_the_minute(caplog):
    """A Redis timeout is logged, and Redis refusing a write a moment later is logged too (one
    line a minute for every kind together hid it). The failures are injected."""
    from portal.cache.guard import CacheGuard
    from portal.signin.revocations import MemoryMarks

    guard = CacheGuard(True, 60, MemoryMarks())

    def fails(error):
        def call():
            raise error

        return call

    guard.call("read", fails(redis.exceptions.TimeoutError("Timeout reading from socket")))
    guard.breaker.succeeded()  # Redis answers again
    guard.call("revocation", fails(redis.exceptions.OutOfMemoryError("OOM command not allowed")))
    guard.call("read", fails(redis.exceptions.TimeoutError("Timeout reading from socket")))
    said = [r.getMessage() for r in caplog.records if r.name == "portal.cache.guard"]
    assert [line.split(" failed")[0] for line in said] == [
        "user cache read at redis", "user cache revocation at redis"], said  # fmt: skip
