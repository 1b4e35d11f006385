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
  ends those sign-ins here at once) and written to Redis as soon as the breaker lets it be
  tried again, by a thread of this process that looks every second while any is waiting (a
  process that serves no signed-in request meanwhile must not keep it to itself), and once
  more when the process ends (`flush`: a reload must not drop it; what still cannot be
  written is logged, person by person). Each stays on the list until its write is done.
  Until then the other processes do not know of it, and the sign-out page says so.

With SimpleCache the cache cannot fail: calls go straight through.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import redis

from .. import metrics
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

    #: Every guard of this process, so that tests (and anything tearing apps down) can stop
    #: their threads.
    live: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, shared: bool, fallback_seconds: float, local_marks,
                 cap: float = REDIS_BACKOFF_CAP, where: str = "redis"):  # fmt: skip
        """local_marks: an in-memory marks store (portal.signin.revocations.MemoryMarks) for the
        sign-outs the shared store could not take; where: the shared store, as logs name it."""
        self.breaker = Breaker("redis", cap=cap, initial=CLOSED) if shared else None
        self.where = where
        self.local_entries = _LocalEntries(FALLBACK_PEOPLE, fallback_seconds)
        self.local_marks = local_marks
        # What waits for the shared store, oldest first: each leaves the list only once its
        # write is done, so a process ending mid-replay still finds it (flush).
        self._pending: list[_Write] = []
        self._lock = threading.Lock()
        self._replaying = threading.Lock()  # one replay at a time
        self._next_replay = float("-inf")
        self._replayer: threading.Thread | None = None
        self._stop = threading.Event()
        # (username, sid) -> whether Redis said that sign-in ended, and (username, None) -> the
        # person's own before time: only sign-ins with marks are kept (most have none).
        self._read_marks: OrderedDict[tuple[str, str | None], object] = OrderedDict()
        self._start_seen: int | None = None  # the marks' start (everyone's before time)
        self._flush_at_exit_in = 0  # the process that will flush at its end (fork: none yet)
        # When each kind of failure was last logged: an outage's line must not keep another
        # kind (Redis refusing writes) from the log for a minute.
        self._last_warnings: dict[tuple[str, str], float] = {}
        CacheGuard.live.add(self)

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
        self._answered()
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
        self.replay_later(partial(getattr(marks, kind), *args), f"{what} of {args[0]}", True)

    def replay_later(self, write: Callable[[], object], what: str = "a cache entry",
                     ends_sign_ins: bool = False) -> None:  # fmt: skip
        """A write the shared store could not take, made again (in order) once it answers."""
        with self._lock:
            self._pending.append(_Write(what, write, ends_sign_ins))
            _waiting_gauge(ends_sign_ins).inc()  # metrics
            if self._replayer is None or not self._replayer.is_alive():
                self._replayer = threading.Thread(target=self._replay_while_waiting,
                                                  name="portal-replay", daemon=True)  # fmt: skip
                self._replayer.start()
            if self._flush_at_exit_in != os.getpid():
                # Whatever server runs the portal (gunicorn without the shipped config's
                # worker_exit, another one): what waits is written, or named, at the end.
                self._flush_at_exit_in = os.getpid()
                atexit.register(self._flush_at_exit)

    def _flush_at_exit(self) -> None:
        if self._pending:
            self.flush()

    @property
    def waiting(self) -> list[str]:
        """What waits to be written to the shared store ("a sign-out of bob"...), oldest first."""
        with self._lock:
            return [pending.what for pending in self._pending]

    def flush(self, wait: float = 5.0) -> list[str]:
        """Write what waits now (this process ends), after a replay under way (at most `wait`
        seconds); log each write that still fails, and return what they were."""
        self.stop(wait)
        if self._replaying.acquire(timeout=wait):
            try:
                self._replay_now()
            finally:
                self._replaying.release()
        with self._lock:
            lost = list(self._pending)
        for pending in lost:
            if pending.ends_sign_ins:
                log.error("%s could not be written to %s before this process ended: copies of "
                          "those sign-ins keep working in other processes until they expire "
                          "(run `portal revoke` for the person once it answers)",
                          pending.what, self.where)  # fmt: skip
            else:
                log.error("%s could not be written to %s before this process ended",
                          pending.what, self.where)  # fmt: skip
        return [pending.what for pending in lost]

    def forget_waiting(self) -> None:
        """Drop what waits, unwritten and unsaid: for an app torn down while its process goes
        on (a test's), whose shared store is gone."""
        with self._lock:
            for pending in self._pending:
                _waiting_gauge(pending.ends_sign_ins).dec()  # metrics
            self._pending.clear()

    def stop(self, wait: float = 5.0) -> None:
        """Stop retrying in the background (the app or the process ends)."""
        self._stop.set()
        replayer = self._replayer
        if replayer is not None and replayer is not threading.current_thread():
            replayer.join(wait)

    def _replay_while_waiting(self) -> None:
        # Whatever requests this process serves, what waits is written as soon as the breaker
        # lets the shared store be tried again (its back-off: at most REDIS_BACKOFF_CAP); the
        # thread ends when nothing waits.
        while not self._stop.wait(_REPLAY_INTERVAL):
            with self._lock:
                if not self._pending:
                    self._replayer = None
                    return
            if self.breaker is None or self.breaker.admit():
                self._replay()

    def local_read(self, username: str, sid: str):
        """The marks this process keeps for itself (those it made)."""
        return self.local_marks.read(username, sid)

    def saw_marks(self, username: str, sid: str, marks, start: int | None) -> None:
        """Remember what the shared store said of a sign-in, for when it cannot be read:
        whether it ended, the person's own before time, and `start`, the marks' start (a
        before time `marks` carries for everyone, not this person's)."""
        if start is not None and (self._start_seen is None or start > self._start_seen):
            self._start_seen = start
        own_before = marks.before if marks.before is not None and (
            start is None or marks.before > start) else None  # fmt: skip
        if own_before is None and not marks.ended:
            return  # the common case: nothing to remember, nothing spent
        with self._lock:
            for key, value in (((username, sid), marks.ended or None),
                               ((username, None), own_before)):  # fmt: skip
                if value is not None:
                    self._read_marks[key] = value
                    self._read_marks.move_to_end(key)
            while len(self._read_marks) > MARKS_REMEMBERED:
                self._read_marks.popitem(last=False)

    def marks_seen(self, username: str, sid: str, empty):
        """The marks last read for this sign-in, as `empty` (the marks store's "no marks")
        holds them: ended, and the later of the person's before time and the marks' start."""
        with self._lock:
            ended = bool(self._read_marks.get((username, sid)))
            before = self._read_marks.get((username, None))
        befores = [time for time in (before, self._start_seen) if time is not None]
        if not befores and not ended:
            return empty
        return type(empty)(before=max(befores) if befores else None, ended=ended)

    def _replay(self) -> None:
        # One replay at a time (the thread, a request, the process's end).
        if self._replaying.acquire(blocking=False):
            try:
                self._replay_now()
            finally:
                self._replaying.release()

    def _replay_now(self) -> None:
        # The shared store answers again: what it missed goes to it now, the oldest first; a
        # write leaves the list once done, and one that fails stops the replay (it and the
        # rest wait on).
        while True:
            with self._lock:
                if not self._pending:
                    return
                pending = self._pending[0]
            try:
                if pending.write() is False:  # a marks store that answered without taking it
                    raise RuntimeError("the write was not taken")
            except Exception as error:  # noqa: BLE001 - still failing: keep it for later
                self._failed("replaying sign-outs", error)
                return
            self._answered()
            with self._lock:
                if self._pending and self._pending[0] is pending:
                    self._pending.pop(0)
                    _waiting_gauge(pending.ends_sign_ins).dec()  # metrics

    def _answered(self) -> None:
        # The shared store answered (even with an error of its own): the breaker closes.
        if self.breaker is not None and self.breaker.succeeded():
            metrics.CACHE_DOWN.set(0)  # metrics
            log.warning("the user cache answers again")

    def _failed(self, operation: str, error: Exception) -> None:
        if self.breaker is not None:
            if isinstance(error, _OUTAGES):
                self.breaker.failed(f"{type(error).__name__}: {error}")
                metrics.CACHE_DOWN.set(1)  # metrics
            else:
                # An error Redis answered with (out of memory, a read-only replica) proves it
                # answers: a half-open breaker left probing would ignore it for a minute.
                self._answered()
        # One line a minute per kind is enough to tell the on-call engineer; every request
        # would flood.
        now, kind = time.monotonic(), (operation, type(error).__name__)
        if now - self._last_warnings.get(kind, float("-inf")) >= _WARNING_INTERVAL:
            self._last_warnings[kind] = now
            log.warning("user cache %s at %s failed (using this process's copies and the "
                        "directory instead): %s", operation, self.where, error)  # fmt: skip


def _waiting_gauge(ends_sign_ins: bool):
    return metrics.CACHE_WRITES_WAITING.labels("sign-out" if ends_sign_ins else "entry")


@dataclass(frozen=True, eq=False)
class _Write:
    # A write the shared store could not take: what it is ("a sign-out of bob"), the write,
    # and whether it ends sign-ins (what the log says if it is lost).
    what: str
    write: Callable[[], object]
    ends_sign_ins: bool = False


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
