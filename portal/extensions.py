"""Unbound Flask extensions; `create_app` binds each to the app with init_app."""

from flask_caching import Cache

from .signin.cookies import PortalLoginManager
from .signin.csrf import RotatingCSRFProtect

login_manager = PortalLoginManager()
cache = Cache()
csrf = RotatingCSRFProtect()
