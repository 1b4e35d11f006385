"""Small probes of the cache shared by the status page, the readiness endpoint and the CLI."""

import secrets
import time
from collections.abc import Iterator
from itertools import islice

from flask import current_app

from ..extensions import cache

#: Most entries the status page counts (one SCAN page after another); beyond it says "more".
COUNT_LIMIT = 100_000
_PERSON_PREFIX = "user:"


def probe_cache() -> bool:
    """Write and read back a throwaway key; False when the cache backend does not answer."""
    return not cache_problem()


def cache_problem() -> str:
    """Why the cache does not answer a throwaway key's write and read back, or (Redis) does
    not let the portal run every kind of command it uses ("" when it does)."""
    key, value = "probe:" + secrets.token_hex(4), secrets.token_hex(8)
    try:
        cache.set(key, value, timeout=5)
        answered = cache.get(key) == value
        cache.delete(key)
    except Exception as error:  # noqa: BLE001 - any backend failure means "not ready"
        return f"did not answer a write and read back ({type(error).__name__}: {error})"
    if not answered:
        return "did not answer a write and read back (what was written did not read back)"
    client = redis_client()
    return "" if client is None else redis_command_problem(client)


#: The commands the portal sends Redis: the cache (GET, SET, DEL), the sign-out marks (HMGET,
#: HGETALL, HSET, HDEL in a WATCH/MULTI/EXEC transaction, SCAN), the watcher's lease (EVAL),
#: the throttle counts (EVALSHA, SCRIPT, INCRBY, EXPIRE, TTL).
REDIS_COMMANDS = ("GET SET DEL HMGET HGETALL HSET HDEL WATCH MULTI EXEC SCAN EVAL EVALSHA SCRIPT "
                  "INCRBY EXPIRE TTL")  # fmt: skip
#: How redis_command_problem's answer begins when Redis refused a command.
REDIS_REFUSES = "Redis refuses a command the portal sends"


def redis_command_problem(client) -> str:
    """Why Redis refuses a kind of command this portal sends it ("" when it runs them all):
    a user whose ACL lacks hashes or transactions passed the SET/GET probe while sign-outs
    reached no other server, one without scripts while the watcher could not hold its lease.
    Scripts are tried only when this process runs a watcher (the failed-login counts' own
    probe, throttle.storage_problem, tries theirs)."""
    from redis.exceptions import ResponseError  # NOPERM, or EXEC after a MULTI refused

    key = f"{current_app.config['CACHE_KEY_PREFIX']}probe:{secrets.token_hex(4)}"
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.watch(key)
            pipe.hgetall(key)
            pipe.multi()
            pipe.hset(key, mapping={"probe": "1"})
            pipe.hdel(key, "probe")
            pipe.execute()
        client.hmget(key, "probe")
        # One page, whatever it finds: scan_iter would walk the whole keyspace for a key
        # that is gone (the probe's hash emptied is deleted).
        client.scan(cursor=0, match=_glob_escape(key), count=1)
        if current_app.config["WATCH_INTERVAL"]:
            client.eval("return 1", 0)
        client.delete(key)
    except ResponseError as error:
        return f"{REDIS_REFUSES} to its user ({error}): its ACL must allow {REDIS_COMMANDS}"
    except Exception as error:  # noqa: BLE001 - any backend failure means "not ready"
        return f"{type(error).__name__}: {error}"
    return ""


def person_entry_keys() -> Iterator[str]:
    """Yield the backend's keys of people's cached data (SimpleCache or Redis; none otherwise).

    Redis keys include CACHE_KEY_PREFIX and are read with SCAN, which never blocks Redis the
    way KEYS does; revocation markers and throttle counts are never among them.
    """
    client = redis_client()
    if client is not None:
        pattern = _glob_escape(current_app.config["CACHE_KEY_PREFIX"] + _PERSON_PREFIX) + "*"
        for key in client.scan_iter(match=pattern, count=500):
            yield key.decode() if isinstance(key, bytes) else key
        return
    store = getattr(cache.cache, "_cache", None)  # cachelib's SimpleCache: {key: (expires, v)}
    if isinstance(store, dict):
        now = time.time()
        for key, (expires, _) in list(store.items()):
            if key.startswith(_PERSON_PREFIX) and (expires == 0 or expires > now):
                yield key


def count_person_entries() -> tuple[int, bool] | None:
    """How many people the cache holds data for, and whether counting stopped at COUNT_LIMIT;
    None when the backend cannot tell or does not answer."""
    if redis_client() is None and not isinstance(getattr(cache.cache, "_cache", None), dict):
        return None
    try:
        counted = sum(1 for _ in islice(person_entry_keys(), COUNT_LIMIT + 1))
    except Exception:  # noqa: BLE001 - a cache that does not answer has no count to show
        return None
    return min(counted, COUNT_LIMIT), counted > COUNT_LIMIT


def redis_client():
    """The Redis client of a Redis-backed cache, else None."""
    return getattr(cache.cache, "_write_client", None)


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
