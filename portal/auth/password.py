"""Change password (/password): for a signed-in person, and for one whose password expired or
was reset (they are not signed in: they name themselves and give the current password).

The directory decides (its password policy; see portal/directory/passwords.py) and its refusal
is said in plain words. The current password is a password guess: throttled and counted as a
failed login when wrong. After a change every other sign-in of the person ends (a lost device
may hold one) and this browser is signed in afresh with the new password.
"""

from __future__ import annotations

import time

from flask import abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext, ngettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from .. import accounts, directory, metrics
from ..directory import DirectoryError, InvalidInput, PasswordChangeRequired, PasswordRefused
from ..directory import passwords as reasons
from ..models import fold
from ..signin import audit, throttle
from ..signin.sessions import used_by_its_client
from ..web.errors import RETRY_AFTER_SECONDS
from . import bp
from .views import MISSING, PAUSED, sign_in, wait_until, with_grace_logins_left

#: What each refusal of the directory means to the person (never its own diagnostic).
REFUSALS = {
    reasons.WRONG_CURRENT: _l("Your current password is wrong."),
    reasons.TOO_SHORT: _l("The new password is too short for the company's password policy."),
    reasons.IN_HISTORY: _l("You have used this password before: choose one you have not used."),
    reasons.NOT_COMPLEX: _l("The new password is not complex enough: mix upper and lower case "
                            "letters, digits and symbols."),
    reasons.TOO_YOUNG: _l("Your password was changed too recently to change it again yet. "
                          "Please try again later."),
    reasons.NOT_ALLOWED: _l("The directory does not let you change your password here. Please "
                            "ask the service desk."),
    reasons.POLICY: _l("The new password does not meet the company's password policy (its "
                       "length, complexity or history)."),
    reasons.EXPIRED: _l("Your password has expired and can no longer be used, even to change "
                        "it. Please ask the service desk to reset it."),
    reasons.ALTERED: _l("The new password has characters that signing in would change (such as "
                        "a non-breaking space, a soft hyphen, or letters in a special form like "
                        "\u201c\ufb01\u201d or full-width letters): choose one without them."),
    reasons.REFUSED_BY_PORTAL: _l("Your current password is correct, but your account may not "
                                  "use the portal, so its password cannot be changed here. "
                                  "Please ask the service desk."),
}  # fmt: skip
MISMATCH = _l("The two new passwords are not the same.")
SAME = _l("The new password must be different from the current one.")
CANNOT_CHANGE = _l("The directory is not answering, so passwords cannot be changed right now. "
                   "Please try again in a minute.")  # fmt: skip


@bp.route("/password", methods=["GET", "POST"])
def change_password():
    """The change-password form; on POST, the directory changes the password."""
    if not current_app.config["PASSWORD_SELF_SERVICE"]:
        abort(404)
    signed_in = current_user.is_authenticated
    username = current_user.username if signed_in else session.get("password_change_for", "")
    if request.method != "POST":
        return _form(username, signed_in)
    if not signed_in:
        username = request.form.get("username", "")
    current, new = request.form.get("current", ""), request.form.get("new", "")
    if not username or not current or not new:
        return _form(username, signed_in, MISSING, 400)
    if new != request.form.get("confirm", ""):
        return _form(username, signed_in, MISMATCH, 400, field="confirm")
    if new == current:
        return _form(username, signed_in, SAME, 400, field="new")
    refusal = _new_password_refusal(new)
    if refusal is not None:
        return _form(username, signed_in, refusal, 400, field="new")
    # A change from the person's own sign-in counts with their known browsers; a copy of the
    # session sent from elsewhere (still signed in under "basic") counts with the strangers,
    # or it would buy guesses and use up the count that keeps its owner's browsers open.
    own = signed_in and used_by_its_client()
    attempt = throttle.begin_attempt(username, signed_in=own)
    if attempt is None:
        # As at the login: unlimited guessing is worse than nobody changing for a while.
        audit.record("password.change_failed", user=username, reason="throttle storage down")
        return _form(username, signed_in, PAUSED, 503,
                     headers={"Retry-After": str(RETRY_AFTER_SECONDS)})  # fmt: skip
    if not attempt.allowed:
        hung = directory.struggling()  # as at the login: the count may be of waiting sign-ins
        audit.record("password.change_failed", user=username, reason="throttled",
                     **({"directory_hung": True} if hung else {}))  # fmt: skip
        if hung:
            return _form(username, signed_in, CANNOT_CHANGE, 503,
                         headers={"Retry-After": str(RETRY_AFTER_SECONDS)})  # fmt: skip
        # Said as the sign-in says it, with the wait: the count is the account's, and sign-ins
        # with a wrong password use it up too (a change refused at once reads as a mystery).
        message = ngettext(
            "Too many wrong passwords for this account (sign-ins count too). Please wait "
            "%(num)d minute and try again.",
            "Too many wrong passwords for this account (sign-ins count too). Please wait "
            "%(num)d minutes and try again.",
            attempt.minutes_to_wait,
        )
        return _form(username, signed_in, message, 429,
                     headers={"Retry-After": str(attempt.retry_after)})  # fmt: skip
    started = time.monotonic()
    try:
        name = directory.change_password(username, current, new, _may_use_portal())
    except (InvalidInput, PasswordRefused) as refusal:
        reason = getattr(refusal, "reason", reasons.WRONG_CURRENT)
        if reason == reasons.WRONG_CURRENT:
            metrics.login("failed")  # metrics: a wrong password, as at the login
            # As at the login: an unknown name must not answer sooner than a known one.
            floor = current_app.config["LOGIN_FAILURE_FLOOR_MS"] / 1000
            wait_until(started + floor)
            status, field = 401, "current"
        else:
            throttle.give_back(attempt)  # the current password was right: not a guess
            status, field = (403, "") if reason == reasons.REFUSED_BY_PORTAL else (400, "new")
        audit.record("password.change_failed", user=username, reason=reason)
        message = with_grace_logins_left(REFUSALS[reason], getattr(refusal, "grace_logins_left",
                                                                   None))  # fmt: skip
        return _form(username, signed_in, message, status, field=field)
    except DirectoryError as error:
        throttle.give_back(attempt)
        audit.record("password.change_failed", user=username, reason=type(error).__name__)
        return _form(username, signed_in, CANNOT_CHANGE, 503,
                     headers={"Retry-After": str(RETRY_AFTER_SECONDS)})  # fmt: skip
    throttle.give_back(attempt)
    audit.record("password.changed", user=name)
    # Every sign-in made with the old password ends (this one too); this browser signs in
    # again with the new one, so it is the only one left.
    accounts.revoke_all(name)
    try:
        attrs = directory.authenticate(name, new)
    except (PasswordChangeRequired, DirectoryError):
        attrs = None
    session.pop("password_change_for", None)
    if attrs is None or not accounts.build_user(attrs).is_active:
        session.clear()
        flash(gettext("Your password has been changed. Please sign in with the new one."))
        return redirect(url_for("auth.login"))
    sign_in(accounts.build_user(attrs), attrs, remember=False)
    flash(gettext("Your password has been changed. Any other sign-ins of yours have ended."))
    return redirect(url_for("main.home"))


def _new_password_refusal(password: str):
    # What the directory layer would refuse before sending (too long, control characters):
    # said as a policy refusal of the new password, not as a wrong current one; a password a
    # sign-in would send altered, said as such. None for a password that may be tried.
    try:
        directory.check_new_password(password)
    except PasswordRefused as refused:
        return REFUSALS[refused.reason]
    except InvalidInput:
        return REFUSALS[reasons.POLICY]
    return None


def _may_use_portal():
    # The portal's services are for the people it signs in: a suspended person, or one in no
    # allowed group, changes their password with the directory's own tools, not here. The
    # policy is read now: the check runs on the login thread, outside the app context.
    policy = accounts.policy()
    return lambda groups: policy.admits(fold(groups))


def _form(username: str, signed_in: bool, error=None, status: int = 200, field: str = "",
          headers=None):  # fmt: skip
    body = render_template("password.html", username=username, signed_in=signed_in,
                           error=error, field=field)  # fmt: skip
    return body, status, {"Cache-Control": "no-store", **(headers or {})}
