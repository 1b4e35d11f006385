"""Failed-login counts in this process's memory, for `limits`' fixed windows.

limits' own MemoryStorage expires its counts from a timer thread it starts again every 10 ms
while counts are being made, and each run walks every key: under a burst of logins that was a
new thread per sign-in and a sweep of every name ever tried, a twentieth of a sign-in's cost.
Here a count is simply dead once its window has passed (every read checks), and the dead ones
are dropped by whoever counts next, at most once every SWEEP_SECONDS: no thread at all.

At most MAX_KEYS counts of their own are kept. Past that, a new name or address is counted in
one of OVERFLOW_COUNTS shared counts of its limit (names and addresses have limits of their
own), picked by its hash, and stays counted there while that shared count's window lasts. A
shared count holds the attempts of every name it stands for, so each of them is counted more
than on its own, never less, and nothing is ever given back from one. No live count is dropped
to make room (that would give attempts back). A flood past MAX_KEYS makes the names that share
counts with it wait sooner, instead of every new visitor being refused: to bring every shared
count of the account limit (5) to its limit takes over 300,000 refused passwords within one
window, hours of them for one process at the default failure floor (250 ms each, holding a
thread); with the floor set to 0 it could be done, and then only people who have not signed in
during the window are kept waiting until it ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from limits.storage import Storage


class WindowCounts(Storage):
    """Counts with an end of window per key, in a dict behind one lock."""

    STORAGE_SCHEME = ["portal-memory"]
    #: How often the counts whose windows have passed are dropped (they are dead before that).
    SWEEP_SECONDS = 30.0
    #: The most counts of their own kept (about 300 bytes each).
    MAX_KEYS = 1_000_000
    #: The shared counts of each limit that new names and addresses go to past MAX_KEYS.
    OVERFLOW_COUNTS = 65_536

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
        leaves nothing to give back, and must not buy an extra one. Only a key's own count is
        given back to (a shared one holds others' attempts too).
        """
        now = self._clock()
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            if amount < 0:
                count, ends = self._counts.get(key, (0, 0.0))
                if ends <= now:
                    return 0
                count = max(0, count + amount)
                self._counts[key] = (count, ends)
                return count
            key = self._counted_as(key, now)
            count, ends = self._counts.get(key, (0, 0.0))
            if ends <= now:
                count, ends = 0, now + expiry
            count = max(0, count + amount)
            self._counts[key] = (count, ends)
            return count

    def get(self, key: str) -> int:
        """The key's count in its current window (0 once the window has passed)."""
        now = self._clock()
        count, ends = self._counts.get(self._counted_as(key, now), (0, 0.0))
        return count if ends > now else 0

    def get_expiry(self, key: str) -> float:
        """When the key's window ends (now when it has none)."""
        now = self._clock()
        _, ends = self._counts.get(self._counted_as(key, now), (0, 0.0))
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

    def _counted_as(self, key: str, now: float) -> str:
        # The key's own count while it lasts; else the shared count it falls in while that
        # lasts (attempts counted there must go on counting); else its own, when there is room
        # for it (or it still has a slot whose window has ended); else the shared count.
        if self._counts.get(key, (0, 0.0))[1] > now:
            return key
        # limits' keys end with their limit ("/5/15/minute"): counts are shared within one.
        limit = "/".join(key.rsplit("/", 3)[1:])
        shared = f"\x00shared/{limit}/{hash(key) % self.OVERFLOW_COUNTS}"
        if self._counts.get(shared, (0, 0.0))[1] > now:
            return shared
        if key in self._counts or len(self._counts) < self.MAX_KEYS:
            return key
        return shared

    def _sweep(self, now: float) -> None:
        # Called with the lock held.
        self._counts = {key: kept for key, kept in self._counts.items() if kept[1] > now}
        self._next_sweep = now + self.SWEEP_SECONDS
