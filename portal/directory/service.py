"""The Directory: find a person, verify their password, read their groups, probe the servers."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import ldap3

from . import account_state, mapping
from .account_state import State
from .connections import ServicePool, discard, make_servers, open_connection
from .errors import DirectoryError, DirectoryUnavailable, PasswordChangeRequired
from .groups import resolve_groups
from .queries import bind_name, check_password, fill_filter, login_forms
from .settings import DirectorySettings

log = logging.getLogger(__name__)

# Result codes that mean "the server cannot answer now" rather than "no" (RFC 4511 4.1.9).
_OUTAGE_CODES = frozenset({3, 11, 51, 52, 80})  # timeLimit, adminLimit, busy, unavailable, other
_SUCCESS, _SIZE_LIMIT, _NO_SUCH_OBJECT, _INVALID_CREDENTIALS = 0, 4, 32, 49
_PAGED_RESULTS = "1.2.840.113556.1.4.319"


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
        """Return the user's attributes if the password is right and the account usable.

        Returns None for every refusal a stranger must not tell apart (unknown user, wrong
        password, disabled, locked). Raises InvalidInput before any LDAP traffic for input that
        may not be sent, PasswordChangeRequired when the password was right but must be changed
        first, and DirectoryUnavailable when the directory cannot answer.
        """
        name, login = login_forms(username, self.settings.username_max_length,
                                  self.settings.login_domains)  # fmt: skip
        check_password(password, self.settings.password_max_length)
        if self.settings.dn_template:
            entry = self._bind_by_template(name, password)
        else:
            entry = self._find_user(name, login)
            if entry is not None and not self._password_accepted(entry, password):
                entry = None
        if entry is None or not self._has_username(entry):
            return None
        return self._attributes(entry)

    def lookup(self, username: object) -> dict | None:
        """Return the current attributes of a usable account by canonical username, else None."""
        name, _ = login_forms(username, self.settings.username_max_length)
        entry = self._find_user(name, name)
        if entry is None or not self._has_username(entry):
            return None
        state = account_state.from_entry(self.settings.account_state, entry["attributes"])
        if state is not State.OK:
            log.info("%s is no longer signed in: account %s", name, state.value)
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

    def _find_user(self, name: str, login: str) -> Mapping | None:
        search_filter = fill_filter(self.settings.user_filter, username=name, login=login)
        entries: list[Mapping] = []
        for base in self.settings.user_bases:
            entries += self._search(
                base,
                search_filter,
                self.settings.user_attributes,
                size_limit=2,
                truncation_ok=True,  # a second entry is all we need to know: ambiguous
            )
            if len(entries) > 1:
                log.warning("login name %r matches several directory entries; refusing it", name)
                return None
        return entries[0] if entries else None

    def _password_accepted(self, entry: Mapping, password: str) -> bool:
        # Search-then-bind: check the recorded state first (a disabled or locked account gets no
        # bind, as the directory itself would refuse it), then bind as the DN the server returned.
        mode = self.settings.account_state
        state = account_state.from_entry(mode, entry["attributes"])
        if state in (State.DISABLED, State.LOCKED):
            log.info("login refused for %s: account %s", entry["dn"], state.value)
            return False
        connection, bound = self._bind(entry["dn"], password)
        discard(connection)
        if bound and state is State.MUST_CHANGE_PASSWORD:
            raise PasswordChangeRequired(entry["dn"])
        return bound

    def _bind_by_template(self, name: str, password: str) -> Mapping | None:
        # Template bind: no search before the bind; the entry is then read over the person's
        # own connection, so the attributes are the ones of the identity that just bound.
        who = bind_name(self.settings.dn_template, name)
        connection, bound = self._bind(who, password)
        try:
            if not bound:
                return None
            attributes = self.settings.user_attributes
            if "=" in self.settings.dn_template:
                base, search_filter, scope = who, "(objectClass=*)", ldap3.BASE
            else:
                base, scope = self.settings.user_bases[0], ldap3.SUBTREE
                search_filter = fill_filter(self.settings.user_filter, username=name, login=name)
            entries = self._run_search(connection, base, search_filter, attributes, scope=scope)
        finally:
            discard(connection)
        if len(entries) != 1:
            log.warning("bound as %s but could not read exactly one entry for it", who)
            return None
        state = account_state.from_entry(self.settings.account_state, entries[0]["attributes"])
        if state is State.MUST_CHANGE_PASSWORD:
            raise PasswordChangeRequired(who)
        return entries[0] if state is State.OK else None

    def _bind(self, who: str, password: str) -> tuple[ldap3.Connection, bool]:
        mode = self.settings.account_state
        controls = [(account_state.PPOLICY_CONTROL, False, None)] if mode == "ppolicy" else None
        connection, bound = open_connection(self.servers, self.settings, who, password, controls)
        result = connection.result or {}
        code = result.get("result")
        state = account_state.from_bind(mode, result)
        if state is State.MUST_CHANGE_PASSWORD:
            discard(connection)
            raise PasswordChangeRequired(who)
        if state is not State.OK:
            log.info("bind as %s refused: account %s", who, state.value)
            return connection, False
        if not bound and code in _OUTAGE_CODES:
            discard(connection)
            raise DirectoryUnavailable(f"bind answered result code {code}")
        if not bound and code != _INVALID_CREDENTIALS:
            # Not a wrong password: a policy or configuration refusal an administrator must see.
            log.warning("bind as %s refused: %s %s", who, code, result.get("description", ""))
        return connection, bound

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
        names = resolve_groups(entry, self.settings, self._group_search)
        return mapping.user_attributes(entry, self.settings, names)

    def _group_search(self, base: str, search_filter: str, attributes: list[str]) -> list:
        return self._search(base, search_filter, attributes, paged=True)

    def _search(self, base, search_filter, attributes, size_limit=0, truncation_ok=False,
                paged=False) -> list:  # fmt: skip
        # A pooled connection may be dead (server restarted, idle connection cut): then its
        # idle siblings are too, so they are dropped and the search retried once on a new one.
        for fresh in (False, True):
            try:
                with self.pool.connection(fresh=fresh) as connection:
                    return self._run_search(connection, base, search_filter, attributes,
                                            size_limit=size_limit, truncation_ok=truncation_ok,
                                            paged=paged)  # fmt: skip
            except DirectoryError:
                raise
            except Exception as error:  # noqa: BLE001 - socket, protocol and decoding errors
                self.pool.clear()
                if fresh:
                    log.warning("directory search under %s failed: %r", base, error)
                    raise DirectoryUnavailable("directory search failed") from error
        raise AssertionError("unreachable")

    def _run_search(self, connection, base, search_filter, attributes, scope=ldap3.SUBTREE,
                    size_limit=0, truncation_ok=False, paged=False) -> list:  # fmt: skip
        entries: list = []
        cookie = None
        while True:
            connection.search(
                base,
                search_filter,
                scope,
                attributes=attributes,
                size_limit=size_limit,
                time_limit=self.settings.operation_timeout,
                paged_size=self.settings.page_size if paged else None,
                paged_cookie=cookie,
            )
            entries += self._entries(connection, base, truncation_ok)
            controls = (connection.result or {}).get("controls") or {}
            cookie = ((controls.get(_PAGED_RESULTS) or {}).get("value") or {}).get("cookie")
            if not paged or not cookie:
                return entries

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
                [server], self.settings, self.settings.bind_dn or None, self.settings.bind_password
            )
        except DirectoryUnavailable:
            return ServerHealth(url, False, False, False, None, "no answer")
        try:
            searched = bound and connection.search(
                self.settings.user_bases[0], "(objectClass=*)", ldap3.BASE, attributes=["1.1"]
            )
            error = "" if searched else str((connection.result or {}).get("description", ""))
        except Exception as failure:  # noqa: BLE001 - report whatever the probe hit
            searched, error = False, str(failure)
        finally:
            discard(connection)
        latency = round((time.perf_counter() - started) * 1000, 1)
        return ServerHealth(url, True, bool(bound), bool(searched), latency, error)
