"""Start-up checks of the settings: each failure names the key and how to fix it."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask

from ..cache.redis_clients import check_url, is_redis_url
from .values import (
    ConfigError,
    available_languages,
    check_apps,
    check_kept_escapes,
    check_pages,
    check_rules,
    contrast_with_white,
    is_attribute_name,
    is_dn,
    is_int,
    is_loopback,
    is_site_url,
    is_str_list,
    is_text,
    parse_filter,
    placeholders,
    require,
    require_text,
)

__all__ = ["ConfigError", "check_settings"]

_BRAND_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*\.(svg|png|webp|ico)$")
# Marker in the dev-only secrets of settings.toml; refused unless ENV is "development".
_DEV_ONLY_MARKER = "dev-only"
_POSITIVE_INTS = (
    "CACHE_REDIS_TIMEOUT",
    "CACHE_THRESHOLD",
    "LDAP_CONNECT_TIMEOUT",
    "LDAP_OPERATION_TIMEOUT",
    "LDAP_POOL_SIZE",
    "LDAP_PAGE_SIZE",
    "LDAP_BREAKER_MAX_SECONDS",
    "USER_CACHE_TTL",
    "CACHE_FALLBACK_SECONDS",
    "HEALTH_CACHE_SECONDS",
    "REMEMBER_COOKIE_DAYS",
    "SESSION_MAX_AGE_HOURS",
    "USERNAME_MAX_LENGTH",
    "PASSWORD_MAX_LENGTH",
)
_BOOLEANS = (
    "LDAP_START_TLS",
    "LDAP_ALLOW_CLEARTEXT",
    "LDAP_ANONYMOUS_SEARCH",
    "PASSWORD_SELF_SERVICE",
    # Read from PORTAL_SESSION_COOKIE_SECURE=False, this was the text "False": true to Python,
    # so a plain-HTTP trial got Secure cookies its browser then dropped without a word.
    "SESSION_COOKIE_SECURE",
)
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
    "SESSION_PROTECTION": ("basic", "strong", "off"),
}
_GROUP_LISTS = ("ACCESS_ALLOWED_GROUPS", "ACCESS_DENIED_GROUPS", "ACCESS_ADMIN_GROUPS")
# (allowed placeholders, at least one of them required)
_FILTERS = {
    "LDAP_USER_FILTER": {"username", "login"},
    "LDAP_GROUP_FILTER": {"user_dn", "username"},
    "LDAP_GROUP_NESTED_FILTER": {"group_dn"},
}
# Keys with these prefixes are the portal's own, or set by it (SESSION_, REMEMBER_, CACHE_):
# one that is neither documented nor a key Flask or its extensions read is a typo, which would
# otherwise be ignored without a word ("WATCH_INTERVALL", "[[PAGE]]", "CACHE_TYP").
_OWN_PREFIXES = (
    "LDAP_",
    "ACCESS_",
    "USER_",
    "PAGE",
    "PASSWORD_",
    "SSO_",
    "METRICS_",
    "THROTTLE_",
    "LOGIN_",
    "HSTS_",
    "WATCH_",
    "TRUSTED_",
    "CACHE_",
    "APP",
    "PORTAL_",
    "BRAND_",
    "HELP_",
    "FOOTER_",
    "SESSION_",
    "REMEMBER_",
    "HEALTH_",
    "ACCENT_",
    "LANGUAGE",
)
#: PORTAL_* variables that are the portal's own but no setting (Flask reads every PORTAL_* one).
_OWN_VARIABLES = frozenset({"SETTINGS", "DEV_PORT"})
#: How alike (difflib's ratio) an unknown key outside those prefixes and a known one must be
#: for the unknown one to be refused as a typo of it.
TYPO_LIKENESS = 0.9
# Keys under those prefixes that are not the portal's settings but are read (or set) by Flask,
# Flask-Login, Flask-Caching, or by the portal itself while it starts.
_LIBRARY_KEYS = frozenset(Flask.default_config) | {
    "CACHE_DEFAULT_TIMEOUT",
    "CACHE_OPTIONS",
    "CACHE_ARGS",
    "CACHE_IGNORE_ERRORS",
    "CACHE_SOURCE_CHECK",
    "CACHE_NO_NULL_WARNING",
    "PORTAL_STARTED_AT",
    "REMEMBER_COOKIE_NAME",
    "REMEMBER_COOKIE_DURATION",
    "REMEMBER_COOKIE_DOMAIN",
    "REMEMBER_COOKIE_PATH",
    "REMEMBER_COOKIE_SECURE",
    "REMEMBER_COOKIE_HTTPONLY",
    "REMEMBER_COOKIE_SAMESITE",
    "REMEMBER_COOKIE_REFRESH_EACH_REQUEST",
    # Flask-Login's, Flask-WTF's (the portal sets some of them) and Flask-Babel's.
    "USE_SESSION_FOR_NEXT",
    "FORCE_HOST_FOR_REDIRECTS",
    "WTF_CSRF_ENABLED",
    "WTF_CSRF_CHECK_DEFAULT",
    "WTF_CSRF_SECRET_KEY",
    "WTF_CSRF_METHODS",
    "WTF_CSRF_FIELD_NAME",
    "WTF_CSRF_HEADERS",
    "WTF_CSRF_TIME_LIMIT",
    "WTF_CSRF_SSL_STRICT",
    "WTF_CSRF_META_NAME",
    "WTF_I18N_ENABLED",
    "BABEL_DEFAULT_LOCALE",
    "BABEL_DEFAULT_TIMEZONE",
    "BABEL_TRANSLATION_DIRECTORIES",
    "BABEL_DOMAIN",
}
#: What a secret key must be, and the one command that makes one.
_RANDOM_KEY = ("at least 32 random characters, e.g. the output of "
               "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'")  # fmt: skip
# RFC 6750's token characters, so the token survives an Authorization header unchanged.
_BEARER_TOKEN = re.compile(r"^[A-Za-z0-9._~+/-]+=*$")


def check_settings(config, known: set[str]) -> list[str]:
    """Raise ConfigError for the first wrong setting; return warnings worth logging."""
    unused = _check_unknown_keys(config, known)
    for key, choices in _CHOICES.items():
        # The value given, beside the ones allowed: "Deny" is easier to see named.
        require(config.get(key) in choices, key,
                f"{config.get(key)!r} is not one of {' or '.join(choices)}")  # fmt: skip
    for key in _BOOLEANS:
        require(isinstance(config.get(key), bool), key, "true or false")
    for key in _POSITIVE_INTS:
        require(is_int(config.get(key)) and config[key] > 0, key, "a whole number above 0")
    for key in _ATTRIBUTES:
        require(is_attribute_name(config.get(key)), key, "an LDAP attribute name")
    wanted = f"set a text (as PORTAL_SECRET_KEY, outside the settings file) of {_RANDOM_KEY}"
    require(is_text(config.get("SECRET_KEY")), "SECRET_KEY", wanted)
    # A text here would be taken a character at a time, each character a signing key: anyone
    # could sign a session with "a". A list of keys, in every mode.
    fallbacks = config.get("SECRET_KEY_FALLBACKS")
    require(
        fallbacks is None or is_str_list(fallbacks, allow_empty=True),
        "SECRET_KEY_FALLBACKS",
        'a list of earlier keys, such as ["the-old-key"], or empty',
    )
    hsts = config.get("HSTS_MAX_AGE")
    require(is_int(hsts) and hsts >= 0, "HSTS_MAX_AGE", "seconds, 0 or more")
    require(
        is_int(config.get("TRUSTED_PROXY_HOPS")) and 0 <= config["TRUSTED_PROXY_HOPS"] <= 5,
        "TRUSTED_PROXY_HOPS",
        "the number of proxies in front of the portal (0 to 5)",
    )
    require(
        is_int(config.get("LOGIN_FAILURE_FLOOR_MS")) and config["LOGIN_FAILURE_FLOOR_MS"] >= 0,
        "LOGIN_FAILURE_FLOOR_MS",
        "milliseconds, 0 or more",
    )
    _check_languages(config)  # first: the texts below may be given per language
    _check_throttling(config)
    warnings = _check_servers(config)
    _check_service_account(config)
    _check_people(config)
    _check_groups(config)
    _check_access(config)
    _check_metrics(config)
    check_pages(config.get("PAGES"), config["LANGUAGES"])
    check_apps(config.get("APPS"), config["LANGUAGES"])
    _check_brand(config)
    if config["CACHE_TYPE"] == "RedisCache":
        url = config.get("CACHE_REDIS_URL", "")
        require(
            is_redis_url(url),
            "CACHE_REDIS_URL",
            "a redis://, rediss:// or redis+sentinel:// URL when CACHE_TYPE is RedisCache",
        )
        _check_redis_url("CACHE_REDIS_URL", url)
    _check_ca_file(config, "CACHE_REDIS_CA_FILE")
    if config["ENV"] != "development":
        _check_production(config)
        if config["CACHE_TYPE"] != "RedisCache":
            # SECURITY.md's known limit, said where an administrator sees it.
            warnings.append(
                f"CACHE_TYPE {config['CACHE_TYPE']}: sign-outs and revocations are kept in this "
                "process only, so a restart lets every login ended since it started work again "
                'until it expires; CACHE_TYPE = "RedisCache" (with appendonly) keeps them'
            )
    for key in unused:
        warnings.append(
            f"{key}: no setting of the portal, Flask or its extensions has this name, so it "
            "does nothing (the portal's: portal/settings/defaults.py)"
        )
    return warnings


def _check_throttling(config) -> None:
    from limits import parse_many

    for key in ("THROTTLE_ACCOUNT_LIMIT", "THROTTLE_IP_LIMIT"):
        try:
            valid = is_text(config.get(key)) and bool(parse_many(config[key]))
        except ValueError:
            valid = False
        require(valid, key, 'a limit such as "5 per 15 minutes"')
    url = config.get("THROTTLE_STORAGE_URL")
    in_memory = isinstance(url, str) and (url == "" or url.startswith("memory://"))
    require(
        in_memory or is_redis_url(url),
        "THROTTLE_STORAGE_URL",
        "empty, memory://, or a redis://, rediss:// or redis+sentinel:// URL",
    )
    if not in_memory:
        _check_redis_url("THROTTLE_STORAGE_URL", url)


def _check_redis_url(key: str, url: str) -> None:
    try:
        check_url(url)
    except ValueError as error:
        raise ConfigError(f"setting {key}: {error}") from error


def _check_servers(config) -> list[str]:
    urls = config.get("LDAP_URLS")
    require(is_str_list(urls) and urls, "LDAP_URLS", 'a list such as ["ldaps://host:636"]')
    warnings = []
    for url in urls:
        parts = urlsplit(url)
        try:
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            port_ok = False
        scheme = parts.scheme.lower()
        require(
            scheme in ("ldap", "ldaps") and parts.hostname and port_ok and parts.path in ("", "/"),
            "LDAP_URLS",
            f"{url!r} must look like ldap://host:389 or ldaps://host:636",
        )
        require(
            not (scheme == "ldaps" and config["LDAP_START_TLS"]),
            "LDAP_START_TLS",
            f"{url} already uses TLS; StartTLS is for ldap:// URLs",
        )
        if scheme == "ldap" and not config["LDAP_START_TLS"] and not is_loopback(parts.hostname):
            require(
                config["LDAP_ALLOW_CLEARTEXT"],
                "LDAP_URLS",
                f"{url} would carry passwords in clear text: use ldaps://, set LDAP_START_TLS = "
                "true, or (on a trusted network only) LDAP_ALLOW_CLEARTEXT = true",
            )
            warnings.append(f"LDAP_ALLOW_CLEARTEXT: passwords cross the network in clear to {url}")
    encrypted = config["LDAP_START_TLS"] or all(url.lower().startswith("ldaps://") for url in urls)
    if (
        config.get("LDAP_ACCOUNT_STATE") == "ad"
        and config.get("PASSWORD_SELF_SERVICE")
        and (not encrypted)
    ):
        # Else people type three passwords into /password only to be refused.
        warnings.append("PASSWORD_SELF_SERVICE: Active Directory changes passwords only over "
                        "LDAPS or StartTLS, which LDAP_URLS and LDAP_START_TLS do not give, so "
                        "/password refuses every change: use TLS, or set PASSWORD_SELF_SERVICE "
                        "= false (PASSWORD_CHANGE_URL is offered instead)")  # fmt: skip
    _check_ca_file(config, "LDAP_CA_FILE")
    return warnings


def _check_ca_file(config, key: str) -> None:
    # A file that is no CA certificate (a key, a certificate request, DER bytes) failed only
    # at the first connection, in the TLS library's words.
    ca_file = config.get(key)
    require(isinstance(ca_file, str), key, "a file path or empty")
    if not ca_file:
        return
    require(Path(ca_file).is_file(), key, f"no such file {ca_file}")
    try:
        ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)
        raise ConfigError(f"setting {key}: {ca_file} holds no CA certificate the TLS library "
                          f"can read ({reason}): give the PEM file of the CA that signed the "
                          "server's certificate") from None  # fmt: skip


def _check_service_account(config) -> None:
    anonymous = config["LDAP_ANONYMOUS_SEARCH"]
    for key in ("LDAP_BIND_DN", "LDAP_BIND_PASSWORD"):
        value = config.get(key)
        require(isinstance(value, str), key, "a string")
        if anonymous:
            require(not value, key, "leave empty when LDAP_ANONYMOUS_SEARCH is true")
        else:
            require(value.strip(), key, "set a value (or LDAP_ANONYMOUS_SEARCH = true)")
    if not anonymous:
        require(
            is_dn(config["LDAP_BIND_DN"]),
            "LDAP_BIND_DN",
            f"{config['LDAP_BIND_DN']!r} is not a DN (such as cn=reader,dc=corp,dc=example)",
        )


def _check_people(config) -> None:
    bases = config.get("LDAP_USER_BASE")
    bases = [bases] if isinstance(bases, str) else bases
    require(is_str_list(bases) and bases, "LDAP_USER_BASE", "a DN or a list of DNs")
    for base in bases:
        require(is_dn(base), "LDAP_USER_BASE", f"{base!r} is not a DN")
    _check_filter(config, "LDAP_USER_FILTER")
    require(is_str_list(config.get("LDAP_LOGIN_DOMAINS"), allow_empty=True),
             "LDAP_LOGIN_DOMAINS", 'a list such as ["corp.example", "corp"]')  # fmt: skip
    template = config.get("LDAP_USER_DN_TEMPLATE")
    require(isinstance(template, str), "LDAP_USER_DN_TEMPLATE", "a string")
    if template:
        names = placeholders("LDAP_USER_DN_TEMPLATE", template)
        require(names == {"username"}, "LDAP_USER_DN_TEMPLATE", "use exactly {username}")
        if "=" in template:
            sample = template.format(username="x")
            require(is_dn(sample), "LDAP_USER_DN_TEMPLATE", "not a DN template")
    disabled = config.get("LDAP_DISABLED_FILTER")
    require(isinstance(disabled, str), "LDAP_DISABLED_FILTER", "a filter or empty")
    if disabled:
        require(not placeholders("LDAP_DISABLED_FILTER", disabled), "LDAP_DISABLED_FILTER",
                 "takes no placeholders")  # fmt: skip
        parse_filter("LDAP_DISABLED_FILTER", disabled)
    # Where people type passwords or look for help: https, as the portal itself (a plain
    # http:// address is taken while trying the portal out in development).
    secure = config["ENV"] != "development"
    for key in ("PASSWORD_CHANGE_URL", "PASSWORD_RESET_URL", "HELP_URL"):
        url = config.get(key)
        fix = f"{url!r}: an https:// address or a path on this site (no \\, spaces or //)"
        require(url == "" or is_site_url(url, https_only=secure), key, fix)
    for key in ("HELP_TEXT", "HELP_LINK_TEXT", "PASSWORD_RULES"):
        require_text(config.get(key), key, config["LANGUAGES"], "text")


def _check_brand(config) -> None:
    languages = config["LANGUAGES"]
    require_text(config.get("PORTAL_NAME"), "PORTAL_NAME", languages,
                 'the portal\'s name, e.g. "Acme intranet"', required=True)  # fmt: skip
    brand_dir = config.get("BRAND_DIR")
    is_folder = isinstance(brand_dir, str) and (not brand_dir or Path(brand_dir).is_dir())
    require(is_folder, "BRAND_DIR",
            f"{brand_dir!r} is not a folder (it holds templates/ and static/)")  # fmt: skip
    for key in ("PORTAL_LOGO", "PORTAL_FAVICON"):
        name = config.get(key)
        plain = isinstance(name, str) and (not name or bool(_BRAND_FILE.match(name)))
        require(plain and ".." not in name, key,
                f"{name!r}: a file name in the static folder, such as logo.svg")  # fmt: skip
    colour = config.get("ACCENT_COLOUR")
    require(isinstance(colour, str) and (not colour or re.fullmatch(r"#[0-9A-Fa-f]{6}", colour)),
             "ACCENT_COLOUR", f"{colour!r}: a colour such as \"#2457c5\"")  # fmt: skip
    if colour:
        ratio = contrast_with_white(colour)
        require(ratio >= 4.5, "ACCENT_COLOUR",
                 f"{colour} is too light for the white text on buttons (contrast {ratio:.1f}:1, "
                 "at least 4.5:1 is needed to be readable): choose a darker shade")  # fmt: skip
    require_text(config.get("FOOTER_TEXT"), "FOOTER_TEXT", languages, "text")
    links = config.get("FOOTER_LINKS")
    require(isinstance(links, list), "FOOTER_LINKS", "a list of tables with title and url")
    for number, link in enumerate(links, 1):
        where = f"FOOTER_LINKS[{number}]"
        require(isinstance(link, dict) and set(link) == {"title", "url"}
                and is_site_url(link["url"], https_only=config["ENV"] != "development"), where,
                "a table with a title and an https:// url (or a path on this site)")  # fmt: skip
        require_text(link["title"], where + ".title", languages, "the link's text", required=True)


def _check_languages(config) -> None:
    languages = config.get("LANGUAGES")
    require(is_str_list(languages) and languages, "LANGUAGES", 'a list such as ["en", "de"]')
    known = available_languages()
    unknown = [language for language in languages if language not in known]
    available = ", ".join(sorted(known))
    require(not unknown, "LANGUAGES",
            f"no translation for {', '.join(unknown)} (available: {available})")  # fmt: skip


def _check_groups(config) -> None:
    base = config.get("LDAP_GROUP_BASE")
    require(isinstance(base, str) and is_dn(base), "LDAP_GROUP_BASE", f"{base!r} is not a DN")
    _check_filter(config, "LDAP_GROUP_FILTER")
    _check_filter(config, "LDAP_GROUP_NESTED_FILTER")
    depth = config.get("LDAP_GROUP_NESTING_DEPTH")
    require(is_int(depth) and 0 <= depth <= 10, "LDAP_GROUP_NESTING_DEPTH", "0 to 10")
    grace = config.get("USER_STALE_GRACE")
    require(is_int(grace) and grace >= 0, "USER_STALE_GRACE", "seconds, 0 or more")
    deadline = config.get("LDAP_LOGIN_DEADLINE")
    require(is_int(deadline) and deadline >= 0, "LDAP_LOGIN_DEADLINE",
             "whole seconds, 0 for LDAP_OPERATION_TIMEOUT + 1")  # fmt: skip
    age = config.get("LDAP_PASSWORD_MAX_AGE_DAYS")
    require(is_int(age) and age >= 0, "LDAP_PASSWORD_MAX_AGE_DAYS", "0 or more days")
    policy = config.get("LDAP_PASSWORD_POLICY_DN")
    require(isinstance(policy, str) and (not policy or is_dn(policy)), "LDAP_PASSWORD_POLICY_DN",
            f"{policy!r} is not a DN")  # fmt: skip
    interval = config.get("WATCH_INTERVAL")
    is_seconds = isinstance(interval, (int, float)) and not isinstance(interval, bool)
    require(is_seconds and 0 <= interval <= 3600, "WATCH_INTERVAL", "seconds, 0 for off")
    warn = config.get("PASSWORD_WARN_DAYS")
    require(is_int(warn) and warn >= 0, "PASSWORD_WARN_DAYS", "0 or more days")


def _check_access(config) -> None:
    for key in _GROUP_LISTS:
        require(is_str_list(config.get(key), allow_empty=True), key, "a list of group names")
    require(config["ACCESS_ALLOWED_GROUPS"], "ACCESS_ALLOWED_GROUPS", "name at least one group")
    check_rules(config.get("ACCESS_RULES"))
    check_kept_escapes(config.get("ACCESS_KEPT_ESCAPES"))
    portal = config.get("SSO_PORTAL_URL")
    require(
        isinstance(portal, str) and (not portal or portal.startswith(("https://", "http://"))),
        "SSO_PORTAL_URL",
        "empty or an address such as https://portal.corp.example",
    )
    require(
        is_str_list(config.get("SSO_FORWARDED_GROUPS"), allow_empty=True),
        "SSO_FORWARDED_GROUPS",
        'a list of group names or patterns such as ["app-*"]',
    )
    bound = config.get("SSO_IDENTITY_HEADERS_MAX_BYTES")
    require(
        isinstance(bound, int) and not isinstance(bound, bool) and bound >= 0,
        "SSO_IDENTITY_HEADERS_MAX_BYTES",
        "a number of bytes such as 8000 (0: no bound)",
    )
    domains = config.get("SSO_ALLOWED_DOMAINS")
    require(is_str_list(domains, allow_empty=True) and all("/" not in d for d in domains),
             "SSO_ALLOWED_DOMAINS", 'host names such as ["wiki.corp.example"]')  # fmt: skip


def _check_metrics(config) -> None:
    networks = config.get("METRICS_ALLOWED_NETWORKS")
    require(is_str_list(networks, allow_empty=True), "METRICS_ALLOWED_NETWORKS",
             'a list of networks such as ["127.0.0.0/8", "10.0.0.0/8"]')  # fmt: skip
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as error:
            raise ConfigError(f"setting METRICS_ALLOWED_NETWORKS: {error}") from error
    token = config.get("METRICS_BEARER_TOKEN")
    require(
        isinstance(token, str) and (not token or (len(token) >= 16 and _BEARER_TOKEN.match(token))),
        "METRICS_BEARER_TOKEN",
        "empty, or at least 16 letters, digits and - . _ ~ + / characters",
    )


def _could_be_random(key: str) -> bool:
    # Long enough, and not one or a few characters repeated ("x" * 48, "abab..."): randomness
    # cannot be told from the text, but a random key of 32 characters never has fewer than 5
    # different ones (Django's check draws the same line).
    return len(key) >= 32 and len(set(key)) >= 5


def _check_production(config) -> None:
    for key in ("SECRET_KEY", "LDAP_BIND_PASSWORD"):
        require(
            _DEV_ONLY_MARKER not in str(config.get(key)).lower(),
            key,
            "the dev-only value is refused in production; set PORTAL_" + key,
        )
    require(
        _could_be_random(config["SECRET_KEY"]),
        "SECRET_KEY",
        _RANDOM_KEY,
    )
    # A cookie signed with any fallback key is accepted: a published one (the development or
    # compose key, moved there by a rotation) would let anyone sign themselves in as anyone.
    for fallback in config.get("SECRET_KEY_FALLBACKS") or ():
        require(
            _DEV_ONLY_MARKER not in str(fallback).lower() and _could_be_random(str(fallback)),
            "SECRET_KEY_FALLBACKS",
            "each an earlier production key (at least 32 random characters), never a dev-only one",
        )
    require(
        config.get("SESSION_COOKIE_SECURE") is True,
        "SESSION_COOKIE_SECURE",
        "must be true in production (serve the portal over HTTPS)",
    )


def _check_unknown_keys(config, known: set[str]) -> list[str]:
    # Refuses a key that is surely a typo; returns the other unknown keys of the settings file,
    # which do nothing (PORTAL_* variables of other software, such as the PORTAL_SERVICE_HOST
    # and PORTAL_PORT a container platform sets for a service named "portal", are left alone).
    every = known | _LIBRARY_KEYS
    from_environment = {name[len("PORTAL_") :] for name in os.environ if name.startswith("PORTAL_")}
    unused = []
    for key in config:
        if key in every or key in _OWN_VARIABLES:
            continue
        if f"PORTAL_{key}" in known:
            # PORTAL_NAME in the environment sets NAME: the variable needs the prefix twice.
            where = (f"as a variable, PORTAL_{key} sets {key}; the setting PORTAL_{key} is "
                     f"PORTAL_PORTAL_{key}" if key in from_environment
                     else f"did you mean PORTAL_{key}?")  # fmt: skip
            raise ConfigError(f"setting {key}: unknown setting ({where})")
        if key.startswith(_OWN_PREFIXES):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}?" if close else "see portal/settings/defaults.py"
            raise ConfigError(f"setting {key}: unknown setting ({hint})")
        # Outside the portal's prefixes a key may be another extension's: only one a letter or
        # two off a known name is taken for its typo ("SESION_COOKIE_SECURE").
        close = difflib.get_close_matches(key, every, n=1, cutoff=TYPO_LIKENESS)
        if close:
            raise ConfigError(f"setting {key}: unknown setting (did you mean {close[0]}?)")
        if key not in from_environment:
            unused.append(key)
    return unused


def _check_filter(config, key: str) -> None:
    template = config.get(key)
    require(isinstance(template, str), key, "a filter string")
    allowed = _FILTERS[key]
    names = placeholders(key, template)
    require(
        names <= allowed,
        key,
        f"unknown placeholder {sorted(names - allowed)}; use {sorted(allowed)}",
    )
    require(names, key, f"must contain a placeholder from {sorted(allowed)}")
    parse_filter(key, template.format_map(dict.fromkeys(names, "x")))
