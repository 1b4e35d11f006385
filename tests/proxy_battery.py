"""Attacks every shipped proxy configuration must stop, sent byte for byte (tests/proxies.py).

test_nginx_sso.py and test_caddy_sso.py import these tests, so each runs against its own
`stack` fixture: the shipped configuration in front of the portal and the sample app, whose
rules let only engineering open /app/engineering/.
"""

from __future__ import annotations

import contextlib
import socket
from urllib.parse import urljoin

import pytest
import requests

from tests.conftest import PASSWORDS
from tests.proxies import (
    get,
    header_values,
    login_form,
    login_return_address,
    raw_bytes,
    raw_request,
    seen_by_app,
    session_cookie,
    sign_in,
)

# Escapes of letters: the app decodes them, so the rules must too (each is /app/engineering/).
ESCAPED_LETTERS = [
    "/app/%65ngineering/",
    "/app/eng%69neering/runbook",
    "/app/%45NGINEERING/",
    "/app/%45nGiNeErInG/x",
    "/%61pp/engineering/",
]
# Escapes no app can be trusted to read one way: refused for everyone, before the app.
OTHER_ESCAPES = [
    "/app/%2565ngineering/",  # double encoding: %25 is "%"
    "/app/engineering%2Frunbook",
    "/app/engineering%2frunbook",
    "/app/%C3%A9t%C3%A9/",
    "/app/x%20y",
    "/app/%zz",
]
# Headers that tell an app another method, path, host or scheme than the one the portal judged
# (method overrides, IIS's X-Original-URL, RFC 7239 Forwarded, ...), and identity headers
# spelled with "_", which many servers read as the "-" spelling.
MISLEADING_HEADERS = {
    "X-HTTP-Method-Override": "DELETE",
    "X-HTTP-Method": "DELETE",
    "X-Method-Override": "DELETE",
    "X_HTTP_Method_Override": "DELETE",
    "X-Original-URL": "/app/engineering/secret",
    "X_Original_URL": "/app/engineering/secret",
    "X-Original-Method": "DELETE",
    "X-Rewrite-URL": "/app/engineering/secret",
    "X-Forwarded-Uri": "/app/engineering/secret",
    "X-Forwarded-Method": "DELETE",
    "X-Forwarded-Prefix": "/app/engineering",
    "X-Forwarded-Port": "8443",
    "X-Forwarded-Server": "evil.example",
    "X-Forwarded-Ssl": "on",
    "X-Forwarded-Protocol": "ssl",
    "X-Url-Scheme": "https",
    "Front-End-Https": "on",
    "Forwarded": "for=1.2.3.4;host=evil.example;proto=https",
    "X-Host": "evil.example",
    "X-Original-Host": "evil.example",
    "Remote_User": "erin",
    "Remote_Groups": "engineering,portal-admins",
    # PHP reads "." in a header name as "_" (Caddy's FastCGI passes HTTP_REMOTE.USER on).
    "Remote.User": "erin",
    "Remote.Groups": "engineering,portal-admins",
    # gunicorn cuts a SCRIPT_NAME header from a proxy on its machine off the path.
    "SCRIPT_NAME": "/app",
    "Remote_Name": "Erin",
    "Remote_Email": "erin@example.org",
}
SMUGGLED_BODY = 1 << 20  # the sample app's limit


@pytest.mark.parametrize("path", ESCAPED_LETTERS)
def test_escaped_letters_are_judged_as_the_app_reads_them(stack, path):
    """Sent raw, /app/%65ngineering/ is the engineering app: bob is refused, alice let in."""
    with requests.Session() as alice, requests.Session() as bob:
        sign_in(stack, alice, "alice")
        sign_in(stack, bob, "bob")
        served = stack.app.requests_served()

        refused = raw_request(stack.proxy.port, path, {"Cookie": session_cookie(bob)})
        assert refused.status == 403, f"{path}: {refused.status}\n{stack.diagnostics()}"
        assert stack.app.requests_served() == served

        answer = raw_request(stack.proxy.port, path, {"Cookie": session_cookie(alice)})
        echo = seen_by_app(answer, stack)
        # The path is passed on as sent, and the app reads it as the engineering app.
        assert echo["path"] == path
        assert echo["decoded_path"].lower().startswith("/app/engineering/")
        assert header_values(echo, "Remote-User") == ["alice"]


@pytest.mark.parametrize("path", OTHER_ESCAPES)
def test_other_escapes_never_reach_the_app(stack, browser, path):
    """Any escape but a letter's, digit's or "-._~" is refused, even for alice."""
    sign_in(stack, browser, "alice")
    served = stack.app.requests_served()

    answer = raw_request(stack.proxy.port, path, {"Cookie": session_cookie(browser)})

    # The proxy itself may refuse a malformed escape (400); the portal refuses the rest (403).
    assert answer.status in (400, 403), f"{path}: {answer.status}\n{stack.diagnostics()}"
    assert stack.app.requests_served() == served


def test_headers_naming_another_method_path_or_host_never_reach_the_app(stack, browser):
    """The portal judged a GET of /app/x on this host: no header the client adds may tell the
    app it was a DELETE, another path, another host or another person."""
    sign_in(stack, browser, "bob")
    headers = {"Cookie": session_cookie(browser), **MISLEADING_HEADERS}

    echo = seen_by_app(raw_request(stack.proxy.port, "/app/x", headers), stack)

    assert echo["method"] == "GET" and echo["path"] == "/app/x"
    leaked = [(name, value) for name, value in echo["headers"]
              if name.lower() in {key.lower() for key in MISLEADING_HEADERS}
              and value == MISLEADING_HEADERS.get(name, value)]  # fmt: skip
    assert leaked == []
    assert header_values(echo, "Remote-User") == ["bob"]


def test_a_script_name_header_never_opens_the_metrics(stack):
    """/metrics is refused by the proxy: a SCRIPT_NAME header must not make gunicorn serve
    /x/metrics to the portal as /metrics, from the proxy's address the portal trusts."""
    answer = raw_request(stack.proxy.port, "/x/metrics", {"SCRIPT_NAME": "/x"})
    assert answer.status != 200 and b"portal_logins_total" not in answer.body, answer.status


def test_a_body_too_long_for_the_app_cannot_smuggle_a_request_past_the_sign_in(stack, browser):
    """bob hides a request for /app/engineering/ at the end of a body the app would not read
    whole: it must never be served, to bob or to whoever uses the connection next."""
    sign_in(stack, browser, "bob")
    hidden = (
        b"GET /app/engineering/secret HTTP/1.1\r\nHost: 127.0.0.1\r\nRemote-User: alice\r\n"
        b"Remote-Groups: engineering,staff\r\nContent-Length: 40\r\n\r\n"
    )
    body = b"A" * SMUGGLED_BODY + hidden
    head = (
        f"POST /app/x HTTP/1.1\r\nHost: 127.0.0.1:{stack.proxy.port}\r\n"
        f"Cookie: {session_cookie(browser)}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", stack.proxy.port), timeout=15) as attacker:
        attacker.sendall(head + body)
        status = attacker.recv(64).split(b" ")[1]
    # The app refuses (413) what it will not read whole and closes; a proxy still sending the
    # body when it closes reports a bad gateway (502). Never a 200: that was the smuggling.
    assert status in (b"413", b"502"), f"{status!r}: the app must refuse what it cannot read"

    for _ in range(3):  # whoever comes next on the proxy's connections to the app
        answer = raw_request(stack.proxy.port, "/app/x?innocent=1",
                             {"Cookie": session_cookie(browser)})  # fmt: skip
        assert seen_by_app(answer, stack)["path"] == "/app/x?innocent=1"
    assert "/app/engineering/secret" not in stack.app.log_text()


def test_every_portal_cookie_is_removed_and_the_apps_own_kept(stack, browser):
    """The app can neither read nor replay a sign-in, under any of the portal's cookie names
    (a browser may hold several at once), and still gets its own cookies unchanged."""
    sign_in(stack, browser, "alice")
    portal = session_cookie(browser)
    theirs = "app_pref=dark; theme=x; sessionid=keep"
    extra = ("remember_token=R1; __Host-portal-session=H1; __Host-portal-remember=H2; "
             "__Secure-portal-session=S1; __Secure-portal-remember=S2; session=S3")  # fmt: skip
    for cookie in (f"{portal}; {theirs}; {extra}", f"{theirs}; {portal}; {extra}; a=1"):
        echo = seen_by_app(raw_request(stack.proxy.port, "/app/x", {"Cookie": cookie}), stack)
        sent = "; ".join(header_values(echo, "Cookie"))
        assert header_values(echo, "Remote-User") == ["alice"]
        for kept in ("app_pref=dark", "theme=x", "sessionid=keep"):
            assert kept in sent, sent
        for name in ("session=", "remember_token=", "portal-"):
            assert name not in sent.replace("sessionid=", ""), sent


def test_a_portal_cookie_name_held_many_times_never_lets_the_sign_in_through(stack, browser):
    """One name can be held once per cookie path, and an app on the same host may set such
    cookies: however many come before the real sign-in, it never reaches the app."""
    sign_in(stack, browser, "alice")
    decoys = "; ".join(f"remember_token=decoy{number}" for number in range(12))
    for cookie in (f"{decoys}; app_pref=dark; {session_cookie(browser)}",
                   f"{decoys}; {decoys}; {session_cookie(browser)}; a=1"):  # fmt: skip
        echo = seen_by_app(raw_request(stack.proxy.port, "/app/x", {"Cookie": cookie}), stack)
        assert header_values(echo, "Remote-User") == ["alice"]
        sent = "; ".join(header_values(echo, "Cookie"))
        assert "session=" not in sent and "remember_token=" not in sent, sent


def test_scheme_headers_a_client_sends_never_break_the_portals_pages(stack):
    """X-Forwarded-Ssl: on from a client would contradict the proxy's X-Forwarded-Proto: the
    portal's own page is still served (never the server's bare 400)."""
    headers = {"X-Forwarded-Ssl": "on", "X-Forwarded-Protocol": "ssl", "Forwarded": "proto=https"}
    answer = raw_request(stack.proxy.port, "/login", headers)
    assert answer.status == 200, answer.body[:300]
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "host", ["127.0.0.1#", "127.0.0.1?x=", "127.0.0.1/x", "user@127.0.0.1", "wiki:99999", "\u00e9"]
)
def test_a_host_the_portal_refuses_never_reaches_the_app(stack, browser, host):
    """bob asks for /app/engineering/ with a Host that would hide the path from a URL parser
    ("x#" makes "/app/engineering/" a fragment): refused before the app, never a 5xx."""
    sign_in(stack, browser, "bob")
    served = stack.app.requests_served()
    answer = raw_request(stack.proxy.port, "/app/engineering/",
                         {"Host": host, "Cookie": session_cookie(browser)})  # fmt: skip
    assert answer.status < 500, f"{host!r}: {answer.status}\n{stack.diagnostics()}"
    assert stack.app.requests_served() == served, f"{host!r} reached the app"


def test_a_signed_in_person_still_gets_the_app(stack, browser):
    """All of the above removes nothing an honest request needs."""
    sign_in(stack, browser, "alice")
    echo = seen_by_app(get(browser, stack.url("/app/x?tab=1")), stack)
    assert echo["path"] == "/app/x?tab=1"
    assert header_values(echo, "Remote-User") == ["alice"]


def dashboard_address(stack, variables: int) -> str:
    """An address as a dashboard or a search makes them: a long query of many variables."""
    query = "&".join(f"var-host=web-{number:03d}.corp.example" for number in range(variables))
    return stack.url(f"/app/d/abc?orgId=1&{query}&from=now-6h&to=now")


def test_a_long_address_goes_through_the_sign_in_and_back(stack, browser):
    """A 3,400-character dashboard address, opened before signing in: the proxy passes the
    portal's redirect to the sign-in on (nginx answered 500: the answer's headers outgrew its
    buffer), and the sign-in with "keep me signed in" (three cookies besides) lands there."""
    original = dashboard_address(stack, 110)
    assert len(original) > 3300
    redirect = get(browser, original)
    assert login_return_address(stack, redirect) == original, stack.diagnostics()
    token, next_field = login_form(browser, urljoin(original, redirect.headers["Location"]))
    assert next_field == original
    form = {"csrf_token": token, "username": "alice", "password": PASSWORDS["alice"],
            "remember": "y", "next": next_field}  # fmt: skip
    signed_in = browser.post(stack.url("/login"), data=form, allow_redirects=False, timeout=10)
    assert signed_in.status_code == 302, stack.diagnostics()
    assert signed_in.headers["Location"] == original
    echo = seen_by_app(get(browser, original), stack)
    assert echo["path"] == original.removeprefix(stack.proxy.base_url)


def test_an_address_too_long_to_carry_leads_to_the_sign_in_without_it(stack, browser):
    """An address whose sign-in link would pass what a server takes in a request line (4,094
    bytes in gunicorn): the sign-in page without the return address, never an error page,
    and the home page after it."""
    original = dashboard_address(stack, 200)
    redirect = get(browser, original)
    assert redirect.status_code == 302, stack.diagnostics()
    location = urljoin(original, redirect.headers["Location"])
    assert "next=" not in location and len(location) < 4000
    token, next_field = login_form(browser, location)
    assert next_field == ""
    answer = sign_in(stack, browser, "alice")
    assert answer.headers["Location"].endswith("/")
    assert seen_by_app(get(browser, original), stack)["path"].startswith("/app/d/abc?")


KIM = "uid=kim,ou=people,dc=example,dc=org"
KIMS_GROUPS = [f"cn=kim-project-team-with-a-long-name-{n:03d},ou=groups,dc=example,dc=org"
               for n in range(450)]  # fmt: skip


@pytest.fixture
def person_in_450_groups(slapd):
    """kim, in staff and 450 groups of long names (Active Directory accounts have as many):
    27 KB of Remote-Groups. Added for the test and removed after it."""
    staff = "dn: cn=staff,ou=groups,dc=example,dc=org\nchangetype: modify\n"
    try:
        slapd.add(f"dn: {KIM}\nobjectClass: inetOrgPerson\nuid: kim\ncn: Kim\nsn: Kim\n"
                  "userPassword: kim-long-secret\n\n"
                  + "\n".join(f"dn: {dn}\nobjectClass: groupOfNames\nmember: {KIM}\n"
                              for dn in KIMS_GROUPS))  # fmt: skip
        slapd.modify(f"{staff}add: member\nmember: {KIM}\n")
        yield "kim", "kim-long-secret"
    finally:
        # The session's directory, which other tests count: whatever was added goes, even
        # after a failure half-way.
        with contextlib.suppress(Exception):
            slapd.modify(f"{staff}delete: member\nmember: {KIM}\n")
        for dn in [*KIMS_GROUPS, KIM]:
            with contextlib.suppress(Exception):
                slapd.delete(dn)


def test_a_person_in_hundreds_of_groups_gets_a_403_not_a_500(stack, person_in_450_groups):
    """kim's identity headers outgrow what the proxy keeps of an answer's headers (nginx
    answered 500 on every app, "upstream sent too big header") and what apps' servers take:
    the portal closes the apps to kim with a 403 and logs what to set."""
    username, password = person_in_450_groups
    browser = requests.Session()
    token, _ = login_form(browser, stack.url("/login"))
    data = {"csrf_token": token, "username": username, "password": password}
    signed = browser.post(stack.url("/login"), data=data, allow_redirects=False, timeout=10)
    assert signed.status_code == 302, signed.text[:500]
    assert get(browser, stack.url("/")).status_code == 200  # the portal itself stays open
    assert get(browser, stack.url("/app/x")).status_code == 403, stack.diagnostics()


# What a client may send that the proxy takes and gunicorn would refuse in the question the
# proxy asks the portal: (extra request target, extra header lines, the status expected).
UNUSUAL_BUT_ACCEPTED = {
    "an 8,160-byte query (the question's X-Original-URL over 8,190 bytes)":
        ("?" + "a" * 8160, [], 200),
    # (nginx joins them into one for the question; Caddy passes them on as they are, which
    # leaves the portal no session it can read: the sign-in page, as for the portal's pages)
    "two more Cookie headers of 4,000 bytes":
        ("", [b"Cookie: pad1=" + b"b" * 4000, b"Cookie: pad2=" + b"b" * 4000],
         {"Nginx": 200, "Caddy": 302}),
    "three X-Forwarded-For headers of 4,000 bytes (joined into one)":
        ("", [b"X-Forwarded-For: " + b"1" * 4000] * 3, 200),
    "a DEL byte in the User-Agent": ("", [b"User-Agent: Mozilla\x7f"], 400),
    "a control byte in a cookie": ("", [b"Cookie: a=\x01"], 400),
}  # fmt: skip


@pytest.mark.parametrize("case", UNUSUAL_BUT_ACCEPTED, ids=lambda case: case.split(" (")[0])
def test_what_the_proxy_takes_gets_an_answer_never_a_500(stack, case):
    """alice, signed in, opens /app/x with one unusual part the proxy accepts: gunicorn refused
    the question it carried (431 past 8,190 bytes a field, 400 for a control byte), which
    nginx's auth_request made a 500 on every app. Long parts now reach the app; a control
    byte, which no browser sends, is refused with a 400 before the question is asked."""
    browser = requests.Session()
    sign_in(stack, browser, "alice")
    cookie = session_cookie(browser)
    agent = browser.headers["User-Agent"].encode()
    extra_target, extra_headers, expected = UNUSUAL_BUT_ACCEPTED[case]
    sends_agent = any(line.startswith(b"User-Agent:") for line in extra_headers)
    if isinstance(expected, dict):
        expected = expected[type(stack.proxy).__name__]
    head = [f"GET /app/x{extra_target} HTTP/1.1".encode(),
            f"Host: 127.0.0.1:{stack.proxy.port}".encode(), f"Cookie: {cookie}".encode(),
            *([] if sends_agent else [b"User-Agent: " + agent]), *extra_headers,
            b"Connection: close"]  # fmt: skip
    answer = raw_bytes(stack.proxy.port, b"\r\n".join(head) + b"\r\n\r\n")
    assert answer.status == expected, f"{answer.status}\n{stack.diagnostics()}"
