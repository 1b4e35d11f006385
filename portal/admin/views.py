"""The status page: directory servers, cache, and the administrator's own session."""

import re
import time
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import tomli_w
from flask import (
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext, lazy_gettext, ngettext
from flask_login import current_user, login_fresh

from .. import accounts, directory
from ..access import admin_diagnostics, admin_required
from ..directory import DirectoryUnavailable, InvalidInput
from ..directory.errors import ServiceBindRefused
from ..health.probes import REDIS_REFUSES, cache_problem, count_person_entries
from ..logwriter import lines_lost
from ..recent import RECENT
from ..signin import audit, throttle
from ..watcher import STALE_INTERVALS, followed_providers, read_shared_state, watcher_of
from . import bp

# Settings whose values are never shown, only whether they are set.
_SECRETS = frozenset({"SECRET_KEY", "LDAP_BIND_PASSWORD", "METRICS_BEARER_TOKEN"})
# Greedy to the last "@": an unencoded password may hold "/", "#" or "?" (masking too much is
# the safe mistake).
_URL_USERINFO = re.compile(r"(://).*@")
_SECRET_NAME = re.compile(r"(?i)pass|token|secret|key|auth|sig")


@bp.route("", strict_slashes=False)
def index():
    """/admin (a guess at the admin pages' address): the status page, where they begin."""
    return redirect(url_for("admin.status"))


@bp.route("/status")
@admin_diagnostics
def status():
    """Whether each directory server and the cache answer, with a one-line summary on top."""
    cache_failure = cache_problem()  # "" when it answers and runs every command
    cache_ok = not cache_failure
    # A cache that failed its probe is not asked again for this page: each question would
    # wait out its own timeout while Redis hangs (4 s for the page, where the probe takes 1).
    cached = accounts.cached_attributes(current_user.username) if cache_ok else None
    cache_age = round(time.time() - cached["fetched_at"]) if cached else None
    servers = directory.check_health()
    lost = lines_lost()
    watch = _watch_summary(read_shared=cache_ok)
    return render_template(
        "admin/status.html",
        summary=status_summary(servers, cache_failure, sum(lost.values()), watch),
        servers=servers,
        cache_type=current_app.config["CACHE_TYPE"],
        cache_ok=cache_ok,
        cache_failure=cache_failure,
        cache_entries=count_person_entries() if cache_ok else None,
        cache_age=cache_age,
        user=current_user,
        password_session=login_fresh(),
        tls=_tls_in_use(),
        version=_version(),
        started=time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(current_app.config["PORTAL_STARTED_AT"])
        ),
        settings=settings_toml(current_app.config),
        activity=[RECENT.server(server.url) for server in servers],
        breakers=directory.breaker_states(),
        watch=watch,
        logins=RECENT.login_outcomes(),
        login_outcomes=LOGIN_OUTCOMES,
        cache_hits=RECENT.cache_hits(),
        log_lines_lost=lost,
        when=_when,
    )


def _watch_summary(read_shared: bool = True) -> dict | None:
    # What the status page says of the directory watcher: this process's, or one that runs
    # elsewhere (a sidecar) and publishes in Redis; None when there is none; UNKNOWN when
    # what it published cannot be read (Redis does not answer): "off" would not be true.
    watcher = watcher_of(current_app)
    if watcher is None and not read_shared and current_app.config["CACHE_TYPE"] == "RedisCache":
        return UNKNOWN
    if watcher is None:
        state = read_shared_state(current_app)
    else:
        state = watcher.shared_state() if read_shared else watcher.state
    if state is None:
        return None
    interval = watcher.interval if watcher else state.interval or 2
    age = time.time() - state.last_poll if state.last_poll else None
    return {
        "state": state,
        "age": age,
        "interval": interval,
        "here": watcher is not None and state.holder == watcher.identity,
        "stale": age is None or age > STALE_INTERVALS * interval,
        "providers": followed_providers(current_app, watcher, read_shared),
    }


#: The status page's watcher summary when the cache it publishes in does not answer.
UNKNOWN = {"unknown": True}


class Summary(NamedTuple):
    """The status page's first line: whether all is well, and what it says."""

    well: bool
    line: str


def status_summary(servers, cache_failure: str, log_lines_lost: int = 0,
                   watch: dict | None = None) -> Summary:  # fmt: skip
    """ "All good", or what fails, e.g. "Directory: 1 of 2 servers failing" (`cache_failure`:
    why the cache failed its probe, "" when it passed; `watch`: the watcher's summary)."""
    failing = sum(not server.ok for server in servers)
    problems = []
    if watch is not None and not watch.get("unknown") and watch["stale"]:
        # A watcher that died (a sidecar killed) leaves revocation to USER_CACHE_TTL, which
        # nothing else on the page said above the fold.
        problems.append(gettext("Watcher: no poll yet") if watch["age"] is None
                        else gettext("Watcher: no poll for %(seconds)d s",
                                     seconds=watch["age"]))  # fmt: skip
    if log_lines_lost:
        problems.append(ngettext("Log: %(num)d line lost", "Log: %(num)d lines lost",
                                 log_lines_lost))  # fmt: skip
    if failing:
        problems.append(ngettext("Directory: %(failing)d of %(num)d server failing",
                                 "Directory: %(failing)d of %(num)d servers failing",
                                 len(servers), failing=failing))  # fmt: skip
    if cache_failure:
        refused = cache_failure.startswith(REDIS_REFUSES)
        problems.append(gettext("Cache: refuses a command the portal needs") if refused
                        else gettext("Cache: not answering"))  # fmt: skip
    if not problems:
        return Summary(True, gettext("All good: every directory server (%(count)d) and the cache "
                                     "answer", count=len(servers)))  # fmt: skip
    return Summary(False, "; ".join(problems))


#: How the look-up names an account's state (portal.directory.account_state.State values).
ACCOUNT_STATES = {
    "disabled": lazy_gettext("disabled"),
    "locked": lazy_gettext("locked"),
    "must change password": lazy_gettext("waiting for a password change"),
    "its entry cannot be used (see the log)": lazy_gettext("not usable (see the log)"),
}

#: The login outcomes the status page counts, in order, with their labels.
LOGIN_OUTCOMES = (
    ("success", lazy_gettext("success")),
    ("failed", lazy_gettext("failed")),
    ("refused", lazy_gettext("refused")),
    ("must_change_password", lazy_gettext("must change password")),
    ("throttled", lazy_gettext("throttled")),
    ("counts_unavailable", lazy_gettext("attempts not counted")),
    ("directory_error", lazy_gettext("directory error")),
)


def masked_settings(config) -> dict:
    """The portal's own settings, secrets masked (inside lists and tables too)."""
    from ..settings import known_keys

    shown = {}
    for key in sorted(known_keys() | {"SECRET_KEY", "SECRET_KEY_FALLBACKS"}):
        value = config.get(key)
        if key == "SECRET_KEY_FALLBACKS":
            # Which round of a key rotation an instance is in: how many, never which.
            value = f"({len(value or ())} set)"
        elif key in _SECRETS:
            value = "(set)" if value else "(not set)"
        shown[key] = _masked(value) if key not in _SECRETS else value
    return shown


def settings_toml(config) -> str:
    """The settings in effect as the TOML a settings file would hold (secrets masked); a value
    TOML cannot hold (none) is said in a comment."""
    shown = masked_settings(config)
    unset = [f"# {key} is not set" for key, value in shown.items() if value is None]
    return tomli_w.dumps({key: value for key, value in shown.items() if value is not None}) + (
        "\n".join(unset) + "\n" if unset else ""
    )


def _masked(value):
    # Every string that is a URL loses its password and secret-looking query values; tables
    # and lists are walked; None inside them is dropped (TOML has no null).
    if isinstance(value, str):
        return _without_password(value)
    if isinstance(value, list):
        return [_masked(item) for item in value if item is not None]
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items() if item is not None}
    return value


def _without_password(text: str) -> str:
    # URLs such as redis://:secret@host/0 or redis://host/0?password=secret carry secrets; a
    # query name is judged as the server will read it (decoded: "pa%73sword" is "password").
    if "://" not in text:
        return text
    text = _URL_USERINFO.sub(r"\1(set)@", text)
    parts = urlsplit(text)
    if not parts.query:
        return text
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    masked = [(name, "(set)" if _SECRET_NAME.search(name) else item) for name, item in pairs]
    return urlunsplit(parts._replace(query=urlencode(masked, safe="()")))


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _tls_in_use() -> list[str]:
    # In LDAP_URLS order, as check_health answers.
    config = current_app.config
    return [
        "ldaps" if url.lower().startswith("ldaps://")
        else "StartTLS" if config["LDAP_START_TLS"] else gettext("none (clear text)")
        for url in config["LDAP_URLS"]
    ]  # fmt: skip


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("portal")
    except PackageNotFoundError:
        return "unknown"


@bp.route("/users")
@admin_required
def find_user():
    """The status page's look-up form lands here: go to that person's page."""
    username = request.args.get("username", "").strip()
    if not username:
        flash(gettext("Type a username to look up."))
        return redirect(url_for("admin.status") + "#look-up")
    return redirect(url_for("admin.user", username=username))


@bp.route("/users/<path:username>")
@admin_required
def user(username: str):
    """What the directory says about a person, whether they may sign in and why, each page."""
    try:
        # The host the rules are judged for, without the port ("[::1]:5000" gives "::1").
        found = accounts.explain_person(username, urlsplit("//" + request.host).hostname or "")
    except InvalidInput:
        abort(404)
    except ServiceBindRefused:
        # It answered, refusing the portal's own account: a setting to fix, not an outage.
        abort(503, gettext("The company directory refuses the portal's own account, so "
                           "%(name)s cannot be looked up: check LDAP_BIND_DN and "
                           "LDAP_BIND_PASSWORD (the log says more).",
                           name=username[:100]))  # fmt: skip
    except DirectoryUnavailable:
        # The page said the portal could not check who the administrator is: it is this
        # person it could not read. (Any other refusal gets the 503 page and its log line.)
        abort(503, gettext("The company directory is not answering, so %(name)s cannot be "
                           "looked up right now.", name=username[:100]))  # fmt: skip
    return render_template(
        "admin/user.html",
        found=found,
        states=ACCOUNT_STATES,
        several=accounts.SEVERAL_ACCOUNTS,
        failures=_failed_sign_ins(username, found.username, found.email),
        typed=username,
    ), (  # fmt: skip
        200 if found.exists else 404
    )


def _failed_sign_ins(*names: str) -> list[throttle.AccountCount] | None:
    # What the failed sign-ins' counts hold for the person now, under each name a sign-in may
    # have typed (the e-mail address is counted apart); None when they did not answer.
    try:
        return throttle.account_counts(*filter(None, names))
    except Exception:  # noqa: BLE001 - every storage raises its own errors: "not known"
        return None


@bp.route("/users/<path:username>/unthrottle", methods=["POST"])
@admin_required
def unthrottle_user(username: str):
    """Forget the failed sign-ins counted against a person (CSRF-checked): their next sign-in
    is judged afresh, not refused for earlier mistakes."""
    name = _canonical_or_404(username)
    try:
        # Every name the person's failed sign-ins may be counted under, as the page shows them.
        throttle.clear_account(name, *accounts.sign_in_names(username))
    except Exception:  # noqa: BLE001 - every storage raises its own errors
        abort(503, gettext("The failed sign-ins' counts did not answer, so nothing was "
                           "forgotten: try again in a minute."))  # fmt: skip
    audit.record("admin.unthrottle", user=current_user.username, target=name)
    flash(gettext("The failed sign-ins of %(name)s were forgotten: their next sign-in is "
                  "judged afresh.", name=name))  # fmt: skip
    return redirect(url_for("admin.user", username=name))


@bp.route("/users/<path:username>/flush", methods=["POST"])
@admin_required
def flush_user(username: str):
    """Drop a person's cache entry (CSRF-checked); their next request reads the directory."""
    name = _canonical_or_404(username)
    accounts.forget(name)
    audit.record("admin.flush", user=current_user.username, target=name)
    flash(gettext("The cache entry of %(name)s was dropped: the next request reads the "
                  "directory.", name=name))  # fmt: skip
    return redirect(url_for("admin.user", username=name))


@bp.get("/users/<path:username>/revoke")
@admin_required
def confirm_revoke(username: str):
    """Ask first: "Sign NAME out everywhere?", with the button that does it (a POST)."""
    name = _canonical_or_404(username)
    target = _revocation_target(username)  # as typed: a sign-in's name forms find their owner
    if target.owner != name:
        # Another of the person's names (an e-mail address): ask about the account itself, or
        # the button would mark the address and leave its owner signed in. (An owner's name
        # always reads as itself typed: the directory layer refuses an entry whose name
        # would name another.)
        return redirect(url_for("admin.confirm_revoke", username=target.owner))
    return render_template("admin/revoke.html", name=name)


@bp.post("/users/<path:username>/revoke")
@admin_required
def revoke_user(username: str):
    """End every sign-in of a person, found by any of their names (CSRF-checked)."""
    _canonical_or_404(username)
    target = _revocation_target(username)
    name = target.owner
    if not accounts.revoke_all(name):
        # The mark is held by this process and written to the shared store once it answers:
        # the admin must know the other servers do not refuse those sign-ins yet.
        audit.record("admin.revoke", user=current_user.username, target=name,
                     reason="cache down: held in this process")  # fmt: skip
        flash(gettext(
            "The sign-ins of %(name)s have ended on this server only: the portal's shared store "
            "is not answering, so the other servers will refuse them once it answers again "
            "(not if this server restarts first). Try again in a minute to be sure.", name=name
        ))  # fmt: skip
        return redirect(url_for("admin.user", username=name))
    audit.record("admin.revoke", user=current_user.username, target=name)
    if target.state == accounts.NO_SUCH_PERSON:
        # Most often a typo, and the person meant is still signed in; a person just removed
        # from the directory has had their sign-ins ended all the same.
        flash(gettext(
            "The directory has no account %(name)s, so no sign-in of anyone it knows was "
            "ended. Look the person up to find their user name.", name=name
        ))  # fmt: skip
        return redirect(url_for("admin.status") + "#look-up")
    flash(gettext(
        'Every sign-in of %(name)s has ended, on every device, "keep me signed in" included. '
        "They can sign in again with their password unless the directory says otherwise.",
        name=name,
    ))  # fmt: skip
    return redirect(url_for("admin.user", username=name))


def _revocation_target(name: str) -> accounts.RevocationTarget:
    # A name that finds several accounts (an address kept on two entries) is nobody's: refused
    # before anything is marked, so neither person is signed out by mistake.
    target = accounts.revocation_target(name)
    if target.unchecked is not None and "@" in name:
        # The directory cannot say whose address this is: marking the address would say the
        # sign-ins ended while its owner stays signed in.
        abort(503, gettext(
            "The company directory is not answering, so whose address %(name)s is cannot be "
            "told, and nobody was signed out. Please try again in a minute, or sign the person "
            "out by their user name.", name=name[:100],
        ))  # fmt: skip
    if target.state == accounts.SEVERAL_ACCOUNTS:
        abort(409, gettext(
            "%(name)s finds more than one account in the directory (an address kept on two "
            "entries?), so nobody was signed out: sign each out by their user name.",
            name=name[:100],
        ))  # fmt: skip
    return target


def _canonical_or_404(typed: str) -> str:
    try:
        return directory.canonical_username(typed)
    except InvalidInput:
        abort(404)
