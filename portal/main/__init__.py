"""The single sign-on home page and the group-restricted pages."""

from flask import Blueprint

from ..access import enforce_access_rules

bp = Blueprint("main", __name__)

bp.before_request(enforce_access_rules)

from . import views  # noqa: E402, F401  (routes register themselves on bp)
