"""Revocation through replication: two OpenLDAP providers replicating each other, the portal
reading one. A change made on the other while the link between them stalls arrives late, with
the stamp of the moment it was made: the watcher must still end access within a poll of its
arrival, not at the cache TTL."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import ldap3
import pytest

from portal.directory import changes
from tests.conftest import AuthActions, eventually, make_app
from tests.replication import ProviderPair
from tests.test_watcher import ALICE, by_the_polls_after, published

pytestmark = pytest.mark.slow

#: Seconds a change must lie behind the newest stamp seen to be outside the watcher's window:
#: the overlap (1 s in these tests), the time a start() took (added once) and the second the
#: window's start is rounded down to.
PAST_THE_WINDOW = 3
DISABLE = f"dn: {ALICE}\nchangetype: modify\nadd: description\ndescription: disabled\n"


def entry_csn(server, dn: str) -> str:
    """The entry's stamp on this server ("" when it has none yet), read as its root DN."""
    connection = ldap3.Connection(ldap3.Server(server.url), server.root_dn, server.root_password,
                                  auto_bind=True)  # fmt: skip
    try:
        connection.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["entryCSN"])
        return str(connection.entries[0].entryCSN) if connection.entries else ""
    finally:
        connection.unbind()


def has_description(server, dn: str, text: str) -> bool:
    connection = ldap3.Connection(ldap3.Server(server.url), server.root_dn, server.root_password,
                                  auto_bind=True)  # fmt: skip
    try:
        connection.search(dn, f"(description={text})", ldap3.BASE)
        return bool(connection.entries)
    finally:
        connection.unbind()


def status_page(app) -> str:
    """/admin/status as an administrator sees it."""
    erin = app.test_client()
    assert AuthActions(erin).login("erin").status_code == 302
    return erin.get("/admin/status").get_data(as_text=True)


def moment(csn: str) -> float:
    return datetime.strptime(csn[:22], "%Y%m%d%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()


def describe(dn: str, text: str) -> str:
    return f"dn: {dn}\nchangetype: modify\nreplace: description\ndescription: {text}\n"


@pytest.mark.parametrize("first_write_of_b", [False, True], ids=["known provider", "new provider"])
def test_a_change_replicated_late_ends_access_by_the_next_poll(tmp_path, monkeypatch,
                                                               first_write_of_b):  # fmt: skip
    """alice is disabled on b while b's changes cannot reach a; a newer change on a moves the
    watcher's window past that moment; then the link lets go. Before, alice kept her access
    until USER_CACHE_TTL (300 s here): the late change's stamp was behind the window."""
    monkeypatch.setattr(changes, "WINDOW_OVERLAP", 1)
    with ProviderPair(tmp_path) as pair:
        bob, carol = (f"uid={name},ou=people,dc=example,dc=org" for name in ("bob", "carol"))
        eventually(lambda: entry_csn(pair.b, ALICE))  # b has the tree
        if not first_write_of_b:
            pair.b.modify(describe(bob, "written on b"))
            eventually(lambda: has_description(pair.a, bob, "written on b"))
        app = make_app(pair.a, WATCH_INTERVAL=1, USER_CACHE_TTL=300,
                       LDAP_DISABLED_FILTER="(description=disabled)")  # fmt: skip
        try:
            alice = app.test_client()
            assert AuthActions(alice).login("alice").status_code == 302
            assert alice.get("/").status_code == 200  # also starts the watcher
            watcher = app.extensions["portal.watcher"]
            eventually(lambda: watcher.state.last_poll, timeout=10)
            pair.relay.pause()
            pair.b.modify(DISABLE)
            disabled_at = moment(entry_csn(pair.b, ALICE))
            # Polls a second apart: once these have ended, the clock is past the window.
            polls = watcher.state.polls
            eventually(lambda: watcher.state.polls >= polls + PAST_THE_WINDOW + 1, timeout=20)
            pair.a.modify(describe(carol, "written on a"))
            carol_at = moment(entry_csn(pair.a, carol))
            assert carol_at - disabled_at > PAST_THE_WINDOW  # the case under test
            eventually(lambda: watcher.feed.since >= entry_csn(pair.a, carol), timeout=20)
            assert alice.get("/").status_code == 200  # a has not heard of it yet
            changes_before = watcher.state.changes
            pair.relay.resume()
            eventually(lambda: has_description(pair.a, ALICE, "disabled"), timeout=20)
            by_the_polls_after(lambda: watcher.state, lambda: alice.get("/").status_code == 302)
            # Reaching back takes in only what came late, even for a provider never seen
            # before (the whole tree is read, not handled as changed): alice's entry.
            assert watcher.state.changes - changes_before == 1
            assert "providers 001, 002 (contextCSN)" in status_page(app)
        finally:
            watcher = app.extensions.get("portal.watcher")
            if watcher is not None:
                watcher.stop()
            app.extensions["portal.directory"].close()


def stall_and_disable(pair, tick, feed) -> None:
    """Hold b's changes from a, disable alice on b, then move the window past that moment with
    a newer change on a that `tick()` polls (the case under test, checked)."""
    carol = "uid=carol,ou=people,dc=example,dc=org"
    pair.relay.pause()
    pair.b.modify(DISABLE)
    disabled_at = moment(entry_csn(pair.b, ALICE))

    def moved_on() -> bool:
        pair.a.modify(describe(carol, f"written on a {len(feed().since)}"))
        tick()
        return moment(feed().since) - disabled_at > PAST_THE_WINDOW

    eventually(moved_on, timeout=20)


def test_a_watcher_taking_over_reaches_back_as_far_as_the_last_one_had_got(
    tmp_path, monkeypatch, own_redis
):
    """The lease holder polls past the stalled change, then dies; the link lets go; the
    watcher taking over (from the holder's `since`) must reach back as far as the holder's
    view of b's progress, published beside it: its own view from start() already holds it."""
    from portal.watcher import Watcher

    monkeypatch.setattr(changes, "WINDOW_OVERLAP", 1)
    with ProviderPair(tmp_path) as pair:
        eventually(lambda: entry_csn(pair.b, ALICE))
        bob = "uid=bob,ou=people,dc=example,dc=org"
        pair.b.modify(describe(bob, "written on b"))
        eventually(lambda: has_description(pair.a, bob, "written on b"))
        settings = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": own_redis.url,
                    "WATCH_INTERVAL": 0, "USER_CACHE_TTL": 300,
                    "LDAP_DISABLED_FILTER": "(description=disabled)"}  # fmt: skip
        holder_app, other_app = make_app(pair.a, **settings), make_app(pair.a, **settings)
        try:
            holder, other = Watcher(holder_app), Watcher(other_app)
            holder.interval = other.interval = 1
            alice = other_app.test_client()
            assert AuthActions(alice).login("alice").status_code == 302
            with holder_app.app_context():
                holder.tick()
                stall_and_disable(pair, holder.tick, lambda: holder.feed)
                holder.tick()  # nobody owed a read: the state published says it got that far
                holder.tick()
            disabled_at = moment(entry_csn(pair.b, ALICE))
            assert moment(published(own_redis.url).since) - disabled_at > PAST_THE_WINDOW
            own_redis.client().delete("portal:watch:lease")  # the holder died
            pair.relay.resume()
            eventually(lambda: has_description(pair.a, ALICE, "disabled"), timeout=20)
            with other_app.app_context():
                other.tick()
                other.tick()  # the second read of each person found
            assert alice.get("/").status_code == 302
            # Any instance's status page says whose replication is followed (from Redis).
            assert "providers 001, 002 (contextCSN)" in status_page(holder_app)
        finally:
            for application in (holder_app, other_app):
                application.extensions["portal.directory"].close()


def test_a_poll_reads_one_server_however_the_pool_lends_connections(tmp_path):
    """The portal reads a and b (LDAP_URLS), and its pool lends connections to both in turn
    (requests borrowing some meanwhile, after a failover). A poll's reads must all go to one
    server: b's progress read beside a's search was stored as seen, and the late change
    never looked for once a had it. Counted by each slapd."""
    from portal.directory import connections

    with ProviderPair(tmp_path) as pair:
        eventually(lambda: entry_csn(pair.b, ALICE))
        app = make_app(pair.a, LDAP_URLS=[pair.a.url, pair.b.url], WATCH_INTERVAL=0)
        directory = app.extensions["portal.directory"]
        original, lent = connections.ServicePool._take, []

        def take(pool):
            # Injected: the connections lent go to a and b in turn, as a pool holding both
            # would (a pooled one may be to either: each is opened here, to say which).
            lent.append(pool)
            server = directory.servers[len(lent) % 2]  # b, a, b, ... as the portal knows them
            config = app.config
            return ldap3.Connection(server, config["LDAP_BIND_DN"], config["LDAP_BIND_PASSWORD"],
                                    auto_bind=True)  # fmt: skip

        try:
            with app.app_context():
                feed = directory.change_feed()
                feed.start()
                connections.ServicePool._take = take

                changed = iter(range(1000))

                def polled() -> tuple[int, int]:
                    # A change first, each time: a poll with nothing new to look for makes one
                    # read, which cannot be split, and the test could not fail.
                    pair.a.modify(f"dn: {ALICE}\nchangetype: modify\nreplace: description\n"
                                  f"description: change {next(changed)}\n")  # fmt: skip
                    before = pair.a.counters()["search"], pair.b.counters()["search"]
                    feed.poll()
                    return (pair.a.counters()["search"] - before[0],
                            pair.b.counters()["search"] - before[1])  # fmt: skip

                def one_sided(searched: tuple[int, int]) -> bool:
                    return sorted(count > 0 for count in searched) == [False, True]

                for _ in range(4):
                    searched = polled()
                    if not one_sided(searched):
                        # The servers' own replication searches now and then (a consumer
                        # reconnecting on a busy machine): that poll is measured again. The
                        # fault split every poll, the second too.
                        searched = polled()
                    assert one_sided(searched), searched
        finally:
            connections.ServicePool._take = original
            directory.close()


def test_a_refused_or_failed_progress_read_neither_stops_nor_silently_blinds_the_watcher(
    tmp_path, caplog
):
    """Injected: an ACL hiding the suffix's contextCSN (result 50) stopped every poll; a busy
    answer to the root entry's read at start turned the reach-back off for good, silently."""
    from portal.directory.errors import DirectoryError, DirectoryUnavailable

    caplog.set_level(logging.INFO, logger="portal.directory.changes")
    with ProviderPair(tmp_path) as pair:
        eventually(lambda: entry_csn(pair.b, ALICE))
        app = make_app(pair.a, WATCH_INTERVAL=0)
        directory = app.extensions["portal.directory"]
        try:
            with app.app_context():
                refusing = directory.change_feed()
                reads = refusing.read_base

                def hidden(dn, attributes=None):
                    if attributes == ["contextCSN"]:
                        raise DirectoryError("search under dc=example,dc=org refused with "
                                             "result code 50")  # fmt: skip
                    return reads(dn, attributes)

                refusing.start()
                known = dict(refusing.progress)
                refusing.read_base = hidden
                pair.a.modify(describe(ALICE, "a change"))
                assert "alice" in refusing.poll().people  # it still watches
                assert "contextCSN of dc=example,dc=org cannot be read" in caplog.text
                # What was known of it is kept, and it is asked again (a refusal of the moment
                # did not blind the feed for the life of the process).
                assert refusing.progress == known and refusing.contexts
                refusing.read_base = reads
                refusing.poll()
                assert "contextCSN of dc=example,dc=org can be read again" in caplog.text

                busy = directory.change_feed()
                answers = iter([DirectoryUnavailable("busy (51)")])

                def once_busy(dn, attributes=None):
                    if dn == "":
                        failure = next(answers, None)
                        if failure is not None:
                            raise failure
                    return busy_reads(dn, attributes)

                busy_reads, busy.read_base = busy.read_base, once_busy
                with pytest.raises(DirectoryUnavailable):
                    busy.start()  # tried again in full at the next interval
                busy.start()
                assert busy.contexts == ["dc=example,dc=org"] and busy.progress
        finally:
            directory.close()


def test_an_error_of_the_poll_itself_is_not_taken_for_an_outage(slapd, monkeypatch):
    """Inside one_server() every error was read as the directory's: a bug in a poll showed as
    "directory search failed", ran twice and emptied the connection pool each interval."""
    app = make_app(slapd, WATCH_INTERVAL=0)
    directory = app.extensions["portal.directory"]
    try:
        with app.app_context():
            feed = directory.change_feed()
            feed.start()
            calls = []

            def broken(entry):
                calls.append(entry)
                raise KeyError("a bug")

            monkeypatch.setattr(feed, "_is_group", broken)
            slapd.modify(describe(ALICE, f"changed {len(feed.since)}"))
            with pytest.raises(KeyError, match="a bug"):
                feed.poll()
            assert len(calls) == 1 and directory.pool._idle  # once; the pool kept
    finally:
        directory.close()
