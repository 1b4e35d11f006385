"""Login throttling with `limits`: failed logins per account (from anywhere) and per address.

The browsers a person signed in from before count their attempts for them on their own
(devices.py), so strangers guessing a name cannot lock its owner out of their own browsers.

Each password attempt is counted before the directory is asked, atomically (one INCR in
Redis), so simultaneous guesses cannot all slip under the limit; afterwards the attempts that
did not refuse a password (a success, a directory outage, a refusal by the limit itself) are
given back, so outages use up nobody's attempts. Counts live in memory, or in Redis so every
worker and instance shares them (reached as the cache's Redis is: portal.cache.redis_clients,
Sentinel and TLS included).
When that storage cannot count (down, or refusing writes) login is refused (503), never left
unlimited.

The counting library is `limits`, the engine of Flask-Limiter, used directly: only the login
form is limited, so nothing runs on any other request (Flask-Limiter's extension checks every
request, which cost the hot path more than anything else it does).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter

from .. import directory
from ..cache import redis_clients
from ..directory import InvalidInput
from ..directory.breaker import CLOSED, Breaker
from ..quietlog import QuietLog
from ..settings import throttle_storage_url
from . import devices
from .counts import WindowCounts

log = logging.getLogger(__name__)
quiet = QuietLog(log)  # an outage (or a full store) fails every attempt: one line a minute

_LIMITER = "portal.limiter"
#: Longest wait before a storage that failed is tried again (seconds).
STORAGE_BACKOFF_CAP = 5.0


@dataclass
class Attempt:
    """One login attempt as counted: whether it may go on, and what to give back afterwards."""

    allowed: bool
    #: "account" or "address" when a limit was reached.
    exceeded: str = ""
    retry_after: int = 0
    _counted: list[tuple[RateLimitItem, tuple[str, ...]]] = field(default_factory=list)

    @property
    def minutes_to_wait(self) -> int:
        """retry_after in whole minutes, rounded up (at least 1), as the pages say it."""
        return max(1, -(-self.retry_after // 60))


@dataclass(frozen=True)
class _Throttle:
    limiter: FixedWindowRateLimiter
    account_limits: list[RateLimitItem]
    address_limits: list[RateLimitItem]
    prefix: str
    #: Once the storage fails, it is left alone for a moment (1 s, doubling up to 5 s): every
    #: login then gets its 503 at once instead of after another timeout.
    breaker: Breaker
    #: The storage, as logs name it (a Redis URL without its credentials).
    where: str = "memory://"


def init_app(app: Flask) -> None:
    """Set up the counting storage (memory or Redis) and parse the limits once."""
    config = app.config
    url = throttle_storage_url(config)
    if url.startswith("memory://"):
        storage = WindowCounts()
    else:
        # The cache's kind of client (timeouts, TLS verified, Sentinel's master): limits' own
        # URL parsing knows neither CACHE_REDIS_CA_FILE nor a database behind Sentinel.
        client = redis_clients.connect(url, config)
        storage = RedisStorage(url, connection_pool=client.connection_pool)
    # Fixed windows, because only a counter can be given back (an outage must not use up
    # attempts).
    app.extensions[_LIMITER] = _Throttle(
        FixedWindowRateLimiter(storage),
        parse_many(config["THROTTLE_ACCOUNT_LIMIT"]),
        parse_many(config["THROTTLE_IP_LIMIT"]),
        config["CACHE_KEY_PREFIX"] + "throttle",
        Breaker("throttle storage", cap=STORAGE_BACKOFF_CAP, initial=CLOSED),
        redis_clients.location(url),
    )


def storage_problem() -> str:
    """Why the failed-login counts cannot be kept ("" when a count on a throwaway key is
    made and cleared), tried as a sign-in counts (in Redis, by its scripts)."""
    throttle: _Throttle = current_app.extensions[_LIMITER]
    item = parse_many("1000 per second")[0]
    identifiers = (throttle.prefix, "probe:" + secrets.token_hex(4))
    try:
        throttle.limiter.hit(item, *identifiers)
        throttle.limiter.clear(item, *identifiers)
    except Exception as error:  # noqa: BLE001 - every storage raises its own errors
        return f"{type(error).__name__}: {error}"
    return ""


def begin_attempt(username: str | None = None, signed_in: bool = False) -> Attempt | None:
    """Count this password attempt (a login, or a password change naming `username`) against
    every limit; None when the counts cannot be kept. A known browser's attempt (its cookie is
    sent to the login form only) and a change from the person's own sign-in (`signed_in`)
    count with the person's known browsers, which strangers cannot use up."""
    throttle: _Throttle = current_app.extensions[_LIMITER]
    attempt = Attempt(allowed=True)
    # The address first: once one limit refuses, the attempt never reaches the directory, so
    # nothing more is counted (an address past its limit spraying new names neither adds
    # counts for each name nor uses up those accounts' attempts).
    buckets = [("address", item, client_address()) for item in throttle.address_limits]
    account = account_key(username)
    if signed_in or devices.known_device(account) is not None:
        # A browser this person signed in from (or is signed in in): the count of their
        # known browsers, which strangers cannot use up, or guessing their name would also
        # keep them from changing their password. One count for all of them, so signing in
        # again and again to collect cookies buys no further guesses: at most twice the limit
        # in all. Its key lies outside "account:...", which every typed name's key begins
        # with (as "account:alice|known", a stranger typing "alice|known" used up alice's).
        account = f"known-{account}"
    buckets += [("account", item, account) for item in throttle.account_limits]
    if not throttle.breaker.admit():
        return None  # it failed a moment ago: paused at once, not after another timeout
    try:
        for which, item, key in buckets:
            identifiers = (throttle.prefix, key)
            attempt._counted.append((item, identifiers))
            if not throttle.limiter.hit(item, *identifiers):
                reset = throttle.limiter.get_window_stats(item, *identifiers).reset_time
                attempt.exceeded, attempt.retry_after = which, max(1, int(reset - time.time()) + 1)
                attempt.allowed = False
                break
    except Exception as error:  # noqa: BLE001 - every storage raises its own errors
        throttle.breaker.failed(f"{type(error).__name__}: {error}")
        quiet.warning("count", "login throttling cannot count attempts in %s: %s",
                      throttle.where, error)  # fmt: skip
        # Not given back: the storage that just failed would only keep this request waiting
        # once more; whatever was counted stays counted, the safe side.
        return None
    throttle.breaker.succeeded()
    if not attempt.allowed:
        # Refused before any password was checked, so no guess: uncounted. The limit may have
        # been reached by attempts still waiting on a hung directory, and those are given back
        # when it fails them: the refusals meanwhile must not lock the account after it.
        give_back(attempt)
    return attempt


def give_back(attempt: Attempt) -> None:
    """Uncount an attempt that did not refuse a password (a success, an outage)."""
    throttle: _Throttle = current_app.extensions[_LIMITER]
    storage = throttle.limiter.storage
    if not throttle.breaker.admit():
        attempt._counted.clear()  # the storage is failing: stays counted, the safe side
        return
    try:
        for item, identifiers in attempt._counted:
            key, window = item.key_for(*identifiers), item.get_expiry()
            if storage.incr(key, window, amount=-1) < 0:
                # The window ended in between: this started the next one below zero (a free
                # guess in it, as limits' Redis storage allows); count it up to zero again.
                storage.incr(key, window, amount=1)
        throttle.breaker.succeeded()
    except Exception as error:  # noqa: BLE001 - the attempt stays counted: the safe side
        throttle.breaker.failed(f"{type(error).__name__}: {error}")
        quiet.warning("give back", "login throttling could not give back an attempt in %s: %s",
                      throttle.where, error)  # fmt: skip
    attempt._counted.clear()


@dataclass(frozen=True)
class AccountCount:
    """Failed sign-ins counted against an account in one limit's present window."""

    #: The limit, as THROTTLE_ACCOUNT_LIMIT gives it ("5 per 15 minutes").
    limit: str
    used: int
    allowed: int
    #: Seconds until the window ends and the count starts again.
    reset_in: int
    #: The count of the person's own known browsers (devices.py), not of strangers'.
    known_browsers: bool

    @property
    def full(self) -> bool:
        """Whether a sign-in counted here is refused (429) until the window ends."""
        return self.used >= self.allowed


def counts_shared() -> bool:
    """Whether the counts live where every process sees them (Redis), not in each one's memory."""
    return not isinstance(current_app.extensions[_LIMITER].limiter.storage, WindowCounts)


def account_counts(*names: str) -> list[AccountCount]:
    """The failed sign-ins counted against these names' accounts now, in every limit of
    THROTTLE_ACCOUNT_LIMIT (strangers' and the known browsers' counts), leaving out the empty
    ones. For an administrator's look-up: a sign-in never shows them."""
    throttle: _Throttle = current_app.extensions[_LIMITER]
    found = []
    now = time.time()
    with _storage(throttle):
        for key, known in _account_keys(names):
            for item in throttle.account_limits:
                found += _count(throttle, item, key, known, now)
    return found


def _count(throttle: _Throttle, item, key: str, known: bool, now: float) -> list[AccountCount]:
    reset, remaining = throttle.limiter.get_window_stats(item, throttle.prefix, key)
    used = item.amount - remaining
    if used <= 0:
        return []
    unit = item.GRANULARITY.name + ("s" if item.multiples != 1 else "")
    left = max(0, int(reset - now))  # whole seconds (Redis keeps them)
    return [AccountCount(f"{item.amount} per {item.multiples} {unit}", used, item.amount, left,
                         known)]  # fmt: skip


@contextmanager
def _storage(throttle: _Throttle) -> Iterator[None]:
    # An administrator's look-up, under the sign-ins' breaker: a storage that failed a moment
    # ago is not waited on again (each question would wait out its timeout).
    if not throttle.breaker.admit():
        raise RuntimeError(f"the storage at {throttle.where} failed a moment ago")
    try:
        yield
    except Exception as error:
        throttle.breaker.failed(f"{type(error).__name__}: {error}")
        raise
    throttle.breaker.succeeded()


def clear_account(*names: str) -> None:
    """Forget the failed sign-ins counted against these names' accounts (the service desk
    has checked who is asking): the next sign-in is not refused for earlier ones."""
    throttle: _Throttle = current_app.extensions[_LIMITER]
    with _storage(throttle):
        for key, _ in _account_keys(names):
            for item in throttle.account_limits:
                throttle.limiter.clear(item, throttle.prefix, key)


def _account_keys(names) -> list[tuple[str, bool]]:
    # Each name as a sign-in typing it is counted: by strangers, and by known browsers.
    accounts = dict.fromkeys(account_key(name) for name in names)
    return [(key, known) for account in accounts
            for key, known in ((account, False), (f"known-{account}", True))]  # fmt: skip


def client_address() -> str:
    """The client's address (the TCP peer, or what TRUSTED_PROXY_HOPS proxies report); an IPv6
    client is counted by its /64, which one person usually holds whole."""
    peer = request.remote_addr or "unknown"
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return "ip:" + peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "ip:" + str(address.ipv4_mapped)  # ::ffff:192.0.2.1 is 192.0.2.1
        return "ip:" + str(ipaddress.ip_network(f"{address}/64", strict=False))
    return "ip:" + str(address)


def account_key(typed: str | None = None) -> str:
    """The account a login names, the same for every spelling of it (unknown names too): case,
    compatibility forms ("ａlice") and known domains are folded as for the session's name."""
    typed = request.form.get("username", "") if typed is None else typed
    try:
        name = directory.canonical_username(typed)
    except InvalidInput:
        # Never reaches the directory, but still counts: against one shared bucket.
        name = "\x00invalid"
    return "account:" + name
