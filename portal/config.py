"""Settings: documented defaults, settings.toml, `PORTAL_*` environment, validation at start-up.

Order (later wins): the defaults below, the TOML file named by `PORTAL_SETTINGS` (else
`settings.toml` in the working directory), then `PORTAL_<KEY>` environment variables whose values
are parsed as JSON. A bad or missing setting raises `ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
import string
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ldap3.core.exceptions import LDAPException
from ldap3.operation.search import parse_filter
from ldap3.utils.dn import parse_dn

# Marker in the dev-only secrets of settings.toml; refused unless ENV is "development".
_DEV_ONLY_MARKER = "dev-only"

#: "production" (the default) refuses the dev-only secrets of settings.toml and insecure
#: cookies; `make run`, the tests and the demo docker-compose set PORTAL_ENV=development.
ENV = "production"

#: Directory servers, tried in order: ``ldap://host:port`` or ``ldaps://host:port``.
LDAP_URLS: list[str] = []
#: DN of the read-only service account used to search people and groups.
LDAP_BIND_DN = ""
#: Password of the service account (put it in the environment in production).
LDAP_BIND_PASSWORD = ""
#: Where people live; searched with LDAP_USER_FILTER.
LDAP_USER_BASE = ""
#: Filter that finds one person; ``{username}`` is replaced by the escaped login name.
LDAP_USER_FILTER = "(&(objectClass=inetOrgPerson)(uid={username}))"
#: Attribute holding the login name; its value (lower-cased) is the portal's identity.
LDAP_ATTR_USERNAME = "uid"
#: Attribute shown as the person's name.
LDAP_ATTR_DISPLAY_NAME = "displayName"
#: Attribute holding the e-mail address.
LDAP_ATTR_EMAIL = "mail"
#: Where groups live; searched with LDAP_GROUP_FILTER.
LDAP_GROUP_BASE = ""
#: Filter that finds a person's groups; ``{user_dn}`` and ``{username}`` are escaped values.
LDAP_GROUP_FILTER = (
    "(|(&(objectClass=groupOfNames)(member={user_dn}))"
    "(&(objectClass=posixGroup)(memberUid={username})))"
)
#: Attribute holding a group's name (compared case-insensitively).
LDAP_GROUP_NAME_ATTR = "cn"
#: Seconds to wait for a TCP connection to one server (whole seconds: ldap3 needs integers).
LDAP_CONNECT_TIMEOUT = 3
#: Seconds to wait for any one LDAP operation's answer.
LDAP_OPERATION_TIMEOUT = 5
#: How many service connections each process may use at once (and keeps open for reuse).
LDAP_POOL_SIZE = 4
#: PEM file of the CA certificates that sign the directory's TLS certificate (ldaps://);
#: empty means the system's trusted CAs. Certificates and host names are always verified.
LDAP_CA_FILE = ""

#: A person must be in at least one of these groups to use the portal.
ACCESS_ALLOWED_GROUPS: list[str] = []
#: A person in any of these groups may not use the portal, whatever else they are in.
ACCESS_DENIED_GROUPS: list[str] = []
#: Members of these groups may open the admin pages.
ACCESS_ADMIN_GROUPS: list[str] = []
#: Group-restricted pages: tables with slug, title, groups and either body or template.
PAGES: list[dict[str, Any]] = []

#: Flask-Caching backend: SimpleCache (one process) or RedisCache (shared by workers and hosts).
CACHE_TYPE = "SimpleCache"
#: Redis URL when CACHE_TYPE is RedisCache.
CACHE_REDIS_URL = ""
#: Prefix of every cache key, so several portals can share one Redis.
CACHE_KEY_PREFIX = "portal:"
#: Seconds to wait for Redis before treating the cache as down (reads then go to the directory).
CACHE_REDIS_TIMEOUT = 1
#: Most people SimpleCache keeps per process before it drops entries.
CACHE_THRESHOLD = 10000
#: Seconds a signed-in person's directory data is reused before it is read again.
USER_CACHE_TTL = 300

#: Days a "remember me" cookie stays valid.
REMEMBER_COOKIE_DAYS = 14
#: Send cookies only over HTTPS (turn off only for plain-HTTP local development).
SESSION_COOKIE_SECURE = True
#: Largest request body accepted (bytes); longer login forms are refused before any LDAP traffic.
MAX_CONTENT_LENGTH = 16 * 1024
#: Longest login name accepted (characters).
USERNAME_MAX_LENGTH = 256
#: Longest password accepted (characters).
PASSWORD_MAX_LENGTH = 1024

_REQUIRED_TEXT = ("SECRET_KEY", "LDAP_BIND_DN", "LDAP_USER_BASE", "LDAP_GROUP_BASE")
_POSITIVE_INTS = (
    "CACHE_REDIS_TIMEOUT",
    "CACHE_THRESHOLD",
    "LDAP_CONNECT_TIMEOUT",
    "LDAP_OPERATION_TIMEOUT",
    "LDAP_POOL_SIZE",
    "USER_CACHE_TTL",
    "REMEMBER_COOKIE_DAYS",
    "USERNAME_MAX_LENGTH",
    "PASSWORD_MAX_LENGTH",
)
_GROUP_LISTS = ("ACCESS_ALLOWED_GROUPS", "ACCESS_DENIED_GROUPS", "ACCESS_ADMIN_GROUPS")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# Keys with these prefixes are the portal's own: one that is not documented here is a typo.
_OWN_PREFIXES = ("LDAP_", "ACCESS_", "USER_", "PAGES")
_FILTER_PLACEHOLDERS = {
    "LDAP_USER_FILTER": ({"username"}, {"username"}),
    "LDAP_GROUP_FILTER": ({"user_dn", "username"}, set()),
}


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the key and how to fix it."""


def defaults() -> dict[str, Any]:
    """Return the documented defaults of this module as a fresh dict."""
    return {key: value for key, value in globals().items() if key.isupper() and key[0] != "_"}


def known_keys() -> set[str]:
    """The names of every documented setting."""
    return set(defaults())


def load_settings_file(environ=os.environ) -> dict[str, Any]:
    """Read the TOML settings file (PORTAL_SETTINGS, else ./settings.toml) if there is one."""
    named = environ.get("PORTAL_SETTINGS")
    path = Path(named) if named else Path.cwd() / "settings.toml"
    if not path.exists():
        if named:
            raise ConfigError(f"PORTAL_SETTINGS: no such file {path}")
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from error


def validate(config) -> None:
    """Check every setting the portal relies on; raise ConfigError naming the first bad key."""
    _check_unknown_keys(config)
    for key in _REQUIRED_TEXT + ("LDAP_BIND_PASSWORD",):
        _require(isinstance(config.get(key), str) and config[key].strip(), key, "set a value")
    _check_urls(config.get("LDAP_URLS"))
    for key in ("LDAP_BIND_DN", "LDAP_USER_BASE", "LDAP_GROUP_BASE"):
        _require(_is_dn(config[key]), key, f"{config[key]!r} is not a DN")
    for key, (allowed, required) in _FILTER_PLACEHOLDERS.items():
        _check_filter(key, config.get(key), allowed, required)
    ca_file = config.get("LDAP_CA_FILE")
    _require(isinstance(ca_file, str), "LDAP_CA_FILE", "a file path or empty")
    _require(not ca_file or Path(ca_file).is_file(), "LDAP_CA_FILE", f"no such file {ca_file}")
    for key in ("LDAP_ATTR_USERNAME", "LDAP_ATTR_DISPLAY_NAME", "LDAP_ATTR_EMAIL"):
        _require(_is_attribute_name(config.get(key)), key, "an LDAP attribute name")
    _require(_is_attribute_name(config.get("LDAP_GROUP_NAME_ATTR")), "LDAP_GROUP_NAME_ATTR", "")
    for key in _POSITIVE_INTS:
        _require(_is_int(config.get(key)) and config[key] > 0, key, "a whole number above 0")
    for key in _GROUP_LISTS:
        _require(_is_str_list(config.get(key)), key, "a list of group names")
    _require(config["ACCESS_ALLOWED_GROUPS"], "ACCESS_ALLOWED_GROUPS", "name at least one group")
    _check_pages(config.get("PAGES"))
    _require(
        config.get("CACHE_TYPE") in ("SimpleCache", "RedisCache", "NullCache"),
        "CACHE_TYPE",
        "SimpleCache, RedisCache or NullCache",
    )
    if config["CACHE_TYPE"] == "RedisCache":
        _require(
            str(config.get("CACHE_REDIS_URL", "")).startswith(("redis://", "rediss://", "unix://")),
            "CACHE_REDIS_URL",
            "a redis:// URL when CACHE_TYPE is RedisCache",
        )
    _require(config.get("ENV") in ("production", "development"), "ENV", "production or development")
    if config["ENV"] != "development":
        _check_production(config)


def _check_production(config) -> None:
    for key in ("SECRET_KEY", "LDAP_BIND_PASSWORD"):
        _require(
            _DEV_ONLY_MARKER not in str(config.get(key)),
            key,
            "the dev-only value is refused in production; set PORTAL_" + key,
        )
    _require(len(config["SECRET_KEY"]) >= 32, "SECRET_KEY", "at least 32 random characters")
    _require(
        config.get("SESSION_COOKIE_SECURE") is True,
        "SESSION_COOKIE_SECURE",
        "must be true in production (serve the portal over HTTPS)",
    )


def _check_unknown_keys(config) -> None:
    known = known_keys()
    for key in config:
        if key.startswith(_OWN_PREFIXES) and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}?" if close else "see portal/config.py"
            raise ConfigError(f"setting {key}: unknown setting ({hint})")


def _check_urls(urls) -> None:
    _require(_is_str_list(urls) and urls, "LDAP_URLS", 'a list such as ["ldap://host:389"]')
    for url in urls:
        parts = urlsplit(url)
        try:
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            port_ok = False
        _require(
            parts.scheme.lower() in ("ldap", "ldaps")
            and parts.hostname
            and port_ok
            and parts.path in ("", "/"),
            "LDAP_URLS",
            f"{url!r} must look like ldap://host:389 or ldaps://host:636",
        )


def _check_filter(key: str, template, allowed: set[str], required: set[str]) -> None:
    _require(isinstance(template, str), key, "a filter string")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ConfigError(f"setting {key}: {error} (write a literal brace twice)") from error
    _require(
        names <= allowed,
        key,
        f"unknown placeholder {sorted(names - allowed)}; use {sorted(allowed)}",
    )
    _require(names and required <= names, key, f"must contain a placeholder from {sorted(allowed)}")
    try:
        sample = template.format_map(dict.fromkeys(names, "x"))
        parse_filter(sample, None, True, True, None, False)
    except (LDAPException, ValueError) as error:
        raise ConfigError(f"setting {key}: not a valid LDAP filter ({error})") from error


def _check_pages(pages) -> None:
    _require(isinstance(pages, list), "PAGES", "a list of tables ([[PAGES]] in TOML)")
    seen = set()
    for number, page in enumerate(pages, 1):
        where = f"PAGES[{number}]"
        _require(isinstance(page, dict), where, "a table with slug, title, groups, body")
        _require(
            isinstance(page.get("slug"), str) and _SLUG.match(page["slug"]),
            where + ".slug",
            "lower-case letters, digits and dashes",
        )
        _require(page["slug"] not in seen, where + ".slug", f"{page['slug']!r} is used twice")
        seen.add(page["slug"])
        _require(isinstance(page.get("title"), str) and page["title"], where + ".title", "a title")
        _require(
            _is_str_list(page.get("groups")) and page["groups"],
            where + ".groups",
            "a list of the groups that may open the page",
        )
        has_body = isinstance(page.get("body"), str)
        has_template = isinstance(page.get("template"), str)
        _require(has_body != has_template, where, "give exactly one of body or template")


def _require(ok, key: str, fix: str) -> None:
    if not ok:
        raise ConfigError(f"setting {key}: {fix}".rstrip(": "))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item for item in value)


def _is_dn(value: str) -> bool:
    try:
        parse_dn(value)
    except (LDAPException, ValueError):
        return False
    return True


def _is_attribute_name(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", value) is not None
