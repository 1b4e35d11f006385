"""Deciding whether a `next` address is safe to redirect to after login."""

from __future__ import annotations

from urllib.parse import urlsplit


def safe_next(target: object) -> str | None:
    """Return target if it is a same-site relative path ("/..."), else None.

    Browsers treat "//host", "/\\host", "\\\\host" and paths with tabs or newlines as other
    sites, so anything with a backslash, a control character, a scheme or a host is refused.
    """
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(char) < 0x20 or ord(char) == 0x7F for char in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target
