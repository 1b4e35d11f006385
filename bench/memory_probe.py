"""Run in a fresh process by bench.memory: cache N people and print RSS before and after."""

from __future__ import annotations

import json
import os
import sys

from portal import accounts, create_app
from portal.signin import logins
from tests.conftest import demo_settings


def rss_mb() -> float:
    """This process's resident set size in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def main(people: int) -> None:
    """Cache the people as sign-ins would and print the two sizes as JSON."""
    config = demo_settings() | {
        "ENV": "development",
        "SECRET_KEY": "bench-" + "x" * 40,
        "LDAP_URLS": ["ldap://127.0.0.1:1"],
        "CACHE_THRESHOLD": people * 2,
    }
    app = create_app(config)
    state = accounts.app_state(app)
    with app.app_context():
        before = rss_mb()
        for number in range(people):
            name = f"person{number:06d}"
            attrs = {
                "username": name,
                "dn": f"uid={name},ou=people,dc=example,dc=org",
                "display_name": f"Person {number}",
                "email": f"{name}@example.org",
                "groups": ["staff"] + [f"team-{number % 97}-{level}" for level in range(9)],
                "password_changed": "",
            }
            accounts.remember(attrs)
            login = logins.new_login(name, logins.now_ms(), 3_600_000)
            accounts.load_cached(state, login.id)
        after = rss_mb()
    print(json.dumps({"before_mb": before, "after_mb": after}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
