"""The company's own look without editing the package.

PORTAL_NAME, a logo (PORTAL_LOGO) and favicon (PORTAL_FAVICON), an accent colour
(ACCENT_COLOUR, served as a small stylesheet of the portal's own, so the Content-Security-Policy
needs no inline style), a footer (FOOTER_TEXT, FOOTER_LINKS), and BRAND_DIR: its templates/
and static/ folders come before the package's, so a company can replace any template (Flask's
loader chain) or file (the logo, portal.css, an app's icon) by putting one of the same name there.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, Response, current_app, send_from_directory
from jinja2 import ChoiceLoader, FileSystemLoader
from werkzeug.security import safe_join

from ..settings import ConfigError

_STATIC_FOLDERS = "portal.static_folders"


def init_app(app: Flask) -> None:
    """Put BRAND_DIR before the package's templates and files; check the brand's files."""
    config = app.config
    folders = [Path(app.static_folder)]
    brand_dir = config["BRAND_DIR"]
    if brand_dir:
        templates, static = Path(brand_dir, "templates"), Path(brand_dir, "static")
        if templates.is_dir():
            app.jinja_loader = ChoiceLoader([FileSystemLoader(str(templates)), app.jinja_loader])
        if static.is_dir():
            folders.insert(0, static)
    app.extensions[_STATIC_FOLDERS] = folders
    for key in ("PORTAL_LOGO", "PORTAL_FAVICON"):
        if config[key] and find_static(folders, config[key]) is None:
            raise ConfigError(f"setting {key}: there is no file {config[key]} in "
                              f"{' or '.join(str(folder) for folder in folders)}")  # fmt: skip
    app.view_functions["static"] = _static
    app.add_url_rule("/brand.css", "brand_css", _brand_css)


def find_static(folders: list[Path], filename: str) -> Path | None:
    """The first folder's file of that name (a path inside the folder), or None."""
    for folder in folders:
        joined = safe_join(str(folder), filename)
        # os.path.isfile, not Path.is_file: a name too long for the file system is "not
        # here" (a 404), not an OSError (a 500 anyone could cause).
        if joined is not None and os.path.isfile(joined):
            return folder
    return None


def static_folders(app: Flask) -> list[Path]:
    """Where static files are looked for: BRAND_DIR/static first, then the package's."""
    return app.extensions[_STATIC_FOLDERS]


def _static(filename: str):
    # Flask's static view, looking in the brand's folder first.
    folder = find_static(static_folders(current_app), filename)
    if folder is None:
        return current_app.send_static_file(filename)  # the usual 404
    return send_from_directory(
        folder, filename, max_age=current_app.get_send_file_max_age(filename)
    )


def _brand_css() -> Response:
    # The accent colour as a stylesheet, after portal.css; empty without ACCENT_COLOUR.
    colour = current_app.config["ACCENT_COLOUR"]
    body = f":root {{ --accent: {colour}; }}\n" if colour else ""
    return Response(body, mimetype="text/css")
