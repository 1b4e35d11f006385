"""The least a Flask sign-in can cost: a bare app serving the form and running the three ldap3
operations of a sign-in behind it, under the same gunicorn settings as the portal.

GET /login answers a page with a random token and a session cookie (nothing is signed or kept);
POST /login finds the person, binds as them and reads their groups on this thread's own open
connections (as a pool keeps them), then redirects. No CSRF check, no session, no throttling, no
audit line: what is left is HTTP, Flask and ldap3, the floor any Flask sign-in stands on.
"""

from __future__ import annotations

import os
import secrets
import threading

import ldap3
from flask import Flask, Response, redirect, request
from ldap3.utils.conv import escape_filter_chars

from .logins import ALICE_DN, GROUP_FILTER, SERVICE_DN, SERVICE_PASSWORD

_FORM = (
    '<!doctype html><form method="post"><input name="csrf_token" type="hidden" value="{token}">'
    '<input name="username"><input name="password" type="password"></form>'
)


def create_app() -> Flask:
    """The bare sign-in app against the directory at BENCH_LDAP_URL (the demo tree)."""
    server = ldap3.Server(os.environ["BENCH_LDAP_URL"], get_info=ldap3.NONE)
    local = threading.local()
    app = Flask("login-floor")

    def connections() -> tuple[ldap3.Connection, ldap3.Connection]:
        if not hasattr(local, "service"):
            local.service = ldap3.Connection(server, SERVICE_DN, SERVICE_PASSWORD, auto_bind=True)
            local.person = ldap3.Connection(server, ALICE_DN, authentication=ldap3.SIMPLE)
        return local.service, local.person

    @app.get("/login")
    def form() -> Response:
        page = Response(_FORM.format(token=secrets.token_urlsafe(32)))
        page.set_cookie("session", secrets.token_urlsafe(32), httponly=True)
        return page

    @app.post("/login")
    def sign_in() -> Response:
        service, person = connections()
        name, password = request.form["username"], request.form["password"]
        # The same three operations, with the same attributes, as bench.logins.raw_sequence.
        service.search("ou=people,dc=example,dc=org",
                       f"(&(objectClass=inetOrgPerson)(uid={escape_filter_chars(name)}))",
                       attributes=["uid", "displayName", "mail"])  # fmt: skip
        if not service.response:
            return Response("no", 401)
        person.user, person.password = service.response[0]["dn"], password
        if not person.bind():
            return Response("no", 401)
        service.search("ou=groups,dc=example,dc=org", GROUP_FILTER, attributes=["cn"])
        return redirect("/", 302)

    return app
