"""Turn ldap3 search responses into the portal's plain attribute mappings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def entries_of(response: Iterable[Mapping] | None) -> list[Mapping]:
    """Keep only real entries: ldap3 also returns referral continuations (searchResRef)."""
    return [item for item in response or () if item.get("type") == "searchResEntry"]


def first_value(attributes: Mapping, name: str) -> str:
    """Return the first value of an attribute as text, or "" when it is absent."""
    value = attributes.get(name)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def user_attributes(entry: Mapping, settings, groups: Iterable[str]) -> dict:
    """Build the cached user data from a person entry and their group names."""
    attributes = entry["attributes"]
    return {
        "username": first_value(attributes, settings.attr_username).strip().lower(),
        "dn": entry["dn"],
        "display_name": first_value(attributes, settings.attr_display_name),
        "email": first_value(attributes, settings.attr_email),
        "groups": sorted(set(groups), key=str.casefold),
    }


def group_names(entries: Iterable[Mapping], name_attribute: str) -> list[str]:
    """Return the name of each group entry, skipping groups without one."""
    names = (first_value(entry["attributes"], name_attribute) for entry in entries)
    return [name for name in names if name]
