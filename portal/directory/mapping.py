"""Turn ldap3 search responses into the portal's plain attribute mappings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .queries import fold_name
from .settings import ENTRY_ID_ATTRIBUTES


def entries_of(response: Iterable[Mapping] | None) -> list[Mapping]:
    """Keep only real entries: ldap3 also returns referral continuations (searchResRef)."""
    return [item for item in response or () if item.get("type") == "searchResEntry"]


def values(attributes: Mapping, name: str) -> list[str]:
    """Return every value of an attribute as text (bytes decoded, odd bytes replaced)."""
    value = attributes.get(name)
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            for item in items]  # fmt: skip


def first_value(attributes: Mapping, name: str) -> str:
    """Return the first value of an attribute as text, or "" when it is absent."""
    found = values(attributes, name)
    return found[0] if found else ""


def user_attributes(entry: Mapping, settings, groups: Iterable[str]) -> dict:
    """Build the cached user data from a person entry and their group names."""
    attributes = entry["attributes"]
    return {
        "username": fold_name(first_value(attributes, settings.attr_username)),
        "dn": entry["dn"],
        "display_name": first_value(attributes, settings.attr_display_name),
        "email": first_value(attributes, settings.attr_email),
        "groups": sorted(set(groups), key=str.casefold),
        "password_changed": first_value(attributes, settings.attr_password_changed),
        "entry_id": entry_id(attributes),
    }


def entry_id(attributes: Mapping) -> str:
    """The entry's unique id and creation time as one text ("" when the directory gives none);
    a binary id (objectGUID) as hex, so no two ids read alike."""
    found = []
    for name in ENTRY_ID_ATTRIBUTES:
        value = attributes.get(name)
        first = value[0] if isinstance(value, (list, tuple)) and value else value
        if first:
            found.append(first.hex() if isinstance(first, bytes) else str(first))
    return "|".join(found)
