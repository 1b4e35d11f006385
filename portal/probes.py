"""Small liveness probes shared by the status page and the readiness endpoint."""

import secrets

from .extensions import cache


def probe_cache() -> bool:
    """Write and read back a throwaway key; False when the cache backend does not answer."""
    key, value = "probe:" + secrets.token_hex(4), secrets.token_hex(8)
    try:
        cache.set(key, value, timeout=5)
        answered = cache.get(key) == value
        cache.delete(key)
    except Exception:  # noqa: BLE001 - any backend failure means "not ready"
        return False
    return answered
