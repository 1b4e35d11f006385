"""Single sign-on through a real nginx: the shipped deploy/nginx/portal.conf with auth_request.

nginx (Debian nginx-light, unprivileged, from a temporary folder) stands in front of the portal
under gunicorn and of the sample app deploy/upstream/app.py, which echoes each request it gets
as JSON, so a test sees exactly what an app behind the proxy is told.

The nginx configuration is deploy/nginx/portal.conf itself: its docker-compose addresses
(portal:8000, upstream:8080, listen 80) are replaced by loopback ports, and a minimal nginx.conf
written here supplies what a packaged nginx.conf would (events, http, temporary paths and logs
in the temporary folder, since a non-root nginx cannot write /var/lib/nginx or /var/log/nginx).
"""

from __future__ import annotations

import json
import os
from functools import partial
from urllib.parse import urljoin

import pytest
import requests

from tests.conftest import PASSWORDS, csrf_token_in
from tests.proxies import (
    ENGINEERING_ONLY,
    Nginx,
    Stack,
    get,
    header_values,
    login_form,
    login_return_address,
    raw_request,
    running_stack,
    seen_by_app,
    session_cookie,
    sign_in,
)
from tests.proxy_battery import (  # noqa: F401 - the shared proxy tests, run on this stack
    person_in_450_groups,
    test_a_body_too_long_for_the_app_cannot_smuggle_a_request_past_the_sign_in,
    test_a_host_the_portal_refuses_never_reaches_the_app,
    test_a_long_address_goes_through_the_sign_in_and_back,
    test_a_person_in_hundreds_of_groups_gets_a_403_not_a_500,
    test_a_portal_cookie_name_held_many_times_never_lets_the_sign_in_through,
    test_a_script_name_header_never_opens_the_metrics,
    test_a_signed_in_person_still_gets_the_app,
    test_an_address_too_long_to_carry_leads_to_the_sign_in_without_it,
    test_escaped_letters_are_judged_as_the_app_reads_them,
    test_every_portal_cookie_is_removed_and_the_apps_own_kept,
    test_headers_naming_another_method_path_or_host_never_reach_the_app,
    test_other_escapes_never_reach_the_app,
    test_scheme_headers_a_client_sends_never_break_the_portals_pages,
    test_what_the_proxy_takes_gets_an_answer_never_a_500,
)
from tests.servers import portal_environment, require_binary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(slapd, tmp_path_factory):
    """nginx, the portal under gunicorn and the sample app, all stopped at the end."""
    nginx_binary = require_binary("nginx", "apt-get install nginx-light")
    environment = portal_environment(slapd.url)
    environment.update(
        PORTAL_SSO_ALLOWED_DOMAINS='["127.0.0.1"]',
        PORTAL_ACCESS_RULES=json.dumps(ENGINEERING_ONLY),
    )
    work = tmp_path_factory.mktemp("sso-gunicorn")
    with running_stack(environment, work, partial(Nginx, nginx_binary)) as stack:
        yield stack


def test_anonymous_visitor_is_sent_to_login_and_back_to_the_app_after_signing_in(stack, browser):
    """An anonymous request for an app is redirected to login and returns there afterwards."""
    original = stack.url("/app/x?tab=1")
    redirect = get(browser, original)
    assert login_return_address(stack, redirect) == original
    assert redirect.headers["Cache-Control"] == "no-store"

    token, next_field = login_form(browser, urljoin(original, redirect.headers["Location"]))
    assert next_field == original
    data = {"csrf_token": token, "username": "alice", "password": PASSWORDS["alice"]}
    signed_in = browser.post(
        stack.url("/login"), data={**data, "next": next_field}, allow_redirects=False, timeout=10
    )
    assert signed_in.status_code == 302, signed_in.text[:500]
    assert signed_in.headers["Location"] == original

    echo = seen_by_app(get(browser, original), stack)
    assert echo["path"] == "/app/x?tab=1"
    assert header_values(echo, "Remote-User") == ["alice"]


def test_signed_in_person_reaches_the_app_with_identity_headers(stack, browser):
    """The app gets Remote-User, Remote-Groups, Remote-Name and Remote-Email from the portal."""
    sign_in(stack, browser, "alice")

    echo = seen_by_app(get(browser, stack.url("/app/x")), stack)

    assert header_values(echo, "Remote-User") == ["alice"]
    [groups] = header_values(echo, "Remote-Groups")
    assert {"engineering", "staff"} <= set(groups.split(","))
    assert header_values(echo, "Remote-Name") == ["Alice Liddell"]
    assert header_values(echo, "Remote-Email") == ["alice@example.org"]
    assert header_values(echo, "Host") == [f"127.0.0.1:{stack.nginx.port}"]


def test_a_request_with_more_headers_than_the_portal_takes_is_still_judged(stack, browser):
    """A browser (or its extensions) sending 120 headers: nginx asks the portal with only what
    the question needs, so the anonymous visitor is sent to sign in and the signed-in one is
    let through to the app (gunicorn refused more than 100 fields with a 431, which
    auth_request turned into a 500 for both)."""
    many = {f"X-Extension-{number}": "on" for number in range(120)}
    anonymous = raw_request(stack.nginx.port, "/app/x", many)
    assert anonymous.status == 302, stack.diagnostics()
    assert "/login?next=" in anonymous.headers["Location"]
    sign_in(stack, browser, "alice")
    signed_in = {"Cookie": session_cookie(browser), "User-Agent": browser.headers["User-Agent"]}
    answer = raw_request(stack.nginx.port, "/app/x", {**many, **signed_in})
    # The sample app's own server takes 100 headers at most: its 431, not the proxy's 500.
    assert answer.status == 431 and b"Too many headers" in answer.body, stack.diagnostics()


def test_the_portal_session_cookie_is_never_passed_to_the_app(stack, browser):
    """The app cannot read or replay a sign-in: nginx strips the portal's cookie, not others."""
    sign_in(stack, browser, "alice")
    assert "session" in browser.cookies

    sent = {"app_pref": "dark", "remember_token": "alice|0123", "theme": "x"}
    # The names used over HTTPS too, all at once (a browser can hold old and new names).
    sent |= {"__Host-portal-remember": "alice|0123", "__Secure-portal-session": "x"}

    echo = seen_by_app(get(browser, stack.url("/app/x"), cookies=sent), stack)

    assert header_values(echo, "Remote-User") == ["alice"]
    cookies = "; ".join(header_values(echo, "Cookie"))
    assert "app_pref=dark" in cookies and "theme=x" in cookies
    assert "session=" not in cookies
    assert "remember_token=" not in cookies
    assert "portal-" not in cookies


def test_only_engineering_members_open_the_engineering_path(stack):
    """bob (staff only) gets 403 under /app/engineering/, alice (engineering) gets in."""
    with requests.Session() as alice, requests.Session() as bob:
        sign_in(stack, alice, "alice")
        sign_in(stack, bob, "bob")

        assert get(bob, stack.url("/app/engineering/")).status_code == 403
        assert get(bob, stack.url("/app/engineering/wiki?page=1")).status_code == 403
        echo = seen_by_app(get(bob, stack.url("/app/x")), stack)
        assert header_values(echo, "Remote-User") == ["bob"]

        echo = seen_by_app(get(alice, stack.url("/app/engineering/")), stack)
        assert echo["path"] == "/app/engineering/"
        assert header_values(echo, "Remote-User") == ["alice"]


def test_client_sent_original_address_headers_do_not_change_the_decision(stack, browser):
    """nginx replaces X-Original-* and X-Forwarded-* in its question: bob cannot point elsewhere."""
    sign_in(stack, browser, "bob")
    forged = {
        "X-Original-URL": stack.url("/app/x"),
        "X-Original-Method": "GET",
        "X-Forwarded-Uri": "/app/x",
        "X-Forwarded-Host": "elsewhere.example",
        "X-Forwarded-Proto": "https",
    }

    assert get(browser, stack.url("/app/engineering/"), headers=forged).status_code == 403


def test_identity_headers_sent_by_the_client_never_reach_the_app(stack, browser):
    """A client's Remote-User: erin (or Remote_User) is replaced by the portal's answer."""
    forged = {
        "Remote-User": "erin",
        "Remote-Groups": "portal-admins",
        "Remote-Name": "Erin",
        "Remote-Email": "erin@example.org",
        "Remote_User": "erin",
    }
    served_before = stack.app.requests_served()
    anonymous = get(browser, stack.url("/app/x"), headers=forged)
    assert login_return_address(stack, anonymous) == stack.url("/app/x")
    # The app logs a request before it answers, so one passed on would be counted by now.
    assert stack.app.requests_served() == served_before

    sign_in(stack, browser, "alice")
    echo = seen_by_app(get(browser, stack.url("/app/x"), headers=forged), stack)

    assert header_values(echo, "Remote-User") == ["alice"]
    assert header_values(echo, "Remote-Name") == ["Alice Liddell"]
    assert header_values(echo, "Remote-Email") == ["alice@example.org"]
    [groups] = header_values(echo, "Remote-Groups")
    assert set(groups.split(",")) == {"engineering", "staff"}
    assert header_values(echo, "Remote_User") == []
    assert not [header for header in echo["headers"] if header[1] in forged.values()]


def test_signing_out_at_the_portal_ends_access_to_the_app(stack, browser):
    """After POST /logout (through nginx) the app redirects to the login page again."""
    sign_in(stack, browser, "alice")
    seen_by_app(get(browser, stack.url("/app/x")), stack)
    home = get(browser, stack.url("/"))
    assert home.status_code == 200, home.text[:500]

    signed_out = browser.post(
        stack.url("/logout"),
        data={"csrf_token": csrf_token_in(home.text)},
        allow_redirects=False,
        timeout=10,
    )
    assert signed_out.status_code == 302, signed_out.text[:500]
    assert "session" not in browser.cookies

    after = get(browser, stack.url("/app/x"))
    assert login_return_address(stack, after) == stack.url("/app/x")


@pytest.mark.parametrize(
    "path",
    [
        "/app/engineering/report/../../x",
        "/app/engineering/report/..%2F..%2Fx",
        "/app/engineering/report/%2e%2e/%2e%2e/x",
        "/app/Engineering/report",
        "/app/engineering;x/report",
        "/app/engineering./report",
        # A raw "#" (no browser sends one): an app may read on past it (Go's servers do).
        "/app/x#/../engineering/report",
        "/app/x/#/../../app/engineering/report",
    ],
)
def test_spellings_of_a_denied_path_never_reach_the_app(stack, browser, path):
    """Sent raw through nginx, every other spelling of /app/engineering/ is refused for bob."""
    sign_in(stack, browser, "bob")
    answer = raw_request(stack.nginx.port, path, {"Cookie": session_cookie(browser)})
    assert answer.status == 403, f"{path} answered {answer.status}"


def test_a_request_line_naming_another_host_than_the_host_header_is_refused(stack, browser):
    """GET http://wiki.corp.example/app/x with Host: finance.corp.example reaches nobody."""
    sign_in(stack, browser, "alice")
    served = stack.app.requests_served()
    headers = {"Host": "finance.corp.example", "Cookie": session_cookie(browser)}

    answer = raw_request(stack.nginx.port, "http://wiki.corp.example/app/x", headers)

    assert answer.status == 400, f"{answer.status}\n{stack.diagnostics()}"
    assert stack.app.requests_served() == served


def test_the_app_is_told_the_host_the_portal_judged(stack, browser):
    """The app's Host is the normalised one nginx asked the portal about, not the raw header."""
    sign_in(stack, browser, "alice")
    headers = {"Host": f"127.0.0.1.:{stack.nginx.port}", "Cookie": session_cookie(browser)}

    echo = seen_by_app(raw_request(stack.nginx.port, "/app/x", headers), stack)

    assert header_values(echo, "Host") == [f"127.0.0.1:{stack.nginx.port}"]


def test_with_the_portal_down_the_apps_and_the_portal_say_sign_in_is_not_available(stack):
    """The portal stopped (a nginx in front of a port nothing listens on): every app answered
    nginx's bare "500 Internal Server Error" (auth_request) and the portal's pages "502 Bad
    Gateway". Both now get a short 503 page saying sign-in is not available, to try again,
    not kept by any cache; an app's own errors still pass as the app sends them."""
    from portal.testing.slapd import free_port

    down = Nginx(require_binary("nginx", "apt-get install nginx-light"), free_port(),
                 stack.app.port)  # fmt: skip
    try:
        down.start()
        for path in ("/app/wiki/", "/login", "/"):
            answer = raw_request(down.port, path)
            assert answer.status == 503, (path, answer.status)
            assert b"The sign-in service is not answering" in answer.body, (path, answer.body)
            assert answer.headers["Retry-After"] == "30", path
            assert answer.headers["Cache-Control"] == "no-store", path
    finally:
        down.cleanup()
    # With the portal up, the portal's own answers pass as sent (a 404 stays its 404).
    assert raw_request(stack.proxy.port, "/no-such-page").status == 404


@pytest.fixture
def cached_nginx(stack):
    """A second nginx in front of the same portal and app, with the micro-cache turned on."""
    nginx = Nginx(require_binary("nginx", "apt-get install nginx-light"), stack.portal.port,
                  stack.app.port, micro_cache=True)  # fmt: skip
    try:
        yield nginx.start()
    finally:
        nginx.cleanup()


@pytest.mark.parametrize(
    ("hops", "moved"),
    [
        ("1", {"User-Agent": "thief/1.0"}),  # another browser
        ("2", {"X-Forwarded-For": "203.0.113.9"}),  # another address, behind a front proxy
    ],
)
def test_the_micro_cache_keeps_a_moved_cookie_out(slapd, tmp_path, hops, moved):
    """With SESSION_PROTECTION = "strong" a cookie sent from another browser or address is
    signed out; the micro-cache had reused its owner's 200 for it for 2 seconds (its key held
    the Cookie header, then nginx's own client address, not what the portal's fingerprint is
    made of: the User-Agent and the address in X-Forwarded-For, a front proxy's included)."""
    environment = portal_environment(slapd.url)
    environment.update(PORTAL_SSO_ALLOWED_DOMAINS='["127.0.0.1"]', PORTAL_TRUSTED_PROXY_HOPS=hops,
                       PORTAL_SESSION_PROTECTION='"strong"')  # fmt: skip
    owners = {"User-Agent": "owner-browser/1.0", "X-Forwarded-For": "198.51.100.1"}
    cached = partial(
        Nginx, require_binary("nginx", "apt-get install nginx-light"), micro_cache=True
    )
    with running_stack(environment, tmp_path, cached) as through, requests.Session() as owner:
        nginx = through.proxy
        owner.headers.update(owners)
        sign_in(through, owner, "alice")
        cookie = {"Cookie": session_cookie(owner)}
        assert raw_request(nginx.port, "/app/x", {**cookie, **owners}).status == 200
        answer = raw_request(nginx.port, "/app/x", {**cookie, **owners, **moved})
        assert answer.status == 302, "the owner's cached 200 was reused for a moved cookie"


def test_the_micro_cache_key_cannot_be_forged_to_reuse_a_yes_for_another_path(stack, cached_nginx):
    """The key's parts come from the client (Cookie, X-Forwarded-For, User-Agent, target):
    joined with "|", which each may hold, bob made an allowed request's key equal to a closed
    path's (the target's tail moved into his User-Agent) and was let in from the cache. Parts
    joined by a line break, which no header or target can hold, cannot be shifted."""
    through = Stack(cached_nginx, stack.portal, stack.app)
    with requests.Session() as bob:
        sign_in(through, bob, "bob")
        cookie = session_cookie(bob)
        site = f"http://127.0.0.1:{cached_nginx.port}"
        closed = "/app/engineering/secret"
        assert raw_request(cached_nginx.port, closed, {"Cookie": cookie}).status == 403
        allowed = f"/app/x/?x=|GET|{site}{closed}"
        first = raw_request(cached_nginx.port, allowed, {"Cookie": cookie, "User-Agent": "UA"})
        assert first.status == 200
        forged = {"Cookie": cookie, "User-Agent": f"UA|GET|{site}/app/x/?x="}
        assert raw_request(cached_nginx.port, closed, forged).status == 403


def verify_calls(stack) -> int:
    """How many /auth/verify questions the portal has answered so far."""
    return sum(1 for line in stack.portal.access_lines() if line["path"].startswith("/auth/"))


def test_the_micro_cache_mixes_neither_people_nor_paths(stack, cached_nginx):
    """A cached 200 (2 s) is kept for one Cookie header, host and address: alice's answer is
    reused for alice only, bob still gets his own and his 403, and the identity headers come
    from the cached answer too."""
    through = Stack(cached_nginx, stack.portal, stack.app)
    with requests.Session() as alice, requests.Session() as bob:
        sign_in(through, alice, "alice")
        sign_in(through, bob, "bob")
        lines = len(stack.portal.access_lines())
        first = seen_by_app(
            raw_request(cached_nginx.port, "/app/x", {"Cookie": session_cookie(alice)}), through
        )
        stack.portal.wait_for_access("GET", "/auth/verify", after=lines)  # the one question
        asked = verify_calls(stack)
        for _ in range(5):
            again = seen_by_app(
                raw_request(cached_nginx.port, "/app/x", {"Cookie": session_cookie(alice)}),
                through,
            )
            assert header_values(again, "Remote-User") == ["alice"]
        assert header_values(first, "Remote-User") == ["alice"]
        assert verify_calls(stack) <= asked + 1, "the answers were not reused"
        theirs = seen_by_app(
            raw_request(cached_nginx.port, "/app/x", {"Cookie": session_cookie(bob)}), through
        )
        assert header_values(theirs, "Remote-User") == ["bob"]
        engineering = raw_request(
            cached_nginx.port, "/app/engineering/", {"Cookie": session_cookie(bob)}
        )
        assert engineering.status == 403
        raw_request(cached_nginx.port, "/app/engineering/", {"Cookie": session_cookie(alice)})
        assert (
            raw_request(
                cached_nginx.port, "/app/engineering/", {"Cookie": session_cookie(bob)}
            ).status
            == 403
        )


def test_the_https_lines_of_deploy_readme_start_on_this_nginx(tmp_path):
    """The TLS lines deploy/README.md gives for the shipped file, pasted in place of its
    `listen 80;` as it says: Debian 12's nginx (1.22) refused `http2 on;` (new in 1.25.1)
    and would not start."""
    import re
    import subprocess

    from portal.testing.slapd import free_port
    from portal.testing.tls import make_server_certificate
    from tests.proxies import NGINX_CONF, WRAPPER
    from tests.servers import ROOT

    binary = require_binary("nginx", "apt-get install nginx-light")
    readme = (ROOT / "deploy" / "README.md").read_text()
    section = readme.split("### Over HTTPS", 1)[1]
    tls_lines = re.search(r"```nginx\n(.*?)```", section, re.S)[1]
    certificate = make_server_certificate(tmp_path, None, "DNS:localhost")
    tls_lines = (tls_lines.replace("/etc/ssl/intranet/fullchain.pem", str(certificate.cert_file))
                 .replace("/etc/ssl/intranet/privkey.pem", str(certificate.key_file))
                 .replace("listen 443 ", f"listen 127.0.0.1:{free_port()} "))  # fmt: skip
    config = NGINX_CONF.read_text()
    assert config.count("listen 80;") == 1
    config = (config.replace("listen 80;", tls_lines)
              .replace("server portal:8000;", f"server 127.0.0.1:{free_port()};")
              .replace("server upstream:8080;", f"server 127.0.0.1:{free_port()};"))  # fmt: skip
    (tmp_path / "portal.conf").write_text(config)
    user = "user root;" if os.geteuid() == 0 else ""
    (tmp_path / "nginx.conf").write_text(WRAPPER.format(work=tmp_path, user=user))
    command = [binary, "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf")]
    command += ["-e", str(tmp_path / "error.log"), "-g", f"pid {tmp_path / 'nginx.pid'};"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
