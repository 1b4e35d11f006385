"""Hypothesis fuzzing of the login form, `next`, every GET route and /auth/verify (real slapd).

Each test builds one portal, as production runs it (exceptions become 500 answers), and reuses it
for all its examples. The properties: never a 500 nor an unhandled exception; nobody signed in
without their password (the same password after RFC 4013 SASLprep, which RFC 4513 has clients
apply before a bind); case and surrounding spaces never change who a name is; and every Location
is a path on this site or an address in an allowed domain.
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from urllib.parse import quote, urlencode

import pytest
from flask import got_request_exception
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from ldap3.core.exceptions import LDAPException
from ldap3.protocol.sasl.sasl import sasl_prep
from werkzeug.datastructures import MultiDict

from portal import accounts
from tests.conftest import HOSTILE_NEXT, PASSWORDS, AuthActions, csrf_token_in, same_site_path

#: People who may use the portal (carol is in no allowed group, dave in a denied one).
ACTIVE = ("alice", "bob", "erin", "frank")
#: The login domain of the demo settings: alice@example.org and EXAMPLE.ORG\alice are alice.
DOMAIN = "example.org"
#: The one domain the fuzzed portal may send people back to after login.
ALLOWED_DOMAIN = "corp.example"
#: Fuzzing fails passwords by the hundred: no login throttle may get in the way.
UNTHROTTLED = {
    "THROTTLE_ACCOUNT_LIMIT": "1000000 per minute",
    "THROTTLE_IP_LIMIT": "1000000 per minute",
}
#: The origin the test client's requests go to.
THIS_SITE = "http://localhost"
#: What a forward-auth proxy asks about: the portal's own home page, which no demo rule closes.
VERIFY_HEADERS = {"X-Original-URL": "https://portal.example.org/", "X-Original-Method": "GET"}
_FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def fuzz(examples: int) -> settings:
    """Hypothesis settings for one test: `examples` examples, no deadline, no example database
    (one portal serves every example of a test, built by a function-scoped fixture)."""
    return settings(_FUZZ, max_examples=examples)


#: Characters that mean something to LDAP filters, DNs, URLs or HTTP.
SPECIALS = "*()\\\x00\r\n\t =,+<>#;\"'/&|!~@%:.?[]"


class Portal:
    """One portal under fuzzing, what went wrong inside it, and clients signed in as people."""

    def __init__(self, app):
        self.app = app
        self.crashes: list[str] = []
        self._signed_in: dict[str, object] = {}

    def client(self, name: str | None = None):
        """A new anonymous client, or the (one, reused) client signed in as `name`."""
        if name is None:
            return self.app.test_client()
        if name not in self._signed_in:
            client = self.app.test_client()
            assert AuthActions(client).login(name).status_code == 302
            self._signed_in[name] = client
        return self._signed_in[name]

    def check(self, response) -> None:
        """Fail on a 5xx answer, an exception the app did not handle or a traceback it logged."""
        assert response.status_code < 500, f"{response.status_code} for {response.request.path}"
        crashes, self.crashes[:] = list(self.crashes), []
        assert not crashes, crashes


class _TracebackRecorder(logging.Handler):
    """Keeps every log record that carries a traceback."""

    def __init__(self, found: list[str]):
        super().__init__(logging.DEBUG)
        self.found = found

    def emit(self, record: logging.LogRecord) -> None:
        """Note the record if it carries a traceback."""
        if record.exc_info:
            self.found.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture
def portal(slapd, build_app):
    """The demo portal with exceptions turned into 500 answers, as in production, and watched."""
    app = build_app(
        slapd,
        PROPAGATE_EXCEPTIONS=False,
        SSO_ALLOWED_DOMAINS=[ALLOWED_DOMAIN],
        **UNTHROTTLED,
    )
    watched = Portal(app)

    def crashed(sender, exception, **extra):
        """Note an exception the app did not handle (Flask then answers 500)."""
        watched.crashes.append(repr(exception))

    recorder = _TracebackRecorder(watched.crashes)
    got_request_exception.connect(crashed, app)
    logging.getLogger().addHandler(recorder)
    yield watched
    logging.getLogger().removeHandler(recorder)
    got_request_exception.disconnect(crashed, app)


def who(client) -> str | None:
    """The person the portal vouches for on this client's session (forward auth), else None."""
    response = client.get("/auth/verify", headers=VERIFY_HEADERS)
    return response.headers["Remote-User"] if response.status_code == 200 else None


def canonical(typed: str) -> str:
    """A typed login name as a person: NFKC-folded, no surrounding white space, lower case, no
    known domain."""
    name = unicodedata.normalize("NFKC", typed).strip().lower()
    if name.endswith("@" + DOMAIN):
        return name[: -len(DOMAIN) - 1]
    return name.removeprefix(DOMAIN + "\\")


def same_password(typed: str, password: str) -> bool:
    """Whether a bind with `typed` carries `password`: equal after SASLprep (RFC 4013)."""
    try:
        return sasl_prep(typed) == password
    except (LDAPException, ValueError):
        return False


_ALLOWED_URL = re.compile(
    r"https?://(?:[a-z0-9_-]+\.)*" + re.escape(ALLOWED_DOMAIN) + r"(?::[0-9]{1,5})?"
    r"(?:[/?#][^\\\x00-\x20\x7f]*)?",
    re.IGNORECASE,
)


def acceptable_location(location: str) -> bool:
    """A path on this site, or an http(s) address whose host is the allowed domain or below it."""
    return same_site_path(location) or _ALLOWED_URL.fullmatch(location) is not None


def printable(text: str) -> bool:
    """No control characters (what a response header may carry)."""
    return not any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)


# --- Strategies --------------------------------------------------------------------------------

latin1 = st.binary(max_size=40).map(lambda raw: raw.decode("latin-1"))
long_runs = st.builds(
    lambda char, count: char * count,
    st.sampled_from(["a", "\u00e9", "*", "\x00", " ", "\U0001f600"]),
    st.integers(min_value=100, max_value=12_000),
)
demo_names = st.sampled_from(sorted(PASSWORDS))
usernames = st.one_of(
    demo_names,
    demo_names.map(lambda name: f"{name}@{DOMAIN}"),
    st.text(max_size=40),
    st.text(alphabet=SPECIALS + "alice", max_size=30),
    latin1,
    long_runs,
)
passwords = st.one_of(
    st.sampled_from(sorted(PASSWORDS.values())),
    st.text(max_size=40),
    st.text(alphabet=SPECIALS + "secret-", max_size=30),
    latin1,
    long_runs,
)
login_fields = st.tuples(
    st.lists(usernames, max_size=3),
    st.lists(passwords, max_size=3),
    st.booleans(),
)
right_pairs = demo_names.map(lambda name: ([name], [PASSWORDS[name]], False))


def wrong_passwords(name: str):
    """Passwords near and far from `name`'s that are not the same password."""
    right = PASSWORDS[name]
    near = st.one_of(
        st.just(right.upper()),
        st.just(right + " "),
        st.just(" " + right),
        st.just(right[:-1]),
        st.just(right + "\x00"),
        st.builds(
            lambda index, char: right[:index] + char + right[index + 1 :],
            st.integers(0, len(right) - 1),
            st.characters(),
        ),
        st.builds(
            lambda index, char: right[:index] + char + right[index:],
            st.integers(0, len(right)),
            st.characters(),
        ),
    )
    return st.one_of(near, passwords).filter(lambda typed: not same_password(typed, right))


SPACES = " \u00a0\u2003\u3000"


@st.composite
def case_and_space_variants(draw, name: str) -> str:
    """`name` with any letters upper-cased and any spaces around it."""
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    cased = "".join(char.upper() if flip else char for char, flip in zip(name, flips, strict=True))
    before = draw(st.text(alphabet=SPACES, max_size=3))
    after = draw(st.text(alphabet=SPACES, max_size=3))
    return before + cased + after


@st.composite
def other_names(draw, name: str) -> str:
    """`name` cut short, or with one character replaced, inserted, removed or added at the end
    (letters, marks, punctuation: anything but spaces and controls)."""
    chars = st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"))
    index = draw(st.integers(0, len(name) - 1))
    edit = draw(st.sampled_from(["replace", "insert", "delete", "append", "truncate"]))
    if edit == "truncate":
        return name[: max(index, 1)]
    if edit == "delete":
        return name[:index] + name[index + 1 :]
    char = draw(chars)
    if edit == "append":
        return name + char
    if edit == "insert":
        return name[:index] + char + name[index:]
    return name[:index] + char + name[index + 1 :]


# --- The login form ----------------------------------------------------------------------------


def post_login(portal: Portal, fields):
    """POST /login from a new browser with a valid CSRF token; return (response, client)."""
    client = portal.client()
    token = csrf_token_in(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data=MultiDict([("csrf_token", token), *fields]))
    portal.check(response)
    return response, client


def assert_signed_in_only_with_the_password(response, client, names, typed_passwords) -> None:
    """A 302 home and a session only for an active person whose name and password were sent."""
    person = who(client)
    if person is None:
        assert response.status_code != 302, response.headers.get("Location")
        assert response.status_code in (400, 401, 403, 413, 429)
        return
    assert response.status_code == 302
    assert person in ACTIVE
    assert any(canonical(name) == person for name in names), (person, names)
    assert any(same_password(typed, PASSWORDS[person]) for typed in typed_passwords)


@fuzz(250)
@given(fields=st.one_of(login_fields, right_pairs))
@example(fields=(["*"], ["*"], False))
@example(fields=(["*)(uid=*"], ["alice-secret"], False))
@example(fields=(["alice"], ["alice-secret", "x"], True))
@example(fields=(["alice\x00"], ["alice-secret"], False))
@example(fields=([], ["alice-secret"], False))
@example(fields=(["alice"], [], False))
@example(fields=(["a" * 10_240], ["x" * 20_000], False))
def test_login_form_never_fails_and_never_signs_in_without_the_password(portal, fields):
    """Any names and passwords, missing or repeated: a 4xx, or a login for the right password."""
    names, typed_passwords, remember = fields
    pairs = [("username", name) for name in names] + [("password", p) for p in typed_passwords]
    if remember:
        pairs.append(("remember", "y"))
    response, client = post_login(portal, pairs)
    event(f"login answered {response.status_code}")
    assert_signed_in_only_with_the_password(response, client, names, typed_passwords)


@fuzz(120)
@given(data=st.data())
def test_a_real_name_with_a_wrong_password_never_signs_in(portal, data):
    """Every demo person, with passwords near theirs and far from it: refused, never a 500."""
    name = data.draw(demo_names)
    typed = data.draw(wrong_passwords(name))
    spelled = data.draw(st.one_of(st.just(name), case_and_space_variants(name)))
    response, client = post_login(portal, [("username", spelled), ("password", typed)])
    assert response.status_code in (400, 401, 413, 429)
    assert who(client) is None


@fuzz(120)
@given(data=st.data())
def test_case_and_space_variants_are_the_same_person_and_other_names_are_not(portal, data):
    """With the right password, `ALICE` and ` alice ` sign in as alice; `alce` or `alicé` do not."""
    name = data.draw(st.sampled_from(ACTIVE))
    variant = data.draw(st.booleans())
    typed = data.draw(case_and_space_variants(name) if variant else other_names(name))
    # Compatibility spellings (fullwidth, circled letters) have their own test below.
    assume(unicodedata.normalize("NFKC", typed) == typed)
    response, client = post_login(portal, [("username", typed), ("password", PASSWORDS[name])])
    if typed.strip(SPACES).lower() == name:
        assert response.status_code == 302, repr(typed)
        assert who(client) == name
    else:
        assert response.status_code in (400, 401, 403), repr(typed)
        assert who(client) is None, repr(typed)


@pytest.mark.parametrize("typed", ["\uff41\uff4c\uff49\uff43\uff45", "\uff21lice", "\u24d0lice"])
def test_compatibility_spellings_of_a_name_are_that_same_person(portal, typed):
    """Fullwidth `ａｌｉｃｅ` or circled `ⓐlice` fold (NFKC) to alice, as the directory's
    matching rule folds them: one person, one session name, not a second identity."""
    response, client = post_login(portal, [("username", typed), ("password", "alice-secret")])
    assert response.status_code == 302
    assert who(client) == "alice"


# --- `next` after login ------------------------------------------------------------------------

URL_PARTS = st.sampled_from(
    ["/", "//", "///", "/\\", "\\", "\\\\", "http:", "https:", "http://", "https://",
     "javascript:", "data:", "%2F", "%2f%2F", "%5C", "/%09/", "%09", "\t", "\n", " ", "@", ".",
     "..", "?", "#", ":", ":443", "user:pw@", "[::1]", "127.0.0.1", ALLOWED_DOMAIN,
     "a." + ALLOWED_DOMAIN, ALLOWED_DOMAIN + ".evil.example", "evil.example", "evil.example\\",
     "\u3002", "\uff0f", "\u2215"]
)  # fmt: skip
next_values = st.one_of(
    st.sampled_from(
        HOSTILE_NEXT + ["/%09/evil.example", "/pages/handbook", f"https://{ALLOWED_DOMAIN}/x"]
    ),
    st.text(max_size=60),
    st.lists(URL_PARTS, max_size=7).map("".join),
    st.lists(st.one_of(URL_PARTS, st.text(max_size=4)), max_size=7).map("".join),
)


def carried_next(page: str) -> str:
    """The value of the login form's hidden `next` field."""
    found = re.search(r'<input[^>]*name="next"[^>]*value="([^"]*)"', page)
    assert found, "the login page has no next field"
    return html.unescape(found.group(1))


@fuzz(200)
@given(target=next_values, how=st.sampled_from(["field", "query", "carried", "signed-in"]))
def test_next_only_ever_leads_to_this_site_or_an_allowed_domain(portal, target, how):
    """`next` posted, in the address, carried by the form, or for someone signed in: never a 500,
    and every Location a path here or an allowed-domain address."""
    address = "/login?" + urlencode({"next": target})
    if how == "signed-in":
        response = portal.client("alice").get(address)
        portal.check(response)
        assert response.status_code == 302
        assert acceptable_location(response.headers["Location"]), response.headers["Location"]
        return
    client = portal.client()
    page = client.get(address)
    portal.check(page)
    carried = carried_next(page.get_data(as_text=True))
    assert carried == "" or acceptable_location(carried), carried
    fields = {"csrf_token": csrf_token_in(page.get_data(as_text=True)),
              "username": "alice", "password": "alice-secret"}  # fmt: skip
    if how == "field":
        response = client.post("/login", data=fields | {"next": target})
    elif how == "query":
        response = client.post(address, data=fields)
    else:
        response = client.post("/login", data=fields | {"next": carried})
    portal.check(response)
    assert response.status_code == 302
    assert acceptable_location(response.headers["Location"]), response.headers["Location"]


# --- Every GET route ---------------------------------------------------------------------------

QUERY_KEYS = st.one_of(
    st.sampled_from(["next", "signed_out", "group", "redirect", "username", "password", "slug"]),
    st.text(max_size=12),
)
QUERY_VALUES = st.one_of(
    st.sampled_from(["1", "0", "", "alice", "staff", "//evil.example", "../..", "%00", "true"]),
    st.text(max_size=40),
    long_runs.map(lambda run: run[:3000]),
)
PATH_VALUES = st.one_of(
    st.sampled_from(["alice", "ALICE", "handbook", "admin-guide", "portal.css", "..", "../..",
                     "%2e%2e", "a/b", "nobody", "a" * 300, "OTHER%5Calice", "alice@example.org"]),
    st.text(max_size=40),
)  # fmt: skip
_ARGUMENT = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def get_rules(app) -> list:
    """Every URL rule that answers GET."""
    return sorted((rule for rule in app.url_map.iter_rules() if "GET" in rule.methods),
                  key=lambda rule: rule.rule)  # fmt: skip


@st.composite
def get_requests(draw, rules) -> tuple[str, str, str]:
    """(method, path, query string) for one of `rules`, path values and query fuzzed."""
    rule = draw(st.sampled_from(rules))

    def fill(match: re.Match) -> str:
        converter = match.group(1) or "default"
        raw = draw(PATH_VALUES)
        keep = draw(st.sampled_from(["", "/", "/%", "/%.;,"])) if converter == "path" else ""
        return quote(raw, safe=keep)

    path = _ARGUMENT.sub(fill, rule.rule)
    pairs = draw(st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=4))
    raw_query = draw(st.text(alphabet="abcnext=&%/?:;+1_-.\\\"'<>", max_size=30))
    query = draw(st.sampled_from([urlencode(pairs), raw_query, urlencode(pairs) + "&" + raw_query]))
    return draw(st.sampled_from(["GET", "HEAD"])), path, query


@fuzz(300)
@given(data=st.data())
def test_every_get_route_with_any_path_and_query_never_fails(portal, data):
    """Anonymous, a regular person and an administrator: no GET or HEAD of any route is a 500,
    and every Location is a path here or an allowed-domain address."""
    rules = get_rules(portal.app)
    assert {"/login", "/auth/verify", "/admin/users/<path:username>"} <= {r.rule for r in rules}
    who_asks = data.draw(st.sampled_from([None, "alice", "erin"]))
    method, path, query = data.draw(get_requests(rules))
    client = portal.client(who_asks)
    response = client.open(path, method=method, query_string=query)
    portal.check(response)
    event(f"{response.status_code}")
    location = response.headers.get("Location")
    if location is not None:
        # Routing redirects (e.g. merged slashes) name this site in full: http://localhost/...
        assert acceptable_location(location.removeprefix(THIS_SITE)), location


# --- /auth/verify ------------------------------------------------------------------------------

header_text = st.text(
    alphabet=st.characters(min_codepoint=0x09, max_codepoint=0xFF,
                           blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85"),
    max_size=80,
)  # fmt: skip
schemes = st.sampled_from(["https", "http", "", "ftp", "javascript"])
hosts = st.sampled_from(
    ["portal.example.org", "wiki.example.org", "WIKI.example.org.", "[::1]", "[zz]", "a@b", "",
     "x:y@h", "h:99999", "h:abc", "\xff", "h:443"]
)  # fmt: skip
paths = st.one_of(
    st.sampled_from(["", "/", "/app/engineering", "/app/engineering/../x", "/%2e%2e/", "//x",
                     "/a?b=c", "/\\x", "?", "#", "/app/Engineering", "/%61pp/engineering"]),
    header_text,
)  # fmt: skip
methods = st.one_of(st.sampled_from(["GET", "get", "DELETE", "PROPFIND", ""]), header_text)
url_headers = st.one_of(
    header_text,
    st.builds(lambda scheme, host, path: f"{scheme}://{host}{path}", schemes, hosts, paths),
    st.builds(lambda host, path: f"//{host}{path}", hosts, paths),
)
well_formed = st.one_of(
    st.builds(
        lambda url, method: {"X-Original-URL": url, "X-Original-Method": method},
        url_headers,
        methods,
    ),
    st.builds(
        lambda proto, host, uri, method: {
            "X-Forwarded-Proto": proto,
            "X-Forwarded-Host": host,
            "X-Forwarded-Uri": uri,
            "X-Forwarded-Method": method,
        },
        schemes,
        hosts,
        paths,
        methods,
    ),
)
any_headers = st.dictionaries(
    keys=st.sampled_from(
        [
            "X-Original-URL",
            "X-Original-Method",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "X-Forwarded-Uri",
            "X-Forwarded-Method",
            "X-Forwarded-For",
        ]
    ),
    values=st.one_of(url_headers, methods),
)
good_hosts = st.sampled_from(
    ["portal.example.org", "wiki.example.org", "WIKI.example.org", "portal.example.org:8443"]
)
good_paths = st.one_of(
    st.sampled_from(["/", "/app/engineering", "/app/engineering/x", "/wiki?page=1"]),
    header_text.map(lambda text: "/" + quote(text, safe="/?=&")),
)
good_methods = st.sampled_from(["GET", "HEAD", "POST", "DELETE", "get"])
usable = st.one_of(
    st.builds(
        lambda scheme, host, path, method: {
            "X-Original-URL": f"{scheme}://{host}{path}",
            "X-Original-Method": method,
        },
        st.sampled_from(["https", "http"]),
        good_hosts,
        good_paths,
        good_methods,
    ),
    st.builds(
        lambda host, path, method: {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": host,
            "X-Forwarded-Uri": path,
            "X-Forwarded-Method": method,
        },
        good_hosts,
        good_paths,
        good_methods,
    ),
)
verify_headers = st.one_of(
    usable,
    well_formed,
    any_headers,
    st.builds(lambda first, second: first | second, well_formed, any_headers),
)


@pytest.fixture
def frank_lost_his_groups(portal):
    """Frank signs in, then his cached entry says he is in no group: signed in, not active."""
    client = portal.client("frank")
    with portal.app.app_context():
        attrs = accounts.cached_attributes("frank")
        assert attrs is not None
        accounts.remember({key: value for key, value in attrs.items() if key != "fetched_at"}
                          | {"groups": []})  # fmt: skip
    return client


@fuzz(400)
@given(
    headers=verify_headers,
    who_asks=st.sampled_from([None, "alice", "erin", "frank"]),
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    query=st.dictionaries(st.sampled_from(["group", "redirect"]), QUERY_VALUES, max_size=2),
    family=st.sampled_from(["original", "forwarded", "as-sent"]),
)
def test_auth_verify_headers_never_fail_and_only_active_people_get_200(
    portal, frank_lost_his_groups, headers, who_asks, method, query, family
):
    """Garbled X-Original-* and X-Forwarded-* headers: 401/302/403 or, for a signed-in active
    person only, 200 with their own identity in printable headers."""
    if family == "as-sent":
        family = "original" if "X-Original-URL" in headers else "forwarded"
    portal.app.config["SSO_REQUEST_HEADERS"] = family
    client = frank_lost_his_groups if who_asks == "frank" else portal.client(who_asks)
    response = client.open("/auth/verify", method=method, headers=headers, query_string=query)
    portal.check(response)
    event(f"{who_asks or 'anonymous'}: {response.status_code}")
    if who_asks in ("alice", "erin"):
        assert response.status_code in (200, 403)
    else:
        assert response.status_code in (302, 401)
        assert response.headers["Location"].startswith("/login")
        assert same_site_path(response.headers["Location"]), response.headers["Location"]
    if response.status_code == 200:
        assert response.headers["Remote-User"] == who_asks
        for name in ("Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email"):
            assert printable(response.headers[name])
