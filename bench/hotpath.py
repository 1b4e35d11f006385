"""P1: a signed-in person's cached page and /auth/verify, against bare Flask sending the same bytes.

The portal runs under gunicorn from settings.toml (SimpleCache, or RedisCache with a real
redis-server); alice signs in through the form with the User-Agent wrk then sends, and her
session cookie is replayed. The bare app (bench/baselines.py) answers the same paths with the
bytes the portal answered, under the same gunicorn settings.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path

import requests

from portal.testing.slapd import Slapd
from tests.conftest import csrf_token_in

from .harness import ROOT, Comparison, Server, Settings, interleaved, settle, wrk

USER_AGENT = "portal-bench/1"
PAGE = "/pages/handbook"
VERIFY = "/auth/verify"
QUESTION = {"X-Original-URL": "http://127.0.0.1/app/x", "X-Original-Method": "GET"}
_GUNICORN_HEADERS = {"server", "date", "connection", "transfer-encoding"}


def portal_env(slapd: Slapd, **settings: str) -> dict[str, str]:
    """The environment of a portal under gunicorn against this directory (demo settings)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    env.update(
        PORTAL_ENV="development",
        PORTAL_SETTINGS=str(ROOT / "settings.toml"),
        PORTAL_LDAP_URLS=json.dumps([slapd.url]),
        PORTAL_SECRET_KEY="bench-" + secrets.token_hex(24),
        PORTAL_THROTTLE_IP_LIMIT='"1000000 per minute"',
        **settings,
    )
    return env


def sign_in(base_url: str, username: str, password: str) -> str:
    """Sign in through the form as a browser with wrk's User-Agent; the session cookie."""
    with requests.Session() as browser:
        browser.headers["User-Agent"] = USER_AGENT
        token = csrf_token_in(browser.get(base_url + "/login", timeout=10).text)
        form = {"csrf_token": token, "username": username, "password": password}
        answer = browser.post(base_url + "/login", data=form, allow_redirects=False, timeout=10)
        if answer.status_code != 302:
            raise RuntimeError(f"sign-in as {username} answered {answer.status_code}")
        return browser.cookies["session"]


def signed_in_headers(cookie: str, **extra: str) -> dict[str, str]:
    """What wrk sends for the signed-in person."""
    return {"Cookie": f"session={cookie}", "User-Agent": USER_AGENT, **extra}


def capture(base_url: str, headers_for: dict[str, dict[str, str]]) -> dict:
    """The portal's answer at each path, as the bare app must replay it."""
    captured = {}
    for path, headers in headers_for.items():
        answer = requests.get(base_url + path, headers=headers, allow_redirects=False, timeout=10)
        if answer.status_code != 200:
            raise RuntimeError(f"{path} answered {answer.status_code}")
        kept = [(name, value) for name, value in answer.raw.headers.items()
                if name.lower() not in _GUNICORN_HEADERS]  # fmt: skip
        captured[path] = {"status": answer.status_code, "headers": kept, "body": answer.text}
    return captured


def measure(slapd: Slapd, settings: Settings, redis_url: str = ""):
    """P1 page and P1 verify as Comparisons: SimpleCache, or with `redis_url` RedisCache
    against a bare app that also reads Redis once per request."""
    redis_settings = (
        {"PORTAL_CACHE_TYPE": '"RedisCache"', "PORTAL_CACHE_REDIS_URL": json.dumps(redis_url)}
        if redis_url
        else {}
    )
    label = " (Redis)" if redis_url else ""
    env = portal_env(slapd, **redis_settings)
    results = []
    with Server("portal:create_app()", env, ready_path="/healthz") as portal:
        cookie = sign_in(portal.base_url, "alice", "alice-secret")
        page_headers = signed_in_headers(cookie)
        verify_headers = signed_in_headers(cookie, **QUESTION)
        captured = capture(portal.base_url, {PAGE: page_headers, VERIFY: verify_headers})
        with tempfile.TemporaryDirectory(prefix="portal-bench-") as work:
            path = Path(work) / "capture.json"
            path.write_text(json.dumps(captured))
            bare_env = dict(env, BENCH_CAPTURE=str(path), BENCH_REDIS_URL=redis_url)
            with Server("bench.baselines:create_app()", bare_env, ready_path=PAGE) as bare:
                for name, route, headers, what in (
                    ("P1 page", PAGE, page_headers, "cached protected page"),
                    ("P1 verify", VERIFY, verify_headers, "/auth/verify, signed in"),
                ):
                    baseline = "bare Flask, same bytes" + (", 1 Redis GET" if redis_url else "")
                    comparison = Comparison(f"{name}{label}", f"portal {what}", baseline,
                                            target=0.8)  # fmt: skip
                    results.append(
                        interleaved(
                            comparison,
                            settings,
                            lambda route=route: wrk(bare.base_url + route, settings),
                            lambda route=route, headers=headers: wrk(
                                portal.base_url + route, settings, headers
                            ),
                        )
                    )
    settle()
    return results
