"""The directory settings, read once from the app config into an immutable object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class DirectorySettings:
    """Everything the directory layer needs to know, with no reference to Flask."""

    urls: tuple[str, ...]
    bind_dn: str
    bind_password: str
    user_base: str
    user_filter: str
    attr_username: str
    attr_display_name: str
    attr_email: str
    group_base: str
    group_filter: str
    group_name_attr: str
    connect_timeout: int
    operation_timeout: int
    pool_size: int
    ca_file: str
    username_max_length: int
    password_max_length: int

    @classmethod
    def from_config(cls, config: Mapping) -> DirectorySettings:
        """Pick the LDAP_* keys (already validated) out of a Flask config."""
        return cls(
            urls=tuple(config["LDAP_URLS"]),
            bind_dn=config["LDAP_BIND_DN"],
            bind_password=config["LDAP_BIND_PASSWORD"],
            user_base=config["LDAP_USER_BASE"],
            user_filter=config["LDAP_USER_FILTER"],
            attr_username=config["LDAP_ATTR_USERNAME"],
            attr_display_name=config["LDAP_ATTR_DISPLAY_NAME"],
            attr_email=config["LDAP_ATTR_EMAIL"],
            group_base=config["LDAP_GROUP_BASE"],
            group_filter=config["LDAP_GROUP_FILTER"],
            group_name_attr=config["LDAP_GROUP_NAME_ATTR"],
            connect_timeout=config["LDAP_CONNECT_TIMEOUT"],
            operation_timeout=config["LDAP_OPERATION_TIMEOUT"],
            pool_size=config["LDAP_POOL_SIZE"],
            ca_file=config["LDAP_CA_FILE"],
            username_max_length=config["USERNAME_MAX_LENGTH"],
            password_max_length=config["PASSWORD_MAX_LENGTH"],
        )

    @property
    def user_attributes(self) -> list[str]:
        """The person attributes every search asks for (and nothing more)."""
        return [self.attr_username, self.attr_display_name, self.attr_email]
