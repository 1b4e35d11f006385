"""Errors and refusals the directory layer raises; callers map them to HTTP answers."""


class DirectoryError(Exception):
    """Base class for every error raised by portal.directory."""


class DirectoryUnavailable(DirectoryError):
    """No configured server answered in time, or the service account could not bind."""


class InvalidInput(DirectoryError):
    """A login name or password that may never be sent to the directory (empty, control chars)."""


class PasswordChangeRequired(Exception):
    """The password was right, but it has expired or was reset: it must be changed first."""
