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


def measure(settings: Settings) -> dict:
    """RSS before and after caching the people, and MB per 1,000 people."""
    people = 500 if settings.smoke else PEOPLE
    result = subprocess.run([sys.executable, "-m", "bench.memory_probe", str(people)], cwd=ROOT,
                            capture_output=True, text=True, check=True)  # fmt: skip
    found = json.loads(result.stdout.strip().splitlines()[-1])
    found["people"] = people
    found["mb_per_1000"] = (found["after_mb"] - found["before_mb"]) / people * 1000
    return found
