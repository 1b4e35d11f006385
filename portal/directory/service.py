"""The Directory: find a person, verify their password, read their groups, probe the servers."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import ldap3

from . import mapping
from .connections import ServicePool, discard, make_servers, open_connection
from .errors import DirectoryError, DirectoryUnavailable
from .queries import check_password, fill_filter, normalise_username
from .settings import DirectorySettings

log = logging.getLogger(__name__)

# Result codes that mean "the server cannot answer now" rather than "no" (RFC 4511 4.1.9).
_OUTAGE_CODES = frozenset({3, 11, 51, 52, 80})  # timeLimit, adminLimit, busy, unavailable, other
_SUCCESS, _SIZE_LIMIT, _NO_SUCH_OBJECT, _INVALID_CREDENTIALS = 0, 4, 32, 49


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


class Directory:
    """One configured directory; safe to share between threads."""

    def __init__(self, settings: DirectorySettings):
        self.settings = settings
        self.servers = make_servers(settings)
        self.pool = ServicePool(settings, self.servers)

    def authenticate(self, username: object, password: object) -> dict | None:
        """Return the user's attributes if the password is right, else None.

        Raises InvalidInput before any LDAP traffic for input that may not be sent, and
        DirectoryUnavailable when the directory cannot answer (never "wrong password").
        """
        name = normalise_username(username, self.settings.username_max_length)
        check_password(password, self.settings.password_max_length)
        entry = self._find_user(name)
        if entry is None or not self._has_username(entry):
            return None
        if not self._password_accepted(entry["dn"], password):
            return None
        return self._attributes(entry)

    def lookup(self, username: object) -> dict | None:
        """Return the current attributes of a user by canonical username, or None if none."""
        name = normalise_username(username, self.settings.username_max_length)
        entry = self._find_user(name)
        if entry is None or not self._has_username(entry):
            return None
        attrs = self._attributes(entry)
        # The filter may match on another attribute than the one that names people: only the
        # very person the session was issued to may be loaded for it.
        return attrs if attrs["username"] == name else None

    def check_health(self) -> list[ServerHealth]:
        """Probe each server in turn with a fresh service bind and a base search."""
        return [self._probe(server) for server in self.servers]

    def close(self) -> None:
        """Close the pooled service connections."""
        self.pool.clear()

    def _find_user(self, name: str) -> Mapping | None:
        search_filter = fill_filter(self.settings.user_filter, username=name)
        entries = self._search(
            self.settings.user_base,
            search_filter,
            self.settings.user_attributes,
            size_limit=2,
            truncation_ok=True,  # a second entry is all we need to know: ambiguous
        )
        if len(entries) > 1:
            log.warning("login name %r matches several directory entries; refusing it", name)
            return None
        return entries[0] if entries else None

    def _password_accepted(self, dn: str, password: str) -> bool:
        # Bind as the DN the server returned, never as the typed string, on its own connection so
        # the pooled service connections keep their identity.
        connection, bound = open_connection(self.servers, self.settings, dn, password)
        result = connection.result or {}
        discard(connection)
        code = result.get("result")
        if not bound and code in _OUTAGE_CODES:
            raise DirectoryUnavailable(f"bind answered result code {code}")
        if not bound and code != _INVALID_CREDENTIALS:
            # Not a wrong password: a policy or configuration refusal an administrator must see.
            log.warning("bind as %s refused: %s %s", dn, code, result.get("description", ""))
        return bound

    def _has_username(self, entry: Mapping) -> bool:
        if mapping.first_value(entry["attributes"], self.settings.attr_username).strip():
            return True
        log.error(
            "entry %s has no %s attribute: check LDAP_ATTR_USERNAME; refusing the login",
            entry["dn"],
            self.settings.attr_username,
        )
        return False

    def _attributes(self, entry: Mapping) -> dict:
        member_name = mapping.first_value(entry["attributes"], self.settings.attr_username)
        search_filter = fill_filter(
            self.settings.group_filter, user_dn=entry["dn"], username=member_name
        )
        groups = self._search(
            self.settings.group_base, search_filter, [self.settings.group_name_attr]
        )
        names = mapping.group_names(groups, self.settings.group_name_attr)
        return mapping.user_attributes(entry, self.settings, names)

    def _search(
        self,
        base: str,
        search_filter: str,
        attributes: list[str],
        size_limit: int = 0,
        truncation_ok: bool = False,
    ) -> list:
        # A pooled connection may be dead (server restarted, idle connection cut): then its
        # idle siblings are too, so they are dropped and the search retried once on a new one.
        for fresh in (False, True):
            try:
                with self.pool.connection(fresh=fresh) as connection:
                    connection.search(
                        base,
                        search_filter,
                        ldap3.SUBTREE,
                        attributes=attributes,
                        size_limit=size_limit,
                        time_limit=self.settings.operation_timeout,
                    )
                    return self._entries(connection, base, truncation_ok)
            except DirectoryError:
                raise
            except Exception as error:  # noqa: BLE001 - socket, protocol and decoding errors
                self.pool.clear()
                if fresh:
                    log.warning("directory search under %s failed: %r", base, error)
                    raise DirectoryUnavailable("directory search failed") from error
        raise AssertionError("unreachable")

    @staticmethod
    def _entries(connection: ldap3.Connection, base: str, truncation_ok: bool) -> list:
        code = (connection.result or {}).get("result")
        if code == _SIZE_LIMIT and not truncation_ok:
            # A cut-short group list could drop a denied group: never decide on part of it.
            log.error("search under %s was cut short by a size limit; refusing to decide", base)
            raise DirectoryError(f"search under {base} exceeded the server's size limit")
        if code in (_SUCCESS, _SIZE_LIMIT, _NO_SUCH_OBJECT):
            if code == _NO_SUCH_OBJECT:
                log.warning("search base %s does not exist in the directory", base)
            return mapping.entries_of(connection.response)
        if code in _OUTAGE_CODES or code is None:
            raise DirectoryUnavailable(f"search answered result code {code}")
        log.error("search under %s refused: %s", base, (connection.result or {}).get("message"))
        raise DirectoryError(f"search under {base} refused with result code {code}")

    def _probe(self, server: ldap3.Server) -> ServerHealth:
        url = f"{server.host}:{server.port}"
        started = time.perf_counter()
        try:
            connection, bound = open_connection(
                [server], self.settings, self.settings.bind_dn, self.settings.bind_password
            )
        except DirectoryUnavailable:
            return ServerHealth(url, False, False, False, None, "no answer")
        try:
            searched = bound and connection.search(
                self.settings.user_base, "(objectClass=*)", ldap3.BASE, attributes=["1.1"]
            )
            error = "" if searched else str((connection.result or {}).get("description", ""))
        except Exception as failure:  # noqa: BLE001 - report whatever the probe hit
            searched, error = False, str(failure)
        finally:
            discard(connection)
        latency = round((time.perf_counter() - started) * 1000, 1)
        return ServerHealth(url, True, bool(bound), bool(searched), latency, error)
