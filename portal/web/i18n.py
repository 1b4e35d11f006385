"""Languages: every page in the language the browser asks for (Accept-Language), among
LANGUAGES; English when it asks for none of them. Catalogs live in portal/translations/; the
texts settings give per language (settings/texts.py) are shown through `localized`."""

from __future__ import annotations

from flask import Flask, current_app, has_request_context, request
from flask_babel import Babel, get_locale
from flask_babel import lazy_gettext as _l

from ..settings.defaults import PORTAL_NAME as SHIPPED_NAME
from ..settings.texts import Text
from ..settings.values import TRANSLATIONS

#: PORTAL_NAME's default, for the catalog (the same words as SHIPPED_NAME).
_SHIPPED_NAME = _l("Intranet portal")


def init_app(app: Flask) -> None:
    """Choose each request's language from Accept-Language among LANGUAGES."""
    Babel(app, locale_selector=select_language, default_translation_directories=str(TRANSLATIONS))
    app.jinja_env.globals["get_locale"] = get_locale  # <html lang="...">
    app.jinja_env.filters["localized"] = localized
    app.jinja_env.globals["portal_name"] = portal_name


def portal_name() -> str:
    """PORTAL_NAME in this request's language; left as shipped, in the catalog's words for it
    (the setting stays a plain text, so brand templates that show it as it is keep working)."""
    value = current_app.config["PORTAL_NAME"]
    return str(_SHIPPED_NAME) if value == SHIPPED_NAME else localized(value)


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
    return preferred_language(request.accept_languages, languages) or languages[0]


def preferred_language(accepted, languages: list[str]) -> str | None:
    """The first of LANGUAGES that the browser's most wanted language asks for, by its whole
    tag or by its language alone ("en-GB" is English), else None.

    werkzeug's best_match takes a whole-tag match anywhere over a regional one earlier: "en-GB,
    de;q=0.5" was German for a British browser, "de-AT, en;q=0.9" English for an Austrian one.
    `accepted` is werkzeug's parsed header; most wanted is the highest quality, the browser's
    order among equals. "*" is the first of LANGUAGES the header does not refuse (q=0).
    """
    refused = {_tag(value) for value, quality in accepted if quality <= 0}
    whole = {_tag(language): language for language in languages}
    alone: dict[str, str] = {}
    for language in sorted(languages, key=lambda item: "-" in _tag(item)):
        alone.setdefault(_tag(language).split("-")[0], language)  # "pt" before "pt-BR"
    for value, quality in sorted(accepted, key=lambda item: -item[1]):
        wanted = _tag(value)
        if quality <= 0:
            continue  # "q=0": not this one
        if wanted == "*":
            left = [language for language in languages if _tag(language) not in refused]
            return left[0] if left else None
        found = whole.get(wanted) or alone.get(wanted.split("-")[0])
        if found and _tag(found) not in refused:
            return found
    return None


def _tag(language: str) -> str:
    # "pt_BR", "pt-br" and "PT-BR" are one language tag.
    return language.replace("_", "-").lower()
