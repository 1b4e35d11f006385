"""Cookie names: __Host- or __Secure- prefixed whenever the cookies are Secure.

Browsers accept a ``__Host-`` cookie only when it is Secure, has no Domain and has Path=/, and
a ``__Secure-`` cookie only when it is Secure. So a cookie by such a name was set over HTTPS by
this very host (``__Host-``): a page on plain HTTP, or on a sibling subdomain, cannot plant or
overwrite a session (session fixation through a weaker neighbour).
"""

from __future__ import annotations

import hashlib
import hmac

from flask import current_app, session
from flask_login import LoginManager, user_loaded_from_cookie
from flask_login.utils import decode_cookie

from ..settings.values import require

# The libraries' own defaults: Flask's session cookie and Flask-Login's remember-me cookie.
_LIBRARY_NAMES = {"SESSION_COOKIE_NAME": "session", "REMEMBER_COOKIE_NAME": "remember_token"}
_PORTAL_NAMES = {"SESSION_COOKIE_NAME": "portal-session", "REMEMBER_COOKIE_NAME": "portal-remember"}


def cookie_names(config) -> dict[str, str]:
    """SESSION_COOKIE_NAME and REMEMBER_COOKIE_NAME for these settings.

    Secure, host-only cookies for the path / get ``__Host-portal-session`` and
    ``__Host-portal-remember``; Secure cookies for a parent domain (SESSION_COOKIE_DOMAIN) get
    ``__Secure-`` instead; plain-HTTP development keeps ``session`` and ``remember_token``. A
    name set in the settings (anything but those two) is kept, once its prefix is possible.
    """
    secure = config["SESSION_COOKIE_SECURE"]
    scopes = {
        # Flask's session cookie path falls back to APPLICATION_ROOT; Flask-Login's is "/".
        "SESSION_COOKIE_NAME": (
            config.get("SESSION_COOKIE_DOMAIN"),
            config.get("SESSION_COOKIE_PATH") or config.get("APPLICATION_ROOT") or "/",
        ),
        "REMEMBER_COOKIE_NAME": (
            config.get("REMEMBER_COOKIE_DOMAIN"),
            config.get("REMEMBER_COOKIE_PATH", "/"),
        ),
    }
    names = {}
    for key, (domain, path) in scopes.items():
        host_only = bool(secure and not domain and path == "/")
        chosen = config.get(key, _LIBRARY_NAMES[key])
        if chosen != _LIBRARY_NAMES[key]:
            _check_chosen_name(key, chosen, secure, host_only)
            names[key] = chosen
        elif host_only:
            names[key] = "__Host-" + _PORTAL_NAMES[key]
        elif secure:
            names[key] = "__Secure-" + _PORTAL_NAMES[key]
        else:
            names[key] = chosen
    return names


def _check_chosen_name(key: str, name, secure: bool, host_only: bool) -> None:
    # A prefix the cookie's attributes cannot satisfy makes browsers drop the cookie silently:
    # nobody could sign in. Browsers match the prefixes case-insensitively.
    require(isinstance(name, str) and name, key, "a cookie name")
    lowered = name.lower()
    if lowered.startswith("__host-"):
        require(
            host_only,
            key,
            "a __Host- cookie needs SESSION_COOKIE_SECURE = true, no SESSION_COOKIE_DOMAIN and "
            "the path /; browsers refuse it otherwise",
        )
    elif lowered.startswith("__secure-"):
        require(
            secure, key, "a __Secure- cookie needs SESSION_COOKIE_SECURE = true; browsers refuse it"
        )


class PortalLoginManager(LoginManager):
    """Flask-Login, whose own removal of the remember-me cookie is Secure like the cookie, and
    whose remember-me cookies survive a SECRET_KEY rotation.

    Flask-Login removes the cookie (after logout_user or a failed session protection check)
    without the Secure attribute, and browsers ignore that for a __Host- or __Secure- cookie:
    the person would be signed straight back in by the cookie that was meant to go. It also
    checks the cookie against SECRET_KEY only, so rotating the key would end every "keep me
    signed in" while sessions carried on through SECRET_KEY_FALLBACKS.
    """

    def _load_user_from_remember_cookie(self, cookie):
        if not cookie.isascii():
            return None  # never one of ours (see remembered_login_id)
        user = super()._load_user_from_remember_cookie(cookie)
        if user is not None:
            return user
        login_id = _decode_with_fallback_keys(cookie)
        if login_id is None:
            return None
        # What Flask-Login does for a cookie signed with the current key...
        session["_user_id"], session["_fresh"] = login_id, False
        user = self._user_callback(login_id)
        if user is not None:
            session["_remember"] = "set"  # ...plus: the cookie is signed again, with the new key
            user_loaded_from_cookie.send(current_app._get_current_object(), user=user)
        return user

    def _clear_cookie(self, response):
        config = current_app.config
        response.delete_cookie(
            config["REMEMBER_COOKIE_NAME"],
            path=config.get("REMEMBER_COOKIE_PATH", "/"),
            domain=config.get("REMEMBER_COOKIE_DOMAIN"),
            secure=config["REMEMBER_COOKIE_SECURE"],
            httponly=True,
            samesite=config["REMEMBER_COOKIE_SAMESITE"],
        )


def remembered_login_id(cookie: str | None) -> str | None:
    """The login id of a remember-me cookie signed with SECRET_KEY or one of
    SECRET_KEY_FALLBACKS; None for any other value (forged, garbled, of a dropped key)."""
    if not cookie or not cookie.isascii():
        # The portal writes only ASCII, and comparing the signature of other text raises
        # (hmac.compare_digest): a cookie such as 'remember_token="a|\351"' broke every page.
        return None
    return decode_cookie(cookie) or _decode_with_fallback_keys(cookie)


def _decode_with_fallback_keys(cookie: str) -> str | None:
    # Flask-Login's cookie is "payload|HMAC-SHA512(SECRET_KEY, payload)".
    payload, _, digest = cookie.rpartition("|")
    for key in current_app.config.get("SECRET_KEY_FALLBACKS") or ():
        secret = key.encode("latin1") if isinstance(key, str) else key  # as Flask-Login does
        expected = hmac.new(secret, payload.encode(), hashlib.sha512).hexdigest()
        if payload and hmac.compare_digest(expected, digest):
            return payload
    return None
