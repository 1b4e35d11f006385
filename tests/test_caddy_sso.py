"""Single sign-on through a real Caddy: the shipped deploy/Caddyfile with forward_auth.

The portal reads the Traefik/Caddy header family (SSO_REQUEST_HEADERS = "forwarded":
X-Forwarded-Method, -Proto, -Host, -Uri). Caddy (Debian's caddy, unprivileged, no admin
endpoint) runs deploy/Caddyfile itself with its docker-compose addresses replaced by loopback
ports; every attack is sent byte for byte (tests/proxies.py).
"""

from __future__ import annotations

import json
from functools import partial

import pytest

from tests.proxies import (
    ENGINEERING_ONLY,
    Caddy,
    get,
    header_values,
    login_return_address,
    running_stack,
    seen_by_app,
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
    """Caddy, the portal under gunicorn (forwarded headers) and the sample app."""
    caddy_binary = require_binary("caddy", "apt-get install caddy")
    environment = portal_environment(slapd.url)
    environment.update(
        PORTAL_SSO_REQUEST_HEADERS='"forwarded"',
        PORTAL_SSO_ALLOWED_DOMAINS='["127.0.0.1"]',
        PORTAL_ACCESS_RULES=json.dumps(ENGINEERING_ONLY),
    )
    work = tmp_path_factory.mktemp("caddy-gunicorn")
    with running_stack(environment, work, partial(Caddy, caddy_binary)) as stack:
        yield stack


def test_anonymous_visitor_is_sent_to_the_login_page(stack, browser):
    """Caddy passes the portal's 302 (?redirect=1) to the browser, with the way back."""
    answer = get(browser, stack.url("/app/x?tab=1"))
    assert login_return_address(stack, answer) == stack.url("/app/x?tab=1")


def test_signed_in_person_reaches_the_app_with_identity_headers(stack, browser):
    """The app gets Remote-User and Remote-Groups from the portal's answer, not the client's."""
    sign_in(stack, browser, "alice")
    forged = {"Remote-User": "erin", "Remote-Groups": "portal-admins"}

    echo = seen_by_app(get(browser, stack.url("/app/x"), headers=forged), stack)

    assert header_values(echo, "Remote-User") == ["alice"]
    [groups] = header_values(echo, "Remote-Groups")
    assert set(groups.split(",")) == {"engineering", "staff"}
    assert "session=" not in "; ".join(header_values(echo, "Cookie"))
