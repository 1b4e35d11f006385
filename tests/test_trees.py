"""The extra directory shapes of portal/testing/trees.py, checked on real slapd servers.

Each tree is read with ldapsearch / ldapwhoami or ldap3 directly, not through the portal: these
tests pin down what the directories say, so the portal's support for them has a fixed target.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import ldap3
import pytest
from ldap3.utils.conv import escape_filter_chars

from portal.directory.queries import login_forms
from portal.testing import trees
from portal.testing.slapd import ROOT_DN, SUFFIX, Slapd, find_binary
from tests.conftest import start_slapd

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PPOLICY_OID = "1.3.6.1.4.1.42.2.27.8.5.1"
# The keys every example settings file sets (the portal's settings for these directories).
EXAMPLE_KEYS = {
    "LDAP_URLS",
    "LDAP_START_TLS",
    "LDAP_ALLOW_CLEARTEXT",
    "LDAP_CA_FILE",
    "LDAP_BIND_DN",
    "LDAP_BIND_PASSWORD",
    "LDAP_ANONYMOUS_SEARCH",
    "LDAP_USER_BASE",
    "LDAP_USER_FILTER",
    "LDAP_LOGIN_DOMAINS",
    "LDAP_USER_DN_TEMPLATE",
    "LDAP_ATTR_USERNAME",
    "LDAP_ATTR_DISPLAY_NAME",
    "LDAP_ATTR_EMAIL",
    "LDAP_GROUP_MEMBERSHIP",
    "LDAP_ATTR_MEMBER_OF",
    "LDAP_GROUP_BASE",
    "LDAP_GROUP_FILTER",
    "LDAP_GROUP_NAME_ATTR",
    "LDAP_GROUP_NESTING_DEPTH",
    "LDAP_GROUP_NESTED_FILTER",
    "LDAP_ACCOUNT_STATE",
    "LDAP_DISABLED_FILTER",
    "PASSWORD_CHANGE_URL",
    "LDAP_CONNECT_TIMEOUT",
    "LDAP_OPERATION_TIMEOUT",
    "ACCESS_ALLOWED_GROUPS",
    "ACCESS_DENIED_GROUPS",
    "ACCESS_ADMIN_GROUPS",
    "CACHE_TYPE",
    "USER_CACHE_TTL",
    "SECRET_KEY",
    "SESSION_COOKIE_SECURE",
    "PAGES",
}


# --- helpers ------------------------------------------------------------------------------


def connect(server: Slapd, who: str, password: str) -> ldap3.Connection:
    """A bound ldap3 connection; fails the test when the bind is refused."""
    connection = ldap3.Connection(
        ldap3.Server(server.url, get_info=ldap3.NONE), who, password, raise_exceptions=False
    )
    assert connection.bind(), f"bind as {who} refused: {connection.result}"
    return connection


def search(connection, base, query, attributes=(), scope=ldap3.SUBTREE) -> list:
    """The entries a search returns (empty for none or for noSuchObject)."""
    connection.search(base, query, search_scope=scope, attributes=list(attributes))
    return list(connection.entries)


def normal(dn: str) -> str:
    """A DN folded for comparison (the trees' DNs hold no escaped commas or plus signs)."""
    return ",".join(part.strip().lower() for part in dn.split(","))


def values(entry, attribute: str) -> list:
    """An attribute's values in a search result, [] when absent (requested or not); strings,
    since these connections read no schema."""
    return entry.entry_attributes_as_dict.get(attribute, [])


def dns(entries) -> set[str]:
    """The normalised DNs of search results."""
    return {normal(entry.entry_dn) for entry in entries}


def run_tool(tool: str, *args: str) -> subprocess.CompletedProcess:
    """Run an ldap-utils command and return its exit code and output."""
    binary = find_binary(tool)
    assert binary, f"{tool} is not installed"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30)


def whoami_ppolicy(server: Slapd, dn: str, password: str) -> subprocess.CompletedProcess:
    """`ldapwhoami -e ppolicy -x -D dn -w password`: a bind asking for the policy control."""
    return run_tool("ldapwhoami", "-e", "ppolicy", "-x", "-H", server.url, "-D", dn, "-w", password)


def search_as_service(server, base, query, attributes):
    """One search on the AD tree as its service account."""
    connection = connect(server, trees.AD_SERVICE_DN, trees.SERVICE_PASSWORD)
    try:
        return search(connection, base, query, attributes, scope=ldap3.BASE)
    finally:
        connection.unbind()


def login_parts(typed: str, domains: list[str]) -> tuple[str, str]:
    """({username}, {login}) for a typed name, exactly as the portal computes them."""
    return login_forms(typed, 256, frozenset(domain.lower() for domain in domains))


def example(name: str) -> dict:
    """One settings file of examples/, parsed."""
    return tomllib.loads((EXAMPLES / name).read_text())


def user_bases(settings: dict) -> list[str]:
    """LDAP_USER_BASE as a list (it may be one DN or several)."""
    base = settings["LDAP_USER_BASE"]
    return [base] if isinstance(base, str) else base


def find_user(connection, settings: dict, typed: str) -> list:
    """Search for a typed login name the way an example settings file describes."""
    username, login = login_parts(typed, settings["LDAP_LOGIN_DOMAINS"])
    query = settings["LDAP_USER_FILTER"].format(
        username=escape_filter_chars(username), login=escape_filter_chars(login)
    )
    return [entry for base in user_bases(settings) for entry in search(connection, base, query)]


def nested_closure(connection, base: str, query_template: str, start: set[str], depth: int):
    """Follow "group inside a group" up to `depth` levels, stopping at groups already seen."""
    seen, frontier = set(start), set(start)
    for _ in range(depth):
        found = set()
        for group_dn in frontier:
            query = query_template.format(group_dn=escape_filter_chars(group_dn))
            found |= dns(search(connection, base, query))
        frontier = found - seen
        if not frontier:
            break
        seen |= frontier
    return seen


# --- Slapd's new options ------------------------------------------------------------------


def test_default_slapd_keeps_the_demo_suffix_root_and_service_account():
    """Without the new options Slapd serves the demo tree exactly as before."""
    server = Slapd()
    try:
        assert server.suffix == SUFFIX
        assert server.root_dn == ROOT_DN
        assert server.service_dn == "cn=portal-reader,ou=services,dc=example,dc=org"
        assert [path.name for path in server.ldif_files] == ["10-demo-tree.ldif"]
        assert server.schemas == [] and server.modules == [] and server.post_start_ldif == []
    finally:
        server.cleanup()


def test_another_suffix_gets_its_own_root_dn_and_service_account():
    """The root DN and the ACL's service account follow the suffix unless service_dn is given."""
    server = trees.ad_tree()
    other = Slapd(suffix="dc=corp,dc=example")
    try:
        assert server.root_dn == "cn=admin,dc=corp,dc=example"
        assert server.service_dn == trees.AD_SERVICE_DN
        assert other.service_dn == "cn=portal-reader,ou=services,dc=corp,dc=example"
    finally:
        server.cleanup()
        other.cleanup()


def test_config_loads_modules_before_schemas_and_overlays():
    """modulepath comes first, then every moduleload, then the schemas; overlays come last."""
    server = start_slapd(**trees.ppolicy_options())
    try:
        lines = (server.work / "slapd.conf").read_text().splitlines()
        directives = [line for line in lines if line.strip() and not line.startswith("#")]
        assert directives[0] == "modulepath /usr/lib/ldap"
        loads = [i for i, line in enumerate(lines) if line.startswith("moduleload")]
        includes = [i for i, line in enumerate(lines) if line.startswith("include")]
        assert [lines[i] for i in loads] == ["moduleload back_mdb", "moduleload ppolicy"]
        assert max(loads) < min(includes)
        assert lines.index("overlay ppolicy") > lines.index("database mdb")
    finally:
        server.cleanup()


def test_extra_schema_files_are_included_after_the_standard_four():
    """schemas=[...] adds include lines after core, cosine, nis and inetorgperson."""
    server = start_slapd(**trees.ad_options())
    try:
        includes = [
            line.split()[1]
            for line in (server.work / "slapd.conf").read_text().splitlines()
            if line.startswith("include ")
        ]
        assert [Path(path).stem for path in includes] == [
            "core",
            "cosine",
            "nis",
            "inetorgperson",
            "ad-shaped",
        ]
    finally:
        server.cleanup()


def test_post_start_ldif_is_added_on_the_first_start_only():
    """A restart keeps the groups added after the first start and does not add them twice."""
    server = start_slapd(**trees.memberof_options())
    try:
        server.stop()
        server.start()  # adding 20-groups.ldif again would fail with "Already exists"
        reader = connect(server, trees.SERVICE_DN, trees.SERVICE_PASSWORD)
        [alice] = search(reader, trees.EXAMPLE_PEOPLE["alice"], "(objectClass=*)", ["memberOf"])
        assert {normal(dn) for dn in values(alice, "memberOf")} == {
            trees.MEMBEROF_GROUPS["staff"],
            trees.MEMBEROF_GROUPS["engineering"],
        }
    finally:
        server.cleanup()


def test_failing_post_start_ldif_stops_the_server_and_says_why(tmp_path):
    """LDIF that ldapadd refuses fails start() with ldapadd's message; no slapd is left running."""
    bad = tmp_path / "bad.ldif"
    bad.write_text("dn: cn=nobody,ou=nowhere,dc=example,dc=org\nobjectClass: device\ncn: x\n")
    server = Slapd(
        ldif_files=[trees.FIXTURES / "memberof" / "10-people.ldif"], post_start_ldif=[bad]
    )
    try:
        with pytest.raises(RuntimeError, match="ldapadd failed"):
            server.start()
        assert server.process is None
    finally:
        server.cleanup()


# --- Active Directory-shaped tree ---------------------------------------------------------


@pytest.fixture
def ad_reader(ad_server):
    """A connection to the AD-shaped tree as its service account."""
    connection = connect(ad_server, trees.AD_SERVICE_DN, trees.SERVICE_PASSWORD)
    yield connection
    connection.unbind()


def test_ad_person_is_found_by_sam_account_name_in_any_case(ad_reader):
    """sAMAccountName matches case-insensitively (the schema gives it caseIgnoreMatch)."""
    for typed in ("alice", "ALICE", "Alice"):
        entries = search(
            ad_reader, trees.AD_USERS_BASE, f"(sAMAccountName={typed})", ["userPrincipalName"]
        )
        assert dns(entries) == {normal(trees.AD_USERS["alice"])}
        assert entries[0].userPrincipalName.value == "alice@corp.example"


def test_ad_upn_can_differ_from_the_sam_account_name(ad_reader):
    """asmith's userPrincipalName is alice.smith@corp.example, not asmith@corp.example."""
    entries = search(ad_reader, trees.AD_BASE, "(userPrincipalName=Alice.Smith@CORP.example)")
    assert dns(entries) == {normal(trees.AD_USERS["asmith"])}
    assert search(ad_reader, trees.AD_BASE, "(userPrincipalName=asmith@corp.example)") == []
    assert trees.AD_UPNS["asmith"] == "alice.smith@corp.example"


def test_ad_every_account_binds_with_its_password_whatever_its_state(ad_server):
    """slapd knows nothing of AD account state: even disabled bob binds; the portal must check."""
    for name, dn in trees.AD_USERS.items():
        connect(ad_server, dn, trees.password_of(name)).unbind()
    wrong = ldap3.Connection(
        ldap3.Server(ad_server.url, get_info=ldap3.NONE), trees.AD_USERS["bob"], "nope"
    )
    assert not wrong.bind()


def test_ad_entry_dns_come_back_with_lower_case_attribute_types(ad_reader):
    """Entry DNs come back as cn=...,ou=Users,...; stored memberOf values keep CN=...,OU=...."""
    [alice] = search(ad_reader, trees.AD_USERS_BASE, "(sAMAccountName=alice)", ["memberOf"])
    assert alice.entry_dn == "cn=Alice Liddell,ou=Users,dc=corp,dc=example"
    assert "CN=Engineering,OU=Groups,DC=corp,DC=example" in values(alice, "memberOf")


def test_ad_bitwise_and_filter_finds_exactly_the_disabled_account(ad_reader):
    """(userAccountControl:1.2.840.113556.1.4.803:=2) works in slapd: only bob (514) matches."""
    disabled = search(
        ad_reader, trees.AD_USERS_BASE, "(userAccountControl:1.2.840.113556.1.4.803:=2)"
    )
    assert dns(disabled) == {normal(trees.AD_USERS["bob"])}
    enabled = search(
        ad_reader,
        trees.AD_USERS_BASE,
        "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
    )
    assert normal(trees.AD_USERS["frank"]) in dns(enabled)
    assert len(enabled) == len(trees.AD_USERS) - 1


def test_ad_enabled_is_a_bit_test_not_equality_to_512(ad_reader):
    """frank's 66048 (0x10200) is an enabled account that (userAccountControl=512) misses."""
    equal_512 = dns(search(ad_reader, trees.AD_USERS_BASE, "(userAccountControl=512)"))
    assert normal(trees.AD_USERS["frank"]) not in equal_512
    [frank] = search(ad_reader, trees.AD_USERS["frank"], "(objectClass=*)", ["userAccountControl"])
    flags = int(values(frank, "userAccountControl")[0])
    assert flags == 66048
    assert flags & trees.UAC_NORMAL_ACCOUNT and flags & trees.UAC_DONT_EXPIRE_PASSWORD
    assert not flags & trees.UAC_ACCOUNTDISABLE


def test_ad_computed_flags_and_pwdlastset_mark_locked_expired_and_must_change(ad_reader):
    """dave is locked out (0x10), erin's password expired (0x800000), carol must change it."""
    base = trees.AD_USERS_BASE
    rule = trees.MATCHING_RULE_BIT_AND
    locked = search(ad_reader, base, f"(msDS-User-Account-Control-Computed:{rule}:=16)")
    expired = search(ad_reader, base, f"(msDS-User-Account-Control-Computed:{rule}:=8388608)")
    must_change = search(ad_reader, base, "(pwdLastSet=0)")
    assert dns(locked) == {normal(trees.AD_USERS["dave"])}
    assert dns(expired) == {normal(trees.AD_USERS["erin"])}
    assert dns(must_change) == {normal(trees.AD_USERS["carol"])}


def test_ad_memberof_lists_direct_groups_and_agrees_with_member(ad_reader):
    """Every memberOf value has a matching member value and the other way round."""
    entries = search(
        ad_reader, trees.AD_BASE, "(|(objectClass=user)(objectClass=group))", ["member", "memberOf"]
    )
    member_pairs, member_of_pairs = set(), set()
    for entry in entries:
        for group in values(entry, "memberOf"):
            member_of_pairs.add((normal(entry.entry_dn), normal(group)))
        for member in values(entry, "member"):
            member_pairs.add((normal(member), normal(entry.entry_dn)))
    assert member_pairs == member_of_pairs
    groups = trees.AD_GROUPS
    [alice] = search(ad_reader, trees.AD_USERS["alice"], "(objectClass=*)", ["memberOf"])
    assert {normal(dn) for dn in values(alice, "memberOf")} == {
        normal(groups["Engineering"]),
        normal(groups["Loop A"]),
    }  # Staff only through Engineering: memberOf is not flattened
    [frank] = search(ad_reader, trees.AD_USERS["frank"], "(objectClass=*)", ["memberOf"])
    assert {normal(dn) for dn in values(frank, "memberOf")} == {
        normal(groups["Staff"]),
        normal(groups["R&D (Europe)*"]),
    }


def test_ad_group_with_special_characters_is_found_through_an_escaped_filter(ad_server):
    """ldapsearch finds Research by (member=CN=R&D \\28Europe\\29\\2a,...), as ldap3 escapes it."""
    group_dn = trees.AD_GROUPS["R&D (Europe)*"]
    escaped = r"CN=R&D \28Europe\29\2a,OU=Groups,DC=corp,DC=example"
    assert escape_filter_chars(group_dn) == escaped
    result = run_tool(
        "ldapsearch",
        "-x",
        "-LLL",
        "-H",
        ad_server.url,
        "-D",
        trees.AD_SERVICE_DN,
        "-w",
        trees.SERVICE_PASSWORD,
        "-b",
        trees.AD_GROUPS_BASE,
        f"(member={escaped})",
        "cn",
    )
    assert result.returncode == 0, result.stderr
    assert "dn: cn=Research,ou=Groups,dc=corp,dc=example" in result.stdout
    assert "cn: Research" in result.stdout
    [group] = search_as_service(ad_server, group_dn, "(objectClass=group)", ["cn"])
    assert group.cn.value == "R&D (Europe)*"


def test_ad_nested_groups_expand_through_staff_research_and_the_loop(ad_reader):
    """Following member= upwards, alice reaches Staff; frank reaches Research; the loop ends."""
    nested = "(&(objectClass=group)(member={group_dn}))"
    base = trees.AD_GROUPS_BASE
    groups = {name: normal(dn) for name, dn in trees.AD_GROUPS.items()}
    alice_direct = {groups["Engineering"], groups["Loop A"]}
    assert nested_closure(ad_reader, base, nested, alice_direct, 10) == {
        groups["Engineering"],
        groups["Staff"],
        groups["Loop A"],
        groups["Loop B"],
    }
    frank_direct = {groups["Staff"], groups["R&D (Europe)*"]}
    assert nested_closure(ad_reader, base, nested, frank_direct, 10) == {
        groups["Staff"],
        groups["R&D (Europe)*"],
        groups["Research"],
    }
    assert nested_closure(ad_reader, base, nested, alice_direct, 0) == alice_direct


def test_ad_in_chain_matching_rule_quietly_finds_nothing_in_slapd(ad_reader):
    """slapd does not implement 1.2.840.113556.1.4.1941: no error, no entries (AD would answer)."""
    user = escape_filter_chars(trees.AD_USERS["alice"])
    query = f"(member:{trees.MATCHING_RULE_IN_CHAIN}:={user})"
    assert search(ad_reader, trees.AD_GROUPS_BASE, query) == []
    assert ad_reader.result["result"] == 0


def test_ad_service_account_reads_people_but_never_passwords(ad_reader):
    """The ACL names the AD-style service DN: it reads every person, userPassword stays hidden."""
    entries = search(ad_reader, trees.AD_USERS_BASE, "(objectClass=user)", ["userPassword", "cn"])
    assert len(entries) == len(trees.AD_USERS)
    assert all(values(entry, "cn") for entry in entries)
    assert not any(values(entry, "userPassword") for entry in entries)


def test_ad_person_cannot_read_other_people(ad_server):
    """alice reads her own entry but not bob's."""
    alice = connect(ad_server, trees.AD_USERS["alice"], trees.password_of("alice"))
    try:
        own = search(alice, trees.AD_USERS["alice"], "(objectClass=*)", ["cn"], ldap3.BASE)
        assert len(own) == 1
        assert search(alice, trees.AD_USERS["bob"], "(objectClass=*)", ["cn"], ldap3.BASE) == []
    finally:
        alice.unbind()


def test_ad_example_settings_find_each_person_by_every_name_form(ad_reader):
    """settings-ad.toml's filter finds sAM names, UPNs, CORP\\name and name@corp.example."""
    settings = example("settings-ad.toml")
    cases = {
        "alice": "alice",
        "ALICE@corp.example": "alice",
        "CORP\\alice": "alice",
        "asmith": "asmith",
        "alice.smith@corp.example": "asmith",
        "corp\\ASMITH": "asmith",
        "frank@CORP.EXAMPLE": "frank",
    }
    for typed, name in cases.items():
        assert dns(find_user(ad_reader, settings, typed)) == {normal(trees.AD_USERS[name])}, typed
    assert find_user(ad_reader, settings, "portal-reader") == []  # not under OU=Users
    assert find_user(ad_reader, settings, "alice*") == []


def test_ad_example_settings_find_groups_and_nesting(ad_reader):
    """settings-ad.toml's group filters give alice Engineering and, nested, Staff."""
    settings = example("settings-ad.toml")
    user_dn = trees.AD_USERS["alice"]
    query = settings["LDAP_GROUP_FILTER"].format(
        user_dn=escape_filter_chars(user_dn), username="alice"
    )
    direct = search(ad_reader, settings["LDAP_GROUP_BASE"], query, ["cn"])
    assert {entry.cn.value for entry in direct} == {"Engineering", "Loop A"}
    closure = nested_closure(
        ad_reader,
        settings["LDAP_GROUP_BASE"],
        settings["LDAP_GROUP_NESTED_FILTER"],
        dns(direct),
        settings["LDAP_GROUP_NESTING_DEPTH"],
    )
    assert normal(trees.AD_GROUPS["Staff"]) in closure
    [alice] = search(ad_reader, user_dn, "(objectClass=*)", [settings["LDAP_ATTR_MEMBER_OF"]])
    assert {normal(dn) for dn in values(alice, "memberOf")} == dns(direct)


# --- memberOf overlay tree ----------------------------------------------------------------


@pytest.fixture(scope="module")
def memberof_server():
    """One memberOf-overlay directory for this module's read-only checks."""
    server = start_slapd(**trees.memberof_options())
    yield server
    server.cleanup()


@pytest.fixture
def memberof_reader(memberof_server):
    """A connection to the memberOf tree as its service account."""
    connection = connect(memberof_server, trees.SERVICE_DN, trees.SERVICE_PASSWORD)
    yield connection
    connection.unbind()


def memberof_of(connection, name: str) -> set[str]:
    """The normalised memberOf values of one demo person."""
    [entry] = search(
        connection, trees.EXAMPLE_PEOPLE[name], "(objectClass=*)", ["memberOf"], ldap3.BASE
    )
    return {normal(dn) for dn in values(entry, "memberOf")}


def test_memberof_overlay_lists_alices_groups_to_ldapsearch(memberof_server):
    """`ldapsearch ... memberOf` on alice lists staff and engineering, written by the overlay."""
    result = run_tool(
        "ldapsearch",
        "-x",
        "-LLL",
        "-H",
        memberof_server.url,
        "-D",
        trees.SERVICE_DN,
        "-w",
        trees.SERVICE_PASSWORD,
        "-b",
        "ou=people,dc=example,dc=org",
        "(uid=alice)",
        "memberOf",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n\n")[0].splitlines() == [
        "dn: uid=alice,ou=people,dc=example,dc=org",
        "memberOf: cn=staff,ou=groups,dc=example,dc=org",
        "memberOf: cn=engineering,ou=groups,dc=example,dc=org",
    ]


def test_memberof_overlay_records_direct_groups_of_everyone(memberof_reader):
    """Each person's memberOf matches the groups' member values; carol has none."""
    groups = trees.MEMBEROF_GROUPS
    assert memberof_of(memberof_reader, "alice") == {groups["staff"], groups["engineering"]}
    assert memberof_of(memberof_reader, "frank") == {groups["staff"], groups["finance"]}
    assert memberof_of(memberof_reader, "dave") == {groups["staff"], groups["suspended"]}
    assert memberof_of(memberof_reader, "bob") == {groups["staff"]}
    assert memberof_of(memberof_reader, "carol") == set()
    [engineering] = search(
        memberof_reader, groups["engineering"], "(objectClass=*)", ["memberOf"], ldap3.BASE
    )
    assert {normal(dn) for dn in values(engineering, "memberOf")} == {groups["research"]}


def test_memberof_is_operational_and_only_returned_when_asked_for(memberof_reader):
    """A search for all user attributes leaves memberOf out; naming it brings it back."""
    alice_dn = trees.EXAMPLE_PEOPLE["alice"]
    [plain] = search(
        memberof_reader, alice_dn, "(objectClass=*)", [ldap3.ALL_ATTRIBUTES], ldap3.BASE
    )
    assert not values(plain, "memberOf") and values(plain, "mail")
    [asked] = search(memberof_reader, alice_dn, "(objectClass=*)", ["*", "memberOf"], ldap3.BASE)
    assert len(values(asked, "memberOf")) == 2


def test_memberof_can_be_searched_for(memberof_reader):
    """(memberOf=cn=staff,...) finds the five staff members."""
    query = f"(memberOf={trees.MEMBEROF_GROUPS['staff']})"
    found = search(memberof_reader, "ou=people,dc=example,dc=org", query)
    assert dns(found) == {
        trees.EXAMPLE_PEOPLE[name] for name in ("alice", "bob", "dave", "erin", "frank")
    }


def test_memberof_follows_membership_changes_made_through_the_server():
    """Removing frank from finance and adding carol to staff update their memberOf at once."""
    server = start_slapd(**trees.memberof_options())
    try:
        groups, people = trees.MEMBEROF_GROUPS, trees.EXAMPLE_PEOPLE
        server.modify(
            f"dn: {groups['finance']}\nchangetype: modify\ndelete: member\n"
            f"member: {people['frank']}\n-\nadd: member\nmember: {people['carol']}\n"
        )
        reader = connect(server, trees.SERVICE_DN, trees.SERVICE_PASSWORD)
        assert memberof_of(reader, "frank") == {groups["staff"]}
        assert memberof_of(reader, "carol") == {groups["finance"]}
        server.delete(groups["finance"])
        assert memberof_of(reader, "carol") == set()
        reader.unbind()
    finally:
        server.cleanup()


def test_memberof_example_settings_find_alice_and_her_groups(memberof_reader):
    """settings-openldap-memberof.toml's filters find alice and, searching, staff+engineering."""
    settings = example("settings-openldap-memberof.toml")
    [alice] = find_user(memberof_reader, settings, "Alice@example.org")
    assert normal(alice.entry_dn) == trees.EXAMPLE_PEOPLE["alice"]
    query = settings["LDAP_GROUP_FILTER"].format(
        user_dn=escape_filter_chars(alice.entry_dn), username="alice"
    )
    searched = dns(search(memberof_reader, settings["LDAP_GROUP_BASE"], query))
    assert searched == memberof_of(memberof_reader, "alice")
    closure = nested_closure(
        memberof_reader,
        settings["LDAP_GROUP_BASE"],
        settings["LDAP_GROUP_NESTED_FILTER"],
        searched,
        settings["LDAP_GROUP_NESTING_DEPTH"],
    )
    assert trees.MEMBEROF_GROUPS["research"] in closure


# --- Password-policy tree -----------------------------------------------------------------


@pytest.fixture
def ppolicy_server():
    """A fresh password-policy directory per test: binds use up grace logins and lock accounts."""
    server = start_slapd(**trees.ppolicy_options())
    yield server
    server.cleanup()


def ppolicy_whoami(server: Slapd, name: str, password: str | None = None):
    """ldapwhoami -e ppolicy as one of the ppolicy tree's people."""
    return whoami_ppolicy(server, trees.PPOLICY_PEOPLE[name], password or trees.password_of(name))


def test_ppolicy_normal_account_binds_without_a_policy_message(ppolicy_server):
    """alice binds and ldapwhoami prints her DN and nothing else."""
    result = ppolicy_whoami(ppolicy_server, "alice")
    assert result.returncode == 0
    assert result.stdout == "dn:uid=alice,ou=people,dc=example,dc=org\n"
    assert result.stderr == ""


def test_ppolicy_expired_password_gets_two_grace_binds_then_is_refused(ppolicy_server):
    """grace's expired password still binds twice, counting down, then slapd refuses it."""
    first = ppolicy_whoami(ppolicy_server, "grace")
    second = ppolicy_whoami(ppolicy_server, "grace")
    third = ppolicy_whoami(ppolicy_server, "grace")
    assert first.returncode == 0 and second.returncode == 0
    assert first.stdout == "dn:uid=grace,ou=people,dc=example,dc=org\n"
    assert "1 grace logins remain" in first.stderr
    assert "0 grace logins remain" in second.stderr
    assert third.returncode == 49
    assert third.stderr == "ldap_bind: Invalid credentials (49); Password expired\n"


def test_ppolicy_reset_password_binds_but_must_be_changed_first(ppolicy_server):
    """reset binds (whoami still answers) with "Password must be changed"; a search is refused."""
    result = ppolicy_whoami(ppolicy_server, "reset")
    assert result.returncode == 0
    assert result.stdout == "dn:uid=reset,ou=people,dc=example,dc=org\n"
    assert "Password must be changed" in result.stderr
    reset_dn = trees.PPOLICY_PEOPLE["reset"]
    search_result = run_tool(
        "ldapsearch",
        "-e",
        "ppolicy",
        "-x",
        "-LLL",
        "-H",
        ppolicy_server.url,
        "-D",
        reset_dn,
        "-w",
        trees.password_of("reset"),
        "-b",
        reset_dn,
        "-s",
        "base",
        "cn",
    )
    assert search_result.returncode == 50
    assert "Operations are restricted to bind/unbind/abandon/StartTLS/modify password" in (
        search_result.stderr
    )


def test_ppolicy_locked_account_is_refused_with_its_right_password(ppolicy_server):
    """locked's correct password gets error 49 and "Account locked" in the control."""
    result = ppolicy_whoami(ppolicy_server, "locked")
    assert result.returncode == 49
    assert result.stdout == ""
    assert result.stderr == "ldap_bind: Invalid credentials (49); Account locked\n"
    plain = run_tool(
        "ldapwhoami",
        "-x",
        "-H",
        ppolicy_server.url,
        "-D",
        trees.PPOLICY_PEOPLE["locked"],
        "-w",
        trees.password_of("locked"),
    )
    assert plain.stderr == "ldap_bind: Invalid credentials (49)\n"  # no control, no reason


def test_ppolicy_three_wrong_passwords_lock_the_account(ppolicy_server):
    """After pwdMaxFailure (3) wrong passwords even the right one is refused as locked."""
    for _ in range(trees.PPOLICY_MAX_FAILURE):
        wrong = ppolicy_whoami(ppolicy_server, "alice", "wrong-password")
        assert wrong.stderr == "ldap_bind: Invalid credentials (49)\n"
    right = ppolicy_whoami(ppolicy_server, "alice")
    assert right.stderr == "ldap_bind: Invalid credentials (49); Account locked\n"
    reader = connect(ppolicy_server, trees.SERVICE_DN, trees.SERVICE_PASSWORD)
    [alice] = search(
        reader, trees.PPOLICY_PEOPLE["alice"], "(objectClass=*)", ["pwdAccountLockedTime"]
    )
    assert values(alice, "pwdAccountLockedTime")
    reader.unbind()


def test_ppolicy_service_account_reads_the_password_state_attributes(ppolicy_server):
    """pwdAccountLockedTime, pwdReset and pwdChangedTime are readable when asked for by name."""
    reader = connect(ppolicy_server, trees.SERVICE_DN, trees.SERVICE_PASSWORD)
    names = ["pwdAccountLockedTime", "pwdReset", "pwdChangedTime"]
    people = trees.PPOLICY_PEOPLE
    try:
        [locked] = search(reader, people["locked"], "(objectClass=*)", names, ldap3.BASE)
        [reset] = search(reader, people["reset"], "(objectClass=*)", names, ldap3.BASE)
        [grace] = search(reader, people["grace"], "(objectClass=*)", names, ldap3.BASE)
        [alice] = search(reader, people["alice"], "(objectClass=*)", names, ldap3.BASE)
        assert locked.pwdAccountLockedTime.raw_values == [b"000001010000Z"]
        assert values(reset, "pwdReset") == ["TRUE"]
        assert grace.pwdChangedTime.raw_values == [b"20000101000000Z"]
        assert not any(values(alice, name) for name in names)
        [plain] = search(reader, people["locked"], "(objectClass=*)", ["*"], ldap3.BASE)
        assert not values(plain, "pwdAccountLockedTime")  # operational: only when named
    finally:
        reader.unbind()


def test_ppolicy_response_control_reaches_ldap3_as_raw_ber(ppolicy_server):
    """ldap3 returns the control undecoded: grace 1 left, changeAfterReset, accountLocked."""
    expected = {
        "alice": (True, b"0\x00"),  # empty: no warning, no error
        "grace": (True, b"0\x05\xa0\x03\x81\x01\x01"),  # warning graceAuthNsRemaining 1
        "reset": (True, b"0\x03\x81\x01\x02"),  # error 2 changeAfterReset
        "locked": (False, b"0\x03\x81\x01\x01"),  # error 1 accountLocked
    }
    for name, (bound, value) in expected.items():
        connection = ldap3.Connection(
            ldap3.Server(ppolicy_server.url, get_info=ldap3.NONE),
            trees.PPOLICY_PEOPLE[name],
            trees.password_of(name),
        )
        assert connection.bind(controls=[(PPOLICY_OID, False, None)]) is bound, name
        assert connection.result["controls"][PPOLICY_OID]["value"] == value, name
        connection.unbind()


def test_ppolicy_example_settings_bind_through_the_dn_template(ppolicy_server):
    """settings-ppolicy.toml's DN template binds alice; its group filter finds staff."""
    settings = example("settings-ppolicy.toml")
    username, _ = login_parts("alice@example.org", settings["LDAP_LOGIN_DOMAINS"])
    user_dn = settings["LDAP_USER_DN_TEMPLATE"].format(username=username)
    connect(ppolicy_server, user_dn, trees.password_of("alice")).unbind()
    reader = connect(ppolicy_server, trees.SERVICE_DN, trees.SERVICE_PASSWORD)
    query = settings["LDAP_GROUP_FILTER"].format(
        user_dn=escape_filter_chars(user_dn), username=username
    )
    assert dns(search(reader, settings["LDAP_GROUP_BASE"], query)) == {trees.PPOLICY_STAFF_DN}
    reader.unbind()


# --- examples/ --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["settings-ad.toml", "settings-openldap-memberof.toml", "settings-ppolicy.toml"]
)
def test_example_settings_set_every_key_and_keep_secrets_out(name):
    """Each example sets every documented key, has a page, and leaves secrets as CHANGE-ME."""
    settings = example(name)
    assert set(settings) >= EXAMPLE_KEYS, EXAMPLE_KEYS - set(settings)
    assert settings["LDAP_BIND_PASSWORD"] == "CHANGE-ME"
    assert settings["SECRET_KEY"] == "CHANGE-ME"
    assert settings["SESSION_COOKIE_SECURE"] is True
    assert settings["LDAP_ALLOW_CLEARTEXT"] is False
    assert all(url.startswith(("ldaps://", "ldap://")) for url in settings["LDAP_URLS"])
    assert settings["LDAP_GROUP_MEMBERSHIP"] in ("search", "memberof", "both")
    assert settings["LDAP_ACCOUNT_STATE"] in ("none", "ad", "ppolicy")
    assert 0 <= settings["LDAP_GROUP_NESTING_DEPTH"] <= 10
    assert settings["PAGES"]
    for page in settings["PAGES"]:
        assert {"slug", "title", "groups", "body"} <= set(page)
    text = (EXAMPLES / name).read_text()
    assert "PORTAL_LDAP_BIND_PASSWORD" in text
