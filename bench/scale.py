"""P3: sign-in and cache-miss time on a large generated directory against a small one.

Both trees have the demo's shape (people under ou=people, groupOfNames under ou=groups, the
portal's service account and ACL) and five levels of groups inside groups: every person is in
three groups of the deepest level, each of which is inside one group of the level above, up to
the top. The large tree has 100,000 people and 5,000 groups, the small one 1,000 and 50. The
portal follows the nesting (LDAP_GROUP_NESTING_DEPTH = 5); the median time of a sign-in
(`authenticate`) and of a cache miss (`lookup`) is taken for people spread over the tree, with
the LDAP operations each costs counted.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from portal import create_app
from portal.directory.wire import LeanConnection
from portal.testing.slapd import FIXTURES, Slapd, ssha
from tests.conftest import demo_settings

from .harness import Settings

LEVELS = 5
#: (people, groups per level, from the top level down) of the two trees.
LARGE = (100_000, (50, 200, 750, 1500, 2500))
SMALL = (1_000, (1, 2, 7, 15, 25))
SMOKE = ((300, (1, 2, 3, 4, 5)), (100, (1, 1, 1, 2, 3)))
PASSWORD = "person-secret"  # noqa: S105 - the generated trees' one password
GROUPS_PER_PERSON = 3
SAMPLES = 100
ROUNDS = 3


def measure(settings: Settings) -> dict:
    """Median sign-in and miss times (ms) and operations, large against small; the ratios.

    Both directories run at once and are timed call by call in turn (a sign-in on the large
    tree, the same on the small one, ...), so whatever else the machine does, and its drift
    from one second to the next, weighs on both alike.
    """
    shapes = dict(zip(("large", "small"), SMOKE if settings.smoke else (LARGE, SMALL),
                      strict=True))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="portal-bench-tree-") as work, ExitStack() as stack:
        trees = {}
        for name, (people, levels) in shapes.items():
            ldif = Path(work) / f"{name}.ldif"
            ldif.write_text(tree_ldif(people, levels))
            base = [FIXTURES / "10-demo-tree.ldif"]  # the suffix, ou=people, ou=groups, service
            started = time.monotonic()
            # The portal's nested-group filter also asks uniqueMember: index it, as a directory
            # serving nested groups would (member, uid and cn are indexed already).
            slapd = stack.enter_context(Slapd(ldif_files=[*base, ldif],
                                              max_size=max(64 << 20, people * 6000),
                                              extra_config="index uniqueMember eq"))  # fmt: skip
            trees[name] = _Tree(slapd, people, sum(levels), time.monotonic() - started)
            stack.callback(trees[name].close)
        counter = stack.enter_context(_OperationCounter())
        rounds = 1 if settings.smoke else ROUNDS
        samples = 3 if settings.smoke else SAMPLES
        for _ in range(rounds):
            names = {tree: tree.names(samples) for tree in trees.values()}
            for kind in ("login", "miss"):
                for index in range(samples):
                    for tree in trees.values():
                        tree.time_call(counter, kind, names[tree][index])
        rows = {name: tree.summary() for name, tree in trees.items()}
    rows["login_ratio"] = rows["large"]["login_ms"] / rows["small"]["login_ms"]
    rows["miss_ratio"] = rows["large"]["miss_ms"] / rows["small"]["miss_ms"]
    return rows


class _Tree:
    # One generated directory and the portal's directory layer in front of it.

    def __init__(self, slapd: Slapd, people: int, groups: int, load_s: float):
        self.people, self.groups, self.load_s = people, groups, load_s
        config = demo_settings() | {
            "ENV": "development", "SECRET_KEY": "bench-" + "x" * 40, "LDAP_URLS": [slapd.url],
            "LDAP_GROUP_NESTING_DEPTH": LEVELS, "ACCESS_ALLOWED_GROUPS": ["level0-0"],
        }  # fmt: skip
        self.app = create_app(config)
        self.directory = self.app.extensions["portal.directory"]
        self.pick = random.Random(7)  # noqa: S311 - who is timed, not a secret
        self.login_times: list[float] = []
        self.miss_times: list[float] = []
        self.login_ops: list[float] = []
        self.miss_ops: list[float] = []
        with self.app.app_context():
            self.directory.authenticate(_uid(0), PASSWORD)  # warm the pools

    def names(self, samples: int) -> list[str]:
        """People picked at random over the tree."""
        return [_uid(self.pick.randrange(self.people)) for _ in range(samples)]

    def time_call(self, counter: _OperationCounter, kind: str, name: str) -> None:
        """Time one sign-in ("login") or cache miss ("miss") of `name`, counting its operations."""
        with self.app.app_context():
            counter.reset()
            started = time.perf_counter()
            if kind == "login":
                found = self.directory.authenticate(name, PASSWORD)
            else:
                found = self.directory.lookup(name)
            elapsed = time.perf_counter() - started
            operations = counter.reset()
        if found is None or len(found["groups"]) < LEVELS:
            raise RuntimeError(f"{name}: {kind} or nesting failed: {found}")
        (self.login_times if kind == "login" else self.miss_times).append(elapsed)
        (self.login_ops if kind == "login" else self.miss_ops).append(operations)

    def summary(self) -> dict:
        return {
            "login_ms": statistics.median(self.login_times) * 1000,
            "miss_ms": statistics.median(self.miss_times) * 1000,
            "login_ops": statistics.mean(self.login_ops),
            "miss_ops": statistics.mean(self.miss_ops),
            "people": self.people,
            "groups": self.groups,
            "load_s": self.load_s,
        }

    def close(self) -> None:
        self.directory.close()


def tree_ldif(people: int, levels: tuple[int, ...]) -> str:
    """People and nested groups (see the module docstring), as LDIF for slapadd."""
    out = []
    members: dict[str, list[str]] = {}
    for level, count in enumerate(levels):
        for number in range(count):
            dn = _group_dn(level, number)
            members[dn] = []
            if level:
                parent = _group_dn(level - 1, number % levels[level - 1])
                members[parent].append(dn)
    hashed = ssha(PASSWORD)
    pick = random.Random(1)  # noqa: S311 - a reproducible tree, not a secret
    leaves = levels[-1]
    for number in range(people):
        uid = _uid(number)
        dn = f"uid={uid},ou=people,dc=example,dc=org"
        out.append(f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: Person {number}\n"
                   f"sn: {number}\ndisplayName: Person {number}\nmail: {uid}@example.org\n"
                   f"userPassword: {hashed}\n")  # fmt: skip
        for leaf in pick.sample(range(leaves), min(GROUPS_PER_PERSON, leaves)):
            members[_group_dn(LEVELS - 1, leaf)].append(dn)
    for dn, member_dns in members.items():
        lines = [f"dn: {dn}", "objectClass: groupOfNames", f"cn: {dn[3:].split(',')[0]}"]
        lines += [f"member: {member}" for member in member_dns or [dn]]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def _uid(number: int) -> str:
    return f"person{number:06d}"


def _group_dn(level: int, number: int) -> str:
    return f"cn=level{level}-{number},ou=groups,dc=example,dc=org"


class _OperationCounter:
    """Counts the searches and binds the portal's connections send while active."""

    def __init__(self):
        self.count = 0
        self._saved = []

    def __enter__(self):
        for name in ("search", "bind"):
            original = getattr(LeanConnection, name)

            def counted(connection, *args, _original=original, **kwargs):
                self.count += 1
                return _original(connection, *args, **kwargs)

            self._saved.append((name, original))
            setattr(LeanConnection, name, counted)
        return self

    def __exit__(self, *exc):
        for name, original in self._saved:
            setattr(LeanConnection, name, original)

    def reset(self) -> int:
        counted, self.count = self.count, 0
        return counted
