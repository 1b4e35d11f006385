"""Why a person may or may not use the portal and its pages: plain data, no I/O, no Flask.

`portal whois` prints an `Explanation`; an admin page can render the same data. The
rules explained are the ones the portal applies: `User.is_active` (an allowed group and no denied
group), a page's `groups` (any one of them opens it), and ACCESS_RULES judged on the page's path
(as `access.enforce_access_rules` does before every page view).

Group names are the person's as the directory spells them. They may come from nested groups
(LDAP_GROUP_NESTING_DEPTH, memberOf or AD's in-chain filter): the directory layer returns the
names only, not the path through which a nested group was reached.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask_babel import gettext

from ..models import AccessPolicy
from ..settings.texts import Text
from . import rules as access_rules
from .apps import App, own_page


@dataclass(frozen=True)
class Standing:
    """Whether a person may sign in to the portal, and the groups that decide it."""

    active: bool
    #: The person's groups listed in ACCESS_ALLOWED_GROUPS, ACCESS_DENIED_GROUPS and
    #: ACCESS_ADMIN_GROUPS respectively.
    allowed_by: tuple[str, ...]
    denied_by: tuple[str, ...]
    admin_by: tuple[str, ...]
    reason: str

    @property
    def admin(self) -> bool:
        """May open /admin/status: active and in an admin group."""
        return self.active and bool(self.admin_by)


@dataclass(frozen=True)
class PageAccess:
    """Whether a person may open one configured page, and why."""

    slug: str
    title: Text
    #: The page's own `groups` setting, and which of them the person is in.
    groups: tuple[str, ...]
    granted_by: tuple[str, ...]
    open: bool
    reason: str


@dataclass(frozen=True)
class AppAccess:
    """Whether a person's home page shows one of the APPS, and why."""

    title: Text
    url: str
    shown: bool
    reason: str


@dataclass(frozen=True)
class CacheState:
    """The person's entry in the user cache, compared with what the directory says now."""

    age_seconds: int
    expires_in_seconds: int
    #: False when the directory now says otherwise (other groups, or no usable account): the
    #: cached data still decides every request until the entry expires or is flushed.
    matches_directory: bool
    groups: tuple[str, ...]


NO_SUCH_PERSON = "no such person"


@dataclass(frozen=True)
class Explanation:
    """Everything the portal decides about one person, with the reasons."""

    username: str
    #: False when the directory has no usable account by that name (unknown, or disabled,
    #: locked or expired): then the fields below are empty and `standing` is None.
    found: bool
    dn: str = ""
    display_name: str = ""
    email: str = ""
    groups: tuple[str, ...] = ()
    #: For each of `groups`, in order: the groups it was reached through, nearest first
    #: (empty for a direct membership).
    group_paths: tuple[tuple[str, ...], ...] = ()
    standing: Standing | None = None
    pages: tuple[PageAccess, ...] = ()
    apps: tuple[AppAccess, ...] = ()
    cache: CacheState | None = None
    #: When not found: "no such person", or the account's state ("disabled", "locked"...).
    unusable: str = ""

    @property
    def exists(self) -> bool:
        """Whether the directory has an entry by this name at all (usable or not)."""
        return self.found or self.unusable not in ("", NO_SUCH_PERSON)

    def described_groups(self) -> list[str]:
        """Each group with how it was reached: "research via engineering", or just "staff"."""
        paths = self.group_paths or ((),) * len(self.groups)
        return [
            " via ".join((group, *path)) for group, path in zip(self.groups, paths, strict=True)
        ]


def explain_user(
    username: str,
    attrs: Mapping | None,
    policy: AccessPolicy,
    pages: Sequence[Mapping],
    *,
    rules: access_rules.RuleSet | None = None,
    host: str = "localhost",
    cached: Mapping | None = None,
    ttl: int = 0,
    now: float = 0.0,
    nesting: Mapping[str, str] | None = None,
    apps: Sequence[App] = (),
    prefix: str = "",
) -> Explanation:
    """Explain a person from their directory attrs (None: no usable account) and cache entry.

    `pages` is the PAGES setting, `rules` the compiled ACCESS_RULES (None: none, default
    allow), `host` the portal's host name those rules are judged for; `cached` is
    `accounts.cached_attributes()` (with its `fetched_at`), `ttl` USER_CACHE_TTL and `now` the
    current time.time(); `nesting` maps each nested group to the group it was reached through;
    `apps` the compiled APPS, judged as the home page judges them; `prefix` where the portal
    is mounted on its host (APPLICATION_ROOT).
    """
    cache = cache_state(cached, attrs, ttl, now)
    if attrs is None:
        return Explanation(username=username, found=False, cache=cache)
    groups = tuple(attrs.get("groups") or ())
    person = standing(groups, policy)
    return Explanation(
        username=attrs["username"],
        found=True,
        dn=attrs["dn"],
        display_name=attrs.get("display_name") or attrs["username"],
        email=attrs.get("email") or "",
        groups=groups,
        group_paths=tuple(nesting_path(group, nesting or {}) for group in groups),
        standing=person,
        pages=tuple(page_access(groups, person, pages, rules, host, prefix)),
        apps=tuple(app_access(groups, person, apps, rules, host, pages, prefix)),
        cache=cache,
    )


def nesting_path(group: str, nesting: Mapping[str, str]) -> tuple[str, ...]:
    """The groups `group` was reached through, nearest first: () for a direct membership."""
    path: list[str] = []
    while group in nesting and nesting[group] not in path and len(path) < len(nesting):
        group = nesting[group]
        path.append(group)
    return tuple(path)


def standing(groups: Iterable[str], policy: AccessPolicy) -> Standing:
    """Whether these groups may sign in under the policy: the denied groups win."""
    groups = tuple(groups)
    allowed_by = _members(groups, policy.allowed)
    denied_by = _members(groups, policy.denied)
    admin_by = _members(groups, policy.admin)
    # In the reader's language (the admin page's; a command's is English).
    denied, allowed = _names(denied_by), _names(allowed_by)
    if denied_by and allowed_by:
        reason = gettext("refused by denied group %(denied)s (although in allowed group "
                         "%(allowed)s)", denied=denied, allowed=allowed)  # fmt: skip
    elif denied_by:
        reason = gettext("refused by denied group %(groups)s", groups=denied)
    elif allowed_by:
        reason = gettext("allowed by %(groups)s", groups=allowed)
    elif policy.allowed:
        reason = gettext("in no allowed group (needs %(groups)s)",
                         groups=_one_of(sorted(policy.allowed)))  # fmt: skip
    else:
        reason = gettext("in no allowed group (ACCESS_ALLOWED_GROUPS is empty)")
    return Standing(not denied_by and bool(allowed_by), allowed_by, denied_by, admin_by, reason)


def page_access(
    groups: Iterable[str],
    person: Standing,
    pages: Sequence[Mapping],
    rules: access_rules.RuleSet | None = None,
    host: str = "localhost",
    prefix: str = "",
) -> list[PageAccess]:
    """Whether each configured page opens for these groups, in settings order, with the reason
    (`prefix`: where the portal is mounted, as the rules see its pages' addresses)."""
    groups = tuple(groups)
    judged = rules is not None and rules.judges  # as enforce_access_rules skips otherwise
    found = []
    for page in pages:
        needed = tuple(page["groups"])
        granted = _members(groups, {name.casefold() for name in needed})
        by_groups = _by_groups(granted, needed)
        if not person.active:
            opens, reason = False, gettext("cannot sign in; %(reason)s", reason=by_groups)
        elif not granted:
            opens, reason = False, by_groups
        else:
            decision = (
                rules.decide_portal_page(groups, host, f"{prefix}/pages/{page['slug']}")
                if judged
                else None
            )
            opens = decision is None or decision.allowed
            reason = by_groups if opens else gettext("%(groups)s, but %(rule)s", groups=by_groups,
                                                     rule=said(decision))  # fmt: skip
        found.append(PageAccess(page["slug"], page["title"], needed, granted, opens, reason))
    return found


def app_access(
    groups: Iterable[str],
    person: Standing,
    apps: Sequence[App],
    rules: access_rules.RuleSet | None = None,
    host: str = "localhost",
    pages: Sequence[Mapping] = (),
    prefix: str = "",
) -> list[AppAccess]:
    """Whether the home page shows each app to these groups, as `apps.apps_for` decides: the
    tile's own groups, then ACCESS_RULES for its address, then (a tile for one of the
    portal's own guarded pages) whether that page lets them in."""
    groups = tuple(groups)
    found = []
    for app in apps:
        granted = _members(groups, {name.casefold() for name in app.groups})
        by_groups = _by_groups(granted, app.groups)  # "" for a tile shown to everyone
        decision = rules.decide(groups, app.host or host, app.path) if rules is not None else None
        refused_by_page = _own_page_refusal(app, groups, person, rules, host, pages, prefix)
        if not person.active:
            shown, reason = False, gettext("cannot sign in")
        elif app.groups and not granted:
            shown, reason = False, by_groups
        elif decision is not None and not decision.allowed:
            shown, rule = False, said(decision)
            reason = (gettext("%(groups)s, but %(rule)s", groups=by_groups, rule=rule)
                      if by_groups else gettext("closed by %(rule)s", rule=rule))  # fmt: skip
        elif refused_by_page:
            shown, reason = False, refused_by_page
        elif decision is not None and decision.rule:
            # Opened by a rule, not by the default policy: the rule is the reason it shows.
            shown, rule = True, said(decision)
            reason = (gettext("%(groups)s, and opened by %(rule)s", groups=by_groups, rule=rule)
                      if by_groups else gettext("opened by %(rule)s", rule=rule))  # fmt: skip
        else:
            shown, reason = True, by_groups or gettext("shown to everyone signed in")
        found.append(AppAccess(app.title, app.url, shown, reason))
    return found


def said(decision: access_rules.Decision) -> str:
    """A decision's reason in the reader's language: "rule 2" and "default policy" translated,
    the rule itself (hosts=, paths=, groups=) and the policy in the settings' own words."""
    if decision.rule:
        return gettext("rule %(number)d: %(rule)s", number=decision.rule,
                       rule=decision.reason.partition(": ")[2])  # fmt: skip
    kind, _, policy = decision.reason.partition(": ")
    if kind == "default policy":
        return gettext("default policy: %(policy)s", policy=policy)
    return decision.reason


def _own_page_refusal(app: App, groups: tuple[str, ...], person: Standing,
                      rules: access_rules.RuleSet | None, host: str, pages: Sequence[Mapping],
                      prefix: str) -> str:  # fmt: skip
    # Why a tile for one of the portal's own guarded pages is hidden from this person ("" when
    # it is not such a tile, or the page lets them in).
    target = own_page(app, host, prefix)
    if target is None:
        return ""
    kind, slug = target
    if kind == "admin":
        return "" if person.admin else gettext("the admin pages are for ACCESS_ADMIN_GROUPS")
    page = next((page for page in pages if page["slug"] == slug), None)
    if page is None:
        return gettext("no page of PAGES has the slug %(slug)s", slug=slug)
    opened = page_access(groups, person, [page], rules, host, prefix)[0]
    if opened.open:
        return ""
    return gettext("the page %(slug)s is closed: %(reason)s", slug=slug, reason=opened.reason)


def cache_state(
    cached: Mapping | None, attrs: Mapping | None, ttl: int, now: float
) -> CacheState | None:
    """Describe a cache entry (`accounts.cached_attributes()`), or None when there is none."""
    if cached is None:
        return None
    age = max(0, int(now - float(cached.get("fetched_at") or now)))
    held = {key: value for key, value in cached.items() if key != "fetched_at"}
    return CacheState(
        age_seconds=age,
        expires_in_seconds=max(0, ttl - age),
        matches_directory=attrs is not None and held == dict(attrs),
        groups=tuple(held.get("groups") or ()),
    )


def judge_url(
    groups: Iterable[str],
    rules: access_rules.RuleSet,
    url: str,
    method: str = "GET",
) -> access_rules.Decision:
    """ACCESS_RULES' decision for an active person opening `url` (https:// assumed if absent),
    exactly as /auth/verify would judge it."""
    target = url if "://" in url else f"https://{url}"
    parts = urlsplit(target)
    if not parts.netloc:
        raise ValueError(f"{url!r} names no host: give an address such as "
                         "https://wiki.corp.example/path, or a path starting with /")  # fmt: skip
    # The path as sent, query included: what a proxy would put in X-Original-URL (a browser
    # keeps the fragment to itself).
    sent = target.split(parts.netloc, 1)[1].split("#", 1)[0] or "/"
    return rules.decide(groups, parts.netloc, sent, method)


def _members(groups: Sequence[str], names: Iterable[str]) -> tuple[str, ...]:
    # The person's groups (as the directory spells them) that are among `names` (folded).
    keys = {name.casefold() for name in names}
    return tuple(group for group in groups if group.casefold() in keys)


def _by_groups(granted: Sequence[str], needed: Sequence[str]) -> str:
    # What a page's or tile's own groups say: the person is in them, or which they need; ""
    # when it names none.
    if granted:
        return gettext("member of %(groups)s", groups=_names(granted))
    return gettext("needs %(groups)s", groups=_one_of(needed)) if needed else ""


def _names(groups: Sequence[str]) -> str:
    return ", ".join(groups)


def _one_of(groups: Sequence[str]) -> str:
    return groups[0] if len(groups) == 1 else gettext("one of %(groups)s", groups=", ".join(groups))
