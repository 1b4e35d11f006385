"""A login's deadline: LDAP_LOGIN_DEADLINE seconds, then 503, whatever the directory does.

Every operation of a login has its own timeout, but a login is several operations (a search, a
bind, group searches, a retry on a fresh connection, the next server), so their timeouts add
up. The login therefore runs on a small pool of threads of its own while the request waits at
most the deadline: past it the person is told to try again and the worker thread is free for
the next request; the abandoned login ends on its own when its operation times out, and its
answer is dropped.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from .errors import DirectoryUnavailable


class Deadline:
    """Runs calls on a bounded pool of threads, waiting for each at most `seconds`."""

    def __init__(self, seconds: float, threads: int):
        self.seconds = seconds
        self.threads = threads
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0

    def run(self, call: Callable, *args):
        """call(*args)'s result or exception; DirectoryUnavailable once the deadline passes."""
        future = self._executor().submit(call, *args)
        try:
            return future.result(timeout=self.seconds)
        except FutureTimeout:
            future.cancel()  # if it never started (every thread busy), it never will
            raise DirectoryUnavailable(
                f"the login did not finish within LDAP_LOGIN_DEADLINE ({self.seconds:g} s)"
            ) from None

    def _executor(self) -> ThreadPoolExecutor:
        # After a fork (gunicorn workers) the parent's threads do not exist here: a new pool.
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="portal-login")
                self._pid = os.getpid()
            return self._pool
