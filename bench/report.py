"""The results as a Markdown table (docs/benchmarks.md) and a chart of the ratios (PNG)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from .harness import Comparison


def _ratio(item: Comparison) -> str:
    # Two decimals, or three where two would round a miss up to its target (0.796 as "0.80").
    shown = f"{item.ratio:.2f}"
    if item.target is not None and not item.met and float(shown) >= item.target:
        shown = f"{item.ratio:.3f}"
    return shown


def table(comparisons: list[Comparison], scale: dict, memory: dict, timing: list,
          revocation: dict) -> str:  # fmt: skip
    """The Markdown table of every measurement, targets and whether they are met."""
    lines = [
        "| measurement | subject | baseline | subject | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in comparisons:
        target = f"≥ {item.target}×" if item.target is not None else "—"
        lines.append(
            f"| {item.name} | {item.subject} | {item.baseline} | "
            f"{statistics.median(item.subject_rates):,.0f} {item.unit} | "
            f"{statistics.median(item.baseline_rates):,.0f} {item.unit} | {_ratio(item)}× | "
            f"{target} | {_verdict(item.met if item.target is not None else None)} |"
        )
    large, small = scale["large"], scale["small"]
    for what, key, ops in (("sign-in", "login", "login_ops"), ("cache miss", "miss", "miss_ops")):
        ratio = scale[f"{key}_ratio"]
        lines.append(
            f"| P3 scale, {what} | {large['people']:,} people, {large['groups']:,} groups | "
            f"{small['people']:,} people, {small['groups']:,} groups | "
            f"{large[key + '_ms']:.2f} ms ({large[ops]:.0f} ops) | "
            f"{small[key + '_ms']:.2f} ms ({small[ops]:.0f} ops) | {ratio:.2f}× | ≤ 1.2× | "
            f"{_verdict(ratio <= 1.2)} |"
        )
    lines.append(
        f"| Memory | RSS with {memory['people']:,} people cached (SimpleCache) | — | "
        f"{memory['after_mb'] - memory['before_mb']:.1f} MB | — | "
        f"{memory['mb_per_1000']:.2f} MB per 1,000 | — | — |"
    )
    for floor, unknown, known, ratio in timing:
        met = _verdict(0.95 <= ratio <= 1.05) if floor else "—"
        lines.append(
            f"| Failed login, floor {floor} ms | unknown name | known name, wrong password | "
            f"{unknown:.1f} ms | {known:.1f} ms | {ratio:.2f}× | "
            f"{'0.95×–1.05×' if floor else '—'} | {met} |"
        )
    on, off = revocation["on"], revocation["off"]
    bound = revocation["interval"] + 1
    lines.append(
        f"| Revocation delay | watcher on (WATCH_INTERVAL {revocation['interval']} s) | "
        f"watcher off (USER_CACHE_TTL {revocation['ttl']} s) | {on:.1f} s | "
        + (f"{off:.1f} s | {on / off:.2f}× | " if off else "— | — | ")
        + f"≤ {bound} s | {_verdict(on <= bound)} |"
    )
    return "\n".join(lines)


def processor_time(times: list, floor: Comparison) -> str:
    """Processor time per sign-in by process (bench.logins.ProcessorTime), and what the rate
    of the P2 target against the raw sequence would leave of it with every core busy."""
    lines = [
        "| processor time per sign-in | server processes | slapd | wrk | in all |",
        "|---|---|---|---|---|",
    ]
    for item in times:
        server, slapd, load = (item.per_login_ms(part) for part in ("server", "slapd", "load"))
        wrk_time = f"{load:.2f} ms" if load else "—"
        lines.append(f"| {item.subject} | {server:.2f} ms | {slapd:.2f} ms | {wrk_time} | "
                     f"{server + slapd + load:.2f} ms |")  # fmt: skip
    cores = os.cpu_count() or 1
    raw = statistics.median(floor.baseline_rates)
    allowed = cores / (floor.target * raw) * 1000
    lines.append(
        f"\nOn {cores} cores kept busy, {floor.target}× the raw sequence's {raw:,.0f} sign-ins/s "
        f"would leave {allowed:.2f} ms of processor time per sign-in in all, wrk and slapd "
        "included."
    )
    return "\n".join(lines)


def missed(comparisons: list[Comparison], scale: dict, timing: list,
           revocation: dict) -> list[str]:  # fmt: skip
    """The names of the targets missed."""
    names = [item.name for item in comparisons if not item.met]
    if revocation["on"] > revocation["interval"] + 1:
        names.append("revocation delay")
    names += [f"P3 scale, {key}" for key in ("login", "miss") if scale[f"{key}_ratio"] > 1.2]
    names += [f"failed-login floor {floor} ms" for floor, _, _, ratio in timing
              if floor and not 0.95 <= ratio <= 1.05]  # fmt: skip
    return names


def chart(comparisons: list[Comparison], scale: dict, path: Path) -> None:
    """A horizontal bar per ratio, its target drawn as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = [item.name for item in comparisons] + ["P3 scale, sign-in", "P3 scale, cache miss"]
    ratios = [item.ratio for item in comparisons] + [scale["login_ratio"], scale["miss_ratio"]]
    targets = [item.target for item in comparisons] + [1.2, 1.2]
    figure, axes = pyplot.subplots(figsize=(9, 0.45 * len(names) + 1.2))
    positions = range(len(names))
    colours = ["#2f7d4f" if _bar_met(name, ratio, target) else "#b3412f"
               for name, ratio, target in zip(names, ratios, targets, strict=True)]  # fmt: skip
    axes.barh(positions, ratios, color=colours)
    for position, target in zip(positions, targets, strict=True):
        if target is not None:
            axes.plot([target, target], [position - 0.4, position + 0.4], color="black")
    axes.set_yticks(list(positions), names)
    axes.invert_yaxis()
    axes.set_xlabel("ratio to the baseline (black tick: target; P3: lower is better)")
    axes.set_title("portal: speed against baselines measured in the same run")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def document(body: str, machine: str, command: str, missed_names: list[str]) -> str:
    """docs/benchmarks.md."""
    verdict = ("Every target is met." if not missed_names
               else "Missed: " + ", ".join(missed_names) + ".")  # fmt: skip
    return f"""# Benchmarks

Measured by `{command}` on {machine}, {time.strftime("%Y-%m-%d")}. Every figure is a median of
rounds that alternate subject and baseline in the same run; load comes from `wrk`; servers run
under gunicorn with 2 workers and 4 threads each. {verdict}

![Ratios against their baselines](benchmarks.png)

{body}

- **P1 page / verify**: alice's cached `/pages/handbook` and `/auth/verify` against a bare Flask
  app answering those paths with the very bytes the portal answered (bench/baselines.py).
- **P1 proxy**: a trivial app (nginx answering "ok") behind the shipped nginx configuration with
  `auth_request`, against the same app through the same nginx without it; with the optional
  2-second micro-cache the revocation bound grows by 2 s (deploy/README.md).
- **P2**: full sign-ins through the form (GET, then POST with the CSRF token: bench/login.lua)
  against flask-ldap3-login's documented example served the same way from its own virtualenv,
  and against ldap3 sending the three operations of a sign-in with no HTTP at all. Between the
  two, a bare Flask app under the same gunicorn settings sending those three operations behind
  the same two requests, with no CSRF, session, throttling or audit (bench/login_floor.py): the
  least any Flask sign-in costs, and how far it stands from the raw sequence.
- **P3**: sign-in and cache-miss time on a generated 100,000-person, 5,000-group tree with five
  levels of nesting against a 1,000-person one, timed call by call in turn (a call on the large
  tree, then one on the small), so the machine's drift weighs on both; the operations per call
  are counted.
- **Processor time per sign-in**: user and system time over the P2 rounds, read from /proc
  for gunicorn's processes (the raw sequence's own two processes) and slapd, and for wrk from
  the children this run waited for, divided by the sign-ins made: with both cores busy, the
  sum is what sets the rate.
- **Memory**: resident size of a worker after caching 10,000 people.
- **Revocation delay**: from an ldapmodify removing alice from engineering to her engineering
  page being refused (bench/revocation.py), with the directory watcher on, and off (then the
  cache TTL, 20 s in this run, decides).
"""


def _verdict(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "**no**")


def _bar_met(name: str, ratio: float, target: float | None) -> bool:
    if target is None:
        return True
    return ratio <= target if name.startswith("P3") else ratio >= target
