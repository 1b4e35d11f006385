"""Revocation through replication: two OpenLDAP providers replicating each other, the portal
reading one. A change made on the other while the link between them stalls arrives late, with
the stamp of the moment it was made: the watcher must still end access within a poll of its
arrival, not at the cache TTL."""

from __future__ import annotations

from datetime import UTC, datetime

import ldap3
import pytest

from portal.directory import changes
from tests.conftest import AuthActions, eventually, make_app
from tests.replication import ProviderPair
from tests.test_watcher import ALICE, by_the_polls_after

pytestmark = pytest.mark.slow

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
            # Polls a second apart: once two have ended, the clock is past the overlap.
            polls = watcher.state.polls
            eventually(lambda: watcher.state.polls >= polls + 2, timeout=20)
            pair.a.modify(describe(carol, "written on a"))
            carol_at = moment(entry_csn(pair.a, carol))
            assert carol_at - disabled_at > changes.WINDOW_OVERLAP  # the case under test
            eventually(lambda: watcher.feed.since >= entry_csn(pair.a, carol), timeout=20)
            assert alice.get("/").status_code == 200  # a has not heard of it yet
            changes_before = watcher.state.changes
            pair.relay.resume()
            eventually(lambda: has_description(pair.a, ALICE, "disabled"), timeout=20)
            by_the_polls_after(lambda: watcher.state, lambda: alice.get("/").status_code == 302)
            # Reaching back takes in only what came late, even for a provider never seen
            # before (the whole tree is read, not handled as changed): alice's entry.
            assert watcher.state.changes - changes_before == 1
        finally:
            watcher = app.extensions.get("portal.watcher")
            if watcher is not None:
                watcher.stop()
            app.extensions["portal.directory"].close()
