"""Login throttling with Flask-Limiter: failed logins per account (from anywhere) and per address.

Only answers that refused a password (401 and 403) are counted, so the directory being down
never uses up anyone's attempts; a throttled login is refused before the directory is asked,
whatever the password. Counts live in memory, or in Redis so every worker and instance shares
them. When that storage cannot be reached, login is refused (503) rather than left unlimited.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, current_app, request
from flask_limiter import Limiter, RequestLimit

from . import audit, directory, metrics
from .directory import InvalidInput

log = logging.getLogger(__name__)

_LIMITER = "portal.limiter"
_LOGIN_ENDPOINT = "auth.login"
# Answers that mean "a password was tried and did not open a session".
_COUNTED = frozenset({401, 403})


def init_app(app: Flask) -> None:
    """Throttle POSTs to the login view (call after the auth blueprint is registered)."""
    config = app.config
    config["RATELIMIT_STORAGE_URI"] = storage_url(config)
    timeout = config["CACHE_REDIS_TIMEOUT"]
    if config["RATELIMIT_STORAGE_URI"].startswith("memory://"):
        config["RATELIMIT_STORAGE_OPTIONS"] = {}
    else:
        # Without socket timeouts a hung Redis would hang every login.
        config["RATELIMIT_STORAGE_OPTIONS"] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
    config["RATELIMIT_KEY_PREFIX"] = config["CACHE_KEY_PREFIX"] + "throttle"
    # One limiter per app: Flask-Limiter keeps its storage on the Limiter object.
    limiter = Limiter(
        key_func=client_address,
        strategy="moving-window",
        headers_enabled=False,  # "attempts left" is nobody's business; Retry-After is set on 429
        # A storage error while counting must not turn an answer already decided into a 500;
        # the login view checks the storage first and refuses when it is down.
        swallow_errors=True,
    )
    limiter.init_app(app)
    app.extensions[_LIMITER] = limiter
    counted = {"deduct_when": _refused_a_password, "methods": ["POST"], "on_breach": _breached}
    view = app.view_functions[_LOGIN_ENDPOINT]
    view = limiter.limit(lambda: current_app.config["THROTTLE_IP_LIMIT"], **counted)(view)
    view = limiter.limit(
        lambda: current_app.config["THROTTLE_ACCOUNT_LIMIT"], key_func=account_key, **counted
    )(view)
    app.view_functions[_LOGIN_ENDPOINT] = view


def storage_url(config) -> str:
    """Where the counts live: THROTTLE_STORAGE_URL, else the Redis cache, else memory."""
    if config["THROTTLE_STORAGE_URL"]:
        return config["THROTTLE_STORAGE_URL"]
    if config["CACHE_TYPE"] == "RedisCache":
        return config["CACHE_REDIS_URL"]
    return "memory://"


def storage_ok() -> bool:
    """Tell whether the counts can be read and written right now (a PING with Redis)."""
    try:
        return bool(current_app.extensions[_LIMITER].storage.check())
    except Exception as error:  # noqa: BLE001 - every storage raises its own errors
        log.warning("login throttling storage unreachable: %s", error)
        return False


def retry_after() -> int:
    """Seconds until the limit this request broke lets another attempt through."""
    breached = current_app.extensions[_LIMITER].current_limit
    if breached is None:
        return 60
    return max(1, int(breached.reset_at - time.time()))


def client_address() -> str:
    """The client's address: the TCP peer, or what TRUSTED_PROXY_HOPS proxies report."""
    return "ip:" + (request.remote_addr or "unknown")


def account_key() -> str:
    """The account a login names, the same for every spelling of it (unknown names too)."""
    typed = request.form.get("username", "")
    try:
        name = directory.canonical_username(typed)
    except InvalidInput:
        # Never reaches the directory, but still counts: against one shared bucket.
        name = "\x00invalid"
    return "account:" + name


def _refused_a_password(response) -> bool:
    return response.status_code in _COUNTED


def _breached(limit: RequestLimit) -> None:
    which = "account" if "account:" in limit.key else "address"
    metrics.login("throttled")  # metrics
    audit.record(
        "login.throttled",
        user=request.form.get("username", ""),
        reason=f"too many failed logins for this {which}",
    )
