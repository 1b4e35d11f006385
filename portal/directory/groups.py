"""Which groups a person is in: memberOf values, a group search, or both, plus nested groups.

Cost (LDAP operations after the person's entry is read): "memberof" 0, "search" one paged group
search (one operation per LDAP_PAGE_SIZE groups), "both" the same as search; nesting adds one
search per level per 50 groups newly found at that level, at most LDAP_GROUP_NESTING_DEPTH
levels. Every group DN is visited once, so cycles end.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping

from ldap3.utils.dn import parse_dn

from .mapping import first_value
from .queries import fill_filter
from .settings import DirectorySettings

#: Group DNs put into one nested-group search filter.
NESTED_BATCH = 50

Search = Callable[[str, str, list[str]], list[Mapping]]


def resolve_groups(entry: Mapping, settings: DirectorySettings, search: Search) -> list[str]:
    """Return the names of every group the person is in, nested ones included."""
    found: dict[str, str] = {}  # group DN, case-folded -> name
    frontier: list[str] = []

    def add(dn: str, name: str) -> None:
        if name and dn.lower() not in found:
            found[dn.lower()] = name
            frontier.append(dn)

    attributes = entry["attributes"]
    if settings.group_membership in ("memberof", "both"):
        for dn in _values(attributes.get(settings.attr_member_of)):
            add(dn, rdn_value(dn))
    if settings.group_membership in ("search", "both"):
        member_name = first_value(attributes, settings.attr_username)
        search_filter = fill_filter(
            settings.group_filter, user_dn=entry["dn"], username=member_name
        )
        for group in search(settings.group_base, search_filter, [settings.group_name_attr]):
            # A name from the group's own attribute is better than one taken from its DN.
            found.pop(group["dn"].lower(), None)
            add(group["dn"], first_value(group["attributes"], settings.group_name_attr))
    level = frontier[:]
    for _ in range(settings.nesting_depth):
        frontier.clear()
        for batch in _batches(level, NESTED_BATCH):
            clauses = "".join(fill_filter(settings.nested_filter, group_dn=dn) for dn in batch)
            for group in search(settings.group_base, f"(|{clauses})", [settings.group_name_attr]):
                add(group["dn"], first_value(group["attributes"], settings.group_name_attr))
        if not frontier:
            break
        level = frontier[:]
    return sorted(set(found.values()), key=str.lower)


def rdn_value(dn: str) -> str:
    """The value of a DN's first RDN, unescaped: ``cn=R\\26D,ou=g`` gives ``R&D``."""
    try:
        value = parse_dn(dn)[0][1]
    except Exception:  # noqa: BLE001 - a malformed DN names no group
        return ""
    return _unescape(value)


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


def _values(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [item.decode() if isinstance(item, bytes) else str(item) for item in items]


def _batches(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
