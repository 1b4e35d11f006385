"""Start-up checks of the settings: each failure names the key and how to fix it."""

from __future__ import annotations

import difflib
import ipaddress
import re
import string
from pathlib import Path
from urllib.parse import urlsplit

from ldap3.core.exceptions import LDAPException
from ldap3.operation.search import parse_filter
from ldap3.utils.dn import parse_dn

# Marker in the dev-only secrets of settings.toml; refused unless ENV is "development".
_DEV_ONLY_MARKER = "dev-only"
_POSITIVE_INTS = (
    "CACHE_REDIS_TIMEOUT",
    "CACHE_THRESHOLD",
    "LDAP_CONNECT_TIMEOUT",
    "LDAP_OPERATION_TIMEOUT",
    "LDAP_POOL_SIZE",
    "LDAP_PAGE_SIZE",
    "USER_CACHE_TTL",
    "REMEMBER_COOKIE_DAYS",
    "USERNAME_MAX_LENGTH",
    "PASSWORD_MAX_LENGTH",
)
_BOOLEANS = ("LDAP_START_TLS", "LDAP_ALLOW_CLEARTEXT", "LDAP_ANONYMOUS_SEARCH")
_ATTRIBUTES = (
    "LDAP_ATTR_USERNAME",
    "LDAP_ATTR_DISPLAY_NAME",
    "LDAP_ATTR_EMAIL",
    "LDAP_ATTR_MEMBER_OF",
    "LDAP_GROUP_NAME_ATTR",
)
_CHOICES = {
    "ENV": ("production", "development"),
    "LDAP_ACCOUNT_STATE": ("none", "ad", "ppolicy"),
    "LDAP_GROUP_MEMBERSHIP": ("search", "memberof", "both"),
    "CACHE_TYPE": ("SimpleCache", "RedisCache", "NullCache"),
    "ACCESS_DEFAULT_POLICY": ("allow", "deny"),
    "SSO_REQUEST_HEADERS": ("original", "forwarded"),
}
_GROUP_LISTS = ("ACCESS_ALLOWED_GROUPS", "ACCESS_DENIED_GROUPS", "ACCESS_ADMIN_GROUPS")
# (allowed placeholders, at least one of them required)
_FILTERS = {
    "LDAP_USER_FILTER": {"username", "login"},
    "LDAP_GROUP_FILTER": {"user_dn", "username"},
    "LDAP_GROUP_NESTED_FILTER": {"group_dn"},
}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# Keys with these prefixes are the portal's own: one that is not documented is a typo.
_OWN_PREFIXES = ("LDAP_", "ACCESS_", "USER_", "PAGES", "PASSWORD_", "SSO_")
_RULE_KEYS = {"hosts", "paths", "methods", "groups", "policy"}


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the key and how to fix it."""


def check_settings(config, known: set[str]) -> list[str]:
    """Raise ConfigError for the first wrong setting; return warnings worth logging."""
    _check_unknown_keys(config, known)
    for key, choices in _CHOICES.items():
        _require(config.get(key) in choices, key, " or ".join(choices))
    for key in _BOOLEANS:
        _require(isinstance(config.get(key), bool), key, "true or false")
    for key in _POSITIVE_INTS:
        _require(_is_int(config.get(key)) and config[key] > 0, key, "a whole number above 0")
    for key in _ATTRIBUTES:
        _require(_is_attribute_name(config.get(key)), key, "an LDAP attribute name")
    _require(_is_text(config.get("SECRET_KEY")), "SECRET_KEY", "set a value")
    warnings = _check_servers(config)
    _check_service_account(config)
    _check_people(config)
    _check_groups(config)
    _check_access(config)
    _check_pages(config.get("PAGES"))
    if config["CACHE_TYPE"] == "RedisCache":
        _require(
            str(config.get("CACHE_REDIS_URL", "")).startswith(("redis://", "rediss://", "unix://")),
            "CACHE_REDIS_URL",
            "a redis:// URL when CACHE_TYPE is RedisCache",
        )
    if config["ENV"] != "development":
        _check_production(config)
    return warnings


def _check_servers(config) -> list[str]:
    urls = config.get("LDAP_URLS")
    _require(_is_str_list(urls) and urls, "LDAP_URLS", 'a list such as ["ldaps://host:636"]')
    warnings = []
    for url in urls:
        parts = urlsplit(url)
        try:
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            port_ok = False
        scheme = parts.scheme.lower()
        _require(
            scheme in ("ldap", "ldaps") and parts.hostname and port_ok and parts.path in ("", "/"),
            "LDAP_URLS",
            f"{url!r} must look like ldap://host:389 or ldaps://host:636",
        )
        _require(
            not (scheme == "ldaps" and config["LDAP_START_TLS"]),
            "LDAP_START_TLS",
            f"{url} already uses TLS; StartTLS is for ldap:// URLs",
        )
        if scheme == "ldap" and not config["LDAP_START_TLS"] and not _is_loopback(parts.hostname):
            _require(
                config["LDAP_ALLOW_CLEARTEXT"],
                "LDAP_URLS",
                f"{url} would carry passwords in clear text: use ldaps://, set LDAP_START_TLS = "
                "true, or (on a trusted network only) LDAP_ALLOW_CLEARTEXT = true",
            )
            warnings.append(f"LDAP_ALLOW_CLEARTEXT: passwords cross the network in clear to {url}")
    ca_file = config.get("LDAP_CA_FILE")
    _require(isinstance(ca_file, str), "LDAP_CA_FILE", "a file path or empty")
    _require(not ca_file or Path(ca_file).is_file(), "LDAP_CA_FILE", f"no such file {ca_file}")
    return warnings


def _check_service_account(config) -> None:
    anonymous = config["LDAP_ANONYMOUS_SEARCH"]
    for key in ("LDAP_BIND_DN", "LDAP_BIND_PASSWORD"):
        value = config.get(key)
        _require(isinstance(value, str), key, "a string")
        if anonymous:
            _require(not value, key, "leave empty when LDAP_ANONYMOUS_SEARCH is true")
        else:
            _require(value.strip(), key, "set a value (or LDAP_ANONYMOUS_SEARCH = true)")
    if not anonymous:
        _require(_is_dn(config["LDAP_BIND_DN"]), "LDAP_BIND_DN", "a DN")


def _check_people(config) -> None:
    bases = config.get("LDAP_USER_BASE")
    bases = [bases] if isinstance(bases, str) else bases
    _require(_is_str_list(bases) and bases, "LDAP_USER_BASE", "a DN or a list of DNs")
    for base in bases:
        _require(_is_dn(base), "LDAP_USER_BASE", f"{base!r} is not a DN")
    _check_filter(config, "LDAP_USER_FILTER")
    _require(_is_str_list(config.get("LDAP_LOGIN_DOMAINS"), allow_empty=True),
             "LDAP_LOGIN_DOMAINS", 'a list such as ["corp.example", "corp"]')  # fmt: skip
    template = config.get("LDAP_USER_DN_TEMPLATE")
    _require(isinstance(template, str), "LDAP_USER_DN_TEMPLATE", "a string")
    if template:
        names = _placeholders("LDAP_USER_DN_TEMPLATE", template)
        _require(names == {"username"}, "LDAP_USER_DN_TEMPLATE", "use exactly {username}")
        if "=" in template:
            sample = template.format(username="x")
            _require(_is_dn(sample), "LDAP_USER_DN_TEMPLATE", "not a DN template")
    disabled = config.get("LDAP_DISABLED_FILTER")
    _require(isinstance(disabled, str), "LDAP_DISABLED_FILTER", "a filter or empty")
    if disabled:
        _require(not _placeholders("LDAP_DISABLED_FILTER", disabled), "LDAP_DISABLED_FILTER",
                 "takes no placeholders")  # fmt: skip
        _parse_filter("LDAP_DISABLED_FILTER", disabled)
    url = config.get("PASSWORD_CHANGE_URL")
    _require(
        isinstance(url, str) and (not url or url.startswith(("https://", "http://", "/"))),
        "PASSWORD_CHANGE_URL",
        "an https:// address or a path on this site",
    )


def _check_groups(config) -> None:
    base = config.get("LDAP_GROUP_BASE")
    _require(isinstance(base, str) and _is_dn(base), "LDAP_GROUP_BASE", f"{base!r} is not a DN")
    _check_filter(config, "LDAP_GROUP_FILTER")
    _check_filter(config, "LDAP_GROUP_NESTED_FILTER")
    depth = config.get("LDAP_GROUP_NESTING_DEPTH")
    _require(_is_int(depth) and 0 <= depth <= 10, "LDAP_GROUP_NESTING_DEPTH", "0 to 10")
    age = config.get("LDAP_PASSWORD_MAX_AGE_DAYS")
    _require(_is_int(age) and age >= 0, "LDAP_PASSWORD_MAX_AGE_DAYS", "0 or more days")


def _check_access(config) -> None:
    for key in _GROUP_LISTS:
        _require(_is_str_list(config.get(key), allow_empty=True), key, "a list of group names")
    _require(config["ACCESS_ALLOWED_GROUPS"], "ACCESS_ALLOWED_GROUPS", "name at least one group")
    rules = config.get("ACCESS_RULES")
    _require(isinstance(rules, list), "ACCESS_RULES", "a list of tables ([[ACCESS_RULES]])")
    for number, rule in enumerate(rules, 1):
        where = f"ACCESS_RULES[{number}]"
        _require(isinstance(rule, dict), where, "a table")
        _require(set(rule) <= _RULE_KEYS, where, f"unknown key {sorted(set(rule) - _RULE_KEYS)}")
        _require(rule.get("policy") in ("allow", "deny"), where + ".policy", "allow or deny")
        for key in ("hosts", "paths", "methods", "groups"):
            _require(_is_str_list(rule.get(key, []), allow_empty=True), f"{where}.{key}",
                     "a list of strings")  # fmt: skip
        for path in rule.get("paths", []):
            _require(path.startswith("/") and not set(path) & set("%?#;\\"), f"{where}.paths",
                     f"{path!r} must be a plain path starting with /")  # fmt: skip
        for host in rule.get("hosts", []):
            _require(re.fullmatch(r"[A-Za-z0-9*.-]+", host), f"{where}.hosts",
                     f"{host!r}: a host name only (no scheme, port or path)")  # fmt: skip
    portal = config.get("SSO_PORTAL_URL")
    _require(
        isinstance(portal, str) and (not portal or portal.startswith(("https://", "http://"))),
        "SSO_PORTAL_URL",
        "empty or an address such as https://portal.corp.example",
    )
    domains = config.get("SSO_ALLOWED_DOMAINS")
    _require(_is_str_list(domains, allow_empty=True) and all("/" not in d for d in domains),
             "SSO_ALLOWED_DOMAINS", 'host names such as ["wiki.corp.example"]')  # fmt: skip


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


def _check_unknown_keys(config, known: set[str]) -> None:
    for key in config:
        if key.startswith(_OWN_PREFIXES) and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}?" if close else "see portal/config.py"
            raise ConfigError(f"setting {key}: unknown setting ({hint})")


def _check_filter(config, key: str) -> None:
    template = config.get(key)
    _require(isinstance(template, str), key, "a filter string")
    allowed = _FILTERS[key]
    names = _placeholders(key, template)
    _require(
        names <= allowed,
        key,
        f"unknown placeholder {sorted(names - allowed)}; use {sorted(allowed)}",
    )
    _require(names, key, f"must contain a placeholder from {sorted(allowed)}")
    _parse_filter(key, template.format_map(dict.fromkeys(names, "x")))


def _placeholders(key: str, template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ConfigError(f"setting {key}: {error} (write a literal brace twice)") from error


def _parse_filter(key: str, text: str) -> None:
    try:
        parse_filter(text, None, True, True, None, False)
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


def _is_str_list(value, allow_empty: bool = False) -> bool:
    items_ok = isinstance(value, list) and all(isinstance(item, str) and item for item in value)
    return items_ok and (allow_empty or bool(value))


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_dn(value: str) -> bool:
    try:
        parse_dn(value)
    except (LDAPException, ValueError):
        return False
    return True


def _is_attribute_name(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", value) is not None
