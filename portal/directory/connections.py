"""Opening LDAP connections safely, and a small thread-safe pool of bound service connections.

Every connection: no server info or schema read, no referral chasing (a referral would carry the
user's password to another host), integer timeouts, certificates verified for ldaps://, servers
tried in the configured order, skipping a server whose circuit breaker is open (breaker.py).
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import ldap3
from ldap3.core.exceptions import LDAPException, LDAPResponseTimeoutError, LDAPSocketOpenError

from .. import metrics
from ..quietlog import QuietLog
from . import account_state
from .breaker import Breaker
from .errors import BindUnanswered, DirectoryUnavailable, ServerUnavailable, ServiceBindRefused
from .search import SERVER_DOWN_CODES
from .settings import DirectorySettings
from .wire import LeanConnection

log = logging.getLogger(__name__)
quiet = QuietLog(log)
#: Bind result codes that refuse the credentials themselves (RFC 4511 4.1.9: inappropriate
#: authentication, invalid credentials, insufficient access): the settings are wrong.
CREDENTIALS_REFUSED = frozenset({48, 49, 50})
#: What a failing server raises (as opposed to a refusal, or a fault of the caller's code);
#: errors with a true `server_fault` attribute (ServerUnavailable) count too.
SERVER_FAULTS = (LDAPException, OSError)


def make_servers(settings: DirectorySettings) -> list[ldap3.Server]:
    """Build one ldap3 Server per configured URL, without reading server info or schema."""
    # ldap3's own Tls() default is CERT_NONE: always verify, against LDAP_CA_FILE or the system
    # store; ldap3 then also checks the certificate matches the host name in the URL.
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=settings.ca_file or None)
    # IP_SYSTEM_DEFAULT: other modes make ldap3 skip an address for seconds after one failure,
    # which would delay recovery after an outage; failover order is decided here instead.
    servers = []
    for url in settings.urls:
        server = ldap3.Server(
            url,
            get_info=ldap3.NONE,
            connect_timeout=settings.connect_timeout,
            mode=ldap3.IP_SYSTEM_DEFAULT,
            tls=tls,
        )
        # One breaker per server, shared by both pools and every thread of the process.
        server.portal_breaker = Breaker(
            label(server),
            cap=settings.breaker_max_seconds,
            probe_limit=settings.connect_timeout + settings.operation_timeout + 1,
        )
        servers.append(server)
    return servers


def label(server: ldap3.Server) -> str:
    """A server as logs, metrics and the status page name it: host:port."""
    return f"{server.host}:{server.port}"


def breaker_of(server: ldap3.Server) -> Breaker:
    """The circuit breaker of a server made by make_servers."""
    return server.portal_breaker


def server_failed(server: ldap3.Server, error: BaseException, reason: str = "") -> None:
    """Note a server's failure: its breaker opens (logged once a minute per server), with
    `reason` when given (the error, shortened, with what to fix), else the error's words."""
    reason = reason or f"{type(error).__name__}: {error}"
    backoff = breaker_of(server).failed(reason)
    metrics.breaker_open(label(server), True)
    quiet.warning(f"failed {label(server)}", "directory server %s failed (%s); left alone "
                  "for %.0f s, then tried again (meanwhile the next server in LDAP_URLS, if "
                  "any; while none answers, sign-ins answer 503)", label(server), reason,
                  backoff)  # fmt: skip


def server_answered(server: ldap3.Server) -> None:
    """Note a server's answer: its breaker closes (a recovery is logged)."""
    if breaker_of(server).succeeded():
        metrics.breaker_open(label(server), False)
        log.warning("directory server %s answers again", label(server))


def connect(servers: list[ldap3.Server], settings: DirectorySettings,
            probe: bool = False, writable: bool = False) -> ldap3.Connection:  # fmt: skip
    """Open a connection to the first server that answers (upgraded by StartTLS if set), unbound.

    A failed StartTLS upgrade counts as a failed server, so no password is ever sent in clear by
    mistake. A server whose breaker is open is skipped (a `probe` of the health checks asks it
    anyway, and leaves the breaker alone). Raises DirectoryUnavailable when no server could be
    reached. Connections are read-only unless `writable` (a password change).
    """
    failures: list[str] = []
    reasons: dict[str, str] = {}
    for attempt in range(2):
        probes: list[Breaker] = []
        for server in servers:
            breaker = breaker_of(server)
            if not probe and not breaker.admit():
                if breaker.first_probing():
                    probes.append(breaker)
                elif not attempt:
                    failures.append(f"{label(server)}: skipped for now (it failed a moment ago)")
                continue
            connection = LeanConnection(
                server,
                client_strategy=ldap3.SYNC,
                auto_referrals=False,
                read_only=not writable,
                raise_exceptions=False,
                receive_timeout=settings.operation_timeout,
            )
            try:
                connection.open(read_server_info=False)
                if connection.closed:
                    # ldap3 keeps one "current address" per Server, set by any connection open
                    # to it, and passes over a failed open in silence while another connection
                    # has set it (the next operation would fail: "socket is not open"). Only a
                    # socket that connected marks the connection open; its error, if any, is
                    # in last_error (none when the name no longer resolves).
                    raise LDAPSocketOpenError(connection.last_error or "no address to connect to")
                if settings.start_tls and not connection.start_tls(read_server_info=False):
                    raise ConnectionError(f"StartTLS refused: {connection.result}")
            except Exception as error:  # noqa: BLE001 - socket, TLS and decoding errors alike
                reasons[label(server)] = f"{type(error).__name__}: {_shortened(error)}"
                if str(error) == "invalid server address":
                    # ldap3's words when the name resolves to no address at all.
                    reasons[label(server)] += f" ({server.host} resolves to no address)"
                reasons[label(server)] += _tls_hint(server, settings, str(error))
                failures.append(f"{label(server)}: {reasons[label(server)]}")
                if not probe:  # a probe reports its own findings
                    metrics.ldap_error("connect", connection, reasons[label(server)])
                    server_failed(server, error, reasons[label(server)])
                discard(connection)
                continue
            return connection
        if not probes:
            break
        # Nobody else to ask while another thread makes the process's first probe of a server:
        # wait for its outcome rather than answer "unavailable" at once.
        for breaker in probes:
            breaker.wait(settings.connect_timeout + settings.operation_timeout)
    said = "no directory server answered: " + "; ".join(failures or ["every one is being probed"])
    if not probe:
        # A health probe asks one server at a time and reports it itself: its failure must not
        # read in the log as the whole directory being down.
        quiet.warning("no server", "%s", said)
    raise DirectoryUnavailable(said, reasons)


def open_connection(
    servers: list[ldap3.Server],
    settings: DirectorySettings,
    user: str | None,
    password: str | None,
    probe: bool = False,
    writable: bool = False,
    controls: list | None = None,
) -> tuple[ldap3.Connection, bool]:
    """Connect (see `connect`) and simple-bind as user, or anonymously; return (connection, bound).

    A refused bind is an answer (bound is False). A server that fails during the bind (a hung
    one, whose TCP connection was accepted) is skipped for the next one, its breaker opened;
    DirectoryUnavailable when none is left.
    """
    remaining, failures, reasons = list(servers), [], {}
    while remaining:
        try:
            connection = connect(remaining, settings, probe, writable)
        except DirectoryUnavailable as error:
            said = "; ".join([*failures, str(error)])
            raise DirectoryUnavailable(said, {**reasons, **error.reasons}) from None
        server = connection.server
        remaining = remaining[remaining.index(server) + 1 :]
        connection.user, connection.password = user, password
        connection.authentication = ldap3.SIMPLE if user else ldap3.ANONYMOUS
        try:
            bound = connection.bind(read_server_info=False, controls=controls)
        except Exception as error:  # noqa: BLE001 - the server failed mid-bind
            reasons[label(server)] = f"the bind failed: {type(error).__name__}: {error}"
            reasons[label(server)] += _tls_hint(server, settings, str(error))
            failures.append(f"{label(server)}: {reasons[label(server)]}")
            if not probe:  # a hung server: it accepted the connection, then never answered
                metrics.ldap_error("bind", connection, reasons[label(server)])
                server_failed(
                    server, error, reasons[label(server)].removeprefix("the bind failed: ")
                )
            discard(connection)
            continue
        finally:
            connection.password = connection.request = None  # keep no password around
        code = (connection.result or {}).get("result")
        if not bound and code in SERVER_DOWN_CODES and not probe:
            # Busy or unavailable: the server's state, not a refusal of these credentials;
            # the next server may answer, and this one is left alone for a back-off. (A
            # probe of one server reports its answer as a refused bind, in its own words:
            # it did answer, and "no server answered" would send the operator to the network.)
            said = connection.result.get("description") or "refused"
            error = ServerUnavailable(f"the bind was refused: {said} ({code})")
            reasons[label(server)] = str(error)
            failures.append(f"{label(server)}: {error}")
            metrics.ldap_error("bind", connection, str(error))
            server_failed(server, error)
            discard(connection)
            continue
        if not probe:
            server_answered(server)
        return connection, bound
    said = "no directory server answered the bind: " + "; ".join(failures)
    raise BindUnanswered(said, reasons)


#: ldap3's host-name check says the whole certificate, as a Python dict, before "doesn't match".
_CERTIFICATE_DUMP = re.compile(r"certificate \{.*\} doesn't match", re.DOTALL)
_CERTIFICATE_NAME = re.compile(r"\('(?:DNS|IP Address)', '([^']+)'\)")
_CERTIFICATE_COMMON_NAME = re.compile(r"\('commonName', '([^']+)'\)")


def _shortened(error: BaseException) -> str:
    # A host-name mismatch said every field of the certificate: the names it is for say enough
    # (its subject's common name when it has no subjectAltName, as some internal CAs issue).
    said = str(error)
    dump = _CERTIFICATE_DUMP.search(said)
    if dump is None:
        return said
    names = (
        _CERTIFICATE_NAME.findall(dump.group(0))
        or _CERTIFICATE_COMMON_NAME.findall(dump.group(0))[:1]
    )
    shortened = f"certificate for {', '.join(names) or 'no name'} doesn't match"
    return (said[: dump.start()] + shortened + said[dump.end() :]).rstrip(" :")


#: What the TLS library says of a server certificate, and what to do about it.
_CERTIFICATE_HINTS = (
    ("unable to get local issuer certificate", "untrusted"),
    ("self-signed certificate", "untrusted"),
    ("self signed certificate", "untrusted"),
    ("certificate has expired", ": the server's certificate has expired (or this machine's "
                                "clock is wrong)"),
    ("certificate is not yet valid", ": the server's certificate is not valid yet (or this "
                                     "machine's clock is wrong)"),
)  # fmt: skip
_LDAPS_PORT, _LDAP_PORT = 636, 389


def _tls_hint(server: ldap3.Server, settings: DirectorySettings, said: str) -> str:
    # What an administrator most often got wrong when a TLS connection fails in these words;
    # nothing for words that name no such mistake.
    if "mismatch" in said or "doesn't match" in said:
        return (f": the certificate is not for {server.host}; name the server in LDAP_URLS as "
                "its certificate does")  # fmt: skip
    for words, hint in _CERTIFICATE_HINTS:
        if words in said:
            if hint != "untrusted":
                return hint
            if not settings.ca_file:
                return (": the server's certificate is not signed by a CA this machine trusts; "
                        "set LDAP_CA_FILE to the CA certificate that signed it")  # fmt: skip
            return ": the server's certificate is not signed by the CA in LDAP_CA_FILE"
    if server.ssl and server.port != _LDAPS_PORT and any(w in said for w in _PLAIN_PORT_WORDS):
        return (f": is {server.port} a plain LDAP port? ldaps:// speaks TLS from the first byte "
                "(usually port 636); for a plain port use ldap:// with LDAP_START_TLS")  # fmt: skip
    if not server.ssl and server.port != _LDAP_PORT and "session terminated by server" in said:
        return (f": if {server.port} is an ldaps:// port (usually 636), write ldaps:// in "
                "LDAP_URLS")  # fmt: skip
    return ""


#: What a TLS handshake with a server that does not speak TLS ends with.
_PLAIN_PORT_WORDS = ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF", "record layer failure",
                     "EOF occurred in violation of protocol")  # fmt: skip


def _server_failed_now(error: BaseException, reused: bool) -> bool:
    # A server that does not answer in time has failed. A connection kept in the pool that
    # breaks at once was most often cut while idle (the server restarted): the caller retries
    # on a new connection, which tells whether the server is really down.
    if not (isinstance(error, SERVER_FAULTS) or getattr(error, "server_fault", False)):
        return False
    cause = error.__cause__ or error
    timed_out = isinstance(cause, TimeoutError | LDAPResponseTimeoutError) or "timed out" in str(
        cause
    )
    return timed_out or not reused


def discard(connection: ldap3.Connection) -> None:
    """Close a connection, ignoring errors from a socket that is already gone."""
    with suppress(Exception):
        connection.unbind()


def bind_as_service(servers: list[ldap3.Server], settings: DirectorySettings,
                    probe: bool = False, writable: bool = False,
                    ) -> tuple[ldap3.Connection, bool, str]:  # fmt: skip
    """Connect and bind as the portal's service account (LDAP_BIND_DN, or anonymously):
    (connection, bound, what its password policy says must be done, "" for nothing).

    With LDAP_ACCOUNT_STATE "ppolicy" the bind asks for the policy's word on the account: an
    expiry coming, an expired password on grace logins, a reset. The directory says so only in
    its answer to a bind, and the next thing it says is that nobody can sign in, so it is
    logged (once a minute) the first time it is heard.
    """
    controls = ([(account_state.PPOLICY_CONTROL, False, None)]
                if settings.account_state == "ppolicy" else None)  # fmt: skip
    connection, bound = open_connection(servers, settings, settings.bind_dn or None,
                                        settings.bind_password, probe=probe, writable=writable,
                                        controls=controls)  # fmt: skip
    problem = account_state.service_password_problem(connection.result or {})
    if problem:
        say = quiet.warning if problem.startswith(account_state.EXPIRES_SOON) else quiet.error
        say(f"service password {problem}", "the service account %s: %s; set a new password in the "
            "directory and in LDAP_BIND_PASSWORD", settings.bind_dn, problem)  # fmt: skip
    return connection, bound, problem


def service_bind_refusal(
    connection: ldap3.Connection, settings: DirectorySettings
) -> DirectoryUnavailable:
    """The error for a refused bind of the portal's own service account, logged: a refusal of
    the credentials names the settings to fix; a busy or unwilling server is an outage."""
    result = connection.result or {}
    discard(connection)
    who = settings.bind_dn or "(anonymous)"
    refusal = f"{result.get('description') or 'refused'} ({result.get('result')})"
    fix = "check LDAP_BIND_DN and LDAP_BIND_PASSWORD"
    if problem := account_state.service_password_problem(result):
        refusal += f": {problem}"
        fix = "set a new password in the directory and in LDAP_BIND_PASSWORD"
    if result.get("result") not in CREDENTIALS_REFUSED:
        # Busy, unavailable, unwilling: the server's state, not the portal's settings.
        log.error("the directory refused the service account bind as %s: %s", who, refusal)
        return DirectoryUnavailable(f"service account bind refused: {refusal}")
    log.error("the directory refused the service account bind as %s: %s; %s", who, refusal,
              fix)  # fmt: skip
    return ServiceBindRefused(f"the service account bind as {who} was refused: {refusal}; {fix}")


class ServicePool:
    """Bound service-account connections, reused across requests; one borrower at a time each.

    ldap3's SYNC connections are not thread-safe, so a connection is lent to one thread and
    returned afterwards. At most LDAP_POOL_SIZE are in use at once; a borrower waits up to the
    operation timeout for one. The pool starts afresh after a fork (gunicorn workers) because a
    socket must not be shared between processes.
    """

    def __init__(self, settings: DirectorySettings, servers: list[ldap3.Server]):
        self.settings = settings
        self.servers = servers
        self._lock = threading.Lock()
        self._reset()

    @contextmanager
    def connection(self, fresh: bool = False) -> Iterator[ldap3.Connection]:
        """Lend a bound service connection (a new one if fresh); a failed one is not returned."""
        if self._pid != os.getpid():
            self._reset()
        slots = self._slots
        if not slots.acquire(timeout=self.settings.operation_timeout):
            raise DirectoryUnavailable("every directory connection is busy")
        try:
            taken = None if fresh else self._take()
            connection = taken or self._open()
            try:
                yield connection
            except BaseException as error:
                if _server_failed_now(error, reused=taken is not None):
                    server_failed(connection.server, error)
                discard(connection)
                raise
            self._give_back(connection)
        finally:
            slots.release()

    def clear(self) -> None:
        """Close every idle connection (after a connection failed, or at shutdown)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            discard(connection)

    def _reset(self) -> None:
        # Forked: the parent's sockets are not ours to use (or to unbind); just forget them.
        self._idle: list[ldap3.Connection] = []
        self._slots = threading.BoundedSemaphore(self.settings.pool_size)
        self._pid = os.getpid()

    def _open(self) -> ldap3.Connection:
        # An empty LDAP_BIND_DN (LDAP_ANONYMOUS_SEARCH) binds anonymously.
        connection, bound, _ = bind_as_service(self.servers, self.settings)
        if not bound:
            raise service_bind_refusal(connection, self.settings)
        return connection

    def _take(self) -> ldap3.Connection | None:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if connection.closed:
                    continue
                if breaker_of(connection.server).is_open:
                    discard(connection)  # its server failed since: do not wait on it again
                    continue
                return connection
        return None

    def _give_back(self, connection: ldap3.Connection) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._idle.append(connection)
                return
        discard(connection)


class BindPool(ServicePool):
    """Connections kept open for checking passwords: each login re-binds one as the person.

    A bind may follow another on the same connection (RFC 4511 4.2.1), so a login costs one
    bind and no TCP or TLS set-up. These connections are only ever used to bind (and, after a
    template bind, to read the bound person's own entry); a failed bind leaves them anonymous.
    """

    def _open(self) -> ldap3.Connection:
        # The anonymous bind is the liveness check: a server that accepts TCP but never answers
        # is found here and skipped for the next one, not on a person's login. (A server that
        # refuses anonymous binds still answers, which is all this needs.)
        connection, _ = open_connection(self.servers, self.settings, None, None)
        return connection
