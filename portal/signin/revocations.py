"""Revocation marks: kept apart from the user cache, never evicted by anyone else's activity.

Two kinds of mark end sign-ins before their expiry (portal.signin.logins explains the ids):

- a person's **before** mark: every sign-in of theirs issued at or before this time has ended
  ("sign out everywhere", an administrator's revoke);
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
  anything); expired fields are removed whenever the person's hash is written, and once an
  hour a process that writes marks sweeps everyone's. Every field is signed like the cache
  entries and bound to its key and field. A field that does not verify (reset to 0, garbage,
  copied from another person, signed with a key no longer listed) ends every sign-in of that
  person made so far, once, rather than letting one through; it is then written again, valid.
  Whoever can write to Redis can still delete a mark: restrict access to Redis.

  A Redis that lost its data (restarted without persistence, flushed, a failover to a replica
  that had nothing) has lost every mark with it: a signed-out or revoked cookie would work
  again. So Redis also holds, beside the marks, the time they have been kept since
  (``<CACHE_KEY_PREFIX>marks-since``, signed, no expiry). When it is missing, the marks may be
  missing too: it is written anew at that moment, and every sign-in issued before it has ended
  (people sign in again, once), failing closed as for a mark that does not verify. When Redis
  refuses to store it (full, a read-only replica) the process goes by the moment it was first
  refused for as long as the refusals go on, and writes the present moment once Redis takes it
  (the sign-ins made meanwhile then end, once: each process went by a moment of its own).

Reading a person's cache entry, their two marks and the time marks have been kept since is one
round trip (a pipeline of GET, HMGET and GET), the only Redis traffic of a signed-in request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from . import logins

log = logging.getLogger(__name__)

#: Signed-out but unexpired sign-ins remembered one by one per person.
MAX_ENDED_PER_PERSON = 64
_BEFORE = "before"
#: Refusals to store the marks' start further apart than this (ms) are not one outage: the
#: start kept from the first is forgotten.
REFUSALS_CONTINUE_MS = 5000
_SINCE = "marks-since"
_WARNING_INTERVAL = 60.0


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


class RedisMarks:
    """The marks of every worker's and instance's sign-ins, in Redis (a hash per person)."""

    shared = True
    #: Seconds between two sweeps of everyone's expired marks by one process (in a thread).
    SWEEP_INTERVAL = 3600.0

    def __init__(self, backend, longest_ms: int, clock=None):
        #: portal.cache.backend.SignedRedisCache: its client, key prefix and signer.
        self.backend = backend
        #: The longest a sign-in can last (REMEMBER_COOKIE_DAYS or SESSION_MAX_AGE_HOURS).
        self.longest_ms = longest_ms
        self._clock = clock or _now_ms
        self._last_sweep = time.monotonic()
        self._sweeping = threading.Lock()
        #: The last "marks since" value read and its time (ms): verified once per value.
        self._since: tuple[bytes, int] | None = None
        #: While Redis refuses to store the start: (the start this process goes by, when it
        #: was last refused), both in ms; else None.
        self._refused: tuple[int, int] | None = None

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
        pipe.get(self.backend.prefixed(_SINCE))
        # Per-command errors come back as values: a key someone replaced by another type
        # (WRONGTYPE) must not be taken for "Redis is down", where the login would stand.
        raw_entry, marks, raw_since = pipe.execute(raise_on_error=False)
        entry = None if isinstance(raw_entry, Exception) else raw_entry
        entry = self.backend.decode_value(entry_name, entry)
        if isinstance(marks, Exception):
            return entry, self._unreadable(username, marks)
        raw_before, raw_ended = marks
        return entry, self._kept_since(self._marks(username, raw_before, raw_ended, sid), raw_since)

    def read(self, username: str, sid: str) -> Marks:
        """The marks that concern one sign-in of `username`."""
        key = self.key(username)
        pipe = self.backend.client.pipeline(transaction=False)
        pipe.hmget(key, _BEFORE, _ended_field(sid))
        pipe.get(self.backend.prefixed(_SINCE))
        marks, raw_since = pipe.execute(raise_on_error=False)
        if isinstance(marks, Exception):
            return self._unreadable(username, marks)
        raw_before, raw_ended = marks
        return self._kept_since(self._marks(username, raw_before, raw_ended, sid), raw_since)

    @property
    def start(self) -> int | None:
        """The before time the marks' start gives every sign-in (see `since`), once read."""
        return self._since[1] - 1 if self._since is not None else None

    def since(self, raw: object) -> int:
        """The time (ms) from which Redis has kept every mark, written now if it is missing
        or does not verify: every sign-in issued before it has ended."""
        if isinstance(raw, bytes) and self._since is not None and self._since[0] == raw:
            self._refused = None
            return self._since[1]
        name = self.backend.prefixed(_SINCE)
        status, value = (
            self.backend.unseal(name, raw) if isinstance(raw, bytes) else ("forged", None)
        )
        if status == "ok" and _is_time(value):
            self._since, self._refused = (raw, value), None
            return value
        now = self._clock()
        # While Redis refuses to store the start (full, a read-only replica), this process goes
        # by the moment it was first refused, so sign-ins made since stand; only while the
        # refusals go on: a moment kept from an earlier outage would let through the sign-ins
        # whose marks a later loss took.
        kept = self._refused
        refusing = kept is not None and now - kept[1] <= REFUSALS_CONTINUE_MS
        if refusing:
            pass  # said when it was first refused, not on every request since
        elif raw is None:
            log.warning("Redis holds no start of the revocation marks (%s): it lost its "
                        "data, or is new; every sign-in before now has ended", name)  # fmt: skip
        else:
            _warn_forged(name, "(the marks' start)")
        try:
            # Always the present moment once stored: other processes went by moments of their
            # own meanwhile, so the sign-ins made while it was refused end, once.
            written = self.backend.client.set(name, self.backend.seal(name, now, None),
                                              nx=raw is None)  # fmt: skip
        except ResponseError as error:
            # Redis answered, and still holds every mark it has: not the "cache down" case,
            # where the sign-in would stand. Fail closed as if the start had been written.
            if not refusing:
                log.warning("Redis refused to store the start of the revocation marks (%s): "
                            "%s; sign-ins before now end all the same, and it is written "
                            "once Redis takes it", name, error)  # fmt: skip
            since = kept[0] if refusing else now
            self._refused = (since, now)
            return since
        self._refused = None
        if written or raw is not None:
            return now
        # Another process wrote it first: its time is the one every process goes by (this
        # process's own, a moment later, would end the sign-ins made in between, once).
        return self.since(self.backend.client.get(name))

    def _kept_since(self, marks: Marks, raw_since: object) -> Marks:
        if isinstance(raw_since, ResponseError):
            raw_since = b""  # the key holds another type: as a value that does not verify
        elif isinstance(raw_since, Exception):
            raise raw_since  # a connection error: the caller's "cache down" case
        since = self.since(raw_since)
        if marks.before is not None and marks.before >= since:
            return marks
        # A sign-in issued in the very millisecond the start was written is kept.
        return Marks(since - 1, marks.ended)

    def end(self, username: str, sid: str, issued: int, expires: int) -> bool:
        """Mark one sign-in as ended until it would have expired."""

        def change(person: _Person) -> None:
            person.ended[sid] = (issued, expires)

        return self._write(username, change)

    def revoke(self, username: str, before: int, until: int) -> bool:
        """End every sign-in of `username` issued at or before `before`; keep it until `until`."""
        return self._write(username, lambda person: _raise_before(person, before, until))

    def settle(self, username: str) -> None:
        """Write a person's marks again, valid and without the expired ones (see _person)."""
        try:
            self._write(username, lambda person: None)
        except Exception as error:  # noqa: BLE001 - still unreadable: the next read fails closed
            log.warning("could not rewrite the revocation marks of %s: %s", username, error)

    def sweep(self) -> int:
        """Rewrite every person's marks without the expired ones (empty hashes disappear);
        return how many people's marks were looked at."""
        pattern = _glob_escape(self.backend.prefixed("marks:")) + "*"
        prefix = len(self.backend.prefixed("marks:"))
        seen = 0
        for key in self.backend.client.scan_iter(match=pattern, count=500):
            name = key.decode() if isinstance(key, bytes) else key
            self._write(name[prefix:], lambda person: None, sweep=False)
            seen += 1
        return seen

    def _unreadable(self, username: str, error: Exception) -> Marks:
        # Redis answered, but not with the person's marks (the key holds another type): fail
        # closed as for a mark that does not verify, and put the marks right.
        if not isinstance(error, ResponseError):
            raise error  # a connection error: the caller's "cache down" case
        _warn_forged(self.key(username), f"({error})")
        self.settle(username)
        return Marks(self._clock(), True)

    def _marks(self, username: str, raw_before, raw_ended, sid: str) -> Marks:
        key = self.key(username)
        status, value = self.backend.unseal(f"{key}#{_BEFORE}", raw_before)
        if status == "forged" or (status == "ok" and not _is_time(_get(value, "t"))):
            _warn_forged(key, _BEFORE)
            # Every sign-in so far ends (this one too), and the mark is written again, valid,
            # at this moment: later sign-ins work (a key rotation without fallback must not
            # lock anyone out for good).
            before = self._clock()
            self.settle(username)
        else:
            before = value["t"] if status == "ok" else None
        status, _ = self.backend.unseal(f"{key}#{_ended_field(sid)}", raw_ended)
        if status == "forged":
            _warn_forged(key, _ended_field(sid))
        return Marks(before, status in ("ok", "forged"))

    def _write(self, username: str, change, sweep: bool = True) -> bool:
        # A transaction (WATCH, then MULTI/EXEC, retried on a clash) so two sign-outs of one
        # person at once cannot lose a mark or lower the before time. The whole (small) hash is
        # rewritten, without the fields that have expired.
        if sweep:
            self._maybe_sweep()
        key = self.key(username)

        def apply(pipe) -> None:
            now = self._clock()
            kind = pipe.type(key)
            wrong_type = kind not in (b"hash", b"none", "hash", "none")
            stored = {} if wrong_type else pipe.hgetall(key)
            person = self._person(key, stored, now)
            if wrong_type:  # someone replaced the hash: every sign-in so far has ended
                _warn_forged(key, f"(a {kind!r}, not a hash)")
                _raise_before(person, now - 1, now + self.longest_ms)
            change(person)
            _prune(person, now)
            if len(person.ended) > MAX_ENDED_PER_PERSON:
                _fold_oldest(person)
            fields = self._fields(key, person)
            stale = [name for name in _names(stored) if name not in fields]
            pipe.multi()
            if wrong_type:
                pipe.delete(key)
            elif stale:
                pipe.hdel(key, *stale)
            if fields:
                pipe.hset(key, mapping=fields)

        self.backend.client.transaction(apply, key)
        return True

    def _maybe_sweep(self) -> None:
        # The hashes have no TTL (so no eviction policy drops a mark): once an hour one process
        # that writes marks sweeps everyone's, in the background.
        if time.monotonic() - self._last_sweep < self.SWEEP_INTERVAL:
            return
        if not self._sweeping.acquire(blocking=False):
            return
        self._last_sweep = time.monotonic()

        def sweep() -> None:
            try:
                self.sweep()
            except Exception as error:  # noqa: BLE001 - Redis errors: the next sweep retries
                log.warning("sweeping expired revocation marks failed: %s", error)
            finally:
                self._sweeping.release()

        threading.Thread(target=sweep, name="portal-marks-sweep", daemon=True).start()

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
                # Kept failing closed: a mark nobody can read ends every sign-in so far (it is
                # written again valid, so later sign-ins work; one made in this very
                # millisecond would otherwise end too).
                _warn_forged(key, name)
                _raise_before(person, now - 1, now + self.longest_ms)
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
