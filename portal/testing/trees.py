"""Three more directory shapes as real slapd trees, beside the demo tree of `Slapd()`.

Each shape has two functions:

- `<shape>_options(**overrides)` returns the keyword arguments for `Slapd(...)`, so the test
  suite can start it through its own helper (`start_slapd(**ad_options())` in tests/conftest.py,
  which skips or fails cleanly when slapd is not installed);
- `<shape>_tree(**overrides)` returns a configured `Slapd` that is NOT started yet: call
  `.start()` (then `.cleanup()`), or use it as a context manager, which starts it and cleans up:

      with ad_tree() as server:
          ...  # server.url, server.root_dn, server.root_password

`overrides` are further `Slapd` arguments (`port=`, `tls_files=`, ...); `extra_config` and
`global_config` given there are appended to the tree's own, other keys replace its values.

The shapes (accounts and groups are listed in each LDIF file's header too):

`ad_tree()`: Active Directory-shaped, suffix dc=corp,dc=example, schema
ldap_fixtures/schema/ad-shaped.schema (AD's own OIDs). Service account `AD_SERVICE_DN`
(CN=portal-reader,OU=Service Accounts,DC=corp,DC=example). People in `AD_USERS` (keyed by
sAMAccountName), groups in `AD_GROUPS` (keyed by cn); account state in userAccountControl,
pwdLastSet and msDS-User-Account-Control-Computed; memberOf stored statically (direct groups
only). slapd returns entry DNs with lower-case attribute types (`cn=Alice Liddell,ou=Users,...`)
while stored DN values (member, memberOf) keep the `CN=...,OU=...` case of the LDIF: compare
DNs normalised, never as strings.

`memberof_tree()`: the demo people with the memberof overlay; the groups are added with ldapadd
after start so slapd computes memberOf (operational: request it by name). Service account
`SERVICE_DN`.

`ppolicy_tree()`: the ppolicy overlay with a default policy (cn=default,ou=policies,...):
alice (normal), grace (expired, 2 grace binds), reset (pwdReset: must change), locked
(pwdAccountLockedTime 000001010000Z). A bind changes state here (grace binds are used up,
failures lock accounts): start a fresh tree for each test that binds as those people.

Every password is `password_of(name)` = "<name>-secret"; the service accounts' is
`SERVICE_PASSWORD` (dev-only, refused by the portal in production).
"""

from __future__ import annotations

from typing import Any

from .slapd import FIXTURES, Slapd

SERVICE_PASSWORD = "dev-only-reader-secret"  # noqa: S105 - the trees' documented fixture password
#: The service account of the dc=example,dc=org trees (memberOf and ppolicy), as in the demo.
SERVICE_DN = "cn=portal-reader,ou=services,dc=example,dc=org"
EXAMPLE_SUFFIX = "dc=example,dc=org"


def password_of(name: str) -> str:
    """The plain-text password of a tree's person: `<name>-secret`."""
    return f"{name}-secret"


# --- Active Directory-shaped ------------------------------------------------------------------

AD_SUFFIX = "dc=corp,dc=example"
#: The base as AD spells it (DNs in the LDIF use upper-case CN=/OU=/DC=).
AD_BASE = "DC=corp,DC=example"
AD_USERS_BASE = "OU=Users,DC=corp,DC=example"
AD_GROUPS_BASE = "OU=Groups,DC=corp,DC=example"
AD_SERVICE_DN = "CN=portal-reader,OU=Service Accounts,DC=corp,DC=example"
AD_SCHEMA = FIXTURES / "schema" / "ad-shaped.schema"
#: The login domains: alice@corp.example, CORP\\alice.
AD_DOMAIN = "corp.example"
AD_NETBIOS_DOMAIN = "CORP"
#: sAMAccountName -> DN.
AD_USERS = {
    "alice": "CN=Alice Liddell,OU=Users,DC=corp,DC=example",
    "asmith": "CN=Alice Smith,OU=Users,DC=corp,DC=example",
    "bob": "CN=Bob Builder,OU=Users,DC=corp,DC=example",
    "carol": "CN=Carol Newman,OU=Users,DC=corp,DC=example",
    "dave": "CN=Dave Locke,OU=Users,DC=corp,DC=example",
    "erin": "CN=Erin Expired,OU=Users,DC=corp,DC=example",
    "frank": "CN=Frank Figures,OU=Users,DC=corp,DC=example",
}
#: sAMAccountName -> userPrincipalName (asmith's differs from her sAMAccountName).
AD_UPNS = {name: f"{name}@corp.example" for name in AD_USERS} | {
    "asmith": "alice.smith@corp.example"
}
#: cn -> DN.
AD_GROUPS = {
    "Staff": "CN=Staff,OU=Groups,DC=corp,DC=example",
    "Engineering": "CN=Engineering,OU=Groups,DC=corp,DC=example",
    "Research": "CN=Research,OU=Groups,DC=corp,DC=example",
    "R&D (Europe)*": "CN=R&D (Europe)*,OU=Groups,DC=corp,DC=example",
    "Loop A": "CN=Loop A,OU=Groups,DC=corp,DC=example",
    "Loop B": "CN=Loop B,OU=Groups,DC=corp,DC=example",
}
#: userAccountControl and msDS-User-Account-Control-Computed flags the trees use.
UAC_ACCOUNTDISABLE = 0x2
UAC_NORMAL_ACCOUNT = 0x200
UAC_DONT_EXPIRE_PASSWORD = 0x10000
UAC_LOCKOUT = 0x10
UAC_PASSWORD_EXPIRED = 0x800000
#: The bitwise-AND matching rule (LDAP_MATCHING_RULE_BIT_AND); slapd implements it.
MATCHING_RULE_BIT_AND = "1.2.840.113556.1.4.803"
#: LDAP_MATCHING_RULE_IN_CHAIN: real AD only. slapd does not implement it: such a filter
#: component is Undefined there, so the search returns nothing (and no error).
MATCHING_RULE_IN_CHAIN = "1.2.840.113556.1.4.1941"


def ad_options(**overrides: Any) -> dict[str, Any]:
    """Slapd arguments for the AD-shaped tree (dc=corp,dc=example)."""
    return _merge(
        {
            "ldif_files": sorted((FIXTURES / "ad").glob("*.ldif")),
            "suffix": AD_SUFFIX,
            "service_dn": AD_SERVICE_DN,
            "schemas": [AD_SCHEMA],
            "extra_config": (
                "index sAMAccountName,userPrincipalName eq\nindex memberOf eq\n"
                "index userAccountControl eq"
            ),
        },
        overrides,
    )


def ad_tree(**overrides: Any) -> Slapd:
    """A configured, not yet started, slapd serving the AD-shaped tree."""
    return Slapd(**ad_options(**overrides))


# --- memberOf overlay ---------------------------------------------------------------------

#: uid -> DN (the demo people).
EXAMPLE_PEOPLE = {
    name: f"uid={name},ou=people,dc=example,dc=org"
    for name in ("alice", "bob", "carol", "dave", "erin", "frank")
}
#: cn -> DN of the memberOf tree's groupOfNames (added after start).
MEMBEROF_GROUPS = {
    name: f"cn={name},ou=groups,dc=example,dc=org"
    for name in ("staff", "engineering", "research", "finance", "suspended")
}


def memberof_options(**overrides: Any) -> dict[str, Any]:
    """Slapd arguments for the memberOf-overlay tree (dc=example,dc=org)."""
    return _merge(
        {
            "ldif_files": [FIXTURES / "memberof" / "10-people.ldif"],
            "post_start_ldif": [FIXTURES / "memberof" / "20-groups.ldif"],
            "modules": ["memberof"],
            # memberof-refint: renaming or deleting a person or group keeps memberOf right.
            "extra_config": "index memberOf eq\noverlay memberof\nmemberof-refint true",
        },
        overrides,
    )


def memberof_tree(**overrides: Any) -> Slapd:
    """A configured, not yet started, slapd whose groups get memberOf from the overlay."""
    return Slapd(**memberof_options(**overrides))


# --- Password policy --------------------------------------------------------------------

PPOLICY_DEFAULT_DN = "cn=default,ou=policies,dc=example,dc=org"
#: uid -> DN.
PPOLICY_PEOPLE = {
    name: f"uid={name},ou=people,dc=example,dc=org"
    for name in ("alice", "grace", "reset", "locked")
}
PPOLICY_STAFF_DN = "cn=staff,ou=groups,dc=example,dc=org"
#: The policy's pwdGraceAuthNLimit and pwdMaxFailure.
PPOLICY_GRACE_LOGINS = 2
PPOLICY_MAX_FAILURE = 3


def ppolicy_options(**overrides: Any) -> dict[str, Any]:
    """Slapd arguments for the password-policy tree (dc=example,dc=org)."""
    return _merge(
        {
            "ldif_files": sorted((FIXTURES / "ppolicy").glob("*.ldif")),
            "modules": ["ppolicy"],
            "extra_config": (
                "overlay ppolicy\n"
                f'ppolicy_default "{PPOLICY_DEFAULT_DN}"\n'
                # Tell a locked account so in the bind response control (else only error 49).
                "ppolicy_use_lockout"
            ),
        },
        overrides,
    )


def ppolicy_tree(**overrides: Any) -> Slapd:
    """A configured, not yet started, slapd enforcing the default password policy."""
    return Slapd(**ppolicy_options(**overrides))


def _merge(options: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(options)
    for key, value in overrides.items():
        if key in ("extra_config", "global_config") and merged.get(key):
            merged[key] = f"{merged[key]}\n{value}"
        else:
            merged[key] = value
    return merged
