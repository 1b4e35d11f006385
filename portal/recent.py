"""What happened lately in this process, for the admin status page (Prometheus has the rest).

Fed by the same hooks as /metrics: login outcomes over the last hour, recent LDAP operation
latencies and the last error per server, user-cache hits and misses. Per process: under gunicorn
each worker keeps its own; /metrics aggregates across workers.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

#: Latencies kept per server for the p95.
LATENCY_SAMPLES = 200
#: Seconds of login outcomes kept.
LOGIN_WINDOW = 3600


@dataclass(frozen=True)
class ServerActivity:
    """Recent operations on one server."""

    operations: int
    p95_ms: float | None
    last_error: str
    last_error_at: float | None


class Recent:
    """A thread-safe record of recent events, bounded in memory."""

    def __init__(self):
        self._lock = threading.Lock()
        # One bucket of counts per minute: bounded memory and a cheap hour total, however busy.
        self._logins: deque[tuple[int, dict[str, int]]] = deque(maxlen=LOGIN_WINDOW // 60)
        self._latencies: dict[str, deque[float]] = {}
        self._errors: dict[str, tuple[float, str]] = {}
        self._cache = {"hit": 0, "miss": 0}

    def login(self, outcome: str) -> None:
        """Note one login attempt's outcome."""
        minute = int(time.time() // 60)
        with self._lock:
            if not self._logins or self._logins[-1][0] != minute:
                self._logins.append((minute, {}))
            counts = self._logins[-1][1]
            counts[outcome] = counts.get(outcome, 0) + 1

    def cache(self, hit: bool) -> None:
        """Note one user-cache lookup."""
        with self._lock:
            self._cache["hit" if hit else "miss"] += 1

    def ldap(self, server: str, seconds: float, error: str | None = None) -> None:
        """Note one LDAP operation on a server, and its error if it failed."""
        with self._lock:
            samples = self._latencies.setdefault(server, deque(maxlen=LATENCY_SAMPLES))
            samples.append(seconds)
            if error:
                self._errors[server] = (time.time(), error)

    def error(self, server: str, error: str) -> None:
        """Note a server's failure that was not timed as an operation (e.g. a refused bind)."""
        with self._lock:
            self._errors[server] = (time.time(), error)

    def login_outcomes(self) -> dict[str, int]:
        """Login attempts of the last hour, by outcome."""
        since = int((time.time() - LOGIN_WINDOW) // 60)
        totals: dict[str, int] = {}
        with self._lock:
            for minute, counts in self._logins:
                if minute > since:
                    for outcome, count in counts.items():
                        totals[outcome] = totals.get(outcome, 0) + count
        return totals

    def cache_hits(self) -> tuple[int, int]:
        """(hits, misses) of the user cache since this process started."""
        with self._lock:
            return self._cache["hit"], self._cache["miss"]

    def server(self, server: str) -> ServerActivity:
        """Recent operations on one server: count, p95 latency, last error and when."""
        with self._lock:
            samples = sorted(self._latencies.get(server, ()))
            when, error = self._errors.get(server, (None, ""))
        p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))] * 1000 if samples else None
        return ServerActivity(len(samples), p95, error, when)


#: This process's record.
RECENT = Recent()
