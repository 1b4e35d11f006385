"""A login's deadline: LDAP_LOGIN_DEADLINE seconds, then 503, whatever the directory does.

Every operation of a login has its own timeout, but a login is several operations (a search, a
bind, group searches, a retry on a fresh connection, the next server), so their timeouts add
up. The login therefore runs on a small pool of threads of its own while the request waits at
most the deadline: past it the person is told to try again and the worker thread is free for
the next request; the abandoned login ends on its own when its operation times out, and its
answer is dropped.

Waiting is still a request thread held, and while the directory hangs every sign-in would
wait out the deadline until all of the process's request threads did, so that people already
signed in (pages and forward auth, which need no directory) waited too. So at most half of the
request threads wait on the directory at once: the next sign-in waits up to SLOT_SECONDS for
one of them to finish (a healthy directory answers in milliseconds) and is then told to try
again (`DirectoryBusy`); once the oldest has waited that long the directory is slow, and the
next are told at once (a burst waiting for turns would hold the threads the cap keeps free).
The server says how many threads it serves with: deploy/gunicorn.conf.py calls
`set_request_threads`; with no word of it, nothing is refused.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from .. import metrics
from .errors import DirectoryBusy, DirectoryUnavailable

#: How long a sign-in waits for its turn when half the request threads wait on the directory
#: already: far longer than a healthy directory takes, far shorter than a hung one holds them.
SLOT_SECONDS = 0.25

_request_threads = 0  # this process's request threads, as its server said; 0: not known


def set_request_threads(count: int) -> None:
    """Tell the sign-ins how many request threads this process serves with: at most half of
    them wait on the directory at once."""
    global _request_threads
    _request_threads = max(0, int(count))


def waiting_limit() -> int:
    """How many sign-ins may wait on the directory at once here (0: no limit)."""
    return max(1, _request_threads // 2) if _request_threads > 1 else 0


class Deadline:
    """Runs calls on a bounded pool of threads, waiting for each at most `seconds`."""

    def __init__(self, seconds: float, threads: int):
        self.seconds = seconds
        self.threads = threads
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)  # a waiting sign-in finished
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0
        self._waiting: list[float] = []  # when each sign-in waiting now began (monotonic)

    def run(self, call: Callable, *args):
        """call(*args)'s result or exception; DirectoryUnavailable once the deadline passes,
        DirectoryBusy when its turn does not come within SLOT_SECONDS (see above)."""
        executor = self._executor()
        began = self._admit()
        try:
            future = executor.submit(call, *args)
            try:
                return future.result(timeout=self.seconds)
            except FutureTimeout:
                future.cancel()  # if it never started (every thread busy), it never will
                raise DirectoryUnavailable(
                    f"the login did not finish within LDAP_LOGIN_DEADLINE ({self.seconds:g} s)"
                ) from None
        finally:
            with self._turn:
                self._waiting.remove(began)
                self._turn.notify()
            metrics.LOGINS_WAITING.dec()  # metrics

    def waited_longest(self) -> float:
        """How long the sign-in waiting longest on the directory here has waited (0: none)."""
        with self._lock:
            if not self._waiting or self._pid != os.getpid():
                return 0.0  # (after a fork, the parent's waits are not this process's)
            return time.monotonic() - self._waiting[0]

    def _admit(self) -> float:
        limit = waiting_limit()
        with self._turn:
            # A turn is waited for only while the directory answers as a healthy one does: once
            # the oldest has waited SLOT_SECONDS it is slow or hung, and a burst of sign-ins
            # waiting for turns would hold the threads the cap keeps free.
            if (
                limit
                and len(self._waiting) >= limit
                and (
                    time.monotonic() - self._waiting[0] >= SLOT_SECONDS
                    or not self._turn.wait_for(lambda: len(self._waiting) < limit, SLOT_SECONDS)
                )
            ):
                oldest = time.monotonic() - self._waiting[0]
                raise DirectoryBusy(
                    f"{len(self._waiting)} sign-ins already wait on the directory, the oldest "
                    f"for {oldest:.1f} s (at most half of this process's {_request_threads} "
                    "request threads may)"
                )
            began = time.monotonic()
            self._waiting.append(began)
        metrics.LOGINS_WAITING.inc()  # metrics
        return began

    def _executor(self) -> ThreadPoolExecutor:
        # After a fork (gunicorn workers) the parent's threads do not exist here: a new pool.
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="portal-login")
                self._pid = os.getpid()
                self._waiting = []  # the parent's waits are not this process's
            return self._pool
