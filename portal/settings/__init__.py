"""Settings: documented defaults, settings.toml, `PORTAL_*` environment, validation at start-up.

Order (later wins): the defaults (each documented in `defaults.py`), the TOML file named by
`PORTAL_SETTINGS` (else `settings.toml` in the working directory), then `PORTAL_<KEY>`
environment variables whose values are parsed as JSON. A bad or missing setting raises
`ConfigError` naming the key and the fix; the checks live in `checks.py` (shared ones in
`values.py`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from flask import Config

from . import defaults as documented
from .checks import ConfigError, check_settings

__all__ = [
    "ConfigError",
    "check_processes",
    "defaults",
    "known_keys",
    "load",
    "load_settings_file",
    "serving_processes",
    "throttle_storage_url",
    "validate",
]


#: Flask reads upper-case setting names only: any other is refused, not dropped without a word.
_IN_CAPITALS = "setting names are written in capitals"


def defaults() -> dict[str, Any]:
    """Return the documented defaults as a fresh dict (lists and tables copied)."""
    return {
        key: copy.deepcopy(value)
        for key, value in vars(documented).items()
        if key.isupper() and key[0] != "_"
    }


def known_keys() -> set[str]:
    """The names of every documented setting."""
    return set(defaults())


def load_settings_file(environ=os.environ) -> dict[str, Any]:
    """Read the TOML settings file (PORTAL_SETTINGS, else ./settings.toml) if there is one."""
    named = environ.get("PORTAL_SETTINGS")
    path = Path(named) if named else Path.cwd() / "settings.toml"
    try:
        # TOML is UTF-8, whatever the locale says; a BOM (some editors write one) is no part of it.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        if named:
            raise ConfigError(f"PORTAL_SETTINGS: no such file {path}") from None
        return {}
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a settings file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot be read ({error.strerror}); the portal's user must be able to read it"
        ) from None
    try:
        settings = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from error
    for key in settings:
        # Flask's from_mapping keeps upper-case keys only: any other would be dropped.
        if not key.isupper():
            raise ConfigError(f"{path}: setting {key}: {_IN_CAPITALS} ({key.upper()})")
    return settings


def load() -> Config:
    """The settings a server starts with: defaults, the settings file, PORTAL_* variables."""
    config = Config(Path.cwd())
    config.from_mapping(defaults())
    config.from_mapping(load_settings_file())
    try:
        config.from_prefixed_env("PORTAL")
    except (TypeError, KeyError) as error:
        # PORTAL_KEY__PART sets one key inside a table: Flask fails where KEY is no table.
        nested = sorted(name for name in os.environ if name.startswith("PORTAL_") and "__" in name)
        raise ConfigError(
            f"{', '.join(nested) or 'PORTAL_*'}: sets one part of a setting that is no table "
            f"({error}); give the whole value as JSON instead, e.g. "
            'PORTAL_HELP_TEXT=\'{"en": "...", "de": "..."}\''
        ) from error
    for key in config:
        if not key.isupper():  # kept by from_prefixed_env, dropped by create_app's from_mapping
            raise ConfigError(f"PORTAL_{key}: {_IN_CAPITALS} (PORTAL_{key.upper()})")
    return config


def throttle_storage_url(config) -> str:
    """Where failed-login counts live: THROTTLE_STORAGE_URL, else the Redis cache, else memory."""
    if config["THROTTLE_STORAGE_URL"]:
        return config["THROTTLE_STORAGE_URL"]
    if config["CACHE_TYPE"] == "RedisCache":
        return config["CACHE_REDIS_URL"]
    return "memory://"


def serving_processes(environ=os.environ) -> int:
    """How many processes the environment says will serve (gunicorn's WEB_CONCURRENCY; 1)."""
    value = environ.get("WEB_CONCURRENCY", "1").strip()
    return int(value) if value.isdigit() else 1


def validate(config) -> list[str]:
    """Check every setting; raise ConfigError naming the first bad key, return warnings."""
    return check_settings(config, known_keys())


def check_processes(config, processes: int, how_many: str = "") -> None:
    """Refuse to serve from several processes with state that each would keep for itself.

    In production, with more than one worker process, sign-out, revocation marks and the user
    cache must be shared (CACHE_TYPE = "RedisCache") and so must the throttle counts
    (THROTTLE_STORAGE_URL not memory://): otherwise a copied cookie still works on the worker
    that never heard of the sign-out, and N workers let N times the guesses through.
    `how_many` says the count in words when it is not known ("several").
    """
    if processes <= 1 or config["ENV"] == "development":
        return
    how_many = how_many or str(processes)
    if config["CACHE_TYPE"] != "RedisCache":
        raise ConfigError(
            f"setting CACHE_TYPE: {config['CACHE_TYPE']} keeps sign-outs and revocations in each "
            f"process, and {how_many} worker processes would each keep their own: set "
            'CACHE_TYPE = "RedisCache" (with CACHE_REDIS_URL), or serve with one worker and '
            "threads (gunicorn --workers 1 --threads 8)"
        )
    if throttle_storage_url(config).startswith("memory://"):
        raise ConfigError(
            f"setting THROTTLE_STORAGE_URL: memory:// counts failed logins in each process, so "
            f"{how_many} worker processes would let {how_many} times the guesses through: "
            "leave it empty (the cache's Redis) or give a redis:// URL"
        )


def environment_hint(message: str, environ=os.environ) -> str:
    """What to add to a refused setting's message when a PORTAL_* variable gave its value: that
    it was read as JSON (PORTAL_LDAP_BIND_PASSWORD=12345 is a number), or set but empty."""
    key = re.match(r"setting (\w+)", message)
    variable = f"PORTAL_{key.group(1)}" if key else ""
    if not variable or variable not in environ or "unknown setting" in message:
        return ""  # a misspelled name is not a matter of quoting
    if not environ[variable].strip():
        # An environment file's "PORTAL_SECRET_KEY=" line: empty, yet it wins over the file.
        said = (f"; it comes from {variable}, which is set but empty (as a line "
                f"\"{variable}=\" in an environment file sets it)")  # fmt: skip
        if key.group(1) in _settings_file_keys(environ):
            return said + " and wins over the settings file's value: remove it, or give it one"
        return said + ": give it the value"
    read = _as_json(environ[variable])
    if isinstance(read, str) and "a list" not in message:
        return ""  # read as the text it is (PORTAL_ENV=dev): quoting would change nothing
    if isinstance(read, int | float) and not isinstance(read, bool) and "number" in message:
        return ""  # a number out of range (PORTAL_USER_CACHE_TTL=-1): quoting is not the fix
    if "a list" in message:
        if isinstance(read, list):
            return ""  # read as the list it is: what is wrong is inside it, not the quoting
        # Only the list is the fix: "a text in quotes" was the very mistake being refused.
        return (f"; it comes from {variable}, whose value is read as JSON: give a list, as "
                f"{variable}='[\"...\"]'")  # fmt: skip
    return (f"; it comes from {variable}, whose value is read as JSON: a number as 5, true "
            f"or false, a list as '[\"a\"]', a text in quotes as {variable}='\"...\"'")  # fmt: skip


def _settings_file_keys(environ) -> set[str]:
    # The keys the settings file gives (none when it cannot be read: that is said apart).
    try:
        return set(load_settings_file(environ))
    except ConfigError:
        return set()


def _as_json(value: str):
    # As Flask reads a PORTAL_* variable: JSON when it parses, else the text itself.
    try:
        return json.loads(value)
    except ValueError:
        return value
