"""Opening LDAP connections safely, and a small thread-safe pool of bound service connections.

Every connection: no server info or schema read, no referral chasing (a referral would carry the
user's password to another host), integer timeouts, servers tried in the configured order.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import ldap3
from ldap3.core.exceptions import LDAPException

from .errors import DirectoryUnavailable
from .settings import DirectorySettings

log = logging.getLogger(__name__)


def make_servers(settings: DirectorySettings) -> list[ldap3.Server]:
    """Build one ldap3 Server per configured URL, without reading server info or schema."""
    # IP_SYSTEM_DEFAULT: other modes make ldap3 skip an address for seconds after one failure,
    # which would delay recovery after an outage; failover order is decided here instead.
    return [
        ldap3.Server(
            url,
            get_info=ldap3.NONE,
            connect_timeout=settings.connect_timeout,
            mode=ldap3.IP_SYSTEM_DEFAULT,
        )
        for url in settings.urls
    ]


def open_connection(
    servers: list[ldap3.Server], settings: DirectorySettings, user: str | None, password: str | None
) -> tuple[ldap3.Connection, bool]:
    """Connect to the first server that answers and simple-bind; return (connection, bound).

    A refused bind is an answer (bound is False). Raises DirectoryUnavailable when no server
    could be reached or every one failed mid-bind.
    """
    failures = []
    for server in servers:
        connection = ldap3.Connection(
            server,
            user=user,
            password=password,
            authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
            client_strategy=ldap3.SYNC,
            auto_referrals=False,
            read_only=True,
            raise_exceptions=False,
            receive_timeout=settings.operation_timeout,
        )
        try:
            connection.open(read_server_info=False)
            bound = connection.bind(read_server_info=False)
        except LDAPException as error:
            failures.append(f"{server.host}:{server.port}: {error}")
            discard(connection)
            continue
        return connection, bound
    log.warning("no directory server answered: %s", "; ".join(failures))
    raise DirectoryUnavailable("no directory server answered")


def discard(connection: ldap3.Connection) -> None:
    """Close a connection, ignoring errors from a socket that is already gone."""
    with suppress(LDAPException, OSError):
        connection.unbind()


class ServicePool:
    """Bound service-account connections, reused across requests; one borrower at a time each.

    ldap3's SYNC connections are not thread-safe, so a connection is lent to one thread and
    returned afterwards. The pool is emptied after a fork (gunicorn workers) because a socket
    must not be shared between processes.
    """

    def __init__(self, settings: DirectorySettings, servers: list[ldap3.Server]):
        self.settings = settings
        self.servers = servers
        self._idle: list[ldap3.Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @contextmanager
    def connection(self) -> Iterator[ldap3.Connection]:
        """Lend a bound service connection; a connection that failed is closed, not returned."""
        connection = self._take() or self._open()
        try:
            yield connection
        except BaseException:
            discard(connection)
            raise
        self._give_back(connection)

    def clear(self) -> None:
        """Close every idle connection (after settings change or in tests)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            discard(connection)

    def _open(self) -> ldap3.Connection:
        connection, bound = open_connection(
            self.servers, self.settings, self.settings.bind_dn, self.settings.bind_password
        )
        if not bound:
            discard(connection)
            log.error("the directory refused the service account bind as %s", self.settings.bind_dn)
            raise DirectoryUnavailable("service account bind refused")
        return connection

    def _take(self) -> ldap3.Connection | None:
        with self._lock:
            if self._pid != os.getpid():
                # Forked: the parent's sockets are not ours to use (or to unbind).
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed:
                    return connection
        return None

    def _give_back(self, connection: ldap3.Connection) -> None:
        with self._lock:
            if len(self._idle) < self.settings.pool_size and self._pid == os.getpid():
                self._idle.append(connection)
                return
        discard(connection)
