"""Access rules: who may open which host and path, for the portal and the apps behind its proxy.

Pure functions on plain data. Rules are tried in order; a rule matches when every criterion it
names matches (hosts, path prefixes, methods, and the person being in one of its groups); the
first match decides, else ACCESS_DEFAULT_POLICY does.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote


@dataclass(frozen=True)
class Decision:
    """Whether access is allowed, and which rule (1-based, 0 for the default) said so."""

    allowed: bool
    rule: int
    reason: str


def decide(
    rules: list[Mapping],
    default_policy: str,
    groups: Iterable[str],
    host: str,
    path: str,
    method: str = "GET",
) -> Decision:
    """Apply the rules to one request of a signed-in, active person."""
    if not rules:
        return Decision(default_policy == "allow", 0, f"default policy: {default_policy}")
    member_of = {group.lower() for group in groups}
    host = host.lower().split(":")[0].rstrip(".")  # "wiki.corp.example." is the same host
    method, path = method.upper(), normalise_path(path)
    for number, rule in enumerate(rules, 1):
        if _matches(rule, member_of, host, path, method):
            allowed = rule["policy"] == "allow"
            return Decision(allowed, number, f"rule {number}: {describe(rule)}")
    return Decision(default_policy == "allow", 0, f"default policy: {default_policy}")


def normalise_path(raw: str) -> str:
    """The path an upstream server will serve: query dropped, %-escapes decoded, "//" and dot
    segments resolved, so "/public/../admin" is judged as "/admin"."""
    path = unquote(raw.split("?", 1)[0].split("#", 1)[0])
    path = posixpath.normpath(re.sub(r"/+", "/", "/" + path.replace("\\", "/")))
    return "/" if path in (".", "") else path


def describe(rule: Mapping) -> str:
    """One line saying what a rule matches and what it decides."""
    parts = [f"{key}={','.join(rule[key])}" for key in ("hosts", "paths", "methods", "groups")
             if rule.get(key)]  # fmt: skip
    return f"{rule['policy']} " + (" ".join(parts) or "everything")


def _matches(rule: Mapping, member_of: set[str], host: str, path: str, method: str) -> bool:
    hosts = rule.get("hosts") or []
    if hosts and not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in hosts):
        return False
    paths = rule.get("paths") or []
    if paths and not any(_under(path, prefix) for prefix in paths):
        return False
    methods = rule.get("methods") or []
    if methods and method not in {m.upper() for m in methods}:
        return False
    groups = rule.get("groups") or []
    return not groups or any(group.lower() in member_of for group in groups)


def _under(path: str, prefix: str) -> bool:
    # "/app" covers "/app" and "/app/..." but not "/application".
    return path == prefix.rstrip("/") or path.startswith(prefix.rstrip("/") + "/")
