"""Pages for the portal's administrators."""

from flask import Blueprint

from ..access import enforce_access_rules

bp = Blueprint("admin", __name__, url_prefix="/admin")

bp.before_request(enforce_access_rules)

from . import views  # noqa: E402, F401  (routes register themselves on bp)
