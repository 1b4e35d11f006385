"""Probing each directory server: reachable, service bind accepted, user base readable."""

from __future__ import annotations

import time
from dataclasses import dataclass

import ldap3

from .connections import bind_as_service, discard, server_answered
from .errors import DirectoryUnavailable
from .settings import DirectorySettings


@dataclass(frozen=True)
class ServerHealth:
    """What one probe of one server found."""

    url: str
    reachable: bool
    service_bind_ok: bool
    search_ok: bool
    latency_ms: float | None
    error: str = ""

    @property
    def ok(self) -> bool:
        """Reachable, service bind accepted and the user base readable."""
        return self.reachable and self.service_bind_ok and self.search_ok


def probe(server: ldap3.Server, settings: DirectorySettings) -> ServerHealth:
    """Probe one server with a fresh service bind and a base search of the user base."""
    url = f"{server.host}:{server.port}"
    started = time.perf_counter()
    try:
        connection, bound, problem = bind_as_service([server], settings, probe=True)
    except DirectoryUnavailable as error:
        # What went wrong, as the connection attempt saw it: refused, timed out, reset, TLS.
        return ServerHealth(url, False, False, False, None, error.reasons.get(url, "no answer"))
    try:
        searched = bound and connection.search(
            settings.user_bases[0], "(objectClass=*)", ldap3.BASE, attributes=["1.1"]
        )
        error = "" if searched else str((connection.result or {}).get("description", ""))
        if problem:  # answering, for now: the status page says what is coming
            error = "; ".join(filter(None, [error, f"service account: {problem}"]))
    except Exception as failure:  # noqa: BLE001 - report whatever the probe hit
        searched, error = False, str(failure)
    finally:
        discard(connection)
    if searched:
        # It answered a bind and a search: the server is back for everyone, even one that no
        # request has needed since it failed (the second server after a full outage).
        server_answered(server)
    latency = round((time.perf_counter() - started) * 1000, 1)
    return ServerHealth(url, True, bool(bound), bool(searched), latency, error)
