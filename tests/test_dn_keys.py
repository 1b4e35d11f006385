"""DN keys read off a plain DN's text are the keys ldap3's parse gives (groups.dn_key)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from portal.directory import groups

#: Characters a DN's parse treats specially, beside letters, digits and non-ASCII ones.
PIECES = st.sampled_from(list('aZ09-= ,+\\"#;<>.é\u0141\x01') + ["uid", "OU", "cn", "\\2C", "\\"])


@given(st.lists(PIECES, max_size=30).map("".join))
@settings(max_examples=3000, deadline=None)
def test_any_text_gets_the_key_the_parse_gives(text):
    assert groups.dn_key(text) == groups._parsed_key(text)


@given(st.lists(st.tuples(st.sampled_from(["uid", "CN", "ou", "dc", "o-x"]),
                          st.text(st.characters(codec="utf-8", exclude_characters=",=+\\\"#;<>"),
                                  min_size=1, max_size=12)),
                min_size=1, max_size=6))  # fmt: skip
@settings(max_examples=2000, deadline=None)
def test_plain_dns_get_the_key_the_parse_gives(rdns):
    text = ",".join(f"{kind}={value}" for kind, value in rdns)
    assert groups.dn_key(text) == groups._parsed_key(text)


def test_spellings_of_one_dn_share_a_key_and_the_plain_ones_skip_the_parse():
    plain = ["uid=alice,ou=people,dc=example,dc=org", "UID=Alice,OU=People,DC=Example,DC=org"]
    for text in plain:
        assert groups._PLAIN_DN.fullmatch(text)
    escaped = "uid=alice,ou=peopl\\65,dc=example,dc=org"
    assert not groups._PLAIN_DN.fullmatch(escaped)
    assert len({groups.dn_key(text) for text in [*plain, escaped]}) == 1
    assert groups.dn_key("cn=R\\26D,ou=g") == (("cn", "r&d"), ("ou", "g"))
