"""Value checks shared by the settings checks: each failure raises ConfigError naming the key."""

from __future__ import annotations

import ipaddress
import re
import string
from pathlib import Path
from urllib.parse import urlsplit

from ldap3.core.exceptions import LDAPException
from ldap3.operation.search import MATCH_SUBSTRING
from ldap3.operation.search import parse_filter as ldap3_parse_filter
from ldap3.utils.dn import parse_dn

from .texts import text_problem

#: How deep an LDAP filter setting may nest: deeper ones are no directory's need, and ldap3's
#: encoder gives up (a RecursionError) not far beyond.
MAX_FILTER_DEPTH = 50

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_RULE_KEYS = {"hosts", "paths", "methods", "groups", "policy"}
_PAGE_KEYS = {"slug", "title", "groups", "body", "template"}
_APP_KEYS = {"title", "url", "description", "icon", "category", "groups"}
_ICON = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.(svg|png|webp)$")
# "/", ".", "\\", "%", ";", NUL, "?" and "#": escapes that change a path's structure when decoded.
_STRUCTURAL_ESCAPES = {"%2F", "%2E", "%5C", "%25", "%3B", "%00", "%3F", "%23"}


#: The folder of the catalogs (translations/<language>/LC_MESSAGES/messages.mo).
TRANSLATIONS = Path(__file__).resolve().parents[1] / "translations"


def available_languages() -> set[str]:
    """English (the source language) and every language with a compiled catalog."""
    return {"en"} | {path.parts[-3] for path in TRANSLATIONS.glob("*/LC_MESSAGES/messages.mo")}


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the key and how to fix it."""


def placeholders(key: str, template: str) -> set[str]:
    """The {placeholder} names a template uses."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ConfigError(f"setting {key}: {error} (write a literal brace twice)") from error


def parse_filter(key: str, text: str) -> None:
    """Raise ConfigError unless text parses as an LDAP filter that can be sent."""
    try:
        tree = ldap3_parse_filter(text, None, True, True, None, False)
    except (LDAPException, ValueError) as error:
        raise ConfigError(f"setting {key}: not a valid LDAP filter ({error})") from error
    # Parsed, but not every parsed filter can be sent, and each refusal would come at every
    # sign-in (a 503 each time): say so now.
    nodes = [(tree.elements[0], 1)]
    while nodes:
        node, depth = nodes.pop()
        if depth > MAX_FILTER_DEPTH:
            raise ConfigError(f"setting {key}: an LDAP filter nested more than "
                              f"{MAX_FILTER_DEPTH} levels deep")  # fmt: skip
        nodes += [(inner, depth + 1) for inner in node.elements]
        assertion = node.assertion or {}
        if node.tag == MATCH_SUBSTRING and not any(
            assertion.get(part) for part in ("initial", "any", "final")
        ):
            attribute = assertion.get("attr", "")
            raise ConfigError(
                f"setting {key}: ({attribute}=**) or ({attribute}= *) in the LDAP filter is a "
                f"substring match without a substring, which cannot be sent; a presence test "
                f"is written ({attribute}=*)"
            )


def check_pages(pages, languages: list[str]) -> None:
    """Check PAGES: tables with a unique slug, a title, groups, and a body or template (title
    and body may be given per language, see texts.py)."""
    require(isinstance(pages, list), "PAGES", "a list of tables ([[PAGES]] in TOML)")
    seen = set()
    for number, page in enumerate(pages, 1):
        where = f"PAGES[{number}]"
        require(isinstance(page, dict), where, "a table with slug, title, groups, body")
        require(set(page) <= _PAGE_KEYS, where, f"unknown key {sorted(set(page) - _PAGE_KEYS)} "
                f"(known: {', '.join(sorted(_PAGE_KEYS))})")  # fmt: skip
        require(
            isinstance(page.get("slug"), str) and _SLUG.match(page["slug"]),
            where + ".slug",
            "lower-case letters, digits and dashes",
        )
        require(page["slug"] not in seen, where + ".slug", f"{page['slug']!r} is used twice")
        seen.add(page["slug"])
        require_text(page.get("title"), where + ".title", languages, "a title", required=True)
        require(
            is_str_list(page.get("groups")) and page["groups"],
            where + ".groups",
            "a list of the groups that may open the page",
        )
        has_template = isinstance(page.get("template"), str)
        require(("body" in page) != has_template, where, "give exactly one of body or template")
        if "body" in page:
            require_text(page["body"], where + ".body", languages, "text")


def check_apps(apps, languages: list[str]) -> None:
    """Check APPS: tables with a title and an http(s) or portal-relative url, and optionally a
    description, an icon file name, a category and groups (title, description and category
    may be given per language, see texts.py)."""
    require(isinstance(apps, list), "APPS", "a list of tables ([[APPS]] in TOML)")
    for number, app in enumerate(apps, 1):
        where = f"APPS[{number}]"
        require(isinstance(app, dict), where, "a table with title and url")
        require(set(app) <= _APP_KEYS, where, f"unknown key {sorted(set(app) - _APP_KEYS)} "
                f"(known: {', '.join(sorted(_APP_KEYS))})")  # fmt: skip
        require_text(app.get("title"), where + ".title", languages,
                     "the name people know the app by", required=True)  # fmt: skip
        url = app.get("url")
        require(is_site_url(url), where + ".url",
                 f"{url!r}: an http(s):// address, or a path on the portal's host such as "
                 '"/app/wiki/"')  # fmt: skip
        path = urlsplit(url).path or "/"
        require(is_canonical_path(path), where + ".url",
                f"{url!r}: write the path as browsers send it (no %-escapes, dot segments, "
                "\";\", spaces or characters such as | and { })")  # fmt: skip
        for key in ("description", "category"):
            require_text(app.get(key, ""), f"{where}.{key}", languages, "text")
        icon = app.get("icon", "")
        require(icon == "" or (isinstance(icon, str) and _ICON.match(icon)), where + ".icon",
                 f"{icon!r}: a file name in static/icons/, such as wiki.svg")  # fmt: skip
        require(is_str_list(app.get("groups", []), allow_empty=True), where + ".groups",
                 "a list of groups (empty: whoever the access rules let in)")  # fmt: skip


def contrast_with_white(colour: str) -> float:
    """WCAG 2 contrast ratio of white text on a #rrggbb colour (AA needs 4.5 for text)."""
    channels = [int(colour[index : index + 2], 16) / 255 for index in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


# An address a link may hold: http(s) with a plain host, or a path on this site. Nothing a
# browser would read differently: no "\\", no white space or control characters, and a path
# never starts "//" or "/\\" (both name another host to a browser).
_WEB_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][!-~]*)?")
_SITE_PATH = re.compile(r"/(?![/\\])[!-~]*")
# A launcher path a browser sends as written: no escape, dot segment, ";" or character that
# browsers escape; else the launcher and /auth/verify could judge two different paths.
_CANONICAL_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,=:@/-]*")
_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)|//")


def is_site_url(url, https_only: bool = False) -> bool:
    """An http(s) address (https only, with `https_only`) or a path on this site that every
    browser reads as the same place."""
    return (
        isinstance(url, str)
        and "\\" not in url
        and not (https_only and url.lower().startswith("http://"))
        and bool(_WEB_URL.fullmatch(url) or _SITE_PATH.fullmatch(url))
    )


def is_canonical_path(path: str) -> bool:
    """A URL path a browser sends exactly as written (see _CANONICAL_PATH)."""
    return bool(_CANONICAL_PATH.fullmatch(path)) and not _DOT_SEGMENT.search(path)


def check_kept_escapes(escapes) -> None:
    """Check ACCESS_KEPT_ESCAPES: escapes such as "%20" or "%C3", none of which an app reads
    as a path separator, a dot, a backslash, a "%", a ";" or a control character."""
    require(is_str_list(escapes, allow_empty=True), "ACCESS_KEPT_ESCAPES", 'a list such as ["%20"]')
    for escape in escapes:
        require(re.fullmatch(r"%[0-9A-Fa-f]{2}", escape), "ACCESS_KEPT_ESCAPES",
                 f"{escape!r} is not an escape such as %20")  # fmt: skip
        byte = int(escape[1:], 16)
        require(
            escape.upper() not in _STRUCTURAL_ESCAPES and 0x20 <= byte != 0x7F,
            "ACCESS_KEPT_ESCAPES",
            f"{escape} changes how apps read a path: it cannot be kept",
        )


def require(ok, key: str, fix: str) -> None:
    """Raise ConfigError for key with the fix when ok is false."""
    if not ok:
        raise ConfigError(f"setting {key}: {fix}".rstrip(": "))


def require_text(value, key: str, languages: list[str], wanted: str,
                 required: bool = False) -> None:  # fmt: skip
    """Raise ConfigError for key unless value is a text or a table of texts per language."""
    problem = text_problem(value, languages, available_languages(), wanted, required)
    require(problem is None, key, problem or "")


def is_int(value) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_str_list(value, allow_empty: bool = False) -> bool:
    """A list of non-empty strings (non-empty itself unless allow_empty)."""
    items_ok = isinstance(value, list) and all(isinstance(item, str) and item for item in value)
    return items_ok and (allow_empty or bool(value))


def is_text(value) -> bool:
    """A string with something besides white space."""
    return isinstance(value, str) and bool(value.strip())


def is_loopback(host: str) -> bool:
    """localhost or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_dn(value: str) -> bool:
    """Text that parses as a DN."""
    try:
        parse_dn(value)
    except (LDAPException, ValueError):
        return False
    return True


def is_attribute_name(value) -> bool:
    """A plausible LDAP attribute name."""
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", value) is not None


def check_rules(rules) -> None:
    """Check ACCESS_RULES: a list of tables with known keys, a policy, plain hosts and paths."""
    require(isinstance(rules, list), "ACCESS_RULES", "a list of tables ([[ACCESS_RULES]])")
    for number, rule in enumerate(rules, 1):
        where = f"ACCESS_RULES[{number}]"
        require(isinstance(rule, dict), where, "a table")
        require(set(rule) <= _RULE_KEYS, where, f"unknown key {sorted(set(rule) - _RULE_KEYS)} "
                f"(known: {', '.join(sorted(_RULE_KEYS))})")  # fmt: skip
        require(rule.get("policy") in ("allow", "deny"), where + ".policy",
                f'{rule.get("policy")!r}: "allow" or "deny", in lower case')  # fmt: skip
        for key in ("hosts", "paths", "methods", "groups"):
            require(is_str_list(rule.get(key, []), allow_empty=True), f"{where}.{key}",
                     "a list of strings")  # fmt: skip
        for path in rule.get("paths", []):
            # Paths are compared as apps read them (portal.access.rules.app_path): a rule path
            # that no such path can equal would silently never match.
            plain = path.isascii() and path.isprintable() and not set(path) & set(" %?#;\\")
            require(plain and path.startswith("/"), f"{where}.paths",
                     f"{path!r} must be a plain path starting with /")  # fmt: skip
            # A path is a prefix, never a pattern: "/app/wiki/*" would match only a path
            # with a "*" in it, so the rule would never apply.
            require("*" not in path, f"{where}.paths", f"{path!r}: paths are prefixes, with no "
                    f"wildcards: {path.split('*')[0].rstrip('/') or '/'!r} covers everything "
                    "under it")  # fmt: skip
        for host in rule.get("hosts", []):
            require(re.fullmatch(r"[A-Za-z0-9*.-]+", host) or _is_ipv6(host.strip("[]")),
                    f"{where}.hosts", f"{host!r}: a host name or address only (no scheme, "
                    "port or path)")  # fmt: skip
            # "*" only as the first label: "*corp.example" would also match evilcorp.example.
            require("*" not in host.removeprefix("*.") and host.strip("*.") != "",
                    f"{where}.hosts",
                    f"{host!r}: the only wildcard is a first label \"*.\", as in "
                    "\"*.corp.example\" (its subdomains)")  # fmt: skip


def _is_ipv6(text: str) -> bool:
    # An IPv6 address, without a zone id (no Host carries one).
    try:
        return "%" not in text and ipaddress.IPv6Address(text) is not None
    except ValueError:
        return False
