"""The signed-in person: plain data built from directory attributes, no I/O."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date


def fold(names: Iterable[str]) -> frozenset[str]:
    """Return group names lower-cased for case-insensitive comparison."""
    return frozenset(name.casefold() for name in names)


@dataclass(frozen=True)
class AccessPolicy:
    """Which groups may use the portal, which may not, and which administer it."""

    allowed: frozenset[str]
    denied: frozenset[str] = frozenset()
    admin: frozenset[str] = frozenset()

    def admits(self, group_keys: frozenset[str]) -> bool:
        """Whether folded group names may use the portal: an allowed group and no denied one."""
        return not group_keys.isdisjoint(self.allowed) and group_keys.isdisjoint(self.denied)

    @classmethod
    def from_config(cls, config: Mapping) -> AccessPolicy:
        """Build the policy from the ACCESS_* settings."""
        return cls(
            allowed=fold(config["ACCESS_ALLOWED_GROUPS"]),
            denied=fold(config["ACCESS_DENIED_GROUPS"]),
            admin=fold(config["ACCESS_ADMIN_GROUPS"]),
        )


@dataclass(frozen=True)
class User:
    """A directory person as the portal sees them; `attrs` round-trips through the cache."""

    username: str
    dn: str
    display_name: str
    email: str
    groups: tuple[str, ...]
    policy: AccessPolicy = field(repr=False, compare=False)
    #: When the directory says the password was last changed (as it spells it; "" if unknown).
    password_changed: str = field(default="", repr=False)
    #: When the password expires (epoch seconds; 0: never, or the directory does not say).
    password_expires: float = field(default=0.0, repr=False)
    #: Which directory entry this is (portal.directory.mapping.entry_id; "" if unknown).
    entry_id: str = field(default="", repr=False)
    #: The sign-in this User was loaded for (see portal.signin.logins); empty outside a request.
    login_id: str = field(default="", repr=False, compare=False)
    group_keys: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        # Computed once per User so every is_active / in_group check is a set lookup.
        object.__setattr__(self, "group_keys", fold(self.groups))

    @classmethod
    def from_attributes(cls, attrs: Mapping, policy: AccessPolicy, login_id: str = "") -> User:
        """Rebuild a User from the plain mapping `attributes()` produced."""
        return cls(
            username=attrs["username"],
            dn=attrs["dn"],
            display_name=attrs.get("display_name") or attrs["username"],
            email=attrs.get("email") or "",
            groups=tuple(attrs.get("groups") or ()),
            policy=policy,
            password_changed=attrs.get("password_changed") or "",
            password_expires=float(attrs.get("password_expires") or 0),
            entry_id=attrs.get("entry_id") or "",
            login_id=login_id,
        )

    def for_login(self, login_id: str) -> User:
        """The same person, loaded for the sign-in `login_id` (a copy: Users are shared)."""
        copied = copy.copy(self)
        object.__setattr__(copied, "login_id", login_id)
        return copied

    def attributes(self) -> dict:
        """Return the plain, JSON-safe data that describes this user."""
        return {
            "username": self.username,
            "dn": self.dn,
            "display_name": self.display_name,
            "email": self.email,
            "groups": list(self.groups),
            "password_changed": self.password_changed,
            "password_expires": self.password_expires,
            "entry_id": self.entry_id,
        }

    def password_days_left(self, now: float) -> int | None:
        """Calendar days (in the portal's local time) from `now` to the day the password
        expires: 0 when that is today, 1 tomorrow; None if it never expires."""
        if not self.password_expires:
            return None
        # Whole 24-hour periods would call an expiry tomorrow morning "today" and a 90-day
        # password just changed "89 days": people count the dates on a calendar.
        try:
            days = (date.fromtimestamp(self.password_expires) - date.fromtimestamp(now)).days
        except (ValueError, OverflowError, OSError):  # past year 9999: "practically never"
            days = int((self.password_expires - now) // 86400)
        return max(0, days)

    def in_any_group(self, names: Iterable[str]) -> bool:
        """Tell whether the user belongs to at least one of the named groups."""
        return not self.group_keys.isdisjoint(fold(names))

    @property
    def is_active(self) -> bool:
        """Member of an allowed group and of no denied group."""
        return self.policy.admits(self.group_keys)

    @property
    def is_suspended(self) -> bool:
        """Member of a denied group (refused whatever else they are in)."""
        return not self.group_keys.isdisjoint(self.policy.denied)

    @property
    def is_admin(self) -> bool:
        """Active and member of an admin group."""
        return self.is_active and not self.group_keys.isdisjoint(self.policy.admin)

    # Flask-Login's user protocol.
    is_authenticated = True
    is_anonymous = False

    def get_id(self) -> str:
        """The login id the session and remember-me cookie store (names the person too)."""
        return self.login_id
