"""The sample upstream app: echoes each request it receives as JSON (standard library only).

It stands for any internal app (a wiki, Grafana, a ticket tool) behind the same reverse proxy as
the portal. It trusts the proxy completely and checks nothing itself, so it shows exactly what
an app behind the proxy is told: the method, the path as sent and as it reads it (decoded, as
most web frameworks route on it), and every request header, in the order received and with
duplicates kept, e.g.

    {"method": "GET", "path": "/app/%65x?a=1", "decoded_path": "/app/ex",
     "headers": [["Host", "..."], ["Remote-User", "alice"]], "body_length": 0}

Never expose it without the proxy in front: anyone could then send `Remote-User` themselves.

    python deploy/upstream/app.py --port 8080              # 127.0.0.1 by default
    python deploy/upstream/app.py --host 0.0.0.0 --port 8080   # in a container
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

MAX_BODY = 1 << 20  # bodies over 1 MiB are refused (413) and the connection closed


class EchoHandler(BaseHTTPRequestHandler):
    """Answer every method with a JSON description of the request."""

    server_version = "portal-sample-upstream/1"
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream keepalive expects

    def _echo(self) -> None:
        length = self._body_length()
        if length is None:
            # A body it cannot read whole would be left in the connection and read as the next
            # request (request smuggling past the proxy's sign-in): refuse, and close.
            self.close_connection = True
            self.send_error(413 if self.headers.get("Content-Length") else 411)
            return
        body = self.rfile.read(length) if length else b""
        payload = {
            "method": self.command,
            "path": self.path,
            "decoded_path": unquote(urlsplit(self.path).path),
            "headers": [[name, value] for name, value in self.headers.items()],
            "body_length": len(body),
        }
        data = json.dumps(payload, indent=2).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body_length(self) -> int | None:
        # Only a single, plain Content-Length up to MAX_BODY: no chunked bodies, no doubles.
        if self.headers.get("Transfer-Encoding"):
            return None
        lengths = self.headers.get_all("Content-Length") or ["0"]
        if len(lengths) != 1 or not lengths[0].isdigit() or int(lengths[0]) > MAX_BODY:
            return None
        return int(lengths[0])

    # http.server calls do_<METHOD>: the names are its API.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _echo  # noqa: N815

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write(f"upstream: {self.address_string()} {fmt % args}\n")


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted (SIGTERM or Ctrl-C)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("UPSTREAM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("UPSTREAM_PORT", "8080")))
    options = parser.parse_args(argv)
    server = ThreadingHTTPServer((options.host, options.port), EchoHandler)
    server.daemon_threads = True
    print(f"upstream: serving on {options.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
