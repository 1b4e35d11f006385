"""Unbound Flask extensions; `create_app` binds each to the app with init_app."""

from flask_caching import Cache
from flask_login import LoginManager
from flask_wtf import CSRFProtect

login_manager = LoginManager()
cache = Cache()
csrf = CSRFProtect()
