"""Revocation marks cannot be pushed out by other people's sign-ins, nor reset through Redis.

Real slapd and redis-server. The marks live apart from the user cache (portal.revocations):
SimpleCache may prune its entries past CACHE_THRESHOLD and Redis may evict entries with a TTL
under a volatile-* maxmemory policy, but neither may drop a mark.
"""

from __future__ import annotations

import pytest
import redis

from portal.revocations import MAX_ENDED_PER_PERSON, MemoryMarks
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
    assert marks.count() == 0
