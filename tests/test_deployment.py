"""docker-compose.yml and the Dockerfile stay in step with the portal (no Docker engine needed):
the image's own command is run here as the image would run it, under real gunicorn."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
import yaml

from portal import create_app, settings
from portal.testing.process import stop_process, wait_until
from portal.testing.slapd import free_port
from tests.conftest import ROOT, SERVICE_DN
from tests.servers import answers_login


def compose() -> dict:
    """The parsed docker-compose.yml."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_openldap_redis_and_portal_with_health_checks():
    """The three services exist, and the portal waits for a healthy directory and cache."""
    services = compose()["services"]
    assert {"openldap", "redis", "portal"} <= set(services)
    assert services["openldap"]["healthcheck"]["test"]
    assert services["portal"]["depends_on"]["openldap"]["condition"] == "service_healthy"
    assert "./ldap_fixtures:/ldifs:ro" in services["openldap"]["volumes"]


def test_compose_redis_keeps_sign_outs_across_a_restart(tmp_path):
    """The compose file's redis-server command, run here (its folder standing in for the
    volume): a mark written before a restart is there after it. Without persistence a
    restart lost every sign-out."""
    import redis

    from tests.servers import require_binary

    binary = require_binary("redis-server", "apt-get install redis-server")
    service = compose()["services"]["redis"]
    assert "redis-data:/data" in service["volumes"] and "redis-data" in compose()["volumes"]
    port = free_port()
    command = [binary, *service["command"][1:], "--port", str(port), "--bind", "127.0.0.1",
               "--dir", str(tmp_path)]  # fmt: skip

    def started() -> subprocess.Popen:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _pings(port), process, 15, "redis-server")
        return process

    process = started()
    client = redis.Redis(port=port)
    client.hset("portal:marks:bob", "before", "signed")
    stop_process(process)
    process = started()
    try:
        assert client.hget("portal:marks:bob", "before") == b"signed"
    finally:
        stop_process(process)


def _pings(port: int) -> bool:
    import redis

    try:
        return redis.Redis(port=port, socket_timeout=1).ping()
    except redis.ConnectionError:
        return False


def test_compose_portal_environment_is_a_valid_configuration(monkeypatch):
    """Every PORTAL_* variable names a real setting and the whole set passes validation."""
    environment = compose()["services"]["portal"]["environment"]
    known = set(settings.defaults()) | {"SECRET_KEY"}
    for name, value in environment.items():
        if name in ("WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"):  # gunicorn's, metrics'
            continue
        assert name.startswith("PORTAL_")
        assert name.removeprefix("PORTAL_") in known, f"{name} is not a portal setting"
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("PORTAL_SETTINGS", raising=False)
    app = create_app()
    assert app.config["CACHE_TYPE"] == "RedisCache"
    assert app.config["LDAP_URLS"] == json.loads(environment["PORTAL_LDAP_URLS"])


def test_compose_portal_with_several_workers_adds_up_their_metrics():
    """Two workers and no PROMETHEUS_MULTIPROC_DIR: each scrape of /metrics showed whichever
    worker answered (the shipped config warns of it at every start)."""
    environment = compose()["services"]["portal"]["environment"]
    assert int(environment["WEB_CONCURRENCY"]) > 1
    assert environment["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")  # the image's user may write


def dockerfile() -> tuple[list[str], dict[str, str]]:
    """The Dockerfile's CMD and its ENV settings."""
    command, environment = [], {}
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD "):
            command = json.loads(line[4:])
        elif line.startswith("ENV "):
            name, _, value = line[4:].partition("=")
            environment[name] = value
    return command, environment


def production_environment(server, **settings: str) -> dict[str, str]:
    """A production configuration (no dev-only secret) for the demo directory `server`."""
    password = "reader-" + secrets.token_urlsafe(16)
    server.modify(
        f"dn: {SERVICE_DN}\nchangetype: modify\nreplace: userPassword\nuserPassword: {password}\n"
    )
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith(("PORTAL_", "WEB_CONCURRENCY", "GUNICORN"))}  # fmt: skip
    environment.update(
        PORTAL_ENV="production",
        PORTAL_SESSION_COOKIE_SECURE="true",
        PORTAL_SECRET_KEY="production-test-" + secrets.token_hex(24),
        PORTAL_LDAP_URLS=f'["{server.url}"]',
        PORTAL_LDAP_BIND_PASSWORD=json.dumps(password),
        **settings,
    )
    return environment


def image_folder(tmp_path: Path) -> Path:
    """What the image's WORKDIR holds besides the installed package."""
    (tmp_path / "settings.toml").write_text((ROOT / "settings.toml").read_text())
    shutil.copy(ROOT / "deploy" / "gunicorn.conf.py", tmp_path / "gunicorn.conf.py")
    return tmp_path


def gunicorn_command(command: list[str], port: int) -> list[str]:
    """The image's command with this machine's gunicorn and a loopback port."""
    binary = str(Path(sys.executable).with_name("gunicorn"))
    bind = command.index("--bind")
    return [binary, *command[1:bind], "--bind", f"127.0.0.1:{port}", *command[bind + 2 :]]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({}, "CACHE_TYPE"),
        # A refused setting: one line before any worker starts, not a traceback per worker.
        ({"PORTAL_HSTS_MAX_AGE": '"a year"'}, "HSTS_MAX_AGE"),
        ({"PORTAL_CACHE_TYPE": '"RedisCache"', "PORTAL_CACHE_REDIS_URL": '"redis://127.0.0.1:1/0"',
          "PORTAL_THROTTLE_STORAGE_URL": '"memory://"'}, "THROTTLE_STORAGE_URL"),
    ],
)  # fmt: skip
def test_several_workers_with_per_process_state_refuse_to_start(own_slapd, tmp_path, settings,
                                                                 named):  # fmt: skip
    """The image's command with WEB_CONCURRENCY=4: gunicorn exits at once, naming the setting,
    instead of serving with sign-outs and throttle counts split four ways."""
    command, image_env = dockerfile()
    environment = {**production_environment(own_slapd, **settings), **image_env}
    environment["WEB_CONCURRENCY"] = "4"
    finished = subprocess.run(
        gunicorn_command(command, free_port()), cwd=image_folder(tmp_path), env=environment,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert finished.returncode != 0
    assert f"setting {named}" in finished.stderr, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr and "Booting worker" not in finished.stderr


def _workers_of(master_pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _eventually(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)  # polling for a process's doing, bounded; no timing asserted
    return condition()


@pytest.mark.slow
def test_the_shipped_config_refuses_a_worker_added_by_sigttin_and_keeps_serving(
    own_slapd, tmp_path
):
    """One worker with SimpleCache in production, and SIGTTIN asks for another: refused in one
    line, one worker goes on serving (the check in pre_fork stopped the whole portal)."""
    from tests.servers import Gunicorn

    server = Gunicorn(tmp_path, production_environment(own_slapd, PORTAL_WATCH_INTERVAL="0"),
                      workers=1, config=ROOT / "deploy" / "gunicorn.conf.py")  # fmt: skip
    server.start()
    try:
        server.process.send_signal(signal.SIGTTIN)
        assert _eventually(lambda: "not adding worker 2" in server.output_text()), (
            server.output_text()
        )
        assert server.process.poll() is None and len(_workers_of(server.process.pid)) == 1
        assert requests.get(server.base_url + "/login", timeout=10).status_code == 200
    finally:
        server.stop()
    assert "setting CACHE_TYPE: SimpleCache keeps sign-outs" in server.output_text()


@pytest.mark.slow
def test_a_worker_started_on_a_full_metrics_folder_serves_with_metrics_of_its_own(
    own_slapd, tmp_path
):
    """The metrics folder fills while the portal runs and a worker dies: the next worker starts
    anyway, with its metrics in a folder of its own, and serves. (Each worker started into the
    full folder died of SIGBUS at its first request; then gunicorn refused to start one and
    stopped, and sign-in and every app behind the proxy went down over metrics.) The full
    folder is injected: once the file FULL exists, statvfs of the folder says 300 KiB free (a
    sitecustomize on gunicorn's path)."""
    from tests.servers import Gunicorn

    folder, injected = tmp_path / "metrics", tmp_path / "site"
    injected.mkdir()
    (injected / "sitecustomize.py").write_text(
        "import os\n"
        "real = os.statvfs\n"
        "def statvfs(path):\n"
        "    found = real(path)\n"
        f"    if str(path) == {str(folder)!r} and os.path.exists({str(tmp_path / 'FULL')!r}):\n"
        "        return os.statvfs_result((4096, 4096, 1000, 75, 75, *found[5:]))\n"
        "    return found\n"
        "os.statvfs = statvfs\n"
    )
    environment = production_environment(own_slapd, PORTAL_WATCH_INTERVAL="0")
    environment.update(PROMETHEUS_MULTIPROC_DIR=str(folder), PYTHONPATH=str(injected))
    server = Gunicorn(tmp_path, environment, workers=1, config=ROOT / "deploy" / "gunicorn.conf.py")
    server.start()
    try:
        (tmp_path / "FULL").touch()
        [worker] = _workers_of(server.process.pid)
        os.kill(worker, signal.SIGKILL)
        assert _eventually(lambda: _workers_of(server.process.pid) not in ([], [worker])), (
            server.output_text()
        )
        [replacement] = _workers_of(server.process.pid)
        assert requests.get(server.base_url + "/login", timeout=10).status_code == 200
        metrics = requests.get(server.base_url + "/metrics", timeout=10)
        assert metrics.status_code == 200 and "portal_logins_total" in metrics.text, metrics.text
        # Its files are in its own folder: nothing more was written into the full one.
        assert not list(folder.glob(f"*_{replacement}.db"))
        own = list(Path(tempfile.gettempdir()).glob(f"portal-metrics-{replacement}-*"))
        assert len(own) == 1 and list(own[0].glob("*.db")), own
        # Killed outright, it leaves no folder behind (the master removes it).
        os.kill(replacement, signal.SIGKILL)
        assert _eventually(lambda: not own[0].exists()), server.output_text()
        assert _eventually(lambda: _workers_of(server.process.pid) not in ([], [replacement]))
        [third] = _workers_of(server.process.pid)
        assert requests.get(server.base_url + "/login", timeout=10).status_code == 200
        assert server.process.poll() is None
    finally:
        server.stop()
    said = server.output_text()
    assert f"portal: PROMETHEUS_MULTIPROC_DIR: {folder} has 300 KiB free" in said, said
    assert f"worker {replacement} keeps its metrics in" in said, said
    assert "SIGBUS" not in said
    # A worker stopped as gunicorn stops it leaves none either.
    assert not list(Path(tempfile.gettempdir()).glob(f"portal-metrics-{third}-*"))


@pytest.mark.slow
def test_several_workers_without_the_shipped_config_answer_503_while_sign_outs_are_per_process(
    own_slapd, tmp_path
):
    """Plain `gunicorn --workers 2` (no --config, so no worker-count check) in production with
    SimpleCache: a sign-out would hold in one worker only (a copied cookie worked on the other
    11 times in 12), so every request, forward auth's too, is the 503 page and the log says
    why; one worker serves."""
    from tests.servers import Gunicorn, answers_at_all

    environment = production_environment(own_slapd, PORTAL_WATCH_INTERVAL="0")
    server = Gunicorn(tmp_path / "two", environment, workers=2)
    (tmp_path / "two").mkdir()
    server.start(ready=answers_at_all)
    try:
        for path in ("/login", "/", "/auth/verify", "/healthz"):
            answer = requests.get(server.base_url + path, timeout=10)
            assert answer.status_code == 503, (path, answer.status_code)
        assert "Not set up" in requests.get(server.base_url + "/login", timeout=10).text
    finally:
        server.stop()
    said = server.output_text()
    assert "answering 503: this server runs several processes: setting CACHE_TYPE:" in said, said
    assert "several worker processes would each keep their own" in said, said
    one = Gunicorn(tmp_path / "one", environment, workers=1)
    (tmp_path / "one").mkdir()
    one.start()  # GET /login answers 200
    one.stop()


@pytest.mark.slow
def test_gunicorn_names_an_empty_secret_variable_that_wins_over_the_settings_file(
    own_slapd, tmp_path
):
    """A service's environment file with an empty "PORTAL_SECRET_KEY=" line, and a settings
    file that has the key: gunicorn's start-up line says the variable is set but empty and
    wins (only `portal check` said so; gunicorn said "set a text ...", which the file did)."""
    command, image_env = dockerfile()
    folder = image_folder(tmp_path)
    with open(folder / "settings.toml", "a") as settings_file:
        settings_file.write(f'\nSECRET_KEY = "{secrets.token_urlsafe(48)}"\n')
    environment = {**production_environment(own_slapd), **image_env, "PORTAL_SECRET_KEY": ""}
    finished = subprocess.run(
        gunicorn_command(command, free_port()), cwd=folder, env=environment,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert finished.returncode != 0
    said = finished.stderr
    assert "it comes from PORTAL_SECRET_KEY, which is set but empty" in said, said[-2000:]
    assert "wins over the settings file's value" in said, said[-2000:]


@pytest.mark.slow
def test_the_image_serves_one_worker_with_threads_and_sign_out_everywhere_holds(
    own_slapd, tmp_path
):
    """The image as built (production, SimpleCache): one worker process, so "sign out
    everywhere" ends a copied cookie on every request."""
    command, image_env = dockerfile()
    assert image_env["WEB_CONCURRENCY"] == "1" and "--threads" in command
    port = free_port()
    environment = {**production_environment(own_slapd), **image_env}
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            gunicorn_command(command, port), cwd=image_folder(tmp_path), env=environment,
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers_login(base), process, 30, "gunicorn", log.read_text)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        assert len(children) == 1, "one worker process"
        copy = _signed_in_cookie(base, "alice")
        assert _home_status(base, copy) == 200
        _sign_out_everywhere(base, copy)
        assert [_home_status(base, copy) for _ in range(10)] == [302] * 10
    finally:
        stop_process(process)


def _signed_in_cookie(base: str, username: str) -> str:
    # Production cookies are Secure (__Host-portal-session): requests would not send them over
    # plain HTTP, so the Cookie header is carried by hand.
    with requests.Session() as browser:
        form = browser.get(base + "/login", timeout=10)
        token = form.text.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
        pre = form.cookies.get("__Host-portal-session")
        answer = requests.post(
            base + "/login",
            data={"csrf_token": token, "username": username, "password": f"{username}-secret"},
            headers={"Cookie": f"__Host-portal-session={pre}", "Referer": base + "/login"},
            allow_redirects=False,
            timeout=10,
        )
    assert answer.status_code == 302, answer.text[:300]
    return answer.cookies["__Host-portal-session"]


def _home_status(base: str, cookie: str) -> int:
    answer = requests.get(base + "/", headers={"Cookie": f"__Host-portal-session={cookie}"},
                          allow_redirects=False, timeout=10)  # fmt: skip
    return answer.status_code


def _sign_out_everywhere(base: str, cookie: str) -> None:
    headers = {"Cookie": f"__Host-portal-session={cookie}"}
    home = requests.get(base + "/", headers=headers, timeout=10)
    token = home.text.split('name="csrf_token" value="')[1].split('"')[0]
    answer = requests.post(base + "/logout", data={"csrf_token": token, "everywhere": "1"},
                           headers=headers, allow_redirects=False, timeout=10)  # fmt: skip
    assert answer.status_code == 302, answer.text[:300]


UNIT = ROOT / "deploy" / "portal.service"


def _unit_lines(key: str) -> list[str]:
    # The values of one key of deploy/portal.service (a key may come more than once).
    return [line.split("=", 1)[1] for line in UNIT.read_text().splitlines()
            if line.startswith(f"{key}=")]  # fmt: skip


def test_the_systemd_unit_passes_systemds_own_check(tmp_path):
    """deploy/portal.service, pointed at this checkout instead of /opt/portal, passes
    `systemd-analyze verify` (directives, the gunicorn it runs); it keeps the settings and
    secrets outside the package and makes the metrics folder at each start."""
    from tests.servers import require_binary

    analyze = require_binary("systemd-analyze", "apt-get install systemd")
    here = tmp_path / "portal.service"
    here.write_text(UNIT.read_text().replace("/opt/portal", str(ROOT)))
    done = subprocess.run([analyze, "verify", str(here)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert _unit_lines("RuntimeDirectory") == ["portal-metrics"]
    environment = dict(line.split("=", 1) for line in _unit_lines("Environment"))
    assert environment["PROMETHEUS_MULTIPROC_DIR"] == "/run/portal-metrics"
    assert environment["PORTAL_SETTINGS"].startswith("/etc/")
    assert _unit_lines("EnvironmentFile") == ["/etc/portal/secrets.env"]


def test_the_systemd_units_command_serves_the_portal(slapd, tmp_path):
    """The unit's ExecStart, run as it is written (this checkout for /opt/portal, a free port
    for 8000, the metrics folder not made yet as after a reboot): gunicorn with the shipped
    config serves the sign-in page, and opens no control socket in the home folder (two
    instances on a host shared it; under the unit's ProtectHome it failed at every start)."""
    from tests.servers import portal_environment

    [command] = _unit_lines("ExecStart")
    port = free_port()
    here = command.replace("/opt/portal", str(ROOT))
    words = here.replace("127.0.0.1:8000", f"127.0.0.1:{port}").split()
    folder = tmp_path / "run" / "portal-metrics"
    home = tmp_path / "home"  # gunicorn 25.1+ would make its control socket in ~/.gunicorn
    environment = dict(portal_environment(slapd.url), PROMETHEUS_MULTIPROC_DIR=str(folder),
                       HOME=str(home))  # fmt: skip
    output = tmp_path / "gunicorn.out"
    with open(output, "wb") as written:
        server = subprocess.Popen(words, cwd=ROOT, env=environment, stdout=written,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: answers_login(f"http://127.0.0.1:{port}"), server, 30, "gunicorn",
                   output.read_text)  # fmt: skip
        assert folder.is_dir()
        assert not (home / ".gunicorn").exists(), "the shipped config opened a control socket"
        assert "Control server error" not in output.read_text()
    finally:
        stop_process(server)


def test_the_units_reload_refuses_a_bad_setting_and_the_portal_goes_on(slapd, tmp_path):
    """`systemctl reload` runs the unit's ExecReload lines in order, stopping at the first
    that fails. A setting refused (a typo saved before the reload): the reload fails naming
    it and the portal goes on serving (a bare HUP stopped gunicorn, and with it the portal:
    its new workers refused to start). Once the setting is fixed, the reload goes through."""
    from tests.servers import portal_environment

    [command] = _unit_lines("ExecStart")
    port = free_port()
    words = (command.replace("/opt/portal", str(ROOT))
             .replace("127.0.0.1:8000", f"127.0.0.1:{port}").split())  # fmt: skip
    settings_file = tmp_path / "settings.toml"
    good = (ROOT / "settings.toml").read_text()
    settings_file.write_text(good)
    environment = dict(portal_environment(slapd.url), PORTAL_SETTINGS=str(settings_file),
                       PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))  # fmt: skip
    output = tmp_path / "gunicorn.out"
    base_url = f"http://127.0.0.1:{port}"

    def reload() -> subprocess.CompletedProcess:
        done = None
        for line in _unit_lines("ExecReload"):
            here = line.replace("/opt/portal", str(ROOT)).replace("$MAINPID", str(server.pid))
            done = subprocess.run(here.split(), cwd=ROOT, env=environment, capture_output=True,
                                  text=True, timeout=60)  # fmt: skip
            if done.returncode != 0:
                break  # as systemd does
        return done

    with open(output, "wb") as written:
        server = subprocess.Popen(words, cwd=ROOT, env=environment, stdout=written,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: answers_login(base_url), server, 30, "gunicorn", output.read_text)
        settings_file.write_text("LDAP_LOGIN_DEADLINE = -1\n" + good)
        refused = reload()
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "setting LDAP_LOGIN_DEADLINE" in refused.stderr, refused.stderr
        assert server.poll() is None and answers_login(base_url), output.read_text()
        settings_file.write_text(good)
        taken = reload()
        assert taken.returncode == 0, taken.stdout + taken.stderr
        wait_until(lambda: b"Handling signal: hup" in output.read_bytes(), server, 10,
                   "gunicorn", output.read_text)  # fmt: skip
        wait_until(lambda: answers_login(base_url), server, 30, "gunicorn", output.read_text)
    finally:
        stop_process(server)
