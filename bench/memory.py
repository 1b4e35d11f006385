"""Memory: a worker's resident size with 10,000 distinct people cached (SimpleCache).

A fresh process builds the portal, then caches 10,000 people as sign-ins would (their entries,
ten groups each, and each entry read once by the user loader, which keeps it decoded), and
reports the resident set size before and after, in MB per 1,000 people.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .harness import ROOT, Settings

PEOPLE = 10_000

_PROBE = """
import json, sys
from portal import create_app, accounts, logins
from tests.conftest import demo_settings

def rss_mb():
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    import os
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6

people = int(sys.argv[1])
config = demo_settings() | {"ENV": "development", "SECRET_KEY": "bench-" + "x" * 40,
                            "LDAP_URLS": ["ldap://127.0.0.1:1"], "CACHE_THRESHOLD": people * 2}
app = create_app(config)
state = accounts.app_state(app)
with app.app_context():
    before = rss_mb()
    for number in range(people):
        name = f"person{number:06d}"
        attrs = {"username": name, "dn": f"uid={name},ou=people,dc=example,dc=org",
                 "display_name": f"Person {number}", "email": f"{name}@example.org",
                 "groups": ["staff"] + [f"team-{number % 97}-{level}" for level in range(9)],
                 "password_changed": ""}
        accounts.remember(attrs)
        login = logins.new_login(name, logins.now_ms(), 3_600_000)
        accounts.load_cached(state, login.id)
    after = rss_mb()
print(json.dumps({"before_mb": before, "after_mb": after}))
"""


def measure(settings: Settings) -> dict:
    """RSS before and after caching the people, and MB per 1,000 people."""
    people = 500 if settings.smoke else PEOPLE
    result = subprocess.run([sys.executable, "-c", _PROBE, str(people)], cwd=ROOT,
                            capture_output=True, text=True, check=True)  # fmt: skip
    found = json.loads(result.stdout.strip().splitlines()[-1])
    found["people"] = people
    found["mb_per_1000"] = (found["after_mb"] - found["before_mb"]) / people * 1000
    return found
