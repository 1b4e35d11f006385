"""The operators' command line: check, whois and flush, against a real slapd (and redis-server)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from ldap3.core.exceptions import LDAPSocketReceiveError

from portal import accounts
from portal.directory import DirectoryError
from portal.directory.wire import LeanConnection
from portal.testing.slapd import free_port
from portal.testing.tls import make_ca, make_server_certificate
from tests.conftest import (
    PAGE_THROUGH_ALL,
    ROOT,
    SERVICE_DN,
    AuthActions,
    crowd_ldif,
    make_app,
    start_slapd,
)
from tests.servers import require_binary

PEOPLE = "ou=people,dc=example,dc=org"
GROUPS = "ou=groups,dc=example,dc=org"


def run(app, *args: str):
    """Invoke `flask --app portal ARGS...` on this app in-process."""
    return app.test_cli_runner().invoke(args=list(args))


def restricted_redis_url(server, user: str, *rules: str) -> str:
    """A URL of `server` for a new Redis user with ACL `rules` beyond every command and key
    (such as "-@scripting"): a portal given it meets that ACL as a managed Redis sets it."""
    server.client().execute_command("ACL", "SETUSER", user, "on", f">{user}-secret", "~*", "&*",
                                    "+@all", *rules)  # fmt: skip
    return f"redis://{user}:{user}-secret@127.0.0.1:{server.port}/0"


def sign_in(app, *names: str) -> None:
    """Sign people in through the login form, which fills their cache entries."""
    for name in names:
        assert AuthActions(app.test_client()).login(name).status_code == 302


def cached(app, name: str) -> dict | None:
    """The person's cache entry, as the user loader would read it."""
    with app.app_context():
        return accounts.cached_attributes(name)


# --- check ---------------------------------------------------------------------------------------


def test_check_passes_against_the_demo_directory(app, slapd):
    """Every step of `check` says ok against a healthy directory, and the exit status is 0."""
    result = run(app, "check")
    assert result.exit_code == 0, result.output
    server = slapd.url
    for line in [
        "settings: ok",
        f"{server} tls: none (plain ldap://)",
        f"{server} service bind as {SERVICE_DN}: ok",
        f"{server} user base {PEOPLE}: ok",
        f"{server} people under {PEOPLE}: ok (6 matching (&(objectClass=inetOrgPerson)(uid=*)))",
        f"{server} group base {GROUPS}: ok",
        f"{server} groups under {GROUPS}: ok (6 entries with a cn)",
        f"{server} groups the settings name: ok (5 of 5 are one group each)",
        f"{server} members of staff: ok (3 of 3 members tried are in it by a sign-in's look-up)",
        f"{server} members of portal-admins: ok (1 of 1 members tried are in it by a sign-in's "
        "look-up)",
        "cache (SimpleCache): ok",
        "check: ok",
    ]:
        assert line in result.output.splitlines()
    assert f"{server} connect: ok (" in result.output
    assert "FAILED" not in result.output


def test_check_pages_through_the_bases_as_the_watcher_does(tmp_path):
    """With 600 people, stock slapd refuses the watcher's paged reads of the user base (its
    size limit, 500) while every sign-in works: check said ok and the watcher never started.
    It now fails naming the limits line, says so without failing where these servers do not
    watch (WATCH_INTERVAL = 0: a `portal watch` would), and passes once the line is given."""
    from portal.testing.slapd import FIXTURES, Slapd

    crowd = tmp_path / "crowd.ldif"
    crowd.write_text(crowd_ldif())
    trees = [*sorted(FIXTURES.glob("*.ldif")), crowd]
    step = f"watcher's paging under {PEOPLE}: "
    with Slapd(ldif_files=trees) as server:
        for interval in (2, 0):
            app = make_app(server, WATCH_INTERVAL=interval)
            result = run(app, "check")
            app.extensions["portal.directory"].close()
            [line] = [line for line in result.output.splitlines() if line.startswith(
                f"{server.url} {step}")]  # fmt: skip
            assert "size limit" in line and PAGE_THROUGH_ALL.removeprefix("limits ") in line
            assert ("FAILED" in line) == bool(interval)
            assert (result.exit_code != 0) == bool(interval), result.output
    with Slapd(ldif_files=trees, extra_config=PAGE_THROUGH_ALL) as server:
        app = make_app(server, WATCH_INTERVAL=2)
        result = run(app, "check")
        app.extensions["portal.directory"].close()
        assert f"{server.url} {step}ok (" in result.output
        assert result.exit_code == 0, result.output


def test_check_fails_naming_the_server_when_it_is_stopped(own_slapd):
    """A stopped server gives a FAILED connect line naming it and why, and exit status 1."""
    app = make_app(own_slapd)
    own_slapd.stop()
    result = run(app, "check")
    assert result.exit_code == 1
    assert f"{own_slapd.url} connect: FAILED: " in result.output
    assert "Connection refused" in result.output
    assert "check: FAILED (1 failed)" in result.output


def test_check_says_a_hung_server_failed_the_bind_not_the_connection(own_slapd):
    """A server that takes the connection and never answers (SIGSTOPped: the kernel still
    accepts) is a connect that worked and a service bind that FAILED with the timeout: not
    "connect: FAILED", which sends the operator to the network."""
    app = make_app(own_slapd, LDAP_OPERATION_TIMEOUT=1)
    own_slapd.process.send_signal(signal.SIGSTOP)
    try:
        result = run(app, "check")
    finally:
        own_slapd.process.send_signal(signal.SIGCONT)
        app.extensions["portal.directory"].close()
    assert result.exit_code == 1, result.output
    assert f"{own_slapd.url} connect: ok (the connection was accepted)" in result.output
    bind_line = next(line for line in result.output.splitlines() if "service bind" in line)
    assert "FAILED" in bind_line and "timed out" in bind_line, result.output


def test_check_says_a_host_name_that_resolves_to_nothing(slapd):
    """ldap3 says "invalid server address" for a name with no address: check says so plainly."""
    url = "ldap://no-such-host.invalid:389"
    app = make_app(slapd, LDAP_URLS=[url], LDAP_ALLOW_CLEARTEXT=True)
    try:
        result = run(app, "check")
    finally:
        app.extensions["portal.directory"].close()
    assert result.exit_code == 1
    assert f"{url} connect: FAILED: " in result.output
    assert "no-such-host.invalid resolves to no address" in result.output


def test_check_fails_on_a_wrong_service_password(slapd):
    """A refused service bind is a FAILED line with the server's answer, and exit status 1."""
    app = make_app(slapd, LDAP_BIND_PASSWORD="not-the-password")
    result = run(app, "check")
    assert result.exit_code == 1
    assert f"{slapd.url} connect: ok" in result.output
    assert f"{slapd.url} service bind as {SERVICE_DN}: FAILED: invalidCredentials" in (
        result.output
    )
    assert "user base" not in result.output  # nothing is searched without the bind


def test_check_reads_every_user_base_and_fails_on_a_missing_one(slapd):
    """Each LDAP_USER_BASE gets its own base search; one that does not exist fails the check."""
    missing = "ou=nobody-here,dc=example,dc=org"
    app = make_app(slapd, LDAP_USER_BASE=[PEOPLE, missing])
    result = run(app, "check")
    assert result.exit_code == 1
    assert f"{slapd.url} people under {PEOPLE}: ok" in result.output
    assert f"{slapd.url} user base {missing}: FAILED: no such entry" in result.output
    assert f"people under {missing}" not in result.output


@pytest.fixture(scope="module")
def ldaps_slapd(tmp_path_factory):
    """A demo slapd also serving ldaps:// with a certificate from a test CA."""
    require_binary("openssl", "apt-get install openssl")
    folder = tmp_path_factory.mktemp("tls")
    certificate = make_server_certificate(folder, make_ca(folder), "IP:127.0.0.1")
    server = start_slapd(tls_files=(certificate.cert_file, certificate.key_file))
    yield server, certificate
    server.cleanup()


def test_check_reports_tls_and_refuses_an_untrusted_certificate(ldaps_slapd):
    """ldaps:// with the right CA says TLS is in use; without it the connect fails, saying why."""
    server, certificate = ldaps_slapd
    trusted = make_app(None, LDAP_URLS=[server.ldaps_url], LDAP_CA_FILE=str(certificate.ca_file))
    result = run(trusted, "check")
    assert result.exit_code == 0, result.output
    assert f"{server.ldaps_url} tls: ok (ldaps://, certificate and host name verified)" in (
        result.output
    )
    untrusted = run(make_app(None, LDAP_URLS=[server.ldaps_url]), "check")
    assert untrusted.exit_code == 1
    assert f"{server.ldaps_url} connect: FAILED: " in untrusted.output
    assert "certificate verify failed" in untrusted.output


def test_check_as_a_real_command_exits_non_zero_when_the_directory_is_unreachable(slapd):
    """`flask --app portal check` in a fresh process: 0 against slapd, 1 unreachable or misset."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    env.update(
        PORTAL_ENV="development",
        PORTAL_SETTINGS=str(ROOT / "settings.toml"),
        PORTAL_LDAP_URLS=json.dumps([slapd.url]),
        PORTAL_SECRET_KEY=json.dumps(secrets.token_hex(20)),
    )

    def flask_check(**overrides):
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "portal", "check"],
            cwd=ROOT,
            env=dict(env, **overrides),
            capture_output=True,
            text=True,
            timeout=120,
        )

    healthy = flask_check()
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "check: ok" in healthy.stdout
    unreachable = f"ldap://127.0.0.1:{free_port()}"
    down = flask_check(PORTAL_LDAP_URLS=json.dumps([unreachable]))
    assert down.returncode != 0
    assert f"{unreachable} connect: FAILED" in down.stdout
    misset = flask_check(PORTAL_LDAP_USER_BASE='"not a dn"')
    assert misset.returncode != 0
    assert "setting LDAP_USER_BASE" in misset.stderr


def test_the_portal_command_lists_its_commands_and_says_a_refused_setting_in_one_line(slapd):
    """`portal` (pyproject's script) in the repository as a newcomer runs it, in production by
    default: --help lists the operator commands, and `check` ends with the refused key in one
    line (exit 2), no traceback; set right, it checks the directory."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    command = str(Path(sys.executable).parent / "portal")

    def portal(*args, **settings):
        return subprocess.run([command, *args], cwd=ROOT, env=dict(env, **settings),
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    listed = portal("--help")
    assert listed.returncode == 0
    for name in ("check", "whois", "flush", "revoke", "access-check", "watch"):
        assert f"  {name} " in listed.stdout, name
    # Flask's options (another app, a .env file, debug mode) are not the portal's, and its
    # version is the portal's, not Python's, Flask's and Werkzeug's.
    assert "--env-file" not in listed.stdout and "--app" not in listed.stdout, listed.stdout
    versioned = portal("--version")
    assert versioned.returncode == 0 and versioned.stdout == "portal 0.1.0\n", versioned
    refused = portal("check")
    assert refused.returncode == 2
    assert refused.stderr.startswith("Error: setting SECRET_KEY: the dev-only value is refused")
    assert len(refused.stderr.splitlines()) == 1, refused.stderr  # no usage lines before it
    assert "Traceback" not in refused.stdout + refused.stderr
    # A production refusal does not suggest turning the host into a development one.
    assert "PORTAL_ENV=development" not in refused.stderr
    digits = portal("check", PORTAL_ENV="development", PORTAL_LDAP_BIND_PASSWORD="12345")
    assert digits.returncode == 2
    assert ("setting LDAP_BIND_PASSWORD: a string; it comes from PORTAL_LDAP_BIND_PASSWORD, "
            "whose value is read as JSON") in digits.stderr  # fmt: skip
    assert """a text in quotes as PORTAL_LDAP_BIND_PASSWORD='"..."'""" in digits.stderr
    # PORTAL_ENV=development is set already: not suggested again.
    assert "PORTAL_ENV=development for the demo" not in digits.stderr
    # A newcomer in the repository (no PORTAL_ENV, no PORTAL_SETTINGS) is told of the demo; a
    # production host, which names its mode (the image) or its file (the unit), is not.
    hints = {}
    for name, mode in (("newcomer", {}), ("image", {"PORTAL_ENV": "production"}),
                       ("unit", {"PORTAL_SETTINGS": str(ROOT / "settings.toml")})):  # fmt: skip
        run = portal("check", PORTAL_LDAP_BIND_PASSWORD="12345", **mode)
        assert run.returncode == 2 and "setting LDAP_BIND_PASSWORD" in run.stderr, run.stderr
        hints[name] = "PORTAL_ENV=development for the demo" in run.stderr
    assert hints == {"newcomer": True, "image": False, "unit": False}, hints
    checked = portal("check", PORTAL_ENV="development", PORTAL_LDAP_URLS=json.dumps([slapd.url]))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "check: ok" in checked.stdout


# --- whois ---------------------------------------------------------------------------------------


def test_the_portal_command_says_each_settings_warning_once(slapd, redis_server):
    """`portal check` lists a settings warning (an app its rules do not guard) as a check line,
    and no log line says it again; `whois` says none; `watch`, which serves, logs it at start
    (it had stopped logging it with `check`'s change)."""
    from tests.test_launcher import APPS, RULES

    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    env.update(PORTAL_ENV="development", PORTAL_LDAP_URLS=json.dumps([slapd.url]),
               PORTAL_ACCESS_RULES=json.dumps(RULES), PORTAL_APPS=json.dumps(APPS))  # fmt: skip
    command = str(Path(sys.executable).parent / "portal")

    def portal(*args):
        done = subprocess.run([command, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    status, checked = portal("check")
    assert status == 0, checked
    assert checked.count("APPS[4] (Budgets)") == 1, checked
    assert "settings: warning: APPS[4] (Budgets)" in checked
    status, explained = portal("whois", "alice")
    assert status == 0, explained
    assert "do not guard it" not in explained, explained
    # `portal watch` serves for as long as it runs: it logs them at start, as a server does
    # (beside servers sharing Redis: with SimpleCache it refuses to start).
    env.update(PORTAL_CACHE_TYPE="RedisCache", PORTAL_CACHE_REDIS_URL=redis_server.url,
               PORTAL_CACHE_KEY_PREFIX="watch-warnings-test:")  # fmt: skip
    watcher = subprocess.Popen([command, "watch"], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        started = _lines_until(watcher.stdout, "watching the directory")
    finally:
        watcher.terminate()
        watcher.communicate(timeout=30)
    assert "APPS[4] (Budgets)" in started, started


def _lines_until(stream, text: str) -> str:
    # What a child printed up to the line holding text (or up to its end).
    seen = []
    for line in stream:
        seen.append(line)
        if text in line:
            break
    return "".join(seen)


def test_whois_explains_an_active_person_and_their_pages(app):
    """alice: her entry and groups, active because of staff, which pages open, her cache entry."""
    sign_in(app, "alice")
    result = run(app, "whois", "alice")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "alice: Alice Liddell <alice@example.org>" in lines
    assert f"dn: uid=alice,{PEOPLE}" in lines
    assert "groups: engineering, staff" in lines
    assert "may use the portal: yes, allowed by staff" in lines
    assert "administrator: no" in lines
    assert "  open   handbook     Employee handbook: member of staff" in lines
    assert "  open   engineering  Engineering wiki: member of engineering" in lines
    assert "  closed finance      Finance reports: needs finance" in lines
    assert any(
        line.startswith("cache: entry ") and line.endswith("same as the directory")
        for line in lines
    )


def test_whois_says_a_person_in_no_allowed_group_cannot_sign_in(app):
    """carol is in no allowed group: the allowed groups she would need are named."""
    result = run(app, "whois", "carol")
    assert result.exit_code == 0
    assert "may use the portal: no, in no allowed group (needs staff)" in result.output
    assert "closed handbook     Employee handbook: cannot sign in; needs staff" in result.output


def test_whois_names_the_denied_group_that_refuses_a_person(app):
    """dave is in staff and in the denied group suspended: the denied group wins and is named."""
    result = run(app, "whois", "DAVE")  # typed names are folded as at login
    assert result.exit_code == 0
    assert "dave: Dave Suspended" in result.output
    assert (
        "may use the portal: no, refused by denied group suspended "
        "(although in allowed group staff)" in result.output
    )
    assert "Employee handbook: cannot sign in; member of staff" in result.output


def test_whois_for_an_unknown_name_says_no_such_person(app):
    """A name the directory does not know gets "no such person" and exit status 1."""
    result = run(app, "whois", "nobody")
    assert result.exit_code == 1
    assert "nobody: no such person" in result.output


def test_whois_shows_a_cache_entry_the_directory_no_longer_agrees_with(own_slapd):
    """After alice joins finance, whois says her cached groups still decide until expiry."""
    app = make_app(own_slapd)
    sign_in(app, "alice")
    own_slapd.modify(
        f"dn: cn=finance,{GROUPS}\nchangetype: modify\nadd: member\nmember: uid=alice,{PEOPLE}\n"
    )
    result = run(app, "whois", "alice")
    assert "groups: engineering, finance, staff" in result.output
    assert "Finance reports: member of finance" in result.output
    assert "differs from the directory (cached groups: engineering, staff)" in result.output
    assert "portal flush alice" in result.output


def test_whois_names_the_access_rule_that_closes_a_page(slapd):
    """A page her groups open but an ACCESS_RULES rule denies is closed, naming the rule."""
    rules = [{"paths": ["/pages/engineering"], "policy": "deny"}]
    result = run(make_app(slapd, ACCESS_RULES=rules), "whois", "alice")
    assert (
        "closed engineering  Engineering wiki: member of engineering, "
        "but rule 1: deny paths=/pages/engineering" in result.output
    )
    assert "open   handbook" in result.output


def test_whois_fails_plainly_when_the_directory_is_down(own_slapd):
    """With the directory stopped whois says it did not answer (exit 3, not the 1 of "no such
    person"), not a traceback."""
    app = make_app(own_slapd)
    own_slapd.stop()
    result = run(app, "whois", "alice")
    assert result.exit_code == 3
    assert "Error: the directory did not answer" in result.output


def test_whois_with_a_wrong_service_password_names_the_settings_to_fix(slapd, caplog):
    """The directory answers, refusing the portal's own service account: whois says so and
    which settings to check (it said the directory did not answer), exit 3 as for an outage;
    the server log names them too."""
    result = run(make_app(slapd, LDAP_BIND_PASSWORD="wrong"), "whois", "alice")
    assert result.exit_code == 3
    assert "Error: the directory refused the portal: the service account bind as" in result.output
    assert "invalidCredentials (49); check LDAP_BIND_DN and LDAP_BIND_PASSWORD" in result.output
    assert "check LDAP_BIND_DN and LDAP_BIND_PASSWORD" in caplog.text


def test_a_busy_server_refusing_the_service_bind_is_not_called_a_settings_mistake(
    slapd, monkeypatch
):
    """A bind refused as busy (51) is the server's state: whois says the directory did not
    answer, and names no setting to fix (fault injected: slapd is never busy on demand)."""

    app = make_app(slapd)

    def busy(connection, *args, **kwargs):
        connection.result = {"result": 51, "description": "busy", "message": "server is busy"}
        return False

    monkeypatch.setattr(LeanConnection, "bind", busy)
    result = run(app, "whois", "alice")
    assert result.exit_code == 3
    assert "Error: the directory did not answer: " in result.output
    assert "the bind was refused: busy (51)" in result.output
    assert "LDAP_BIND_PASSWORD" not in result.output


# --- flush ---------------------------------------------------------------------------------------


def test_flush_drops_one_entry_so_the_next_page_view_reads_the_directory(
    slapd, redis_server, ldap_spy
):
    """flush alice: her entry is gone and her next page view costs a user and a group search."""
    app = make_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=redis_server.url,
                   CACHE_KEY_PREFIX=f"portal-cli-{uuid.uuid4().hex}:")  # fmt: skip
    client = app.test_client()
    assert AuthActions(client).login("alice").status_code == 302
    sign_in(app, "bob")
    ldap_spy.reset()
    assert client.get("/").status_code == 200
    assert ldap_spy.count("search") == 0  # served from the cache
    result = run(app, "flush", "alice")
    assert result.exit_code == 0
    assert "alice: cache entry removed (it was " in result.output
    assert cached(app, "alice") is None
    assert cached(app, "bob") is not None
    assert client.get("/").status_code == 200
    assert ldap_spy.count("search") == 2
    assert cached(app, "alice") is not None
    app.extensions["portal.directory"].close()


@pytest.mark.parametrize("who", [["alice"], ["--all"]])
def test_flush_with_simplecache_is_refused_as_out_of_reach(app, who):
    """SimpleCache lives inside each server process: flush says nothing was flushed, exit 1
    (it said "user cache cleared", exit 0, having cleared only its own empty cache)."""
    result = run(app, "flush", *who)
    assert result.exit_code == 1, result.output
    assert "CACHE_TYPE is SimpleCache" in result.output and "nothing was flushed" in result.output
    assert "cleared" not in result.output and "removed" not in result.output


def test_flush_needs_a_name_or_all(app):
    """flush with neither a name nor --all (or with both) is a usage error, exit status 2."""
    assert run(app, "flush").exit_code == 2
    assert run(app, "flush", "alice", "--all").exit_code == 2


def test_flush_all_in_redis_deletes_only_user_entries_under_the_prefix(slapd, redis_server):
    """With RedisCache, --all deletes prefix + "user:*" keys; other keys, prefixed or not, stay."""
    prefix = f"portal-cli-{uuid.uuid4().hex}:"
    app = make_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=redis_server.url,
                   CACHE_KEY_PREFIX=prefix)  # fmt: skip
    client = redis.Redis.from_url(redis_server.url)
    others = [f"{prefix}readiness", f"other-app-{uuid.uuid4().hex}:user:alice"]
    try:
        for key in others:
            client.set(key, "kept")
        sign_in(app, "alice", "bob")
        result = run(app, "flush", "--all")
        assert result.exit_code == 0, result.output
        assert "user cache cleared: 2 entries removed" in result.output
        assert "SimpleCache" not in result.output
        assert cached(app, "alice") is None and cached(app, "bob") is None
        assert all(client.get(key) == b"kept" for key in others)
    finally:
        client.delete(*others)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()
        app.extensions["portal.directory"].close()


def test_check_and_flush_fail_when_redis_does_not_answer(slapd):
    """With Redis unreachable, check fails on the cache line and flush says nothing was flushed."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    app = make_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=url)
    checked = run(app, "check")
    assert checked.exit_code == 1
    assert "cache (RedisCache): FAILED: did not answer a write and read back" in checked.output
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert f"ConnectionError: Error 111 connecting to 127.0.0.1:{port}" in checked.output  # why
    assert f"{slapd.url} groups under {GROUPS}: ok" in checked.output
    flushed = run(app, "flush", "--all")
    assert flushed.exit_code == 1
    assert "the cache (RedisCache) did not answer: nothing flushed" in flushed.output


def test_whois_says_a_hung_redis_did_not_answer_rather_than_that_there_is_no_entry(
    slapd, own_redis
):
    """alice's entry is in Redis; with Redis frozen whois cannot see it and says so (it said
    "no entry", sending the on-call engineer after a cache that was fine)."""
    app = make_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)
    sign_in(app, "alice")
    assert run(app, "whois", "alice").output.splitlines()[-1].startswith("cache: entry ")
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        result = run(app, "whois", "alice")
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "cache: RedisCache did not answer; whether it holds an entry is not known"
    )
    app.extensions["portal.directory"].close()


def test_whois_with_nullcache_says_it_keeps_nothing(slapd):
    """NullCache never holds an entry: that is no failure to answer."""
    result = run(make_app(slapd, CACHE_TYPE="NullCache"), "whois", "alice")
    assert result.output.splitlines()[-1] == "cache: no entry (NullCache keeps nothing)"


@pytest.mark.parametrize(
    ("policy", "counts", "verdict"),
    [("noeviction", "", "ok"), ("volatile-lru", "memory://", "ok"),
     ("volatile-lru", "", "warning: volatile-lru may evict the failed-login counts"),
     ("allkeys-lru", "", "FAILED")],
    ids=["noeviction", "volatile, counts elsewhere", "volatile, counts here", "allkeys"],
)  # fmt: skip
def test_check_names_a_redis_eviction_policy_that_could_drop_revocations(
    slapd, build_app, own_redis, policy, counts, verdict
):
    """allkeys-* may evict the marks that end signed-out sessions: `check` fails on it. A
    volatile-* policy keeps them, but evicts the failed-login counts (they expire), which a
    full Redis then starts afresh (guessing and lockouts with them): a warning while they live
    there (it said ok)."""
    import redis

    client = redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory-policy", policy)
    client.close()
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                    THROTTLE_STORAGE_URL=counts)  # fmt: skip
    result = app.test_cli_runner().invoke(args=["check"])
    [line] = [line for line in result.output.splitlines() if "maxmemory-policy" in line]
    assert verdict in line and policy in line
    assert (result.exit_code == 0) == (verdict != "FAILED")


@pytest.mark.parametrize(
    ("persistence", "says"),
    [({"appendonly": "yes", "save": ""}, "redis persistence (appendonly yes): ok"),
     ({"appendonly": "no", "save": "3600 1"}, "warning: snapshots only (save 3600 1)"),
     ({"appendonly": "no", "save": ""}, "warning: none: a restart loses every sign-out")],
    ids=["append-only", "snapshots", "none"],
)  # fmt: skip
def test_check_says_whether_redis_keeps_the_marks_across_a_restart(
    slapd, build_app, own_redis, persistence, says
):
    """A Redis without persistence loses the sign-outs at a restart (the portal then signs
    everyone out); with snapshots alone it loses the last ones silently: `check` says so."""
    import redis

    client = redis.Redis.from_url(own_redis.url)
    for name, value in persistence.items():
        client.config_set(name, value)
    client.close()
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)
    result = app.test_cli_runner().invoke(args=["check"])
    [line] = [line for line in result.output.splitlines() if "redis persistence" in line]
    assert says in line
    assert result.exit_code == 0, result.output


def test_whois_under_a_default_deny_judges_pages_as_the_portal_does(slapd):
    """With ACCESS_DEFAULT_POLICY = "deny", whois says a page opens by its groups (the default
    policy is for apps), and names the rule that closes one."""
    rules = [{"paths": ["/pages/engineering"], "groups": ["finance"], "policy": "allow"},
             {"paths": ["/pages/engineering"], "policy": "deny"}]  # fmt: skip
    app = make_app(slapd, ACCESS_DEFAULT_POLICY="deny", ACCESS_RULES=rules, APPS=[])
    try:
        lines = run(app, "whois", "alice").output.splitlines()
    finally:
        app.extensions["portal.directory"].close()
    assert "  open   handbook     Employee handbook: member of staff" in lines
    assert any(line.startswith("  closed engineering") and "rule 2" in line for line in lines)


def checked_group_lines(app, passes: bool = True) -> list[str]:
    """The group lines of a `check` that passes (exit 0; else fails, exit 1), each without its
    server prefix."""
    try:
        result = run(app, "check")
    finally:
        app.extensions["portal.directory"].close()
    assert result.exit_code == (0 if passes else 1), result.output
    return [line.split(" ", 1)[1] for line in result.output.splitlines()
            if " group" in line or " members of " in line]  # fmt: skip


def test_check_names_groups_the_settings_use_that_no_group_or_several_have(own_slapd):
    """A second portal-admins in another branch of the group base would make its members
    administrators: check names both; a denied group that does not exist is named too; the
    exit status stays 0 (warnings), and each name that is one group passes in silence."""
    own_slapd.add(
        "dn: ou=marketing,ou=groups,dc=example,dc=org\nobjectClass: organizationalUnit\n"
        "ou: marketing\n\n"
        "dn: cn=portal-admins,ou=marketing,ou=groups,dc=example,dc=org\n"
        "objectClass: groupOfNames\ncn: portal-admins\n"
        "member: uid=bob,ou=people,dc=example,dc=org\n"
    )
    # "Staff" here and "staff" on the pages are one name: looked up once.
    app = make_app(own_slapd, ACCESS_ALLOWED_GROUPS=["Staff"],
                   ACCESS_DENIED_GROUPS=["suspended", "Leavers"])  # fmt: skip
    lines = checked_group_lines(app)
    [admins] = [line for line in lines if line.startswith("group portal-admins ")]
    assert admins.startswith("group portal-admins (ACCESS_ADMIN_GROUPS, PAGES[4]): warning: 2 "
                             f"groups have this name under {GROUPS} (")  # fmt: skip
    assert f"cn=portal-admins,{GROUPS}" in admins
    assert f"cn=portal-admins,ou=marketing,{GROUPS}" in admins
    assert (
        f"group Leavers (ACCESS_DENIED_GROUPS): warning: no group by this name under {GROUPS}"
        in lines
    )
    assert "groups the settings name: warning: 2 of 6 are not one group each (above)" in lines


def test_check_warns_of_a_group_named_by_a_value_the_portal_does_not_know_it_by(own_slapd):
    """ACCESS_DENIED_GROUPS names "on-leave", a second cn of cn=leave: the portal knows that
    group as "leave" and would deny no one; check says so and which name to use."""
    own_slapd.add(
        "dn: cn=leave,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: leave\n"
        "cn: on-leave\nmember: uid=bob,ou=people,dc=example,dc=org\n"
    )
    app = make_app(own_slapd, ACCESS_DENIED_GROUPS=["suspended", "on-leave"])
    lines = checked_group_lines(app)
    assert (
        "group on-leave (ACCESS_DENIED_GROUPS): warning: a group's cn value, not the name the "
        f"portal knows it by (cn=leave,{GROUPS} as 'leave'): use that name"
    ) in lines
    assert "groups the settings name: warning: 1 of 6 are not one group each (above)" in lines


def test_check_in_memberof_mode_names_a_group_as_its_memberof_values_do(own_slapd):
    """In "memberof" mode a group is known by its DN's first RDN, as a memberOf value names
    it: a group entry ou=team-a with cn "Team A" is "team-a" there, so a setting naming
    "Team A" denies no one; check says so (it said nothing, finding one group of that cn)."""
    own_slapd.add(
        "dn: ou=team-a,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: Team A\n"
        "ou: team-a\nmember: uid=bob,ou=people,dc=example,dc=org\n"
    )
    app = make_app(own_slapd, LDAP_GROUP_MEMBERSHIP="memberof",
                   ACCESS_DENIED_GROUPS=["suspended", "Team A"])  # fmt: skip
    # The test directory runs no memberof overlay: nobody has a memberOf value, so nobody could
    # sign in in this mode, and check fails on that (below).
    lines = checked_group_lines(app, passes=False)
    assert (
        "group Team A (ACCESS_DENIED_GROUPS): warning: a group's cn value, not the name the "
        f"portal knows it by (ou=team-a,{GROUPS} as 'team-a'): use that name"
    ) in lines
    assert any(line.startswith("members of staff: FAILED: none of 3 members") for line in lines)


@pytest.mark.parametrize(
    ("settings", "group", "dn"),
    [
        (
            {"LDAP_GROUP_FILTER": "(&(objectClass=groupOfNames)(member={username}))"},
            "staff",
            f"cn=staff,{GROUPS}",
        ),
        # erin's posixGroup lists her by memberUid; this filter reads groupOfNames only.
        (
            {
                "LDAP_GROUP_FILTER": "(&(objectClass=groupOfNames)(member={user_dn}))",
                "ACCESS_ALLOWED_GROUPS": ["portal-admins"],
            },
            "portal-admins",
            f"cn=portal-admins,{GROUPS}",
        ),
        ({"LDAP_GROUP_MEMBERSHIP": "memberof"}, "staff", f"cn=staff,{GROUPS}"),
    ],
    ids=["username-for-a-dn", "memberuid-unread", "memberof-without-the-overlay"],
)
def test_check_fails_when_an_allowed_groups_members_are_not_found_in_it(
    own_slapd, settings, group, dn
):
    """The allowed group exists and lists its members, but the group look-up a sign-in makes
    finds none of them in it: nobody can sign in, so check fails naming the group, one of its
    members and the settings to look at (it said "check: ok")."""
    app = make_app(own_slapd, **settings)
    try:
        result = run(app, "check")
    finally:
        app.extensions["portal.directory"].close()
    assert result.exit_code == 1, result.output
    [line] = [line for line in result.output.splitlines() if f" members of {group}: " in line]
    assert f"members of {group}: FAILED: none of " in line, line
    assert f" members {dn} lists (such as uid=" in line and "check LDAP_GROUP_FILTER" in line, line
    # The same settings with the look-up right: the same group passes.
    if "LDAP_GROUP_FILTER" in settings and group == "portal-admins":
        right = make_app(own_slapd, ACCESS_ALLOWED_GROUPS=["portal-admins"])
        try:
            passed = run(right, "check")
        finally:
            right.extensions["portal.directory"].close()
        assert ("members of portal-admins: ok (1 of 1 members tried are in it by a sign-in's "
                "look-up)") in passed.output, passed.output  # fmt: skip


def test_check_passes_over_members_no_sign_in_meets(own_slapd):
    """An allowed group listing an entry that is gone, the service account and a named entry
    outside the user base (no sign-in finds either), and then alice: those are passed over,
    and alice is found in the group as her sign-in finds her."""
    outside = "uid=zed,ou=services,dc=example,dc=org"
    own_slapd.add(f"dn: {outside}\nobjectClass: inetOrgPerson\nuid: zed\ncn: Zed\nsn: Zed\n\n"
                  f"dn: cn=contractors,{GROUPS}\nobjectClass: groupOfNames\ncn: contractors\n"
                  f"member: uid=ghost,{PEOPLE}\nmember: {SERVICE_DN}\nmember: {outside}\n"
                  f"member: uid=alice,{PEOPLE}\n")  # fmt: skip
    lines = checked_group_lines(make_app(own_slapd, ACCESS_ALLOWED_GROUPS=["contractors"]))
    assert ("members of contractors: ok (1 of 1 members tried are in it by a sign-in's "
            "look-up)") in lines, lines  # fmt: skip


@pytest.mark.parametrize(
    "failure",
    [lambda: LDAPSocketReceiveError("error receiving data: timed out"),
     lambda: DirectoryError("search under uid=alice refused with result code 50")],
    ids=["the server stops answering", "access refused"],
)  # fmt: skip
def test_check_fails_when_members_cannot_be_read(app, monkeypatch, failure):
    """The server stops answering, or refuses access, while the members are read (injected):
    the step fails saying so (it passed them over and said "not tried", exit 0)."""
    from portal import cli

    def refused(*args, **kwargs):
        raise failure()

    monkeypatch.setattr(cli, "_member_entries", refused)
    result = run(app, "check")
    assert result.exit_code == 1, result.output
    [line] = [line for line in result.output.splitlines() if " members of staff: " in line]
    assert " members of staff: FAILED: " in line, line


def test_check_warns_when_no_administrator_could_open_the_admin_pages(app):
    """A filter that reads groupOfNames only, while portal-admins is a posixGroup listing erin
    by memberUid: people can still sign in (staff), so check passes, but says that nobody in
    portal-admins could open the admin pages (it said nothing, and whois said "no")."""
    group_names_only = "(&(objectClass=groupOfNames)(member={user_dn}))"
    narrow = make_app(None, LDAP_URLS=app.config["LDAP_URLS"], LDAP_GROUP_FILTER=group_names_only)
    lines = checked_group_lines(narrow)
    [said] = [line for line in lines if line.startswith("members of portal-admins: ")]
    assert said.startswith("members of portal-admins: warning: none of 1 members "
                           f"cn=portal-admins,{GROUPS} lists"), said  # fmt: skip
    assert "so nobody in it can open the admin pages" in said, said


def test_check_warns_when_an_allowed_group_lists_only_groups(own_slapd):
    """An allowed group whose members are groups: its people are not tried (nested groups are
    not followed by this step), and check says so as a warning, not as ok (it said "ok (not
    tried: ...)", and that the entry listed no member)."""
    own_slapd.add(f"dn: cn=everyone,{GROUPS}\nobjectClass: groupOfNames\ncn: everyone\n"
                  f"member: cn=staff,{GROUPS}\n")  # fmt: skip
    lines = checked_group_lines(make_app(own_slapd, ACCESS_ALLOWED_GROUPS=["everyone", "staff"]))
    assert (f"members of everyone: warning: not tried: none of the members cn=everyone,{GROUPS} "
            "lists (the first 20 read) is a person under LDAP_USER_BASE: members through "
            "nested or primary groups are not checked") in lines, lines  # fmt: skip


def test_check_names_who_may_not_read_a_base_and_says_it_once(slapd):
    """Anonymous searches on a directory that lets anonymous users read nothing: each base's
    line says an anonymous search may not read it (it blamed a missing entry and a service
    account there is none of), and nothing is said again on the console (seven log lines
    repeated what the lines said)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    env.update(PORTAL_ENV="development", PORTAL_LDAP_URLS=json.dumps([slapd.url]),
               PORTAL_LDAP_ANONYMOUS_SEARCH="true", PORTAL_LDAP_BIND_DN='""',
               PORTAL_LDAP_BIND_PASSWORD='""')  # fmt: skip
    done = subprocess.run([str(Path(sys.executable).parent / "portal"), "check"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done
    said = "FAILED: no such entry, or an anonymous search (LDAP_ANONYMOUS_SEARCH) may not read it"
    assert f"{slapd.url} user base {PEOPLE}: {said}\n" in done.stdout, done.stdout
    assert f"{slapd.url} group base {GROUPS}: {said}\n" in done.stdout, done.stdout
    assert "WARNING" not in done.stderr, done.stderr


def test_the_json_hint_is_for_values_from_the_environment_not_for_misspelled_names():
    """A wrong value from a PORTAL_* variable gets the JSON hint; a misspelled name, whose
    quoting is not the matter, and a value from the settings file do not."""
    from portal.settings import environment_hint as _from_environment

    environ = {"PORTAL_LDAP_BIND_PASSWORD": "12345", "PORTAL_WATCH_INTERVALL": "0"}
    hint = _from_environment("setting LDAP_BIND_PASSWORD: a string", environ)
    assert "comes from PORTAL_LDAP_BIND_PASSWORD, whose value is read as JSON" in hint
    assert _from_environment("setting WATCH_INTERVALL: unknown setting (did you mean "
                             "WATCH_INTERVAL?)", environ) == ""  # fmt: skip
    assert _from_environment("setting LDAP_URLS: a list", environ) == ""
    # A value read as the text it is needs no quotes: the hint would lead the wrong way.
    assert _from_environment("setting ENV: 'dev' is not one of production or development",
                             {"PORTAL_ENV": "dev"}) == ""  # fmt: skip
    # A number out of range was read as the number it is: quoting is not the fix.
    assert _from_environment("setting USER_CACHE_TTL: a whole number above 0",
                             {"PORTAL_USER_CACHE_TTL": "-1"}) == ""  # fmt: skip
    # A text where a list belongs is a matter of JSON.
    listed = _from_environment("setting SECRET_KEY_FALLBACKS: a list of earlier keys",
                               {"PORTAL_SECRET_KEY_FALLBACKS": "old-key"})  # fmt: skip
    assert "give a list, as PORTAL_SECRET_KEY_FALLBACKS='[" in listed


def test_an_empty_variable_that_wins_over_the_settings_file_is_named(tmp_path):
    """A systemd environment file's "PORTAL_SECRET_KEY=" line is an empty variable, and it
    wins over the key in the settings file: `portal check` says so, and names the settings
    file it read (it said only "set a text", which the file did)."""
    named = tmp_path / "portal.toml"
    named.write_text((ROOT / "settings.toml").read_text())
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    env.update(PORTAL_SETTINGS=str(named), PORTAL_ENV="development", PORTAL_SECRET_KEY="")
    done = subprocess.run([str(Path(sys.executable).parent / "portal"), "check"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done
    assert ('it comes from PORTAL_SECRET_KEY, which is set but empty (as a line '
            '"PORTAL_SECRET_KEY=" in an environment file sets it) and wins over the settings '
            "file's value: remove it, or give it one") in done.stderr, done.stderr  # fmt: skip
    assert f"(the settings: {named} (PORTAL_SETTINGS) and PORTAL_* variables)" in done.stderr
    # No settings file gives the key: removing the variable would not help.
    alone = subprocess.run([str(Path(sys.executable).parent / "portal"), "check"], cwd=tmp_path,
                           env={k: v for k, v in env.items() if k != "PORTAL_SETTINGS"},
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert alone.returncode == 2, alone
    assert ('"PORTAL_SECRET_KEY=" in an environment file sets it): give it the value'
            in alone.stderr), alone.stderr  # fmt: skip
    assert "wins over" not in alone.stderr


def test_check_fails_when_no_allowed_group_exists(slapd):
    """ACCESS_ALLOWED_GROUPS = ["stuff"] (a typo of staff): nobody can sign in, so check
    fails with exit status 1 (it warned of the group and said "check: ok", exit 0, which a
    deployment pipeline passed)."""
    app = make_app(slapd, ACCESS_ALLOWED_GROUPS=["stuff"])
    result = run(app, "check")
    assert result.exit_code == 1, result.output
    assert (f"groups the settings name: FAILED: none of ACCESS_ALLOWED_GROUPS is a group under "
            f"{GROUPS}, so nobody can sign in (above)") in result.output  # fmt: skip
    assert "check: ok" not in result.output
    app.extensions["portal.directory"].close()


def test_check_reads_the_username_attribute_of_the_people(own_slapd):
    """LDAP_ATTR_USERNAME misspelled ("uidd"): the people are found, but none has a name to
    sign in by, so check fails naming the setting (every step said ok, and every sign-in then
    failed as a wrong password). One person with two values is a warning, exit status 0."""
    misspelled = make_app(own_slapd, LDAP_ATTR_USERNAME="uidd")
    result = run(misspelled, "check")
    assert result.exit_code == 1, result.output
    assert (f"people under {PEOPLE}: FAILED: 6 matching (&(objectClass=inetOrgPerson)(uid=*)), "
            "but none of the first 6 has one uidd value, so nobody can sign in: check "
            "LDAP_ATTR_USERNAME") in result.output  # fmt: skip
    misspelled.extensions["portal.directory"].close()
    own_slapd.modify(f"dn: uid=bob,{PEOPLE}\nchangetype: modify\nadd: uid\nuid: robert\n")
    app = make_app(own_slapd)
    result = run(app, "check")
    assert result.exit_code == 0, result.output
    assert (f"people under {PEOPLE}: ok (6 matching (&(objectClass=inetOrgPerson)(uid=*)); "
            f"warning: 1 of the first 6 have no single uid value and cannot sign in (such as "
            f"uid=bob,{PEOPLE}))") in result.output  # fmt: skip
    app.extensions["portal.directory"].close()


def test_watch_refuses_a_cache_the_servers_do_not_share(slapd):
    """With SimpleCache (the demo's) a watcher beside the servers would re-read people into
    its own memory, which no server reads: `portal watch` refuses, naming CACHE_TYPE, exit
    status 1 (it said "watching the directory every 2 s" and watched for nobody)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    env.update(PORTAL_ENV="development", PORTAL_LDAP_URLS=json.dumps([slapd.url]))
    command = str(Path(sys.executable).parent / "portal")
    done = subprocess.run([command, "watch"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "CACHE_TYPE is SimpleCache: the running servers do not share it" in done.stderr
    assert "watching" not in done.stdout


def test_whois_of_an_entry_that_cannot_be_used_reads_as_a_sentence(own_slapd):
    """A person whose entry has no LDAP_ATTR_USERNAME value to sign in by: whois says its
    entry cannot be used (it said "the account is its entry cannot be used")."""
    app = make_app(own_slapd, LDAP_ATTR_USERNAME="uidd")
    result = run(app, "whois", "alice")
    assert "alice: in the directory, but cannot sign in: its entry cannot be used (see the " in (
        result.output
    )
    assert "the account is its" not in result.output
    app.extensions["portal.directory"].close()


@pytest.mark.parametrize(
    "refused, named",
    [("-@scripting", "'evalsha'"), ("-hset", "'hset'"), ("-multi", "MULTI"),
     ("-hmget", "'hmget'")],
    ids=["no scripts", "no HSET", "no MULTI", "no HMGET"],
)  # fmt: skip
def test_check_and_readyz_name_a_command_the_redis_user_may_not_run(
    slapd, own_redis, refused, named
):
    """The portal's Redis user may GET and SET but not run scripts (every sign-in failed:
    the throttle counts by script), hashes or transactions (sign-outs reached no other
    server): check fails naming the refused command and what the ACL must allow, and
    /readyz answers 503 (both said all was well)."""
    url = restricted_redis_url(own_redis, "portal", refused)
    app = make_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=url,
                   CACHE_KEY_PREFIX="acl-test:")  # fmt: skip
    result = run(app, "check")
    assert result.exit_code == 1, result.output
    if refused == "-@scripting":
        # Only the failed-login counts, kept in this Redis, are counted by script here.
        [line] = [line for line in result.output.splitlines() if "failed-login counts" in line]
        assert ": FAILED: cannot be counted, so every sign-in is paused" in line, line
        assert named in line, line
    else:
        [line] = [line for line in result.output.splitlines() if line.startswith("cache (")]
        assert line.startswith("cache (RedisCache): FAILED: Redis refuses a command the "
                               "portal sends to its user ("), line  # fmt: skip
        assert named in line and "its ACL must allow GET SET DEL HMGET" in line, line
    assert app.test_client().get("/readyz").status_code == 503
    app.extensions["portal.directory"].close()


def test_check_says_when_failed_logins_cannot_be_counted(slapd, own_redis):
    """THROTTLE_STORAGE_URL names a Redis whose user may not run scripts (the counts are
    kept by script): every sign-in is paused with a 503, and check says so (it never looked
    at that storage)."""
    url = restricted_redis_url(own_redis, "counts", "-@scripting")
    app = make_app(slapd, THROTTLE_STORAGE_URL=url)
    result = run(app, "check")
    assert result.exit_code == 1, result.output
    assert (f"failed-login counts (redis://127.0.0.1:{own_redis.port}/0): FAILED: cannot be "
            "counted, so every sign-in is paused: NoPermissionError: this user has no "
            "permissions to run the 'evalsha' command") in result.output  # fmt: skip
    app.extensions["portal.directory"].close()


def test_revoke_with_a_full_redis_says_it_stored_nothing(slapd, build_app, own_redis):
    """Redis at its maxmemory with noeviction answers every write "OOM": `portal revoke bob`
    exits 1 saying the revocation was not stored and why that may be (it said the cache did
    not answer, while Redis answered: an on-call engineer looked for an outage)."""
    client = own_redis.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    try:
        app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                        THROTTLE_STORAGE_URL="memory://")  # fmt: skip
        result = app.test_cli_runner().invoke(args=["revoke", "bob"])
    finally:
        client.config_set("maxmemory", "0")
    assert result.exit_code == 1, result.output
    assert ("the cache did not store the revocation (it is down, full, or refuses the command"
            in result.output), result.output  # fmt: skip


@pytest.mark.parametrize(
    "offset, says",
    [(0, "s from Redis's): ok"), (-0.5, "s from Redis's): ok"),
     (120, "clock: warning: this host's clock is 120 s ahead of Redis's"),
     (-90, "clock: warning: this host's clock is 90 s behind Redis's")],
)  # fmt: skip
def test_check_compares_the_hosts_clock_with_redis(slapd, build_app, own_redis, monkeypatch,
                                                   offset, says):  # fmt: skip
    """Sign-ins and sign-out marks carry each host's time: a host 120 s ahead makes sign-ins a
    sign out everywhere elsewhere misses and ends others' new ones. check compares the clock
    sign-ins are made by with Redis's, which every instance shares, and warns past 5 s (the
    clock moved here, as a host's would be off)."""
    import time as real_time

    monkeypatch.setattr("portal.signin.logins._clock", lambda: real_time.time() + offset)
    app = build_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)
    result = app.test_cli_runner().invoke(args=["check"])
    [line] = [line for line in result.output.splitlines() if line.startswith("clock")]
    assert says in line, line
    assert result.exit_code == 0, result.output


def test_run_from_a_folder_without_settings_says_no_file_was_read(tmp_path):
    """`portal check` run from another folder (tried as a new administrator would): no
    settings file is read, so the first setting only the file gave is refused; the error
    says no file was read and where it looked (it named SECRET_KEY alone, and the
    administrator went looking for a key)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    command = str(Path(sys.executable).parent / "portal")
    done = subprocess.run([command, "check"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert (f"no settings file was read: there is no settings.toml in {tmp_path} and "
            "PORTAL_SETTINGS is not set") in done.stderr, done.stderr  # fmt: skip


def test_the_status_page_says_redis_refuses_a_command(slapd, own_redis):
    """The portal's Redis user may not write hashes (sign-outs then reach no other server),
    yet signing in works: the status page's summary and cache section say Redis refuses a
    command and which (its summary said the cache was not answering)."""
    url = restricted_redis_url(own_redis, "portal", "-hset")
    app = make_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=url,
                   CACHE_KEY_PREFIX="acl-status-test:")  # fmt: skip
    erin = app.test_client()
    assert AuthActions(erin).login("erin").status_code == 302
    status = erin.get("/admin/status").get_data(as_text=True)
    assert "Cache: refuses a command the portal needs" in status
    assert "Redis refuses a command the portal sends to its user (" in status
    assert "&#39;hset&#39;" in status
    app.extensions["portal.directory"].close()


def test_the_redis_probe_reads_one_scan_page_however_many_keys(slapd, own_redis):
    """20,000 keys in Redis: one probe (/readyz) sends one SCAN (it walked the keyspace ten
    keys a round trip looking for its own key, gone by then: 2,000 calls, seconds on a
    network, and load balancers marked every instance unready)."""
    client = own_redis.client()
    with client.pipeline(transaction=False) as pipe:
        for number in range(20_000):
            pipe.set(f"portal:user:filler-{number}", "x")
        pipe.execute()
    app = make_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url)

    def scans() -> int:
        return client.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)

    before = scans()
    assert app.test_client().get("/readyz").status_code == 200
    assert scans() - before == 1
    app.extensions["portal.directory"].close()


@pytest.mark.parametrize("watching, ready", [(0, 200), (5, 503)], ids=["no watcher", "watcher"])
def test_readyz_asks_for_scripts_only_where_the_portal_runs_them(slapd, own_redis, watching,
                                                                ready):  # fmt: skip
    """A Redis user without scripts, the failed-login counts in memory: without a watcher
    here the portal sends Redis no script and works, so /readyz stays 200 (it answered 503
    and took the instance out of the load balancer); with a watcher, whose lease is a
    script, it is 503."""
    url = restricted_redis_url(own_redis, "portal", "-@scripting")
    app = make_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=url,
                   THROTTLE_STORAGE_URL="memory://", WATCH_INTERVAL=watching)  # fmt: skip
    try:
        assert app.test_client().get("/readyz").status_code == ready
    finally:
        watcher = app.extensions.get("portal.watcher")
        if watcher is not None:
            watcher.stop()
        app.extensions["portal.directory"].close()


def test_readyz_follows_the_failed_login_counts(slapd, own_redis):
    """The counts in a Redis whose user may not run scripts: every sign-in is paused, and
    /readyz says so (503, naming the check)."""
    url = restricted_redis_url(own_redis, "counts", "-@scripting")
    app = make_app(slapd, THROTTLE_STORAGE_URL=url)
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 503 and answer.get_json()["failed"] == ["failed-login counts"]
    app.extensions["portal.directory"].close()


def test_check_compares_the_clock_where_config_is_refused(slapd, own_redis):
    """A managed Redis refuses CONFIG: check cannot read its eviction policy, but still
    compares the clock (it skipped that too)."""
    url = restricted_redis_url(own_redis, "managed", "-config")
    app = make_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=url)
    lines = run(app, "check").output.splitlines()
    assert any(line.startswith("redis maxmemory-policy: cannot be read") for line in lines)
    assert any(line.startswith("clock (") and line.endswith("from Redis's): ok")
               for line in lines), lines  # fmt: skip
    app.extensions["portal.directory"].close()


def test_revoke_help_says_which_names_it_takes_and_what_its_exit_status_means(app):
    """An administrator scripting off-boarding reads `portal revoke --help`: it says an
    e-mail address signs out its owner, and what exit status 0 and 1 mean (it said neither)."""
    result = run(app, "revoke", "--help")
    assert result.exit_code == 0
    said = " ".join(result.output.split())
    assert "(an e-mail address): its owner is signed out" in said
    assert "Exit status 0 when the sign-ins ended" in said and "1 when nothing could be" in said


def test_check_warns_when_no_administrator_may_sign_in(app):
    """ACCESS_ADMIN_GROUPS = finance while only engineering may sign in: frank is found in
    finance, but may not sign in, so nobody could open the admin pages (check said ok)."""
    apart = make_app(None, LDAP_URLS=app.config["LDAP_URLS"], ACCESS_ADMIN_GROUPS=["finance"],
                     ACCESS_ALLOWED_GROUPS=["engineering"])  # fmt: skip
    lines = checked_group_lines(apart)
    [said] = [line for line in lines if line.startswith("members of finance: ")]
    assert said.startswith("members of finance: warning: none of 1 members tried may sign in "
                           "(such as uid=frank,ou=people,dc=example,dc=org, in "), said  # fmt: skip
    assert "so nobody in it can open the admin pages" in said, said
    [allowed] = [line for line in lines if line.startswith("members of engineering: ")]
    assert allowed.startswith("members of engineering: ok"), allowed


def test_access_check_says_an_address_refused_before_any_rule_in_words(app):
    """`access-check bob /app//finance/` said "DENIED by refused: ambiguous path ..."."""
    done = app.test_cli_runner().invoke(args=["access-check", "bob", "https://localhost/app//x/"])
    assert done.exit_code == 1, done.output
    assert ("DENIED by the address itself, before any rule (ambiguous path '/app//x/')"
            in done.output), done.output  # fmt: skip


def test_the_status_page_asks_a_hung_redis_once_and_says_the_watcher_is_unknown(
    slapd, own_redis, monkeypatch
):
    """Redis hangs (SIGSTOP): the status page asked it four more times after its probe failed
    (your entry, the people cached, the watcher's state and progress), each waiting out the
    timeout (4 s a page), and then said the watcher was off (WATCH_INTERVAL = 0). Now the probe
    is the page's one question besides the sign-in's own, and the watcher is "unknown"."""
    from redis.connection import Connection

    app = make_app(slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                   CACHE_KEY_PREFIX="hung-status-test:")  # fmt: skip
    erin = app.test_client()
    assert AuthActions(erin).login("erin").status_code == 302
    sent = []
    real_send = Connection.send_packed_command

    def counted(connection, command, *args, **kwargs):
        sent.append(command)
        return real_send(connection, command, *args, **kwargs)

    monkeypatch.setattr(Connection, "send_packed_command", counted)
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        erin.get("/healthz")  # a request of the guard's: its breaker opens on the timeout
        status = erin.get("/admin/status")
        page = status.get_data(as_text=True)
        assert status.status_code == 200
        assert "Off (WATCH_INTERVAL = 0)" not in page
        assert "Unknown: the watcher publishes what it does in the cache" in page
        assert "Cache: not answering" in page or "did not answer" in page, page
        assert len(sent) <= 2, sent  # /healthz's read (its breaker then opens), the probe
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
        app.extensions["portal.directory"].close()


def test_check_of_the_settings_only_asks_no_server():
    """`portal check --settings-only` (the shipped unit's reload runs it): the settings
    alone, so a directory that does not answer does not stop a reload that fixes it."""
    app = make_app(None, LDAP_URLS=[f"ldap://127.0.0.1:{free_port()}"])
    try:
        result = app.test_cli_runner().invoke(args=["check", "--settings-only"])
    finally:
        app.extensions["portal.directory"].close()
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "settings: ok"
    assert result.output.splitlines()[-1] == "check: ok (the settings only: no server was asked)"
    assert "ldap://" not in result.output and "cache" not in result.output, result.output


def test_check_of_the_settings_only_refuses_what_several_workers_would():
    """In production SimpleCache keeps sign-outs in each process, which gunicorn's start
    refuses with several workers: `check --settings-only` passed it ("check: ok"), so the
    unit's reload sent the HUP and gunicorn stopped, and the portal with it. Given the
    server's worker count (or WEB_CONCURRENCY), it refuses it as the start would (exit 2)."""
    app = make_app(None, ENV="production", SESSION_COOKIE_SECURE=True, CACHE_TYPE="SimpleCache",
                   SECRET_KEY="9f2c4e71b03a8d56e1f7c2a94b0d3e68f15a7c29d4e80b36",
                   LDAP_BIND_PASSWORD="reader-" + secrets.token_hex(8),
                   LDAP_URLS=[f"ldaps://127.0.0.1:{free_port()}"])  # fmt: skip
    try:
        runner = app.test_cli_runner()
        refused = runner.invoke(args=["check", "--settings-only", "--workers", "2"])
        from_environment = runner.invoke(args=["check", "--settings-only"],
                                         env={"WEB_CONCURRENCY": "3"})  # fmt: skip
        one = runner.invoke(args=["check", "--settings-only", "--workers", "1"],
                            env={"WEB_CONCURRENCY": "3"})  # fmt: skip
    finally:
        app.extensions["portal.directory"].close()
    for result, count in ((refused, "2"), (from_environment, "3")):
        assert result.exit_code == 2, result.output
        assert "setting CACHE_TYPE: SimpleCache keeps sign-outs" in result.output
        assert f"{count} worker processes" in result.output
    assert one.exit_code == 0, one.output


def test_the_units_reload_checks_the_worker_count_it_starts_with():
    """The unit's reload checks the settings for as many workers as its ExecStart runs."""
    from tests.test_deployment import _unit_lines

    [start] = _unit_lines("ExecStart")
    [check, _] = _unit_lines("ExecReload")
    assert re.search(r"--workers (\d+)", check)[1] == re.search(r"--workers (\d+)", start)[1]


def test_a_list_given_as_text_in_the_environment_is_told_to_be_a_list():
    """PORTAL_SECRET_KEY_FALLBACKS=old-key: the hint asked for a list, then suggested quoting
    the text ('"..."'), which is the very mistake refused."""
    from portal.settings import environment_hint

    environ = {"PORTAL_SECRET_KEY_FALLBACKS": "old-key-1234"}
    hint = environment_hint('setting SECRET_KEY_FALLBACKS: a list of earlier keys, such as '
                            '["the-old-key"], or empty', environ)  # fmt: skip
    assert hint == ("; it comes from PORTAL_SECRET_KEY_FALLBACKS, whose value is read as "
                    "JSON: give a list, as PORTAL_SECRET_KEY_FALLBACKS='[\"...\"]'")  # fmt: skip
    # Given as a list, with a wrong item: JSON is not the matter, so no hint about it.
    listed = {"PORTAL_LDAP_LOGIN_DOMAINS": '["a", 5]'}
    assert environment_hint("setting LDAP_LOGIN_DOMAINS: a list such as [...]", listed) == ""


def test_whois_run_with_another_secret_key_says_so_rather_than_no_entry(slapd, redis_server):
    """The command line with another SECRET_KEY than the servers' (the service's environment
    file not read): whois said "cache: no entry" of alice, who had one, and only a log warning
    hinted why. It now says the entry is kept but not signed with the command's key."""
    shared = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url,
              "CACHE_KEY_PREFIX": f"other-key-test-{uuid.uuid4().hex[:8]}:"}  # fmt: skip
    server = make_app(slapd, **shared)
    sign_in(server, "alice")
    twin = make_app(slapd, **shared)
    assert run(twin, "whois", "alice").output.splitlines()[-1].startswith("cache: entry ")
    stranger = make_app(slapd, **shared, SECRET_KEY="another-key-" + secrets.token_hex(16))
    line = run(stranger, "whois", "alice").output.splitlines()[-1]
    assert line.startswith("cache: an entry is kept, but not signed with this command's "
                           "SECRET_KEY"), line  # fmt: skip
    assert run(stranger, "whois", "bob").output.splitlines()[-1] == "cache: no entry"
    for app in (server, twin, stranger):
        app.extensions["portal.directory"].close()
