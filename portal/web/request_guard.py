"""Requests whose Host or target the portal cannot trust are answered 400, as a normal page.

A Host header that is no host name (a label of 64 or more characters, a broken ``xn--`` label,
a port that is no port, non-ASCII text) would make URL building fail deep inside Flask and turn
every page into a bare 500 without the security headers. A request line in absolute form
(``GET http://wiki.corp.example/x`` with ``Host: finance.corp.example``) names two hosts, and a
proxy and an app may each believe another one. Either way this WSGI middleware hands Flask the
request with a harmless Host and a mark, and `refuse_marked_request` (the first
``before_request`` function) answers it with the ordinary 400 page: every security header, the
portal's look, no 500. A body that cannot be read (broken chunked encoding) is a 400 too, and
so is a request under another prefix (SCRIPT_NAME) than the portal was started with.

A server that says it runs the app in several processes (WSGI's ``wsgi.multiprocess``: gunicorn
with more than one worker, started without the shipped configuration that refuses them) while
sign-outs live in each process gets 503 for every request: a sign-out would hold in one worker
only, so nobody is served until the settings or the server are fixed (the log says which).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from urllib.parse import urlsplit

from flask import abort, request
from flask_babel import gettext
from werkzeug.exceptions import BadRequest, HTTPException

from ..quietlog import QuietLog
from .errors import render_error

MARK = "portal.refused_request"
#: The status a marked request is answered with, when not 400.
MARK_STATUS = "portal.refused_status"
quiet = QuietLog(logging.getLogger(__name__))
# Letters, digits, "-", and "_" (container and service names have them; browsers accept them).
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_HOST_AND_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[0-9]{1,5}))?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# The name a refused request is handed to Flask with: any valid name would do.
_PLACEHOLDER_HOST = "invalid"


class RequestGuard:
    """WSGI middleware: marks requests with an unusable Host, two differing hosts or another
    prefix than the portal's, and reads request bodies so that a broken one is a 400."""

    def __init__(self, wsgi_app, prefix: str = "", several_processes_refused: str = ""):
        """`prefix`: where the portal is mounted (APPLICATION_ROOT), if anywhere;
        `several_processes_refused`: why these settings cannot serve from several processes."""
        self.wsgi_app = wsgi_app
        self.several_processes_refused = several_processes_refused
        # The prefixes a request may carry in SCRIPT_NAME: the one gunicorn was started with
        # (it reads the SCRIPT_NAME environment variable), or the configured mount.
        self.prefixes = {os.environ.get("SCRIPT_NAME", ""), prefix.rstrip("/")}

    def __call__(self, environ, start_response):
        """Check the Host header and the request target, then call the app."""
        reason = refusal(environ, self.prefixes)
        if reason:
            environ = dict(environ, HTTP_HOST=_PLACEHOLDER_HOST, **{MARK: reason})
        if self.several_processes_refused and environ.get("wsgi.multiprocess"):
            environ = dict(environ, **{MARK: self.several_processes_refused, MARK_STATUS: 503})
        if "HTTP_TRANSFER_ENCODING" in environ or environ.get("CONTENT_LENGTH"):
            environ["wsgi.input"] = BodyReader(environ["wsgi.input"])
        return self.wsgi_app(environ, start_response)


class BodyReader:
    """A request body whose reading fails as a 400: the server's own errors for a body that is
    no body (a chunk size "zz", a chunk without its end) would otherwise be a 500 on any form,
    since the CSRF check reads the form before every view."""

    def __init__(self, stream):
        self._stream = stream

    def read(self, *size) -> bytes:
        """Read as the server's stream does."""
        return self._reading(self._stream.read, *size)

    def readline(self, *size) -> bytes:
        """Read a line as the server's stream does."""
        return self._reading(self._stream.readline, *size)

    def readlines(self, *hint) -> list[bytes]:
        """Read the lines as the server's stream does."""
        return self._reading(self._stream.readlines, *hint)

    def __iter__(self):
        return iter(self.readline, b"")

    @staticmethod
    def _reading(read, *args):
        try:
            return read(*args)
        except HTTPException:
            raise
        except Exception as error:  # noqa: BLE001 - each server raises its own parse errors
            raise BadRequest("The request body could not be read.") from error


def refusal(environ, prefixes=frozenset({""})) -> str:
    """Why a request's Host or target cannot be trusted, or "" when both are fine; a SCRIPT_NAME
    outside `prefixes` is refused too."""
    if environ.get("SCRIPT_NAME", "") not in prefixes:
        # gunicorn takes a SCRIPT_NAME header from a proxy on its own machine as the prefix the
        # portal lives under, and moves that much of the path out of what the portal reads: a
        # client's, passed on, would have the portal judge and serve other paths than asked.
        return "a SCRIPT_NAME (prefix) that is not the portal's (its APPLICATION_ROOT)"
    if not _utf8(environ.get("QUERY_STRING", "")):
        # Raw bytes no browser sends (it escapes them): Werkzeug would fail reading the query.
        return "a query string that is not UTF-8"
    host = environ.get("HTTP_HOST")
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    absolute = bool(target) and not target.startswith("/") and target != "*"
    if host is None:
        # HTTP/1.0 without Host: Werkzeug uses SERVER_NAME, which a request line naming a host
        # of its own would contradict.
        return "a request line naming a host, without a Host header" if absolute else ""
    if not usable_host(host):
        return "unusable Host header"
    if absolute:
        try:
            parts = urlsplit(target)
        except ValueError:  # e.g. "http://[zzz/": no host can be told from it
            return "unusable request target"
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not usable_host(parts.netloc):
            return "unusable request target"
        if _authority(parts.netloc, scheme) != _authority(host, environ.get("wsgi.url_scheme")):
            return "the request line and the Host header name different hosts"
    return ""


def usable_host(value: str) -> bool:
    """A host name, IPv4 or bracketed IPv6 address, with an optional port of 1 to 65535."""
    match = _HOST_AND_PORT.fullmatch(value)
    if not match or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
        return False
    host = match["host"]
    if host.startswith("["):
        # No zone id ("%eth0"): no Host carries one, and Python accepts any text after the "%",
        # so "[::1%x@wiki.corp.example]" would pass as an address and name another host to a
        # URL parser.
        if "%" in host:
            return False
        try:
            return ipaddress.ip_address(host[1:-1]).version == 6
        except ValueError:
            return False
    if len(host) > 254 or not _HOST_NAME.fullmatch(host):
        return False
    return all(_punycode_ok(label) for label in host.split(".") if label[:4].lower() == "xn--")


def host_name(value: str) -> str:
    """The host of a Host value `usable_host` accepts: lower case, without the port (and
    without the brackets of an IPv6 address)."""
    match = _HOST_AND_PORT.fullmatch(value)
    host = match["host"] if match else ""
    return (host[1:-1] if host.startswith("[") else host).lower()


def refuse_marked_request():
    """before_request: answer a request the guard marked with the ordinary 400 page (or the
    503 page of a server the settings cannot be served by)."""
    reason = request.environ.get(MARK)
    if not reason:
        return None
    status = request.environ.get(MARK_STATUS, 400)
    quiet.warning(f"refused {reason}", "answering %d: %s", status, reason)  # why, once a minute
    if status == 503:
        message = gettext(
            "The portal is not set up to be served this way, so it cannot "
            "check who you are. Its administrators can see why in its log."
        )
        return render_error(503, message, title=gettext("Not set up"))
    abort(400)


def _authority(value: str, scheme: str | None) -> tuple[str, str]:
    match = _HOST_AND_PORT.fullmatch(value)
    host = (match["host"] if match else value).lower().rstrip(".")
    port = (match["port"] if match else None) or _DEFAULT_PORTS.get(scheme or "", "")
    return host, port


def _utf8(text: str) -> bool:
    # WSGI carries the request's bytes as latin-1 text.
    try:
        text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return False
    return True


def _punycode_ok(label: str) -> bool:
    # Werkzeug decodes xn-- labels when it builds URLs; one it cannot decode would raise there.
    try:
        label.encode("ascii").decode("idna")
    except UnicodeError:
        return False
    return True
