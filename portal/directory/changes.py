"""Following directory changes: which people a change to people or groups affects.

Every poll is one paged search per base (LDAP_USER_BASE and LDAP_GROUP_BASE) for the entries
changed since the last one, whatever the number of people: `(entryCSN>=T)` on OpenLDAP (its
entryCSN has microseconds and changes with every write), `(modifyTimestamp>=T)` elsewhere, and
`(uSNChanged>=N)` on Active Directory. T and N are the server's own values, the newest seen on
the entries themselves, never this machine's clock. Windows overlap by WINDOW_OVERLAP seconds
(a change replicated late carries an older stamp) and an entry already handled with the same
stamp is not handled twice (with whole-second modifyTimestamp, entries of the newest second
are handled again, as they may have changed twice within it).

A changed person entry affects that person. A changed group affects every member it had and
has (so someone just removed is found), and for a nested group every person below it: the
feed keeps each group's members from the last time it was read. A deleted person is found
through the group that listed them (refint or memberOf update the group), else only at the
cache TTL. Active Directory's uSNChanged is per domain controller: after a failover to another
controller its numbers are not comparable, and changes may then wait for the cache TTL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .groups import dn_key, rdn_value
from .mapping import first_value, values
from .queries import fold_name

log = logging.getLogger(__name__)

#: Seconds each window reaches back before the newest stamp already seen.
WINDOW_OVERLAP = 5
_MEMBER_ATTRIBUTES = ("member", "uniqueMember", "memberUid")
_TIME_FORMAT = "%Y%m%d%H%M%SZ"

Search = Callable[[str, str, list[str]], list]


@dataclass
class Poll:
    """What one poll found: the people whose entries or groups changed."""

    people: set[str] = field(default_factory=set)
    entries: int = 0
    #: Names of changed groups whose members before the change this feed does not know (it
    #: took over from another watcher): the people cached in them must be read again too.
    groups: set[str] = field(default_factory=set)


class ChangeFeed:
    """The changes since the last poll, as the usernames they affect (see the module text)."""

    def __init__(self, settings, search: Search, read_base: Callable[[str], list]):
        """search(base, filter, attributes) is a paged subtree search; read_base(dn) a base
        search of one entry with the username attribute."""
        self.settings = settings
        self.search = search
        self.read_base = read_base
        self.by_usn = settings.account_state == "ad"
        # OpenLDAP's entryCSN changes with every write (microseconds); modifyTimestamp, the
        # fallback, only every second: see poll().
        self.stamp_attribute = "uSNChanged" if self.by_usn else "entryCSN"
        self.since: str | None = None
        self.handled: dict[str, str] = {}  # DN key text -> stamp handled in the overlap
        self.members: dict[tuple, set[str]] = {}  # group DN key -> member values
        self.resumed = False

    def start(self) -> None:
        """Read every group's members and the newest stamp (once, paged); what is already
        there counts as handled."""
        read = []
        if not self.by_usn and not self._read(self.settings.group_base, "(entryCSN=*)"):
            self.stamp_attribute = "modifyTimestamp"  # not OpenLDAP
        for entry in self._read(self.settings.group_base, "(objectClass=*)", groups=True):
            self.members[dn_key(entry["dn"])] = self._members_of(entry)
            read.append(entry)
        for base in self.settings.user_bases:
            read += self._read(base, "(objectClass=*)")
        newest = max((self._stamp(entry) for entry in read), key=self._order, default="")
        self.since = newest or None
        if self.since is not None:
            floor = self._order(self._window_start(newest))
            self.handled = {self._key(entry): self._stamp(entry) for entry in read
                            if self._order(self._stamp(entry)) >= floor}  # fmt: skip

    def resume(self, since: str) -> None:
        """Take over from another watcher that had got as far as `since`: read the groups now,
        then look at everything changed since then (see Poll.groups)."""
        self.start()
        self.since, self.handled, self.resumed = since, {}, True

    def poll(self) -> Poll:
        """The people affected by what changed since the last poll."""
        if self.since is None:
            self.start()
            if self.since is None:
                return Poll()
        found = Poll()
        window = self._window_start(self.since)
        query = f"({self.stamp_attribute}>={window})"
        changed: list[tuple[dict, bool]] = []
        for base in self.settings.user_bases:
            changed += [(entry, False) for entry in self._read(base, query)]
        changed += [(entry, True) for entry in self._read(self.settings.group_base, query, True)]
        newest = self.since
        for entry, is_group in changed:
            stamp, key = self._stamp(entry), self._key(entry)
            coarse = self.stamp_attribute == "modifyTimestamp"
            if self.handled.get(key) == stamp and not (coarse and stamp == self.since):
                # Seen in an earlier, overlapping window. With whole seconds, an entry of the
                # newest second may have changed again within it: handled once more.
                continue
            self.handled[key] = stamp
            found.entries += 1
            newest = max(newest, stamp, key=self._order)
            if is_group or dn_key(entry["dn"]) in self.members:
                found.people |= self._group_changed(entry)
                if self.resumed:
                    name = first_value(entry["attributes"], self.settings.group_name_attr)
                    found.groups.add(name or rdn_value(entry["dn"]))
            else:
                name = fold_name(first_value(entry["attributes"], self.settings.attr_username))
                if name:
                    found.people.add(name)
        self.since, self.resumed = newest, False
        # Only stamps still inside the next window need remembering.
        floor = self._window_start(newest)
        self.handled = {key: stamp for key, stamp in self.handled.items()
                        if self._order(stamp) >= self._order(floor)}  # fmt: skip
        return found

    def _group_changed(self, entry) -> set[str]:
        key = dn_key(entry["dn"])
        before = self.members.get(key, set())
        after = self._members_of(entry)
        self.members[key] = after
        # Everyone it had and has: a member just removed must lose the group now too.
        return self._people_below(before | after, seen={key})

    def _people_below(self, members: set[str], seen: set[tuple]) -> set[str]:
        people: set[str] = set()
        for member in members:
            if "=" not in member:  # memberUid: a username
                people.add(fold_name(member))
                continue
            key = dn_key(member)
            if key in self.members:  # a nested group: everyone below it
                if key not in seen:
                    seen.add(key)
                    people |= self._people_below(self.members[key], seen)
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
            return ""
        return fold_name(first_value(entries[0]["attributes"], self.settings.attr_username))

    def _members_of(self, entry) -> set[str]:
        return {value for name in _MEMBER_ATTRIBUTES for value in values(entry["attributes"], name)}

    def _read(self, base: str, query: str, groups: bool = False) -> list:
        attributes = [self.stamp_attribute, self.settings.attr_username]
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

    def _window_start(self, stamp: str) -> str:
        if self.by_usn:
            return stamp  # USNs only grow on one controller: no clock skew to allow for
        try:
            moment = datetime.strptime(stamp[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            return stamp
        start = datetime.fromtimestamp(moment.timestamp() - WINDOW_OVERLAP, UTC)
        if self.stamp_attribute == "entryCSN":
            return start.strftime("%Y%m%d%H%M%S") + ".000000Z#000000#000#000000"
        return start.strftime(_TIME_FORMAT)
