"""The Redis cache backend: signed JSON entries, so nothing read from Redis is ever unpickled.

cachelib's RedisCache pickles every value it stores and unpickles whatever it reads back: anyone
able to write to Redis could run code in the portal, or plant a ``user:<name>`` entry with
made-up groups. This backend stores each value as JSON inside an envelope naming the full Redis
key it was written under and when it expires, signed with HMAC-SHA256 under a key derived from
SECRET_KEY with the salt "portal.cache" (SECRET_KEY itself never signs an entry). Reading an entry
that does not verify (a pickle, garbage, a truncated value, a forgery, an entry signed with
another key, moved to another key, or replayed after it expired) returns None, a miss, so the
caller reads the directory again; it is logged as a warning at most once a minute, never raised.

Integers are the one exception, kept from cachelib: they are stored as bare digits, unsigned, so
``cache.inc``/``cache.dec`` (Redis INCR) keep working. Anyone who can write to Redis can therefore
make any key read back as an integer: use integers only as counters, never for anything that
grants access (the user loader accepts only a string entry). Every other JSON value (str, float,
bool, None, list, dict) is signed; values JSON cannot hold (bytes, objects) are refused with
TypeError when written. ``has`` only says a key exists: it verifies nothing.

Entries signed with a key in SECRET_KEY_FALLBACKS are still accepted, as Flask accepts session
cookies signed with them, so rotating SECRET_KEY does not empty the cache; new entries are signed
with SECRET_KEY. Signing cannot stop someone who can write to Redis from deleting entries, nor
from writing a validly signed value back under its own key before it expires.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from typing import Any

from cachelib.serializers import BaseRedisSerializer
from flask import Flask
from flask_caching.backends.rediscache import RedisCache
from itsdangerous import BadData, Signer
from itsdangerous.encoding import want_bytes

from . import redis_clients

log = logging.getLogger(__name__)

#: The salt that derives the cache's signing key from SECRET_KEY (and each fallback key).
SALT = "portal.cache"
_WARNING_INTERVAL = 60.0
# Exactly what Redis INCR writes; stricter than int(), which would also take " 1_0 ".
_INTEGER = re.compile(rb"-?[0-9]+")
#: Values remembered as verified, by their exact bytes (the same few entries and marks are
#: read on every request of the people signed in): at most this many bytes in all, and none
#: larger than VERIFIED_MAX_BYTES (a person in a great many groups is verified every time).
VERIFIED_KEPT_BYTES = 8 << 20
VERIFIED_MAX_BYTES = 16 << 10
_last_warning = float("-inf")


def flask_caching_type(cache_type: str) -> str:
    """The Flask-Caching CACHE_TYPE to build for the portal's CACHE_TYPE setting.

    The setting keeps its user-facing name "RedisCache"; Flask-Caching gets this module's backend
    instead of cachelib's pickling one. Other settings pass through unchanged.
    """
    return f"{__name__}.SignedRedisCache" if cache_type == "RedisCache" else cache_type


class _NoPickleSerializer(BaseRedisSerializer):
    # SignedRedisCache does its own encoding; this stands in for cachelib's pickling serializer
    # so that a code path added to cachelib later cannot unpickle a value by default.
    def dumps(self, value: Any, protocol: int = 0) -> bytes:
        raise TypeError("SignedRedisCache encodes values itself")

    def loads(self, value: bytes | None) -> Any:
        return None


class SignedRedisCache(RedisCache):
    """Flask-Caching's RedisCache with signed JSON values; an entry that does not verify misses."""

    serializer = _NoPickleSerializer()

    def __init__(self, *args: Any, secret_key: str | bytes, fallback_keys=(), **kwargs: Any):
        if not secret_key:
            raise ValueError("SignedRedisCache needs SECRET_KEY to sign its entries")
        super().__init__(*args, **kwargs)
        # Ordered as Flask orders its session keys: oldest first, current last; itsdangerous signs
        # with the last key and accepts a signature made with any of them.
        self._signer = Signer(
            [*fallback_keys, secret_key],
            salt=SALT,
            key_derivation="hmac",
            digest_method=hashlib.sha256,
        )
        self._verified: set[bytes] = set()
        self._verified_bytes = 0

    @classmethod
    def factory(cls, app: Flask, config: dict, args: list, kwargs: dict) -> SignedRedisCache:
        """Build the backend from the settings: its client (one server, TLS or Sentinel, see
        portal.cache.redis_clients), key prefix and the app's signing keys."""
        # Not RedisCache.factory, which knows only redis:// URLs; with Sentinel the client is
        # the master's, which follows a failover, so the signing code needs no subclass of it.
        kwargs["host"] = redis_clients.connect(config["CACHE_REDIS_URL"], config)
        kwargs["key_prefix"] = config.get("CACHE_KEY_PREFIX") or None
        kwargs["secret_key"] = app.secret_key
        kwargs["fallback_keys"] = tuple(app.config.get("SECRET_KEY_FALLBACKS") or ())
        return cls(*args, **kwargs)

    def get(self, key: str) -> Any:
        """The value stored under key, or None when missing, expired or not validly signed."""
        name = self._get_prefix() + key
        return self._decode(name, self._read_client.get(name))

    def get_many(self, *keys: str) -> list[Any]:
        """The values of several keys, each None when missing or not validly signed."""
        names = [self._get_prefix() + key for key in keys]
        if not names:
            return []
        values = self._read_client.mget(names)
        return [self._decode(name, raw) for name, raw in zip(names, values, strict=True)]

    def set(self, key: str, value: Any, timeout: Any = None) -> Any:
        """Store a JSON value (signed) or an integer (bare, for INCR) under key."""
        name = self._get_prefix() + key
        seconds = self._normalize_timeout(timeout)
        return self._write_client.set(
            name=name, value=self._encode(name, value, seconds), ex=_ex(seconds)
        )

    def add(self, key: str, value: Any, timeout: Any = None) -> bool:
        """Store value only if key is not set yet; True when it was stored."""
        name = self._get_prefix() + key
        seconds = self._normalize_timeout(timeout)
        # One SET NX EX: cachelib's SETNX then EXPIRE could leave a key without a timeout.
        encoded = self._encode(name, value, seconds)
        return bool(self._write_client.set(name=name, value=encoded, ex=_ex(seconds), nx=True))

    def set_many(self, mapping: dict[str, Any], timeout: Any = None) -> list[Any]:
        """Store several values in one round trip; the keys that were stored."""
        seconds = self._normalize_timeout(timeout)
        pipe = self._write_client.pipeline(transaction=False)  # as cachelib: no MULTI (twemproxy)
        for key, value in mapping.items():
            name = self._get_prefix() + key
            pipe.set(name=name, value=self._encode(name, value, seconds), ex=_ex(seconds))
        results = pipe.execute()
        return [key for key, stored in zip(mapping, results, strict=True) if stored]

    def _encode(self, name: str, value: Any, seconds: int) -> bytes:
        if type(value) is int:  # not bool, an int subclass: True must not become INCR-able 1
            return str(value).encode("ascii")
        # The key and expiry are signed with the value: a valid entry copied to another key, or
        # written back without a TTL after it expired, does not verify.
        expires = None if seconds == -1 else math.ceil(time.time() + seconds)
        return self.seal(name, value, expires)

    def seal(self, name: str, value: Any, expires_at: int | None) -> bytes:
        """Sign a JSON value for the Redis key (or key#field) `name`, valid until `expires_at`
        (epoch seconds; None: no end). Unlike set(), integers are signed too."""
        envelope = {"k": name, "x": expires_at, "v": value}
        body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return self._signer.sign(body.encode())

    def unseal(self, name: str, raw: bytes | None) -> tuple[str, Any]:
        """Open what `seal` made: ("ok", value), ("missing"|"expired"|"forged", None)."""
        if raw is None:
            return "missing", None
        try:
            envelope = json.loads(self._verified_payload(raw))
        except BadData:
            return _rejected(name, "not signed with this portal's key")
        except ValueError:  # only reachable with a valid signature over something else
            return _rejected(name, "signed but not JSON")
        if not isinstance(envelope, dict) or envelope.keys() != {"k", "x", "v"}:
            return _rejected(name, "signed but not a cache entry")
        if envelope["k"] != name:
            return _rejected(name, f"signed for another key ({envelope['k']!r})")
        expires = envelope["x"]
        if expires is not None and not (isinstance(expires, int) and time.time() < expires):
            # Not a warning: hosts' clocks differ by a little, so a reader may see an entry a
            # moment after its writer's expiry but before Redis drops it.
            log.debug("cache entry %s has expired", name)
            return "expired", None
        return "ok", envelope["v"]

    def _verified_payload(self, raw: bytes) -> bytes:
        # What the signature covers, checked once per distinct value: the same bytes verify
        # the same way under the same keys. Only verified ones are remembered (a forged value is
        # checked, and refused, every time), as the bytes themselves, up to a total size.
        raw = want_bytes(raw)
        if raw in self._verified:
            return raw.rpartition(self._signer.sep)[0]  # as Signer.unsign splits it
        payload = self._signer.unsign(raw)
        if len(raw) <= VERIFIED_MAX_BYTES:
            if self._verified_bytes + len(raw) > VERIFIED_KEPT_BYTES:
                self._verified.clear()  # bounded: the values in use are verified again, once
                self._verified_bytes = 0
            self._verified.add(raw)
            self._verified_bytes += len(raw)
        return payload

    def decode_value(self, name: str, raw: bytes | None) -> Any:
        """What get() makes of the raw bytes read from the Redis key `name` (None: a miss)."""
        return self._decode(name, raw)

    def prefixed(self, key: str) -> str:
        """The Redis key of a cache key (CACHE_KEY_PREFIX in front)."""
        return self._get_prefix() + key

    @property
    def client(self):
        """The Redis client (reads and writes go to the same server: with Sentinel, the master)."""
        return self._write_client

    def _decode(self, name: str, raw: bytes | None) -> Any:
        if raw is not None and _INTEGER.fullmatch(raw):
            return int(raw)
        return self.unseal(name, raw)[1]


def _ex(seconds: int) -> int | None:
    return None if seconds == -1 else seconds


def _rejected(name: str, reason: str) -> tuple[str, None]:
    # Someone wrote to Redis what this portal did not (or an entry outlived a key change): a miss
    # is safe, the caller reads the directory. One line a minute tells the on-call engineer
    # without letting whoever writes the entries flood the log.
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= _WARNING_INTERVAL:
        _last_warning = now
        log.warning("ignoring the cache entry %s (%s): treated as a miss", name, reason)
    return "forged", None
