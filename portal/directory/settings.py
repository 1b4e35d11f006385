"""The directory settings, read once from the app config into an immutable object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import account_state

#: What tells one directory entry from another that later takes the same username (a new
#: hire's, after a deletion or a rename): its unique id (OpenLDAP's entryUUID, Active
#: Directory's objectGUID, 389's nsUniqueId; a directory ignores those it does not know) and
#: its creation time (RFC 4512). A login's stamp names them (portal.signin.logins.entry_stamp).
ENTRY_ID_ATTRIBUTES = ("entryUUID", "objectGUID", "nsUniqueId", "createTimestamp")


@dataclass(frozen=True)
class DirectorySettings:
    """Everything the directory layer needs to know, with no reference to Flask."""

    urls: tuple[str, ...]
    start_tls: bool
    ca_file: str
    connect_timeout: int
    operation_timeout: int
    pool_size: int
    page_size: int
    bind_dn: str
    bind_password: str
    user_bases: tuple[str, ...]
    user_filter: str
    login_domains: frozenset[str]
    dn_template: str
    attr_username: str
    attr_display_name: str
    attr_email: str
    account_state: str
    disabled_filter: str
    password_max_age_days: int
    group_membership: str
    attr_member_of: str
    group_base: str
    group_filter: str
    group_name_attr: str
    nesting_depth: int
    nested_filter: str
    username_max_length: int
    password_max_length: int
    breaker_max_seconds: int = 30
    login_deadline: float = 6.0
    #: LDAP_USER_FILTER without LDAP_DISABLED_FILTER: finds disabled people too (to say why).
    plain_user_filter: str = ""
    #: The ppolicy entry people without a pwdPolicySubentry of their own are subject to.
    password_policy_dn: str = ""

    @classmethod
    def from_config(cls, config: Mapping) -> DirectorySettings:
        """Pick the LDAP_* keys (already validated) out of a Flask config."""
        bases = config["LDAP_USER_BASE"]
        user_filter = config["LDAP_USER_FILTER"]
        if config["LDAP_DISABLED_FILTER"]:
            # Disabled accounts are simply not found: no login, and signed out on the next read.
            user_filter = f"(&{user_filter}(!{config['LDAP_DISABLED_FILTER']}))"
        return cls(
            urls=tuple(config["LDAP_URLS"]),
            start_tls=config["LDAP_START_TLS"],
            ca_file=config["LDAP_CA_FILE"],
            connect_timeout=config["LDAP_CONNECT_TIMEOUT"],
            operation_timeout=config["LDAP_OPERATION_TIMEOUT"],
            pool_size=config["LDAP_POOL_SIZE"],
            page_size=config["LDAP_PAGE_SIZE"],
            bind_dn=config["LDAP_BIND_DN"],
            bind_password=config["LDAP_BIND_PASSWORD"],
            user_bases=(bases,) if isinstance(bases, str) else tuple(bases),
            user_filter=user_filter,
            login_domains=frozenset(domain.lower() for domain in config["LDAP_LOGIN_DOMAINS"]),
            dn_template=config["LDAP_USER_DN_TEMPLATE"],
            attr_username=config["LDAP_ATTR_USERNAME"],
            attr_display_name=config["LDAP_ATTR_DISPLAY_NAME"],
            attr_email=config["LDAP_ATTR_EMAIL"],
            account_state=config["LDAP_ACCOUNT_STATE"],
            disabled_filter=config["LDAP_DISABLED_FILTER"],
            password_max_age_days=config["LDAP_PASSWORD_MAX_AGE_DAYS"],
            group_membership=config["LDAP_GROUP_MEMBERSHIP"],
            attr_member_of=config["LDAP_ATTR_MEMBER_OF"],
            group_base=config["LDAP_GROUP_BASE"],
            group_filter=config["LDAP_GROUP_FILTER"],
            group_name_attr=config["LDAP_GROUP_NAME_ATTR"],
            nesting_depth=config["LDAP_GROUP_NESTING_DEPTH"],
            nested_filter=config["LDAP_GROUP_NESTED_FILTER"],
            username_max_length=config["USERNAME_MAX_LENGTH"],
            password_max_length=config["PASSWORD_MAX_LENGTH"],
            breaker_max_seconds=config["LDAP_BREAKER_MAX_SECONDS"],
            login_deadline=config["LDAP_LOGIN_DEADLINE"] or config["LDAP_OPERATION_TIMEOUT"] + 1,
            plain_user_filter=config["LDAP_USER_FILTER"],
            password_policy_dn=config["LDAP_PASSWORD_POLICY_DN"],
        )

    @property
    def known_entry_filter(self) -> str:
        """Filter for reading an entry by DN: any, unless LDAP_DISABLED_FILTER rules it out."""
        return f"(!{self.disabled_filter})" if self.disabled_filter else "(objectClass=*)"

    @property
    def attr_password_changed(self) -> str:
        """Where the directory records the last password change: Active Directory's pwdLastSet,
        else the password policy's (RFC draft behera) pwdChangedTime."""
        return "pwdLastSet" if self.account_state == "ad" else "pwdChangedTime"

    @property
    def user_attributes(self) -> list[str]:
        """The person attributes every user search asks for (and nothing more)."""
        names = [self.attr_username, self.attr_display_name, self.attr_email]
        if self.group_membership in ("memberof", "both"):
            names.append(self.attr_member_of)
        names += account_state.ATTRIBUTES[self.account_state]
        names += account_state.EXPIRY_ATTRIBUTES[self.account_state]
        if self.attr_password_changed not in names:
            names.append(self.attr_password_changed)
        names += ENTRY_ID_ATTRIBUTES
        return names
