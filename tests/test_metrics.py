"""GET /metrics: login outcomes, user-loader sources, cache hits, LDAP timings, access, gunicorn.

Counters are process-wide and other tests move them too, so every in-process test reads the
metrics before and after what it does and asserts the difference, never an absolute value.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from portal import accounts
from portal.metrics import LOGIN_OUTCOMES
from portal.settings import ConfigError
from portal.testing import trees
from portal.testing.slapd import free_port
from tests.conftest import ROOT, AuthActions, csrf_token_in, make_app, plant_login
from tests.servers import Gunicorn, listener, portal_environment

TOKEN = "metrics-token-0123456789abcdef"
OUTSIDE = {"REMOTE_ADDR": "10.1.2.3"}  # a WSGI environ value: the request never leaves Python


class Scrape:
    """One /metrics answer, parsed with prometheus-client's own parser."""

    def __init__(self, text: str):
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """One sample's value; 0 for a series not exported yet."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def delta(self, before: Scrape, name: str, **labels: str) -> float:
        """How much one sample moved since an earlier scrape."""
        return self.value(name, **labels) - before.value(name, **labels)


def scrape(app, **request_options) -> Scrape:
    """GET /metrics with a cookie-less client (a scraper): 200 and parsed."""
    response = app.test_client().get("/metrics", **request_options)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.get_data(as_text=True))


def login_deltas(before: Scrape, after: Scrape) -> dict[str, float]:
    """How much each login outcome moved."""
    return {o: after.delta(before, "portal_logins_total", outcome=o) for o in LOGIN_OUTCOMES}


def server_label(app) -> str:
    """The `server` label of the app's one directory server (host:port)."""
    server = app.extensions["portal.directory"].servers[0]
    return f"{server.host}:{server.port}"


@pytest.mark.parametrize(
    ("username", "password", "outcome", "status"),
    [
        ("alice", "alice-secret", "success", 302),
        ("alice", "not-the-password", "failed", 401),
        ("nobody-by-this-name", "whatever", "failed", 401),
        ("carol", "carol-secret", "refused", 403),
    ],
)
def test_each_login_counts_once_under_its_outcome(app, username, password, outcome, status):
    """A login moves its own outcome's counter by exactly one and no other outcome."""
    before = scrape(app)
    assert AuthActions(app.test_client()).login(username, password).status_code == status
    expected = dict.fromkeys(LOGIN_OUTCOMES, 0.0) | {outcome: 1.0}
    assert login_deltas(before, scrape(app)) == expected


def test_password_that_must_be_changed_counts_as_must_change_password(ad_server):
    """On the AD tree carol's right password must be changed first: that outcome is counted."""
    app = make_app(
        ad_server,
        settings_file=ROOT / "examples" / "settings-ad.toml",
        LDAP_START_TLS=False,
        LDAP_CA_FILE="",
        LDAP_BIND_PASSWORD=trees.SERVICE_PASSWORD,
        SESSION_COOKIE_SECURE=False,
    )
    before = scrape(app)
    assert AuthActions(app.test_client()).login("carol", "carol-secret").status_code == 403
    expected = dict.fromkeys(LOGIN_OUTCOMES, 0.0) | {"must_change_password": 1.0}
    assert login_deltas(before, scrape(app)) == expected


def test_login_while_no_directory_answers_counts_as_directory_error():
    """Nothing listens on the configured port: the 503 login counts as directory_error."""
    app = make_app(None, LDAP_URLS=[f"ldap://127.0.0.1:{free_port()}"])
    before = scrape(app)
    assert AuthActions(app.test_client()).login("alice").status_code == 503
    expected = dict.fromkeys(LOGIN_OUTCOMES, 0.0) | {"directory_error": 1.0}
    assert login_deltas(before, scrape(app)) == expected


def test_user_loads_come_from_the_cache_then_from_the_directory_once_forgotten(app, ldap_spy):
    """A signed-in page view is a cache hit; after the entry is forgotten it reads the directory."""
    client = app.test_client()
    assert AuthActions(client).login("alice").status_code == 302

    before = scrape(app)
    ldap_spy.reset()
    assert client.get("/").status_code == 200
    cached = scrape(app)
    assert cached.delta(before, "portal_user_loads_total", source="cache") == 1
    assert cached.delta(before, "portal_user_loads_total", source="directory") == 0
    assert cached.delta(before, "portal_cache_requests_total", result="hit") == 1
    assert cached.delta(before, "portal_cache_requests_total", result="miss") == 0
    assert ldap_spy.operations == 0

    with app.app_context():
        accounts.forget("alice")
    assert client.get("/").status_code == 200
    read = scrape(app)
    assert read.delta(cached, "portal_user_loads_total", source="cache") == 0
    assert read.delta(cached, "portal_user_loads_total", source="directory") == 1
    assert read.delta(cached, "portal_cache_requests_total", result="hit") == 0
    assert read.delta(cached, "portal_cache_requests_total", result="miss") == 1
    searches = read.delta(
        cached, "portal_ldap_operation_seconds_count", operation="search", server=server_label(app)
    )
    assert searches == ldap_spy.count("search") == 2  # the person, then their groups


def test_session_of_a_person_no_longer_in_the_directory_loads_nobody(app):
    """A session naming someone the directory does not know counts as source none."""
    client = app.test_client()
    plant_login(client, "no-such-person")
    before = scrape(app)
    assert client.get("/").status_code == 302  # sent to the login page
    after = scrape(app)
    assert after.delta(before, "portal_user_loads_total", source="none") == 1
    assert after.delta(before, "portal_user_loads_total", source="directory") == 0
    assert after.delta(before, "portal_cache_requests_total", result="miss") == 1


def test_login_times_its_three_ldap_operations_by_server(app, ldap_spy):
    """With warm pools a login is a user search, a bind and a group search: 3 timed operations."""
    assert AuthActions(app.test_client()).login("bob").status_code == 302  # opens the pools
    server = server_label(app)
    before = scrape(app)
    ldap_spy.reset()
    assert AuthActions(app.test_client()).login("alice").status_code == 302
    after = scrape(app)

    def count(operation: str) -> float:
        name = "portal_ldap_operation_seconds_count"
        return after.delta(before, name, operation=operation, server=server)

    assert (count("search"), count("bind")) == (2, 1)
    assert ldap_spy.operations == count("search") + count("bind") == 3
    for operation in ("search", "bind"):
        assert after.delta(before, "portal_ldap_errors_total", operation=operation) == 0


def scraped_around_sign_in(app, username: str, status: int):
    """The metrics before and after one sign-in of `username` (which must answer `status`)."""
    before = scrape(app)
    assert AuthActions(app.test_client()).login(username).status_code == status
    return before, scrape(app)


def test_search_on_a_connection_the_directory_dropped_counts_an_ldap_error(own_slapd):
    """slapd stops under a warm pool: the failed search is an LDAP error and the login a 503."""
    app = make_app(own_slapd)
    try:
        assert AuthActions(app.test_client()).login("alice").status_code == 302
        own_slapd.stop()
        before, after = scraped_around_sign_in(app, "bob", 503)
    finally:
        app.extensions["portal.directory"].close()
    assert after.delta(before, "portal_ldap_errors_total", operation="search") == 1
    assert after.delta(before, "portal_ldap_errors_total", operation="bind") == 0
    assert after.delta(before, "portal_logins_total", outcome="directory_error") == 1


def test_a_connection_a_server_refuses_counts_an_ldap_error(slapd, frozen_breakers):
    """The first server refuses connections and the second signs alice in: one connect error,
    and the refused server's last error on the status page."""
    gone = f"ldap://127.0.0.1:{free_port()}"  # nothing listens: connections are refused
    app = make_app(slapd, LDAP_URLS=[gone, slapd.url])
    try:
        before, after = scraped_around_sign_in(app, "alice", 302)
        erin = app.test_client()
        assert AuthActions(erin).login("erin").status_code == 302
        page = erin.get("/admin/status").get_data(as_text=True)
    finally:
        app.extensions["portal.directory"].close()
    assert after.delta(before, "portal_ldap_errors_total", operation="connect") == 1
    assert after.delta(before, "portal_ldap_errors_total", operation="bind") == 0
    assert "connect: LDAPSocketOpenError" in page and "Connection refused" in page


def test_a_server_that_accepts_and_never_answers_counts_an_ldap_error(slapd, frozen_breakers):
    """The first server accepts connections and never answers the bind: one bind error (the
    connection opened, so no connect error), and alice is signed in by the second."""
    with listener(lambda connection: None) as hung:
        app = make_app(
            slapd, LDAP_URLS=[hung.url, slapd.url], LDAP_OPERATION_TIMEOUT=1, LDAP_LOGIN_DEADLINE=30
        )  # not what is tested: no deadline on a slow day
        try:
            before, after = scraped_around_sign_in(app, "alice", 302)
        finally:
            app.extensions["portal.directory"].close()
    assert after.delta(before, "portal_ldap_errors_total", operation="bind") == 1
    assert after.delta(before, "portal_ldap_errors_total", operation="connect") == 0


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(app):
    """Prometheus asking for OpenMetrics gets it; a plain GET gets the classic text format."""
    accept = {"Accept": "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"}
    response = app.test_client().get("/metrics", headers=accept)
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")
    assert "portal_logins_total" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain; version=x",
        "application/openmetrics-text; version=x",
        "text/plain;version=1.x",
        "application/openmetrics-text; version==",
    ],  # fmt: skip
)
def test_a_version_that_is_no_version_gets_the_text_format(app, accept):
    """An Accept header naming a version that is not one is answered in the classic text
    format, never a 500."""
    response = app.test_client().get("/metrics", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "portal_logins_total" in response.get_data(as_text=True)


def test_metrics_are_refused_outside_the_allowed_networks(app):
    """By default only this machine may read /metrics: another address gets 403."""
    assert app.test_client().get("/metrics", environ_base=OUTSIDE).status_code == 403
    ipv4_mapped = {"REMOTE_ADDR": "::ffff:127.0.0.1"}
    assert app.test_client().get("/metrics", environ_base=ipv4_mapped).status_code == 200
    assert app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_configured_networks_replace_the_default(slapd):
    """METRICS_ALLOWED_NETWORKS lets its networks in, and only them."""
    app = make_app(slapd, METRICS_ALLOWED_NETWORKS=["10.0.0.0/8"])
    assert app.test_client().get("/metrics", environ_base=OUTSIDE).status_code == 200
    assert app.test_client().get("/metrics").status_code == 403  # 127.0.0.1 is no longer listed


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (f"Bearer {TOKEN}", 200),
        (f"bearer {TOKEN}", 200),
        (f"Bearer {TOKEN}x", 403),
        (f"Bearer {TOKEN[:-1]}", 403),
        (f"Basic {TOKEN}", 403),
        ("Bearer ", 403),
        (None, 403),
    ],
)
def test_bearer_token_lets_in_a_client_from_any_network(slapd, authorization, status):
    """From outside the allowed networks only the exact token, as a Bearer credential, is let in."""
    app = make_app(slapd, METRICS_BEARER_TOKEN=TOKEN)
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = app.test_client().get("/metrics", environ_base=OUTSIDE, headers=headers)
    assert response.status_code == status
    if status == 403:
        assert "portal_logins_total" not in response.get_data(as_text=True)


def test_without_a_configured_token_no_bearer_is_accepted(app):
    """An empty METRICS_BEARER_TOKEN accepts no token at all, not even an empty one."""
    for authorization in ("Bearer ", "Bearer", f"Bearer {TOKEN}"):
        response = app.test_client().get(
            "/metrics", environ_base=OUTSIDE, headers={"Authorization": authorization}
        )
        assert response.status_code == 403


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("METRICS_ALLOWED_NETWORKS", "127.0.0.0/8"),
        ("METRICS_ALLOWED_NETWORKS", ["10.0.0.0/33"]),
        ("METRICS_ALLOWED_NETWORKS", ["localhost"]),
        ("METRICS_BEARER_TOKEN", "short"),
        ("METRICS_BEARER_TOKEN", "has spaces in it, sixteen+"),
        ("METRICS_BEARER_TOKEN", 12345678901234567890),
        ("METRICS_BEARER_TOKN", TOKEN),
    ],
)
def test_wrong_metrics_settings_stop_start_up_naming_the_key(slapd, key, value):
    """A malformed network or token, or a misspelled METRICS_ key, stops start-up."""
    with pytest.raises(ConfigError, match=key):
        make_app(slapd, **{key: value})


def test_multiprocess_folder_that_does_not_exist_stops_start_up(slapd, tmp_path, monkeypatch):
    """PROMETHEUS_MULTIPROC_DIR naming a missing folder is refused at start-up, by name."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        make_app(slapd)


def refusal_with_metrics_folder(folder) -> str:
    """What `portal --version` says on standard error with PROMETHEUS_MULTIPROC_DIR set to
    `folder`, which it must refuse (exit status 4)."""
    environment = dict(
        portal_environment("ldap://127.0.0.1:1"), PROMETHEUS_MULTIPROC_DIR=str(folder)
    )
    done = subprocess.run([sys.executable, "-m", "portal", "--version"], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 4, done
    return done.stderr


def test_a_command_with_a_missing_multiprocess_folder_says_so_in_one_line(tmp_path):
    """Any `portal` command in an environment whose PROMETHEUS_MULTIPROC_DIR names no folder
    (yet) ends with one line naming it, not prometheus_client's FileNotFoundError traceback."""
    missing = tmp_path / "run" / "metrics"
    assert refusal_with_metrics_folder(missing) == (
        f"PROMETHEUS_MULTIPROC_DIR: no such folder {missing} (create it empty "
        "before starting; the shipped deploy/gunicorn.conf.py does)\n"
    )
    assert not missing.exists()


def test_a_file_where_the_multiprocess_folder_belongs_is_named_as_a_file(tmp_path):
    """A file at PROMETHEUS_MULTIPROC_DIR (a typo, a leftover) is said to be a file: "no such
    folder" would have the operator create what is there already."""
    taken = tmp_path / "metrics"
    taken.write_text("")
    assert refusal_with_metrics_folder(taken) == (
        f"PROMETHEUS_MULTIPROC_DIR: {taken} is a file, not a folder (move it away and create "
        "the folder empty before starting)\n"
    )


def portal_version_with_folder(folder, injected: str) -> subprocess.CompletedProcess:
    """`portal --version` with PROMETHEUS_MULTIPROC_DIR set to `folder`, after the Python lines
    `injected` (the fault: what the OS answers of the folder) ran in its process."""
    program = (f"import os, runpy, sys\n{injected}sys.argv = ['portal', '--version']\n"
               "runpy.run_module('portal', run_name='__main__')\n")  # fmt: skip
    environment = dict(
        portal_environment("ldap://127.0.0.1:1"), PROMETHEUS_MULTIPROC_DIR=str(folder)
    )
    return subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_metrics_folder_the_process_cannot_write_is_said_in_one_line(tmp_path):
    """A read-only mount (or another user's folder) at PROMETHEUS_MULTIPROC_DIR: one line
    naming it, exit 4, where prometheus_client's first metric ended the process in a 40-line
    OSError traceback. (The refusal is injected: access() of the folder answers no, as it does
    on a read-only mount.)"""
    folder = tmp_path / "metrics"
    folder.mkdir()
    done = portal_version_with_folder(folder, (
        "real = os.access\n"
        "def access(path, mode, **kw):\n"
        f"    if str(path) == {str(folder)!r} and mode & os.W_OK:\n"
        "        return False\n"
        "    return real(path, mode, **kw)\n"
        "os.access = access\n"
    ))  # fmt: skip
    assert done.returncode == 4, done
    assert done.stderr == (
        f"PROMETHEUS_MULTIPROC_DIR: {folder} is not writable by this process (user "
        f"{os.getuid()}; a read-only mount or another user's folder): give gunicorn's user a "
        "folder of its own\n"
    ), done


def test_a_process_refuses_to_start_on_a_full_multiprocess_folder(tmp_path):
    """A metrics folder with 300 KiB left (a full /run): the process says so in one line and
    exits 4, on which gunicorn's master stops, where each worker died of SIGBUS at its first
    request and gunicorn started another forever. (The full disk is injected: statvfs of the
    folder says 300 KiB free.)"""
    folder = tmp_path / "metrics"
    folder.mkdir()
    done = portal_version_with_folder(folder, (
        "real = os.statvfs\n"
        "def statvfs(path):\n"
        "    found = real(path)\n"
        f"    if str(path) != {str(folder)!r}:\n"
        "        return found\n"
        "    return os.statvfs_result((4096, 4096, 1000, 75, 75, *found[5:]))\n"
        "os.statvfs = statvfs\n"
    ))  # fmt: skip
    assert done.returncode == 4, done
    assert done.stderr == (
        f"PROMETHEUS_MULTIPROC_DIR: {folder} has 300 KiB free, and each process needs 1024 KiB "
        "for its metrics files: free some, or give the folder more room\n"
    ), done
    assert list(folder.iterdir()) == []
    # With room (the real statvfs), the same process starts.
    plain = portal_version_with_folder(folder, "")
    assert plain.returncode == 0, plain


@pytest.mark.slow
def test_gunicorn_without_the_shipped_config_stops_on_a_missing_multiprocess_folder(tmp_path):
    """Plain gunicorn (no --config) with PROMETHEUS_MULTIPROC_DIR naming no folder: its workers
    cannot start, and the master stops ("App failed to load") after a worker said why,
    instead of starting them again and again (a service that looks up, serving nothing)."""
    missing = tmp_path / "run" / "metrics"
    environment = dict(
        portal_environment("ldap://127.0.0.1:1"), PROMETHEUS_MULTIPROC_DIR=str(missing)
    )
    output = tmp_path / "gunicorn.out"
    command = [str(Path(sys.executable).with_name("gunicorn")), "--bind",
               f"127.0.0.1:{free_port()}", "--workers", "2", "portal:create_app()"]  # fmt: skip
    with open(output, "wb") as written:
        server = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=written,
                                  stderr=subprocess.STDOUT)  # fmt: skip
        try:
            status = server.wait(timeout=60)
        finally:
            server.kill()
    said = output.read_text()
    assert status != 0, said
    assert "App failed to load" in said, said
    assert 1 <= said.count(f"PROMETHEUS_MULTIPROC_DIR: no such folder {missing}") <= 2, said


@pytest.mark.slow
def test_the_shipped_gunicorn_config_makes_a_missing_multiprocess_folder(slapd, tmp_path):
    """gunicorn with deploy/gunicorn.conf.py and PROMETHEUS_MULTIPROC_DIR naming a folder not
    made yet (as /run is after a reboot) makes it before the portal opens its files there:
    the workers serve and /metrics adds them up (the start-up check imported the portal first,
    and gunicorn died in a FileNotFoundError traceback)."""
    folder = tmp_path / "run" / "portal-metrics"
    environment = dict(portal_environment(slapd.url), PROMETHEUS_MULTIPROC_DIR=str(folder))
    server = Gunicorn(tmp_path, environment, workers=2, config=ROOT / "deploy" / "gunicorn.conf.py")
    server.start()
    try:
        assert login_with_a_new_connection(server.base_url, "alice") == 302
        scraped = requests.get(server.base_url + "/metrics", timeout=10)
        assert scraped.status_code == 200
        assert Scrape(scraped.text).value("portal_logins_total", outcome="success") == 1
        assert list(folder.glob("*.db"))
    finally:
        server.stop()


def login_with_a_new_connection(base_url: str, username: str) -> int:
    """One login as a new browser (new connections, new cookies): the POST's status."""
    with requests.Session() as browser:
        form = browser.get(base_url + "/login", timeout=10)
        response = browser.post(
            base_url + "/login",
            data={
                "csrf_token": csrf_token_in(form.text),
                "username": username,
                "password": f"{username}-secret",
            },
            headers={"Connection": "close"},
            allow_redirects=False,
            timeout=10,
        )
        return response.status_code


@pytest.mark.slow
def test_one_scrape_under_gunicorn_adds_up_every_worker(slapd, tmp_path):
    """Logins served by two gunicorn workers all appear in any single scrape; old values go."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    environment = portal_environment(slapd.url)
    environment["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    # A previous run's values, left in the folder: deploy/gunicorn.conf.py must empty it.
    stale = "from portal import metrics; metrics.LOGINS.labels('success').inc(100)"
    subprocess.run([sys.executable, "-c", stale], cwd=ROOT, env=environment, check=True)
    assert list(folder.glob("*.db"))
    environment["GUNICORN_CMD_ARGS"] = f"--config {ROOT / 'deploy' / 'gunicorn.conf.py'}"
    server = Gunicorn(tmp_path, environment, workers=2).start()
    try:
        logins = 0
        # Three logins at a time keep both workers busy; a bounded number of rounds until the
        # access log shows that both served logins.
        for _ in range(10):
            with ThreadPoolExecutor(max_workers=3) as pool:
                names = ["alice", "bob", "erin"]
                statuses = list(pool.map(login_with_a_new_connection, [server.base_url] * 3, names))
            assert statuses == [302, 302, 302]
            logins += 3
            pids = {
                line["pid"]
                for line in server.access_lines()
                if line["method"] == "POST" and line["path"] == "/login"
            }
            if logins >= 6 and len(pids) == 2:
                break
        assert len(pids) == 2, f"one worker served every login: {server.output_text()}"

        for _ in range(6):  # each scrape may be served by either worker
            response = requests.get(server.base_url + "/metrics", timeout=10)
            assert response.status_code == 200
            totals = Scrape(response.text)
            assert totals.value("portal_logins_total", outcome="success") == logins
            assert totals.value("portal_logins_total", outcome="failed") == 0
            label = f"127.0.0.1:{slapd.port}"
            count = "portal_ldap_operation_seconds_count"
            assert totals.value(count, operation="bind", server=label) == logins
            assert totals.value(count, operation="search", server=label) == 2 * logins
    finally:
        server.stop()


def test_the_watch_lag_of_several_workers_is_the_one_set_last(tmp_path):
    """Each worker sets the watcher's lag when it answers a scrape; summed up over the folder,
    the largest kept another worker's old answer: a restarted sidecar still read 22.8 s there
    while the status page said it polled 0 s ago. Two processes set it in turn, as two workers
    answering scrapes do; the folder says the later one."""
    from prometheus_client import CollectorRegistry, multiprocess

    folder = tmp_path / "metrics"
    folder.mkdir()
    environment = dict(
        portal_environment("ldap://127.0.0.1:1"), PROMETHEUS_MULTIPROC_DIR=str(folder)
    )
    for lag in ("22.8", "0.5"):
        setting = f"from portal import metrics; metrics.watch_lag({lag})"
        subprocess.run([sys.executable, "-c", setting], cwd=ROOT, env=environment, check=True,
                       timeout=120)  # fmt: skip
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    assert registry.get_sample_value("portal_watch_lag_seconds") == 0.5
