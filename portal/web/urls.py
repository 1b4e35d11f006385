"""Deciding whether a `next` address is safe to redirect to after login."""

from __future__ import annotations

from urllib.parse import urlsplit

from werkzeug.urls import iri_to_uri


def safe_next(target: object, allowed_domains=(), allow_http: bool = False,
              own_origin: str = "") -> str | None:  # fmt: skip
    """Return target if it is safe to redirect to after login, else None.

    Safe: a same-site relative path ("/..."), or an absolute https:// URL (http:// too when
    allow_http) whose host is one of `allowed_domains` or below one, or whose scheme, host and
    port are exactly `own_origin` ("https://intranet.example.org", the portal's own: apps on its
    host under paths, which /auth/verify names by full URL). Browsers treat "//host",
    "/\\host", "\\\\host" and addresses with tabs or newlines as other sites, so anything with a
    backslash or a control character is refused.
    """
    if not isinstance(target, str) or "\\" in target:
        return None
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in target):
        return None
    try:
        parts = urlsplit(target)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    if target.startswith("/") and not target.startswith("//"):
        return None if parts.scheme or parts.netloc else target
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or parts.username or parts.password or not parts.hostname:
        return None
    if not parts.netloc.isascii() or "%" in parts.netloc:
        return None  # browsers would read such a host differently, if at all
    if not target.lower().startswith(f"{parts.scheme}://"):
        return None  # "https:/host" and the like: browsers disagree on what they mean
    if not _writable(target):
        return None  # a host no Location header can carry (an empty or 64-character label)
    if own_origin and f"{parts.scheme}://{parts.netloc}".lower() == own_origin.lower():
        return target
    host = parts.hostname.lower()
    for domain in (d.lower().strip(".") for d in allowed_domains):
        if host == domain or host.endswith("." + domain):
            return target
    return None


def _writable(target: str) -> bool:
    # Werkzeug encodes a Location's host as IDNA while the answer is sent, past every error
    # handler: "https://.corp.example/" would be a bare 500 (and a sign-in without its cookie).
    try:
        iri_to_uri(target)
    except (UnicodeError, ValueError):
        return False
    return True
