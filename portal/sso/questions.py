"""The question a forward-auth proxy asks, and the identity answered: plain functions, no Flask.

Shared by the /auth/verify view and the portal's fast path (portal/web/fastpath.py), which must
read a question and write an answer exactly alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from ..web.request_guard import usable_host

log = logging.getLogger(__name__)


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
    must be a plain host name (optionally with a port) and the rest a path.
    """
    if family == "forwarded":
        method = header("X-Forwarded-Method") or ""
        host = header("X-Forwarded-Host") or ""
        target = header("X-Forwarded-Uri") or ""
        proto = header("X-Forwarded-Proto")
        scheme = "https" if proto is None else proto
    else:
        method = header("X-Original-Method") or ""
        scheme, _, rest = (header("X-Original-URL") or "").partition("://")
        host, slash, target = rest.partition("/")
        target = slash + target
    if not method or scheme.lower() not in ("http", "https") or not target.startswith("/"):
        return None
    if not usable_host(host):
        return None
    hostname = urlsplit("//" + host).hostname or ""
    return Original(method.upper(), f"{scheme}://{host}{target}", hostname, target)


@lru_cache(maxsize=4096)
def identity_headers(username: str, name: str, email: str, groups: tuple[str, ...]) -> tuple:
    """The Remote-* headers of a person, cleaned for a header (computed once per person)."""
    return (
        ("Remote-User", header_value(username)),
        ("Remote-Groups", header_value(",".join(_listable(groups)))),
        ("Remote-Name", header_value(name)),
        ("Remote-Email", header_value(email)),
    )


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
