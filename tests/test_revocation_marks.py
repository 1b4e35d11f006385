"""Revocation marks cannot be pushed out by other people's sign-ins, nor reset through Redis.

Real slapd and redis-server. The marks live apart from the user cache (portal.signin.revocations):
SimpleCache may prune its entries past CACHE_THRESHOLD and Redis may evict entries with a TTL
under a volatile-* maxmemory policy, but neither may drop a mark.
"""

from __future__ import annotations

import pytest
import redis

from portal.signin.revocations import MAX_ENDED_PER_PERSON, MemoryMarks
from tests.conftest import AuthActions
from tests.test_sessions import is_signed_in, remember_only, signed_in


def churn(app, cycles: int) -> None:
    """Someone else signs in and out again and again (each leaves marks and cache entries)."""
    for _ in range(cycles):
        other = signed_in(app, "frank", remember=True)
        AuthActions(other).logout()


@pytest.mark.parametrize("everywhere", [False, True])
def test_other_peoples_sign_outs_cannot_push_out_a_revocation(slapd, build_app, everywhere):
    """CACHE_THRESHOLD 40 and 60 sign-in/sign-out cycles of frank's: bob's signed-out
    "keep me signed in" cookie still opens nothing."""
    app = build_app(slapd, CACHE_THRESHOLD=40)
    bob = signed_in(app, "bob", remember=True)
    stolen = remember_only(app, bob)
    assert is_signed_in(stolen)
    AuthActions(bob).logout(everywhere=everywhere)
    assert not is_signed_in(stolen)

    churn(app, 60)

    assert not is_signed_in(remember_only(app, bob))
    assert not is_signed_in(stolen)


def test_redis_marks_have_no_ttl_and_survive_volatile_eviction(slapd, build_app, own_redis):
    """Under maxmemory-policy volatile-lru with memory full of cache entries, Redis evicts the
    entries (they have a TTL) and keeps the marks (they have none)."""
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)
    bob = signed_in(app, "bob", remember=True)
    stolen = remember_only(app, bob)
    AuthActions(bob).logout()
    client = redis.Redis.from_url(own_redis.url)
    [marks_key] = client.keys("portal:marks:*")
    assert client.ttl(marks_key) == -1
    assert client.ttl("portal:user:frank") == -2  # not cached yet
    used = client.info("memory")["used_memory"]
    client.config_set("maxmemory-policy", "volatile-lru")
    client.config_set("maxmemory", str(used + 2 * 1024 * 1024))
    filler = client.pipeline(transaction=False)
    for number in range(20_000):  # what many people's cache entries would do
        filler.set(f"portal:user:filler-{number}", "x" * 200, ex=300)
    filler.execute()
    assert client.info("stats")["evicted_keys"] > 0, "nothing was evicted: no pressure"
    assert client.exists(marks_key)
    assert not is_signed_in(stolen)
    client.close()


def test_a_mark_reset_through_redis_does_not_bring_a_cookie_back(slapd, build_app, own_redis):
    """Whoever can write to Redis sets every mark the portal wrote to 0 (or garbage): the
    revoked remember-me cookie stays revoked (a mark that does not verify ends the sign-in)."""
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)
    bob = signed_in(app, "bob", remember=True)
    stolen = remember_only(app, bob)
    AuthActions(bob).logout(everywhere=True)
    client = redis.Redis.from_url(own_redis.url)
    marks = [key for key in client.scan_iter("portal:*") if b":user:" not in key]
    assert marks, "no mark was written"
    for key in marks:
        if client.type(key) == b"hash":
            client.hset(key, mapping=dict.fromkeys(client.hkeys(key), "0"))
        else:
            client.set(key, "0")
    assert not is_signed_in(stolen)
    for key in marks:
        if client.type(key) == b"hash":
            client.hset(key, mapping=dict.fromkeys(client.hkeys(key), "garbage"))
        else:
            client.set(key, "garbage")
    assert not is_signed_in(stolen)
    client.close()


def test_a_mark_copied_from_another_person_does_not_verify(slapd, build_app, own_redis):
    """Marks are bound to their key and field: frank's copied into bob's hash ends bob's too
    (it fails closed), and never passes for bob's own mark."""
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)
    frank = signed_in(app, "frank", remember=True)
    AuthActions(frank).logout(everywhere=True)
    bob = signed_in(app, "bob", remember=True)
    client = redis.Redis.from_url(own_redis.url)
    before = client.hget("portal:marks:frank", "before")
    client.hset("portal:marks:bob", "before", before)
    assert not is_signed_in(bob)
    client.close()


def test_many_signed_out_logins_of_one_person_stay_bounded_and_ended():
    """Past MAX_ENDED_PER_PERSON ended marks the oldest fold into the before mark: memory stays
    bounded and every one of those sign-ins stays ended."""
    now = [1_000_000]
    marks = MemoryMarks(clock=lambda: now[0])
    for number in range(MAX_ENDED_PER_PERSON * 3):
        now[0] += 10
        marks.end("bob", f"sid-{number}", issued=now[0], expires=now[0] + 10**9)
    person = marks._people["bob"]
    assert len(person.ended) <= MAX_ENDED_PER_PERSON
    for number in range(MAX_ENDED_PER_PERSON * 3):
        found = marks.read("bob", f"sid-{number}")
        issued = 1_000_000 + 10 * (number + 1)
        assert found.ended or (found.before is not None and issued <= found.before), number


def test_expired_marks_are_forgotten():
    """A mark lasts as long as the sign-ins it ends, then memory is given back."""
    now = [1_000]
    marks = MemoryMarks(clock=lambda: now[0])
    marks.end("bob", "sid", issued=900, expires=2_000)
    marks.revoke("erin", before=1_000, until=3_000)
    now[0] = 5_000
    marks.sweep()
    assert marks._people == {}


def test_marks_signed_with_a_dropped_key_end_old_sign_ins_but_lock_nobody_out(
    slapd, build_app, own_redis
):
    """bob signed out everywhere under the old key; the key is rotated without a fallback:
    his new sign-in works at once and keeps working (the unreadable mark is written again)."""
    before = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                       SECRET_KEY="old-secret-key-" + "a" * 32)  # fmt: skip
    AuthActions(signed_in(before, "bob", remember=True)).logout(everywhere=True)
    after = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                      SECRET_KEY="new-secret-key-" + "b" * 32)  # fmt: skip
    bob = signed_in(after, "bob")
    assert [is_signed_in(bob) for _ in range(3)] == [True] * 3


def test_a_forged_ended_mark_stays_ended_after_the_next_write(slapd, build_app, own_redis):
    """An ended mark overwritten with garbage is not dropped by the person's next sign-out:
    the sign-in it ended stays ended."""
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)
    first = signed_in(app, "bob", remember=True)
    stolen = remember_only(app, first)
    AuthActions(first).logout()
    client = redis.Redis.from_url(own_redis.url)
    [field] = client.hkeys("portal:marks:bob")
    client.hset("portal:marks:bob", field, "garbage")
    AuthActions(signed_in(app, "bob")).logout()  # rewrites bob's marks
    assert not is_signed_in(stolen)
    client.close()


def test_expired_redis_marks_are_swept_away(slapd, build_app, own_redis, clock):
    """A sweep rewrites each person's hash without the expired marks: nothing is left."""
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                    SESSION_MAX_AGE_HOURS=1, REMEMBER_COOKIE_DAYS=1)  # fmt: skip
    AuthActions(signed_in(app, "bob")).logout()
    client = redis.Redis.from_url(own_redis.url)
    assert client.exists("portal:marks:bob")
    clock.advance(2 * 86400)
    with app.app_context():
        from portal import accounts

        assert accounts.marks().sweep() == 1
    assert not client.exists("portal:marks:bob")
    client.close()


@pytest.mark.parametrize("replace", ["string", "list"])
def test_a_marks_key_replaced_by_another_type_fails_closed(slapd, build_app, own_redis, replace):
    """Someone replaces bob's marks hash with a string or a list: his signed-out cookie stays
    out, and his next sign-out is recorded again (the key is put right)."""
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)
    first = signed_in(app, "bob", remember=True)
    stolen = remember_only(app, first)
    AuthActions(first).logout()
    client = redis.Redis.from_url(own_redis.url)
    client.delete("portal:marks:bob")
    if replace == "string":
        client.set("portal:marks:bob", "x")
    else:
        client.lpush("portal:marks:bob", "x")
    assert not is_signed_in(stolen)
    assert client.type("portal:marks:bob") == b"hash"
    again = signed_in(app, "bob")
    assert is_signed_in(again)
    answer = AuthActions(again).logout()
    assert answer.headers["Location"].endswith("signed_out=1")
    client.close()


def test_a_cache_entry_replaced_by_another_type_is_a_miss(slapd, build_app, own_redis):
    """A hash planted at the person's cache key is read as a miss (the directory is asked);
    the revocation marks are still checked."""
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)
    first = signed_in(app, "bob", remember=True)
    stolen = remember_only(app, first)
    AuthActions(first).logout()
    client = redis.Redis.from_url(own_redis.url)
    client.hset("portal:user:bob", "a", "b")
    assert not is_signed_in(stolen)
    assert is_signed_in(signed_in(app, "bob"))
    client.close()


@pytest.mark.parametrize("persistent", [False, True], ids=["data lost", "data kept"])
def test_a_redis_that_lost_its_data_does_not_bring_a_signed_out_cookie_back(
    slapd, build_app, persistent
):
    """Redis restarted without persistence has lost every mark: bob's signed-out "keep me
    signed in" cookie, copied to another instance, worked again there and here. Now a Redis
    that lost the marks' start time ends every sign-in issued before it (alice signs in again,
    once, and is then signed in everywhere); a Redis that kept its data signs nobody out."""
    from portal.testing.redis import RedisServer

    server = RedisServer(persistent=persistent).start()
    try:
        settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": server.url}
        here, elsewhere = build_app(slapd, **settings), build_app(slapd, **settings)
        bob = signed_in(here, "bob", remember=True)
        stolen = remember_only(elsewhere, bob)
        alice = signed_in(here, "alice")
        AuthActions(bob).logout()
        assert not is_signed_in(stolen)
        server.stop()
        server.start()
        assert not is_signed_in(stolen), "the signed-out cookie is back"
        assert not is_signed_in(remember_only(here, bob))
        assert is_signed_in(alice) is persistent
        again = signed_in(elsewhere, "alice")
        assert is_signed_in(again)
        assert is_signed_in(remember_only(here, signed_in(elsewhere, "bob", remember=True)))
    finally:
        server.cleanup()


@pytest.mark.parametrize("replaced", ["garbage", "another type"])
def test_a_marks_start_replaced_through_redis_fails_closed_once(slapd, build_app, own_redis,
                                                                replaced):  # fmt: skip
    """The time Redis has kept marks since, replaced by garbage or by a key of another type:
    every sign-in so far ends (as a mark that does not verify), it is written again valid, and
    the next sign-in stays signed in."""
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)
    alice = signed_in(app, "alice")
    client = redis.Redis.from_url(own_redis.url)
    assert client.exists("portal:marks-since")
    client.delete("portal:marks-since")
    if replaced == "garbage":
        client.set("portal:marks-since", "0")
    else:
        client.hset("portal:marks-since", "t", "0")
    assert not is_signed_in(alice)
    again = signed_in(app, "alice")
    assert is_signed_in(again) and is_signed_in(again)
    assert client.type("portal:marks-since") == b"string"
    client.close()


def test_two_processes_that_find_the_marks_start_missing_agree_on_one(slapd, build_app,
                                                                       own_redis):  # fmt: skip
    """Two processes read "no marks' start" at once; the first writes its time. The second,
    whose write then finds one there, goes by that time, not its own a moment later (which
    would end, once, the sign-ins made in between)."""
    from portal import accounts

    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": own_redis.url}
    first, second = build_app(slapd, **settings), build_app(slapd, **settings)
    with first.app_context():
        written = accounts.marks().since(None)
    with second.app_context():
        later = accounts.marks()
        later._clock = lambda: written + 60_000  # its own "now" is a minute on
        assert later.since(None) == written


def test_a_marks_start_redis_refuses_to_store_still_fails_closed(slapd, build_app, own_redis):
    """The marks' start is missing and Redis refuses writes (full under noeviction): alice's
    signed-out-everywhere cookie stays refused (it came back: the refused write was taken for
    "Redis is down", where marks are not read), a sign-in made meanwhile stands while it lasts,
    and the start is written once Redis takes it again: the present moment, as other processes
    went by moments of their own (the sign-ins made meanwhile end, once)."""
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                    THROTTLE_STORAGE_URL="memory://")  # fmt: skip
    alice = signed_in(app, "alice", remember=True)
    AuthActions(signed_in(app, "alice")).logout(everywhere=True)
    assert not is_signed_in(alice)
    client = redis.Redis.from_url(own_redis.url)
    client.delete("portal:marks-since")
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    try:
        with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
            client.set("portal:anything", "x")
        assert client.exists("portal:marks:alice"), "the marks are still there to read"
        assert not is_signed_in(alice) and not is_signed_in(remember_only(app, alice))
        meanwhile = signed_in(app, "bob")
        assert is_signed_in(meanwhile) and is_signed_in(meanwhile)
    finally:
        client.config_set("maxmemory", "0")
    assert not is_signed_in(meanwhile)
    assert client.exists("portal:marks-since")
    assert not is_signed_in(alice)
    again = signed_in(app, "bob")
    assert is_signed_in(again) and is_signed_in(again)
    client.close()


def test_a_refusal_that_is_over_brings_back_no_sign_in_a_later_loss_took(
    slapd, build_app, own_redis
):
    """One process was refused the marks' start once; Redis then took it from another, alice
    signed out everywhere, and Redis lost its data. The first process writes the start anew as
    the present moment: the moment kept from its refusal, written instead, came before alice's
    sign-in, and her copied cookie, whose mark was lost, worked again."""
    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": own_redis.url,
                "THROTTLE_STORAGE_URL": "memory://"}  # fmt: skip
    first, second = build_app(slapd, **settings), build_app(slapd, **settings)
    bob = signed_in(first, "bob")
    client = redis.Redis.from_url(own_redis.url)
    client.delete("portal:marks-since")
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    try:
        assert not is_signed_in(bob)  # refused: the first process keeps that moment
    finally:
        client.config_set("maxmemory", "0")
    alice = signed_in(second, "alice", remember=True)  # the second process writes the start
    assert client.exists("portal:marks-since")
    AuthActions(signed_in(second, "alice")).logout(everywhere=True)
    assert not is_signed_in(remember_only(second, alice))
    client.flushall()  # Redis loses its data, the marks with it
    # The first process has read nothing since its refusal: it still holds that moment.
    assert not is_signed_in(remember_only(first, alice)), "a sign-in whose mark was lost is back"
    client.close()
