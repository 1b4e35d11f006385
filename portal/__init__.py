"""The portal application factory."""

from __future__ import annotations

import time
from datetime import timedelta

from flask import Flask

from . import config


def create_app(test_config: dict | None = None) -> Flask:
    """Build the portal: settings, extensions, directory, user loader, blueprints."""
    app = Flask(__name__)
    app.config.from_mapping(config.defaults())
    if test_config is None:
        app.config.from_mapping(config.load_settings_file())
        app.config.from_prefixed_env("PORTAL")
    else:
        app.config.from_mapping(test_config)
    for warning in config.validate(app.config):
        app.logger.warning("settings: %s", warning)
    _derive_settings(app)
    app.config["PORTAL_STARTED_AT"] = time.time()
    _check_page_templates(app)

    from . import accounts, directory, errors
    from .extensions import cache, csrf, login_manager

    cache.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to open that page."
    login_manager.refresh_view = "auth.login"
    login_manager.needs_refresh_message = "Please enter your password again to open that page."
    # "basic"/"strong" protection fingerprints the client-supplied X-Forwarded-For header;
    # sessions are protected by the signed cookie and the cached is_active check instead.
    login_manager.session_protection = None
    # ...and the fingerprint it would compare is then never used, but Flask-Login still hashes
    # the client's address and user agent on every request to compute it.
    login_manager._session_identifier_generator = str
    from .sessions import PortalSessionInterface

    app.session_interface = PortalSessionInterface()
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
    from .cli import commands

    for command in commands:
        app.cli.add_command(command)
    from . import metrics  # GET /metrics

    metrics.init_app(app)
    return app


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
        # Without socket timeouts a hung Redis would hang every request that reads the cache.
        CACHE_OPTIONS={
            "socket_timeout": app.config["CACHE_REDIS_TIMEOUT"],
            "socket_connect_timeout": app.config["CACHE_REDIS_TIMEOUT"],
        }
        if app.config["CACHE_TYPE"] == "RedisCache"
        else {},
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session that carries it
    )


def _check_page_templates(app: Flask) -> None:
    # A page whose template is missing would be a 500 for whoever opens it: refuse to start.
    from jinja2 import TemplateNotFound

    for number, page in enumerate(app.config["PAGES"], 1):
        if "template" in page:
            try:
                app.jinja_env.get_template(page["template"])
            except TemplateNotFound as error:
                raise config.ConfigError(
                    f"setting PAGES[{number}].template: no template {error.name!r} in "
                    f"{app.template_folder}"
                ) from error
