"""Every error answer in one place: a friendly HTML page, or JSON for clients that ask for it."""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, make_response, render_template, request, session
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from ..directory import DirectoryError
from ..extensions import login_manager
from ..quietlog import QuietLog
from ..signin import audit

log = logging.getLogger(__name__)
quiet = QuietLog(log)

#: Seconds a client is told to wait before trying again while the directory is down.
RETRY_AFTER_SECONDS = 30

_MESSAGES = {
    400: (_l("Bad request"),
          _l("The request could not be understood. Please go back and try again.")),
    403: (_l("Not allowed"), _l("Your account is not in a group that may open this page.")),
    404: (_l("Not found"), _l("There is no page at this address.")),
    405: (_l("Method not allowed"), _l("This address does not accept that kind of request.")),
    413: (_l("Too large"), _l("What you sent is larger than the portal accepts.")),
    503: (
        _l("Directory unavailable"),
        _l("The company directory is not answering right now, so the portal cannot check who you "
           "are."),
    ),
}  # fmt: skip


def init_app(app: Flask) -> None:
    """Register the error handlers."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(CSRFError, csrf_error)
    app.register_error_handler(DirectoryError, _directory_error)


def render_error(status: int, detail: str | None = None, title: str | None = None):
    """Answer with a status, as JSON or as the friendly error page."""
    usual_title, message = _MESSAGES.get(status, (_l("Error"), _l("Something went wrong.")))
    title, message = str(title or usual_title), str(detail or message)
    if _wants_json():
        response = jsonify(error=title, message=message, status=status)
    else:
        _user_or_anonymous()
        # A browser holding a sign-in (even one the outage keeps us from loading) may end it.
        signed_in = bool(session.get("_user_id")) or _remember_cookie() in request.cookies
        page = render_template("error.html", title=title, message=message, status=status,
                               signed_in=signed_in)  # fmt: skip
        response = make_response(page)
    response.status_code = status
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _http_error(error: HTTPException):
    if error.code is None or error.code < 400:
        return error
    if error.code == 403:
        _audit_denial()
    return render_error(error.code, _own_description(error))


def _own_description(error: HTTPException) -> str | None:
    # abort(503, "...") says something specific; werkzeug's stock sentences are not for people.
    described = error.description
    return described if described and described != type(error).description else None


def _audit_denial() -> None:
    # Every refusal of a page (group pages, admin pages, ACCESS_RULES) is an abort(403).
    try:
        who = current_user.username if current_user.is_authenticated else None
    except DirectoryError:
        who = None
    audit.record("access.denied", user=who, reason="not allowed by group or rule")


def log_csrf_refusal(error: CSRFError) -> None:
    """Say in the log, once a minute, why a form's CSRF token was refused."""
    # A token signed with a key this instance does not know (a SECRET_KEY rotation half rolled
    # out) fails every form, and the page alone says nothing.
    reason = error.description
    if "invalid" in reason:  # its signature: not a stale form, which reads "do not match"
        reason += " (signed with a key this instance does not know: during a key rotation "
        reason += "every instance needs the other keys in SECRET_KEY_FALLBACKS)"
    quiet.warning("400 CSRF", "answering 400 to a form: %s", reason)


def csrf_error(error: CSRFError):
    """The 400 page for a form whose CSRF token was refused."""
    log_csrf_refusal(error)
    return render_error(
        400, gettext("The form expired or was not sent from the portal. Please try again.")
    )


def _directory_error(error: DirectoryError):
    # DirectoryUnavailable (no server answered) and refusals the portal cannot act on (a
    # referral, a size limit) alike: the person can only try again; the log says which.
    # Once a minute per kind (with a count): during an outage every request lands here.
    quiet.warning(f"503 {type(error).__name__}", "answering 503 for %r: %s: %s", request.path,
                  type(error).__name__, error)  # fmt: skip
    return render_error(503)


def _user_or_anonymous() -> None:
    # Every page shows the signed-in person, so rendering loads them; when that load is what
    # failed (directory down, cache miss) the error page is shown as to an anonymous visitor.
    try:
        current_user._get_current_object()
    except DirectoryError:
        login_manager._update_request_context_with_user()


def _remember_cookie() -> str:
    return current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token")


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return (
        best == "application/json"
        and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]
    )
