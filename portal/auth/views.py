"""Login binds to the directory; logout clears the session, remember cookie and cache entry."""

from __future__ import annotations

import hashlib
import logging
import time
from urllib.parse import urlsplit

from flask import (
    after_this_request,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import get_locale, ngettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_fresh, login_user
from flask_wtf.csrf import CSRFError, generate_csrf
from markupsafe import escape

from .. import accounts, directory, metrics
from ..directory import DirectoryError, InvalidInput, PasswordChangeRequired
from ..extensions import login_manager
from ..main.views import expiry_notice, password_warning
from ..quietlog import QuietLog
from ..signin import audit, devices, logins, throttle
from ..signin.cookies import remembered_login_id
from ..signin.sessions import used_by_its_client
from ..web.errors import RETRY_AFTER_SECONDS, csrf_error, log_csrf_refusal
from ..web.urls import safe_next
from . import bp
from .forms import LoginForm

log = logging.getLogger(__name__)
quiet = QuietLog(log)
# Looked up on each call so tests can watch the floor without waiting for it.
_monotonic = time.monotonic
_sleep = time.sleep

# Shown to people, in their language (lazy: translated when the page is rendered).
FAILED = _l("Wrong username or password.")
REFUSED = _l(
    "Your password is correct, but your account is not in any group that may use the portal "
    "yet. New accounts often get their groups within a day: ask your manager or the service "
    "desk to add you to your team's group."
)
SUSPENDED = _l(
    "Your password is correct, but your account is suspended from the portal (it is in a group "
    "that may not use it). This is usually deliberate: if you think it is a mistake, contact "
    "the service desk."
)
MISSING = _l("Enter your username and password.")
MUST_CHANGE = _l(
    "Your password has expired or was reset, so it must be changed before you can sign in."
)
NO_GRACE_LEFT = _l(
    "Your password has expired, and that was its last grace sign-in: the directory will not "
    "accept it again, even to change it. Please ask the service desk to reset it."
)
UNAVAILABLE = _l(
    "The directory is not answering, so nobody can sign in right now. Please try again."
)
PAUSED = _l(
    "Signing in is paused for a moment: the portal cannot count failed attempts right now. "
    "Please try again in a minute."
)
EXPIRED = _l("The sign-in form had expired (or the browser dropped its cookie). Please sign in "
             "again.")  # fmt: skip


@bp.errorhandler(CSRFError)
def expired_form(error: CSRFError):
    """A sign-in form whose token no longer holds (open too long, its cookie gone): the form
    again, to sign in afresh, rather than a page that leads nowhere; other forms, and a form
    sent from another site, get the portal's 400 page."""
    if (
        request.endpoint == "auth.logout"
        and _sent_from_this_site()
        and not _anyone_signed_in_here()
    ):
        # Signed out already (in another tab, or the session ended): a sign-out form's token
        # belongs to a session that is gone. Nothing to protect, and the person must learn
        # they are signed out, not read "Bad request" and wonder on a shared computer. Only a
        # form of this site: another site's POST comes without the (SameSite) cookies, and a
        # person still kept signed in would read "You are signed out".
        return redirect(url_for("auth.login", signed_out="1"))
    if request.endpoint != "auth.login" or not _sent_from_this_site():
        # The form again would write a new session: another site posting here could replace
        # a signed-in visitor's session cookie (a sign-out) and fill in a name of its choosing.
        return csrf_error(error)
    log_csrf_refusal(error)
    form = LoginForm(formdata=None)
    form.username.data = request.form.get("username", "")[:256]
    form.next.data = _return_address(request.form.get("next")) or ""
    return _page(form, EXPIRED, 400)


def _asking_again() -> bool:
    # A "keep me signed in" session (not fresh) asked for its password again.
    return current_user.is_authenticated and not login_fresh()


def _anyone_signed_in_here() -> bool:
    # Read from the cookies alone: current_user would sign in from a remember-me cookie.
    return bool(session.get("_user_id") or request.cookies.get(_remember_cookie_name()))


def _sent_from_this_site() -> bool:
    # What the browser says of the form's origin: Sec-Fetch-Site, and Origin if it sends one.
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


def _return_address(asked: object) -> str | None:
    # Where to go after signing in: a path or address of this site, or https on a host in
    # SSO_ALLOWED_DOMAINS; None for anything else.
    return safe_next(
        asked,
        current_app.config["SSO_ALLOWED_DOMAINS"],
        allow_http=not current_app.config["SESSION_COOKIE_SECURE"],
        own_origin=f"{request.scheme}://{request.host}",
    )


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the login form; on POST verify the password against the directory."""
    # Only real form fields count: a JSON or file body must not fill the form.
    form = LoginForm(formdata=request.form if request.method == "POST" else None)
    asked = form.next.data or request.args.get("next")
    next_url = _return_address(asked)
    if asked and next_url is None:
        # Else the person lands on the home page after signing in, and nobody knows why. Only
        # the host: a path or query may hold a secret. Anyone can make such a link, so the line
        # says whose it was and to list the host only if it is an app of yours.
        quiet.warning("next refused", "a return address after sign-in was refused (host %r, "
                      "from %s): not a path or address of this site, nor https on a host in "
                      "SSO_ALLOWED_DOMAINS; add its host there only if it is one of your apps",
                      _host_of(str(asked))[:100], request.remote_addr)  # fmt: skip
    if request.method != "POST":
        # A "remember me" session (not fresh) is shown the form: admin pages ask it to re-enter
        # the password.
        if current_user.is_authenticated and login_fresh():
            return redirect(next_url or url_for("main.home"))
        form.next.data = next_url or ""
        if current_user.is_authenticated:
            # Asked again for the password: the name is known, only the password is wanted,
            # and "keep me signed in" stays as chosen (unticked, the sign-in would drop it).
            form.username.data = current_user.username
            form.remember.data = bool(
                request.cookies.get(current_app.config["REMEMBER_COOKIE_NAME"])
            )
            return _page(form, confirming=True)
        return _page(form)
    asking_again = _asking_again()
    if asking_again:
        # The password of the person signed in, asked again: the name is theirs, whatever the
        # form sent (another name typed there took the browser over without a word). Someone
        # else signs out first ("Not erin? Sign out"), and knows whose sign-in ends.
        form.username.data = current_user.username
    if not form.validate_on_submit():
        return _page(form, MISSING, 400)
    if any(len(request.form.getlist(name)) > 1 for name in ("username", "password")):
        # Two names or two passwords: no guessing which one was meant.
        return _page(form, MISSING, 400)
    attempt = throttle.begin_attempt(form.username.data if asking_again else None)
    if attempt is None:
        # Unlimited guessing is worse than nobody signing in for a while: fail closed.
        # An outage, not guessing: counted and logged apart from the throttle's refusals.
        metrics.login("counts_unavailable")  # metrics
        audit.record("login.unavailable", user=form.username.data, reason="throttle storage down")
        return _page(form, PAUSED, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})
    if not attempt.allowed:
        # Throttled as ever (counted and logged so); but while a sign-in here waits on a hung
        # directory, the count may be full of such attempts (a stranger's too: given back
        # when it fails them), and "wait 15 minutes" would be untrue: the person is told the
        # directory is not answering, which is so. No guess gets through either way.
        hung = directory.struggling()
        metrics.login("throttled")  # metrics
        audit.record(
            "login.throttled",
            user=form.username.data,
            reason=f"too many failed logins for this {attempt.exceeded}",
            **({"directory_hung": True} if hung else {}),
        )
        if hung:
            return _page(form, UNAVAILABLE, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})
        return _throttled_page(form, attempt)
    started = _monotonic()
    response = _check_password(form, next_url)
    if response[1] in (401, 403):
        wait_until(started + current_app.config["LOGIN_FAILURE_FLOOR_MS"] / 1000)
    if response[1] != 401:
        # Only refused passwords count. A 403 had the right password (must change it, or not
        # allowed in): no guess, and the change form that follows must not find the count used.
        throttle.give_back(attempt)
    return response


def _throttled_page(form: LoginForm, attempt: throttle.Attempt):
    # The form again, saying when to try (429 with Retry-After); the directory was not asked.
    message = ngettext(
        "Too many failed sign-ins. Please wait %(num)d minute and try again.",
        "Too many failed sign-ins. Please wait %(num)d minutes and try again.",
        attempt.minutes_to_wait,
    )
    return _page(form, message, 429, {"Retry-After": str(attempt.retry_after)})


def with_grace_logins_left(message, left: int | None):
    """`message`, followed by how many grace sign-ins an expired password has left (as is
    when the directory did not say; the service desk when none is left)."""
    if left is None:
        return message
    if left == 0:
        return " ".join([str(message), str(NO_GRACE_LEFT)])
    return " ".join([str(message), ngettext(
        "You have %(num)d grace sign-in left with it: changing it uses it, so choose a new "
        "password the policy accepts.",
        "You have %(num)d grace sign-ins left with it: changing it uses one, as does each "
        "new password the policy refuses.", left)])  # fmt: skip


def _check_password(form: LoginForm, next_url: str | None):
    typed = form.username.data
    try:
        attrs = directory.authenticate(typed, form.password.data)
    except InvalidInput:
        attrs = None
    except PasswordChangeRequired as refused:
        metrics.login("must_change_password")  # metrics
        audit.record("login.refused", user=typed, reason="password must be changed")
        # The change page fills the name in (the change itself binds with the password).
        session["password_change_for"] = typed
        left = refused.grace_logins_left
        if left == 0:
            # Every bind on an expired password uses a grace login, the change's too: with
            # none left it would fail however it is made. Said now, not after another try.
            return _page(form, NO_GRACE_LEFT, 403)
        return _page(form, with_grace_logins_left(MUST_CHANGE, left), 403, must_change=True)
    except DirectoryError as error:
        metrics.login("directory_error")  # metrics
        quiet.warning(f"login {type(error).__name__}", "login could not be checked: %s: %s",
                      type(error).__name__, error)  # fmt: skip
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
        suspended = user.is_suspended
        reason = "in a denied group" if suspended else "not in an allowed group"
        audit.record("login.refused", user=user.username, reason=reason)
        return _page(form, SUSPENDED if suspended else REFUSED, 403)
    sign_in(user, attrs, bool(form.remember.data))
    notice = expiry_notice(password_warning(user))
    if notice is not None and next_url and not _is_home_page(next_url):
        # The app the person came from will not say it (the home page says it itself).
        flash(notice)
    return redirect(next_url or url_for("main.home")), 302


def sign_in(user, attrs: dict, remember: bool) -> None:
    """Start a login for a person whose password was just checked: a new session, the
    sign-out token, the cache entry, the audit line."""
    # A new session for the new identity: nothing from before the login survives it, not
    # even a remember-me cookie of whoever used this browser before. Their sign-in ends as a
    # sign-out would end it: else copies of those cookies kept working for their lifetime.
    for replaced in _this_browsers_logins()[0]:
        if not accounts.login_lives(replaced.id):
            continue  # ended already (a password change ends every login first)
        stored = accounts.end_login(replaced.id)
        again = replaced.username == user.username
        reason = "signed in again in this browser" if again else "another person signed in here"
        audit.record("logout", user=replaced.username,
                     reason=reason if stored else f"{reason}; cache down")  # fmt: skip
    session.clear()
    login_user(accounts.start_login(user, remember), remember=remember)
    if not remember and _remember_cookie_name() in request.cookies:
        session["_remember"] = "clear"  # Flask-Login deletes it with this response
    # The logout form's token, signed once per session instead of on every page (CSRFProtect
    # accepts it for as long as the session lives: WTF_CSRF_TIME_LIMIT is None).
    # Flask-WTF keeps this request's token in g: it belongs to the session just cleared.
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)
    session["logout_token"] = generate_csrf()
    session["logout_key"] = _key_id()
    accounts.remember(attrs)
    _remember_this_browser(throttle.account_key(user.username))
    audit.record("login.success", user=user.username, remember=remember)
    metrics.login("success")  # metrics


def _remember_this_browser(account: str) -> None:
    # Its failed logins for this person are then counted apart from strangers' (devices.py).
    @after_this_request
    def known(response):
        devices.remember_device(response, account, url_for("auth.login"))
        return response


@bp.get("/logout")
def confirm_logout():
    """A "Sign out?" page with the button (a link or a typed address cannot sign anyone out:
    sign-out is a CSRF-checked POST); with `everywhere=1`, the sign-out of every device."""
    everywhere = request.args.get("everywhere") == "1"
    if not session.get("_user_id") and not request.cookies.get(_remember_cookie_name()):
        # Nobody is signed in in this browser (a bookmark, a second tab): nothing to ask.
        return redirect(url_for("auth.login", signed_out="1"))
    return render_template("logout.html", everywhere=everywhere)


@bp.post("/logout")
def logout():
    """Sign out: end this login (its copies too), drop the cache entry, session and cookie.

    With `everywhere=1` every login of the person ends, on every device. Works without loading
    the user, so signing out still works while the directory is down. CSRFProtect has already
    checked the form's token.
    """
    ended, everywhere = True, False
    found, moved = _this_browsers_logins()
    for login in found:
        # Only a login that still works signs its person out everywhere: a copy of a cookie
        # that was signed out, expired or revoked (a lost phone's, a former owner's of the
        # name) only clears its own browser, or it could end its person's sign-ins at will.
        if request.form.get("everywhere") == "1" and accounts.login_lives(login.id):
            stored, event = accounts.revoke_all(login.username), "logout.everywhere"
            everywhere = True
        else:
            stored, event = accounts.end_login(login.id), "logout"
        audit.record(event, user=login.username, reason="" if stored else "cache down")
        ended = ended and stored
    session.clear()
    login_manager._update_request_context_with_user()  # anonymous for the rest of the request
    # This browser is signed out either way; if the cache could not record it, copies of the
    # cookies (other devices) still work, and the page must say so rather than "signed out".
    said = ("everywhere" if everywhere else "1") if ended else "incomplete"
    if said == "1" and moved and request.form.get("everywhere") == "1":
        # Asked to end every sign-in from a session that moved: nothing else ended (the
        # owner's network may have changed, or it is a copy), and the page must say so.
        said = "moved"
    response = redirect(url_for("auth.login", signed_out=said))
    config = current_app.config
    response.delete_cookie(
        _remember_cookie_name(),
        path=config.get("REMEMBER_COOKIE_PATH", "/"),
        domain=config.get("REMEMBER_COOKIE_DOMAIN"),
        secure=config["REMEMBER_COOKIE_SECURE"],
        httponly=True,
        samesite=config["REMEMBER_COOKIE_SAMESITE"],
    )
    return response


def _this_browsers_logins() -> tuple[list, bool]:
    # The session's login, and the one a remember-me cookie names (it may be an older one);
    # with whether the session moved (then its login is not this browser's to end).
    remembered = remembered_login_id(request.cookies.get(_remember_cookie_name()))
    moved = bool(session.get("_user_id")) and not session_is_this_clients()
    ids = {None if moved else session.get("_user_id"), remembered}
    return list(filter(None, map(logins.parse, ids))), moved


def session_is_this_clients() -> bool:
    """Whether the session may act for its login here: under SESSION_PROTECTION = "strong" a
    session sent from another address or browser is no sign-in (Flask-Login drops it on any
    other page), so a copy of it cannot end its owner's login or every one of them."""
    if current_app.config.get("SESSION_PROTECTION") != "strong":
        return True
    return used_by_its_client()


@bp.app_template_global()
def logout_token() -> str:
    """The sign-out forms' CSRF token: the one signed at login while SECRET_KEY is unchanged.

    After a key rotation that token no longer verifies (Flask-WTF checks the current key only),
    so a fresh one is signed: people must always be able to sign out.
    """
    token = session.get("logout_token")
    if token and session.get("logout_key") == _key_id():
        return token
    return generate_csrf()


def _remember_cookie_name() -> str:
    return current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token")


def _key_id() -> str:
    # Names the key the token was signed with, without revealing anything about it.
    secret = str(current_app.secret_key).encode()
    return hashlib.sha256(b"portal.logout-key|" + secret).hexdigest()[:12]


def wait_until(deadline: float) -> None:
    """Sleep until `deadline` (time.monotonic seconds) if it is still ahead."""
    # Every refused password answers no sooner than the floor: an unknown name (no bind) must
    # not come back faster than a known one.
    remaining = deadline - _monotonic()
    if remaining > 0:
        _sleep(remaining)


def _page(form: LoginForm, error=None, status: int = 200, headers=None, must_change=False,
          confirming: bool = False):  # fmt: skip
    form.password.data = ""
    if confirming or _asking_again():
        # Every answer of the form that asks again (a wrong password, a field left empty, the
        # throttle, an expired form) still asks again, for the same person.
        confirming = True
        form.username.data = current_user.username
    signed_out = request.args.get("signed_out") if error is None else None
    if error is None and not (signed_out or must_change or form.username.data or
                              form.remember.data):  # fmt: skip
        body = _empty_form(form)
    else:
        body = render_template(
            "login.html",
            form=form,
            error=error,
            signed_out=signed_out,
            must_change=must_change,
            confirming=confirming,
            wrong_password=error is FAILED,
            missing=error is MISSING,
        )
    response_headers = {"Cache-Control": "no-store", **(headers or {})}
    return body, status, response_headers


#: Rendered empty forms kept (languages times address prefixes; the prefix comes from
#: SCRIPT_NAME, which a proxy may pass on from the client).
EMPTY_FORMS_KEPT = 32
#: Stand-ins in a rendered empty form for the two values that differ between visitors.
_TOKEN_MARK, _NEXT_MARK = "\x00csrf-token\x00", "\x00next\x00"
_NO_MESSAGE = {"error": None, "signed_out": None, "must_change": False, "confirming": False,
               "wrong_password": False, "missing": False}  # fmt: skip


def _empty_form(form: LoginForm) -> str:
    """The sign-in page with an empty form, as render_template gives it: rendered once per
    language and address prefix, then only the CSRF token and `next` are filled in (the page
    of every first visit and of every app's redirect to the portal)."""
    if current_user.is_authenticated or "_flashes" in session:
        # A name in the header, or messages to show: rendered for this person alone.
        return render_template("login.html", form=form, **_NO_MESSAGE)
    pages = current_app.extensions.setdefault("portal.empty_login_forms", {})
    key = (str(get_locale()), request.script_root)
    page = pages.get(key)
    if page is None:
        if len(pages) >= EMPTY_FORMS_KEPT:
            pages.clear()  # the prefix comes with the request: bounded, whatever is sent
        marked = LoginForm(formdata=None, next=_NEXT_MARK)
        page = render_template("login.html", form=marked, csrf_token=lambda: _TOKEN_MARK,
                               **_NO_MESSAGE)  # fmt: skip
        if page.count(_TOKEN_MARK) != 1 or page.count(_NEXT_MARK) != 1:
            raise RuntimeError("login.html must show the CSRF token and next once each")
        pages[key] = page
    # The token first (it is URL-safe), then `next` with the escaping Jinja gives a value:
    # whatever `next` holds is never read as a stand-in.
    page = page.replace(_TOKEN_MARK, generate_csrf())
    return page.replace(_NEXT_MARK, str(escape(form.next.data or "")))


def _is_home_page(address: str) -> bool:
    # A return address that is the portal's own home page: a path of this site (an app's
    # https://wiki.corp.example/ has the path "/" too, and the home page is not where it goes).
    parts = urlsplit(address)
    return not parts.scheme and not parts.netloc and parts.path == url_for("main.home")


def _host_of(address: str) -> str:
    # The host of an absolute address, "" for a path or text no URL parser can split.
    try:
        return urlsplit(address).hostname or ""
    except ValueError:
        return ""
