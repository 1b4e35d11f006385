"""Home offers the apps and pages the signed-in person may open; /pages/<slug> shows one page."""

import time

from babel.lists import format_list
from flask import abort, current_app, render_template, request, session
from flask_babel import get_locale, gettext, ngettext
from flask_login import current_user, login_required

from ..access import apps_for, find_page, pages_for
from ..web.i18n import localized
from . import bp

#: WSGI environ key: this response may be given again to the same session (portal.web.fastpath).
STORABLE = "portal.page_storable"
_STORABLE_VIEWS = frozenset({"main.home", "main.page"})


@bp.route("/")
@login_required
def home():
    """The apps and pages this person may open, then their account: name, e-mail, groups."""
    notice = expiry_notice(password_warning(current_user))
    return render_template("home.html", user=current_user, apps=apps_for(current_user),
                           pages=pages_for(current_user), password_notice=notice)  # fmt: skip


def password_warning(user) -> int | None:
    """Days until the person's password expires, when that is within PASSWORD_WARN_DAYS."""
    days = user.password_days_left(time.time())
    warn = current_app.config["PASSWORD_WARN_DAYS"]
    return days if days is not None and warn and days <= warn else None


def expiry_notice(days: int | None) -> str | None:
    """The sentence that warns of a password expiring in `days` calendar days (None: none)."""
    if days is None:
        return None
    if days == 0:
        return gettext("Your password expires today.")
    if days == 1:
        return gettext("Your password expires tomorrow.")
    return ngettext("Your password expires in %(num)d day.",
                    "Your password expires in %(num)d days.", days)  # fmt: skip


@bp.route("/pages/<slug>")
@login_required
def page(slug: str):
    """One configured page, for members of its groups only."""
    found = find_page(slug)
    if found is None:
        abort(404)
    if not current_user.in_any_group(found["groups"]):
        abort(403, refusal_for(found))
    if "template" in found:
        return render_template(found["template"], page=found, user=current_user)
    return render_template("page.html", page=found)


def refusal_for(page: dict) -> str:
    """What a person outside a page's groups is told: the groups that open it, so they know
    what to ask for (the page itself shows them as "Open to" to its members)."""
    groups = page["groups"]
    return ngettext(
        "“%(title)s” is open to members of the group %(groups)s, and your account is not in "
        "it. If you need this page, ask for access to that group.",
        "“%(title)s” is open to members of the groups %(groups)s, and your account is in none "
        "of them. If you need this page, ask for access to one of them.",
        len(groups),
        title=localized(page["title"]),
        groups=format_list(groups, style="or", locale=get_locale() or "en"),
    )


@bp.after_request
def mark_storable(response):
    """A 200 of the home or a page that changed nothing in the session (no flashed message
    shown, no token signed) is the same for the same session and cache entry: say so."""
    if response.status_code == 200 and request.endpoint in _STORABLE_VIEWS and not session.modified:
        request.environ[STORABLE] = True
    return response
