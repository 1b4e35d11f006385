"""Following directory changes: which people a change to people or groups affects.

Every poll is one paged search per base (LDAP_USER_BASE and LDAP_GROUP_BASE) for the entries
changed since the last one, whatever the number of people: `(entryCSN>=T)` on OpenLDAP (its
entryCSN has microseconds and changes with every write), `(modifyTimestamp>=T)` elsewhere, and
`(uSNChanged>=N)` on Active Directory. T and N are the server's own values, the newest seen on
the entries themselves, never this machine's clock. Windows overlap by WINDOW_OVERLAP seconds
(a change replicated late carries an older stamp) and an entry already handled with the same
stamp is not handled twice (with whole-second modifyTimestamp, entries of the newest second
are looked at once more, as they may have changed twice within it). The overlap is for writes
still in flight when the newest stamp was seen, all begun by then: once a poll has read it
WINDOW_OVERLAP seconds later, it is read again only by the listing polls until a newer stamp
is seen (after a bulk change on a quiet directory it held every entry changed). Not so on
Active Directory, whose overlap of USN_OVERLAP numbers is read every poll.

Replication can deliver a change much later than WINDOW_OVERLAP, with the stamp of the moment
it was made: a link between two OpenLDAP providers that stalled, then caught up, or a failover
to a replica that lags. On OpenLDAP each poll therefore also reads the contextCSN of the
databases holding the bases: how far the server has got with the changes of each provider (its
server ID). When a provider's value moved since the last poll, everything of it that arrived
meanwhile is newer than its value then, so the window reaches back to that value; a provider
never seen before makes the window reach back to the start (the whole tree read once). Of
what lies before the usual window, only entries stamped by such a provider after that value
count as changed. A poll reads one server, on one connection (replicas differ: one's
progress beside another's entries would be taken as seen). Where no contextCSN can be read
(no replication, or other directories: their modifyTimestamp travels with the change too), the
overlap is the only margin.

A changed person entry affects that person. A changed group affects the members who joined or
left it (so someone just removed is found), and for a nested group that joined or left every
person below it: the feed keeps each group's members from the last time it was read. Groups are
told from people by their object class, so the bases may hold each other. Every LISTING_POLLS
polls the groups are listed with their members: a group deleted or moved away is found, and so is
a change to a group's members that left its stamp as it was (OpenLDAP's refint and memberof
overlays rewrite the members of a person deleted, renamed or moved without a new entryCSN). A
deleted person is found through the group that listed them (at the next poll where the group's
stamp changed, else at the next listing); a member whose entry is gone and whose DN does not hold
the username (cn=Gina Lee,...) is named by the DN the cache holds for them (Poll.dns). A listing
also reads the DN of every entry under the user bases (Poll.present): a person deleted, renamed or
moved away whom no group's stamp told of (no refint overlay) is found there, if cached, and read
again (it took the cache TTL). Active Directory's uSNChanged is per domain controller: after a
failover to another controller its numbers are not comparable, and changes may then wait for
the cache TTL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .errors import DirectoryError, DirectoryUnavailable
from .groups import dn_key, known_name, rdn_value
from .mapping import first_value, values
from .queries import fold_name

log = logging.getLogger(__name__)

#: Seconds each window reaches back before the newest stamp already seen.
WINDOW_OVERLAP = 5
#: Numbers each Active Directory window reaches back (USNs of entries written mid-poll).
USN_OVERLAP = 1000
_MEMBER_ATTRIBUTES = ("member", "uniqueMember", "memberUid")
_GROUP_CLASSES = {"groupofnames", "groupofuniquenames", "posixgroup", "group"}
_TIME_FORMAT = "%Y%m%d%H%M%SZ"
_NO_REACH_BACK = "changes replicated late are found only by the listing or at USER_CACHE_TTL"
#: A CSN older than any entry's: a window from it takes in the whole tree.
_FIRST_CSN = "19700101000000.000000Z#000000#000#000000"

Search = Callable[[str, str, list[str]], list]


def _newer(stamp: str, usual: str, late: dict[str, str]) -> bool:
    """Whether an entryCSN is inside the usual window, or of a provider in `late` and newer
    than what had come of it by the last poll."""
    if stamp >= usual:
        return True
    parts = stamp.split("#")
    return len(parts) == 4 and parts[2] in late and stamp > late[parts[2]]


@dataclass
class Poll:
    """What one poll found: the people whose entries or groups changed."""

    people: set[str] = field(default_factory=set)
    entries: int = 0
    #: Names of changed groups whose members before the change this feed does not know (it
    #: took over from another watcher): the people cached in them must be read again too.
    groups: set[str] = field(default_factory=set)
    #: Member DNs the feed could not name (their entry is gone) and, after a takeover, every
    #: member DN of a changed group (who joined meanwhile is not known): the people cached
    #: with one of these DNs must be read again.
    dns: set[str] = field(default_factory=set)
    #: At a listing: every DN under the user bases (as dn_key), so that a person cached with
    #: another DN (deleted, renamed or moved away, which no search for changes shows and no
    #: group's stamp may tell without the refint overlay) is read again; else None.
    present: set[tuple] | None = None


class ChangeFeed:
    """The changes since the last poll, as the usernames they affect (see the module text)."""

    #: Polls between two listings of the groups, which find groups deleted or moved away.
    LISTING_POLLS = 15

    def __init__(self, settings, search: Search, read_base: Callable[..., list],
                 one_server: Callable[..., AbstractContextManager] | None = None,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        """search(base, filter, attributes) is a paged subtree search; read_base(dn,
        attributes=None) a base search of one entry (the username attribute by default);
        inside one_server(fresh=False) both go to one server (a new connection if fresh)."""
        self.settings = settings
        self.search = search
        self.read_base = read_base
        self.one_server = one_server or (lambda fresh=False: nullcontext())
        self.clock = clock
        self.by_usn = settings.account_state == "ad"
        # OpenLDAP's entryCSN changes with every write (microseconds); modifyTimestamp, the
        # fallback, only every second: see poll().
        self.stamp_attribute = "uSNChanged" if self.by_usn else "entryCSN"
        self.since: str | None = None
        self.handled: dict[str, str] = {}  # DN key text -> stamp handled in the overlap
        self.members: dict[tuple, set[str]] = {}  # group DN key -> member values
        self.resumed = False
        self.started = False
        self.extra_overlap = 0.0  # seconds a long start() adds to the first window
        #: When `since` was first seen (this machine's monotonic clock: a duration only), and
        #: whether a poll has read its whole overlap at least WINDOW_OVERLAP seconds later.
        self.since_seen_at = 0.0
        self.settled = False
        self.polls = 0
        self._unnamed: set[str] = set()  # member DNs of this poll whose entry is gone
        self.contexts: list[str] = []  # the databases holding the bases (OpenLDAP, replicated)
        #: (database, server ID) -> the newest CSN of that provider the server had, last poll.
        self.progress: dict[tuple[str, str], str] = {}
        self._unreadable: set[str] = set()  # contexts whose contextCSN was refused (logged once)

    def start(self) -> None:
        """Read every group's members and the newest stamp (once, paged); what is already
        there counts as handled. Raises DirectoryError when no entry shows a stamp."""
        self._on_one_server(self._start)

    def _on_one_server(self, work: Callable):
        # The whole of it as one server sees it; a pooled connection found dead is tried once
        # more on a new one, as a single search would be (nothing is kept from a failed try).
        for fresh in (False, True):
            try:
                with self.one_server(fresh=fresh):
                    return work()
            except DirectoryUnavailable as error:
                if fresh or error.__cause__ is None:
                    raise
        raise AssertionError("unreachable")

    def _start(self) -> None:
        began = self.clock()
        if not self.by_usn and not self._read(self.settings.group_base, "(entryCSN=*)"):
            self.stamp_attribute = "modifyTimestamp"  # not OpenLDAP
        if self.stamp_attribute == "entryCSN":
            self.contexts = self._contexts()
            self.progress = self._progress()  # before the tree: what arrives later is newer
            if not self.progress:  # no replication (syncprov keeps contextCSN): no more reads
                self.contexts = []
        read = self._changed_entries("(objectClass=*)")
        self.members = {dn_key(entry["dn"]): self._members_of(entry)
                        for entry in read if self._is_group(entry)}  # fmt: skip
        newest = max((self._stamp(entry) for entry in read), key=self._order, default="")
        self.started = True
        if not newest:
            raise DirectoryError(f"no entry shows {self.stamp_attribute}: the service account "
                                 "may not read it (the directory's ACLs)")  # fmt: skip
        self.since, self.since_seen_at, self.settled = newest, self.clock(), False
        # Changes made while the tree was read may carry stamps older than the newest seen.
        self.extra_overlap = self.since_seen_at - began
        floor = self._order(self._window_start(newest))
        self.handled = {self._key(entry): self._stamp(entry) for entry in read
                        if self._order(self._stamp(entry)) >= floor}  # fmt: skip

    def resume(self, since: str, progress: dict[tuple[str, str], str] | None = None) -> None:
        """Take over from another watcher that had got as far as `since` (and, replicated,
        `progress`): read the groups now, then look at everything changed since then (see
        Poll.groups)."""
        self.start()
        self.since, self.handled, self.resumed = since, {}, True
        if progress and self.contexts:
            self.progress = dict(progress)  # its replication as far as it had got

    def poll(self) -> Poll:
        """The people affected by what changed since the last poll. Nothing is kept from a
        poll that fails half-way: the next one looks again."""

        def start_and_poll() -> Poll:  # a first poll's start too, on the same server
            if not self.started:
                self._start()
            return self._poll()

        return self._on_one_server(start_and_poll)

    def _poll(self) -> Poll:
        if self.since is None:
            raise DirectoryError(f"no entry shows {self.stamp_attribute}")
        found = Poll()
        self._unnamed = set()
        began = self.clock()
        # The overlap is for writes still in flight when `since` was seen. Every write stamped
        # up to `since` had begun by then, so a poll that read the whole overlap WINDOW_OVERLAP
        # seconds later saw every one that took less: until the newest stamp moves, the overlap
        # is not read again (after a bulk change on a quiet directory it held every entry
        # changed, read again each poll: 13-15 s of processor time a poll on 100,000 people),
        # but by the listing polls, which find a write that took longer (a large group's).
        listing = (self.polls + 1) % self.LISTING_POLLS == 0
        usual = (self.since if self.settled and not listing
                 else self._window_start(self.since, self.extra_overlap))  # fmt: skip
        progress = self._progress()  # read first: a change arriving later is in a later poll
        if self.progress and not progress:
            progress = self.progress  # unreadable this once: as far as it was, no reach-back
        late = self._late(progress)
        window = min([usual, *late.values()])
        changed = self._changed_entries(f"({self.stamp_attribute}>={window})")
        if late:  # before the usual window, only what the late providers' changes brought
            changed = [entry for entry in changed if _newer(self._stamp(entry), usual, late)]
        members, handled, newest = dict(self.members), dict(self.handled), self.since
        coarse = self.stamp_attribute == "modifyTimestamp"
        for entry in changed:
            stamp, key = self._stamp(entry), self._key(entry)
            seen = handled.get(key)
            if seen == stamp or (coarse and seen == stamp + "+"):
                if not coarse or stamp != self.since or seen.endswith("+"):
                    continue  # seen in an earlier, overlapping window
                # Whole seconds: an entry of the newest second may have changed again within
                # it; looked at once more (marked "+"), then no longer.
                handled[key] = stamp + "+"
            else:
                handled[key] = stamp
            found.entries += 1
            newest = max(newest, stamp, key=self._order)
            if self._is_group(entry):
                found.people |= self._group_changed(entry, members)
                if self.resumed:
                    name = known_name(entry, self.settings)
                    found.groups.add(name or rdn_value(entry["dn"]))
                    # Who joined it meanwhile: every member now, the cached ones read again.
                    below = self._leaves(members[dn_key(entry["dn"])], {dn_key(entry["dn"])},
                                         members)  # fmt: skip
                    found.people |= {fold_name(value) for value in below if "=" not in value}
                    found.dns |= {value for value in below if "=" in value}
            else:
                name = fold_name(first_value(entry["attributes"], self.settings.attr_username))
                if name:
                    found.people.add(name)
        self.polls += 1
        if listing:
            found.people |= self._listing(members)
            found.present = self._present()
        found.dns |= self._unnamed
        # Only stamps still inside the next window need remembering.
        floor = self._order(self._window_start(newest))
        self.handled = {key: stamp for key, stamp in handled.items()
                        if self._order(stamp.rstrip("+")) >= floor}  # fmt: skip
        if newest != self.since:
            self.since_seen_at, self.settled = self.clock(), False
        elif not self.by_usn and began >= self.since_seen_at + WINDOW_OVERLAP:
            # (Not Active Directory's: a write there may commit after a higher number, however
            # long it took, and its overlap is USN_OVERLAP entries at most, read again cheaply.)
            self.settled = True
        self.members, self.since, self.resumed, self.extra_overlap = members, newest, False, 0.0
        self.progress = progress
        return found

    def _contexts(self) -> list[str]:
        # The naming contexts (databases) the bases lie in: each keeps its own contextCSN.
        try:
            root = self.read_base("", ["namingContexts"])
        except DirectoryUnavailable:
            raise  # an outage: start() fails and is tried again in full
        except DirectoryError as error:
            log.warning("the directory's root entry cannot be read (%s): %s", error, _NO_REACH_BACK)
            return []
        contexts = values(root[0]["attributes"], "namingContexts") if root else []
        bases = [dn_key(base) for base in [self.settings.group_base, *self.settings.user_bases]]
        return [context for context in contexts
                if any(base[len(base) - len(dn_key(context)):] == dn_key(context)
                       for base in bases)]  # fmt: skip

    def _progress(self) -> dict[tuple[str, str], str]:
        # A context whose read is refused (the ACL hides it) keeps what was known of it, and
        # is asked again next poll: nothing about the feed changes with a refusal.
        found = {}
        for context in self.contexts:
            try:
                entries = self.read_base(context, ["contextCSN"])
            except DirectoryUnavailable:
                raise
            except DirectoryError as error:
                if context not in self._unreadable:
                    log.warning("contextCSN of %s cannot be read (%s): %s", context, error,
                                _NO_REACH_BACK)  # fmt: skip
                self._unreadable.add(context)
                found |= {key: csn for key, csn in self.progress.items() if key[0] == context}
                continue
            if context in self._unreadable:
                self._unreadable.discard(context)
                log.info("contextCSN of %s can be read again", context)
            for csn in values(entries[0]["attributes"], "contextCSN") if entries else []:
                parts = csn.split("#")
                if len(parts) == 4:  # time#count#server ID#modifier
                    found[(context, parts[2])] = csn
        return found

    def _late(self, progress: dict[tuple[str, str], str]) -> dict[str, str]:
        # Server ID -> the CSN its changes replicated since the last poll are all newer than.
        late: dict[str, str] = {}
        for (context, server_id), csn in progress.items():
            before = self.progress.get((context, server_id))
            if before is None:
                before = _FIRST_CSN  # a provider not seen before: anything of it may be new
            elif csn <= before:
                continue
            late[server_id] = min(before, late.get(server_id, before))
        return late

    def _changed_entries(self, query: str) -> list:
        # Group base first, then the user bases, each entry once: with one base inside the
        # other, the copy read with the member attributes is the one kept.
        found: dict[str, dict] = {}
        for entry in self._read(self.settings.group_base, query, groups=True):
            found.setdefault(self._key(entry), entry)
        for base in self.settings.user_bases:
            for entry in self._read(base, query):
                found.setdefault(self._key(entry), entry)
        return list(found.values())

    def _listing(self, members: dict) -> set[str]:
        # A deleted (or moved) group is in no search for changes, nor is a group whose members
        # an overlay rewrote without a new stamp (refint): list the groups now and then.
        listed = {
            dn_key(entry["dn"]): entry
            for entry in self._read(self.settings.group_base, "(objectClass=*)", groups=True)
            if self._is_group(entry)
        }
        people: set[str] = set()
        for key in [key for key in members if key not in listed]:
            people |= self._people_below(members.pop(key), seen={key}, members=members)
        for key, entry in listed.items():
            if key not in members:
                members[key] = self._members_of(entry)  # new: its members join in its own poll
            elif members[key] != self._members_of(entry):
                people |= self._group_changed(entry, members)
        return people

    def _present(self) -> set[tuple]:
        # Every entry under the user bases, by DN alone (no attribute): one paged search each.
        present: set[tuple] = set()
        for base in self.settings.user_bases:
            present |= {dn_key(entry["dn"]) for entry in self.search(base, "(objectClass=*)",
                                                                      ["1.1"])}  # fmt: skip
        return present

    def _group_changed(self, entry, members: dict) -> set[str]:
        key = dn_key(entry["dn"])
        before = members.get(key, set())
        after = self._members_of(entry)
        members[key] = after
        # Only who joined or left (the one just removed must lose the group now), and
        # everyone below a group that joined or left.
        return self._people_below(before ^ after, seen={key}, members=members)

    def _leaves(self, values_: set[str], seen: set[tuple], members: dict) -> set[str]:
        # The member values below these, nested groups replaced by their own members.
        leaves: set[str] = set()
        for member in values_:
            key = dn_key(member) if "=" in member else None
            if key in members:
                if key not in seen:
                    seen.add(key)
                    leaves |= self._leaves(members[key], seen, members)
            else:
                leaves.add(member)
        return leaves

    def _people_below(self, values_: set[str], seen: set[tuple], members: dict) -> set[str]:
        people: set[str] = set()
        for member in values_:
            if "=" not in member:  # memberUid: a username
                people.add(fold_name(member))
                continue
            key = dn_key(member)
            if key in members:  # a nested group: everyone below it
                if key not in seen:
                    seen.add(key)
                    people |= self._people_below(members[key], seen, members)
                continue
            name = self._username_of(member)
            if name:
                people.add(name)
        return people

    def _username_of(self, dn: str) -> str:
        # The RDN names the person when it is the username attribute (uid=alice,...): no
        # search, and a deleted person is still found; else their entry says.
        key = dn_key(dn)
        if key and key[0][0] == self.settings.attr_username.lower():
            return fold_name(rdn_value(dn))
        entries = self.read_base(dn)
        if not entries:
            self._unnamed.add(dn)  # deleted or moved: the cache may know whose DN it was
            return ""
        return fold_name(first_value(entries[0]["attributes"], self.settings.attr_username))

    def _members_of(self, entry) -> set[str]:
        return {value for name in _MEMBER_ATTRIBUTES for value in values(entry["attributes"], name)}

    def _is_group(self, entry) -> bool:
        classes = {value.lower() for value in values(entry["attributes"], "objectClass")}
        return bool(classes & _GROUP_CLASSES)

    def _read(self, base: str, query: str, groups: bool = False) -> list:
        attributes = [self.stamp_attribute, self.settings.attr_username, "objectClass"]
        if groups:
            attributes += [*_MEMBER_ATTRIBUTES, self.settings.group_name_attr]
        return self.search(base, query, attributes)

    def _key(self, entry) -> str:
        return "|".join(map("=".join, dn_key(entry["dn"])))

    def _stamp(self, entry) -> str:
        return first_value(entry["attributes"], self.stamp_attribute)

    def _order(self, stamp: str):
        # A USN compares as a number; generalized time and CSNs (fixed width) as text.
        if self.by_usn:
            return int(stamp) if stamp.isdigit() else -1
        return stamp

    def _window_start(self, stamp: str, extra: float = 0.0) -> str:
        if self.by_usn:
            # USNs only grow on one controller; a margin covers an entry written between
            # the searches of one poll with a lower number than one read later.
            return str(max(0, int(stamp) - USN_OVERLAP)) if stamp.isdigit() else stamp
        try:
            moment = datetime.strptime(stamp[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            return stamp
        start = datetime.fromtimestamp(moment.timestamp() - WINDOW_OVERLAP - extra, UTC)
        if self.stamp_attribute == "entryCSN":
            return start.strftime("%Y%m%d%H%M%S") + ".000000Z#000000#000#000000"
        return start.strftime(_TIME_FORMAT)
