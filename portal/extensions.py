"""Unbound Flask extensions; `create_app` binds each to the app with init_app."""

from flask_caching import Cache
from flask_wtf import CSRFProtect

from .signin.cookies import PortalLoginManager

login_manager = PortalLoginManager()
cache = Cache()
csrf = CSRFProtect()
