"""The directory watcher: access ends seconds after the directory changes, not at the TTL.

Every WATCH_INTERVAL seconds (0: off) one process of the deployment polls the directory for
changed people and groups (portal.directory.changes: one paged search per base, however many
people are cached) and re-reads each affected person at once: the cache entry every process
reads is replaced, so a group removal ends access everywhere, and a person gone, disabled or
locked has every login revoked. With RedisCache one watcher serves every worker and instance:
a lease in Redis (SET NX with an expiry, renewed by each poll) elects it, and when its holder
dies another process takes over once the lease expires. With SimpleCache each process watches
for itself. Started by the app on its first request (so in each gunicorn worker, after the
fork), or on its own with `portal watch`. USER_CACHE_TTL stays the safety net.

The feed never shows a change again once it has polled past it, so whoever a poll found stays
owed a read (`Watcher._owed`) until one is done and every process goes by it; each is read once
more at the next poll, in case a request stored an answer it had read before the change.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field, fields

from flask import Flask, current_app
from redis.exceptions import ResponseError

from . import accounts, directory, metrics
from .directory.groups import dn_key
from .health.probes import person_entry_keys
from .quietlog import QuietLog

log = logging.getLogger(__name__)
quiet = QuietLog(log)
_EXTENSION = "portal.watcher"
# Renewed by every poll; another process takes over once it has not been for this long.
_LEASE_INTERVALS = 5
_MIN_LEASE_SECONDS = 5
_STATE_SECONDS = 3600
#: Intervals without a poll after which the status page shows the watcher in red.
STALE_INTERVALS = 3
#: Polls that read again a person found changed: the one that found them, and the next, in
#: case a request that read the directory before the change stored its answer after the first.
READS_PER_CHANGE = 2


@dataclass
class WatchState:
    """What the watcher of the deployment last did (shared through Redis when it is used)."""

    last_poll: float = 0.0
    #: How far the directory's changes have been followed (the server's own stamp).
    since: str = ""
    changes: int = 0
    flushes: int = 0
    revoked: int = 0
    holder: str = ""
    error: str = ""
    interval: float = 0.0
    # This process's own, never published: a release before them cannot read a state holding
    # fields it does not know, and would then take over from now instead of where it had got to.
    #: When the last poll began (it searched for the changes made up to then).
    began: float = field(default=0.0, metadata={"local": True})
    #: Polls this process's watcher has done.
    polls: int = field(default=0, metadata={"local": True})
    #: People found changed and still to be read again (a read failed, or the cache did not
    #: answer, or the second read is due at the next poll).
    owed: int = field(default=0, metadata={"local": True})

    def published(self) -> str:
        """The state as published in Redis for every instance to read."""
        return json.dumps({name: getattr(self, name) for name in _PUBLISHED})

    @classmethod
    def from_published(cls, text: str | bytes) -> WatchState:
        """A state read back from Redis; fields only another release knows are left out."""
        found = json.loads(text)
        return cls(**{name: found[name] for name in _PUBLISHED if name in found})


_PUBLISHED = tuple(each.name for each in fields(WatchState) if not each.metadata.get("local"))


class Watcher:
    """One process's watcher: polls when it holds the lease (or needs none)."""

    def __init__(self, app: Flask):
        self.app = app
        self.interval = app.config["WATCH_INTERVAL"]
        self.identity = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.state = WatchState()
        self.feed = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._paused_without_redis = False  # said when it is over, as its pause was
        self._pid = 0
        self._lock = threading.Lock()
        # What a poll found and the watcher has not done yet: it stays here until it is done,
        # for the feed, once it has polled, never shows the same change again.
        #: People to read again, and how many more polls must.
        self._owed: dict[str, int] = {}
        #: Groups (names) and member DNs whose cached people are still to be looked up.
        self._owed_groups: set[str] = set()
        self._owed_dns: set[str] = set()
        self._owed_present: set[tuple] | None = None  # a listing's DNs, until looked through
        #: While someone is still owed a first read (or groups a look through the cache):
        #: where the feed stood before the poll that found them. The state published says the
        #: watching got that far only, so a process taking over (which cannot know what this
        #: one owes) finds those changes again. (A second read owed alone does not hold it.)
        self._owed_since: str | None = None
        #: With OpenLDAP replication: the feed's view of each provider's progress that goes
        #: with the `since` published (see directory/changes.py), for a process taking over.
        self._progress: dict[tuple[str, str], str] = {}
        self._owed_progress: dict[tuple[str, str], str] = {}

    # -- the loop ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether this process's loop is alive."""
        return self._pid == os.getpid() and self._thread is not None and self._thread.is_alive()

    def _stopped_here(self) -> bool:
        # Stopped on purpose in this process (shutdown): a request must not start it again.
        return self._pid == os.getpid() and self._stop.is_set()

    def ensure_running(self) -> None:
        """Start the thread in this process (once; again in a forked child, or if it died,
        never once stopped here)."""
        if self.running or self._stopped_here():
            return
        with self._lock:
            if self.running or self._stopped_here():
                return
            self._pid = os.getpid()
            self.identity = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            self.feed = None
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name="portal-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the loop for good in this process (tests, shutdown); the lease is let go once
        the loop has ended."""
        with self._lock:  # else a request starting the loop at this moment could undo it
            self._pid = os.getpid()
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            if self._thread.is_alive():
                return  # still in a poll: its lease expires by itself
        with self.app.app_context():
            self._release()

    def run(self) -> None:
        """Poll every interval until stopped; nothing that goes wrong in one ends the loop."""
        while not self._stop.is_set():
            try:
                with self.app.app_context():
                    self.tick()
            except Exception:  # noqa: BLE001 - logged; the next interval tries again
                log.exception("directory watcher: a poll failed")
            self._stop.wait(self.interval)

    def tick(self) -> None:
        """One interval: take or renew the lease, poll, re-read the people affected."""
        if not self._hold_lease():
            shared = self.shared_state()
            metrics.watch_lag(time.time() - shared.last_poll if shared.last_poll else 0.0)
            return
        began = time.time()
        try:
            if self.feed is None:
                feed = directory.change_feed()
                taken_over = self.shared_state().since
                if taken_over:
                    # Another watcher got this far: follow on from there, not from now.
                    feed.resume(taken_over, self._shared_progress())
                self.feed = feed  # only once started: a failed start is tried again in full
            before, progress_before = self.feed.since, dict(self.feed.progress)
            found = self.feed.poll()
        except Exception as error:  # noqa: BLE001 - an outage: the TTL still holds; try again
            self.state.error = f"{type(error).__name__}: {error}"
            quiet.warning("watch failed", "directory watcher could not poll: %s", self.state.error)
            self._publish()
            return
        for username in found.people:
            self._owed[username] = READS_PER_CHANGE
        self._owed_groups |= found.groups
        self._owed_dns |= found.dns
        if found.present is not None:
            self._owed_present = found.present  # the newest listing: the one to look through
        error = self._look_up_owed_groups()
        done = self._read_owed_people()
        if done is None:
            return  # another process holds the lease now
        revoked, flushed = done
        first_reads = READS_PER_CHANGE in self._owed.values()
        if not (first_reads or self._owed_groups or self._owed_dns):
            self._owed_since = None
        elif self._owed_since is None:
            self._owed_since = before or self.feed.since
            self._owed_progress = progress_before
        self._progress = self._owed_progress if self._owed_since else dict(self.feed.progress)
        self.state = WatchState(
            last_poll=time.time(),
            began=began,
            polls=self.state.polls + 1,
            since=self._owed_since or self.feed.since or "",
            changes=self.state.changes + found.entries,
            flushes=self.state.flushes + flushed,
            revoked=self.state.revoked + revoked,
            holder=self.identity,
            error=error,
            interval=self.interval,
            owed=len(self._owed),
        )
        metrics.watch_poll(flushed)  # metrics
        self._publish()

    def _look_up_owed_groups(self) -> str:
        # The cached people of the groups and DNs a poll named; "" once done, else the error
        # (they are looked up again at the next poll).
        if not (self._owed_groups or self._owed_dns or self._owed_present is not None):
            return ""
        try:
            people = cached_people_in(self._owed_groups, self._owed_dns, self._owed_present)
        except Exception as error:  # noqa: BLE001 - the cache failed: kept for the next poll
            quiet.warning("watch scan", "directory watcher could not look through the cache "
                          "for the people of changed groups (tried again at the next poll): "
                          "%s", error)  # fmt: skip
            return f"{type(error).__name__}: {error}"
        for username in people:
            self._owed[username] = READS_PER_CHANGE
        self._owed_groups, self._owed_dns, self._owed_present = set(), set(), None
        return ""

    def _read_owed_people(self) -> tuple[int, int] | None:
        # Read again everyone owed a read; (revoked, re-read for the first time), or None when
        # the lease was lost on the way. Whoever could not be done stays owed.
        revoked = flushed = 0
        renew_at = time.monotonic() + self._lease_seconds() / 3
        for username in sorted(self._owed):
            if time.monotonic() >= renew_at:
                # A long list: keep the lease, or stop if another process has it by now (the
                # rest stay owed: this process reads them once it holds the lease again).
                if not self._hold_lease():
                    return None
                renew_at = time.monotonic() + self._lease_seconds() / 3
            answered, cached = accounts.read_cached(username)
            if not answered:
                continue  # the cache did not say whether they are in it: at the next poll
            if cached is not None:
                # Cached: read again. Not cached: their next request reads the directory.
                try:
                    refreshed = accounts.refresh_after_change(username)
                except Exception as error:  # noqa: BLE001 - left as it was; at the next poll
                    quiet.warning("watch refresh", "re-reading %s after a change failed (tried "
                                  "again at the next poll): %s", username, error)  # fmt: skip
                    continue
                revoked += refreshed.revoked
                if not refreshed.shared:
                    continue  # the other processes still have the old entry: at the next poll
                flushed += self._owed[username] == READS_PER_CHANGE
            self._owed[username] -= 1
            if not self._owed[username]:
                del self._owed[username]
        return revoked, flushed

    # -- the lease and the shared state -----------------------------------------------------

    def _redis(self):
        state = accounts.app_state(self.app)
        return (
            getattr(state.backend, "client", None)
            if self.app.config["CACHE_TYPE"] == ("RedisCache")
            else None
        )

    def _key(self, name: str) -> str:
        return f"{self.app.config.get('CACHE_KEY_PREFIX') or ''}watch:{name}"

    def _lease_seconds(self) -> int:
        return max(_MIN_LEASE_SECONDS, int(self.interval * _LEASE_INTERVALS))

    def _state_seconds(self) -> int:
        # The published state outlives the lease: a process taking over after the holder died
        # follows on from where it got to (an hour at least, for the status page).
        return max(_STATE_SECONDS, 2 * self._lease_seconds())

    def _hold_lease(self) -> bool:
        client = self._redis()
        if client is None:
            return True  # no shared cache: every process watches for itself
        seconds = self._lease_seconds()
        key = self._key("lease")
        try:
            # Renew our own lease first (compare and extend in one step): a full Redis
            # (noeviction) still extends a key, where it refuses every SET.
            held = bool(client.eval(_RENEW, 1, key, self.identity, seconds)) or bool(
                client.set(key, self.identity, nx=True, ex=seconds)
            )
        except ResponseError as error:  # it answered, refusing: its ACL, most often
            self._paused_without_redis = True
            quiet.warning("watch lease", "directory watcher: Redis refuses to keep its lease "
                          "(%s: a user without EVAL or SET, or a full Redis); paused, so a "
                          "change in the directory ends a sign-in only within USER_CACHE_TTL "
                          "until Redis takes it", error)  # fmt: skip
            return False
        except Exception as error:  # noqa: BLE001 - Redis down: nobody can be elected
            self._paused_without_redis = True
            quiet.warning("watch lease", "directory watcher cannot reach Redis: %s; paused, so a "
                          "change in the directory ends a sign-in only within "
                          "CACHE_FALLBACK_SECONDS until Redis answers", error)  # fmt: skip
            return False
        if self._paused_without_redis:
            # Else its log said "paused" and nothing after: an on-call engineer could not tell
            # it had caught up (the servers say their cache answers again).
            self._paused_without_redis = False
            log.warning("directory watcher: Redis keeps its lease again; %s", "watching again"
                        if held else "another process holds it and watches")  # fmt: skip
        return held

    def _release(self) -> None:
        client = self._redis()
        if client is not None:
            with suppress(Exception):  # it expires by itself
                client.eval(_RELEASE, 1, self._key("lease"), self.identity)

    def _publish(self) -> None:
        client = self._redis()
        if client is not None:
            with suppress(Exception):  # the status page then shows this process's own
                # Only while holding the lease: a watcher that lost it must not write over the
                # new holder's progress.
                client.eval(_PUBLISH, 2, self._key("lease"), self._key("state"), self.identity,
                            self.state.published(), self._state_seconds())  # fmt: skip
                if self._progress:  # a key of its own: releases before it read the state
                    progress = json.dumps([[*key, csn] for key, csn in self._progress.items()])
                    client.eval(_PUBLISH, 2, self._key("lease"), self._key("progress"),
                                self.identity, progress, self._state_seconds())  # fmt: skip
        metrics.watch_lag(time.time() - self.state.last_poll if self.state.last_poll else 0.0)

    def _shared_progress(self) -> dict[tuple[str, str], str] | None:
        # What the last watcher published of the providers' progress (None: nothing; then a
        # taking over starts from now, as before replication was followed).
        return read_shared_progress(self.app)

    @property
    def progress(self) -> dict[tuple[str, str], str]:
        """This process's view of the providers' progress, as last published."""
        return self._progress

    def shared_state(self) -> WatchState:
        """The deployment's watcher state: from Redis, else this process's own."""
        return read_shared_state(self.app) or self.state


def read_shared_state(app: Flask) -> WatchState | None:
    """What the deployment's watcher (in any process, a sidecar too) last published in Redis;
    None without Redis or before its first poll."""
    return _read_published(app, "state", WatchState.from_published)


def read_shared_progress(app: Flask) -> dict[tuple[str, str], str] | None:
    """The providers' progress the deployment's watcher last published in Redis beside its
    state (see directory/changes.py); None without Redis, replication or a poll."""
    return _read_published(app, "progress", lambda raw: {
        (context, server_id): csn for context, server_id, csn in json.loads(raw)})  # fmt: skip


def _read_published(app: Flask, name: str, parse):
    if app.config["CACHE_TYPE"] != "RedisCache":
        return None
    client = getattr(accounts.app_state(app).backend, "client", None)
    key = f"{app.config.get('CACHE_KEY_PREFIX') or ''}watch:{name}"
    with suppress(Exception):  # unreadable: unknown
        raw = client.get(key)
        if raw:
            return parse(raw)
    return None


def followed_providers(app: Flask, watcher: Watcher | None, read_shared: bool = True) -> list[str]:
    """The server IDs of the OpenLDAP providers whose replication the deployment's watcher
    follows (their contextCSN): as published in Redis (unless not `read_shared`), else this
    process's; [] without."""
    progress = read_shared_progress(app) if read_shared else None
    if progress is None and watcher is not None:
        progress = watcher.progress
    return sorted({server_id for _, server_id in progress or {}})


def cached_people_in(groups: set[str], dns: set[str] = frozenset(),
                     present: set[tuple] | None = None) -> set[str]:  # fmt: skip
    """The people whose cached entry lists one of these groups or has one of these DNs, or
    (with `present`, a listing's DNs) a DN not among them: a scan of the cache, when a watcher
    takes over (for the members a group may have lost or gained meanwhile), when a group's
    member has no entry left to name them, and at a listing (people deleted, renamed or moved
    away)."""
    folded = {group.casefold() for group in groups}
    dn_keys = {dn_key(dn) for dn in dns} - {()}  # () is a DN that does not parse
    shared = current_app.config["CACHE_KEY_PREFIX"] + accounts.cache_key("")
    found = set()
    for key in person_entry_keys():  # Redis keys carry CACHE_KEY_PREFIX, SimpleCache's not
        name = key.removeprefix(shared) if key.startswith(shared) else key.split(":", 1)[1]
        answered, attrs = accounts.read_cached(name)
        if not answered:
            raise CacheUnanswered(f"the cache did not answer for {name}'s entry")
        if not attrs:
            continue
        in_group = bool(folded & {group.casefold() for group in attrs.get("groups", ())})
        own = dn_key(attrs.get("dn") or "")
        if in_group or own in dn_keys or (present is not None and own not in present):
            found.add(name)
    return found


class CacheUnanswered(RuntimeError):
    """The cache did not answer while the watcher looked through it."""


_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('expire', KEYS[1], ARGV[2])
end
return 0
"""
_PUBLISH = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('set', KEYS[2], ARGV[2], 'EX', ARGV[3])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def init_app(app: Flask) -> None:
    """With WATCH_INTERVAL above 0, start the watcher on the app's first request."""
    if not app.config["WATCH_INTERVAL"]:
        return
    watcher = Watcher(app)
    app.extensions[_EXTENSION] = watcher

    @app.before_request
    def start_watcher():
        watcher.ensure_running()


def watcher_of(app: Flask) -> Watcher | None:
    """The app's watcher, None when WATCH_INTERVAL is 0."""
    return app.extensions.get(_EXTENSION)
