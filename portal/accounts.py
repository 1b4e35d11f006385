"""The user loader Flask-Login calls on every request, served from the cache.

The cache holds each person's plain attribute data as JSON under their canonical username. It
is fresh for USER_CACHE_TTL seconds: a hit rebuilds the User with no LDAP operation; after that
the directory is read again (once per person at a time) and the cache refilled. Because the
loader returns None for a person who is no longer active, losing a group ends their access
within the TTL on every worker that shares the cache.

An entry is kept USER_STALE_GRACE seconds longer than it is fresh: when the directory cannot
answer, a signed-in person goes on working from it for that long (never longer, never with more
rights than it gives, never on the admin pages that act on people; the status page is shown),
then gets the 503 page. A person the directory
said is gone or may not sign in (deleted, disabled, locked) leaves a "gone" entry in place of
theirs, so a later outage can never bring the old one back. While Redis fails, the cache guard
(cache/guard.py) keeps entries and sign-out marks in this process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from functools import partial

from flask import Flask, current_app, has_request_context, request

from . import directory, metrics
from .access import STALE, compiled_apps, configured_pages, rule_set
from .access.explain import NO_SUCH_PERSON, Explanation, explain_user
from .cache import redis_clients
from .cache.guard import CacheGuard
from .directory import DirectoryError, DirectoryUnavailable, InvalidInput
from .extensions import cache, login_manager
from .models import AccessPolicy, User
from .signin import logins
from .signin.revocations import Marks, MemoryMarks, RedisMarks
from .signin.sessions import CLOCK_SKEW_SECONDS

log = logging.getLogger(__name__)

_STATE = "portal.accounts"
#: WSGI environ keys: a login the fast path already loaded (login id, Loaded), and the cache
#: entry text the request's User came from.
LOADED = "portal.loaded"
ENTRY = "portal.entry"
#: Set in the WSGI environ when the request's login was signed out, revoked or has expired:
#: the sign-in page then says the sign-in ended, not only "please sign in".
ENDED = "portal.login_ended"

#: Decoded cache entries each process keeps (see _State.decoded), and the most characters of
#: entry text among them (a person in hundreds of groups has entries of many kilobytes, and each
#: sign-in writes a new one).
DECODED_SIZE = 8192
DECODED_CHARACTERS = 16 * 1024 * 1024
# Striped locks: bounded however many people sign in; a collision only serialises two refreshes.
_REFRESH_LOCKS = tuple(threading.Lock() for _ in range(64))
# The wall clock entries' freshness is judged by, looked up on each call so tests can move it.
# An entry's fetched_at may lie up to CLOCK_SKEW_SECONDS in its future (another instance's
# clock running a little ahead), no further: else a clock far ahead would keep an entry fresh
# for longer than USER_CACHE_TTL everywhere.
_clock = time.time


@dataclass
class _State:
    """What the loader needs on every request, looked up once per app."""

    policy: AccessPolicy
    marks: MemoryMarks | RedisMarks
    #: The Flask-Caching backend itself (SimpleCache, the signed Redis cache...).
    backend: object
    guard: CacheGuard
    #: USER_CACHE_TTL and USER_STALE_GRACE, in seconds.
    fresh_for: float
    grace: float
    #: A cache entry's exact text -> (username, the User it describes, its password stamp).
    #: The same entry is read on every request of a signed-in person until it expires, and
    #: decoding it (JSON, the User, folding the groups, hashing the stamp) was a good part of
    #: a cached request. A refreshed entry has other text (it holds fetched_at), so this can
    #: never serve older data than the cache holds.
    decoded: dict = field(default_factory=dict)
    #: The characters of entry text in `decoded`.
    decoded_characters: int = 0


def init_app(app: Flask) -> None:
    """Register the cached loader with Flask-Login; compute the access policy and choose where
    revocation marks live (Redis with RedisCache, else this process's memory) once."""
    backend = app.extensions["cache"][cache]
    shared = app.config["CACHE_TYPE"] == "RedisCache"
    config = app.config
    app.extensions[_STATE] = _State(
        policy=AccessPolicy.from_config(config),
        marks=RedisMarks(backend, _longest_login_ms(config)) if shared else MemoryMarks(),
        backend=backend,
        guard=CacheGuard(
            shared,
            config["CACHE_FALLBACK_SECONDS"],
            MemoryMarks(),
            where=redis_clients.location(config["CACHE_REDIS_URL"]) if shared else "memory",
        ),
        fresh_for=config["USER_CACHE_TTL"],
        grace=config["USER_STALE_GRACE"],
    )
    login_manager.user_loader(load_user)


def marks() -> MemoryMarks | RedisMarks:
    """Where the current app keeps revocation marks."""
    return current_app.extensions[_STATE].marks


def explain_person(typed: str, host: str) -> Explanation:
    """Read the directory afresh and explain a person: groups, standing, pages, cache entry.

    Raises InvalidInput for a name that cannot be one, DirectoryError when the directory fails.
    """
    nesting: dict[str, str] = {}
    name, attrs, several = person_for(typed, nesting)
    config = current_app.config
    explained = explain_user(
        attrs["username"] if attrs else name,
        attrs,
        policy(),
        configured_pages(),
        rules=rule_set(),
        host=host,
        cached=cached_attributes(name),
        ttl=config["USER_CACHE_TTL"],
        now=time.time(),
        nesting=nesting,
        apps=compiled_apps(),
        prefix=_mount_prefix(config),
    )
    if several:
        return replace(explained, username=str(typed).strip(), unusable=SEVERAL_ACCOUNTS)
    if attrs is None:
        reason = directory.unusable_reason(name)
        owner = directory.identity(name) if reason == "" else None
        if owner and owner != name:
            # The name finds a usable account known by another name (an e-mail address the
            # filter matches): explain that account.
            return explain_person(owner, host)
        explained = replace(explained, unusable=reason or NO_SUCH_PERSON)
    return explained


def person_for(typed: str, nesting: dict[str, str] | None = None) -> tuple[str, dict | None, bool]:
    """Read afresh the person a sign-in with this name finds: (the portal's name for them,
    their attributes or None when the account is not usable, whether the name finds several
    entries: a sign-in with it is then refused, and it is nobody's).

    Raises InvalidInput for a name that cannot be one, DirectoryError when the directory fails.
    """
    # As a sign-in finds it first (a disabled entry sharing an address is left out there),
    # then among every account, so that a disabled person is described as disabled.
    owner = directory.identity(typed) or directory.identity(typed, any_state=True)
    name = owner or directory.canonical_username(typed)
    attrs = directory.lookup(name, nesting)
    if owner is None and attrs is not None:
        # The name alone finds a usable entry, yet as typed it names none: it finds that one
        # and another (a user principal name that is someone else's <name>@<domain>).
        return name, None, True
    return name, attrs, False


def sign_in_names(typed: str) -> tuple[str, ...]:
    """The names a person's failed sign-ins may be counted under (the throttle counts a name
    as typed): this one, their user name and e-mail address, as far as the directory says."""
    try:
        name, attrs, _ = person_for(typed)
    except DirectoryError:
        return (typed,)
    return tuple(dict.fromkeys(filter(None, (typed, name, (attrs or {}).get("email")))))


def _mount_prefix(config) -> str:
    # Where the portal is mounted, as the rules judge its pages' addresses: the request's own
    # (gunicorn's SCRIPT_NAME, or a proxy's), else APPLICATION_ROOT (a command).
    if has_request_context():
        return request.script_root
    return (config.get("APPLICATION_ROOT") or "/").rstrip("/")


def policy() -> AccessPolicy:
    """Return the current app's access policy."""
    return current_app.extensions[_STATE].policy


def cache_key(username: str) -> str:
    """The cache key for one person (the canonical, lower-cased username)."""
    return "user:" + username


def build_user(attrs: dict) -> User:
    """Build a User from attrs under the current app's policy."""
    return User.from_attributes(attrs, policy())


def remember(attrs: dict) -> bool:
    """Store a person's attrs in the cache, stamped with the time they were read; kept fresh
    for USER_CACHE_TTL and USER_STALE_GRACE longer (for an outage of the directory). False
    when the shared cache did not take them (this process keeps them a while)."""
    return _store(attrs["username"], dict(attrs, fetched_at=_clock()))


def remember_gone(username: str) -> bool:
    """Note that the directory said this person is gone or may not sign in: their old entry is
    replaced, so that no outage can serve it again (the next login writes a real one). False
    when the shared cache did not take it (it is written there once it answers)."""
    return _store(username, {"username": username, "gone": True, "fetched_at": _clock()})


def _store(username: str, entry: dict) -> bool:
    state = _state()
    text = json.dumps(entry, separators=(",", ":"))
    stored, _ = state.guard.call("set", state.backend.set, cache_key(username), text,
                                 _kept_for(state))  # fmt: skip
    if not stored:
        state.guard.local_entries.put(username, text)
        if entry.get("gone"):
            # Else the shared cache keeps the old entry, which an outage of the directory
            # could serve again once it is past its freshness.
            state.guard.replay_later(partial(_store_unless_newer, state, username, entry))
    return stored


def _store_unless_newer(state: _State, username: str, entry: dict) -> None:
    # A "gone" entry written late: not over one a sign-in wrote since (a non-atomic check; the
    # worst case is one more directory read).
    current = _decode(state.backend.get(cache_key(username)), username)
    if current is None or float(current.get("fetched_at") or 0) <= entry["fetched_at"]:
        text = json.dumps(entry, separators=(",", ":"))
        state.backend.set(cache_key(username), text, _kept_for(state))


def forget(username: str) -> bool:
    """Drop one person's cached attrs so the next request reads the directory; False when the
    shared cache could not be asked to."""
    state = _state()
    state.guard.local_entries.drop(username)
    answered, _ = state.guard.call("delete", state.backend.delete, cache_key(username))
    return answered


def cached_attributes(username: str, fresh: bool = False) -> dict | None:
    """Return the cached attrs of a person (only while fresh, if asked), or None on a miss, an
    unreadable entry or a "gone" one."""
    attrs = _cached_entry(username, fresh)
    return None if attrs is None or attrs.get("gone") else attrs


def read_cached(username: str) -> tuple[bool, dict | None]:
    """(whether the cache answered, the person's cached attrs or None): unlike
    `cached_attributes`, a cache that did not answer is not taken for one without them."""
    state = _state()
    answered, raw = state.guard.call("get", state.backend.get, cache_key(username))
    attrs = _decode(raw, username) if answered else None
    return answered, None if attrs is None or attrs.get("gone") else attrs


def held_entry(username: str) -> bool:
    """Whether the cache holds an entry for this name (a "gone" one too): someone signed in
    as it not long ago, whatever the directory says of the name now."""
    return _cached_entry(username, fresh=False) is not None


def _cached_entry(username: str, fresh: bool) -> dict | None:
    state = _state()
    answered, raw = state.guard.call("get", state.backend.get, cache_key(username))
    if not answered:
        raw = state.guard.local_entries.get(username)
    attrs = _decode(raw, username)
    if attrs is not None and fresh and not _usable_age(_age(attrs), state.fresh_for):
        return None
    return attrs


def start_login(user: User, remember: bool) -> User:
    """Begin a sign-in: the same person, whose id now names a new login that will expire."""
    config = current_app.config
    if remember:
        lifetime = config["REMEMBER_COOKIE_DAYS"] * 86400
    else:
        lifetime = config["SESSION_MAX_AGE_HOURS"] * 3600
    state = _state()
    if isinstance(state.marks, RedisMarks):
        # Reading the person's marks first puts right a mark that no longer verifies (one
        # signed with a key since dropped): else it would end this new sign-in on its first page.
        state.guard.call("read", state.marks.read, user.username, "")
    stamp = logins.entry_stamp(user.attributes())
    login = logins.new_login(user.username, logins.now_ms(), lifetime * 1000, stamp)
    return User.from_attributes(user.attributes(), policy(), login_id=login.id)


def end_login(login_id: object) -> bool:
    """Sign one login out everywhere its cookies may have been copied; drop the cache entry.

    Returns False when the cache could not store that (copies of the cookies still work).
    """
    login = logins.parse(login_id)
    if login is None:
        return True
    stored = True
    if not login.expired(logins.now_ms()):
        args = (login.username, login.sid, login.issued, login.expires)
        stored = _mark("end", *args)
    forget(login.username)
    return stored


@dataclass(frozen=True)
class Refreshed:
    """What a re-read after a change did."""

    #: They may no longer sign in at all (gone, disabled, locked, suspended): their logins
    #: were revoked.
    revoked: bool
    #: Every process sharing the cache goes by the new answer: stored there, or the old
    #: entry deleted from it. False when the cache could do neither (read them again later).
    shared: bool


def refresh_after_change(username: str) -> Refreshed:
    """The directory changed this person (or a group of theirs): read them again now, for
    every process that shares the cache.

    A directory that cannot answer raises, and the entry is left as it was (the stale grace
    still applies to it); only the directory's own answer changes anything.
    """
    attrs = _read_directory(username)
    revoked = ends_sign_ins(attrs)
    if revoked:
        revoke_all(username)  # first: it drops the entry the answer then replaces
    shared = _store_answer(username, attrs)
    if not shared:
        # The new entry was refused (Redis full, or down): the old one must not stay for the
        # other processes, which would serve it while it is fresh. A full Redis still deletes.
        shared = forget(username)
    return Refreshed(revoked=revoked, shared=shared)


def ends_sign_ins(attrs: dict | None) -> bool:
    """Whether the directory's answer ends every sign-in of the person: gone, disabled or
    locked (None), or suspended (in a denied group), so that a copy of a cookie does not work
    again once the account is enabled or the suspension lifted. Leaving the allowed groups
    only closes the portal while it lasts."""
    return attrs is None or build_user(attrs).is_suspended


def login_lives(login_id: object) -> bool:
    """Whether a login may still act for its person (sign them out everywhere): unexpired,
    neither ended nor revoked, and made with the person's present entry and password (the
    cache's entry, else the directory's; while the directory does not answer, the marks
    alone decide). Nothing is counted."""
    state = _state()
    login = logins.parse(login_id)
    if login is None or login.expired(logins.now_ms()):
        return False
    raw, found = _entry_and_marks(state, login.username, login.sid)
    if login.revoked(found.before, found.ended):
        return False
    known = _decoded(state, raw, login.username, stale_ok=True)
    if known is not None:
        return known[0] is not None and known[1] == login.stamp
    try:
        attrs = _refresh(login.username)
    except DirectoryError:
        # An outage or a refusal (a size limit): signing out must work whatever the directory
        # says; its marks said it was not ended.
        return True
    return attrs is not None and logins.entry_stamp(attrs) == login.stamp


def revoke_all(username: str) -> bool:
    """End every sign-in of a person made until now (sessions and remember-me cookies alike).

    Returns False when the shared cache could not store the revocation: it is then held by
    this process (which refuses those sign-ins at once) and written there when it answers.
    """
    # The mark must outlive every login issued before it.
    now = logins.now_ms()
    until = now + _longest_login_ms(current_app.config)
    stored = _mark("revoke", username, now, until)
    forget(username)
    return stored


#: RevocationTarget.state of a name that finds more than one account (none of them is its owner).
SEVERAL_ACCOUNTS = "several accounts"


@dataclass(frozen=True)
class RevocationTarget:
    """Whose sign-ins a revocation by a typed name ends, and what the directory said of it."""

    #: The portal's name for the person (an e-mail address the user filter matches gives its
    #: owner's): the marks are kept under it, as sessions and remember-me cookies are.
    owner: str
    #: "" for a usable account; NO_SUCH_PERSON, SEVERAL_ACCOUNTS, or the account's state
    #: ("disabled", "locked"...).
    state: str
    #: The directory's failure when it could not be asked: the name is then taken as typed.
    unchecked: DirectoryError | None = None


def revocation_target(typed: str) -> RevocationTarget:
    """Resolve a name typed by an administrator to the account a revocation ends, as a sign-in
    finds it (a user principal name, an e-mail address: its owner).

    Among every account, disabled ones too: a disabled person's address kept on a colleague's
    entry finds two entries, which is nobody's (revoking the active one revoked the colleague).
    """
    name = directory.canonical_username(typed)
    try:
        found = directory.identity(typed, any_state=True)
        owner = found or name
        state = "" if directory.lookup(owner) is not None else directory.unusable_reason(owner)
    except DirectoryError as error:
        return RevocationTarget(name, "", error)
    if found is None and state == "":
        state = SEVERAL_ACCOUNTS  # lookup finds a usable entry that identity could not name
    return RevocationTarget(owner, state)


def _decode(raw: object, username: str) -> dict | None:
    # A cache value is JSON text the portal wrote; anything else is a miss.
    if not isinstance(raw, str):
        return None
    try:
        attrs = json.loads(raw)
    except ValueError:
        log.warning("ignoring an unreadable cache entry for %r", username)
        return None
    return attrs if isinstance(attrs, dict) and attrs.get("username") == username else None


@dataclass(frozen=True)
class Loaded:
    """What the cache says of one login: the active User (or None) and why."""

    user: User | None
    #: "cache" (an active person), "none" (gone or inactive), "revoked", "expired" (or not a
    #: login id at all), or "miss" (the cache holds no entry: the directory must be asked).
    source: str
    #: The cache entry's exact text the User came from (a hit), else None.
    entry: str | None = None
    #: For a miss because the entry is past its freshness: that entry (for an outage).
    stale: str | None = None


def load_user(login_id: str) -> User | None:
    """Flask-Login's user_loader: the active User of an unexpired, unrevoked login, else None.

    Raises DirectoryUnavailable when the cache misses and the directory cannot answer, so the
    person sees "try again" rather than being signed out by an outage.
    """
    environ = request.environ
    state: _State = current_app.extensions[_STATE]
    ahead = environ.get(LOADED)
    if ahead is not None and ahead[0] == login_id:
        loaded = ahead[1]  # the fast path read (and counted) it for this very request
    else:
        loaded = load_cached(state, login_id)
    if loaded.source != "miss":
        if loaded.entry is not None:
            environ[ENTRY] = loaded.entry
        if loaded.source in ("revoked", "expired"):
            environ[ENDED] = True
        return loaded.user
    login = logins.parse(login_id)
    try:
        attrs = _refresh(login.username)
    except DirectoryUnavailable:
        # The directory does not answer: within the grace, the person goes on from the entry
        # they had (the same groups, no more), and the page says so; else the 503 page.
        known = _decoded(state, loaded.stale, login.username, stale_ok=True)
        if known is None:
            raise
        user = _judged(known[0], known[1], login, "stale")
        if user is not None:
            environ[STALE] = True
        return user
    if attrs is None:
        metrics.user_load("none")  # metrics
        return None
    stamp = logins.entry_stamp(attrs)
    return _judged(User.from_attributes(attrs, state.policy), stamp, login, "directory")


def load_cached(state: _State, login_id: object) -> Loaded:
    """The user_loader's answer from the cache alone (counted in the metrics); a person the
    cache holds no entry for is a "miss", left to the caller. No Flask, no directory."""
    login = logins.parse(login_id)
    if login is None or login.expired(logins.now_ms()):
        return Loaded(None, "expired")
    username = login.username
    raw, found = _entry_and_marks(state, username, login.sid)
    if login.revoked(found.before, found.ended):
        metrics.user_load("revoked")  # metrics
        return Loaded(None, "revoked")
    known = _decoded(state, raw, username)
    metrics.cache_request(hit=known is not None)  # metrics
    if known is None:
        return Loaded(None, "miss", stale=raw if isinstance(raw, str) else None)
    user = _judged(known[0], known[1], login, "cache")
    return Loaded(user, "cache" if user else "none", raw if user else None)


def app_state(app: Flask) -> _State:
    """The loader's per-app state (for the fast path, which runs outside Flask)."""
    return app.extensions[_STATE]


def _judged(user: User | None, stamp: str, login: logins.Login, source: str) -> User | None:
    if user is None:  # a "gone" entry
        metrics.user_load("none")  # metrics
        return None
    if stamp != login.stamp:
        # The directory says the password changed since this sign-in: it ends (as Django's
        # session auth hash does); the person signs in again with the new password.
        metrics.user_load("revoked")  # metrics
        _log_stamp_ended(login)
        return None
    if not user.is_active:
        metrics.user_load("none")  # metrics
        return None
    metrics.user_load(source)  # metrics
    return user.for_login(login.id)


#: Login ids whose end by a changed password this process has logged (each once; bounded).
_STAMP_ENDED: dict[str, None] = {}


def _log_stamp_ended(login: logins.Login) -> None:
    # Once per sign-in: its cookie is sent again with every request until the browser drops it.
    if login.id in _STAMP_ENDED:
        return
    if len(_STAMP_ENDED) >= DECODED_SIZE:
        _STAMP_ENDED.clear()
    _STAMP_ENDED[login.id] = None
    log.info("%s is no longer signed in: the directory says the password (or the entry) "
             "changed since that sign-in", login.username)  # fmt: skip


def _decoded(state: _State, raw: object, username: str,
             stale_ok: bool = False) -> tuple[User | None, str] | None:  # fmt: skip
    # The User and password stamp a cache entry describes (memoised by its exact text), while
    # the entry is fresh (or, with stale_ok, within the grace after that); (None, "") for a
    # "gone" entry.
    if not isinstance(raw, str):
        return None
    known = state.decoded.get(raw)
    if known is None:
        attrs = _decode(raw, username)
        if attrs is None:
            return None
        fetched = float(attrs.get("fetched_at") or 0)
        if attrs.get("gone"):
            known = (attrs["username"], None, "", fetched)
        else:
            stamp = logins.entry_stamp(attrs)
            user = User.from_attributes(attrs, state.policy)
            known = (attrs["username"], user, stamp, fetched)
        if (len(state.decoded) >= DECODED_SIZE
                or state.decoded_characters + len(raw) > DECODED_CHARACTERS):  # fmt: skip
            state.decoded.clear()  # bounded; the entries in use are decoded again, once
            state.decoded_characters = 0
        state.decoded[raw] = known
        state.decoded_characters += len(raw)
    name, user, stamp, fetched = known
    limit = state.fresh_for + (state.grace if stale_ok else 0)
    return (user, stamp) if name == username and _usable_age(_clock() - fetched, limit) else None


def _refresh(username: str) -> dict | None:
    # One directory read per person at a time: when an entry expires, a page's many requests
    # (or an app's, through /auth/verify) would otherwise all read the directory at once.
    with _REFRESH_LOCKS[hash(username) % len(_REFRESH_LOCKS)]:
        attrs = _cached_entry(username, fresh=True)  # another request may have just done it
        if attrs is not None:
            return None if attrs.get("gone") else attrs
        attrs = _read_directory(username)
        if ends_sign_ins(attrs):
            revoke_all(username)  # as the watcher ends them
        _store_answer(username, attrs)
        return attrs


def _read_directory(username: str) -> dict | None:
    # The person as the directory has them now; None when gone or not usable. An outage
    # raises: nothing is stored then.
    try:
        return directory.lookup(username, for_sign_ins=True)
    except InvalidInput:
        return None


def _store_answer(username: str, attrs: dict | None) -> bool:
    # The directory's answer replaces the entry: the person, or a "gone" entry.
    if attrs is None:
        return remember_gone(username)
    return remember(attrs)


def _longest_login_ms(config) -> int:
    # REMEMBER_COOKIE_DAYS or SESSION_MAX_AGE_HOURS, whichever is longer.
    seconds = max(config["REMEMBER_COOKIE_DAYS"] * 86400, config["SESSION_MAX_AGE_HOURS"] * 3600)
    return seconds * 1000


def _entry_and_marks(state: _State, username: str, sid: str) -> tuple[object, Marks]:
    # With Redis, one round trip (a pipeline) for the person's data and both marks, plus the
    # marks this process made itself. With the shared cache down its marks cannot be read:
    # the sign-in is judged by the marks this process read before (SECURITY.md, Known limits),
    # and the data comes from this process's copies or the directory.
    store, guard = state.marks, state.guard
    key = cache_key(username)
    if isinstance(store, RedisMarks):
        answered, found = guard.call("read", store.read_with_entry, key, username, sid)
        if answered:
            raw, marks = found
            guard.saw_marks(username, sid, marks, store.start)
        else:
            raw, marks = guard.local_entries.get(username), guard.marks_seen(username, sid, Marks())
        return raw, _either(marks, guard.local_read(username, sid))
    answered, raw = guard.call("get", state.backend.get, key)
    return raw, store.read(username, sid)


def _either(shared: Marks, local: Marks) -> Marks:
    befores = [time for time in (shared.before, local.before) if time is not None]
    return Marks(max(befores) if befores else None, shared.ended or local.ended)


def write_waiting_marks(app: Flask) -> list[str]:
    """Write the sign-outs and revocations this process still keeps for the shared cache (it
    ends); what still cannot be written is logged and returned."""
    return app.extensions[_STATE].guard.flush()


def _mark(kind: str, *args) -> bool:
    # A sign-out or revocation: in the marks store; if that fails, kept in this process and
    # written to the store once it answers (False: other processes do not know it yet).
    state = _state()
    stored, result = state.guard.call("revocation", getattr(state.marks, kind), *args)
    if stored and result:
        if state.marks is not state.guard.local_marks and state.marks.shared:
            # Known here too, whatever becomes of Redis: an outage must not undo it here.
            getattr(state.guard.local_marks, kind)(*args)
        return True
    state.guard.keep_mark(kind, state.marks, *args)
    return False


def _kept_for(state: _State) -> int:
    return int(state.fresh_for + state.grace)


def _age(attrs: dict) -> float:
    return _clock() - float(attrs.get("fetched_at") or 0)


def _usable_age(age: float, limit: float) -> bool:
    # Younger than the limit, and not from further in the future than clocks may differ.
    return -CLOCK_SKEW_SECONDS <= age < limit


def _state() -> _State:
    return current_app.extensions[_STATE]
