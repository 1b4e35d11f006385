"""Which groups a person is in: memberOf values, a group search, or both, plus nested groups.

Only groups under LDAP_GROUP_BASE count, whichever way they are found. In "memberof" mode a
group's name is the value of its DN's first RDN (set LDAP_GROUP_NAME_ATTR to that attribute,
usually cn); otherwise its LDAP_GROUP_NAME_ATTR, read from the DN when the DN's first RDN is
of that attribute (cn=leave,... is "leave", whatever other cn values the entry holds), else its
first value. One name per group, and one that only a rename changes: were every cn value a name,
whoever may edit a group's entry (an owner) could add "cn: portal-admins" to it. `portal check`
warns of a setting that names a group by another of its values.

Cost (LDAP operations after the person's entry is read): "memberof" 0; "search" and "both" one
paged group search (one operation per LDAP_PAGE_SIZE groups); nesting one more paged search per
level for every NESTED_BATCH groups newly found at that level, at most LDAP_GROUP_NESTING_DEPTH
levels. Every group is visited once, so cycles end. A failed pooled connection may add one retry.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache

from ldap3.utils.dn import parse_dn

from .mapping import first_value, values
from .queries import fill_filter
from .settings import DirectorySettings

#: Group DNs put into one nested-group search filter.
NESTED_BATCH = 50
#: DNs whose parse each process keeps: a sign-in parses each of the person's group DNs three
#: times, and the same groups come back for everyone (ldap3's parse is pure Python, ~30 us).
KEPT_DNS = 4096

Search = Callable[[str, str, list[str]], list[Mapping]]


def resolve_groups(
    entry: Mapping,
    settings: DirectorySettings,
    search: Search,
    via: dict[str, str] | None = None,
) -> list[str]:
    """Return the names of every group the person is in, nested ones included.

    Given a dict `via`, also record for each nested group the name of the group it was reached
    through. That needs one nested search per group instead of per batch, so only the
    explanations for administrators ask for it.
    """
    base = dn_key(settings.group_base)
    found: dict[tuple, str] = {}  # group DN key -> name
    frontier: list[str] = []

    def add(dn: str, name: str, parent: str | None = None) -> None:
        key = dn_key(dn)
        if not name or not key or key[-len(base) :] != base or len(key) <= len(base):
            return  # unnamed, malformed, or not under LDAP_GROUP_BASE
        if key not in found:
            frontier.append(dn)
            if via is not None and parent is not None and name not in via:
                via[name] = parent
        found[key] = name

    attributes = entry["attributes"]
    if settings.group_membership in ("memberof", "both"):
        for dn in values(attributes, settings.attr_member_of):
            add(dn, rdn_value(dn))
    if settings.group_membership in ("search", "both"):
        member_name = first_value(attributes, settings.attr_username)
        search_filter = fill_filter(
            settings.group_filter, user_dn=entry["dn"], username=member_name
        )
        for group in search(settings.group_base, search_filter, [settings.group_name_attr]):
            add(group["dn"], known_name(group, settings))
    for _ in range(settings.nesting_depth):
        level, frontier[:] = frontier[:], []
        for batch in _batches(level, 1 if via is not None else NESTED_BATCH):
            clauses = "".join(fill_filter(settings.nested_filter, group_dn=dn) for dn in batch)
            parent = found[dn_key(batch[0])] if via is not None else None
            for group in search(settings.group_base, f"(|{clauses})", [settings.group_name_attr]):
                add(group["dn"], known_name(group, settings), parent)
        if not frontier:
            break
    return sorted(set(found.values()), key=str.lower)


def known_name(group: Mapping, settings: DirectorySettings) -> str:
    """The name the portal knows a group entry by under these settings: in "memberof" mode the
    value of its DN's first RDN (the name a memberOf value gives), else its group_name."""
    if settings.group_membership == "memberof":
        return rdn_value(group["dn"])
    return group_name(group, settings.group_name_attr)


def group_name(group: Mapping, name_attr: str) -> str:
    """The one name of a group entry: the value of `name_attr` in its DN's first RDN (the value
    a rename changes, not one an edit of the entry adds), else the attribute's first value; ""
    for a DN that does not parse."""
    parts = _parsed(group["dn"])
    if parts is None:
        return ""
    wanted = _TYPE_ALIASES.get(name_attr.lower(), name_attr.lower())
    for kind, value, separator in parts:  # every value of a multi-valued RDN (a+b), then stop
        kind = kind.strip().lower()
        if _TYPE_ALIASES.get(kind, kind) == wanted:
            return _unescape(value)
        if separator != "+":
            break
    return first_value(group["attributes"], name_attr)


#: Spellings of the same attribute type a DN may use.
_TYPE_ALIASES = {"commonname": "cn"}


#: A DN with nothing to unescape or split further: attribute types, plain values, commas. Such
#: a DN's key is read off its text; anything else (escapes, quotes, multi-valued RDNs, an OID or
#: a hex value, spaces around a separator, an empty value) goes through ldap3's parse.
_PLAIN_EDGE = r'[^,=+\\"#;<>\x00-\x1f\s]'  # str.strip() would take \s off a value's ends
_PLAIN_VALUE = rf'{_PLAIN_EDGE}(?:[^,=+\\"#;<>\x00-\x1f]*{_PLAIN_EDGE})?'
_PLAIN_RDN = r"[A-Za-z][A-Za-z0-9-]*=" + _PLAIN_VALUE
_PLAIN_DN = re.compile(f"{_PLAIN_RDN}(?:,{_PLAIN_RDN})*")


@lru_cache(maxsize=KEPT_DNS)
def dn_key(dn: str) -> tuple:
    """A DN as a comparable key: RDN types and values case-folded, escapes undone, no spaces."""
    if _PLAIN_DN.fullmatch(dn):
        # The common case, read off the text (a watcher's listing keys every DN of the tree:
        # ldap3's parse and the unescaping took ~50 us a DN, this ~2 us); the same key.
        return tuple(tuple(part.lower().split("=")) for part in dn.split(","))
    return _parsed_key(dn)


def _parsed_key(dn: str) -> tuple:
    parts = _parsed(dn)
    if parts is None:
        return ()  # a malformed DN matches nothing
    return tuple(
        (kind.strip().lower(), _unescape(value).strip().lower()) for kind, value, _ in parts
    )


def rdn_value(dn: str) -> str:
    """The value of a DN's first RDN, unescaped: ``cn=R\\26D,ou=g`` gives ``R&D``."""
    parts = _parsed(dn)
    return _unescape(parts[0][1]) if parts else ""  # a malformed DN names no group


@lru_cache(maxsize=KEPT_DNS)
def _parsed(dn: str) -> tuple | None:
    # ldap3's parse as a tuple of (type, value, separator), shared by every caller, so never
    # changed; None for a DN that does not parse.
    try:
        return tuple(parse_dn(dn))
    except Exception:  # noqa: BLE001 - any parse failure is a malformed DN
        return None


def _unescape(value: str) -> str:
    # RFC 4514: "\\c" is the character c, "\\hh" one byte of the UTF-8 encoding.
    out, index = bytearray(), 0
    while index < len(value):
        pair = value[index + 1 : index + 3]
        if value[index] == "\\" and len(pair) == 2 and all(c in string.hexdigits for c in pair):
            out.append(int(pair, 16))
            index += 3
        elif value[index] == "\\" and index + 1 < len(value):
            out += value[index + 1].encode()
            index += 2
        else:
            out += value[index].encode()
            index += 1
    return out.decode("utf-8", "replace")


def _batches(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
