"""The question a forward-auth proxy asks, and the identity answered: plain functions, no Flask.

Shared by the /auth/verify view and the portal's fast path (portal/web/fastpath.py), which must
read a question and write an answer exactly alike.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass
from functools import lru_cache

from ..web.request_guard import host_name, usable_host

log = logging.getLogger(__name__)
#: A method as HTTP defines one (a token), of a length methods have: anything else is no
#: request a proxy forwarded, and would only fill the memo of access decisions.
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")


@dataclass(frozen=True)
class Original:
    """The request the proxy is asking about."""

    method: str
    url: str
    host: str
    path: str


def read_original(header, family: str) -> Original | None:
    """The request a proxy asks about, from the header family `family` ("original" or
    "forwarded"; `header(name)` gives a header's value or None); None if unusable.

    The URL is split by hand, not by a URL parser: a host that carries "#", "?", "@" or "/"
    ("GET /app/engineering/" with "Host: x#") would otherwise move the real path into a
    fragment or query and leave "/" to be judged, while the app serves the real one. The host
    must be a plain host name (optionally with a port) and the rest a path, and the method an
    HTTP method.
    """
    method, scheme, host, target = _parts(header, family)
    if not _METHOD.fullmatch(method) or scheme.lower() not in ("http", "https"):
        return None
    if not target.startswith("/") or not usable_host(host):
        return None
    # The host judged is the one usable_host checked, read the same way (never by a URL
    # parser, which may see another host in the same text).
    return Original(method.upper(), f"{scheme}://{host}{target}", host_name(host), target)


def why_unusable(header, family: str) -> str:
    """Why read_original found the question unusable, naming the header (never its value,
    which anyone may send): for the log of a proxy that is set up wrong."""
    method, scheme, host, target = _parts(header, family)
    names = REQUIRED_HEADERS[family]
    missing = [name for name in names if not header(name)]
    if missing:
        return " and ".join(missing) + (" is" if len(missing) == 1 else " are") + " missing"
    url = names[-1]  # "original": everything but the method is in X-Original-URL
    if not _METHOD.fullmatch(method):
        return f"{names[0]} is not an HTTP method"
    if scheme.lower() not in ("http", "https"):
        return f"{'X-Forwarded-Proto' if family == 'forwarded' else url} is neither http nor https"
    if not target.startswith("/"):
        return f"{url} holds no path"
    if not usable_host(host):
        return f"the host in {names[1]} is not a plain host name (and port)"
    return "it is usable"


#: The headers each family needs (X-Forwarded-Proto may be left out: https is assumed).
REQUIRED_HEADERS = {
    "forwarded": ("X-Forwarded-Method", "X-Forwarded-Host", "X-Forwarded-Uri"),
    "original": ("X-Original-Method", "X-Original-URL"),
}


def _parts(header, family: str) -> tuple[str, str, str, str]:
    # (method, scheme, host, path and query) as the proxy sent them, unchecked.
    if family == "forwarded":
        proto = header("X-Forwarded-Proto")
        return (header("X-Forwarded-Method") or "", "https" if proto is None else proto,
                header("X-Forwarded-Host") or "", header("X-Forwarded-Uri") or "")  # fmt: skip
    scheme, _, rest = (header("X-Original-URL") or "").partition("://")
    host, slash, target = rest.partition("/")
    return header("X-Original-Method") or "", scheme, host, slash + target


def identity_settings(config) -> tuple[tuple[str, ...], int]:
    """What identity_of needs of the settings (read once: the fast path keeps it)."""
    return tuple(config["SSO_FORWARDED_GROUPS"]), config["SSO_IDENTITY_HEADERS_MAX_BYTES"]


def identity_of(user, settings: tuple[tuple[str, ...], int]) -> tuple | None:
    """The Remote-* headers of a signed-in User, or None when they would be larger than
    SSO_IDENTITY_HEADERS_MAX_BYTES (the apps are then closed to the person)."""
    return identity_headers(user.username, user.display_name, user.email, user.groups, *settings)


@lru_cache(maxsize=4096)
def identity_headers(username: str, name: str, email: str, groups: tuple[str, ...],
                     forwarded: tuple[str, ...] = (),
                     max_bytes: int = 0) -> tuple | None:  # fmt: skip
    """The Remote-* headers of a person, cleaned for a header (computed once per person).

    Remote-Groups lists the groups matching a pattern of `forwarded` (all when it is empty).
    None when the four values take more than `max_bytes` (0: no bound): past the proxy's
    buffer for an answer's headers (nginx: 16 KB) the person got a 500 on every app, and
    apps' servers refuse a header field of more than about 8 KB. Closed, not cut short: an
    app may read a group as a refusal, which a shortened list would leave out.
    """
    headers = (
        ("Remote-User", header_value(username)),
        ("Remote-Groups", header_value(",".join(_listable(_forwarded(groups, forwarded))))),
        ("Remote-Name", header_value(name)),
        ("Remote-Email", header_value(email)),
    )
    size = sum(len(value) for _, value in headers)  # latin-1 text: a character is a byte
    if max_bytes and size > max_bytes:
        log.warning("the apps are closed to %s: their identity headers would take %d bytes, "
                    "more than SSO_IDENTITY_HEADERS_MAX_BYTES (%d); list the groups the apps "
                    "read in SSO_FORWARDED_GROUPS (Remote-Groups: %d bytes, %d groups)",
                    username, size, max_bytes, len(headers[1][1]), len(groups))  # fmt: skip
        return None
    return headers


def _forwarded(groups: tuple[str, ...], patterns: tuple[str, ...]) -> tuple[str, ...]:
    # Names or shell-style patterns ("app-*"), matched without regard to case, as group
    # names are everywhere else in the portal.
    if not patterns:
        return groups
    wanted = re.compile("|".join(fnmatch.translate(pattern.casefold()) for pattern in patterns))
    return tuple(group for group in groups if wanted.fullmatch(group.casefold()))


def header_value(text: str) -> str:
    """Text safe for a response header: no control characters; UTF-8 carried byte for byte."""
    cleaned = "".join(char for char in text if ord(char) >= 0x20 and ord(char) != 0x7F)
    return cleaned.encode("utf-8").decode("latin-1")


def _listable(groups) -> list[str]:
    # Apps split Remote-Groups on commas: a group named "Sales, portal-admins" must not read
    # as two groups, so such names are left out (and logged).
    for group in groups:
        if "," in group:
            log.warning("group %r left out of Remote-Groups: its name has a comma", group)
    return [group for group in groups if "," not in group]
