"""Errors and refusals the directory layer raises; callers map them to HTTP answers."""


class DirectoryError(Exception):
    """Base class for every error raised by portal.directory."""


class DirectoryUnavailable(DirectoryError):
    """No configured server answered in time, or the service account could not bind.

    `reasons` maps each server that was asked and failed (host:port) to what went wrong.
    """

    def __init__(self, message: str = "", reasons: dict[str, str] | None = None):
        super().__init__(message)
        self.reasons = reasons or {}


class DirectoryBusy(DirectoryUnavailable):
    """A sign-in not sent at all: as many as may wait on a directory that is slow to answer
    are waiting already (see deadline.py)."""


class ServerUnavailable(DirectoryUnavailable):
    """The server a connection was on said it cannot serve now (busy, unavailable) or sent no
    answer at all: that server's breaker opens. Other DirectoryUnavailable errors (a pool with
    no free connection, a time limit of one query) say nothing against the server."""

    server_fault = True


class ServiceBindRefused(DirectoryUnavailable):
    """The directory answered, but refused the portal's own service account (LDAP_BIND_DN,
    LDAP_BIND_PASSWORD): nobody can be looked up until an administrator fixes them."""


class BindUnanswered(DirectoryUnavailable):
    """Every server asked took the connection (and any StartTLS) and then failed the bind: it
    hung, or hung up (a plain bind to a TLS port). The connection itself was made."""


class InvalidInput(DirectoryError):
    """A login name or password that may never be sent to the directory (empty, control chars)."""


class PasswordChangeRequired(Exception):
    """The password was right, but it has expired or was reset: it must be changed first.

    `grace_logins_left` is what the directory said remains of an expired password's grace
    logins after this bind (ppolicy's graceAuthNsRemaining), or None when it did not say.
    """

    def __init__(self, who: str, grace_logins_left: int | None = None):
        super().__init__(who)
        self.grace_logins_left = grace_logins_left
