"""Access rules: who may open which host and path, for the portal and the apps behind its proxy.

Pure functions on plain data. Rules are tried in order; a rule matches when every criterion it
names matches (hosts, path prefixes, methods, and the person being in one of its groups); the
first match decides, else ACCESS_DEFAULT_POLICY does.

A path is judged as it was sent, because that is what the proxy forwards: the portal cannot know
how an app will read "/a/../b", "%2F", "\\\\", ";x" or "b." (servers differ), so a path spelled
any of those ways is refused outright, and a path must be allowed both as sent and lower-cased
(some servers match paths case-insensitively).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Dot segments, doubled slashes, backslashes, %-encoded dot/slash/backslash, ;parameters, and
# segments ending in a dot: spellings servers disagree about.
_AMBIGUOUS = re.compile(r"(^|/)\.{1,2}(/|$)|//|\\|%2e|%2f|%5c|%00|;|\.(/|$)", re.IGNORECASE)
_HOST = re.compile(r"^[a-z0-9.-]+$")


@dataclass(frozen=True)
class Decision:
    """Whether access is allowed, and which rule (1-based, 0 for none) said so."""

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
    # A port is not part of the name; "wiki.corp.example." is the same host.
    host = re.sub(r":[0-9]+$", "", host.lower()).rstrip(".")
    path = path.split("?", 1)[0].split("#", 1)[0] or "/"
    if not _HOST.match(host):
        return Decision(False, 0, f"refused: unusable host name {host!r}")
    if _AMBIGUOUS.search(path):
        return Decision(False, 0, f"refused: ambiguous path {path!r}")
    member_of = {group.casefold() for group in groups}
    decisions = [_first_match(rules, default_policy, member_of, host, reading, method.upper())
                 for reading in {path, path.lower()}]  # fmt: skip
    denied = [decision for decision in decisions if not decision.allowed]
    return denied[0] if denied else decisions[0]


def describe(rule: Mapping) -> str:
    """One line saying what a rule matches and what it decides."""
    parts = [f"{key}={','.join(rule[key])}" for key in ("hosts", "paths", "methods", "groups")
             if rule.get(key)]  # fmt: skip
    return f"{rule['policy']} " + (" ".join(parts) or "everything")


def _first_match(rules, default_policy, member_of, host, path, method) -> Decision:
    for number, rule in enumerate(rules, 1):
        if _matches(rule, member_of, host, path, method):
            allowed = rule["policy"] == "allow"
            return Decision(allowed, number, f"rule {number}: {describe(rule)}")
    return Decision(default_policy == "allow", 0, f"default policy: {default_policy}")


def _matches(rule: Mapping, member_of: set[str], host: str, path: str, method: str) -> bool:
    hosts = rule.get("hosts") or []
    if hosts and not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in hosts):
        return False
    paths = rule.get("paths") or []
    if paths and not any(_under(path, prefix) for prefix in paths):
        return False
    methods = {m.upper() for m in rule.get("methods") or []}
    if "GET" in methods:
        methods.add("HEAD")  # a HEAD is a GET without the body
    if methods and method not in methods:
        return False
    groups = rule.get("groups") or []
    return not groups or any(group.casefold() in member_of for group in groups)


def _under(path: str, prefix: str) -> bool:
    # "/app" covers "/app" and "/app/..." but not "/application".
    return path == prefix.rstrip("/") or path.startswith(prefix.rstrip("/") + "/")
