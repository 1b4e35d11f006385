"""Revocation delay: from an ldapmodify removing alice from engineering to her engineering page
being refused, with the directory watcher on (WATCH_INTERVAL 2) and off (the cache TTL decides).

The portal runs in this process (the delay is not a throughput); USER_CACHE_TTL is 20 s here
so that the run without the watcher ends in reasonable time (production default: 300 s). Each
round starts from a fresh directory.
"""

from __future__ import annotations

import statistics
import time

from portal import create_app
from portal.testing.slapd import Slapd
from tests.conftest import PASSWORDS, AuthActions, demo_settings

from .harness import Settings

TTL = 20
WATCH_INTERVAL = 2
_REMOVE = ("dn: cn=engineering,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\n"
           "member: cn=nobody,dc=example,dc=org\n-\ndelete: member\n"
           "member: uid=alice,ou=people,dc=example,dc=org\n")  # fmt: skip


def _delay(watch_interval: int, limit: float) -> float:
    with Slapd() as slapd:
        settings = demo_settings() | {
            "ENV": "development", "SECRET_KEY": "bench-" + "x" * 40, "LDAP_URLS": [slapd.url],
            "USER_CACHE_TTL": TTL, "WATCH_INTERVAL": watch_interval,
        }  # fmt: skip
        app = create_app(settings)
        client = app.test_client()
        assert AuthActions(client).login("alice", PASSWORDS["alice"]).status_code == 302
        assert client.get("/pages/engineering").status_code == 200
        watcher = app.extensions.get("portal.watcher")
        while watcher is not None and not watcher.state.last_poll:
            time.sleep(0.05)  # the watcher has started, as it would have long before
        started = time.monotonic()
        slapd.modify(_REMOVE)
        while client.get("/pages/engineering").status_code == 200:
            if time.monotonic() - started > limit:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        if watcher is not None:
            watcher.stop()
        app.extensions["portal.directory"].close()
        return elapsed


def measure(settings: Settings) -> dict:
    """Median seconds until access ends, watcher on and off."""
    rounds = 1 if settings.smoke else 3
    on = [_delay(WATCH_INTERVAL, TTL + 5) for _ in range(rounds)]
    off = [] if settings.smoke else [_delay(0, TTL + 5) for _ in range(rounds)]
    return {"on": statistics.median(on), "off": statistics.median(off) if off else None,
            "interval": WATCH_INTERVAL, "ttl": TTL}  # fmt: skip
