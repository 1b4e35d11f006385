"""docker-compose.yml stays in step with the portal's settings (no Docker engine needed)."""

from __future__ import annotations

import json

import yaml

from portal import config, create_app
from tests.conftest import ROOT


def compose() -> dict:
    """The parsed docker-compose.yml."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_openldap_redis_and_portal_with_health_checks():
    """The three services exist, and the portal waits for a healthy directory and cache."""
    services = compose()["services"]
    assert {"openldap", "redis", "portal"} <= set(services)
    assert services["openldap"]["healthcheck"]["test"]
    assert services["portal"]["depends_on"]["openldap"]["condition"] == "service_healthy"
    assert "./ldap_fixtures:/ldifs:ro" in services["openldap"]["volumes"]


def test_compose_portal_environment_is_a_valid_configuration(monkeypatch):
    """Every PORTAL_* variable names a real setting and the whole set passes validation."""
    environment = compose()["services"]["portal"]["environment"]
    known = set(config.defaults()) | {"SECRET_KEY"}
    for name, value in environment.items():
        assert name.startswith("PORTAL_")
        assert name.removeprefix("PORTAL_") in known, f"{name} is not a portal setting"
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("PORTAL_SETTINGS", raising=False)
    app = create_app()
    assert app.config["CACHE_TYPE"] == "RedisCache"
    assert app.config["LDAP_URLS"] == json.loads(environment["PORTAL_LDAP_URLS"])
