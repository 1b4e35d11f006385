"""`make bench`: every speed target as a ratio against a baseline measured in the same run.

    python -m bench.run            the full run: writes docs/benchmarks.md and the chart, exits 1
                                   while a target is missed
    python -m bench.run --smoke    seconds long, no thresholds (make test keeps it alive)

See docs/benchmarks.md for what each line measures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from portal.testing.redis import RedisServer
from portal.testing.slapd import Slapd

from . import hotpath, logins, memory, proxy, report, revocation, scale
from .harness import ROOT, Settings, machine

COMMAND = "make bench"


def main(argv: list[str] | None = None) -> int:
    """Run every measurement, print and write the results; 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds long, no thresholds")
    parser.add_argument("--output", type=Path, default=ROOT / "docs",
                        help="folder for benchmarks.md and benchmarks.png")  # fmt: skip
    options = parser.parse_args(argv)
    settings = Settings.smoke_run() if options.smoke else Settings()
    comparisons = []
    # flask-ldap3-login reads groups as the person who signed in: the common ACL that lets
    # signed-in people read the tree keeps the comparison like for like.
    with Slapd(users_may_read=True) as slapd:
        comparisons += hotpath.measure(slapd, settings)
        with RedisServer() as redis:
            comparisons += hotpath.measure(slapd, settings, redis.url)
        comparisons += proxy.measure(slapd, settings)
        sign_ins, processor_times = logins.measure(slapd, settings)
        comparisons += sign_ins
        timing = logins.failure_timing(slapd, settings)
    scaled = scale.measure(settings)
    used = memory.measure(settings)
    revoked = revocation.measure(settings)
    body = report.table(comparisons, scaled, used, timing, revoked)
    floor = next(item for item in sign_ins if item.target is not None)
    body += "\n\n" + report.processor_time(processor_times, floor)
    missed = [] if settings.smoke else report.missed(comparisons, scaled, timing, revoked)
    print(body)
    options.output.mkdir(parents=True, exist_ok=True)
    report.chart(comparisons, scaled, options.output / "benchmarks.png")
    command = COMMAND + (" (smoke run)" if settings.smoke else "")
    (options.output / "benchmarks.md").write_text(report.document(body, machine(), command, missed))
    if missed:
        print("\nmissed: " + ", ".join(missed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
