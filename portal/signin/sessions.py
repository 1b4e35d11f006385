"""Session cookies: Flask's signed cookies, verified once per distinct cookie; the fingerprint.

Every page view and every /auth/verify question carries the session cookie, and checking it
(base64, zlib, JSON, HMAC) was the largest cost of a cached request. The cookie's bytes decide
the outcome completely, so each distinct cookie is verified once per process and the result
kept in a small bounded memo keyed by those exact bytes (and the signing keys): a later request
with the same cookie gets a fresh copy of the same data, after its age is checked again against
PERMANENT_SESSION_LIFETIME. A cookie that does not verify is never kept.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
import time

from flask import Flask, Request, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import BadSignature

from ..quietlog import QuietLog

#: Distinct session cookies whose verified content each process keeps.
MEMO_SIZE = 4096
log = logging.getLogger(__name__)
quiet = QuietLog(log)  # a cookie that does not verify comes with every request it is sent on
#: How far in the future a session may have been signed: by another instance whose clock runs a
#: little ahead (its fresh sign-ins were refused here, each sent back to the sign-in page,
#: until this clock caught up). The same allowance as the cache entries' (accounts.py).
CLOCK_SKEW_SECONDS = 5.0


def client_fingerprint() -> str:
    """Who a session is used by: the client address and browser, hashed.

    The address is the TCP peer, or the one the configured proxies (TRUSTED_PROXY_HOPS) vouch
    for, never an X-Forwarded-For the client wrote itself. A session coming back with another
    fingerprint is demoted ("basic") or dropped ("strong") by Flask-Login.
    """
    return fingerprint(request.remote_addr, request.headers.get("User-Agent", ""))


def used_by_its_client() -> bool:
    """Whether the session comes from the client it was signed in from (its fingerprint then),
    not a copy sent from another address or browser, whatever SESSION_PROTECTION says."""
    return session.get("_id") == client_fingerprint()


def fingerprint(address: str | None, agent: str) -> str:
    """The fingerprint of a client address and User-Agent (see client_fingerprint)."""
    return hashlib.sha256(f"{address}|{agent}".encode("utf-8", "replace")).hexdigest()


def bind_to_client(sender, user=None, **extra) -> None:
    """On a sign-in restored from a remember-me cookie, note who uses the new session.

    Flask-Login does not, so "strong" protection would drop that session on its next request.
    """
    session["_id"] = client_fingerprint()


class PortalSessionInterface(SecureCookieSessionInterface):
    """Same cookies, same signing; the serializer is kept while the keys stay the same, and
    each distinct cookie is verified once (see the module docstring)."""

    def __init__(self):
        #: (signing keys, their serializer, the cookies it verified), replaced as one on a key
        #: rotation: a verification made with the old keys can only land in the old memo.
        self._signing: tuple[tuple, object, dict] | None = None
        self._lock = threading.Lock()
        #: Counts the signing-key sets seen: what was made with the keys before is stale.
        self.generation = 0

    def get_signing_serializer(self, app: Flask):
        """The serializer for the app's current SECRET_KEY and SECRET_KEY_FALLBACKS."""
        return self._signing_for(app)[1]

    def _signing_for(self, app: Flask) -> tuple[tuple, object, dict]:
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        signing = self._signing
        if signing is None or signing[0] != keys:
            serializer = super().get_signing_serializer(app)
            with self._lock:
                # Keys rotated: forget the old serializer and every cookie it verified.
                signing = self._signing = (keys, serializer, {})
                self.generation += 1
        return signing

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """The session the request's cookie carries (empty when it does not verify)."""
        if not app.secret_key:
            return None
        value = request.cookies.get(self.get_cookie_name(app))
        known = self.verified(app, value) if value else None
        if known is None:
            return self.session_class()
        data, nested = known
        # A copy: the request may change its session (flashed messages are lists).
        return self.session_class(copy.deepcopy(data) if nested else data)

    def verified(self, app: Flask, value: str) -> tuple[dict, bool] | None:
        """The data of a session cookie value that verifies and has not expired, else None;
        with whether it holds lists or dicts. The data is shared: never change it."""
        _, serializer, memo = self._signing_for(app)  # read once: a rotation swaps all three
        max_age = app.permanent_session_lifetime.total_seconds()
        known = memo.get(value)
        if known is None:
            try:
                # The age is judged below: itsdangerous refuses any signature from the future.
                data, signed = serializer.loads(value, return_timestamp=True)
            except BadSignature:
                # After a key change rolled out to some instances only, people are sent to the
                # sign-in page with nothing said anywhere: this line is where to look.
                quiet.warning("unverified session", "a session cookie that neither SECRET_KEY "
                              "nor a SECRET_KEY_FALLBACKS key verifies was ignored (its holder "
                              "is asked to sign in): after a key change, every instance needs "
                              "the new key, and the old one in SECRET_KEY_FALLBACKS until the "
                              "sessions it signed have ended")  # fmt: skip
                return None
            nested = any(isinstance(item, (list, dict)) for item in data.values())
            known = (data, signed.timestamp(), nested)
            with self._lock:
                if len(memo) >= MEMO_SIZE:
                    memo.clear()  # bounded: the cookies in use are verified again, once
                memo[value] = known
        data, signed_at, nested = known
        age = time.time() - signed_at
        if age < -CLOCK_SKEW_SECONDS:
            # Signed by an instance whose clock runs ahead: its sign-ins are sent back to the
            # sign-in page here, with nothing else to show for it.
            quiet.warning("session from the future", "a session signed %.0f s ahead of this "
                          "machine's clock was ignored (its holder is asked to sign in): an "
                          "instance's clock runs ahead; check time synchronisation (NTP) on "
                          "every instance", -age)  # fmt: skip
            return None
        if age > max_age:
            return None  # expired (since it was first verified)
        return data, nested
