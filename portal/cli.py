"""Command line for operators: `portal check | whois | flush | revoke | access-check | watch`
(the same as `flask --app portal ...`).

- ``check``: settings, then for every server in LDAP_URLS: connect, TLS, service bind, a base
  search of each user base and of LDAP_GROUP_BASE, a count of people and groups; then the cache.
  One line per step, "ok" or "FAILED: reason"; exit status 1 when any step failed.
- ``whois USERNAME``: what the directory says about a person, whether they may sign in and why,
  the pages they can and cannot open and why, and their cache entry (portal.access.explain).
- ``flush USERNAME`` / ``flush --all``: drop one person's cache entry, or every person's.
- ``access-check USERNAME URL``: which ACCESS_RULES rule decides a request.

A setting the portal refuses stops every command before it runs: `portal` (portal/__main__.py)
says so in one line naming the key (exit status 2), `flask --app portal` with create_app's
ConfigError.
"""

from __future__ import annotations

import functools
import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from urllib.parse import urlsplit

import click
import ldap3
from flask import current_app
from flask.cli import with_appcontext
from ldap3.core.exceptions import LDAPInvalidDnError
from werkzeug.exceptions import HTTPException

from . import accounts, directory, settings
from .access import explain, find_page, rule_set, unguarded_apps
from .accounts import CLOCK_SKEW_SECONDS
from .cache import redis_clients
from .directory import DirectoryError, DirectoryUnavailable, InvalidInput
from .directory.account_state import EXPIRES_SOON
from .directory.connections import (
    CREDENTIALS_REFUSED,
    bind_as_service,
    discard,
)
from .directory.errors import BindUnanswered, ServiceBindRefused
from .directory.groups import dn_key, known_name, resolve_groups
from .directory.queries import fill_filter
from .directory.search import run_search
from .extensions import cache
from .health import probes
from .health.probes import cache_problem, probe_cache, redis_client
from .signin import audit, logins, throttle
from .sso.questions import read_original, why_unusable

#: Entries `check` counts at most per base (a sample: it says "at least" beyond).
COUNT_LIMIT = 1000
#: The exit status of whois and access-check when the directory did not answer: neither "no"
#: (1) nor a usage error (2), so a script cannot take an outage for a refusal.
NO_ANSWER = 3


class DirectoryDidNotAnswer(click.ClickException):
    """The directory did not answer, so nothing could be said (exit status NO_ANSWER)."""

    exit_code = NO_ANSWER

    def __init__(self, error: Exception):
        if isinstance(error, ServiceBindRefused):
            said = "refused the portal"  # it answered: the portal's own settings are wrong
        elif isinstance(error, DirectoryUnavailable):
            said = "did not answer"
        else:
            said = "could not answer"
        super().__init__(f"the directory {said}: {error}")


_SIZE_LIMIT_EXCEEDED = 4


@click.command("access-check")
@click.argument("username")
@click.argument("url")
@click.option("--method", default="GET", show_default=True, help="HTTP method of the request.")
@with_appcontext
def access_check(username: str, url: str, method: str) -> None:
    """Say whether USERNAME may open URL, and which rule decides (exit 0 allowed, 1 denied, 3
    the directory did not answer)."""
    attrs = _lookup(username)
    if attrs is None:
        click.echo(f"{username}: no such person, or the account is not usable: DENIED")
        raise SystemExit(1)
    person = explain.standing(attrs["groups"], accounts.policy())
    if not person.active:
        click.echo(f"{attrs['username']}: may not use the portal, {person.reason}: DENIED")
        raise SystemExit(1)
    if url.startswith("/") and not url.startswith("//"):
        # A path, as APPS and the docs write an app on the portal's own host.
        url = f"https://{_portal_host()}{url}"
    elif _path_without_its_slash(url):
        first, _, rest = url.partition("/")
        raise click.UsageError(
            f"{url!r} is a path without its leading / or a host without https://: write "
            f"/{url} for a path on the portal's host, or https://{first}/{rest} for the host "
            f"{first!r}"
        )
    url = _as_verify_would_read(url, method)
    judged = _as_portal_page(url, method, attrs["groups"], person)
    if judged is not None:
        allowed, reason = judged
    else:
        try:
            decision = explain.judge_url(attrs["groups"], rule_set(), url, method)
        except ValueError as error:
            raise click.UsageError(str(error)) from None
        allowed, reason = decision.allowed, decision.reason
    verdict = "ALLOWED" if allowed else "DENIED"
    click.echo(f"{attrs['username']} {method.upper()} {url}: {verdict} by {reason}")
    click.echo(f"groups: {', '.join(attrs['groups'])}")
    raise SystemExit(0 if allowed else 1)


def _path_without_its_slash(url: str) -> bool:
    # "pages/finance" was judged as https://pages/finance, by the default policy: ALLOWED,
    # where /pages/finance is DENIED. A first part with no dot, port or bracket before a "/"
    # is as likely such a path as a one-label host, and a wrong "yes" must not come of it.
    if "://" in url or "/" not in url or url.startswith("/"):
        return False  # an address, a bare host ("wiki" is https://wiki/), a path or "//"
    first = url.split("/", 1)[0]
    return not any(mark in first for mark in ".:[?#")


def _as_verify_would_read(url: str, method: str) -> str:
    # The URL as /auth/verify would be asked about it ("wiki" is https://wiki/). A question it
    # refuses (ftp://, a host with a bad port, a method no browser sends) must not be answered
    # ALLOWED here: it is a usage error, for the same reason.
    target = url if "://" in url else f"https://{url}"
    scheme, _, rest = target.partition("://")
    # The path begins where the host ends: at a "/", or before a "?" or "#" it lacks then
    # ("wiki#top" is https://wiki/#top, not a host "wiki#top").
    end = min((at for at in map(rest.find, "/?#") if at >= 0), default=len(rest))
    if not rest.startswith("/", end):
        target = f"{scheme}://{rest[:end]}/{rest[end:]}"
    question = {"X-Original-Method": method, "X-Original-URL": target}.get
    if read_original(question, "original") is None:
        reason = why_unusable(question, "original").replace("X-Original-Method", "--method")
        raise click.UsageError(f"/auth/verify would refuse this address: "
                               f"{reason.replace('X-Original-URL', 'the URL')}")  # fmt: skip
    return target


def _as_portal_page(url: str, method: str, groups, person) -> tuple[bool, str] | None:
    # (allowed, reason) for an address the portal itself serves, judged as its views judge it;
    # None for any other address (an app behind the proxy: /auth/verify's rules decide).
    try:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        host = parts.hostname or ""
    except ValueError:
        return None  # judge_url says what is wrong with it
    root = (current_app.config.get("APPLICATION_ROOT") or "/").rstrip("/")
    if host != _portal_host().partition(":")[0] or not (parts.path or "/").startswith(root):
        return None
    path = (parts.path or "/")[len(root) :] or "/"
    try:
        endpoint, values = current_app.url_map.bind(host).match(path, method.upper())
    except HTTPException:
        return None  # no page of the portal's: an app on its host
    if endpoint == "main.page":
        # Its groups decide, then any rule that matches it (the default policy is for apps).
        page = find_page(values["slug"])
        if page is None:
            return False, "no such page in PAGES (the portal answers 404)"
        found = explain.page_access(groups, person, [page], rule_set(), host, root)[0]
        return found.open, f"the page's groups: {found.reason}"
    if endpoint.startswith(("main.", "admin.")):
        admin_page = endpoint.startswith("admin.")
        if admin_page and not person.admin:
            return False, "the portal's admin pages: not in ACCESS_ADMIN_GROUPS"
        decision = rule_set().decide_portal_page(groups, host, root + path, method)
        # ACCESS_DEFAULT_POLICY is for the apps: a portal page no rule matches is open.
        said = (
            decision.reason
            if decision.rule or not decision.allowed
            else "no access rule matches it"
        )
        if admin_page:
            return decision.allowed, f"the portal's admin pages: in ACCESS_ADMIN_GROUPS, and {said}"
        return decision.allowed, f"the portal's own page: {said}"
    return True, "the portal's own page, which no access rule judges (sign-in, sign-out, SSO)"


@click.command("check")
@click.option("--settings-only", is_flag=True,
              help="Check the settings alone, asking no server (before a reload: exit 0 when "
                   "they would start the portal, 2 naming the setting refused).")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --settings-only: the worker processes the server runs (its gunicorn "
                   "--workers; default WEB_CONCURRENCY, else 1), as some settings refuse "
                   "several.")  # fmt: skip
@with_appcontext
def check(settings_only: bool, workers: int | None) -> None:
    """Check the settings, every directory server and the cache (exit 1 if anything failed).

    Per server: connect (and StartTLS when set), whether TLS is in use, the service bind, a base
    search of each LDAP_USER_BASE and of LDAP_GROUP_BASE, the number of people LDAP_USER_FILTER
    matches with "*" in place of {username} and {login}, and the number of entries with an
    LDAP_GROUP_NAME_ATTR under LDAP_GROUP_BASE (each counted up to 1000), a warning for
    each group name the settings use that no group or several have, and for each allowed
    group whether a sign-in's group look-up finds a few of the members its entry lists in it.
    None of it is cached or pooled: every server gets its own fresh connection.
    """
    report = _Report()
    try:
        warnings = settings.validate(current_app.config)
    except settings.ConfigError as error:  # create_app validated already; kept for safety
        report.failed("settings", str(error))
    else:
        report.ok("settings")
        for warning in [*warnings, *unguarded_apps(current_app)]:
            click.echo(f"settings: warning: {warning}")
    if settings_only:
        if report.failures:
            raise SystemExit(1)
        try:
            # What the server's own start refuses with that many workers (SimpleCache, memory://
            # counts): passed, the reload's HUP stopped gunicorn, and with it the portal.
            settings.check_processes(current_app.config, workers or settings.serving_processes())
        except settings.ConfigError as error:
            click.echo(f"portal: {error}", err=True)
            raise SystemExit(2) from None
        click.echo("check: ok (the settings only: no server was asked)")
        return
    found = directory.get_directory()
    for url, server in zip(found.settings.urls, found.servers, strict=True):
        _check_server(report.for_server(url), server, found.settings)
    cache_type = current_app.config["CACHE_TYPE"]
    if cache_type == "NullCache":
        report.info("cache (NullCache)", "none: every request reads the directory")
    elif not (problem := cache_problem()):
        report.ok(f"cache ({cache_type})")
        _check_redis(report)
    else:
        report.failed(f"cache ({cache_type})", problem)
    if (where := settings.throttle_storage_url(current_app.config)) != "memory://":
        # Every sign-in counts there first: a storage that cannot count pauses them all (503).
        step = f"failed-login counts ({redis_clients.location(where)})"
        if problem := throttle.storage_problem():
            report.failed(step, f"cannot be counted, so every sign-in is paused: {problem}")
        else:
            report.ok(step)
    if report.failures:
        click.echo(f"check: FAILED ({report.failures} failed)")
        raise SystemExit(1)
    click.echo("check: ok")


@click.command("whois")
@click.argument("username")
@click.option(
    "--host",
    help="Host name of the portal ACCESS_RULES are judged for "
    "(default: SSO_PORTAL_URL's, else SERVER_NAME, else localhost).",
)
@with_appcontext
def whois(username: str, host: str | None) -> None:
    """What the directory says about USERNAME, whether they may use the portal, and why.

    Reads the directory afresh (the cache is shown, not used or changed). Exit status 0 when the
    directory knows a usable account by that name, 1 when not, 3 when it did not answer.
    """
    host = host or _portal_host()
    try:
        found = accounts.explain_person(username, host)
    except InvalidInput as error:
        raise click.ClickException(f"{username!r} is not a usable name: {error}") from error
    except DirectoryError as error:
        raise DirectoryDidNotAnswer(error) from error
    lines = list(_whois_lines(found, host))
    # The counts before the cache line, which stays the last (scripts read it).
    at = len(lines) - 1 if lines and lines[-1].startswith("cache:") else len(lines)
    lines[at:at] = _throttle_lines(found.username, username, found.email)
    for line in lines:
        click.echo(line)
    raise SystemExit(0 if found.found else 1)


def _throttle_lines(name: str, *others: str) -> list[str]:
    # The failed sign-ins counted against the account now: a person refused with 429 (the
    # right password after a few typos) is a service desk's everyday question.
    if not throttle.counts_shared():
        return ["failed sign-ins: counted in each server process's memory (no Redis), out of "
                "this command's reach: the person's admin page shows its server's"]  # fmt: skip
    try:
        counts = throttle.account_counts(name, *filter(None, others))
    except Exception as error:  # noqa: BLE001 - every storage raises its own errors
        return [f"failed sign-ins: not known (their storage did not answer: {error})"]
    if not counts:
        return ["failed sign-ins: none counted now"]
    lines = []
    for count in counts:
        minutes = max(1, -(-count.reset_in // 60))
        whose = " from their own browsers" if count.known_browsers else ""
        state = (f"sign-ins{whose} REFUSED (429) for {minutes} more min"
                 if count.full else f"counted for {minutes} more min")  # fmt: skip
        lines.append(f"failed sign-ins: {count.used} of {count.allowed} ({count.limit}){whose}: "
                     f"{state}; `portal unthrottle {name}` forgets them")  # fmt: skip
    return lines


@click.command("unthrottle")
@click.argument("username")
@with_appcontext
def unthrottle(username: str) -> None:
    """Forget the failed sign-ins counted against USERNAME, so that the next sign-in is judged
    afresh (after someone mistyped their way into a 429): check who is asking first.

    Exit status 1 when the counts live in each server process (no Redis) or did not answer.
    """
    if not throttle.counts_shared():
        raise click.ClickException(
            "the failed sign-ins are counted in each server process's memory (no Redis), out "
            "of this command's reach: nothing was forgotten (the button 'Forget the failed "
            "sign-ins' of the person's admin page, /admin/users/NAME, clears its server's; "
            "or restart the servers, or wait the window out)"
        )
    name = _canonical(username)
    try:
        owner = directory.identity(username, any_state=True) or name
    except DirectoryError:
        owner = name  # the counts are kept by the name typed, whatever the directory says
    names = (owner, *accounts.sign_in_names(username))  # the e-mail address is counted apart
    try:
        counted = sum(count.used for count in throttle.account_counts(*names))
        throttle.clear_account(*names)
    except Exception as error:  # noqa: BLE001 - every storage raises its own errors
        raise click.ClickException(
            f"the failed sign-ins' storage did not answer: {error}"
        ) from None
    audit.record("admin.unthrottle", user="(command line)", target=owner)
    if counted:
        click.echo(f"{owner}: {counted} failed sign-in(s) forgotten; the next sign-in is "
                   "judged afresh")  # fmt: skip
    else:
        click.echo(f"{owner}: no failed sign-ins were counted")


@click.command("flush")
@click.argument("username", required=False)
@click.option("--all", "everyone", is_flag=True, help="Drop every person's cache entry.")
@with_appcontext
def flush(username: str | None, everyone: bool) -> None:
    """Drop USERNAME's cache entry (or everyone's with --all): the next request reads the directory.

    Sessions stay valid; only the cached directory data goes. With RedisCache, --all deletes the
    keys CACHE_KEY_PREFIX + "user:*" and nothing else (Flask-Caching's cache.clear() would delete
    every key under the prefix, or FLUSHDB the whole Redis database when the prefix is empty).
    SimpleCache lives inside each server process, out of this command's reach: refused (exit 1).
    """
    if bool(username) == everyone:
        raise click.UsageError("name one USERNAME, or give --all")
    cache_type = current_app.config["CACHE_TYPE"]
    if cache_type == "NullCache":
        click.echo("the cache is NullCache: nothing is cached, nothing to flush")
        return
    if cache_type == "SimpleCache":
        # It said "cleared" (exit 0) having cleared only this command's own, empty, cache.
        raise click.ClickException(
            "CACHE_TYPE is SimpleCache: each server process keeps its own cache, out of this "
            "command's reach, so nothing was flushed (a person's entry: the flush button of "
            "their admin page, /admin/users/NAME, on each server; everyone's: restart them, or "
            "wait USER_CACHE_TTL, "
            f"{current_app.config['USER_CACHE_TTL']} s)"
        )
    if not probe_cache():
        raise click.ClickException(f"the cache ({cache_type}) did not answer: nothing flushed")
    if everyone:
        removed = _forget_everyone()
        counted = "" if removed is None else f": {removed} entries removed"
        click.echo(f"user cache cleared{counted}")
    else:
        name = _canonical(username)
        cached = accounts.cached_attributes(name)
        accounts.forget(name)
        if cached is None:
            click.echo(f"{name}: no cache entry")
        else:
            age = explain.cache_state(cached, None, 0, time.time()).age_seconds
            click.echo(f"{name}: cache entry removed (it was {age} s old)")


@click.command("revoke")
@click.argument("username")
@with_appcontext
def revoke(username: str) -> None:
    """End every session and "keep me signed in" cookie of USERNAME, on every device.

    USERNAME may be another name the user filter finds the person by (an e-mail address): its
    owner is signed out, and named. Needs the cache the running servers share (RedisCache):
    with SimpleCache each server process keeps its own revocations, which this command cannot
    reach.

    Exit status 0 when the sign-ins ended (a disabled or locked account's too); 1 when nothing
    could be ended for the person meant: no such account (a typo?), a name several accounts
    share, a cache that did not store it, or SimpleCache.
    """
    name = _canonical(username)
    if not accounts.marks().shared:
        raise click.ClickException(
            f"CACHE_TYPE is {current_app.config['CACHE_TYPE']}: the running servers do not share "
            "it, so nothing can be revoked from here (use the admin page of the server, or Redis)"
        )
    # Sessions and remember-me cookies are marked under the portal's name for the person: a
    # name the user filter also matches (an e-mail address) is revoked as its owner's, or the
    # owner would stay signed in. A name the directory does not know is revoked as typed
    # (the directory may be down, the person already gone), but is most often a typo, and the
    # person meant is still signed in: said instead of the success line, with exit status 1.
    # A disabled or locked account is off-boarding as it should be: its sign-ins ended.
    target = accounts.revocation_target(username)
    owner, state = target.owner, target.state
    # Read before the revocation drops it: someone signed in under the name not long ago.
    known_here = state == accounts.NO_SUCH_PERSON and accounts.held_entry(owner)
    if not accounts.revoke_all(owner):
        # Down, full (noeviction answers OOM) or refusing the command: it did answer, maybe.
        raise click.ClickException(
            "the cache did not store the revocation (it is down, full, or refuses the command: "
            "`portal check` says which), so no sign-in was ended: run this again once it takes "
            "writes"
        )
    audit.record("admin.revoke", user="(command line)", target=owner)
    if known_here:
        # Off-boarding that deleted or renamed the entry first: the sign-ins made under the
        # name did end (it said none had, exit status 1).
        click.echo(f"{name}: every sign-in made until now under this name has ended; the "
                   "directory has no account by it any more (deleted or renamed: a new name "
                   "is another account to the portal, `portal whois` it)")  # fmt: skip
        return
    if state == accounts.NO_SUCH_PERSON:
        click.echo(f"warning: the directory has no account {name!r}, so no sign-in of "
                   f"anyone it knows was ended (a typo? `portal whois {name}` says more): "
                   "anyone meant by another name is still signed in", err=True)  # fmt: skip
        raise SystemExit(1)
    if state == accounts.SEVERAL_ACCOUNTS:
        click.echo(f"warning: {name!r} finds more than one account in the directory (an "
                   "address kept on two entries?), so no sign-in of theirs was ended: revoke "
                   "each by its user name", err=True)  # fmt: skip
        raise SystemExit(1)
    account = f" (the account: {state})" if state else ""
    who = owner if owner == name else f"{owner} (found by {username.strip()!r})"
    click.echo(f"{who}: every sign-in made until now has ended (sessions and remember-me "
               f"cookies){account}")  # fmt: skip
    if target.unchecked is not None:
        said = DirectoryDidNotAnswer(target.unchecked).message  # an outage, or a refusal
        click.echo(f"note: {name!r} could not be checked, so it was taken as a user name (if "
                   f"it is another name of someone's, an e-mail address, run this again once "
                   f"the directory answers): {said}", err=True)  # fmt: skip


@click.command("watch")
@with_appcontext
def watch() -> None:
    """Run the directory watcher in this process until stopped (a sidecar to the servers).

    With RedisCache it takes part in the same election as the servers' watchers (one polls);
    set WATCH_INTERVAL = 0 for the servers to leave the watching to this process alone.
    """
    from .watcher import Watcher

    if not accounts.marks().shared:
        # Its re-reads and sign-outs would go to this process's own memory, which no server
        # reads: a watcher that watches for nobody.
        raise click.ClickException(
            f"CACHE_TYPE is {current_app.config['CACHE_TYPE']}: the running servers do not share "
            "it, so a watcher here would keep what it reads to itself (let the servers watch, "
            "WATCH_INTERVAL > 0, or use RedisCache)"
        )
    watcher = Watcher(current_app._get_current_object())
    if not watcher.interval:
        watcher.interval = current_app.config["WATCH_INTERVAL"] or 2
    click.echo(f"watching the directory every {watcher.interval} s (Ctrl-C stops)")
    # A service manager or container stops it with SIGTERM: let the lease go then too, so
    # another watcher takes over at once instead of when the lease runs out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        watcher.run()
    except KeyboardInterrupt:
        watcher.stop()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _check_redis(report) -> None:
    # Its eviction policy and persistence (read with CONFIG, which managed Redis services often
    # refuse), and its clock (TIME: every instance's shared reference).
    client = redis_client()
    if client is None:
        return
    _check_eviction_policy(report, client)
    _check_clock(report, client)


def _check_eviction_policy(report, client) -> None:
    # Revocation marks have no TTL, so noeviction and volatile-* policies keep them; an
    # allkeys-* policy may drop one under memory pressure, and a signed-out cookie would work.
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except Exception as error:  # noqa: BLE001 - managed Redis often refuses CONFIG
        report.info("redis maxmemory-policy", f"cannot be read ({error}): make sure it is "
                    "noeviction")  # fmt: skip
        return
    if policy.startswith("allkeys"):
        report.failed("redis maxmemory-policy", f"{policy} may evict revocation marks: use "
                      "noeviction")  # fmt: skip
    elif policy.startswith("volatile") and _counts_in_cache_redis(current_app.config):
        # The counts expire with their window, so a volatile-* policy may evict them: a full
        # Redis would then give every account its failed logins afresh.
        report.info("redis maxmemory-policy", f"warning: {policy} may evict the failed-login "
                    "counts kept here (they expire), and guessing starts afresh: use "
                    "noeviction, or keep the counts in a Redis of their own with noeviction "
                    "(THROTTLE_STORAGE_URL)")  # fmt: skip
    else:
        report.ok(f"redis maxmemory-policy ({policy})")
    _check_persistence(report, client)


def _check_clock(report, client) -> None:
    # Sign-ins carry the time of the host that made them and sign-out marks the time of the
    # host that wrote them: a host whose clock runs ahead makes sign-ins a sign out everywhere
    # elsewhere misses, and writes marks that end others' new sign-ins until their clocks
    # catch up. Redis's clock is the one every instance shares.
    try:
        before = logins.now_ms()
        seconds, microseconds = client.time()
        after = logins.now_ms()
    except Exception as error:  # noqa: BLE001 - a check reports whatever it hits
        report.info("clock", f"cannot be compared with Redis's ({error})")
        return
    offset = ((before + after) / 2 - (seconds * 1000 + microseconds / 1000)) / 1000
    if abs(offset) > CLOCK_SKEW_SECONDS:
        side = "ahead of" if offset > 0 else "behind"
        report.info("clock", f"warning: this host's clock is {abs(offset):.0f} s {side} "
                    "Redis's: sign-ins and sign-out marks carry each host's time, so a sign out "
                    "everywhere can miss sign-ins made on a host ahead, and a host ahead ends "
                    "others' new sign-ins; keep every host's clock in step (NTP)")  # fmt: skip
    else:
        report.ok(f"clock ({offset:+.1f} s from Redis's)")


def _counts_in_cache_redis(config) -> bool:
    # The policy is the server's, whatever the database: the same host and port (or the same
    # Sentinel hosts) is the same Redis.
    counts = settings.throttle_storage_url(config)
    return counts != "memory://" and _server_of(counts) == _server_of(config["CACHE_REDIS_URL"])


def _server_of(url: str) -> str:
    # "redis://127.0.0.1:6379/1" -> "127.0.0.1:6379": scheme, credentials and database left out.
    return redis_clients.location(url).partition("://")[2].partition("/")[0]


def _check_persistence(report, client) -> None:
    # A Redis that restarts without its data has lost every sign-out: the portal notices and
    # signs everyone out once (revocations.py). Snapshots alone lose the sign-outs made since
    # the last one without a trace, so those could work again.
    try:
        append_only = client.config_get("appendonly").get("appendonly", "")
        snapshots = client.config_get("save").get("save", "")
    except Exception as error:  # noqa: BLE001 - managed Redis often refuses CONFIG
        report.info("redis persistence", f"cannot be read ({error}): make sure Redis keeps "
                    "its data across a restart (appendonly yes)")  # fmt: skip
        return
    if append_only == "yes":
        report.ok("redis persistence (appendonly yes)")
    elif snapshots:
        report.info("redis persistence", f"warning: snapshots only (save {snapshots}): a "
                    "restart loses the sign-outs made since the last snapshot, and those "
                    "cookies work again; use appendonly yes")  # fmt: skip
    else:
        report.info("redis persistence", "warning: none: a restart loses every sign-out and "
                    "then signs everyone out once; use appendonly yes")  # fmt: skip


#: Every command, for create_app to register.
commands = (access_check, check, whois, flush, revoke, unthrottle, watch)


# --- check -------------------------------------------------------------------------------------


class _Report:
    """Prints one line per step and counts the failures."""

    def __init__(self, prefix: str = "", parent: _Report | None = None):
        self.prefix = prefix
        self.parent = parent
        self.failures = 0

    def for_server(self, url: str) -> _Report:
        return _Report(f"{url} ", self)

    def ok(self, step: str, detail: str = "") -> None:
        click.echo(f"{self.prefix}{step}: ok{f' ({detail})' if detail else ''}")

    def info(self, step: str, detail: str) -> None:
        click.echo(f"{self.prefix}{step}: {detail}")

    def failed(self, step: str, reason: str) -> None:
        click.echo(f"{self.prefix}{step}: FAILED: {reason}")
        self.failures += 1
        if self.parent is not None:
            self.parent.failures += 1

    def step(self, step: str, action: Callable[[], str], notes: list[str]) -> bool:
        """Run one step: its returned detail on "ok", the error and the log's reasons if not."""
        notes.clear()
        try:
            detail = action()
        except Exception as error:  # noqa: BLE001 - a check reports whatever it hits
            self.failed(step, _reason(error, notes))
            return False
        self.ok(step, detail)
        return True


def _check_server(report: _Report, server: ldap3.Server, settings) -> None:
    with _directory_warnings() as notes:
        connection = _connect(report, server, settings, notes)
        if connection is None:
            return
        try:
            bases = [("user base", base, "people", _count_people) for base in settings.user_bases]
            bases.append(("group base", settings.group_base, "groups", _count_groups))
            for kind, base, what, count in bases:
                read = functools.partial(_read, connection, settings, base)
                if report.step(f"{kind} {base}", read, notes):
                    counted = functools.partial(count, connection, settings, base)
                    report.step(f"{what} under {base}", counted, notes)
                    _check_paging(report, connection, settings, base, notes)
            _check_named_groups(report, connection, settings, notes)
        finally:
            discard(connection)


def _check_paging(report: _Report, connection, settings, base: str, notes: list[str]) -> None:
    # The watcher pages through whole bases (its first look, its listings), which a server's
    # size limit can refuse where a sign-in's one-entry searches pass (stock slapd: 500).
    step = f"watcher's paging under {base}"
    notes.clear()
    try:
        entries = run_search(connection, settings, base, "(objectClass=*)", ["1.1"], paged=True)
    except DirectoryError as error:
        if current_app.config["WATCH_INTERVAL"]:
            report.failed(step, _reason(error, notes))
        else:  # these servers do not watch; a `portal watch` with these settings would
            report.info(step, f"refused, which stops `portal watch`: {_reason(error, notes)}")
        return
    report.ok(step, f"{len(entries)} entries")


def _named_groups(config) -> dict[str, list[str]]:
    # Each group name the settings use (first spelling; names compare case-insensitively) ->
    # the settings that use it.
    uses: list[tuple[str, list[str]]] = [
        (key, config[key])
        for key in ("ACCESS_ALLOWED_GROUPS", "ACCESS_DENIED_GROUPS", "ACCESS_ADMIN_GROUPS")
    ]
    for key in ("PAGES", "APPS", "ACCESS_RULES"):
        uses += [(f"{key}[{n}]", item.get("groups") or []) for n, item in enumerate(config[key], 1)]
    named: dict[str, list[str]] = {}
    spelled: dict[str, str] = {}
    for where, groups in uses:
        for group in groups:
            named.setdefault(spelled.setdefault(group.casefold(), group), []).append(where)
    return named


def _check_named_groups(report: _Report, connection, settings, notes: list[str]) -> None:
    # Groups are known by name (SECURITY.md): a name no group under the base has grants
    # nothing, and one that several have is granted by each of them.
    named, problems = _named_groups(current_app.config), 0
    base = settings.group_base
    allowed_found = []  # the ACCESS_ALLOWED_GROUPS that are one group, or more
    admin_found = []  # and the other ACCESS_ADMIN_GROUPS
    for group, where in named.items():
        step = f"group {group} ({', '.join(where)})"
        attribute = settings.group_name_attr
        search_filter = fill_filter(f"({attribute}={{name}})", name=group)
        try:
            found = run_search(connection, settings, base, search_filter, [attribute],
                               size_limit=10, truncation_ok=True)  # fmt: skip
        except Exception as error:  # noqa: BLE001 - a check reports whatever it hits
            report.failed(step, _reason(error, notes))
            return
        found = [entry for entry in found if dn_key(entry["dn"]) != dn_key(base)]
        # A group answers to one name (portal.directory.groups): another value finds it here
        # but grants nothing, and denies nothing.
        dns = [entry["dn"] for entry in found
               if known_name(entry, settings).casefold() == group.casefold()]  # fmt: skip
        if dns and "ACCESS_ALLOWED_GROUPS" in where:
            allowed_found.append((group, dns))
        elif dns and "ACCESS_ADMIN_GROUPS" in where:
            admin_found.append((group, dns))
        if not dns and found:
            known = "; ".join(f"{entry['dn']} as {known_name(entry, settings)!r}"
                              for entry in found)  # fmt: skip
            report.info(
                step,
                f"warning: a group's {attribute} value, not the name the portal knows it by "
                f"({known}): use that name",
            )
        elif not dns:
            report.info(step, f"warning: no group by this name under {base}")
        elif len(dns) > 1:
            listed = "; ".join(dns)
            report.info(step, f"warning: {len(dns)} groups have this name under {base} "
                              f"({listed}): each grants its rights (see SECURITY.md)")  # fmt: skip
        else:
            continue
        problems += 1
    step = "groups the settings name"
    if not allowed_found:
        # Nobody can sign in: a pipeline's check must not pass it.
        report.failed(step, f"none of ACCESS_ALLOWED_GROUPS is a group under {base}, so "
                            "nobody can sign in (above)")  # fmt: skip
    elif problems:
        report.info(step, f"warning: {problems} of {len(named)} are not one group each (above)")
    else:
        report.ok(step, f"{len(named)} of {len(named)} are one group each")
    for group, dns in allowed_found:
        _check_members(report, connection, settings, group, dns[0], notes)
    for group, dns in admin_found:
        # Nobody in it could open the admin pages: a warning, since people can still sign in.
        _check_members(report, connection, settings, group, dns[0], notes,
                       consequence="open the admin pages")  # fmt: skip


#: Members of each allowed group whose groups `check` reads as a sign-in would, and how many
#: of the values its entry lists are read to find them (a group may list thousands).
MEMBERS_TRIED, MEMBER_VALUES_READ = 3, 20
#: Attributes by which a group entry lists its members: DNs, or user names (posixGroup).
MEMBER_DN_ATTRIBUTES, MEMBER_NAME_ATTRIBUTES = ("member", "uniqueMember"), ("memberUid",)


def _check_members(report: _Report, connection, settings, group: str, dn: str,
                   notes: list[str], consequence: str = "") -> None:  # fmt: skip
    # The names an allowed group's entry lists and the group look-up can disagree (a filter
    # with {username} where the entry lists DNs, memberOf without the overlay that writes it):
    # then nobody in it can sign in, although the group exists. A few of the people it lists
    # have their groups read the way a sign-in reads them.
    step = f"members of {group}"
    notes.clear()
    try:
        members = _listed_people(connection, settings, dn)
        if not members:
            said = (f"warning: not tried: none of the members {dn} lists (the first "
                    f"{MEMBER_VALUES_READ} read) is a person under LDAP_USER_BASE: members "
                    "through nested or primary groups are not checked")  # fmt: skip
            report.info(step, said)
            return
        search = functools.partial(_paged_search, connection, settings)
        found = [(entry, resolve_groups(entry, settings, search)) for entry in members]
    except Exception as error:  # noqa: BLE001 - a check reports whatever it hits
        report.failed(step, _reason(error, notes))
        return
    within = [(entry, names) for entry, names in found
              if any(name.casefold() == group.casefold() for name in names)]  # fmt: skip
    # An admin group's members must be let in to open the admin pages at all.
    usable = [entry for entry, names in within
              if not consequence or explain.standing(names, accounts.policy()).active]  # fmt: skip
    if usable:
        report.ok(step, f"{len(within)} of {len(found)} members tried are in it by a sign-in's "
                        "look-up")  # fmt: skip
        return
    if within:
        entry, names = within[-1]
        why = explain.standing(names, accounts.policy()).reason
        report.info(step, f"warning: none of {len(within)} members tried may sign in (such as "
                          f"{entry['dn']}, in {', '.join(names)}: {why}), so nobody in it can "
                          f"{consequence}: add them to an ACCESS_ALLOWED_GROUPS group")  # fmt: skip
        return
    entry, names = found[-1]
    said = (f"none of {len(found)} members {dn} lists (such as {entry['dn']}) is in {group!r} "
            f"by the group look-up a sign-in makes (groups found for the last: "
            f"{', '.join(names) or 'none'}), so nobody in it can {consequence or 'sign in'}: "
            "check LDAP_GROUP_FILTER and LDAP_GROUP_MEMBERSHIP (memberOf values need the "
            "directory's memberof overlay)")  # fmt: skip
    if consequence:
        report.info(step, f"warning: {said}")
    else:
        report.failed(step, said)


def _listed_people(connection, settings, dn: str) -> list:
    # Up to MEMBERS_TRIED people under the user bases the group's entry lists, read with what a
    # group look-up uses; a listed entry that is gone, a referral (a member from another
    # domain) or no person is passed over, as a sign-in never meets it.
    wanted = [settings.attr_username, settings.attr_member_of]
    lists = [*MEMBER_DN_ATTRIBUTES, *MEMBER_NAME_ATTRIBUTES]
    listed = run_search(connection, settings, dn, "(objectClass=*)", lists, scope=ldap3.BASE)
    attributes = listed[0].get("attributes", {}) if listed else {}
    values = [(name, value) for name in lists for value in attributes.get(name) or []]
    bases = [dn_key(base) for base in settings.user_bases]
    people = []
    for attribute, value in values[:MEMBER_VALUES_READ]:
        try:
            found = _member_entries(connection, settings, attribute, value, wanted)
        except LDAPInvalidDnError:
            continue  # a value no DN: no sign-in meets it
        except DirectoryError:
            if (connection.result or {}).get("result") not in _MEMBER_PASSED_OVER:
                raise  # the server, or an access refused: the step fails and says why
            continue
        for entry in found[:1]:
            key = dn_key(entry["dn"])
            under = any(key[-len(base) :] == base and len(key) > len(base) for base in bases)
            if under and entry.get("attributes", {}).get(settings.attr_username):
                people.append(entry)
        if len(people) >= MEMBERS_TRIED:
            break
    return people


#: A member DN answered with a referral (a member from another domain) or as no DN.
_MEMBER_PASSED_OVER = (10, 34)


def _member_entries(connection, settings, attribute: str, value: str, wanted: list[str]):
    # A member DN is read itself; a memberUid is a user name, found as a sign-in finds it.
    if attribute in MEMBER_DN_ATTRIBUTES:
        return run_search(connection, settings, value, "(objectClass=*)", wanted,
                          scope=ldap3.BASE)  # fmt: skip
    people = fill_filter(settings.user_filter, username=value, login=value)
    return [entry for base in settings.user_bases
            for entry in run_search(connection, settings, base, people, wanted, size_limit=2,
                                    truncation_ok=True)]  # fmt: skip


def _paged_search(connection, settings, base: str, search_filter: str, attributes: list[str]):
    return run_search(connection, settings, base, search_filter, attributes, paged=True)


def _connect(report: _Report, server, settings, notes: list[str]) -> ldap3.Connection | None:
    # bind_as_service connects (StartTLS included: a failed upgrade is a failed connect) and
    # binds; its reasons for a failure go to the log, which _directory_warnings collects.
    started = time.perf_counter()
    who = settings.bind_dn or None
    try:
        connection, bound, problem = bind_as_service([server], settings, probe=True)
    except BindUnanswered as error:
        # The server took the connection (and any StartTLS) and then failed the bind (hung, or
        # hung up): "connect: FAILED" would send the operator to the network.
        report.ok("connect", "the connection was accepted")
        report.failed(_bind_step(who), _reason(error, notes))
        return None
    except DirectoryError as error:
        report.failed("connect", _reason(error, notes))
        return None
    report.ok("connect", f"{(time.perf_counter() - started) * 1000:.0f} ms")
    if server.ssl:
        report.ok("tls", "ldaps://, certificate and host name verified")
    elif settings.start_tls:
        report.ok("tls", "StartTLS, certificate and host name verified")
    else:
        report.info("tls", "none (plain ldap://)")
    step = _bind_step(who)
    if not bound:
        result = connection.result or {}
        hint = ("; check LDAP_BIND_DN and LDAP_BIND_PASSWORD"
                if result.get("result") in CREDENTIALS_REFUSED else "")  # fmt: skip
        if problem:
            hint = f": {problem}; set a new password in the directory and in LDAP_BIND_PASSWORD"
        report.failed(step, f"{result.get('description')} ({result.get('result')}) "
                            f"{result.get('message') or ''}".strip() + hint)  # fmt: skip
        discard(connection)
        return None
    if problem and not problem.startswith(EXPIRES_SOON):
        report.failed(step, f"bound, but {problem}: set a new password in the directory and "
                            "in LDAP_BIND_PASSWORD before it stops the portal")  # fmt: skip
    else:
        report.ok(step, f"warning: {problem}" if problem else "")
    return connection


def _bind_step(who: str | None) -> str:
    return f"service bind as {who}" if who else "service bind (anonymous)"


def _read(connection: ldap3.Connection, settings, base: str) -> str:
    if not run_search(connection, settings, base, "(objectClass=*)", ["1.1"], scope=ldap3.BASE):
        who = ("the service account" if settings.bind_dn
               else "an anonymous search (LDAP_ANONYMOUS_SEARCH)")  # fmt: skip
        raise LookupError(f"no such entry, or {who} may not read it")
    return ""


def _count_people(connection: ldap3.Connection, settings, base: str) -> str:
    # The filter that finds one person, with "*" for the name: every person it could find
    # (LDAP_DISABLED_FILTER included). Not fill_filter: that would escape the "*".
    search_filter = settings.user_filter.format_map(_Everything())
    count = _count(connection, settings, base, search_filter)
    if count == "0":
        raise LookupError(f"no entry matches {search_filter}")
    # The name a sign-in gives the person is read from LDAP_ATTR_USERNAME: a person without
    # exactly one value cannot sign in (as if the password were wrong), so look at a few.
    attribute = settings.attr_username
    sample = run_search(connection, settings, base, search_filter, [attribute],
                        size_limit=PEOPLE_SAMPLE, truncation_ok=True)  # fmt: skip
    unnamed = [entry["dn"] for entry in sample
               if _value_count(entry.get("attributes", {}).get(attribute)) != 1]  # fmt: skip
    if sample and len(unnamed) == len(sample):
        raise LookupError(f"{count} matching {search_filter}, but none of the first "
                          f"{len(sample)} has one {attribute} value, so nobody can sign in: "
                          "check LDAP_ATTR_USERNAME")  # fmt: skip
    if unnamed:
        return (f"{count} matching {search_filter}; warning: {len(unnamed)} of the first "
                f"{len(sample)} have no single {attribute} value and cannot sign in "
                f"(such as {unnamed[0]})")  # fmt: skip
    return f"{count} matching {search_filter}"


#: People whose LDAP_ATTR_USERNAME `check` reads under each user base.
PEOPLE_SAMPLE = 50


def _value_count(value) -> int:
    # ldap3 gives a list of values, or one value for an attribute its schema says is single.
    if isinstance(value, list | tuple):
        return len(value)
    return 0 if value in (None, "", b"") else 1


def _count_groups(connection: ldap3.Connection, settings, base: str) -> str:
    # Entries with a group name under LDAP_GROUP_BASE (the base itself left out).
    search_filter = f"({settings.group_name_attr}=*)"
    count = _count(connection, settings, base, search_filter, skip=dn_key(base))
    if count == "0":
        raise LookupError(f"no entry with a {settings.group_name_attr}")
    return f"{count} entries with a {settings.group_name_attr}"


def _count(connection, settings, base: str, search_filter: str, skip: tuple = ()) -> str:
    entries = run_search(connection, settings, base, search_filter, ["1.1"],
                         size_limit=COUNT_LIMIT, truncation_ok=True)  # fmt: skip
    count = sum(1 for entry in entries if not skip or dn_key(entry["dn"]) != skip)
    cut_short = (connection.result or {}).get("result") == _SIZE_LIMIT_EXCEEDED
    return f"at least {count}" if cut_short else str(count)


def _reason(error: Exception, notes: list[str]) -> str:
    # The error, then what the directory layer logged about it (which often repeats it).
    said = str(error) or type(error).__name__
    if any(note.startswith(said) for note in notes):
        return "; ".join(notes)
    if said.startswith("no such entry"):
        # The search layer's "does not exist in the directory, or ..." says it once more.
        notes = [note for note in notes if "does not exist in the directory" not in note]
    return "; ".join([said, *notes])


class _Everything(dict):
    def __missing__(self, key: str) -> str:
        return "*"


@contextmanager
def _directory_warnings() -> Iterator[list[str]]:
    """Collect what portal.directory logs (why a server failed) for the FAILED lines."""
    notes: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("portal.directory")
    logger.addHandler(handler)
    # Said in the check's own lines: on the console as well, each came again (seven times for
    # a group base it could not read).
    propagated, logger.propagate = logger.propagate, False
    try:
        yield notes
    finally:
        logger.propagate = propagated
        logger.removeHandler(handler)


# --- whois and flush ---------------------------------------------------------------------------


def _lookup(username: str) -> dict | None:
    """directory.lookup for a typed name (domain forms and other names a sign-in finds the
    person by accepted); ClickException on failure, or for a name several entries share."""
    try:
        _, attrs, several = accounts.person_for(username)
    except InvalidInput as error:
        raise click.ClickException(f"{username!r} is not a usable name: {error}") from error
    except DirectoryError as error:
        raise DirectoryDidNotAnswer(error) from error
    if several:
        raise click.ClickException(f"{username.strip()!r} {SEVERAL_ENTRIES}")
    return attrs


def _canonical(username: str) -> str:
    # The name as the cache keys it: trimmed, lower-cased, without a LDAP_LOGIN_DOMAINS domain.
    try:
        return directory.canonical_username(username)
    except InvalidInput as error:
        raise click.ClickException(f"{username!r} is not a usable name: {error}") from error


def _portal_host() -> str:
    settings = current_app.config
    return (
        urlsplit(settings["SSO_PORTAL_URL"]).hostname or settings.get("SERVER_NAME") or "localhost"
    )


#: What the commands say of a name several directory entries share (after the name).
SEVERAL_ENTRIES = ("finds more than one entry in the directory (one's user principal name is "
                   "another's user name with a domain?), so a sign-in with it is refused: "
                   "look each up by a name of its own")  # fmt: skip


def _whois_lines(found: explain.Explanation, host: str) -> Iterator[str]:
    name = found.username
    if found.unusable == accounts.SEVERAL_ACCOUNTS:
        yield f"{name!r} {SEVERAL_ENTRIES}"
    elif not found.exists:
        yield f"{name}: no such person"
    elif not found.found:
        # A state ("disabled", "locked"...) reads after "the account is"; the other reason
        # ("its entry cannot be used (see the log)") is a sentence of its own.
        reason = found.unusable
        said = reason if reason.startswith("its ") else f"the account is {reason}"
        if reason == "must change password":
            said = ("its password must be changed first (with the right password, the sign-in "
                    "page says so and offers the change)")  # fmt: skip
        yield f"{name}: in the directory, but cannot sign in: {said}"
    else:
        person = found.standing
        yield f"{name}: {found.display_name}" + (f" <{found.email}>" if found.email else "")
        yield f"dn: {found.dn}"
        yield f"groups: {', '.join(found.described_groups()) or '(none)'}"
        yield f"may use the portal: {'yes' if person.active else 'no'}, {person.reason}"
        if person.admin:
            yield f"administrator: yes, by {', '.join(person.admin_by)}"
        elif person.admin_by:
            yield f"administrator: no (in {', '.join(person.admin_by)}, but may not use the portal)"
        else:
            yield "administrator: no"
        if any(rule.get("hosts") for rule in current_app.config["ACCESS_RULES"]):
            yield f"pages (ACCESS_RULES judged for host {host}; --host to change):"
        else:
            yield "pages:"
        width = max((len(page.slug) for page in found.pages), default=0)
        for page in found.pages:
            state = "open  " if page.open else "closed"
            title = page.title.in_language("en")  # the command line's own language
            yield f"  {state} {page.slug:<{width}}  {title}: {page.reason}"
        if found.apps:
            yield "apps on the home page:"
        for app in found.apps:
            shown, title = "shown " if app.shown else "hidden", app.title.in_language("en")
            yield f"  {shown} {title} ({app.url}): {app.reason}"
    yield _cache_line(found)


def _cache_line(found: explain.Explanation) -> str:
    entry = found.cache
    if entry is None:
        cache_type = current_app.config["CACHE_TYPE"]
        if cache_type == "SimpleCache":
            return "cache: no entry here (SimpleCache lives inside each server process)"
        if cache_type == "NullCache":
            return "cache: no entry (NullCache keeps nothing)"
        if not probes.probe_cache():
            # A Redis that is down or hung reads as empty: say so, not "no entry".
            return f"cache: {cache_type} did not answer; whether it holds an entry is not known"
        if _kept_unverified(found.username):
            # Read as a miss, as a forgery would be: this command is not the servers' twin.
            return ("cache: an entry is kept, but not signed with this command's SECRET_KEY "
                    "(nor a SECRET_KEY_FALLBACKS key): run the command with the servers' "
                    "settings and secrets (the service's PORTAL_SETTINGS and environment "
                    "file), or it reads their cache as empty")  # fmt: skip
        return "cache: no entry"
    line = f"cache: entry {entry.age_seconds} s old, expires in {entry.expires_in_seconds} s"
    if entry.matches_directory:
        return line + ", same as the directory"
    return (
        f"{line}; it differs from the directory (cached groups: {', '.join(entry.groups)}) and "
        f"decides their requests until then, or until `portal flush {found.username}`"
    )


def _kept_unverified(username: str) -> bool:
    # Whether Redis holds an entry for the person that did not read back (its signature).
    client = probes.redis_client()
    if client is None:
        return False
    key = accounts.cache_key(username)
    try:
        # A kept "gone" entry verifies: only an entry that reads back as nothing is unverified.
        prefix = current_app.config["CACHE_KEY_PREFIX"]
        return cache.get(key) is None and bool(client.exists(prefix + key))
    except Exception:  # noqa: BLE001 - unanswered: nothing to add to what was said
        return False


def _forget_everyone() -> int | None:
    """Drop every person's cache entry; the number removed, or None when not counted."""
    client = probes.redis_client()
    if client is None:
        # SimpleCache (or NullCache): this process's own store, holding only the portal's data.
        cache.clear()
        return None
    removed = 0
    keys = probes.person_entry_keys()
    while batch := list(islice(keys, 500)):
        removed += client.delete(*batch)
    return removed
