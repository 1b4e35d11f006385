"""Admin status page and the /healthz and /readyz probes, with the directory up and down."""

from __future__ import annotations

import html
import logging
import re
import tomllib
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import AuthActions, eventually, make_app
from tests.servers import listener


@pytest.mark.parametrize("path", ["/admin", "/admin/"])
def test_the_admin_pages_address_leads_to_the_status_page(client, auth, path):
    """An administrator who types /admin lands on the status page, not on "Not found"."""
    auth.login("erin")
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/status"
    assert client.get(path, follow_redirects=True).status_code == 200


def test_status_page_is_for_admins_only(client, auth):
    """Alice (not in portal-admins) gets 403; anonymous visitors are sent to login."""
    assert client.get("/admin/status").status_code == 302
    auth.login("alice")
    assert client.get("/admin/status").status_code == 403


def test_status_page_shows_directory_cache_and_session(client, auth, slapd):
    """Erin sees the server reachable with a latency, the bind ok, the cache, her session."""
    auth.login("erin")
    body = client.get("/admin/status").get_data(as_text=True)
    port = slapd.url.rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}" in body
    assert " ms</td>" in body
    assert "FAILED" not in body
    assert "SimpleCache" in body
    assert "read from the directory 0 s ago" in body
    assert "uid=erin,ou=people,dc=example,dc=org" in body
    assert "_user_id" not in body and "_fresh" not in body, "no internal session keys"
    assert "<dt>Signed in</dt><dd>with your password</dd>" in body
    assert "<td>none (clear text)</td>" in body
    assert '<p class="summary ok" role="status">All good' in body
    settings = html.unescape(body.split('<pre class="settings">')[1].split("</pre>")[0])
    parsed = tomllib.loads(settings)  # the settings block is TOML a settings file could hold
    assert parsed["LDAP_BIND_PASSWORD"] == "(set)" and parsed["SECRET_KEY"] == "(set)"
    assert parsed["LDAP_URLS"] == [slapd.url] and parsed["USER_CACHE_TTL"] > 0
    assert parsed["PAGES"][0]["slug"] == "handbook"
    assert "dev-only-reader-secret" not in body and "test-secret-key" not in body
    assert "<dt>Version</dt><dd>0.1.0</dd>" in body
    assert "<title>Status · Intranet portal</title>" in body
    assert body.count("Settings in effect") == 1


def test_status_page_says_when_log_lines_were_lost(client, auth, monkeypatch):
    """The audit lines' destination is /dev/full (a full disk): the line of erin's sign-in
    cannot be written, and the status page says so, in its summary too (nothing said the audit trail
    had gaps: the portal answered on, and logging's own error went to the same full disk)."""
    import contextlib
    import sys

    from portal import logwriter
    from portal.signin.audit import LOGGER_NAME

    before = logwriter.lines_lost()["unwritable"]
    # The count is the process's: put back after the test, or every later status page of
    # this test run would report these lines.
    monkeypatch.setitem(logwriter._writer.lost, "unwritable", before)
    [handler] = [
        handler
        for handler in logging.getLogger(LOGGER_NAME).handlers
        if isinstance(handler, logwriter.QueuedStreamHandler)
    ]  # audit.init_app's
    full = open("/dev/full", "w")  # noqa: SIM115 - closed below
    monkeypatch.setattr(handler, "stream", full)
    auth.login("erin")  # its audit line goes to the full disk
    assert logwriter.drain(10)
    monkeypatch.setattr(handler, "stream", sys.stderr)
    with contextlib.suppress(OSError):  # its last flush fails too
        full.close()
    lost = logwriter.lines_lost()["unwritable"]
    assert lost > before
    body = client.get("/admin/status").get_data(as_text=True)
    assert f"0 while standard error stopped taking lines, {lost} refused (a full disk?)" in body
    assert '<p class="summary bad" role="status">' in body and f"Log: {lost} line" in body


def test_status_page_shows_a_down_server(own_slapd):
    """With the directory stopped, the status page still renders and says it is not answering."""
    app = make_app(own_slapd)
    client = app.test_client()
    AuthActions(client).login("erin")
    own_slapd.stop()
    response = client.get("/admin/status")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "<td>✗ not answering: " in body
    assert '<p class="summary bad" role="status">Directory: 1 of 1 server failing</p>' in body
    assert "Connection refused" in body, "what went wrong, not a bare 'no answer'"


def test_status_page_tells_a_hung_server_from_a_dead_one(slapd):
    """One server hangs up at once, one never answers: each row says what happened to it."""
    with (
        listener(lambda connection: connection.close()) as dead,
        listener(lambda connection: None) as hung,
    ):
        app = make_app(slapd, LDAP_URLS=[slapd.url, dead.url, hung.url], LDAP_OPERATION_TIMEOUT=1)
        try:
            erin = app.test_client()
            AuthActions(erin).login("erin")
            page = erin.get("/admin/status").get_data(as_text=True)
        finally:
            app.extensions["portal.directory"].close()
        rows = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr class=")
        [dead_row] = [row for row in rows if dead.url.removeprefix("ldap://") in row]
        [hung_row] = [row for row in rows if hung.url.removeprefix("ldap://") in row]
        assert "✗ not answering: " in dead_row and "✗ not answering: " in hung_row
        # Hung up at once: the bind found the connection closed or reset (which of them
        # depends on who is first), never a timeout.
        said = r'not answering: <span class="error-text">the bind failed: LDAP\w+Error: '
        assert re.search(said, dead_row) and "timed out" not in dead_row
        assert re.search(said, hung_row) and "timed out" in hung_row


def test_healthz_is_ok_without_any_io(client, ldap_spy):
    """/healthz answers from the process alone."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert ldap_spy.count() == 0


@pytest.fixture
def readiness_clock(monkeypatch):
    """Move /readyz's reuse window forward instead of waiting it out."""
    now = [1000.0]
    monkeypatch.setattr("portal.health.views.clock", lambda: now[0])

    def advance(seconds: float) -> None:
        now[0] += seconds

    return advance


def test_readyz_follows_the_directory(own_slapd, readiness_clock):
    """/readyz is 200 with the directory up, 503 naming the directory when it is down."""
    client = make_app(own_slapd).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"directory": True, "cache": True}
    own_slapd.stop()
    assert client.get("/readyz").status_code == 200, "the last answer is reused for a while"
    readiness_clock(5)
    down = client.get("/readyz")
    assert down.status_code == 503
    assert down.get_json()["failed"] == ["directory"]
    own_slapd.start()
    readiness_clock(5)
    assert client.get("/readyz").status_code == 200


def test_readyz_answers_as_soon_as_one_server_does(slapd):
    """The first server accepts connections and never answers: /readyz says ready once the
    second answers, without waiting out the first one's 30 s operation timeout (a load
    balancer's probe gives up sooner, and would take every instance out for one hung server)."""
    with listener(lambda connection: None) as hung:
        app = make_app(slapd, LDAP_URLS=[hung.url, slapd.url], LDAP_OPERATION_TIMEOUT=30)
        with ThreadPoolExecutor(1) as asking:
            answer = asking.submit(app.test_client().get, "/readyz").result(timeout=20)
        assert answer.status_code == 200
        eventually(lambda: hung.connections == 1)  # it was asked too, and is still hung
        app.extensions["portal.directory"].close()


def test_while_one_readiness_probe_waits_for_a_hung_directory_the_others_answer_at_once(
    slapd, readiness_clock
):
    """The directory hangs mid-probe: the probing request waits its operation timeout, and
    probes meanwhile get the last answer (or 503 "checking" before the first) instead of
    each waiting too (eight probes a second held every worker thread, so forward auth for
    signed-in people stalled for seconds)."""
    with listener(lambda connection: None) as hung:
        app = make_app(slapd, LDAP_URLS=[hung.url], LDAP_OPERATION_TIMEOUT=30,
                       LDAP_CONNECT_TIMEOUT=30, HEALTH_CACHE_SECONDS=5)  # fmt: skip
        client = app.test_client()
        with ThreadPoolExecutor(1) as asking:
            first = asking.submit(client.get, "/readyz")
            eventually(lambda: hung.connections >= 1)  # the probe waits on the hung server
            meanwhile = client.get("/readyz")
            assert meanwhile.status_code == 503 and meanwhile.get_json()["status"] == "checking"
            assert not first.done()
            hang_up(hung)  # the probe ends: the server went away
            assert first.result(timeout=60).status_code == 503
        readiness_clock(5)  # due again: this probe waits, and the others get the last answer
        with ThreadPoolExecutor(1) as asking:
            again = asking.submit(client.get, "/readyz")
            eventually(lambda: hung.connections >= 2)
            last = client.get("/readyz")
            assert last.status_code == 503 and last.get_json()["failed"] == ["directory"]
            hang_up(hung)
            again.result(timeout=60)
        app.extensions["portal.directory"].close()


def hang_up(server) -> None:
    """Close what a hung listener accepted: whoever waits on it sees the server go away."""
    for connection in server.accepted:
        connection.close()


def test_a_probe_of_one_dead_server_never_logs_the_whole_directory_down(slapd, caplog):
    """The first server is gone, the second answers: the health probes say which one failed
    on the status page, and the log must not read "no directory server answered"."""
    from portal import directory
    from portal.testing.slapd import free_port

    gone = f"ldap://127.0.0.1:{free_port()}"  # nothing listens: connections are refused
    app = make_app(slapd, LDAP_URLS=[gone, slapd.url])
    with caplog.at_level(logging.WARNING), app.app_context():
        assert [server.ok for server in directory.check_health()] == [False, True]
    assert "no directory server answered" not in caplog.text
    app.extensions["portal.directory"].close()


def test_frequent_readiness_probes_reach_the_directory_once_per_window(slapd, ldap_spy):
    """Ten probes within HEALTH_CACHE_SECONDS cost one probe of the directory."""
    client = make_app(slapd, HEALTH_CACHE_SECONDS=60).test_client()
    for _ in range(10):
        assert client.get("/readyz").status_code == 200
    assert ldap_spy.count("open") == 1
    assert ldap_spy.count("search") == 1


def test_readyz_reports_a_refused_service_account(slapd):
    """A wrong service password makes the portal not ready (the bind is what is checked)."""
    client = make_app(slapd, LDAP_BIND_PASSWORD="wrong").test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["failed"] == ["directory"]


def test_servers_are_probed_at_the_same_time(slapd, monkeypatch):
    """A dead server's timeouts do not add up with the others': every probe is in flight at once."""
    import threading

    from portal.directory import service
    from portal.directory.health import ServerHealth

    together = threading.Barrier(3, timeout=10)  # sequential probes would never all meet here

    def probe(server, settings):
        together.wait()
        return ServerHealth(f"{server.host}:{server.port}", True, True, True, 1.0)

    monkeypatch.setattr(service, "probe", probe)
    urls = [slapd.url, "ldap://127.0.0.1:1", "ldap://127.0.0.1:2"]
    app = make_app(None, LDAP_URLS=urls)
    with app.app_context():
        results = app.extensions["portal.directory"].check_health()
    assert [result.url for result in results] == ["127.0.0.1:" + slapd.url.rsplit(":", 1)[1],
                                                  "127.0.0.1:1", "127.0.0.1:2"]  # fmt: skip


def test_admin_pages_need_a_password_session_not_remember_me(slapd):
    """A "remember me" session reaching /admin is asked for the password again."""
    app = make_app(slapd)
    client = app.test_client()
    AuthActions(client).login("erin", remember=True)
    assert client.get("/admin/status").status_code == 200
    client.delete_cookie("session")  # the browser was closed; remember-me signs erin in again
    response = client.get("/admin/status")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=%2Fadmin%2Fstatus")
    assert client.get("/").status_code == 200, "ordinary pages still open"
    assert AuthActions(client).login("erin").status_code == 302  # the form is shown again
    assert client.get("/admin/status").status_code == 200


def test_status_page_shows_recent_latency_hit_ratio_and_login_outcomes(own_slapd):
    """p95 latency per server, the cache hit ratio and the last hour's login outcomes."""
    from portal.recent import RECENT

    before = RECENT.login_outcomes()
    hits_before = RECENT.cache_hits()
    app = make_app(own_slapd)
    client = app.test_client()
    AuthActions(app.test_client()).login("alice", "wrong")
    AuthActions(client).login("erin")
    client.get("/")
    body = client.get("/admin/status").get_data(as_text=True)
    assert re.search(r"<td>\d+\.\d ms over \d+</td>", body), "a p95 from recent operations"
    hits, misses = RECENT.cache_hits()
    assert hits > hits_before[0], "this test's page views were cache hits"
    assert f"% of {hits + misses} look-ups</dd>" in body
    successes = before.get("success", 0) + 1
    assert f"<dt>success</dt><dd>{successes}</dd>" in body
    assert f"<dt>failed</dt><dd>{before.get('failed', 0) + 1}</dd>" in body


def test_status_page_shows_when_a_server_last_failed(own_slapd):
    """A request that failed on a server is shown with its last error and the time it
    happened: the search on the pooled connection broke, then connecting again was refused."""
    app = make_app(own_slapd, CACHE_TYPE="NullCache")
    client = app.test_client()
    AuthActions(client).login("erin")
    token = client.get("/").status_code  # warms the pool with a live connection
    assert token == 200
    own_slapd.stop()
    assert client.get("/").status_code == 503  # the pooled connection fails mid-search
    own_slapd.start()
    # The server is tried again once its back-off (about a second) has passed.
    status = eventually(lambda: (page := client.get("/admin/status")).status_code == 200 and page)
    body = status.get_data(as_text=True)
    assert re.search(
        r"connect: \w+.*Connection refused at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", body
    )


def test_settings_list_masks_passwords_inside_urls():
    """A Redis URL's password is masked like any other secret."""
    from portal.admin.views import settings_toml

    for url in (
        "redis://:s3cret@cache:6379/0",
        "redis://:p/s3cret@cache/0",
        "redis://:p#s3cret@cache/0",
        "redis://cache:6379/0?password=s3cret&db=1",
    ):
        config = {"CACHE_REDIS_URL": url, "PASSWORD_MAX_LENGTH": 1024,
                  "LDAP_URLS": ["ldaps://dc1:636"]}  # fmt: skip
        text = settings_toml(config)
        shown = tomllib.loads(text)
        assert "s3cret" not in text, url
        assert "(set)" in shown["CACHE_REDIS_URL"], url
    assert shown["LDAP_URLS"] == ["ldaps://dc1:636"]
    assert shown["PASSWORD_MAX_LENGTH"] == 1024, "not a secret: shown as it is"
    assert "# LDAP_BIND_DN is not set" in text
    # Inside tables and lists too, and a query name read as the server reads it (decoded).
    text = settings_toml({
        "CACHE_REDIS_URL": "redis://cache:6379/0?pa%73sword=S3CR3T-1",
        "FOOTER_LINKS": [{"title": "s", "url": "https://svc:S3CR3T-2@status.example.org/"},
                         {"title": "f", "url": "https://status.example.org/feed?token=S3CR3T-3"}],
        "APPS": [{"title": "g", "url": "https://grafana.example.org/d?auth_token=S3CR3T-4&x=1"}],
        "PAGES": [{"slug": "a", "title": "A", "groups": ["staff"], "body": "b", "note": None}],
    })  # fmt: skip
    assert "S3CR3T" not in text
    assert tomllib.loads(text)["APPS"][0]["url"].endswith("auth_token=(set)&x=1")


def test_status_page_shows_a_bind_refused_for_an_outage_as_the_servers_last_error(
    slapd, build_app, monkeypatch
):
    """A password bind answered "unavailable" (52) is a 503 for the person and, on the status
    page, the server's last error (injected: slapd cannot be made to answer 52 on demand)."""
    from portal.directory.wire import LeanConnection

    app = build_app(slapd)
    erin = app.test_client()
    AuthActions(erin).login("erin")
    real_bind = LeanConnection.bind

    def unavailable(self, *args, **kwargs):
        if self.user and "uid=alice" in self.user:
            self.result = {"result": 52, "description": "unavailable"}
            return False
        return real_bind(self, *args, **kwargs)

    monkeypatch.setattr(LeanConnection, "bind", unavailable)
    assert AuthActions(app.test_client()).login("alice").status_code == 503
    body = erin.get("/admin/status").get_data(as_text=True)
    assert re.search(
        r"bind: result code 52 unavailable.* at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", body
    )


def test_status_page_counts_the_people_in_this_processs_cache(app):
    """SimpleCache: alice and erin are cached; bob signed out everywhere (his entry dropped,
    a revocation marker stored, which is not a person): 2."""
    for name in ("alice", "bob"):
        client = app.test_client()
        AuthActions(client).login(name)
    AuthActions(client).logout(everywhere=True)  # bob: entry dropped, marker stored
    erin = app.test_client()
    AuthActions(erin).login("erin")
    body = erin.get("/admin/status").get_data(as_text=True)
    assert "<dt>People cached</dt><dd>2</dd>" in body
