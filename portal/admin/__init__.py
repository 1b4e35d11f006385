"""Pages for the portal's administrators."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")

from . import views  # noqa: E402, F401  (routes register themselves on bp)
