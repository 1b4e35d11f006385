"""Running one LDAP search on a connection: paging, result codes, continuation references."""

from __future__ import annotations

import logging

import ldap3

from .. import metrics
from . import mapping
from .errors import DirectoryError, DirectoryUnavailable, ServerUnavailable
from .settings import DirectorySettings

log = logging.getLogger(__name__)

# Result codes that mean "the server cannot answer now" rather than "no" (RFC 4511 4.1.9).
OUTAGE_CODES = frozenset({3, 11, 51, 52, 80})  # timeLimit, adminLimit, busy, unavailable, other
#: Of those, the answers of a server that cannot serve anyone now (its breaker opens).
SERVER_DOWN_CODES = frozenset({51, 52})
_SUCCESS, _SIZE_LIMIT, _NO_SUCH_OBJECT = 0, 4, 32
_PAGED_RESULTS = "1.2.840.113556.1.4.319"
#: Pages one search may take (LDAP_PAGE_SIZE each) before it is refused as runaway: millions
#: of entries, as the watcher reads a whole user base (200 refused a base of 100,000 people).
MAX_PAGES = 10_000


def run_search(
    connection: ldap3.Connection,
    settings: DirectorySettings,
    base: str,
    search_filter: str,
    attributes: list[str],
    scope=ldap3.SUBTREE,
    size_limit: int = 0,
    truncation_ok: bool = False,
    paged: bool = False,
) -> list:
    """Search and return the entries (never referral continuations), all pages when paged.

    Raises DirectoryError when the answer cannot be trusted whole (a size limit cut it short,
    a runaway paging cookie) and DirectoryUnavailable when the server cannot answer now.
    """
    entries: list = []
    cookie, seen = None, set()
    for _ in range(MAX_PAGES):
        with metrics.ldap_operation("search", connection):  # metrics: time, errors
            connection.search(
                base,
                search_filter,
                scope,
                attributes=attributes,
                size_limit=size_limit,
                time_limit=settings.operation_timeout,
                paged_size=settings.page_size if paged else None,
                paged_cookie=cookie,
            )
            entries += _entries(connection, settings, base, truncation_ok, paged)
        controls = (connection.result or {}).get("controls") or {}
        cookie = ((controls.get(_PAGED_RESULTS) or {}).get("value") or {}).get("cookie")
        if not paged or not cookie:
            return entries
        if cookie in seen:
            break
        seen.add(cookie)
    log.error("paged search under %s did not end within %d pages of LDAP_PAGE_SIZE; refusing "
              "to decide on part of it", base, MAX_PAGES)  # fmt: skip
    raise DirectoryError(f"paged search under {base} did not end within {MAX_PAGES} pages")


#: What a paged search cut short needs: slapd counts a paged search's entries against the size
#: limit (500 unless set), so a watcher reading a base of more people or groups is refused.
_PAGED_LIMIT_FIX = (
    " (the service account must be allowed to page through every entry of the base: on"
    ' OpenLDAP, limits dn.exact="{}" size.prtotal=unlimited)'
)


def _entries(connection: ldap3.Connection, settings: DirectorySettings, base: str,
             truncation_ok: bool, paged: bool) -> list:  # fmt: skip
    code = (connection.result or {}).get("result")
    if code == _SIZE_LIMIT and not truncation_ok:
        # A cut-short group list could drop a denied group: never decide on part of it.
        fix = _PAGED_LIMIT_FIX.format(settings.bind_dn) if paged else ""
        log.error("search under %s was cut short by a size limit; refusing to decide%s", base, fix)
        raise DirectoryError(f"search under {base} exceeded the server's size limit{fix}")
    if code in (_SUCCESS, _SIZE_LIMIT, _NO_SUCH_OBJECT):
        if code == _NO_SUCH_OBJECT:
            # Servers answer so for an entry this account may not see, too (slapd's ACLs).
            log.warning("search base %s does not exist in the directory, or this account may "
                        "not read it", base)  # fmt: skip
        return mapping.entries_of(connection.response)
    if code in SERVER_DOWN_CODES or code is None:
        raise ServerUnavailable(f"search answered result code {code}")
    if code in OUTAGE_CODES:
        raise DirectoryUnavailable(f"search answered result code {code}")
    log.error("search under %s refused: %s", base, (connection.result or {}).get("message"))
    raise DirectoryError(f"search under {base} refused with result code {code}")
