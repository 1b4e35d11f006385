"""Pure helpers that build LDAP filters from untrusted input: no Flask, no network."""

from __future__ import annotations

import re
import unicodedata

from ldap3.core.exceptions import LDAPException
from ldap3.protocol.sasl.sasl import validate_simple_password
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from .errors import InvalidInput

_SPACES = re.compile(" {2,}")


def login_forms(value: object, max_length: int, domains=frozenset()) -> tuple[str, str]:
    """Return (username, login) for a typed login name, or raise InvalidInput.

    ``login`` is the whole name trimmed and lower-cased; ``username`` is the same without a
    domain from `domains` (``alice@corp.example`` and ``CORP\\alice`` both give ``alice``). A
    ``DOMAIN\\name`` form with a domain not in `domains` is refused.
    """
    login = normalise_username(value, max_length)
    if "\\" in login:
        domain, _, name = login.partition("\\")
        if domain not in domains or not name:
            raise InvalidInput("unknown login domain")
        return name, login
    name, at, domain = login.rpartition("@")
    if at and name and domain in domains:
        return name, login
    return login, login


def bind_name(template: str, username: str) -> str:
    """Fill LDAP_USER_DN_TEMPLATE: RFC 4514-escaped for a DN, as is for a UPN template."""
    value = escape_rdn(username) if "=" in template else username
    return template.replace("{username}", value)


def normalise_username(value: object, max_length: int) -> str:
    """Return the login name NFKC-folded, trimmed and lower-cased, or raise InvalidInput.

    Refuses non-strings, empty names, over-long names and any control character (NUL, CR, LF,
    tab, ...), so nothing odd is ever placed into a filter or sent to the directory.
    """
    if not isinstance(value, str):
        raise InvalidInput("username must be text")
    if _has_control_character(value):
        raise InvalidInput("username contains a control character")
    name = fold_name(value)
    if not name or len(name) > max_length:
        raise InvalidInput("username is empty or too long")
    return name


def fold_name(text: str) -> str:
    """A name folded as the directory's caseIgnoreMatch compares it (RFC 4518).

    Compatibility forms ("ａlice", a decomposed "é") are NFKC-folded, every kind of space is a
    space, runs of spaces count as one and leading or trailing ones not at all ("john  smith"
    is "john smith"), and case is ignored. Typed names and the directory's own values are
    folded alike, so each person has one spelling: one session, one cache key, one throttle.
    """
    folded = unicodedata.normalize("NFKC", text)
    spaced = "".join(" " if unicodedata.category(char) == "Zs" else char for char in folded)
    name = _SPACES.sub(" ", spaced).strip(" ")
    # lower(), not casefold(): casefold turns "ß" into "ss", which the directory would not match.
    return name.lower()


def check_password(value: object, max_length: int) -> str:
    """Return the password unchanged if it may be sent in a bind, else raise InvalidInput.

    An empty or blank password would be an unauthenticated bind, which many servers accept
    as success (RFC 4513 5.1.2), so it is refused here, before any LDAP traffic.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise InvalidInput("password is empty or too long")
    try:
        # The same RFC 4013 preparation ldap3 applies when binding, done here so a password it
        # would refuse is a wrong password, not a connection error.
        prepared = validate_simple_password(value)
    except (LDAPException, ValueError) as error:
        raise InvalidInput("password contains characters a bind cannot carry") from error
    # Preparation maps some characters to a space or to nothing ("\u200b" becomes " "): what
    # is sent must not be blank either.
    if not prepared.strip():
        raise InvalidInput("password is blank once prepared for the bind")
    return value


def fill_filter(template: str, **values: str) -> str:
    """Place RFC 4515-escaped values into a filter template's {placeholders}."""
    return template.format_map({key: escape_filter_chars(value) for key, value in values.items()})


def _has_control_character(text: str) -> bool:
    return any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in text)
