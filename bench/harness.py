"""What every measurement shares: servers under gunicorn, the wrk load generator, rounds.

Load comes from `wrk` (a compiled load generator, so no Python client competes with the server
for the two cores); each comparison runs its rounds interleaved (baseline, subject, baseline,
...) and reports medians, so drift on the machine hits both sides alike.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from portal.testing.process import stop_process, wait_until
from portal.testing.slapd import free_port

ROOT = Path(__file__).resolve().parents[1]
#: gunicorn settings for every server measured: 2 workers with 4 threads each (gthread).
WORKERS, THREADS = 2, 4
_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_ERRORS = re.compile(r"Non-2xx or 3xx responses:\s+([0-9]+)")


@dataclass
class Settings:
    """How long and how often: the full run, or the smoke run `make test` keeps alive."""

    seconds: int = 5
    rounds: int = 5
    connections: int = 8
    smoke: bool = False

    @classmethod
    def smoke_run(cls) -> Settings:
        """A run of seconds, only to prove the harness works (no thresholds)."""
        return cls(seconds=1, rounds=1, connections=2, smoke=True)


@dataclass
class Comparison:
    """One subject against its baseline, in requests (or logins) per second."""

    name: str
    subject: str
    baseline: str
    subject_rates: list[float] = field(default_factory=list)
    baseline_rates: list[float] = field(default_factory=list)
    target: float | None = None
    unit: str = "req/s"
    note: str = ""

    @property
    def ratio(self) -> float:
        """Median subject rate over median baseline rate."""
        return statistics.median(self.subject_rates) / statistics.median(self.baseline_rates)

    @property
    def met(self) -> bool:
        """Whether the target is met (a comparison without one always is)."""
        return self.target is None or self.ratio >= self.target


class Server:
    """One WSGI app under gunicorn (2 workers x 4 threads), from a given Python environment."""

    def __init__(self, app_spec: str, env: dict[str, str], python: str = sys.executable,
                 cwd: Path = ROOT, ready_path: str = "/", workers: int = WORKERS):  # fmt: skip
        self.app_spec, self.env, self.cwd = app_spec, env, cwd
        self.gunicorn = str(Path(python).with_name("gunicorn"))
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ready_path = ready_path
        self.workers = workers
        self.work = Path(tempfile.mkdtemp(prefix="portal-bench-"))
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        command = [self.gunicorn, "--workers", str(self.workers), "--threads", str(THREADS),
                   "--worker-class", "gthread", "--bind", f"127.0.0.1:{self.port}",
                   "--log-level", "warning", self.app_spec]  # fmt: skip
        log = open(self.work / "gunicorn.log", "wb")  # noqa: SIM115 - closed in __exit__
        self._log = log
        self.process = subprocess.Popen(command, cwd=self.cwd, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT)  # fmt: skip
        wait_until(self._ready, self.process, 60, self.app_spec, self.log_text)
        return self

    def __exit__(self, *exc) -> None:
        stop_process(self.process)
        self._log.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def log_text(self) -> str:
        """What gunicorn and the app printed."""
        path = self.work / "gunicorn.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pids(self) -> list[int]:
        """gunicorn's master and its workers."""
        found = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                               text=True).stdout.split()  # fmt: skip
        return [self.process.pid, *map(int, found)]

    def _ready(self) -> bool:
        try:
            requests.get(self.base_url + self.ready_path, timeout=2)
        except (requests.ConnectionError, requests.Timeout):
            return False  # not up yet, or too busy to answer in time: asked again
        return True


def wrk(url: str, settings: Settings, headers: dict[str, str] | None = None,
        script: Path | None = None, threads: int = 2) -> float:  # fmt: skip
    """Requests per second wrk reached; fails when any answer was not 2xx or 3xx."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is not installed: sudo apt-get install wrk")
    connections = settings.connections
    command = [binary, f"-t{min(threads, connections)}", f"-c{connections}",
               f"-d{settings.seconds}s", "--latency"]  # fmt: skip
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    result = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    errors = _ERRORS.search(result.stdout)
    if errors and int(errors.group(1)):
        raise RuntimeError(f"{url}: {errors.group(1)} answers were errors\n{result.stdout}")
    return float(_RATE.search(result.stdout).group(1))


def processor_seconds(pids: list[int]) -> float:
    """User and system processor time these processes have used so far, in seconds (Linux)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone: its time is lost to the count, which then reads low
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def children_seconds() -> float:
    """Processor time of the child processes this one has waited for (wrk among them)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def interleaved(comparison: Comparison, settings: Settings, baseline, subject) -> Comparison:
    """Run baseline() and subject() (each returns a rate) in alternating rounds."""
    if not settings.smoke:
        baseline()  # warm both (first requests fill pools, caches and memos)
        subject()
    for _ in range(settings.rounds):
        comparison.baseline_rates.append(baseline())
        comparison.subject_rates.append(subject())
    return comparison


def machine() -> str:
    """The CPU, cores and Python this ran on."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    python = sys.version.split()[0]
    return f"{model}, {os.cpu_count()} cores, Python {python}"


def settle() -> None:
    """A short pause between servers, so one server's shutdown is not the next one's load."""
    time.sleep(0.5)  # lets the previous processes exit before the next measurement
