"""Circuit breakers: a directory server that failed is left alone for a while, then probed once.

One `Breaker` per server and process, shared by the service pool, the password-check pool and
every thread. A server that refused a connection, timed out or hung is **open**: nobody connects
to it until its back-off ends (1 s after the first failure, doubling with each failure in a row
up to LDAP_BREAKER_MAX_SECONDS, with ±20 % jitter so workers do not knock in step). Then it is
**half-open**: the next connection attempt is the probe, and every other caller goes on to the
next server; success closes the breaker, failure opens it longer. A process starts with every
breaker half-open, so even its first requests send one person, not all of them, to a server
that hangs; callers with no other server to ask wait for that first probe only (a server that
failed is most likely to fail again: they get their 503 at once rather than hold a thread for
its timeout).

So a hung replica costs one person per process its timeout, once per back-off, and with every
server down the directory sees at most one connection attempt per server per back-off per
process, however many requests are waiting.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass(frozen=True)
class BreakerState:
    """What the status page and the metrics show of one server's breaker."""

    server: str
    state: str
    #: Failures in a row, and (only while open) seconds until the next probe.
    failures: int
    retry_in: float | None
    last_failure: str
    #: Half-open with one caller asking the server now (its answer decides the state).
    probing: bool = False


class Breaker:
    """The breaker of one server (thread-safe)."""

    def __init__(self, server: str, base: float = 1.0, cap: float = 30.0,
                 probe_limit: float = 30.0, clock=None, jitter=random.random,
                 initial: str = HALF_OPEN):  # fmt: skip
        self.server = server
        self.base, self.cap = base, cap
        #: Seconds after which a probe that never reported back is given up (a new one allowed).
        self.probe_limit = probe_limit
        # Looked up on each call when not given, so tests can move time instead of waiting.
        self._clock = clock or (lambda: _now())
        self._jitter = jitter
        self._changed = threading.Condition()
        self._state = initial  # HALF_OPEN: the first caller probes (see the module docstring)
        self._failures = 0
        self._until = 0.0
        self._probe_since: float | None = None
        self._last_failure = ""

    def admit(self) -> bool:
        """Whether this caller may connect now (closed, or the half-open probe)."""
        with self._changed:
            now = self._clock()
            if self._state == CLOSED:
                return True
            if self._state == OPEN and now >= self._until:
                self._state = HALF_OPEN
            if self._state == HALF_OPEN:
                stale = self._probe_since is not None and now - self._probe_since > self.probe_limit
                if self._probe_since is None or stale:
                    self._probe_since = now
                    return True
            return False

    def first_probing(self) -> bool:
        """True while the first probe of a server that has not failed is under way (a process
        starting): its outcome is worth waiting for. A server that failed is most likely to
        fail again: waiting on its probe would hold a thread for its timeout, to no purpose."""
        with self._changed:
            return self._state == HALF_OPEN and self._probe_since is not None and not self._failures

    def wait(self, seconds: float) -> None:
        """Wait (at most `seconds`) until the probe under way reports back."""
        deadline = self._clock() + seconds
        with self._changed:
            while self._state == HALF_OPEN and self._probe_since is not None:
                left = deadline - self._clock()
                if left <= 0:
                    return
                self._changed.wait(left)

    def succeeded(self) -> bool:
        """The server answered: closed again. True when that ended an outage."""
        with self._changed:
            recovered = self._failures > 0
            self._state, self._failures, self._probe_since = CLOSED, 0, None
            self._changed.notify_all()
            return recovered

    def failed(self, reason: str = "") -> float:
        """The server failed: open for the next back-off (returned, in seconds)."""
        with self._changed:
            self._failures += 1
            backoff = min(self.cap, self.base * 2 ** (self._failures - 1))
            backoff *= 0.8 + 0.4 * self._jitter()
            self._state, self._until, self._probe_since = OPEN, self._clock() + backoff, None
            self._last_failure = reason
            self._changed.notify_all()
            return backoff

    @property
    def is_open(self) -> bool:
        """True while nobody may connect (open and not yet due for a probe)."""
        with self._changed:
            return self._state == OPEN and self._clock() < self._until

    def snapshot(self) -> BreakerState:
        """The breaker's state, for people and metrics."""
        with self._changed:
            state, retry = self._state, None
            if state == OPEN:
                retry = self._until - self._clock()
                if retry <= 0:  # its back-off is over: the next caller probes it
                    state, retry = HALF_OPEN, None
            if state == HALF_OPEN and self._failures == 0 and self._probe_since is None:
                state = CLOSED  # never failed, not yet asked: nothing to report
            probing = (  # a probe that never reported back is given up after probe_limit
                state == HALF_OPEN
                and self._probe_since is not None
                and self._clock() - self._probe_since <= self.probe_limit
            )
            return BreakerState(
                self.server, state, self._failures, retry, self._last_failure, probing
            )


def _now() -> float:
    return time.monotonic()
