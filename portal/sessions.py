"""Session cookies: Flask's signed cookies (serializer built once) and the client fingerprint."""

from __future__ import annotations

import hashlib

from flask import Flask, request, session
from flask.sessions import SecureCookieSessionInterface


def client_fingerprint() -> str:
    """Who a session is used by: the client address and browser, hashed.

    The address is the TCP peer, or the one the configured proxies (TRUSTED_PROXY_HOPS) vouch
    for, never an X-Forwarded-For the client wrote itself. A session coming back with another
    fingerprint is demoted ("basic") or dropped ("strong") by Flask-Login.
    """
    agent = request.headers.get("User-Agent", "")
    seen = f"{request.remote_addr}|{agent}".encode("utf-8", "replace")
    return hashlib.sha256(seen).hexdigest()


def bind_to_client(sender, user=None, **extra) -> None:
    """On a sign-in restored from a remember-me cookie, note who uses the new session.

    Flask-Login does not, so "strong" protection would drop that session on its next request.
    """
    session["_id"] = client_fingerprint()


class PortalSessionInterface(SecureCookieSessionInterface):
    """Same cookies, same signing; the serializer is kept while the keys stay the same.

    Flask builds a new serializer (and probes it) on every request; every page view decodes the
    session cookie, so that work is on the hot path for no gain.
    """

    def __init__(self):
        self._serializers: dict = {}

    def get_signing_serializer(self, app: Flask):
        """The serializer for the app's current SECRET_KEY and SECRET_KEY_FALLBACKS."""
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        serializer = self._serializers.get(keys)
        if serializer is None:
            serializer = super().get_signing_serializer(app)
            self._serializers = {keys: serializer}  # keys rotated: forget the old one
        return serializer
