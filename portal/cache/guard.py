"""The shared cache as the user loader uses it: cheap to ask while Redis is down or hung.

With RedisCache every signed-in request reads Redis once. When Redis fails, three things keep
that failure cheap and honest:

- a **breaker** (as for directory servers): after Redis could not be reached or timed out it
  is left alone for a back-off (1 s, doubling to 5 s), then one request probes it; a hung Redis
  (SIGSTOP) costs one CACHE_REDIS_TIMEOUT per back-off per process, not one per request. An
  error Redis answers with (out of memory, a read-only replica) is not an outage: the call
  fails, the next one asks again, so the marks of other processes are never left unread
  because a write was refused;
- **local entries**: while Redis cannot be used, people's entries read from the directory are
  kept in this process (at most FALLBACK_PEOPLE, for CACHE_FALLBACK_SECONDS), so the directory
  sees one read per person per process per interval, not one per request;
- **marks known here**: while Redis cannot be read, a sign-in is judged by the marks this
  process knows: every sign-out and revocation it made (stored in Redis or not) and those it
  read from Redis since it started (a mark is never taken back, so an old copy is never
  wrong, only maybe incomplete: a sign-out made through another process that this one never
  read waits for Redis);
- **local marks**: a sign-out or revocation Redis could not store is kept in this process (it
  ends those sign-ins here at once) and written to Redis as soon as it answers again, by a
  thread of this process that tries every second while any is waiting (a process that serves
  no signed-in request meanwhile must not keep it to itself), and once more when the process
  ends (`flush`: a reload must not drop it; what still cannot be written is logged, person by
  person). Until then the other processes do not know of it, and the sign-out page says so.

With SimpleCache the cache cannot fail: calls go straight through.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import redis

from ..directory.breaker import CLOSED, Breaker

log = logging.getLogger(__name__)

#: People whose entries each process keeps while Redis fails.
FALLBACK_PEOPLE = 2000
#: Sign-ins whose marks read from Redis each process remembers for an outage.
MARKS_REMEMBERED = 4 * FALLBACK_PEOPLE
#: Longest back-off of the Redis breaker: while it is open the marks other processes wrote are
#: not read, so it is kept short (a hung Redis then costs a CACHE_REDIS_TIMEOUT per 5 s).
REDIS_BACKOFF_CAP = 5.0
_WARNING_INTERVAL = 60.0
#: Sign-outs waiting for Redis are written again at most this often (seconds).
_REPLAY_INTERVAL = 1.0
#: What a Redis that cannot be used raises (as opposed to an error it answered with).
_OUTAGES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
# The clock of the local entries and replays, looked up on each call so tests can move it.
_now = time.monotonic


class CacheGuard:
    """Calls to one cache backend, with the breaker, local entries and local marks above."""

    def __init__(self, shared: bool, fallback_seconds: float, local_marks,
                 cap: float = REDIS_BACKOFF_CAP, where: str = "redis"):  # fmt: skip
        """local_marks: an in-memory marks store (portal.signin.revocations.MemoryMarks) for the
        sign-outs the shared store could not take; where: the shared store, as logs name it."""
        self.breaker = Breaker("redis", cap=cap, initial=CLOSED) if shared else None
        self.where = where
        self.local_entries = _LocalEntries(FALLBACK_PEOPLE, fallback_seconds)
        self.local_marks = local_marks
        # (what it is, for the log: "a sign-out of bob"; the write itself), oldest first.
        self._pending: list[tuple[str, Callable[[], object]]] = []
        self._lock = threading.Lock()
        self._last_warning = float("-inf")
        self._next_replay = float("-inf")
        self._replayer: threading.Thread | None = None
        self._stop = threading.Event()
        # (username, sid) -> Marks, and (username, None) -> the person's before time: what
        # Redis said of sign-ins with marks (most have none: nothing kept for them).
        self._read_marks: OrderedDict[tuple[str, str | None], object] = OrderedDict()

    def call(self, operation: str, function, *args) -> tuple[bool, object]:
        """(True, result) when the backend answered; (False, None) when it failed or is left
        alone for now. Every backend raises its own errors, hence the broad catch."""
        if self.breaker is not None and not self.breaker.admit():
            return False, None
        try:
            result = function(*args)
        except Exception as error:  # noqa: BLE001
            self._failed(operation, error)
            return False, None
        if self.breaker is not None and self.breaker.succeeded():
            log.warning("the user cache answers again")
        if self._pending and _now() >= self._next_replay:
            self._next_replay = _now() + _REPLAY_INTERVAL
            self._replay()
        return True, result

    @property
    def down(self) -> bool:
        """True while the shared cache is left alone after failing."""
        return self.breaker is not None and self.breaker.is_open

    def keep_mark(self, kind: str, marks, *args) -> None:
        """A mark the shared store could not take: kept here, and written there later."""
        getattr(self.local_marks, kind)(*args)
        what = {"end": "a sign-out", "revoke": "a revocation of every sign-in"}.get(kind, kind)
        self.replay_later(partial(getattr(marks, kind), *args), f"{what} of {args[0]}")

    def replay_later(self, write: Callable[[], object], what: str = "a cache entry") -> None:
        """A write the shared store could not take, made again (in order) once it answers."""
        with self._lock:
            self._pending.append((what, write))
            if self._replayer is None or not self._replayer.is_alive():
                self._replayer = threading.Thread(target=self._replay_while_waiting,
                                                  name="portal-replay", daemon=True)  # fmt: skip
                self._replayer.start()

    @property
    def waiting(self) -> list[str]:
        """What waits to be written to the shared store ("a sign-out of bob"...), oldest first."""
        with self._lock:
            return [what for what, _ in self._pending]

    def flush(self) -> list[str]:
        """Write what waits now (this process ends); log each write that still fails, and
        return what they were."""
        self._stop.set()
        self._replay()
        lost = self.waiting
        for what in lost:
            log.error("%s could not be written to %s before this process ended: copies of "
                      "those sign-ins keep working in other processes until they expire (run "
                      "`portal revoke` for the person once it answers)",
                      what, self.where)  # fmt: skip
        return lost

    def _replay_while_waiting(self) -> None:
        # Whatever requests this process serves, what waits is written within a second of the
        # shared store answering again; the thread ends when nothing waits.
        while not self._stop.wait(_REPLAY_INTERVAL):
            with self._lock:
                if not self._pending:
                    self._replayer = None
                    return
            admitted = self.breaker is None or self.breaker.admit()
            if (
                admitted
                and self._replay()
                and self.breaker is not None
                and self.breaker.succeeded()
            ):
                log.warning("the user cache answers again")

    def local_read(self, username: str, sid: str):
        """The marks this process keeps for itself (those it made)."""
        return self.local_marks.read(username, sid)

    def saw_marks(self, username: str, sid: str, marks) -> None:
        """Remember marks the shared store answered for a sign-in, for when it cannot be read."""
        if marks.before is None and not marks.ended:
            return  # the common case: nothing to remember, nothing spent
        with self._lock:
            for key, value in (((username, sid), marks), ((username, None), marks.before)):
                if value is not None:
                    self._read_marks[key] = value
                    self._read_marks.move_to_end(key)
            while len(self._read_marks) > MARKS_REMEMBERED:
                self._read_marks.popitem(last=False)

    def marks_seen(self, username: str, sid: str, empty):
        """The marks last read for this sign-in (its person's before time, if only that was
        seen); `empty` (no marks) when none were."""
        with self._lock:
            seen = self._read_marks.get((username, sid))
            before = self._read_marks.get((username, None))
        if seen is None:
            return empty if before is None else type(empty)(before=before)
        if before is not None and (seen.before is None or seen.before < before):
            return type(empty)(before=before, ended=seen.ended)
        return seen

    def _replay(self) -> bool:
        # Redis answers again: the marks it missed go to it now (the oldest first). False when
        # one still failed (it and the rest wait on).
        with self._lock:
            pending, self._pending = self._pending, []
        for number, (_, write) in enumerate(pending):
            try:
                if write() is False:  # a marks store that answered without taking it
                    raise RuntimeError("the write was not taken")
            except Exception as error:  # noqa: BLE001 - still failing: keep the rest for later
                with self._lock:
                    self._pending = pending[number:] + self._pending
                self._failed("replaying sign-outs", error)
                return False
        return True

    def _failed(self, operation: str, error: Exception) -> None:
        if self.breaker is not None and isinstance(error, _OUTAGES):
            self.breaker.failed(f"{type(error).__name__}: {error}")
        # One line a minute is enough to tell the on-call engineer; every request would flood.
        now = time.monotonic()
        if now - self._last_warning >= _WARNING_INTERVAL:
            self._last_warning = now
            log.warning("user cache %s at %s failed (using this process's copies and the "
                        "directory instead): %s", operation, self.where, error)  # fmt: skip


class _LocalEntries:
    # A small LRU of people's entries (their JSON text), each kept for `seconds`.

    def __init__(self, size: int, seconds: float):
        self.size, self.seconds = size, seconds
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, username: str) -> str | None:
        with self._lock:
            found = self._entries.get(username)
            if found is None:
                return None
            stored, text = found
            if _now() - stored >= self.seconds:
                del self._entries[username]
                return None
            self._entries.move_to_end(username)
            return text

    def put(self, username: str, text: str) -> None:
        with self._lock:
            self._entries[username] = (_now(), text)
            self._entries.move_to_end(username)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, username: str) -> None:
        with self._lock:
            self._entries.pop(username, None)
