"""Log lines that cannot flood: one line per kind per interval, saying how many were held back.

During an outage every request fails the same way; a line per request (thousands a minute)
hides everything else in the log and costs the disk. `QuietLog.warning(key, ...)` writes the
first line of a kind at once, then at most one per interval, each time with the number of the
same lines left out since the last.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

#: Seconds between two lines of the same kind.
INTERVAL = 60.0

_every: weakref.WeakSet[QuietLog] = weakref.WeakSet()


def forget_all() -> None:
    """Make every quiet log write its next line of each kind at once (a fresh start).

    Kinds are keyed by text such as a server's host:port, and loopback ports are reused: a
    test would otherwise find its line held back by an earlier test's line of the same text.
    """
    for quiet in list(_every):
        with quiet._lock:
            quiet._last.clear()


class QuietLog:
    """A logger's warnings and errors, rate-limited per key (e.g. the server's host:port)."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL, clock=time.monotonic):
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        _every.add(self)

    def warning(self, key: str, message: str, *args) -> bool:
        """Log at WARNING unless a line of this kind was written within the interval."""
        return self._log(logging.WARNING, key, message, args)

    def error(self, key: str, message: str, *args) -> bool:
        """Log at ERROR unless a line of this kind was written within the interval."""
        return self._log(logging.ERROR, key, message, args)

    def _log(self, level: int, key: str, message: str, args: tuple) -> bool:
        now = self._clock()
        with self._lock:
            last, held = self._last.get(key, (float("-inf"), 0))
            if now - last < self.interval:
                self._last[key] = (last, held + 1)
                return False
            self._last[key] = (now, 0)
            if len(self._last) > 1024:  # kinds are few; a flood of keys must not grow memory
                self._last = {key: (now, 0)}
        if held:
            message += f" ({held} more like this in the last {self.interval:.0f} s)"
        self.logger.log(level, message, *args)
        return True
