"""The bare Flask apps the portal is measured against, served by the same gunicorn settings.

Each answers one path with the very bytes the portal answered there (status, headers, body),
captured from the running portal into the JSON file BENCH_CAPTURE names: so the difference is
exactly what the portal does to decide, and nothing else. Against a portal on Redis, the bare app
also makes the one Redis round trip a shared cache costs (BENCH_REDIS_URL).
"""

from __future__ import annotations

import json
import os

from flask import Flask, Response


def create_app() -> Flask:
    """A Flask app replaying each captured answer at its path; with BENCH_REDIS_URL it first
    reads one key from that Redis, the floor of a cache shared by every worker."""
    with open(os.environ["BENCH_CAPTURE"]) as source:
        captured = json.load(source)
    app = Flask("bare")
    redis_url = os.environ.get("BENCH_REDIS_URL")
    client = None
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
    for number, (path, answer) in enumerate(captured.items()):
        status, headers, body = answer["status"], answer["headers"], answer["body"].encode()

        def replay(status=status, headers=headers, body=body):
            if client is not None:
                client.get("bench:one-round-trip")
            return Response(body, status, headers=[tuple(header) for header in headers])

        app.add_url_rule(path, f"replay{number}", replay, methods=["GET"])
    return app
