"""Revocation marks: kept apart from the user cache, never evicted by anyone else's activity.

Two kinds of mark end sign-ins before their expiry (portal.logins explains the ids):

- a person's **before** mark: every sign-in of theirs issued at or before this time has ended
  ("sign out everywhere", an administrator's revoke, a password change made here);
- one sign-in's **ended** mark: it was signed out, so copies of its cookies stop working.

A mark must outlive every sign-in it ends, and nothing but time may remove it: if other people's
sign-ins could push it out (as a cache that prunes its oldest entries would), a revoked
"keep me signed in" cookie would work again. So marks never live in the user cache:

- `MemoryMarks` (SimpleCache, one process): a dict per person, pruned only of expired marks. A
  person keeps at most MAX_ENDED_PER_PERSON ended marks; beyond that the oldest are folded into
  the person's before mark, which ends those sign-ins and any older one (never fewer).
- `RedisMarks` (RedisCache, every worker and instance): one Redis hash per person,
  ``<CACHE_KEY_PREFIX>marks:<username>``, with **no expiry on the key**, so a ``volatile-*``
  maxmemory policy never evicts it (and ``noeviction`` refuses writes instead of dropping
  anything); expired fields are removed whenever the person's hash is written. Every field is
  signed like the cache entries and bound to its key and field. A field that does not verify
  (reset to 0, garbage, copied from another person) ends the sign-in rather than letting it
  through. Whoever can write to Redis can still delete a mark: restrict access to Redis.

Reading a person's cache entry and their two marks is one round trip (a pipeline of GET and
HMGET), the only Redis traffic of a signed-in request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import logins

log = logging.getLogger(__name__)

#: Signed-out but unexpired sign-ins remembered one by one per person.
MAX_ENDED_PER_PERSON = 64
_BEFORE = "before"
_WARNING_INTERVAL = 60.0
# How long a tampered before mark is kept: longer than any sign-in can last.
_LONGEST_MS = 366 * 86400 * 1000


@dataclass(frozen=True)
class Marks:
    """The marks that concern one sign-in: the person's before time (ms) and its own end."""

    before: int | None = None
    ended: bool = False


@dataclass
class _Person:
    before: int | None = None
    before_until: int = 0
    #: sid -> (issued, expires), epoch milliseconds
    ended: dict[str, tuple[int, int]] = field(default_factory=dict)


class MemoryMarks:
    """The marks of this process's sign-ins, in memory (SimpleCache and NullCache)."""

    shared = False

    #: Writes between two sweeps of everyone's expired marks (so memory follows the people
    #: signed in lately, not everyone who ever signed out).
    SWEEP_EVERY = 256

    def __init__(self, clock=None):
        self._people: dict[str, _Person] = {}
        self._lock = threading.Lock()
        self._clock = clock or _now_ms
        self._writes = 0

    def read(self, username: str, sid: str) -> Marks:
        """The marks that concern one sign-in of `username`."""
        now = self._clock()
        with self._lock:
            person = self._people.get(username)
            if person is None:
                return Marks()
            before = person.before if person.before_until > now else None
            ended = person.ended.get(sid)
            return Marks(before, ended is not None and ended[1] > now)

    def end(self, username: str, sid: str, issued: int, expires: int) -> bool:
        """Mark one sign-in as ended until it would have expired."""
        with self._lock:
            person = self._people.setdefault(username, _Person())
            person.ended[sid] = (issued, expires)
            _prune(person, self._clock())
            if len(person.ended) > MAX_ENDED_PER_PERSON:
                _fold_oldest(person)
            self._written()
        return True

    def revoke(self, username: str, before: int, until: int) -> bool:
        """End every sign-in of `username` issued at or before `before`; keep it until `until`."""
        with self._lock:
            person = self._people.setdefault(username, _Person())
            _raise_before(person, before, until)
            _prune(person, self._clock())
            self._written()
        return True

    def sweep(self) -> None:
        """Forget every expired mark (and people left with none)."""
        with self._lock:
            self._sweep()

    def _written(self) -> None:
        self._writes += 1
        if self._writes % self.SWEEP_EVERY == 0:
            self._sweep()

    def _sweep(self) -> None:
        now = self._clock()
        for username in list(self._people):
            person = self._people[username]
            _prune(person, now)
            if person.before is None and not person.ended:
                del self._people[username]

    def count(self) -> int:
        """How many people have a mark (for the status page)."""
        with self._lock:
            return len(self._people)


class RedisMarks:
    """The marks of every worker's and instance's sign-ins, in Redis (a hash per person)."""

    shared = True

    def __init__(self, backend, clock=None):
        #: portal.cache_backend.SignedRedisCache: its client, key prefix and signer.
        self.backend = backend
        self._clock = clock or _now_ms

    def key(self, username: str) -> str:
        """The Redis key of a person's marks."""
        return self.backend.prefixed("marks:" + username)

    def read_with_entry(self, entry_key: str, username: str, sid: str) -> tuple[Any, Marks]:
        """One round trip: the raw cache entry under `entry_key` and the sign-in's marks."""
        marks_key = self.key(username)
        entry_name = self.backend.prefixed(entry_key)
        pipe = self.backend.client.pipeline(transaction=False)
        pipe.get(entry_name)
        pipe.hmget(marks_key, _BEFORE, _ended_field(sid))
        raw_entry, (raw_before, raw_ended) = pipe.execute()
        entry = self.backend._decode(entry_name, raw_entry)
        return entry, self._marks(marks_key, raw_before, raw_ended, sid)

    def read(self, username: str, sid: str) -> Marks:
        """The marks that concern one sign-in of `username`."""
        key = self.key(username)
        raw_before, raw_ended = self.backend.client.hmget(key, _BEFORE, _ended_field(sid))
        return self._marks(key, raw_before, raw_ended, sid)

    def end(self, username: str, sid: str, issued: int, expires: int) -> bool:
        """Mark one sign-in as ended until it would have expired."""

        def change(person: _Person) -> None:
            person.ended[sid] = (issued, expires)

        return self._write(username, change)

    def revoke(self, username: str, before: int, until: int) -> bool:
        """End every sign-in of `username` issued at or before `before`; keep it until `until`."""
        return self._write(username, lambda person: _raise_before(person, before, until))

    def count(self) -> int:
        """How many people have marks (a SCAN, for the status page)."""
        pattern = _glob_escape(self.backend.prefixed("marks:")) + "*"
        return sum(1 for _ in self.backend.client.scan_iter(match=pattern, count=500))

    def _marks(self, key: str, raw_before, raw_ended, sid: str) -> Marks:
        status, value = self.backend.unseal(f"{key}#{_BEFORE}", raw_before)
        if status == "forged" or (status == "ok" and not _is_time(_get(value, "t"))):
            _warn_forged(key, _BEFORE)
            before = self._clock()  # a mark someone tampered with ends every sign-in so far
        else:
            before = value["t"] if status == "ok" else None
        status, _ = self.backend.unseal(f"{key}#{_ended_field(sid)}", raw_ended)
        if status == "forged":
            _warn_forged(key, _ended_field(sid))
        return Marks(before, status in ("ok", "forged"))

    def _write(self, username: str, change) -> bool:
        # A transaction (WATCH, then MULTI/EXEC, retried on a clash) so two sign-outs of one
        # person at once cannot lose a mark or lower the before time. The whole (small) hash is
        # rewritten, without the fields that have expired.
        key = self.key(username)

        def apply(pipe) -> None:
            stored = pipe.hgetall(key)
            now = self._clock()
            person = self._person(key, stored, now)
            change(person)
            _prune(person, now)
            if len(person.ended) > MAX_ENDED_PER_PERSON:
                _fold_oldest(person)
            fields = self._fields(key, person)
            stale = [name for name in _names(stored) if name not in fields]
            pipe.multi()
            if stale:
                pipe.hdel(key, *stale)
            if fields:
                pipe.hset(key, mapping=fields)

        self.backend.client.transaction(apply, key)
        return True

    def _fields(self, key: str, person: _Person) -> dict[str, bytes]:
        fields = {
            _ended_field(sid): self.backend.seal(
                f"{key}#{_ended_field(sid)}", {"i": issued, "e": expires}, _seconds(expires)
            )
            for sid, (issued, expires) in person.ended.items()
        }
        if person.before is not None:
            value = {"t": person.before, "u": person.before_until}
            fields[_BEFORE] = self.backend.seal(
                f"{key}#{_BEFORE}", value, _seconds(person.before_until)
            )
        return fields

    def _person(self, key: str, stored: dict, now: int) -> _Person:
        person = _Person()
        for name in _names(stored):
            raw = stored.get(name.encode(), stored.get(name))
            status, value = self.backend.unseal(f"{key}#{name}", raw)
            if status == "forged":
                _warn_forged(key, name)
                if name == _BEFORE:  # kept failing closed: everything so far has ended
                    _raise_before(person, now, now + _LONGEST_MS)
            if status != "ok":
                continue
            if name == _BEFORE and _is_time(_get(value, "t")) and _is_time(_get(value, "u")):
                _raise_before(person, value["t"], value["u"])
            elif name.startswith("ended:") and all(_is_time(_get(value, k)) for k in "ie"):
                person.ended[name[len("ended:") :]] = (value["i"], value["e"])
        return person


def _prune(person: _Person, now: int) -> None:
    if person.before is not None and person.before_until <= now:
        person.before, person.before_until = None, 0
    for sid in [sid for sid, (_, expires) in person.ended.items() if expires <= now]:
        del person.ended[sid]


def _fold_oldest(person: _Person) -> None:
    # The oldest ended sign-ins become part of the before mark: they stay ended, and so does
    # any other sign-in of this person older than them (more signed out, never less).
    by_age = sorted(person.ended.items(), key=lambda item: item[1][0])
    dropped = by_age[: len(by_age) - MAX_ENDED_PER_PERSON // 2]
    for sid, (issued, expires) in dropped:
        del person.ended[sid]
        _raise_before(person, issued, expires)


def _raise_before(person: _Person, before: int, until: int) -> None:
    person.before = before if person.before is None else max(person.before, before)
    person.before_until = max(person.before_until, until)


def _ended_field(sid: str) -> str:
    return "ended:" + sid


def _names(stored: dict) -> list[str]:
    return [name.decode() if isinstance(name, bytes) else name for name in stored]


def _seconds(epoch_ms: int) -> int:
    return math.ceil(epoch_ms / 1000)


def _get(value: object, name: str) -> object:
    return value.get(name) if isinstance(value, dict) else None


def _is_time(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _now_ms() -> int:
    return logins.now_ms()


_last_warning = float("-inf")


def _warn_forged(key: str, name: str) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= _WARNING_INTERVAL:
        _last_warning = now
        log.warning("revocation mark %s#%s does not verify: the sign-in is treated as ended",
                    key, name)  # fmt: skip


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
