"""Single sign-on for other apps behind the same reverse proxy (forward authentication)."""

from flask import Blueprint

bp = Blueprint("sso", __name__)

from . import views  # noqa: E402, F401  (routes register themselves on bp)
