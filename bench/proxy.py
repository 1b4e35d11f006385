"""P1 proxy: an app behind the shipped nginx configuration (auth_request to the portal) against
the same app through the same nginx without the sign-in.

The app is a trivial upstream (nginx itself answering "ok" on another port), so what is
measured is the price of the sign-in, not an app's own work. The shipped deploy/nginx/portal.conf
is rendered as the tests render it; a second server block in the same nginx passes requests to
the same upstream without auth_request. Measured without and with the optional micro-cache.
"""

from __future__ import annotations

import shutil

from portal.testing.slapd import Slapd, free_port
from tests.proxies import Nginx

from .harness import Comparison, Server, Settings, interleaved, settle, wrk
from .hotpath import portal_env, sign_in, signed_in_headers

PATH = "/app/x"
_EXTRA = """
# Written by bench/proxy.py: the trivial upstream, and the same upstream without the sign-in.
server {{
    listen 127.0.0.1:{upstream};
    access_log off;
    location / {{
        return 200 "ok\\n";
    }}
}}
server {{
    listen 127.0.0.1:{open};
    access_log off;
    proxy_http_version 1.1;
    location / {{
        proxy_pass http://sample_app;
        proxy_set_header Connection "";
    }}
}}
"""


def measure(slapd: Slapd, settings: Settings) -> list[Comparison]:
    """P1 proxy without and with the micro-cache."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    env = portal_env(slapd)
    results = []
    with Server("portal:create_app()", env, ready_path="/healthz") as portal:
        for micro_cache in (False, True):
            upstream, open_port = free_port(), free_port()
            extra = _EXTRA.format(upstream=upstream, open=open_port)
            nginx = Nginx(binary, portal.port, upstream, micro_cache=micro_cache, extra=extra)
            nginx.start()
            try:
                # Sign in through nginx, as a browser would (the cookie is for its address).
                cookie = sign_in(nginx.base_url, "alice", "alice-secret")
                name = "P1 proxy" + (" (micro-cache, at most 2 s)" if micro_cache else "")
                # The target is for the shipped configuration with its optional micro-cache on;
                # without it the figure is reported as it is.
                comparison = Comparison(
                    name, "app behind nginx auth_request", "same app, same nginx, no sign-in",
                    target=0.25 if micro_cache else None,
                )  # fmt: skip
                results.append(
                    interleaved(
                        comparison,
                        settings,
                        lambda port=open_port: wrk(f"http://127.0.0.1:{port}{PATH}", settings),
                        lambda cookie=cookie, url=nginx.base_url: wrk(
                            url + PATH, settings, signed_in_headers(cookie)
                        ),
                    )
                )
            finally:
                nginx.cleanup()
    settle()
    return results
