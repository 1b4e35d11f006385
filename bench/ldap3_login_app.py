"""The baseline for sign-ins: flask-ldap3-login used the way its quick-start documents it.

Flask-Login sessions, the extension's LDAPLoginForm (CSRF, search-then-bind, group search),
users kept in a dict, a redirect home after signing in. Written here for the demo directory
(settings from BENCH_LDAP_*) and served by gunicorn from its own virtualenv, as the portal is.
"""

import os

from flask import Flask, redirect, render_template_string
from flask_ldap3_login import LDAP3LoginManager
from flask_ldap3_login.forms import LDAPLoginForm
from flask_login import LoginManager, UserMixin, current_user, login_user

FORM = """<form method="post">{{ form.hidden_tag() }}{{ form.username() }}{{ form.password() }}
{{ form.submit() }}</form>"""


class Person(UserMixin):
    """A signed-in person, as the quick-start keeps one."""

    def __init__(self, dn, username, data):
        self.dn, self.username, self.data = dn, username, data

    def get_id(self):
        return self.dn


def create_app():
    """The example app against the directory the environment names."""
    app = Flask("flask_ldap3_login_example")
    app.config.update(
        SECRET_KEY=os.environ["BENCH_SECRET"],
        LDAP_HOST=os.environ["BENCH_LDAP_HOST"],
        LDAP_PORT=int(os.environ["BENCH_LDAP_PORT"]),
        LDAP_BASE_DN="dc=example,dc=org",
        LDAP_USER_DN="ou=people",
        LDAP_GROUP_DN="ou=groups",
        LDAP_USER_RDN_ATTR="uid",
        LDAP_USER_LOGIN_ATTR="uid",
        LDAP_BIND_USER_DN="cn=portal-reader,ou=services,dc=example,dc=org",
        LDAP_BIND_USER_PASSWORD=os.environ["BENCH_LDAP_PASSWORD"],
        LDAP_USER_OBJECT_FILTER="(objectclass=inetOrgPerson)",
        LDAP_GROUP_OBJECT_FILTER="(objectclass=groupOfNames)",
        LDAP_GROUP_MEMBERS_ATTR="member",
        LDAP_SEARCH_FOR_GROUPS=True,
    )
    login_manager = LoginManager(app)
    ldap_manager = LDAP3LoginManager(app)
    people = {}

    @login_manager.user_loader
    def load_user(dn):
        return people.get(dn)

    @ldap_manager.save_user
    def save_user(dn, username, data, memberships):
        person = Person(dn, username, data)
        people[dn] = person
        return person

    @app.route("/")
    def home():
        if current_user.is_anonymous:
            return redirect("/login")
        return render_template_string("<h1>Welcome: {{ current_user.username }}</h1>")

    @app.route("/login", methods=["GET", "POST"])
    def login():
        form = LDAPLoginForm()
        if form.validate_on_submit():
            login_user(form.user)
            return redirect("/")
        return render_template_string(FORM, form=form)

    return app
