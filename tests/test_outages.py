"""The portal through a directory or Redis outage: stale grace, the 503 page, a cheap cache
outage, sign-outs that survive it. Real slapd and redis-server, stopped, frozen and killed."""

from __future__ import annotations

import signal

import pytest
import redis

from portal.directory import breaker as breaker_module
from tests.conftest import AuthActions, make_app, session_username
from tests.test_metrics import scrape
from tests.test_sessions import copy_cookies, is_signed_in, signed_in

TTL = 60


@pytest.fixture
def frozen_breakers(monkeypatch):
    """Breakers whose back-off never ends unless the test moves their clock."""

    class Clock:
        now = 1000.0

        def __call__(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr(breaker_module, "_now", clock)
    return clock


def test_a_signed_in_person_goes_on_through_a_directory_outage_within_the_grace(own_slapd, clock):
    """The directory stops and alice's entry is due: she keeps working from it (the page says
    so, the metric counts it), admin pages wait for the directory, and once the grace is over
    she gets the 503 page, from which she can sign out."""
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
    status = erin.get("/admin/status")
    assert status.status_code == 503
    clock.advance(600)
    closed = alice.get("/")
    assert closed.status_code == 503
    body = closed.get_data(as_text=True)
    assert 'action="/logout"' in body and 'href="/"' not in body.split("<main>")[1]
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
