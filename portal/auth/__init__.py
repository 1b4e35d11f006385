"""Sign-in, sign-out and changing one's password."""

from flask import Blueprint

bp = Blueprint("auth", __name__)

from . import password, views  # noqa: E402, F401  (routes register themselves on bp)
