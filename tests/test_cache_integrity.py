"""Redis cache integrity: entries are signed JSON, and what the portal did not sign is a miss.

Whoever can write to Redis must not be able to run code in the portal (a pickle) nor grant
themselves groups (a forged entry): each such entry is ignored, logged, and replaced by a
directory read. The tests write straight into a real Redis and sign in against a real slapd.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import pickle
import time
import types

import pytest
from itsdangerous import Signer

from portal.cache import backend
from portal.extensions import cache
from tests.conftest import AuthActions

ADMIN_GROUP = "portal-admins"
OTHER_SECRET = "another-portal-secret-0123456789abcdef"


@pytest.fixture
def warnings_logged(monkeypatch, caplog):
    """The backend's warnings from now on (its once-a-minute limit starts afresh)."""
    monkeypatch.setattr(backend, "_last_warning", float("-inf"))
    caplog.set_level(logging.WARNING, logger=backend.__name__)

    def records() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == backend.__name__]

    return records


class Touch:
    """Pickles to a call of pathlib.Path.touch: unpickling it creates a file, and nothing else."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


def pickled(value: object) -> bytes:
    """A value in cachelib's Redis format: b"!" and a pickle, what an intruder would plant."""
    return b"!" + pickle.dumps(value)


def verified_value(app, raw: bytes | None) -> object:
    """The value of a raw Redis entry, after checking it is signed as the portal must sign it:
    HMAC-SHA256 under a key derived from SECRET_KEY with the salt "portal.cache".

    Raises itsdangerous.BadSignature for anything else, such as cachelib's pickles.
    """
    assert raw is not None, "no entry in Redis"
    signer = Signer(
        app.config["SECRET_KEY"],
        salt="portal.cache",
        key_derivation="hmac",
        digest_method=hashlib.sha256,
    )
    return json.loads(signer.unsign(raw))["v"]


def signed_in_alice(make_instance, slapd):
    """An instance and a client in which alice has just signed in with her password."""
    app = make_instance(slapd)
    client = app.test_client()
    assert AuthActions(client).login("alice").status_code == 302
    return app, client


def assert_replaced_from_directory(app, redis_client, key: str, ldap_spy) -> dict:
    """The request read the directory and left alice's real, signed entry; return its data."""
    assert ldap_spy.count("search") > 0, "the entry was believed: no directory read"
    attrs = json.loads(verified_value(app, redis_client.get(key)))
    assert attrs["username"] == "alice"
    assert ADMIN_GROUP not in attrs["groups"]
    return attrs


def test_a_pickle_planted_in_redis_is_never_unpickled(
    slapd, make_instance, key_prefix, redis_client, ldap_spy, tmp_path, warnings_logged
):
    """A pickle under alice's key would create a file when unpickled: it never is; she is served
    from the directory, and the intrusion is logged."""
    control = tmp_path / "control"
    # The payload is live: unpickling it (here, on purpose, our own bytes) creates the file.
    pickle.loads(pickled(Touch(control))[1:])  # noqa: S301
    assert control.exists()
    app, client = signed_in_alice(make_instance, slapd)
    key = key_prefix + "user:alice"
    marker = tmp_path / "marker"
    redis_client.set(key, pickled(Touch(marker)))

    ldap_spy.reset()
    response = client.get("/")

    assert response.status_code == 200
    assert "Alice Liddell" in response.get_data(as_text=True)
    assert not marker.exists(), "the planted pickle was unpickled"
    assert_replaced_from_directory(app, redis_client, key, ldap_spy)
    assert any(key in line and "treated as a miss" in line for line in warnings_logged())


@pytest.mark.parametrize("forgery", ["pickled", "signed-with-another-key", "edited-body"])
def test_a_forged_entry_with_the_admin_group_grants_nothing(
    forgery, slapd, make_instance, key_prefix, redis_client, ldap_spy
):
    """alice's entry rewritten to add the admin group (unsigned, signed by a portal with another
    SECRET_KEY, or her real signature over edited data) does not open /admin/status."""
    app, client = signed_in_alice(make_instance, slapd)
    assert client.get("/admin/status").status_code == 403
    key = key_prefix + "user:alice"
    with app.app_context():
        real = json.loads(cache.get("user:alice"))
    forged = json.dumps(dict(real, groups=[*real["groups"], ADMIN_GROUP], fetched_at=time.time()))
    if forgery == "pickled":
        redis_client.set(key, pickled(forged), ex=300)
    elif forgery == "signed-with-another-key":
        other = make_instance(slapd, SECRET_KEY=OTHER_SECRET)
        with other.app_context():
            cache.set("user:alice", forged)
    else:
        body, _, signature = redis_client.get(key).rpartition(b".")
        envelope = dict(json.loads(body), v=forged)
        redis_client.set(key, json.dumps(envelope).encode() + b"." + signature, ex=300)

    ldap_spy.reset()
    response = client.get("/admin/status")

    assert response.status_code == 403, "a forged cache entry made alice an administrator"
    assert_replaced_from_directory(app, redis_client, key, ldap_spy)


def test_a_signed_entry_round_trips_with_no_ldap_operation(
    slapd, make_instance, key_prefix, redis_client, ldap_spy
):
    """The entry the portal writes at sign-in is signed JSON and serves the next request alone."""
    app, client = signed_in_alice(make_instance, slapd)
    raw = redis_client.get(key_prefix + "user:alice")
    assert not raw.startswith(b"!"), "the entry is a pickle"
    assert json.loads(verified_value(app, raw))["username"] == "alice"

    ldap_spy.reset()
    response = client.get("/")

    assert response.status_code == 200
    assert "Alice Liddell" in response.get_data(as_text=True)
    assert ldap_spy.operations == 0, ldap_spy.calls


GARBAGE = {
    "binary": lambda raw: b"\x00\xff\xfe not an entry \x80",
    "empty": lambda raw: b"",
    "broken-pickle": lambda raw: b"!\x80\x05\x95garbage",
    "truncated-signature": lambda raw: raw[:-7],
    "truncated-in-half": lambda raw: raw[: len(raw) // 2],
    "body-without-signature": lambda raw: raw.rpartition(b".")[0],
    # A character inside the signature: the last one may carry only padding bits.
    "altered-signature": lambda raw: raw[:-10] + (b"A" if raw[-10:-9] != b"A" else b"B") + raw[-9:],
}


@pytest.mark.parametrize("mangle", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_or_truncated_entries_are_misses_never_a_500(
    mangle, slapd, make_instance, key_prefix, redis_client, ldap_spy, warnings_logged
):
    """A mangled entry under alice's key is a miss: she is served from the directory, once
    logged (the request reads the entry twice: one warning line)."""
    app, client = signed_in_alice(make_instance, slapd)
    key = key_prefix + "user:alice"
    redis_client.set(key, mangle(redis_client.get(key)), ex=300)

    ldap_spy.reset()
    response = client.get("/")

    assert response.status_code == 200
    assert_replaced_from_directory(app, redis_client, key, ldap_spy)
    assert len(warnings_logged()) == 1, warnings_logged()


def test_every_cache_operation_stores_signed_json_or_bare_integers(
    slapd, make_instance, key_prefix, redis_client
):
    """get/set/add/has/delete, their *_many forms and inc/dec work; nothing stored is a pickle:
    integers are bare digits (for INCR), every other value is signed."""
    app = make_instance(slapd)
    values = {"text": '{"a":1}', "number": 1.5, "flag": True, "list": [1, "x"], "map": {"k": 2}}
    with app.app_context():
        assert cache.set("one", "value")
        assert cache.get("one") == "value"
        assert cache.set_many(values, timeout=60) == list(values)
        assert cache.get_many(*values, "absent") == [*values.values(), None]
        assert cache.add("one", "other") is False
        assert cache.add("two", {"v": 2}) is True
        assert cache.get("two") == {"v": 2}
        assert cache.has("two") and not cache.has("absent")
        assert cache.set("counter", 5)
        # Flask-Caching's Cache does not pass inc/dec on: they are the backend's.
        assert cache.cache.inc("counter") == 6
        assert cache.cache.dec("counter", 2) == 4
        assert cache.get("counter") == 4
        assert cache.cache.inc("fresh-counter") == 1
        with pytest.raises(TypeError):
            cache.set("bytes", b"not JSON")
        for name in ["one", "two", *values]:
            raw = redis_client.get(key_prefix + name)
            stored = cache.get(name)
            assert verified_value(app, raw) == stored, f"{name}: {raw[:30]!r}"
        assert redis_client.get(key_prefix + "counter") == b"4"
        assert 0 < redis_client.ttl(key_prefix + "two") <= app.config["USER_CACHE_TTL"]
        assert cache.delete("one") and cache.get("one") is None
        assert cache.delete_many("two", "text") == ["two", "text"]
        assert cache.get_many("two", "text", "number") == [None, None, 1.5]


def test_an_entry_copied_to_another_key_is_a_miss(
    slapd, make_instance, key_prefix, redis_client, warnings_logged
):
    """Signatures cover the key: a valid entry copied under another key does not verify there."""
    app = make_instance(slapd)
    with app.app_context():
        cache.set("ended:first", "marker")
        redis_client.set(key_prefix + "ended:second", redis_client.get(key_prefix + "ended:first"))
        assert cache.get("ended:first") == "marker"
        assert cache.get("ended:second") is None
        assert cache.get_many("ended:second", "ended:first") == [None, "marker"]
    assert any("signed for another key" in line for line in warnings_logged())


def test_an_entry_written_back_after_it_expired_is_a_miss(
    slapd, make_instance, key_prefix, redis_client, monkeypatch
):
    """Signatures cover the expiry: a captured entry replayed without a TTL ends when it would."""
    app = make_instance(slapd)
    name = key_prefix + "user:alice"
    with app.app_context():
        cache.set("user:alice", '{"username":"alice"}', timeout=60)
        captured = redis_client.get(name)
        redis_client.set(name, captured)  # replayed, with no TTL
        assert cache.get("user:alice") == '{"username":"alice"}'
        real = time.time
        later = types.SimpleNamespace(time=lambda: real() + 61, monotonic=time.monotonic)
        monkeypatch.setattr(backend, "time", later)
        assert cache.get("user:alice") is None


def test_entries_signed_with_a_fallback_key_are_accepted_others_are_not(
    slapd, make_instance, key_prefix, redis_client
):
    """After SECRET_KEY rotates, entries signed with a SECRET_KEY_FALLBACKS key still read;
    new ones are signed with the new key, and a portal without the old key ignores old ones."""
    old = make_instance(slapd, SECRET_KEY=OTHER_SECRET)
    rotated = make_instance(slapd, SECRET_KEY_FALLBACKS=[OTHER_SECRET])
    unrelated = make_instance(slapd)
    with old.app_context():
        cache.set("entry", "signed with the old key")
    with rotated.app_context():
        assert cache.get("entry") == "signed with the old key"
        cache.set("fresh", "signed with the new key")
    assert verified_value(rotated, redis_client.get(key_prefix + "fresh"))
    with unrelated.app_context():
        assert cache.get("entry") is None
        assert cache.get("fresh") == "signed with the new key"


def test_bad_entries_are_logged_at_most_once_a_minute(
    slapd, make_instance, key_prefix, redis_client, warnings_logged
):
    """Whoever writes bad entries cannot flood the log: many bad reads, one warning line."""
    app = make_instance(slapd)
    for number in range(5):
        redis_client.set(f"{key_prefix}bad:{number}", pickled(number))
    with app.app_context():
        assert cache.get_many(*(f"bad:{number}" for number in range(5))) == [None] * 5
        assert cache.get("bad:0") is None
    lines = warnings_logged()
    assert len(lines) == 1, lines
    assert "not signed with this portal's key" in lines[0]


def test_a_signature_is_checked_once_per_value_and_a_forged_one_every_time(
    slapd, make_instance, key_prefix, redis_client, monkeypatch
):
    """Every request reads the same entry again: its HMAC is checked the first time only, the
    exact bytes remembered; a value that did not verify is checked (and refused) each time,
    and one changed byte is a value never seen."""
    app = make_instance(slapd)
    with app.app_context():
        signer = cache.cache._signer
        checked = []
        real_unsign = signer.unsign
        monkeypatch.setattr(signer, "unsign", lambda raw: checked.append(raw) or real_unsign(raw))
        cache.set("user:alice", '{"username":"alice"}', timeout=60)
        for _ in range(3):
            assert cache.get("user:alice") == '{"username":"alice"}'
        assert len(checked) == 1
        good = redis_client.get(key_prefix + "user:alice")
        redis_client.set(key_prefix + "user:alice", GARBAGE["altered-signature"](good))
        for _ in range(2):
            assert cache.get("user:alice") is None
        assert len(checked) == 3, "a forged value must be checked every time"
        large = "g" * backend.VERIFIED_MAX_BYTES
        cache.set("user:large", large, timeout=60)
        for _ in range(2):
            assert cache.get("user:large") == large
        assert len(checked) == 5, "a value past VERIFIED_MAX_BYTES is not remembered"
