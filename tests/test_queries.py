"""Pure helpers: login-name normalisation, filter escaping, safe `next` addresses."""

from __future__ import annotations

import pytest

from portal.directory.errors import InvalidInput
from portal.directory.queries import check_password, fill_filter, normalise_username
from portal.web.urls import safe_next
from tests.conftest import HOSTILE_NEXT


@pytest.mark.parametrize("typed", ["alice", "Alice", " alice ", "ALICE\u00a0"])
def test_spellings_of_one_name_normalise_to_one_identity(typed):
    """Case and surrounding white space do not make a different person."""
    assert normalise_username(typed, 256) == "alice"


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "   ",
        None,
        7,
        ["alice"],
        {"a": 1},
        "al\x00ice",
        "al\rice",
        "al\nice",
        "al\tice",
        "al\u200bice",
        "a" * 257,
    ],
)
def test_unusable_names_are_refused_before_any_ldap(typed):
    """Empty, non-text, over-long names and names with control characters raise InvalidInput."""
    with pytest.raises(InvalidInput):
        normalise_username(typed, 256)


@pytest.mark.parametrize("password", ["", "  ", None, 12, ["x"], "p\x00w", "x" * 1025])
def test_unusable_passwords_are_refused(password):
    """An empty password would be an unauthenticated bind: it never reaches the directory."""
    with pytest.raises(InvalidInput):
        check_password(password, 1024)


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("*", r"\2a"),
        ("*)(uid=*", r"\2a\29\28uid=\2a"),
        ("admin)(|(uid=*", r"admin\29\28|\28uid=\2a"),
        ("a\\", r"a\5c"),
        ("(", r"\28"),
        (r"\2a", r"\5c2a"),
    ],
)
def test_filter_values_are_escaped(value, escaped):
    """Every RFC 4515 special character is escaped before it enters a filter."""
    assert fill_filter("(uid={username})", username=value) == f"(uid={escaped})"


def test_group_dn_with_specials_is_escaped():
    """A DN read from the directory is escaped too when placed into the group filter."""
    dn = "cn=Smith (Contractor)*,ou=people,dc=example,dc=org"
    assert fill_filter("(member={user_dn})", user_dn=dn) == (
        r"(member=cn=Smith \28Contractor\29\2a,ou=people,dc=example,dc=org)"
    )


@pytest.mark.parametrize("target", ["/", "/pages/handbook", "/pages/x?tab=1#top", "/a/%2F/b"])
def test_same_site_paths_are_kept(target):
    """Relative paths on this site are accepted as `next`."""
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        *HOSTILE_NEXT,
        "/%09/evil.example\n",
        "",
        None,
        ["/"],
        "pages/handbook",
    ],
)
def test_hostile_next_is_refused(target):
    """Anything a browser could read as another site is refused."""
    assert safe_next(target) is None
