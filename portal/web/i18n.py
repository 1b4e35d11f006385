"""Languages: every page in the language the browser asks for (Accept-Language), among
LANGUAGES; English when it asks for none of them. Catalogs live in portal/translations/; the
texts settings give per language (settings/texts.py) are shown through `localized`."""

from __future__ import annotations

from flask import Flask, current_app, has_request_context, request
from flask_babel import Babel, get_locale

from ..settings.texts import Text
from ..settings.values import TRANSLATIONS


def init_app(app: Flask) -> None:
    """Choose each request's language from Accept-Language among LANGUAGES."""
    Babel(app, locale_selector=select_language, default_translation_directories=str(TRANSLATIONS))
    app.jinja_env.globals["get_locale"] = get_locale  # <html lang="...">
    app.jinja_env.filters["localized"] = localized


def localized(value) -> str:
    """A text from settings (a string, a table per language, or a Text) in this request's
    language, else in the first of LANGUAGES."""
    languages = current_app.config["LANGUAGES"]
    return Text.of(value, languages).in_language(str(get_locale() or languages[0]))


def select_language() -> str:
    """The LANGUAGES entry the browser prefers, else the first of LANGUAGES; English outside a
    request (the command line, whose own words are English: its reasons must not be German
    inside English lines, nor differ for scripts that read them)."""
    languages = current_app.config["LANGUAGES"]
    if not has_request_context():
        return "en"
    return request.accept_languages.best_match(languages) or languages[0]
