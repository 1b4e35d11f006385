"""Access rules: who may open which host and path, for the portal and the apps behind its proxy.

Pure functions on plain data. Rules are tried in order; a rule matches when every criterion it
names matches (hosts, path prefixes, methods, and the person being in one of its groups); the
first match decides, else ACCESS_DEFAULT_POLICY does.

A path is judged the way the app behind the proxy will read it (`app_path`): a ``%XX`` escape of
an unreserved character (a letter, a digit, ``-._~``) means that very character (RFC 3986
6.2.2.2), so ``/app/%65ngineering/`` is judged as ``/app/engineering/``. Any other escape
(``%2F``, ``%25``, a double encoding such as ``%2565``, ``%00``) and any non-ASCII or control
character could be read differently by different apps, so such a path is refused outright, as
are dot segments, ``//``, ``\\``, ``;parameters`` and segments ending in a dot. A path must
then be allowed both as decoded and lower-cased (some servers match paths case-insensitively).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# RFC 3986 2.3: the characters an escape may stand for without changing what a path means.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%(.?.?)")
# After decoding: dot segments, doubled slashes, backslashes, ;parameters and segments ending
# in a dot, which servers disagree about.
_AMBIGUOUS = re.compile(r"(^|/)\.{1,2}(/|$)|//|\\|;|\.(/|$)")
_HOST = re.compile(r"^[a-z0-9.-]+$")
_PORT = re.compile(r":[0-9]+$")


@dataclass(frozen=True)
class Decision:
    """Whether access is allowed, and which rule (1-based, 0 for none) said so."""

    allowed: bool
    rule: int
    reason: str


class PathRefused(ValueError):
    """A path no app can be trusted to read the same way as the rules do."""


def app_path(raw: str, kept_escapes: frozenset[str] = frozenset()) -> str:
    """The path of a request target as an app will read it; raise PathRefused when unsure.

    The query and fragment are dropped; escapes of unreserved characters are decoded; escapes
    in `kept_escapes` (upper case, e.g. "%20") stay as they are; any other escape, a malformed
    one, non-ASCII text, a control character or an ambiguous spelling (dot segments, ``//``,
    ``\\``, ``;``, a segment ending in ".") is refused.
    """
    path = raw.split("?", 1)[0].split("#", 1)[0] or "/"
    if not path.isascii() or any(ord(char) <= 0x20 or ord(char) == 0x7F for char in path):
        raise PathRefused(f"non-ASCII or control character in {path!r}")
    if "%" in path:
        path = _ESCAPE.sub(lambda match: _decode_unreserved(match, kept_escapes), path)
    if _AMBIGUOUS.search(path):
        raise PathRefused(f"ambiguous path {path!r}")
    return path


def normal_host(host: str) -> str:
    """A host name as rules compare it: lower case, no port, no trailing dot."""
    return _PORT.sub("", host.lower()).rstrip(".")


class RuleSet:
    """ACCESS_RULES and ACCESS_DEFAULT_POLICY, compiled once: the hot path only matches."""

    def __init__(
        self, rules: Sequence[Mapping], default_policy: str, kept_escapes: Iterable[str] = ()
    ):
        self.rules = [_Rule(number, rule) for number, rule in enumerate(rules, 1)]
        self.kept_escapes = frozenset(escape.upper() for escape in kept_escapes)
        self.default_allowed = default_policy == "allow"
        self._default = Decision(self.default_allowed, 0, f"default policy: {default_policy}")

    @property
    def judges(self) -> bool:
        """False when every active person may open everything (no rules, default allow)."""
        return bool(self.rules) or not self.default_allowed

    def decide(self, groups: Iterable[str], host: str, path: str, method: str = "GET"):
        """Apply the rules to one request of a signed-in, active person (path as sent)."""
        if not self.rules:
            return self._default
        host = normal_host(host)
        if not _HOST.match(host):
            return Decision(False, 0, f"refused: unusable host name {host!r}")
        try:
            path = app_path(path, self.kept_escapes)
        except PathRefused as refusal:
            return Decision(False, 0, f"refused: {refusal}")
        member_of = {group.casefold() for group in groups}
        method = method.upper()
        decision = self._first_match(member_of, host, path, method)
        lowered = path.lower()
        if decision.allowed and lowered != path:
            folded = self._first_match(member_of, host, lowered, method)
            if not folded.allowed or not decision.rule:
                return folded  # a refusal wins; else the reading a rule spoke about
        return decision

    def _first_match(self, member_of: set[str], host: str, path: str, method: str) -> Decision:
        for rule in self.rules:
            if rule.matches(member_of, host, path, method):
                return rule.decision
        return self._default


def decide(
    rules: Sequence[Mapping],
    default_policy: str,
    groups: Iterable[str],
    host: str,
    path: str,
    method: str = "GET",
) -> Decision:
    """Apply the rules to one request of a signed-in, active person (compiling them first)."""
    return RuleSet(rules, default_policy).decide(groups, host, path, method)


def describe(rule: Mapping) -> str:
    """One line saying what a rule matches and what it decides."""
    parts = [f"{key}={','.join(rule[key])}" for key in ("hosts", "paths", "methods", "groups")
             if rule.get(key)]  # fmt: skip
    return f"{rule['policy']} " + (" ".join(parts) or "everything")


class _Rule:
    # One rule with its lists turned into the sets and tuples matching needs.
    __slots__ = ("decision", "groups", "hosts", "methods", "prefixes")

    def __init__(self, number: int, rule: Mapping):
        allowed = rule["policy"] == "allow"
        self.decision = Decision(allowed, number, f"rule {number}: {describe(rule)}")
        self.hosts = tuple(pattern.lower() for pattern in rule.get("hosts") or ())
        # "/app" covers "/app" and "/app/..." but not "/application".
        self.prefixes = tuple(prefix.rstrip("/") for prefix in rule.get("paths") or ())
        methods = {method.upper() for method in rule.get("methods") or ()}
        if "GET" in methods:
            methods.add("HEAD")  # a HEAD is a GET without the body
        self.methods = frozenset(methods)
        self.groups = frozenset(group.casefold() for group in rule.get("groups") or ())

    def matches(self, member_of: set[str], host: str, path: str, method: str) -> bool:
        if self.hosts and not any(fnmatch.fnmatchcase(host, p) for p in self.hosts):
            return False
        if self.prefixes and not any(
            path == prefix or path.startswith(prefix + "/") for prefix in self.prefixes
        ):
            return False
        if self.methods and method not in self.methods:
            return False
        return not self.groups or not self.groups.isdisjoint(member_of)


def _decode_unreserved(match: re.Match, kept_escapes: frozenset[str]) -> str:
    digits = match.group(1)
    if len(digits) != 2 or not all(char in "0123456789abcdefABCDEF" for char in digits):
        raise PathRefused(f"malformed escape %{digits}")
    byte = int(digits, 16)
    if byte in _UNRESERVED:
        return chr(byte)
    escape = f"%{digits.upper()}"
    if escape in kept_escapes:
        return escape
    raise PathRefused(f"escaped character {escape}")
