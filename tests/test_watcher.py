"""The directory watcher: access ends by the end of the first poll begun after a change made
with ldapmodify (so within WATCH_INTERVAL and one poll; `make bench` measures the delay), with
USER_CACHE_TTL at 300, on every worker; one watcher per deployment with Redis; the cost of a poll
does not grow with the people cached."""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
import requests

from portal import accounts
from portal.directory import changes
from portal.watcher import WatchState, read_shared_state
from tests.conftest import PAGE_THROUGH_ALL, AuthActions, crowd_ldif, eventually, make_app
from tests.servers import Gunicorn, portal_environment
from tests.test_cli import restricted_redis_url

INTERVAL = 1
#: Only for a wait that must not hang; what is checked is the count of polls, not the time.
PATIENCE = 30
ALICE = "uid=alice,ou=people,dc=example,dc=org"
ENGINEERING = "cn=engineering,ou=groups,dc=example,dc=org"
RESEARCH = "cn=research,ou=groups,dc=example,dc=org"
PAGES = [
    {"slug": "engineering", "title": "Engineering", "groups": ["engineering"], "body": "e"},
    {"slug": "research", "title": "Research", "groups": ["research"], "body": "r"},
]


def remove_member(group: str, member: str) -> str:
    """LDIF taking `member` out of `group` (a stand-in member keeps a groupOfNames valid)."""
    return (f"dn: {group}\nchangetype: modify\nadd: member\nmember: cn=nobody,dc=example,dc=org\n"
            f"-\ndelete: member\nmember: {member}\n")  # fmt: skip


BASES = {
    "apart": {},
    # One base inside the other: people and groups are told apart by their object class.
    "groups base holds the people": {"LDAP_GROUP_BASE": "dc=example,dc=org"},
    "people base holds the groups": {"LDAP_USER_BASE": "dc=example,dc=org"},
}


@pytest.fixture
def watched(own_slapd, request):
    """The portal with its watcher polling every second and entries kept for 5 minutes."""
    bases = BASES[getattr(request, "param", "apart")]
    app = make_app(own_slapd, WATCH_INTERVAL=INTERVAL, USER_CACHE_TTL=300, PAGES=PAGES,
                   LDAP_GROUP_NESTING_DEPTH=1,
                   LDAP_DISABLED_FILTER="(description=disabled)", **bases)  # fmt: skip
    yield app
    watcher = app.extensions.get("portal.watcher")
    if watcher is not None:
        watcher.stop()
    app.extensions["portal.directory"].close()


def by_the_polls_after(state, check, polls: int = 1) -> None:
    """Fail if check() is still false once `polls` polls begun after now (just after the
    change) have ended; wait for it until then.

    `state()` gives the watcher's state. Its own says when each poll began. One published in
    Redis does not (releases before those fields read it too): there a poll is known to have
    begun after the change once another ended after it, which makes the check one poll more
    lenient, and blind to which instance polled (a takeover restarts the count of polls).
    """
    since = time.time()
    start = state()
    before = start.polls if start is not None else 0
    first = None  # this process's count of polls at the first one seen begun after the change
    ended = set()  # in a published state: the polls seen ending after the change
    deadline = time.monotonic() + PATIENCE
    while True:
        seen = state()  # read before the check: a poll it shows has written its re-reads
        done = False
        if seen is not None and seen.began:
            if first is None and seen.began > since:
                first = seen.polls
            # Of the polls ended since `before`, only one can have begun before the change.
            done = seen.polls - before - 1 >= polls or (
                first is not None and seen.polls - first + 1 >= polls
            )
        elif seen is not None:
            if seen.last_poll > since:
                ended.add(seen.last_poll)
            done = len(ended) >= polls + 1
        if check():
            return
        assert not done, f"not so after {polls} poll(s) begun after the change"
        assert time.monotonic() < deadline, f"no poll ended within {PATIENCE} s"
        time.sleep(0.05)  # a readiness poll


def published(redis_url: str):
    """The watcher state a deployment published in Redis (None before its first poll)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.get("portal:watch:state")
    finally:
        client.close()
    return WatchState.from_published(raw) if raw else None


def signed_in(app, username: str = "alice"):
    client = app.test_client()
    assert AuthActions(client).login(username).status_code == 302
    return client


CHANGES = {
    "removed from the group": (
        "/pages/engineering", [remove_member(ENGINEERING, ALICE)]),
    "a nested group removed from the group above it": (
        "/pages/research", [remove_member(RESEARCH, ENGINEERING)]),
    "disabled": (
        "/", [f"dn: {ALICE}\nchangetype: modify\nadd: description\ndescription: disabled\n"]),
    "added to the denied group": (
        "/", ["dn: cn=suspended,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\n"
              f"member: {ALICE}\n"]),
    "deleted (and taken out of her groups, as refint would)": (
        "/", [remove_member(ENGINEERING, ALICE),
              remove_member("cn=staff,ou=groups,dc=example,dc=org", ALICE), None]),
}  # fmt: skip


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_ends_access_within_the_interval(watched, own_slapd, change):
    """alice's page answers 200; the directory changes; by the end of the next poll it is
    refused (403, or the sign-in page once she may not sign in at all), with the TTL at 300."""
    path, ldifs = CHANGES[change]
    alice = signed_in(watched)
    assert alice.get(path).status_code == 200  # also starts the watcher
    watcher = watched.extensions["portal.watcher"]
    eventually(lambda: watcher.state.last_poll, timeout=5)  # it runs, as it would all along
    for ldif in ldifs:
        if ldif is None:
            own_slapd.delete(ALICE)
        else:
            own_slapd.modify(ldif)
    by_the_polls_after(lambda: watcher.state, lambda: alice.get(path).status_code in (302, 403))


@pytest.mark.parametrize("watched", ["groups base holds the people",
                                     "people base holds the groups"], indirect=True)  # fmt: skip
def test_bases_inside_each_other_still_end_access(watched, own_slapd):
    alice = signed_in(watched)
    assert alice.get("/pages/engineering").status_code == 200
    watcher = watched.extensions["portal.watcher"]
    eventually(lambda: watcher.state.last_poll, timeout=5)
    own_slapd.modify(remove_member(ENGINEERING, ALICE))
    by_the_polls_after(
        lambda: watcher.state, lambda: alice.get("/pages/engineering").status_code == 403
    )


def test_a_deleted_group_is_noticed_by_the_listing(watched, own_slapd, monkeypatch):
    """research is deleted (no search for changes can return it): the listing of the groups
    finds it gone, and alice, in it through engineering, loses it."""
    from portal.directory.changes import ChangeFeed

    monkeypatch.setattr(ChangeFeed, "LISTING_POLLS", 2)
    alice = signed_in(watched)
    assert alice.get("/pages/research").status_code == 200
    watcher = watched.extensions["portal.watcher"]
    eventually(lambda: watcher.state.last_poll, timeout=5)
    own_slapd.delete(RESEARCH)
    # One of two polls lists the groups: by the end of the second begun after the change.
    by_the_polls_after(
        lambda: watcher.state, lambda: alice.get("/pages/research").status_code == 403, polls=2
    )


def test_a_person_deleted_under_refint_is_noticed_by_the_listing(monkeypatch):
    """With OpenLDAP's refint overlay, deleting alice takes her out of her groups without a new
    entryCSN on them, so no search for changes returns them: the listing of the groups with
    their members finds the change, and her sign-in ends (it lasted until the TTL)."""
    from portal.directory.changes import ChangeFeed
    from portal.testing.slapd import Slapd

    monkeypatch.setattr(ChangeFeed, "LISTING_POLLS", 2)
    refint = ("overlay refint\nrefint_attributes member\n"
              "refint_nothing cn=nobody,dc=example,dc=org")  # fmt: skip
    with Slapd(modules=["refint"], extra_config=refint) as server:
        app = make_app(server, WATCH_INTERVAL=INTERVAL, USER_CACHE_TTL=300, PAGES=PAGES)
        try:
            alice = signed_in(app)
            assert alice.get("/pages/engineering").status_code == 200
            watcher = app.extensions["portal.watcher"]
            eventually(lambda: watcher.state.last_poll, timeout=5)
            server.delete(ALICE)
            by_the_polls_after(
                lambda: watcher.state, lambda: alice.get("/").status_code == 302, polls=2
            )
        finally:
            app.extensions["portal.watcher"].stop()
            app.extensions["portal.directory"].close()


GONE_WITHOUT_REFINT = {
    "deleted": None,
    "renamed": f"dn: {ALICE}\nchangetype: modrdn\nnewrdn: uid=alice-old\ndeleteoldrdn: 1\n",
    "moved out of the user base": (f"dn: {ALICE}\nchangetype: moddn\nnewrdn: uid=alice\n"
                                   "deleteoldrdn: 1\nnewsuperior: ou=former,dc=example,dc=org\n"),
}  # fmt: skip


@pytest.mark.parametrize("leaving", list(GONE_WITHOUT_REFINT))
def test_a_person_deleted_renamed_or_moved_away_is_found_by_the_listing(
    watched, own_slapd, monkeypatch, leaving
):
    """Without the refint overlay alice's groups still list her old DN and keep their stamps,
    and no search for changes shows an entry deleted or moved out of the base (a rename shows
    only the new name, which nobody has cached): her sign-in lasted USER_CACHE_TTL (300 s),
    on every instance and app. The listing reads every DN under the user base: hers is not
    there, she is read again, and her sign-in ends."""
    from portal.directory.changes import ChangeFeed

    monkeypatch.setattr(ChangeFeed, "LISTING_POLLS", 2)
    own_slapd.add("dn: ou=former,dc=example,dc=org\nobjectClass: organizationalUnit\n"
                  "ou: former\n")  # fmt: skip
    alice = signed_in(watched)
    assert alice.get("/").status_code == 200
    watcher = watched.extensions["portal.watcher"]
    eventually(lambda: watcher.state.last_poll, timeout=5)
    change = GONE_WITHOUT_REFINT[leaving]
    if change is None:
        own_slapd.delete(ALICE)
    else:
        own_slapd.modify(change)
    by_the_polls_after(lambda: watcher.state, lambda: alice.get("/").status_code == 302, polls=2)


def test_a_base_over_the_size_limit_names_the_fix_and_with_it_is_paged_through(
    tmp_path, monkeypatch
):
    """Stock slapd counts a paged search's entries against its size limit (500): with 600
    people the watcher never started (revocation waited for USER_CACHE_TTL) and said only
    that a size limit was exceeded. Its error names the service account's limits line; with
    that line, and pages of 2 people (over 300 pages a search: 200 were refused as runaway, a
    base of 100,000 people at 500 a page), it polls, lists, and a removal ends access."""
    from portal.directory.changes import ChangeFeed
    from portal.testing.slapd import FIXTURES, Slapd

    monkeypatch.setattr(ChangeFeed, "LISTING_POLLS", 2)
    crowd = tmp_path / "crowd.ldif"
    crowd.write_text(crowd_ldif())
    trees = [*sorted(FIXTURES.glob("*.ldif")), crowd]
    with Slapd(ldif_files=trees) as server:
        app = make_app(server, WATCH_INTERVAL=INTERVAL, USER_CACHE_TTL=300, PAGES=PAGES)
        try:
            app.test_client().get("/login")  # the first request starts the watcher
            watcher = app.extensions["portal.watcher"]
            error = eventually(lambda: watcher.state.error, timeout=PATIENCE)
            assert "size limit" in error and PAGE_THROUGH_ALL.removeprefix("limits ") in error
        finally:
            watcher.stop()
            app.extensions["portal.directory"].close()
    with Slapd(ldif_files=trees, extra_config=PAGE_THROUGH_ALL) as server:
        app = make_app(server, WATCH_INTERVAL=INTERVAL, USER_CACHE_TTL=300, PAGES=PAGES,
                       LDAP_PAGE_SIZE=2)  # fmt: skip
        try:
            alice = signed_in(app)
            assert alice.get("/pages/engineering").status_code == 200
            watcher = app.extensions["portal.watcher"]
            eventually(lambda: watcher.state.polls >= 2, timeout=PATIENCE)
            assert not watcher.state.error
            server.modify(remove_member(ENGINEERING, ALICE))
            by_the_polls_after(
                lambda: watcher.state, lambda: alice.get("/pages/engineering").status_code == 403
            )
        finally:
            watcher.stop()
            app.extensions["portal.directory"].close()


def test_a_deleted_person_whose_dn_does_not_name_them_is_found_by_the_cache(watched, own_slapd):
    """gina's entry is cn=Gina Lee,...: once it is deleted, the DN her groups lose names nobody
    the directory can find; the DN her cache entry holds does, and her sign-in ends."""
    gina = "cn=Gina Lee,ou=people,dc=example,dc=org"
    own_slapd.add(f"dn: {gina}\nobjectClass: inetOrgPerson\ncn: Gina Lee\nsn: Lee\nuid: gina\n"
                  "userPassword: gina-secret\n")  # fmt: skip
    own_slapd.modify("dn: cn=staff,ou=groups,dc=example,dc=org\nchangetype: modify\n"
                     f"add: member\nmember: {gina}\n")  # fmt: skip
    client = watched.test_client()
    assert AuthActions(client).login("gina", "gina-secret").status_code == 302
    assert client.get("/").status_code == 200
    watcher = watched.extensions["portal.watcher"]
    eventually(lambda: watcher.state.last_poll, timeout=5)
    own_slapd.delete(gina)
    own_slapd.modify(remove_member("cn=staff,ou=groups,dc=example,dc=org", gina))
    by_the_polls_after(lambda: watcher.state, lambda: client.get("/").status_code == 302)


def test_a_watcher_that_takes_over_finds_who_joined_a_group_meanwhile(
    own_slapd, own_redis, monkeypatch
):
    """The lease holder dies, bob is added to the denied group, and another instance's watcher
    takes over from the holder's last stamp: it reads the groups as they are now, so bob's
    joining is no difference it can see. Every member of a changed group that is cached is
    read again, and bob is refused (he kept his access until the TTL)."""
    from portal.directory import changes
    from portal.watcher import Watcher

    # Without the overlap, a window no longer holds the entries loaded at start-up once a
    # change of a later second was seen (else every person would be read again, bob too).
    monkeypatch.setattr(changes, "WINDOW_OVERLAP", 0)
    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": own_redis.url,
                "WATCH_INTERVAL": 0, "USER_CACHE_TTL": 300}  # fmt: skip
    holder_app, other_app = make_app(own_slapd, **settings), make_app(own_slapd, **settings)
    holder, other = Watcher(holder_app), Watcher(other_app)
    holder.interval = other.interval = INTERVAL

    with holder_app.app_context():
        holder.tick()
        loaded = stamp_second(holder.feed.since)

        def moved_on() -> bool:
            own_slapd.modify("dn: uid=frank,ou=people,dc=example,dc=org\nchangetype: modify\n"
                             "replace: description\ndescription: busy\n")  # fmt: skip
            holder.tick()
            # Two seconds on: a window also reaches back by the time its start() took.
            return stamp_second(holder.feed.since) >= loaded + 2

        eventually(moved_on, timeout=5)
    bob = signed_in(other_app, "bob")
    assert bob.get("/").status_code == 200
    own_redis.client().delete("portal:watch:lease")  # the holder died; its lease ran out
    own_slapd.modify("dn: cn=suspended,ou=groups,dc=example,dc=org\nchangetype: modify\n"
                     "add: member\nmember: uid=bob,ou=people,dc=example,dc=org\n")  # fmt: skip
    with other_app.app_context():
        other.tick()
    assert bob.get("/").status_code == 302
    for application in (holder_app, other_app):
        application.extensions["portal.directory"].close()


@pytest.mark.parametrize(
    ("mode", "name", "not_its_name"),
    [("search", "Team A", "team-a"), ("memberof", "team-a", "Team A")],
)
def test_a_resumed_poll_names_a_changed_group_as_the_portal_does(
    own_slapd, mode, name, not_its_name
):
    """After a takeover, the people cached in a changed group are read again, found by the
    group's name in their entries: the name the portal gives the group in this mode. In
    "memberof" mode that is its DN's first RDN (ou=team-a, whose cn is "Team A", is
    "team-a"), as its members' memberOf values give it; the cn found nobody cached there."""
    team = "ou=team-a,ou=groups,dc=example,dc=org"
    own_slapd.add(f"dn: {team}\nobjectClass: groupOfNames\ncn: Team A\nou: team-a\n"
                  f"member: {ALICE}\n")  # fmt: skip
    app = make_app(own_slapd, WATCH_INTERVAL=0, LDAP_GROUP_MEMBERSHIP=mode)
    try:
        with app.app_context():
            from portal import directory

            taken_over = directory.change_feed()
            taken_over.start()  # the stamp the dead watcher had got to
            feed = directory.change_feed()
            feed.resume(taken_over.since)
            own_slapd.modify(remove_member(team, ALICE))
            # (Every group changed in the window's overlap is in it too.)
            groups = feed.poll().groups
            assert name in groups and not_its_name not in groups
    finally:
        app.extensions["portal.directory"].close()


def test_only_who_joined_is_read_again(watched, own_slapd):
    """bob joins engineering: he is re-read, alice (already in it) is not."""
    alice, bob = signed_in(watched), signed_in(watched, "bob")
    alice.get("/")
    watcher = watched.extensions["portal.watcher"]
    eventually(lambda: watcher.state.last_poll, timeout=5)
    before = watcher.state.flushes
    own_slapd.modify(f"dn: {ENGINEERING}\nchangetype: modify\nadd: member\n"
                     "member: uid=bob,ou=people,dc=example,dc=org\n")  # fmt: skip
    by_the_polls_after(lambda: watcher.state, lambda: watcher.state.flushes > before)
    assert bob.get("/pages/engineering").status_code == 200
    assert watcher.state.flushes - before == 1


def test_a_poll_that_fails_half_way_is_done_again(watched, own_slapd):
    """The directory fails during a poll: nothing of it is kept, so the next poll still finds
    the change."""
    with watched.app_context():
        from portal import directory

        feed = directory.change_feed()
        feed.start()
        own_slapd.modify(remove_member(ENGINEERING, ALICE))
        search, calls = feed.search, []

        def failing_once(*args):
            calls.append(args)
            if len(calls) == 2:
                raise directory.DirectoryUnavailable("the second base failed")
            return search(*args)

        feed.search = failing_once
        with pytest.raises(directory.DirectoryUnavailable):
            feed.poll()
        assert "alice" in feed.poll().people


def newcomers_ldif(count: int) -> str:
    """LDIF adding `count` people under the user base in one go (a bulk import)."""
    return "".join(f"dn: uid=newcomer{number},ou=people,dc=example,dc=org\n"
                   f"objectClass: inetOrgPerson\nuid: newcomer{number}\ncn: N{number}\nsn: N\n\n"
                   for number in range(count))  # fmt: skip


@pytest.fixture
def feed_on_a_clock(own_slapd):
    """A change feed of its own on `own_slapd` (started), whose clock is `now[0]`, with the
    number of entries each of its searches returned."""
    app = make_app(own_slapd, WATCH_INTERVAL=0)
    now, returned = [0.0], []
    try:
        with app.app_context():
            from portal import directory

            feed = directory.change_feed()
            feed.clock, search = (lambda: now[0]), feed.search

            def counted(base, query, attributes):
                entries = search(base, query, attributes)
                returned.append(len(entries))
                return entries

            feed.search = counted
            feed.start()
            yield feed, now, returned
    finally:
        app.extensions["portal.directory"].close()


def test_after_a_bulk_change_the_overlap_is_read_once_more_then_no_longer(
    feed_on_a_clock, own_slapd
):
    """A bulk import on a quiet directory leaves every entry it wrote inside the windows'
    overlap: once a poll has read it WINDOW_OVERLAP seconds after its newest stamp was seen,
    polls read only what is newer (each read them all again: 13-15 s of processor time a
    poll on 100,000 people), and the next change is still found."""
    feed, now, returned = feed_on_a_clock
    own_slapd.add(newcomers_ldif(20))
    assert {f"newcomer{number}" for number in range(20)} <= feed.poll().people

    def entries_read_by_a_poll_at(moment: float) -> int:
        now[0], before = moment, len(returned)
        assert feed.poll().people == set()
        return sum(returned[before:])

    assert entries_read_by_a_poll_at(1.0) >= 20  # writes may still be in flight: read again
    assert entries_read_by_a_poll_at(changes.WINDOW_OVERLAP + 1.0) >= 20  # the settling read
    assert entries_read_by_a_poll_at(changes.WINDOW_OVERLAP + 2.0) <= 1  # the newest only
    own_slapd.modify(f"dn: {ALICE}\nchangetype: modify\nreplace: description\ndescription: x\n")
    assert "alice" in feed.poll().people


def commit_late(feed) -> None:
    """From now on the feed's searches also find `uid=late`, stamped 2 s before the newest
    stamp it has seen: a write begun before that one, committed only now."""
    seen = datetime.strptime(feed.since[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    older = datetime.fromtimestamp(seen.timestamp() - 2, UTC).strftime("%Y%m%d%H%M%S")
    stamp = f"{older}.000000Z#000000#000#000000"
    late = {"dn": "uid=late,ou=people,dc=example,dc=org",
            "attributes": {"entryCSN": [stamp], "uid": ["late"],
                           "objectClass": ["inetOrgPerson"]}}  # fmt: skip
    search = feed.search

    def committed_late(base, query, attributes):
        entries = search(base, query, attributes)
        bound = re.fullmatch(r"\(entryCSN>=(.+)\)", query)
        if base.startswith("ou=people") and bound and stamp >= bound[1]:
            entries = [*entries, late]
        return entries

    feed.search = committed_late


def test_a_write_older_than_the_newest_stamp_is_found_until_the_overlap_settles(
    feed_on_a_clock, own_slapd
):
    """A write still in flight when the newest stamp was seen commits later with an older
    stamp: polls before the overlap has settled (WINDOW_OVERLAP seconds on) reach back for it."""
    feed, now, _ = feed_on_a_clock
    own_slapd.add(newcomers_ldif(1))
    assert "newcomer0" in feed.poll().people
    now[0] = 1.0
    assert feed.poll().people == set()  # quiet, but too soon to settle
    commit_late(feed)
    now[0] = changes.WINDOW_OVERLAP - 1.0
    assert "late" in feed.poll().people


def test_a_write_that_took_longer_than_the_overlap_is_found_by_the_listing_poll(
    feed_on_a_clock, own_slapd
):
    """Once settled, ordinary polls read only newer stamps; a write that took longer than
    WINDOW_OVERLAP (a large group's modify) is found by the next listing poll, which reads the
    whole overlap."""
    feed, now, _ = feed_on_a_clock
    own_slapd.add(newcomers_ldif(1))
    assert "newcomer0" in feed.poll().people
    now[0] = changes.WINDOW_OVERLAP + 1.0
    assert feed.poll().people == set()  # the settling read
    commit_late(feed)
    feed.polls = feed.LISTING_POLLS - 1  # the next poll lists the groups
    now[0] = changes.WINDOW_OVERLAP + 2.0
    assert "late" in feed.poll().people


def test_on_active_directory_the_usn_overlap_is_read_every_poll():
    """An AD write may commit after a higher USN however long it took: a quiet domain's last
    USN_OVERLAP numbers are read by every poll, so such a write is found by the next one."""
    settings = SimpleNamespace(account_state="ad", group_base="ou=groups,dc=corp",
                               user_bases=["ou=people,dc=corp"], attr_username="sAMAccountName",
                               group_name_attr="cn")  # fmt: skip
    entries = {"ou=people,dc=corp": [], "ou=groups,dc=corp": []}

    def person(name: str, usn: int) -> dict:
        return {"dn": f"cn={name},ou=people,dc=corp",
                "attributes": {"uSNChanged": [str(usn)], "sAMAccountName": [name],
                               "objectClass": ["user"]}}  # fmt: skip

    def search(base, query, attributes):
        bound = re.fullmatch(r"\(uSNChanged>=(\d+)\)", query)
        return [
            entry
            for entry in entries[base]
            if not bound or int(entry["attributes"]["uSNChanged"][0]) >= int(bound[1])
        ]

    now = [0.0]
    feed = changes.ChangeFeed(settings, search, lambda dn, attributes=None: [],
                              clock=lambda: now[0])  # fmt: skip
    entries["ou=people,dc=corp"].append(person("old", 4000))
    feed.start()
    entries["ou=people,dc=corp"].append(person("new", 5000))
    assert feed.poll().people == {"new"}
    for moment in (1.0, changes.WINDOW_OVERLAP + 1.0):
        now[0] = moment
        assert feed.poll().people == set()
    entries["ou=people,dc=corp"].append(person("committed-late", 4990))
    now[0] = changes.WINDOW_OVERLAP + 2.0
    assert feed.poll().people == {"committed-late"}


def test_a_refresh_during_an_outage_leaves_the_entry_for_the_grace(watched, own_slapd):
    """The directory stops just as a change is handled: alice's entry stays (she keeps the
    stale grace), nothing is revoked."""
    from portal.directory import DirectoryError

    alice = signed_in(watched)
    alice.get("/")
    own_slapd.stop()
    with watched.app_context():
        with pytest.raises(DirectoryError):
            accounts.refresh_after_change("alice")
        assert accounts.cached_attributes("alice") is not None
    assert alice.get("/").status_code == 200


def test_a_state_published_by_another_release_is_still_read(own_slapd, own_redis):
    """During a rolling upgrade an instance of the next release publishes a field this one does
    not know: the status page still shows that watcher (not this process's own, idle one)."""
    app = make_app(own_slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                   WATCH_INTERVAL=0)  # fmt: skip
    try:
        state = {"last_poll": time.time(), "holder": "next-release:1", "interval": 2.0,
                 "flushes": 7, "a_field_of_the_next_release": [1, 2]}  # fmt: skip
        own_redis.client().set("portal:watch:state", json.dumps(state))
        found = read_shared_state(app)
        assert found is not None and found.holder == "next-release:1" and found.flushes == 7
    finally:
        app.extensions["portal.directory"].close()


def test_a_watcher_that_lost_its_lease_does_not_publish(own_slapd, own_redis):
    """Two watchers on one Redis: the one without the lease cannot write over the holder's
    progress."""
    import json

    import redis

    settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": own_redis.url,
                "THROTTLE_STORAGE_URL": "memory://", "WATCH_INTERVAL": INTERVAL}  # fmt: skip
    first, second = make_app(own_slapd, **settings), make_app(own_slapd, **settings)
    one, other = first.extensions["portal.watcher"], second.extensions["portal.watcher"]
    with first.app_context():
        one.tick()
    with second.app_context():
        other.tick()  # no lease: it does not poll
        other.state.since = "from the one without the lease"
        other._publish()
    client = redis.Redis.from_url(own_redis.url)
    state = json.loads(client.get("portal:watch:state"))
    client.close()
    assert state["holder"] == one.identity and state["since"] != other.state.since
    for app in (first, second):
        app.extensions["portal.directory"].close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # on purpose
def test_a_watcher_whose_thread_died_is_started_again(watched, monkeypatch):
    """A loop ended by something no poll catches (not stopped on purpose) is started again by
    the next request."""
    watcher = watched.extensions["portal.watcher"]

    def fatal():
        raise SystemExit("ended")

    monkeypatch.setattr(watcher, "tick", fatal)
    client = signed_in(watched)
    eventually(lambda: not watcher.running, timeout=10)
    monkeypatch.undo()
    client.get("/")
    assert watcher.running


def test_what_the_watcher_publishes_the_previous_release_reads(own_slapd, own_redis):
    """Instances of two releases share one Redis during a rolling upgrade: the state published
    holds only the fields the release before knew (it read them all, and took a state with any
    other for none, so it would take over from now instead of where the watching had got to)."""
    previous_fields = {"last_poll", "since", "changes", "flushes", "revoked", "holder",
                       "error", "interval"}  # fmt: skip
    app = make_app(own_slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                   WATCH_INTERVAL=INTERVAL)  # fmt: skip
    try:
        with app.app_context():
            app.extensions["portal.watcher"].tick()
        state = json.loads(own_redis.client().get("portal:watch:state"))
        assert set(state) <= previous_fields and state["since"]
    finally:
        app.extensions["portal.directory"].close()


def test_the_loop_survives_a_failing_poll(watched, monkeypatch):
    """A poll that raises is logged; the thread goes on (and is started again if it died)."""
    watcher = watched.extensions["portal.watcher"]
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("boom")

    monkeypatch.setattr(watcher, "tick", broken)
    signed_in(watched).get("/")
    eventually(lambda: len(calls) >= 2, timeout=5)
    assert watcher._thread.is_alive()


def test_without_the_watcher_the_ttl_decides(own_slapd):
    """The same removal with WATCH_INTERVAL = 0: still allowed (until USER_CACHE_TTL)."""
    app = make_app(own_slapd, WATCH_INTERVAL=0, USER_CACHE_TTL=300, PAGES=PAGES)
    alice = signed_in(app)
    assert alice.get("/pages/engineering").status_code == 200
    own_slapd.modify(remove_member(ENGINEERING, ALICE))
    watcher_like_wait = [alice.get("/pages/engineering").status_code for _ in range(3)]
    assert watcher_like_wait == [200, 200, 200]
    app.extensions["portal.directory"].close()


def test_a_poll_costs_the_same_with_100_or_1000_people_cached(watched, own_slapd):
    """One paged search per base per poll, whatever the number of people cached."""
    watcher = watched.extensions["portal.watcher"]
    costs = []
    for people in (100, 1000):
        with watched.app_context():
            for number in range(people):
                name = f"person{number:05d}"
                dn = f"uid={name},ou=people,dc=example,dc=org"
                accounts.remember({"username": name, "dn": dn, "display_name": name, "email": "",
                                   "groups": ["staff"], "password_changed": ""})  # fmt: skip
            watcher.tick()  # the first poll reads the groups' members once
            before = own_slapd.counters()["search"]
            for _ in range(3):
                watcher.tick()
            costs.append(own_slapd.counters()["search"] - before)
    assert costs[0] == costs[1] == 3 * 2, costs  # people base and group base, three polls


def login(session: requests.Session, base: str, username: str) -> None:
    form = session.get(base + "/login", timeout=10).text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    answer = session.post(base + "/login", timeout=10, allow_redirects=False, data={
        "csrf_token": token, "username": username, "password": f"{username}-secret"})  # fmt: skip
    assert answer.status_code == 302, answer.text[:300]


def redis_environment(own_slapd, own_redis, **extra) -> dict[str, str]:
    environment = portal_environment(own_slapd.url)
    environment.update(
        PORTAL_CACHE_TYPE='"RedisCache"', PORTAL_CACHE_REDIS_URL=f'"{own_redis.url}"',
        PORTAL_THROTTLE_STORAGE_URL='"memory://"', PORTAL_WATCH_INTERVAL=str(INTERVAL),
        PORTAL_USER_CACHE_TTL="300", PORTAL_LDAP_GROUP_NESTING_DEPTH="1",
        **{f"PORTAL_{key}": value for key, value in extra.items()},
    )  # fmt: skip
    return environment


@pytest.mark.slow
def test_under_gunicorn_with_redis_every_worker_refuses_within_the_interval(
    own_slapd, own_redis, tmp_path
):
    """Two workers, one Redis: alice removed from engineering with ldapmodify; by the end of
    the next poll (of whichever worker holds the lease) every answer, whichever worker gives
    it, refuses /auth/verify for the engineering app."""
    server = Gunicorn(tmp_path, redis_environment(own_slapd, own_redis)).start()
    try:
        alice = requests.Session()
        login(alice, server.base_url, "alice")
        app_url = {"X-Original-URL": "https://portal.example/app/engineering/",
                   "X-Original-Method": "GET"}  # fmt: skip
        verify = server.base_url + "/auth/verify"
        assert alice.get(verify, headers=app_url, timeout=10).status_code == 200
        # The first poll only marks where the watching starts: changes from then on count.
        eventually(lambda: published(own_redis.url), timeout=10)
        own_slapd.modify(remove_member(ENGINEERING, ALICE))

        def refused_everywhere() -> bool:
            answers = [alice.get(verify, headers=app_url, timeout=10).status_code
                       for _ in range(6)]  # fmt: skip
            return set(answers) == {403}

        by_the_polls_after(lambda: published(own_redis.url), refused_everywhere)
        pids = {line["pid"] for line in server.access_lines()}
        assert len(pids) == 2, "both workers answered"
    finally:
        server.stop()


@pytest.mark.slow
def test_two_instances_share_one_watcher_and_another_takes_over(own_slapd, own_redis, tmp_path):
    """Two gunicorn instances on one Redis: one lease holder; kill -9 it, and the other
    instance's watcher takes over once the lease expires (5 s), so a change still ends access."""
    import redis

    first = Gunicorn(tmp_path / "a", redis_environment(own_slapd, own_redis), workers=1)
    second = Gunicorn(tmp_path / "b", redis_environment(own_slapd, own_redis), workers=1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first.start()
    second.start()
    client = redis.Redis.from_url(own_redis.url)
    try:
        for server in (first, second):
            requests.get(server.base_url + "/login", timeout=10)  # starts each watcher
        holder = eventually(lambda: client.get("portal:watch:lease"), timeout=5).decode()
        holder_pid = int(holder.split(":")[1])
        owner, other = (first, second) if holder_pid in _worker_pids(first) else (second, first)
        for pid in _worker_pids(owner) | {owner.process.pid}:
            _kill(pid)  # kill -9: no chance to let the lease go
        alice = requests.Session()
        login(alice, other.base_url, "alice")
        assert alice.get(other.base_url + "/pages/engineering", timeout=10).status_code == 200
        own_slapd.modify(remove_member(ENGINEERING, ALICE))
        # Once the lease has run out (5 s), the other instance polls from where the holder had
        # got to: its first poll finds the change.
        page = other.base_url + "/pages/engineering"
        by_the_polls_after(
            lambda: published(own_redis.url), lambda: alice.get(page, timeout=10).status_code == 403
        )
        assert client.get("portal:watch:lease").decode() != holder
    finally:
        client.close()
        first.stop()
        second.stop()


def _worker_pids(server: Gunicorn) -> set[int]:
    import subprocess

    found = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True)
    return {int(pid) for pid in found.stdout.split()}


def _kill(pid: int) -> None:
    import os
    from contextlib import suppress

    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_the_status_page_and_metrics_show_the_watcher(watched, own_slapd):
    """Last poll, people re-read and the lag on /admin/status and /metrics; a watcher that
    stopped is shown in red once three intervals have gone by, and the page's first line
    says so (it said "All good", a dead watcher's sign-outs waiting for USER_CACHE_TTL)."""
    from tests.test_metrics import scrape

    erin = signed_in(watched, "erin")
    signed_in(watched).get("/")  # alice: cached, so re-read when her group changes
    watcher = watched.extensions["portal.watcher"]
    erin.get("/")
    eventually(lambda: watcher.state.last_poll, timeout=5)
    own_slapd.modify(remove_member(ENGINEERING, ALICE))
    by_the_polls_after(lambda: watcher.state, lambda: watcher.state.flushes >= 1)
    page = erin.get("/admin/status").get_data(as_text=True)
    assert "<h2>Directory watcher</h2>" in page and "(this process)" in page
    assert re.search(r'<dd class="ok">✓ \d+ s ago \(every 1 s\)</dd>', page)
    assert "Replication followed" not in page  # no syncprov: none (tests/test_replication.py)
    found = scrape(watched)
    assert found.value("portal_watch_flushes_total") >= 1
    assert found.value("portal_watch_lag_seconds") < 5
    watcher.stop()
    watcher.state.last_poll -= 10  # as after ten seconds without a poll
    page = erin.get("/admin/status").get_data(as_text=True)
    assert re.search(r'<dd class="bad">✗ \d+ s ago', page)
    assert re.search(r'<p class="summary bad" role="status">Watcher: no poll for 1\d s</p>', page)


def test_a_stopped_watcher_is_not_started_again_by_the_next_request(watched):
    """Stopped on shutdown, the watcher stays stopped: a request still in flight must not start
    a new loop (which would poll, and hold the lease, in a process going away)."""
    client = signed_in(watched)
    watcher = watched.extensions["portal.watcher"]
    assert watcher.running
    watcher.stop()
    assert not watcher.running
    assert client.get("/").status_code == 200
    assert not watcher.running


@pytest.mark.slow
def test_flask_watch_runs_the_watcher_as_a_sidecar(own_slapd, own_redis):
    """`flask --app portal watch` beside a portal whose own watcher is off (both on Redis):
    the sidecar's re-read reaches the portal, which refuses alice's page by the end of the
    sidecar's next poll; stopped with SIGTERM, it lets its lease go."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    environment = redis_environment(own_slapd, own_redis)
    # The sidecar reads and writes the servers' signed cache entries: the same SECRET_KEY.
    environment["PORTAL_SECRET_KEY"] = "test-secret-key-0123456789abcdef0123"
    sidecar = subprocess.Popen([sys.executable, "-m", "flask", "--app", "portal", "watch"],
                               cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)  # fmt: skip
    app = make_app(own_slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                   THROTTLE_STORAGE_URL="memory://", USER_CACHE_TTL=300,
                   WATCH_INTERVAL=0)  # fmt: skip
    try:
        import redis

        client = redis.Redis.from_url(own_redis.url)
        eventually(lambda: client.get("portal:watch:state"), timeout=15)
        client.close()
        alice = signed_in(app)
        assert alice.get("/pages/engineering").status_code == 200
        own_slapd.modify(remove_member(ENGINEERING, ALICE))
        try:
            by_the_polls_after(
                lambda: read_shared_state(app),
                lambda: alice.get("/pages/engineering").status_code == 403,
            )
        except AssertionError:
            sidecar.terminate()
            raise AssertionError(sidecar.communicate(timeout=10)[0].decode()) from None
        # This server's own watcher is off; the page shows the sidecar's (through Redis).
        page = signed_in(app, "erin").get("/admin/status").get_data(as_text=True)
        assert "Off (WATCH_INTERVAL = 0)" not in page and "People re-read" in page
    finally:
        sidecar.terminate()
        output = sidecar.communicate(timeout=10)[0].decode(errors="replace")
    try:
        # This server's /metrics says how long ago the sidecar polled (it read 0, the gauge
        # set only where a watcher runs, so an alert on a dead sidecar never fired).
        from tests.test_metrics import scrape

        last_poll = read_shared_state(app).last_poll
        lag = scrape(app).value("portal_watch_lag_seconds")
        assert 0 < lag <= time.time() - last_poll, lag
    finally:
        app.extensions["portal.directory"].close()
    assert "watching the directory every 1 s" in output, output
    # SIGTERM, as a service manager stops it: the lease is let go, not left to run out.
    assert sidecar.returncode == 0, output
    assert own_redis.client().get("portal:watch:lease") is None


@pytest.mark.slow
def test_a_worker_that_stops_lets_its_lease_go(own_slapd, own_redis, tmp_path):
    """gunicorn with the shipped hooks, stopped with SIGTERM (a deploy, a scale-down): the
    worker holding the lease lets it go, so another instance takes over at once rather than
    when it runs out."""
    from tests.conftest import ROOT

    environment = redis_environment(own_slapd, own_redis)
    environment["GUNICORN_CMD_ARGS"] = f"--config {ROOT / 'deploy' / 'gunicorn.conf.py'}"
    server = Gunicorn(tmp_path, environment, workers=1).start()
    lease = own_redis.client()
    try:
        requests.get(server.base_url + "/login", timeout=10)  # starts the watcher
        eventually(lambda: published(own_redis.url), timeout=10)
        assert lease.get("portal:watch:lease") is not None
    finally:
        server.stop()
    try:
        assert server.process.returncode == 0, server.output_text()
        assert lease.get("portal:watch:lease") is None, server.output_text()
    finally:
        lease.close()


# -- what a poll found stays owed until it is done ----------------------------------------
# The feed never shows a change again once it has polled past it: whatever stopped the watcher
# from re-reading someone (the directory, the cache, the lease) must not drop them. Each test
# polls by hand (tick) so the fault lands on the one poll it is meant for.

REDIS = {"CACHE_TYPE": "RedisCache", "THROTTLE_STORAGE_URL": "memory://"}


def stamp_second(stamp: str) -> float:
    """The second a directory stamp (entryCSN, modifyTimestamp) names, as a Unix time."""
    return datetime.strptime(stamp[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp()


def by_hand(app):
    """A watcher of `app` that polls only when the test calls tick() (its app has
    WATCH_INTERVAL = 0, so no request starts a loop); its first poll has been made."""
    from portal.watcher import Watcher

    watcher = Watcher(app)
    watcher.interval = INTERVAL
    with app.app_context():
        watcher.tick()
    return watcher


def alice_served_elsewhere(slapd, redis_server):
    """Two servers sharing Redis, the watcher's ("here") and the one alice's browser uses
    ("elsewhere"), where her engineering page opens; (here, elsewhere, alice)."""
    settings = dict(REDIS, CACHE_REDIS_URL=redis_server.url, WATCH_INTERVAL=0,
                    USER_CACHE_TTL=300, PAGES=PAGES)  # fmt: skip
    here, elsewhere = make_app(slapd, **settings), make_app(slapd, **settings)
    alice = signed_in(elsewhere)
    assert alice.get("/pages/engineering").status_code == 200
    return here, elsewhere, alice


def tick(app, watcher) -> None:
    with app.app_context():
        watcher.tick()


def test_a_person_whose_re_read_failed_is_read_again_at_the_next_poll(own_slapd, monkeypatch):
    """alice leaves engineering; the directory fails the one read of her that follows (every
    connection busy): the next poll reads her again and her page is refused (it was left to
    the TTL: the feed had moved past her change)."""
    from portal import directory

    app = make_app(own_slapd, WATCH_INTERVAL=0, USER_CACHE_TTL=300, PAGES=PAGES)
    alice = signed_in(app)
    assert alice.get("/pages/engineering").status_code == 200
    watcher = by_hand(app)
    own_slapd.modify(remove_member(ENGINEERING, ALICE))
    lookup, failed = directory.lookup, []

    def busy_once(*args, **kwargs):
        if not failed:
            failed.append(args)
            raise directory.DirectoryUnavailable("every directory connection is busy")
        return lookup(*args, **kwargs)

    monkeypatch.setattr(directory, "lookup", busy_once)
    tick(app, watcher)
    assert failed, "the poll found her and tried to read her"
    assert alice.get("/pages/engineering").status_code == 200, "left as it was, for now"
    tick(app, watcher)
    assert alice.get("/pages/engineering").status_code == 403
    app.extensions["portal.directory"].close()


def test_a_person_the_cache_did_not_answer_for_is_read_again_once_it_does(
    own_slapd, own_redis, frozen_breakers
):
    """Redis hung for a moment in the watcher's process, so its breaker leaves Redis alone
    while the watcher finds alice's change: whether she is cached is unknown, not "no" (she
    was skipped, and another server served her old entry until the TTL)."""
    here, elsewhere, alice = alice_served_elsewhere(own_slapd, own_redis)
    watcher = by_hand(here)
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        with here.app_context():
            assert accounts.cached_attributes("erin") is None  # timed out: breaker open
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    own_slapd.modify(remove_member(ENGINEERING, ALICE))
    tick(here, watcher)  # the lease and the poll: Redis answers them, the breaker is open
    assert alice.get("/pages/engineering").status_code == 200
    frozen_breakers.now += 10  # past the back-off: the next use of Redis probes it
    tick(here, watcher)
    assert alice.get("/pages/engineering").status_code == 403
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


def test_a_lease_renewal_that_fails_half_way_leaves_the_rest_owed(own_slapd, monkeypatch):
    """A long list of people to read again: the lease is renewed on the way, and that once
    fails (a Redis error). The people not yet read are read at the next poll with the lease
    (they were dropped, and the watcher went on past them)."""
    app = make_app(own_slapd, WATCH_INTERVAL=0, USER_CACHE_TTL=300, PAGES=PAGES)
    alice = signed_in(app)
    assert alice.get("/pages/engineering").status_code == 200
    watcher = by_hand(app)
    own_slapd.modify(remove_member(ENGINEERING, ALICE))
    answers = iter([True, False])  # the poll's own lease, then the renewal on the way
    monkeypatch.setattr(watcher, "_lease_seconds", lambda: 0)  # renewed before each person
    monkeypatch.setattr(watcher, "_hold_lease", lambda: next(answers, True))
    tick(app, watcher)
    assert alice.get("/pages/engineering").status_code == 200
    tick(app, watcher)
    assert alice.get("/pages/engineering").status_code == 403
    app.extensions["portal.directory"].close()


def test_a_look_through_the_cache_that_failed_is_done_again(own_slapd, monkeypatch):
    """gina (cn=Gina Lee,...) is deleted: the DN her group loses names nobody, so the watcher
    looks through the cache for whose entry holds it, and that fails once (a Redis timeout).
    The next poll looks again and her sign-in ends (the poll's findings were dropped, and she
    kept it until the TTL)."""
    import redis

    from portal import watcher as watcher_module

    gina = "cn=Gina Lee,ou=people,dc=example,dc=org"
    own_slapd.add(f"dn: {gina}\nobjectClass: inetOrgPerson\ncn: Gina Lee\nsn: Lee\nuid: gina\n"
                  "userPassword: gina-secret\n")  # fmt: skip
    own_slapd.modify("dn: cn=staff,ou=groups,dc=example,dc=org\nchangetype: modify\n"
                     f"add: member\nmember: {gina}\n")  # fmt: skip
    app = make_app(own_slapd, WATCH_INTERVAL=0, USER_CACHE_TTL=300)
    client = app.test_client()
    assert AuthActions(client).login("gina", "gina-secret").status_code == 302
    assert client.get("/").status_code == 200
    watcher = by_hand(app)
    own_slapd.delete(gina)
    own_slapd.modify(remove_member("cn=staff,ou=groups,dc=example,dc=org", gina))
    keys, failed = watcher_module.person_entry_keys, []

    def hung_once():
        if not failed:
            failed.append(1)
            raise redis.exceptions.TimeoutError("Timeout reading from socket")
        return keys()

    monkeypatch.setattr(watcher_module, "person_entry_keys", hung_once)
    tick(app, watcher)
    assert failed and client.get("/").status_code == 200
    assert watcher.state.error.startswith("TimeoutError")
    tick(app, watcher)
    assert client.get("/").status_code == 302
    assert not watcher.state.error
    app.extensions["portal.directory"].close()


def test_a_new_entry_redis_refuses_does_not_leave_the_old_one_to_other_servers(
    own_slapd, own_redis
):
    """Redis is full (noeviction) when the watcher reads alice again: the new entry is refused,
    so the old one is deleted (a full Redis still deletes) and the other server reads the
    directory instead of serving the old entry until the TTL (nor does a full Redis stop the
    watcher: it renews its lease); once Redis takes writes again the entry is written."""
    here, elsewhere, alice = alice_served_elsewhere(own_slapd, own_redis)
    watcher = by_hand(here)
    own_slapd.modify(remove_member(ENGINEERING, ALICE))
    client = own_redis.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    try:
        tick(here, watcher)
        assert watcher.state.polls == 2, "a full Redis still renews the lease"
        assert alice.get("/pages/engineering").status_code == 403
    finally:
        client.config_set("maxmemory", "0")
    assert alice.get("/pages/engineering").status_code == 403  # and her entry is written
    with here.app_context():
        assert "engineering" not in accounts.cached_attributes("alice")["groups"]
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "not cached yet"])
def test_an_older_read_stored_after_the_watcher_s_is_put_right_a_poll_later(own_slapd, cached):
    """A request read alice from the directory just before she left engineering and stores
    that read only after the watcher re-read her (or, when she was not cached yet, after the
    watcher passed her by): the watcher reads her once more at the next poll, and the older
    read no longer lets her in (it did until the TTL)."""
    app = make_app(own_slapd, WATCH_INTERVAL=0, USER_CACHE_TTL=300, PAGES=PAGES)
    alice = signed_in(app)
    assert alice.get("/pages/engineering").status_code == 200
    watcher = by_hand(app)
    with app.app_context():
        older = accounts.cached_attributes("alice")  # what the slow request read
        if not cached:
            accounts.forget("alice")
    own_slapd.modify(remove_member(ENGINEERING, ALICE))
    tick(app, watcher)
    with app.app_context():
        accounts.remember(older)  # the slow request stores its read now
    assert alice.get("/pages/engineering").status_code == 200, "as the race leaves it"
    tick(app, watcher)
    assert alice.get("/pages/engineering").status_code == 403
    assert watcher.state.owed == 0
    tick(app, watcher)
    assert watcher.state.flushes == (1 if cached else 0), "the second read is not counted"
    app.extensions["portal.directory"].close()


def test_the_published_state_outlives_a_long_lease(own_slapd, own_redis):
    """With WATCH_INTERVAL at 20 minutes the lease lasts 100: the state published must last
    longer, or a process taking over after the holder died finds no stamp and follows on from
    now, missing every change made while nobody watched."""
    app = make_app(own_slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                   WATCH_INTERVAL=0)  # fmt: skip
    from portal.watcher import Watcher

    watcher = Watcher(app)
    watcher.interval = 1200
    tick(app, watcher)
    client = own_redis.client()
    assert client.ttl("portal:watch:lease") == pytest.approx(6000, abs=5)
    assert client.ttl("portal:watch:state") > client.ttl("portal:watch:lease")
    app.extensions["portal.directory"].close()


def test_what_a_stopped_watcher_owed_is_found_again_by_the_one_taking_over(
    own_slapd, own_redis, monkeypatch
):
    """Watcher A cannot read alice after her change and moves on to later changes; then it
    stops. Watcher B takes over from the state A published, which says A got only as far as
    before alice's change, so B finds it again and her page is refused (B followed on from
    A's latest stamp, knowing nothing of what A owed, and she kept access until the TTL)."""
    from portal import directory
    from portal.directory import changes
    from portal.watcher import Watcher

    # Without the overlap, a window starts at the stamp published: alice's change is behind
    # the later one.
    monkeypatch.setattr(changes, "WINDOW_OVERLAP", 0)
    here, elsewhere, alice = alice_served_elsewhere(own_slapd, own_redis)
    first = by_hand(here)
    own_slapd.modify(remove_member(ENGINEERING, ALICE))
    lookup = directory.lookup

    def failing_for_alice(name, *args, **kwargs):
        if name == "alice":
            raise directory.DirectoryUnavailable("every directory connection is busy")
        return lookup(name, *args, **kwargs)

    monkeypatch.setattr(directory, "lookup", failing_for_alice)
    tick(here, first)
    changed = stamp_second(first.feed.since)  # alice's change

    def moved_on() -> bool:
        own_slapd.modify("dn: uid=frank,ou=people,dc=example,dc=org\nchangetype: modify\n"
                         "replace: description\ndescription: busy\n")  # fmt: skip
        tick(here, first)
        # Two seconds on: a window also reaches back by the time its start() took.
        return stamp_second(first.feed.since) >= changed + 2

    eventually(moved_on, timeout=5)
    assert alice.get("/pages/engineering").status_code == 200, "still owed"
    first.stop()  # lets the lease go
    monkeypatch.setattr(directory, "lookup", lookup)
    taking_over = Watcher(elsewhere)
    taking_over.interval = INTERVAL
    tick(elsewhere, taking_over)
    assert alice.get("/pages/engineering").status_code == 403
    for application in (here, elsewhere):
        application.extensions["portal.directory"].close()


def suspension(kind: str) -> str:
    """LDIF putting alice in the denied group ("add") or taking her out of it ("delete")."""
    return ("dn: cn=suspended,ou=groups,dc=example,dc=org\nchangetype: modify\n"
            f"{kind}: member\nmember: {ALICE}\n")  # fmt: skip


@pytest.mark.parametrize("noticed_by", ["the watcher", "the next directory read"])
def test_a_suspension_lifted_does_not_bring_back_the_sign_ins_it_ended(
    own_slapd, clock, noticed_by
):
    """alice is put in the denied group, then taken out again: her sign-ins, a "keep me signed
    in" cookie and its copy included, stay ended and she signs in afresh (they came back once
    the suspension was lifted, a stolen laptop's copy with them), whether the watcher or her
    next directory read noticed the change."""
    from tests.test_sessions import is_signed_in, remember_only
    from tests.test_sessions import signed_in as signed_in_at

    app = make_app(own_slapd, WATCH_INTERVAL=0, USER_CACHE_TTL=300)
    alice = signed_in_at(app, "alice", remember=True)
    copy = remember_only(app, alice)
    assert is_signed_in(alice) and is_signed_in(copy)
    watcher = by_hand(app)

    def noticed() -> None:
        if noticed_by == "the watcher":
            tick(app, watcher)
        else:
            clock.advance(301)  # her entry is due: her next request reads the directory

    own_slapd.modify(suspension("add"))
    noticed()
    assert not is_signed_in(alice)
    own_slapd.modify(suspension("delete"))
    noticed()
    assert not is_signed_in(alice) and not is_signed_in(copy)
    assert is_signed_in(signed_in_at(app, "alice"))
    app.extensions["portal.directory"].close()


def test_a_redis_user_without_scripts_pauses_the_watcher_and_says_so(own_slapd, own_redis,
                                                                     caplog):  # fmt: skip
    """The portal's Redis user may not run scripts: the watcher cannot hold its lease, does
    not poll, and its log line says Redis refused it and that changes then end sign-ins only
    within USER_CACHE_TTL (it said Redis could not be reached and named
    CACHE_FALLBACK_SECONDS, while Redis answered and the cache served on)."""
    url = restricted_redis_url(own_redis, "portal", "-@scripting")
    app = make_app(own_slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=url,
                   THROTTLE_STORAGE_URL="memory://", WATCH_INTERVAL=INTERVAL)  # fmt: skip
    watcher = app.extensions["portal.watcher"]
    with app.app_context():
        watcher.tick()
    assert watcher.state.last_poll == 0  # no lease, no poll
    [said] = [r.getMessage() for r in caplog.records if "directory watcher" in r.getMessage()]
    assert "Redis refuses to keep its lease" in said and "'eval'" in said, said
    assert "within USER_CACHE_TTL" in said and "cannot reach" not in said, said
    watcher.stop()
    app.extensions["portal.directory"].close()


def test_a_watcher_paused_without_redis_says_when_it_watches_again(own_slapd, own_redis, caplog):
    """Redis stops: the watcher says it is paused and does not poll; Redis answers again: it
    says so and polls. Its log said "paused" and nothing after, so an on-call engineer reading
    a sidecar's log could not tell that it had caught up."""
    app = make_app(own_slapd, CACHE_TYPE="RedisCache", CACHE_REDIS_URL=own_redis.url,
                   THROTTLE_STORAGE_URL="memory://", WATCH_INTERVAL=INTERVAL)  # fmt: skip
    watcher = app.extensions["portal.watcher"]

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "directory watcher" in r.getMessage()]

    try:
        with app.app_context():
            watcher.tick()
            assert watcher.state.last_poll > 0 and said() == []
            own_redis.stop()
            polled = watcher.state.last_poll
            watcher.tick()
            assert watcher.state.last_poll == polled  # paused: no lease, no poll
            [paused] = said()
            assert "cannot reach Redis" in paused and "paused" in paused, paused
            own_redis.start()
            watcher.tick()
        assert said()[1:] == ["directory watcher: Redis keeps its lease again; watching again"], (
            said()
        )
        assert watcher.state.last_poll > polled
    finally:
        watcher.stop()
        app.extensions["portal.directory"].close()
