"""CSRF protection that survives a SECRET_KEY rotation.

Flask-WTF signs a form's token with the current key and checks it with that key alone. While a
rotation rolls through several instances, a form served by one instance (signed with the new
key) is posted to another (still on the old key): every sign-in, sign-out and admin button
answered 400, although each instance lists the other's key in SECRET_KEY_FALLBACKS. A token
signed with a fallback key is taken here as if the current key had signed it. The check that
matters is unchanged: the token must still be the one this browser's session holds.
"""

from __future__ import annotations

from flask import current_app
from flask_wtf.csrf import CSRFProtect
from itsdangerous import BadData, URLSafeTimedSerializer

# Flask-WTF's salt for form tokens (flask_wtf/csrf.py): the re-signed token must match it.
_SALT = "wtf-csrf-token"


class RotatingCSRFProtect(CSRFProtect):
    """CSRFProtect that also accepts a form token signed with a SECRET_KEY_FALLBACKS key."""

    def _get_csrf_token(self):
        token = super()._get_csrf_token()
        fallbacks = current_app.config.get("SECRET_KEY_FALLBACKS") or ()
        if not token or not fallbacks or _signed_with(current_app.secret_key, token):
            return token
        for key in fallbacks:
            raw = _unsigned(key, token)
            if raw is not None:
                # Signed again with the current key, the token goes through Flask-WTF's own
                # check: the comparison with the session's token decides, as for any other.
                return _signer(current_app.secret_key).dumps(raw)
        return token


def _signer(key) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(key, salt=_SALT)


def _unsigned(key, token: str):
    # WTF_CSRF_TIME_LIMIT is honoured: an expired token is not signed again with a new time.
    limit = current_app.config.get("WTF_CSRF_TIME_LIMIT")
    try:
        return _signer(key).loads(token, max_age=limit)
    except BadData:
        return None


def _signed_with(key, token: str) -> bool:
    try:
        _signer(key).loads(token)
    except BadData:
        return False
    return True
