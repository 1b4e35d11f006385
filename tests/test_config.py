"""Settings: defaults, TOML file, PORTAL_* environment, and start-up validation."""

from __future__ import annotations

import pytest

from portal import create_app
from portal.config import ConfigError
from tests.conftest import ROOT, demo_settings


def settings(**changes):
    """The demo settings with some keys changed (None deletes a key)."""
    values = demo_settings() | {"SECRET_KEY": "x" * 40}
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    return values


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("LDAP_URLS", None),
        ("LDAP_URLS", []),
        ("LDAP_URLS", "ldap://one-string-not-a-list"),
        ("LDAP_URLS", ["http://not-ldap"]),
        ("LDAP_BIND_DN", ""),
        ("LDAP_USER_BASE", None),
        ("LDAP_USER_FILTER", "(uid=alice)"),
        ("LDAP_GROUP_FILTER", "(member=x)"),
        ("LDAP_CONNECT_TIMEOUT", 2.5),
        ("LDAP_OPERATION_TIMEOUT", 0),
        ("USER_CACHE_TTL", "300"),
        ("ACCESS_ALLOWED_GROUPS", []),
        ("ACCESS_DENIED_GROUPS", "suspended"),
        ("LDAP_ATTR_USERNAME", "uid)(x"),
        ("CACHE_TYPE", "FileSystemCache"),
        ("SECRET_KEY", ""),
    ],
)
def test_bad_setting_stops_start_up_naming_the_key(key, value):
    """A wrong or missing setting raises ConfigError whose message names the key."""
    with pytest.raises(ConfigError, match=key):
        create_app(settings(**{key: value}))


@pytest.mark.parametrize(
    ("page", "fragment"),
    [
        ({"slug": "Bad Slug", "title": "t", "groups": ["staff"], "body": "b"}, "PAGES[1].slug"),
        ({"slug": "ok", "title": "t", "groups": [], "body": "b"}, "PAGES[1].groups"),
        ({"slug": "ok", "title": "t", "groups": ["staff"]}, "PAGES[1]"),
        ({"slug": "ok", "title": "", "groups": ["staff"], "body": "b"}, "PAGES[1].title"),
    ],
)
def test_bad_page_declaration_names_the_page(page, fragment):
    """Each PAGES table is checked, and the error says which one is wrong."""
    with pytest.raises(ConfigError) as raised:
        create_app(settings(PAGES=[page]))
    assert fragment in str(raised.value)


def test_redis_cache_needs_a_redis_url():
    """CACHE_TYPE RedisCache without CACHE_REDIS_URL is refused at start-up."""
    with pytest.raises(ConfigError, match="CACHE_REDIS_URL"):
        create_app(settings(CACHE_TYPE="RedisCache"))


def test_environment_overrides_the_settings_file(monkeypatch):
    """PORTAL_<KEY> values are parsed as JSON and win over settings.toml."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("PORTAL_SETTINGS", raising=False)
    monkeypatch.setenv("PORTAL_LDAP_URLS", '["ldap://127.0.0.1:1", "ldap://127.0.0.1:2"]')
    monkeypatch.setenv("PORTAL_USER_CACHE_TTL", "42")
    app = create_app()
    assert app.config["LDAP_URLS"] == ["ldap://127.0.0.1:1", "ldap://127.0.0.1:2"]
    assert app.config["USER_CACHE_TTL"] == 42
    assert app.config["LDAP_USER_BASE"] == "ou=people,dc=example,dc=org"


def test_portal_settings_selects_another_file(monkeypatch, tmp_path):
    """PORTAL_SETTINGS points at another TOML file."""
    other = tmp_path / "other.toml"
    other.write_text(
        (ROOT / "settings.toml").read_text().replace("USER_CACHE_TTL = 300", "USER_CACHE_TTL = 7")
    )
    monkeypatch.setenv("PORTAL_SETTINGS", str(other))
    assert create_app().config["USER_CACHE_TTL"] == 7


def test_missing_settings_file_named_by_environment_is_an_error(monkeypatch, tmp_path):
    """A PORTAL_SETTINGS path that does not exist stops start-up."""
    monkeypatch.setenv("PORTAL_SETTINGS", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="PORTAL_SETTINGS"):
        create_app()


def test_production_refuses_the_dev_only_secrets(monkeypatch):
    """PORTAL_ENV=production refuses the dev-only values shipped in settings.toml."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("PORTAL_SETTINGS", raising=False)
    monkeypatch.setenv("PORTAL_ENV", "production")
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app()
    monkeypatch.setenv("PORTAL_SECRET_KEY", '"' + "k" * 48 + '"')
    with pytest.raises(ConfigError, match="LDAP_BIND_PASSWORD"):
        create_app()
    monkeypatch.setenv("PORTAL_LDAP_BIND_PASSWORD", '"a-real-secret"')
    assert create_app().config["ENV"] == "production"
