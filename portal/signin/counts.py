"""Failed-login counts in this process's memory, for `limits`' fixed windows.

limits' own MemoryStorage expires its counts from a timer thread it starts again every 10 ms
while counts are being made, and each run walks every key: under a burst of logins that was a
new thread per sign-in and a sweep of every name ever tried, a twentieth of a sign-in's cost.
Here a count is simply dead once its window has passed (every read checks), and the dead ones
are dropped by whoever counts next, at most once every SWEEP_SECONDS: no thread at all.

At most MAX_KEYS counts are kept: past that a new name or address cannot be counted and the
login is refused (503), as when Redis refuses writes; never left uncounted, and no live count
is ever dropped to make room (that would give its account its attempts back).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from limits.storage import Storage


class CountsFull(ValueError):
    """No room for one more count: the attempt cannot be counted."""


class WindowCounts(Storage):
    """Counts with an end of window per key, in a dict behind one lock."""

    STORAGE_SCHEME = ["portal-memory"]
    #: How often the counts whose windows have passed are dropped (they are dead before that).
    SWEEP_SECONDS = 30.0
    #: The most counts kept (about 300 bytes each).
    MAX_KEYS = 1_000_000

    def __init__(self, clock: Callable[[], float] = time.time):
        super().__init__(None)
        self._clock = clock
        self._counts: dict[str, tuple[int, float]] = {}  # key -> (count, window ends at)
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        """What this storage raises (nothing it expects)."""
        return ValueError

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add `amount` to the key's count, starting its window now if it has none; the count.

        A count never goes below 0: giving back an attempt whose window has ended already
        leaves nothing to give back, and must not buy an extra one.
        """
        now = self._clock()
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            count, ends = self._counts.get(key, (0, 0.0))
            if ends <= now:
                if key not in self._counts and len(self._counts) >= self.MAX_KEYS:
                    raise CountsFull(f"{self.MAX_KEYS} failed-login counts kept already")
                count, ends = 0, now + expiry
            count = max(0, count + amount)
            self._counts[key] = (count, ends)
            return count

    def get(self, key: str) -> int:
        """The key's count in its current window (0 once the window has passed)."""
        count, ends = self._counts.get(key, (0, 0.0))
        return count if ends > self._clock() else 0

    def get_expiry(self, key: str) -> float:
        """When the key's window ends (now when it has none)."""
        now = self._clock()
        _, ends = self._counts.get(key, (0, 0.0))
        return ends if ends > now else now

    def check(self) -> bool:
        """Memory is always there."""
        return True

    def reset(self) -> int:
        """Drop every count; how many keys there were."""
        with self._lock:
            dropped = len(self._counts)
            self._counts.clear()
            return dropped

    def clear(self, key: str) -> None:
        """Drop one key's count."""
        with self._lock:
            self._counts.pop(key, None)

    def _sweep(self, now: float) -> None:
        # Called with the lock held.
        self._counts = {key: kept for key, kept in self._counts.items() if kept[1] > now}
        self._next_sweep = now + self.SWEEP_SECONDS
