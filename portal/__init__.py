"""The portal application factory."""

from __future__ import annotations

import time
from datetime import timedelta

from flask import Flask

from . import applog, settings
from .signin import cookies
from .web import headers


def create_app(test_config: dict | None = None, *, log_warnings: bool = True) -> Flask:
    """Build the portal: settings, extensions, directory, user loader, blueprints.

    The settings' warnings are logged, unless `log_warnings` is false: the `portal` command,
    whose `check` lists them itself (a log line too would say each twice)."""
    app = Flask(__name__)
    applog.init_app(app)  # first: the settings warnings below are log lines too
    if test_config is None:
        app.config.from_mapping(settings.load())
    else:
        app.config.from_mapping(settings.defaults())
        app.config.from_mapping(test_config)
    for warning in settings.validate(app.config):
        if log_warnings:
            app.logger.warning("settings: %s", warning)
    # gunicorn's hook checks its real worker count; this catches WEB_CONCURRENCY without it.
    settings.check_processes(app.config, settings.serving_processes())
    _derive_settings(app)
    app.config["PORTAL_STARTED_AT"] = time.time()

    from . import access, accounts, directory
    from .cache import backend as cache_backend
    from .extensions import cache, csrf, login_manager
    from .signin import audit, throttle
    from .web import brand, errors, i18n
    from .web.request_guard import refuse_marked_request

    headers.init_app(app)  # first: its after_request function then runs after all others
    # Before anything else looks at the request (CSRF, throttling, the user loader).
    app.before_request(refuse_marked_request)
    # CACHE_TYPE keeps the name people write ("RedisCache"); Flask-Caching gets the backend that
    # signs its entries instead of cachelib's, which would unpickle whatever Redis holds.
    cache.init_app(app, {"CACHE_TYPE": cache_backend.flask_caching_type(app.config["CACHE_TYPE"])})
    # WTForms' own messages are never shown (the login form has its own), and translating them
    # made Flask-WTF read WTForms' catalog from disk for every form: a third of a login page.
    app.config.setdefault("WTF_I18N_ENABLED", False)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    from flask_babel.speaklater import LazyString

    # Empty (so not flashed) for the home page: nobody asked for a page in particular there.
    login_manager.login_message = LazyString(_sign_in_prompt)
    login_manager.refresh_view = "auth.login"
    # Nothing flashed: the form itself says why the password is asked again (the two said it
    # twice, the flash in a success colour).
    login_manager.needs_refresh_message = ""
    login_manager.localize_callback = str  # the lazy message, in the request's language
    # SESSION_PROTECTION (Flask-Login reads it from the config) compares this fingerprint,
    # not Flask-Login's own, which trusts the client-supplied X-Forwarded-For header.
    from flask_login import user_loaded_from_cookie

    from .signin.sessions import PortalSessionInterface, bind_to_client, client_fingerprint

    login_manager._session_identifier_generator = client_fingerprint
    user_loaded_from_cookie.connect(bind_to_client, app)
    app.session_interface = PortalSessionInterface()
    audit.init_app(app)
    i18n.init_app(app)
    brand.init_app(app)  # before access: app icons may come from BRAND_DIR/static
    _check_page_templates(app)  # after brand: a page's template may come from BRAND_DIR
    access.init_app(app)
    for warning in access.unguarded_apps(app) if log_warnings else ():
        app.logger.warning("settings: %s", warning)
    directory.init_app(app)
    accounts.init_app(app)
    errors.init_app(app)

    from .admin import bp as admin_bp
    from .auth import bp as auth_bp
    from .health import bp as health_bp
    from .main import bp as main_bp
    from .sso import bp as sso_bp

    for blueprint in (auth_bp, main_bp, admin_bp, health_bp, sso_bp):
        app.register_blueprint(blueprint)
    throttle.init_app(app)
    from .cli import commands

    for command in commands:
        app.cli.add_command(command)
    from .web import exporter  # GET /metrics

    exporter.init_app(app)
    from . import watcher

    watcher.init_app(app)
    _wrap_wsgi(app)
    return app


def _wrap_wsgi(app: Flask) -> None:
    # Outermost first: ProxyFix (the client address and scheme), the request guard (unusable
    # hosts), the fast path (a signed-in person's everyday requests), then Flask.
    from .web.fastpath import FastPath
    from .web.request_guard import RequestGuard

    app.wsgi_app = RequestGuard(FastPath(app, app.wsgi_app), app.config["APPLICATION_ROOT"] or "",
                                _several_processes_refused(app.config))  # fmt: skip
    if app.config["TRUSTED_PROXY_HOPS"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Only as many X-Forwarded-* entries as there are proxies of ours: the rest were
        # written by the client.
        hops = app.config["TRUSTED_PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)


def _sign_in_prompt() -> str:
    # What the sign-in page says to a visitor sent there from a page that needs a sign-in.
    from flask import request
    from flask_babel import gettext

    from .accounts import ENDED

    if request.environ.get(ENDED):
        # A sign-in ended elsewhere (signed out on another device, everywhere, or by an
        # administrator) or run out: the person learns why they are asked again.
        return gettext("Your sign-in has ended (signed out elsewhere, or it ran out). Please "
                       "sign in again.")  # fmt: skip
    if request.endpoint == "main.home":
        return ""
    return gettext("Please sign in to open that page.")


def _several_processes_refused(config) -> str:
    # Why these settings cannot be served by several processes ("" when they can): the server
    # itself says at each request whether it runs several (gunicorn without the shipped
    # configuration's check, or another server), and the request guard then answers 503.
    try:
        settings.check_processes(config, 2, how_many="several")
    except settings.ConfigError as refused:
        return f"this server runs several processes: {refused}"
    return ""


def _derive_settings(app: Flask) -> None:
    # Flask, Flask-Login and Flask-Caching settings that follow from the portal's own keys.
    secure = app.config["SESSION_COOKIE_SECURE"]
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        # "Keep me signed in" must reach the same apps as the session cookie does.
        REMEMBER_COOKIE_DOMAIN=app.config.get("SESSION_COOKIE_DOMAIN"),
        REMEMBER_COOKIE_DURATION=timedelta(days=app.config["REMEMBER_COOKIE_DAYS"]),
        CACHE_DEFAULT_TIMEOUT=app.config["USER_CACHE_TTL"],
        # The Redis client (socket timeouts, TLS, Sentinel) is built by portal.cache.redis_clients
        # from CACHE_REDIS_URL, CACHE_REDIS_TIMEOUT and CACHE_REDIS_CA_FILE.
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session that carries it
    )
    app.config.update(cookies.cookie_names(app.config))  # __Host-/__Secure- when Secure


def _check_page_templates(app: Flask) -> None:
    # A page whose template is missing would be a 500 for whoever opens it: refuse to start.
    from jinja2 import TemplateNotFound

    for number, page in enumerate(app.config["PAGES"], 1):
        if "template" in page:
            try:
                app.jinja_env.get_template(page["template"])
            except TemplateNotFound as error:
                raise settings.ConfigError(
                    f"setting PAGES[{number}].template: no template {error.name!r} in "
                    f"{app.template_folder}" + (" or BRAND_DIR" if app.config["BRAND_DIR"] else "")
                ) from error
