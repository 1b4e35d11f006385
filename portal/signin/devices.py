"""Known browsers: a stranger's wrong guesses cannot lock a person out of a browser they use.

The account limit (THROTTLE_ACCOUNT_LIMIT) counts failed logins for a name from anywhere, so
anyone can use up a person's attempts with a few wrong guesses and keep them from signing in.
A browser that signed in as that person before holds a signed cookie saying so (DEVICE_DAYS
long, sent to the login form only); the attempts of such browsers for that person are counted
apart from everyone else's, in one count for all of them, as strictly. Strangers guessing lock
out strangers only; the person, in their own browsers, still has their attempts. Collecting
cookies (signing in many times while the password was known) buys nothing: they share the one
count, so an account gets at most twice the limit per window. A cookie outlives a password
change, but then only gives its holder that shared count, no sign-in. Nothing is stored on the
server.
"""

from __future__ import annotations

import secrets

from flask import current_app, request
from itsdangerous import BadData, URLSafeTimedSerializer

#: How long a browser stays known after its last sign-in.
DEVICE_DAYS = 90
_SALT = "portal.known-device"


def cookie_name() -> str:
    """The cookie's name: ``__Secure-`` prefixed whenever cookies are Secure (see cookies.py;
    not ``__Host-``, which would need the path /)."""
    secure = current_app.config["SESSION_COOKIE_SECURE"]
    return "__Secure-portal-device" if secure else "portal-device"


def known_device(account: str) -> str | None:
    """This browser's id if its cookie is a valid one for `account` (as throttle keys it)."""
    value = request.cookies.get(cookie_name())
    if not value or len(value) > 512:
        return None
    try:
        holder, device = _serializer().loads(value, max_age=DEVICE_DAYS * 86400)
    except (BadData, TypeError, ValueError):
        return None
    return device if holder == account and isinstance(device, str) else None


def remember_device(response, account: str, login_path: str) -> None:
    """Set (or renew) the cookie that makes this browser known for `account`, for the login
    form's path only: no app behind the proxy, not even one on the portal's host, is sent it."""
    device = known_device(account) or secrets.token_urlsafe(16)
    response.set_cookie(
        cookie_name(),
        _serializer().dumps([account, device]),
        max_age=DEVICE_DAYS * 86400,
        path=login_path,
        secure=current_app.config["SESSION_COOKIE_SECURE"],
        httponly=True,
        samesite="Lax",
    )


def _serializer() -> URLSafeTimedSerializer:
    # Keys rotate as the session's do: the current one signs, the fallbacks still verify.
    fallbacks = current_app.config.get("SECRET_KEY_FALLBACKS") or ()
    keys = [*fallbacks, current_app.secret_key]
    return URLSafeTimedSerializer(keys, salt=_SALT)
