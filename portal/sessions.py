"""Flask's signed-cookie sessions, with the cookie serializer built once instead of per request."""

from __future__ import annotations

from flask import Flask
from flask.sessions import SecureCookieSessionInterface


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
