"""Settings: defaults, TOML file, PORTAL_* environment, and start-up validation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from portal import create_app
from portal.settings import ConfigError, load_settings_file, validate
from tests.conftest import ROOT, demo_settings

#: A key as `secrets.token_hex(24)` makes one (production refuses obviously weak ones).
PRODUCTION_KEY = "9f2c4e71b03a8d56e1f7c2a94b0d3e68f15a7c29d4e80b36"


def settings(**changes):
    """The demo settings with some keys changed (None deletes a key)."""
    values = demo_settings() | {"SECRET_KEY": "x" * 40, "ENV": "development"}
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
        ("SESSION_PROTECTION", "on"),
        ("TRUSTED_PROXY_HOPS", -1),
        ("TRUSTED_PROXY_HOPS", "1"),
        ("THROTTLE_ACCOUNT_LIMIT", "lots"),
        ("THROTTLE_IP_LIMIT", ""),
        ("THROTTLE_STORAGE_URL", "memcached://x"),
        ("LOGIN_FAILURE_FLOOR_MS", -5),
        ("SESSION_MAX_AGE_HOURS", 0),
        ("SESSION_COOKIE_SECURE", "False"),
        ("SECRET_KEY_FALLBACKS", "an-old-key"),
        ("SECRET_KEY_FALLBACKS", ["an-old-key", ""]),
        ("SSO_FORWARDED_GROUPS", "app-*"),
        # A wildcard in a path (paths are prefixes: it would never match), or anywhere in a
        # host but as its first label ("*corp.example" would match evilcorp.example).
        ("ACCESS_RULES", [{"paths": ["/app/wiki/*"], "policy": "deny"}]),
        ("ACCESS_RULES", [{"hosts": ["*corp.example"], "policy": "deny"}]),
        ("ACCESS_RULES", [{"hosts": ["wiki.*.example"], "policy": "deny"}]),
        ("ACCESS_RULES", [{"hosts": ["*."], "policy": "deny"}]),
        ("SSO_IDENTITY_HEADERS_MAX_BYTES", -1),
        ("SSO_IDENTITY_HEADERS_MAX_BYTES", "8000"),
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
        # A misspelt key (or one TOML cannot show again, such as a null from the environment).
        (
            {"slug": "ok", "title": "t", "groups": ["staff"], "body": "b", "group": ["x"]},
            "unknown key ['group']",
        ),
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
    monkeypatch.setenv("PORTAL_ENV", "development")
    monkeypatch.setenv("PORTAL_LDAP_URLS", '["ldap://127.0.0.1:1", "ldap://127.0.0.1:2"]')
    monkeypatch.setenv("PORTAL_USER_CACHE_TTL", "42")
    app = create_app()
    assert app.config["LDAP_URLS"] == ["ldap://127.0.0.1:1", "ldap://127.0.0.1:2"]
    assert app.config["USER_CACHE_TTL"] == 42
    assert app.config["LDAP_USER_BASE"] == "ou=people,dc=example,dc=org"


def test_fallback_keys_given_as_one_text_are_refused_in_development_too(monkeypatch):
    """PORTAL_SECRET_KEY_FALLBACKS="$OLDKEY" (not a list) was kept as a text, which the
    session's signer took a character at a time: a session signed with the key "X" signed in
    as anyone. It is refused in development too, and a list of the same key is taken."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("PORTAL_SETTINGS", raising=False)
    monkeypatch.setenv("PORTAL_ENV", "development")
    old_key = "Xq7-old-development-key-with-many-characters"
    monkeypatch.setenv("PORTAL_SECRET_KEY_FALLBACKS", old_key)
    with pytest.raises(ConfigError, match=r"^setting SECRET_KEY_FALLBACKS: a list of earlier keys"):
        create_app()
    monkeypatch.setenv("PORTAL_SECRET_KEY_FALLBACKS", f'["{old_key}"]')
    assert create_app().config["SECRET_KEY_FALLBACKS"] == [old_key]


def test_portal_settings_selects_another_file(monkeypatch, tmp_path):
    """PORTAL_SETTINGS points at another TOML file."""
    other = tmp_path / "other.toml"
    other.write_text(
        (ROOT / "settings.toml").read_text().replace("USER_CACHE_TTL = 300", "USER_CACHE_TTL = 7")
    )
    monkeypatch.setenv("PORTAL_SETTINGS", str(other))
    monkeypatch.setenv("PORTAL_ENV", "development")
    assert create_app().config["USER_CACHE_TTL"] == 7


def test_missing_settings_file_named_by_environment_is_an_error(monkeypatch, tmp_path):
    """A PORTAL_SETTINGS path that does not exist stops start-up."""
    monkeypatch.setenv("PORTAL_SETTINGS", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="PORTAL_SETTINGS"):
        create_app()


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda path: path.mkdir(), "a folder, not a settings file"),
        (lambda path: path.write_bytes(b'PORTAL_NAME = "Caf\xe9"\n'), "not UTF-8 text (byte 18)"),
    ],
    ids=["a folder", "Latin-1 text"],
)
def test_a_settings_file_that_cannot_be_read_is_said_in_one_line(tmp_path, make, said):
    """`portal check` with PORTAL_SETTINGS naming a folder or a file that is no UTF-8 says so
    in one line (exit 2), no traceback; as gunicorn's start-up check does, through ConfigError."""
    named = tmp_path / "settings.toml"
    make(named)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    done = subprocess.run([str(Path(sys.executable).parent / "portal"), "check"], cwd=ROOT,
                          env=dict(env, PORTAL_SETTINGS=str(named)), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done
    assert done.stderr.startswith(f"Error: {named}: {said}"), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stdout, done
    assert "PORTAL_ENV=development" not in done.stderr  # a file's problem: no demo to suggest


def test_a_settings_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Some editors start a UTF-8 file with a BOM: the settings are read as written (it was
    "not valid TOML (Invalid statement (at line 1, column 1))")."""
    named = tmp_path / "settings.toml"
    named.write_bytes('\ufeffUSER_CACHE_TTL = 7\nPORTAL_NAME = "Café"\n'.encode())
    assert load_settings_file({"PORTAL_SETTINGS": str(named)}) == {
        "USER_CACHE_TTL": 7, "PORTAL_NAME": "Café"
    }  # fmt: skip


def test_a_settings_file_the_portal_may_not_read_names_the_permission(tmp_path, monkeypatch):
    """A settings file its user may not read (injected: the suite may run as root, who reads
    anything) is a ConfigError naming the file and the reason, not a PermissionError."""
    named = tmp_path / "settings.toml"
    named.write_text("USER_CACHE_TTL = 7\n")

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refused)
    with pytest.raises(ConfigError) as raised:
        load_settings_file({"PORTAL_SETTINGS": str(named)})
    assert str(raised.value) == (
        f"{named}: cannot be read (Permission denied); the portal's user must be able to read it"
    )


@pytest.mark.parametrize("key", ["LDAP_CA_FILE", "CACHE_REDIS_CA_FILE"])
@pytest.mark.parametrize(
    "content",
    [b"-----BEGIN PRIVATE KEY-----\nMIIEvQ==\n-----END PRIVATE KEY-----\n", b"not a certificate\n"],
    ids=["a private key", "text"],
)
def test_a_ca_file_that_holds_no_certificate_stops_start_up(tmp_path, key, content):
    """A key or any other file given as the CA certificate is refused at start-up, naming the
    file (it was accepted, and every connection failed: NO_CERTIFICATE_OR_CRL_FOUND)."""
    named = tmp_path / "ca.pem"
    named.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        create_app(settings(**{key: str(named)}))
    said = str(raised.value)
    assert said.startswith(f"setting {key}: {named} holds no CA certificate"), said
    assert "give the PEM file of the CA that signed the server's certificate" in said


def test_a_ca_file_with_a_certificate_is_taken(tmp_path):
    """The test CA's own certificate (PEM) passes the check."""
    from portal.testing.tls import make_ca

    certificate, _ = make_ca(tmp_path)
    app = create_app(settings(LDAP_CA_FILE=str(certificate)))
    assert app.config["LDAP_CA_FILE"] == str(certificate)
    app.extensions["portal.directory"].close()


def test_production_is_the_default_and_refuses_dev_secrets_and_plain_http(monkeypatch):
    """Without PORTAL_ENV the portal is in production: dev-only values and insecure cookies fail."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("PORTAL_SETTINGS", raising=False)
    monkeypatch.delenv("PORTAL_ENV", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app()
    monkeypatch.setenv("PORTAL_SECRET_KEY", '"' + PRODUCTION_KEY + '"')
    with pytest.raises(ConfigError, match="LDAP_BIND_PASSWORD"):
        create_app()
    monkeypatch.setenv("PORTAL_LDAP_BIND_PASSWORD", '"a-real-secret"')
    with pytest.raises(ConfigError, match="SESSION_COOKIE_SECURE"):
        create_app()
    monkeypatch.setenv("PORTAL_SESSION_COOKIE_SECURE", "true")
    assert create_app().config["ENV"] == "production"


@pytest.mark.parametrize(
    ("settings", "named"),
    [({"SECRET_KEY_FALLBACKS": ["dev-only-compose-secret-key-change-me-0123456789"]},
      "SECRET_KEY_FALLBACKS"),
     ({"SECRET_KEY_FALLBACKS": ["short-old-key"]}, "SECRET_KEY_FALLBACKS"),
     ({"SECRET_KEY_FALLBACKS": ["ab" * 24]}, "SECRET_KEY_FALLBACKS"),
     ({"SECRET_KEY": "x" * 48}, "SECRET_KEY"),
     ({"SECRET_KEY": "abcd" * 12}, "SECRET_KEY"),
     ({"SECRET_KEY": "DEV-ONLY-" + "k" * 40}, "SECRET_KEY")],
    ids=["dev-only fallback", "short fallback", "two characters repeated", "one character",
         "four characters", "dev-only in capitals"],
)  # fmt: skip
def test_production_refuses_a_published_key_among_the_fallbacks(settings, named):
    """Cookies signed with a fallback key are accepted: a dev-only key moved there by a rotation
    would let anyone forge a sign-in, so production refuses it as it refuses SECRET_KEY."""
    from tests.conftest import demo_settings

    production = demo_settings() | {
        "ENV": "production", "SECRET_KEY": PRODUCTION_KEY, "LDAP_BIND_PASSWORD": "reader-password",
        "SESSION_COOKIE_SECURE": True,
    }  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        create_app(production | settings)
    assert str(raised.value).startswith(f"setting {named}:")
    # The line drawn: five different characters pass, wherever the key is listed.
    passing = "abcde" * 10
    assert create_app(production | {key: passing if key == "SECRET_KEY" else [passing]
                                    for key in settings})  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("LDAP_GROUP_FILTER", "(|(member={user_dn})(memberUid={uid}))", "unknown placeholder"),
        ("LDAP_USER_FILTER", "(&(uid={username})(x={y}))", "unknown placeholder"),
        ("LDAP_USER_FILTER", "(&(uid={username})", "not a valid LDAP filter"),
        ("LDAP_USER_FILTER", "uid={username}", "not a valid LDAP filter"),
        # Parsed, but a substring match without a substring: refused at every sign-in.
        ("LDAP_USER_FILTER", "(&(uid={username})(mail=**))", "(mail=**) or (mail= *) in the"),
        ("LDAP_DISABLED_FILTER", "(nsAccountLock = *)", "is written (nsAccountLock=*)"),
        (
            "LDAP_USER_FILTER",
            "(&(uid={username})" + "(!" * 60 + "(a=b)" + ")" * 60 + ")",
            "nested more than 50 levels deep",
        ),
        ("LDAP_USER_FILTER", "(uid={username)", "brace"),
        ("LDAP_USER_BASE", "people", "not a DN"),
        ("LDAP_GROUP_BASE", "ou=groups,,dc=x", "not a DN"),
        ("LDAP_URLS", ["ldap://"], "must look like"),
        ("LDAP_URLS", ["ldap://host:abc"], "must look like"),
        ("LDAP_URLS", ["ldap://host:70000"], "must look like"),
        ("LDAP_URLS", ["ldap://host/dc=example"], "must look like"),
        ("LDAP_BIND_PASSWORD", "", "set a value"),
        (
            "SECRET_KEY",
            None,
            "as PORTAL_SECRET_KEY, outside the settings file) of at least 32 "
            "random characters, e.g. the output of python3 -c",
        ),  # fmt: skip
        ("LDAP_CA_FILE", "/no/such/ca.pem", "no such file"),
        ("ENV", "staging", "'staging' is not one of production or development"),
        ("ACCESS_DEFAULT_POLICY", "Deny", "'Deny' is not one of allow or deny"),
        (
            "ACCESS_RULES",
            [{"paths": ["/app/x"], "policy": "Allow"}],
            """ACCESS_RULES[1].policy: 'Allow': "allow" or "deny", in lower case""",
        ),
        ("LDAP_BIND_DN", "reader", "'reader' is not a DN (such as cn=reader,dc=corp,dc=example)"),
    ],
)
def test_mistakes_in_directory_settings_stop_start_up(key, value, says):
    """Filters, DNs and URLs are checked at start-up, not at the first login."""
    with pytest.raises(ConfigError, match=key) as raised:
        create_app(settings(**{key: value}))
    assert says in str(raised.value)


def test_misspelled_setting_is_refused_with_a_suggestion():
    """An unknown LDAP_* key is a typo: start-up stops and names the likely key."""
    with pytest.raises(ConfigError, match="LDAP_CONECT_TIMEOUT") as raised:
        create_app(settings(LDAP_CONECT_TIMEOUT=3))
    assert "did you mean LDAP_CONNECT_TIMEOUT?" in str(raised.value)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("WATCH_INTERVALL", "WATCH_INTERVAL"),
        ("CACHE_TYP", "CACHE_TYPE"),
        ("SESSION_PROTECTON", "SESSION_PROTECTION"),
        ("TRUSTED_PROXY_HOP", "TRUSTED_PROXY_HOPS"),
        ("PAGE", "PAGES"),
        ("PORTAL_NAM", "PORTAL_NAME"),
        ("APPZ", "APPS"),
        ("HELP_URI", "HELP_URL"),
        ("REMEMBER_COOKIE_DAY", "REMEMBER_COOKIE_DAYS"),
        ("SESION_COOKIE_SECURE", "SESSION_COOKIE_SECURE"),  # Flask's, outside the prefixes
        ("HSTS_MAX_AG", "HSTS_MAX_AGE"),
    ],
)
def test_misspelled_settings_of_every_kind_are_refused(typo, meant):
    """Not only LDAP_*: a misspelled key the portal would ignore without a word (a watcher
    that keeps running, a cache that stays per process) stops start-up, naming the key."""
    with pytest.raises(ConfigError, match=typo) as raised:
        create_app(settings(**{typo: 1}))
    assert f"did you mean {meant}?" in str(raised.value)


def test_the_switch_that_turns_sign_in_off_is_refused():
    """Flask-Login's LOGIN_DISABLED would let everyone through login_required: refused."""
    with pytest.raises(ConfigError, match="setting LOGIN_DISABLED: unknown setting"):
        create_app(settings(LOGIN_DISABLED=True))


def test_keys_flask_and_its_extensions_read_are_not_taken_for_typos():
    """SESSION_COOKIE_NAME (Flask), REMEMBER_COOKIE_NAME (Flask-Login) and the keys the
    portal sets while starting pass, in create_app and in the check command alike."""
    app = create_app(settings(SESSION_COOKIE_NAME="intranet", REMEMBER_COOKIE_NAME="keep",
                              APPLICATION_ROOT="/", CACHE_OPTIONS={},
                              CACHE_IGNORE_ERRORS=True))  # fmt: skip
    try:
        assert validate(app.config) is not None
    finally:
        app.extensions["portal.directory"].close()


def test_another_extensions_key_is_not_taken_for_a_typo():
    """Outside the portal's prefixes only a key a letter or two off a known one is refused:
    a key of some other extension, like none of the portal's, passes, with a warning that it
    does nothing (REDIS_URL and TIMEOUT passed in silence; the portal's are CACHE_REDIS_URL
    and LDAP_OPERATION_TIMEOUT)."""
    app = create_app(settings(SQLALCHEMY_DATABASE_URI="sqlite://", REDIS_URL="redis://x",
                              TIMEOUT=5))  # fmt: skip
    try:
        said = validate(app.config)
    finally:
        app.extensions["portal.directory"].close()
    for key in ("SQLALCHEMY_DATABASE_URI", "REDIS_URL", "TIMEOUT"):
        warned = (f"{key}: no setting of the portal, Flask or its extensions has this name, so "
                  "it does nothing (the portal's: portal/settings/defaults.py)")  # fmt: skip
        assert warned in said, said


@pytest.mark.parametrize("cache", ["SimpleCache", "NullCache"])
def test_production_without_redis_warns_that_a_restart_forgets_sign_outs(cache):
    """With the cache in the process, a restart lets every signed-out or revoked login work
    again (SECURITY.md's known limit): production says so at start-up and in `portal check`;
    with RedisCache, and in development, nothing is said."""
    from tests.conftest import demo_settings

    production = demo_settings() | {
        "ENV": "production", "SECRET_KEY": PRODUCTION_KEY, "LDAP_BIND_PASSWORD": "reader-password",
        "SESSION_COOKIE_SECURE": True,
    }  # fmt: skip
    redis = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": "redis://127.0.0.1:1/0"}
    warned = {}
    for name, changes in (("in process", production | {"CACHE_TYPE": cache}),
                          ("redis", production | redis), ("development", settings())):  # fmt: skip
        app = create_app(changes)
        try:
            warned[name] = [w for w in validate(app.config) if w.startswith("CACHE_TYPE")]
        finally:
            app.extensions["portal.directory"].close()
    [said] = warned["in process"]
    assert said.startswith(f"CACHE_TYPE {cache}: sign-outs and revocations are kept in this "
                           "process only, so a restart lets every login ended"), said  # fmt: skip
    assert warned["redis"] == [] and warned["development"] == []


#: PORTAL_* variables a container platform sets for a service named "portal".
PLATFORM_VARIABLES = {
    "PORTAL_SERVICE_HOST": "10.0.0.7",
    "PORTAL_SERVICE_PORT": "8000",
    "PORTAL_PORT": "tcp://10.0.0.7:8000",
    "PORTAL_PORT_8000_TCP_ADDR": "10.0.0.7",
}


@pytest.mark.parametrize(
    "variables",
    [{}, PLATFORM_VARIABLES | {"PORTAL_USE_SESSION_FOR_NEXT": "true"}],
    ids=["the shipped settings", "a platform's variables and Flask-Login's keys"],
)
def test_no_key_the_portal_its_libraries_or_its_platform_set_is_called_unused(
    monkeypatch, variables
):
    """The shipped settings file, as the portal and Flask-WTF fill in the rest (WTF_CSRF_*,
    WTF_I18N_ENABLED: every start warned of nine); a container platform's PORTAL_SERVICE_HOST,
    PORTAL_PORT and more (not the administrator's settings: eight more); Flask-Login's
    USE_SESSION_FOR_NEXT, which acts: no warning that a key does nothing."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("PORTAL_SETTINGS", raising=False)
    monkeypatch.setenv("PORTAL_ENV", "development")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    app = create_app()
    try:
        said = validate(app.config)
    finally:
        app.extensions["portal.directory"].close()
    assert not [warning for warning in said if "does nothing" in warning], said


def test_a_variable_for_the_portals_name_without_its_second_prefix_is_refused(monkeypatch):
    """PORTAL_NAME in the environment sets NAME, not PORTAL_NAME: it was ignored in silence and
    the pages kept the default name; now refused, naming the variable that sets it."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("PORTAL_SETTINGS", raising=False)
    monkeypatch.setenv("PORTAL_ENV", "development")
    monkeypatch.setenv("PORTAL_NAME", "Acme")
    monkeypatch.setenv("PORTAL_DEV_PORT", "5001")  # the portal's own variable: no setting
    with pytest.raises(ConfigError) as raised:
        create_app()
    assert str(raised.value) == (
        "setting NAME: unknown setting (as a variable, PORTAL_NAME sets NAME; the setting "
        "PORTAL_NAME is PORTAL_PORTAL_NAME)"
    )
    monkeypatch.delenv("PORTAL_NAME")
    monkeypatch.setenv("PORTAL_PORTAL_NAME", "Acme")
    app = create_app()
    assert app.config["PORTAL_NAME"] == "Acme"
    app.extensions["portal.directory"].close()


@pytest.mark.parametrize(
    ("line", "said"),
    [
        # Flask keeps only upper-case keys: dropped without a word, and `portal check` said ok.
        ("ldap_connect_timeout = 2", "setting ldap_connect_timeout: setting names are written "
         "in capitals"),
        # The portal's name without its prefix: a typo of PORTAL_LOGO (the variable's wording,
        # "PORTAL_LOGO sets LOGO", is for variables).
        ('LOGO = "x.svg"', "setting LOGO: unknown setting (did you mean PORTAL_LOGO?)"),
    ],
    ids=["lower case", "the name without its prefix"],
)  # fmt: skip
def test_a_line_of_the_settings_file_no_setting_reads_is_refused_naming_it(
    monkeypatch, tmp_path, line, said
):
    """A settings file's line that would do nothing stops start-up, naming the key and the fix."""
    written = tmp_path / "settings.toml"
    written.write_text(line + "\n" + (ROOT / "settings.toml").read_text())
    monkeypatch.setenv("PORTAL_SETTINGS", str(written))
    monkeypatch.setenv("PORTAL_ENV", "development")
    with pytest.raises(ConfigError) as raised:
        create_app()
    assert said in str(raised.value), raised.value
    if line.startswith("ldap_"):
        assert "(LDAP_CONNECT_TIMEOUT)" in str(raised.value)


def test_a_setting_in_lower_case_from_the_environment_is_refused(monkeypatch):
    """PORTAL_ldap_connect_timeout=2 was kept as a key no check knew, and did nothing."""
    monkeypatch.setenv("PORTAL_ENV", "development")
    monkeypatch.setenv("PORTAL_ldap_connect_timeout", "2")
    with pytest.raises(
        ConfigError,
        match=r"^PORTAL_ldap_connect_timeout: setting names are written in capitals "
        r"\(PORTAL_LDAP_CONNECT_TIMEOUT\)",
    ):
        create_app()


def test_page_with_a_missing_template_stops_start_up():
    """A page naming a template that does not exist is refused at start-up."""
    page = {"slug": "x", "title": "X", "groups": ["staff"], "template": "pages/nope.html"}
    with pytest.raises(ConfigError, match=r"PAGES\[1\]\.template"):
        create_app(settings(PAGES=[page]))


@pytest.mark.parametrize(
    ("settings", "processes", "named"),
    [
        ({}, 2, "CACHE_TYPE"),
        ({"CACHE_TYPE": "NullCache"}, 3, "CACHE_TYPE"),
        ({"CACHE_TYPE": "RedisCache", "THROTTLE_STORAGE_URL": "memory://"}, 2,
         "THROTTLE_STORAGE_URL"),
        ({}, 1, None),
        ({"ENV": "development"}, 4, None),
        ({"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": "redis://cache:6379/0"}, 4, None),
    ],
)  # fmt: skip
def test_several_processes_need_shared_state_in_production(settings, processes, named):
    """More than one worker in production: marks, cache and throttle counts must be in Redis."""
    from portal.settings import check_processes, defaults

    config = {**defaults(), **settings}
    if named is None:
        check_processes(config, processes)
        return
    with pytest.raises(ConfigError) as raised:
        check_processes(config, processes)
    assert str(raised.value).startswith(f"setting {named}:")


def test_the_app_itself_refuses_several_processes_announced_by_web_concurrency(monkeypatch):
    """Without gunicorn's hook (another config file, another server), WEB_CONCURRENCY=3 in
    production with per-process state still stops start-up, naming CACHE_TYPE."""
    from portal import create_app
    from tests.conftest import demo_settings

    production = demo_settings() | {
        "ENV": "production", "SECRET_KEY": PRODUCTION_KEY, "LDAP_BIND_PASSWORD": "reader-password",
        "SESSION_COOKIE_SECURE": True,
    }  # fmt: skip
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    with pytest.raises(ConfigError) as raised:
        create_app(production)
    assert str(raised.value).startswith("setting CACHE_TYPE:")
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    create_app(production).extensions["portal.directory"].close()


@pytest.mark.parametrize(
    "key, value",
    [("PASSWORD_RESET_URL", "http://pw.example.org/reset"),
     ("PASSWORD_CHANGE_URL", "http://pw.example.org/change"),
     ("HELP_URL", "http://help.example.org/"),
     ("FOOTER_LINKS", [{"title": "Help", "url": "http://help.example.org/"}])],
)  # fmt: skip
def test_production_links_for_passwords_and_help_are_https(key, value):
    """Where people type passwords or look for help: an http:// address is refused in
    production, as the docs and the message always said (it was taken), and taken while the
    portal is tried out in development."""
    from tests.conftest import demo_settings

    production = demo_settings() | {
        "ENV": "production", "SECRET_KEY": PRODUCTION_KEY, "LDAP_BIND_PASSWORD": "reader-password",
        "SESSION_COOKIE_SECURE": True,
    }  # fmt: skip
    with pytest.raises(ConfigError, match=key):
        create_app(production | {key: value})
    assert create_app(production | {key: value.replace("http", "https")} if isinstance(value, str)
                      else production | {key: [{"title": "Help",
                                               "url": "https://help.example.org/"}]})  # fmt: skip
    assert create_app(settings(**{key: value}))  # development
