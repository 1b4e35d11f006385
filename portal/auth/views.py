"""Login binds to the directory; logout clears the session, remember cookie and cache entry."""

from __future__ import annotations

import logging
import time

from flask import current_app, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_fresh, login_user
from flask_wtf.csrf import generate_csrf

from .. import accounts, audit, directory, logins, metrics, throttle
from ..directory import DirectoryError, InvalidInput, PasswordChangeRequired
from ..errors import RETRY_AFTER_SECONDS
from ..extensions import login_manager
from ..urls import safe_next
from . import bp
from .forms import LoginForm

log = logging.getLogger(__name__)
# Looked up on each call so tests can watch the floor without waiting for it.
_monotonic = time.monotonic
_sleep = time.sleep

FAILED = "Wrong username or password."
REFUSED = (
    "Your password is correct, but your account may not use the portal. "
    "Ask your manager or the service desk to add you to the right group."
)
MISSING = "Enter your username and password."
MUST_CHANGE = (
    "Your password has expired or was reset, so it must be changed before you can sign in."
)
UNAVAILABLE = "The directory is not answering, so nobody can sign in right now. Please try again."
PAUSED = (
    "Signing in is paused for a moment: the portal cannot count failed attempts right now. "
    "Please try again in a minute."
)


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the login form; on POST verify the password against the directory."""
    # Only real form fields count: a JSON or file body must not fill the form.
    form = LoginForm(formdata=request.form if request.method == "POST" else None)
    next_url = safe_next(
        form.next.data or request.args.get("next"),
        current_app.config["SSO_ALLOWED_DOMAINS"],
        allow_http=not current_app.config["SESSION_COOKIE_SECURE"],
    )
    if request.method != "POST":
        # A "remember me" session (not fresh) is shown the form: admin pages ask it to re-enter
        # the password.
        if current_user.is_authenticated and login_fresh():
            return redirect(next_url or url_for("main.home"))
        form.next.data = next_url or ""
        return _page(form)
    if not form.validate_on_submit():
        return _page(form, MISSING, 400)
    if not throttle.storage_ok():
        # Unlimited guessing is worse than nobody signing in for a while: fail closed.
        metrics.login("throttled")  # metrics
        audit.record("login.throttled", user=form.username.data, reason="throttle storage down")
        return _page(form, PAUSED, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})
    started = _monotonic()
    response = _check_password(form, next_url)
    if response[1] in (401, 403):
        _wait_until(started + current_app.config["LOGIN_FAILURE_FLOOR_MS"] / 1000)
    return response


@bp.errorhandler(429)
def throttled(error):
    """A login over the limit: the form again, saying when to try (429 with Retry-After)."""
    form = LoginForm(formdata=None)
    form.username.data = request.form.get("username", "")
    wait = throttle.retry_after()
    minutes = max(1, -(-wait // 60))
    message = (
        f"Too many failed sign-ins. Please wait {minutes} minute{'s' if minutes > 1 else ''} "
        "and try again."
    )
    return _page(form, message, 429, {"Retry-After": str(wait)})


def _check_password(form: LoginForm, next_url: str | None):
    typed = form.username.data
    try:
        attrs = directory.authenticate(typed, form.password.data)
    except InvalidInput:
        attrs = None
    except PasswordChangeRequired:
        metrics.login("must_change_password")  # metrics
        audit.record("login.refused", user=typed, reason="password must be changed")
        return _page(form, MUST_CHANGE, 403, change_url=current_app.config["PASSWORD_CHANGE_URL"])
    except DirectoryError as error:
        metrics.login("directory_error")  # metrics
        log.warning("login could not be checked: %s: %s", type(error).__name__, error)
        audit.record("login.unavailable", user=typed, reason=type(error).__name__)
        return _page(form, UNAVAILABLE, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})
    if attrs is None:
        metrics.login("failed")  # metrics
        # Unknown name, wrong password, disabled or locked: one answer, one reason.
        audit.record("login.failure", user=typed, reason="wrong username or password")
        return _page(form, FAILED, 401)
    user = accounts.build_user(attrs)
    if not user.is_active:
        metrics.login("refused")  # metrics
        audit.record("login.refused", user=user.username, reason="not in an allowed group")
        return _page(form, REFUSED, 403)
    # A new session for the new identity: nothing from before the login survives it.
    session.clear()
    login_user(accounts.start_login(user, form.remember.data), remember=form.remember.data)
    # The logout form's token, signed once per session instead of on every page (CSRFProtect
    # accepts it for as long as the session lives: WTF_CSRF_TIME_LIMIT is None).
    # Flask-WTF keeps this request's token in g: it belongs to the session just cleared.
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)
    session["logout_token"] = generate_csrf()
    accounts.remember(attrs)
    audit.record("login.success", user=user.username, remember=bool(form.remember.data))
    metrics.login("success")  # metrics
    return redirect(next_url or url_for("main.home")), 302


@bp.route("/logout", methods=["POST"])
def logout():
    """Sign out: end this login (its copies too), drop the cache entry, session and cookie.

    With `everywhere=1` every login of the person ends, on every device. Works without loading
    the user, so signing out still works while the directory is down. CSRFProtect has already
    checked the form's token.
    """
    login = logins.parse(session.get("_user_id"))
    if login is not None:
        if request.form.get("everywhere") == "1":
            accounts.revoke_all(login.username)
            audit.record("logout.everywhere", user=login.username)
        else:
            accounts.end_login(login.id)
            audit.record("logout", user=login.username)
    session.clear()
    login_manager._update_request_context_with_user()  # anonymous for the rest of the request
    response = redirect(url_for("auth.login", signed_out=1))
    config = current_app.config
    response.delete_cookie(
        config.get("REMEMBER_COOKIE_NAME", "remember_token"),
        path=config.get("REMEMBER_COOKIE_PATH", "/"),
        domain=config.get("REMEMBER_COOKIE_DOMAIN"),
        secure=config["REMEMBER_COOKIE_SECURE"],
        httponly=True,
        samesite=config["REMEMBER_COOKIE_SAMESITE"],
    )
    return response


def _wait_until(deadline: float) -> None:
    # Every refused password answers no sooner than the floor: an unknown name (no bind) must
    # not come back faster than a known one.
    remaining = deadline - _monotonic()
    if remaining > 0:
        _sleep(remaining)


def _page(form: LoginForm, error=None, status: int = 200, headers=None, change_url=None):
    form.password.data = ""
    signed_out = request.args.get("signed_out") == "1" and error is None
    body = render_template(
        "login.html", form=form, error=error, signed_out=signed_out, change_url=change_url
    )
    response_headers = {"Cache-Control": "no-store", **(headers or {})}
    return body, status, response_headers
