"""Access rules: who may open which host and path, for the portal and the apps behind its proxy.

Pure functions on plain data. Rules are tried in order; a rule matches when every criterion it
names matches (hosts, path prefixes, methods, and the person being in one of its groups); the
first match decides, else ACCESS_DEFAULT_POLICY does.

A path is judged the way the app behind the proxy will read it (`app_path`): a ``%XX`` escape of
an unreserved character (a letter, a digit, ``-._~``) means that very character (RFC 3986
6.2.2.2), so ``/app/%65ngineering/`` is judged as ``/app/engineering/``. Any other escape
(``%2F``, ``%25``, a double encoding such as ``%2565``, ``%00``) and any non-ASCII or control
character could be read differently by different apps, so such a path is refused outright, as
are dot segments, ``//``, ``\\``, ``;parameters``, segments ending in a dot, and the other names
Windows servers give a file (``x::$DATA``, ``ENGINE~1``). A path must
then be allowed both as decoded and lower-cased (some servers match paths case-insensitively).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# RFC 3986 2.3: the characters an escape may stand for without changing what a path means.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%(.?.?)")
# After decoding: dot segments, doubled slashes, backslashes, ;parameters and segments ending
# in a dot, which servers disagree about; and what Windows servers read as another name for a
# file: NTFS streams ("x::$DATA", "x:$I30") and 8.3 short names ("ENGINE~1").
_AMBIGUOUS = re.compile(
    r"(^|/)\.{1,2}(/|$)|//|\\|;|\.(/|$)|::|:\$|(^|/)[^/]{1,6}~[0-9]+(\.[^/]{0,3})?(/|$)"
)
_HOST = re.compile(r"^[a-z0-9_.-]+$")
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

    The query is dropped; escapes of unreserved characters are decoded; escapes in
    `kept_escapes` (upper case, e.g. "%20") stay as they are; any other escape, a malformed
    one, non-ASCII text, a control character, a "#" or an ambiguous spelling (dot segments,
    ``//``, ``\\``, ``;``, a segment ending in ".") is refused.
    """
    path = raw.split("?", 1)[0] or "/"
    if "#" in path:
        # No browser sends a fragment; nginx and Werkzeug stop at a "#" but some servers (Go's)
        # read on past it, so "/app/x#/../closed" would be judged as /app/x and served closed.
        raise PathRefused(f"a '#' in {path!r}")
    if not path.isascii() or any(ord(char) <= 0x20 or ord(char) == 0x7F for char in path):
        raise PathRefused(f"non-ASCII or control character in {path!r}")
    if "%" in path:
        path = _ESCAPE.sub(lambda match: _decode_unreserved(match, kept_escapes), path)
    if _AMBIGUOUS.search(path):
        raise PathRefused(f"ambiguous path {path!r}")
    return path


def normal_host(host: str) -> str:
    """A host name as rules compare it: lower case, no port, no trailing dot; an IPv6 address
    without its brackets, in its shortest spelling ("[2001:DB8:0::1]:443" is "2001:db8::1")."""
    host = host.lower()
    if host.startswith("[") and "]" in host:
        host = host[1 : host.index("]")]  # whatever follows "]" is the port
    elif host.count(":") < 2:  # two or more: a bare IPv6 address, with no port to take off
        return _PORT.sub("", host).rstrip(".")
    return _ipv6(host) or host


def _ipv6(text: str) -> str:
    # The shortest spelling of an IPv6 address, an IPv4-mapped one as the IPv4 address it is
    # ("::ffff:10.0.0.1" is 10.0.0.1, which a rule may name); "" for anything else (a zone id
    # included: no Host carries one).
    if "%" in text:
        return ""
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return ""
    return str(address.ipv4_mapped or address)


class RuleSet:
    """ACCESS_RULES and ACCESS_DEFAULT_POLICY, compiled once: the hot path only matches."""

    #: Hosts whose applicable rules are remembered (hosts are few; a flood only costs work).
    HOSTS_KEPT = 1024
    #: Decisions remembered by their exact question (/auth/verify asks the same ones again and
    #: again; a flood of new questions only costs the work of answering them).
    DECISIONS_KEPT = 8192
    #: Longer questions (host and path) are answered afresh each time: the memory stays small.
    QUESTION_KEPT_LENGTH = 512

    def __init__(
        self, rules: Sequence[Mapping], default_policy: str, kept_escapes: Iterable[str] = ()
    ):
        self.rules = [_Rule(number, rule) for number, rule in enumerate(rules, 1)]
        self.kept_escapes = frozenset(escape.upper() for escape in kept_escapes)
        self.default_allowed = default_policy == "allow"
        self._default = Decision(self.default_allowed, 0, f"default policy: {default_policy}")
        self._portal_page = Decision(
            True, 0, "no rule matches this portal page (the default policy is for apps)"
        )
        self._by_host: dict[str, tuple[list[_Rule], bool]] = {}
        self._decided: dict[tuple, Decision] = {}

    @property
    def judges(self) -> bool:
        """False when every active person may open everything (no rules, default allow)."""
        return bool(self.rules) or not self.default_allowed

    def decide(
        self,
        groups: Iterable[str],
        host: str,
        path: str,
        method: str = "GET",
        decoded: bool = False,
    ) -> Decision:
        """Apply the rules to one request of a signed-in, active person.

        `path` is the request target as sent to an app (escapes are resolved here, see
        `app_path`), or with `decoded` the path as the app itself has already read it (the
        portal's own pages: Werkzeug decodes the path before Flask routes it).
        """
        if not self.rules:
            return self._default
        # The rules never change while the process runs: the same question, the same answer.
        groups = tuple(groups)
        if len(path) + len(host) > self.QUESTION_KEPT_LENGTH:
            return self._decide(groups, host, path, method, decoded)  # rare: not remembered
        question = (groups, host, path, method, decoded)
        decision = self._decided.get(question)
        if decision is None:
            decision = self._decide(groups, host, path, method, decoded)
            if len(self._decided) >= self.DECISIONS_KEPT:
                self._decided = {}
            self._decided[question] = decision
        return decision

    def _decide(self, groups, host: str, path: str, method: str, decoded: bool) -> Decision:
        host = normal_host(host)
        if not (_HOST.match(host) or _ipv6(host)):
            return Decision(False, 0, f"the address itself, before any rule (an unusable host "
                                      f"name {host!r})")  # fmt: skip
        rules, paths_matter = self._for_host(host)
        if not paths_matter:
            path = "/"  # no rule for this host looks at paths: how it is spelled cannot matter
        elif not decoded:
            try:
                path = app_path(path, self.kept_escapes)
            except PathRefused as refusal:
                return Decision(False, 0, f"the address itself, before any rule ({refusal})")
        member_of = {group.casefold() for group in groups}
        method = method.upper()
        decision = self._first_match(rules, member_of, path, method, folded=False)
        lowered = path.lower()
        if decision.allowed and paths_matter:
            folded = self._first_match(rules, member_of, lowered, method, folded=True)
            if not folded.allowed or not decision.rule:
                return folded  # a refusal wins; else the reading a rule spoke about
        return decision

    def decide_portal_page(self, groups: Iterable[str], host: str, path: str,
                           method: str = "GET") -> Decision:  # fmt: skip
        """As `decide` for one of the portal's own pages (path as Flask routes it), except
        that ACCESS_DEFAULT_POLICY does not apply: only a rule that matches may refuse it.

        The default policy is for the apps behind the proxy. The portal's pages have guards of
        their own (a page's groups, ACCESS_ADMIN_GROUPS), and "deny" closing them would shut
        everyone out of the home page and the admin pages alike.
        """
        decision = self.decide(groups, host, path, method, decoded=True)
        if decision is self._default and not decision.allowed:
            return self._portal_page
        return decision

    def could_allow(self, host: str | None, path: str) -> bool:
        """Whether some allow rule (or the default policy) lets somebody GET this host and path;
        a None host stands for any (an address on the portal's own host)."""
        if self.default_allowed:
            return True
        if host is None:
            rules, paths_matter = self.rules, any(rule.prefixes for rule in self.rules)
        else:
            rules, paths_matter = self._for_host(normal_host(host))
        if not paths_matter:
            path = "/"  # as decide: no rule that applies reads the path
        else:
            try:
                path = app_path(path, self.kept_escapes)
            except PathRefused:
                return False
        return any(
            rule.decision.allowed
            and (not rule.methods or "GET" in rule.methods)
            and rule.matches_path(path)
            for rule in rules
        )

    def _for_host(self, host: str) -> tuple[list[_Rule], bool]:
        # The rules that may apply to a host, in order, and whether any of them has paths.
        known = self._by_host.get(host)
        if known is None:
            rules = [rule for rule in self.rules if rule.covers(host)]
            known = (rules, any(rule.prefixes for rule in rules))
            if len(self._by_host) >= self.HOSTS_KEPT:
                self._by_host = {}
            self._by_host[host] = known
        return known

    def _first_match(self, rules, member_of, path: str, method: str, folded: bool) -> Decision:
        for rule in rules:
            if rule.matches(member_of, path, method, folded):
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


def shadowed(rules: Sequence[Mapping]) -> list[str]:
    """Warnings for rules an earlier rule always decides first: every request such a rule
    would match, the earlier one matches too, so it never decides anything (an allow of "/"
    before a deny of "/app/wiki" leaves the wiki open)."""
    compiled = [_Rule(number, rule) for number, rule in enumerate(rules, 1)]
    warnings = []
    for later in compiled:
        for earlier in compiled[: later.decision.rule - 1]:
            if earlier.includes(later):
                warnings.append(
                    f"ACCESS_RULES[{later.decision.rule}] never decides anything: "
                    f"{earlier.decision.reason} matches every request it would (put the more "
                    "specific rule first)"
                )
                break
    return warnings


class _Rule:
    # One rule with its lists turned into the sets and tuples matching needs.
    __slots__ = ("decision", "groups", "hosts", "lowered", "methods", "prefixes")

    def __init__(self, number: int, rule: Mapping):
        allowed = rule["policy"] == "allow"
        self.decision = Decision(allowed, number, f"rule {number}: {describe(rule)}")
        # Spelled as normal_host gives a request's host: no trailing dot, an address shortest.
        self.hosts = tuple(_ipv6(pattern.strip("[]")) or pattern.lower().rstrip(".")
                           for pattern in rule.get("hosts") or ())  # fmt: skip
        # "/app" covers "/app" and "/app/..." but not "/application".
        self.prefixes = tuple(prefix.rstrip("/") for prefix in rule.get("paths") or ())
        # For the lower-cased reading of a path (servers that ignore case): "/Admin" too.
        self.lowered = tuple(prefix.lower() for prefix in self.prefixes)
        methods = {method.upper() for method in rule.get("methods") or ()}
        if "GET" in methods:
            methods.add("HEAD")  # a HEAD is a GET without the body
        self.methods = frozenset(methods)
        self.groups = frozenset(group.casefold() for group in rule.get("groups") or ())

    def includes(self, other: _Rule) -> bool:
        # Whether this rule matches every request `other` matches (each of its lists covers
        # the other's: none at all is everything).
        hosts = not self.hosts or (
            bool(other.hosts) and all(self.covers(host) for host in other.hosts)
        )
        paths = not self.prefixes or (
            bool(other.prefixes) and all(self.matches_path(prefix) for prefix in other.prefixes)
        )
        methods = not self.methods or (bool(other.methods) and other.methods <= self.methods)
        groups = not self.groups or (bool(other.groups) and other.groups <= self.groups)
        return hosts and paths and methods and groups

    def covers(self, host: str) -> bool:
        return not self.hosts or any(fnmatch.fnmatchcase(host, p) for p in self.hosts)

    def matches_path(self, path: str, folded: bool = False) -> bool:
        prefixes = self.lowered if folded else self.prefixes
        return not prefixes or any(
            path == prefix or path.startswith(prefix + "/") for prefix in prefixes
        )

    def matches(self, member_of: set[str], path: str, method: str, folded: bool) -> bool:
        if not self.matches_path(path, folded):
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
