"""The home page's launcher: the APPS a person may open, judged as /auth/verify judges them.

An app is shown to a person exactly when ACCESS_RULES let them GET its url (for a path on the
portal's own host, judged on the host the page was asked for) and, if the app names groups,
they are in one of them: the launcher never shows a door the proxy will shut. A tile for one
of the portal's own guarded pages (a page of PAGES, the admin pages) is shown only to people
that page lets in, for the same reason. An app's groups
only narrow who sees its tile; when the rules let others open it, start-up and `portal check`
warn (`unguarded`), since its owner may believe the groups guard it. With
ACCESS_DEFAULT_POLICY = "deny", an app no allow rule covers would be shown to nobody: the
portal refuses to start with it, naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..settings import ConfigError
from ..settings.texts import Text
from .rules import RuleSet, normal_host

# The portal's own pages with guards of their own, as the routes read them (main.page, admin).
_OWN_PAGE = re.compile(r"/pages/([^/]+)")
_ADMIN_PAGES = re.compile(r"/admin(?:/.*)?")


@dataclass(frozen=True)
class App:
    """One tile of the launcher (its texts in each language settings give them in)."""

    title: Text
    url: str
    description: Text
    icon: str
    category: Text
    groups: tuple[str, ...]
    host: str | None  # None: a path on the portal's own host
    path: str

    @property
    def initial(self) -> str:
        """The letter shown in place of an icon, of the first language's title (the home
        page shows its reader's own: templates of a BRAND_DIR may still read this)."""
        return self.title[0].upper()


def compile_apps(apps: list[dict], rules: RuleSet, static_folders,
                 languages: list[str]) -> tuple[App, ...]:  # fmt: skip
    """APPS as tiles, checked against the rules and the icon files (in any of the static
    folders); raise ConfigError."""
    compiled = []
    for number, app in enumerate(apps, 1):
        parts = urlsplit(app["url"])
        tile = App(
            title=Text.of(app["title"], languages),
            url=app["url"],
            description=Text.of(app.get("description", ""), languages),
            icon=app.get("icon", ""),
            # An empty category: the page says "Apps".
            category=Text.of(app.get("category", ""), languages),
            groups=tuple(app.get("groups", ())),
            host=parts.netloc or None,
            path=parts.path or "/",
        )
        if not rules.could_allow(tile.host, tile.path):
            raise ConfigError(
                f"setting APPS[{number}]: no rule of ACCESS_RULES allows {tile.url!r} and the "
                "default policy is deny, so nobody could open it: add an allow rule for it "
                "or remove the app"
            )
        if tile.icon and not any(Path(folder, "icons", tile.icon).is_file()
                                 for folder in static_folders):  # fmt: skip
            raise ConfigError(
                f"setting APPS[{number}].icon: there is no file static/icons/{tile.icon}"
            )
        compiled.append(tile)
    return tuple(compiled)


#: Stands for the portal's own host when SSO_PORTAL_URL names none: only rules without hosts
#: cover it (.invalid is never a real name, RFC 2606).
_SOME_PORTAL_HOST = "portal.invalid"


def unguarded(apps: tuple[App, ...], rules: RuleSet, portal_host: str | None) -> list[str]:
    """A warning for each app whose `groups` hide its tile from people ACCESS_RULES let open
    it: the tile's groups do not guard the app, and its owner may believe they do."""
    named = sorted({group for rule in rules.rules for group in rule.groups})
    warnings = []
    for number, app in enumerate(apps, 1):
        if not app.groups:
            continue
        own = {group.casefold() for group in app.groups}
        host = app.host or portal_host or _SOME_PORTAL_HOST
        # Rules match a person in any one of their groups, so if anyone outside the app's
        # groups may open it, someone in no group or in one of the rules' groups may.
        for groups in [(), *((group,) for group in named if group not in own)]:
            if rules.decide(groups, host, app.path).allowed:
                who = f"members of {groups[0]}" if groups else "anyone signed in"
                warnings.append(
                    f"APPS[{number}] ({app.title.in_language('en')}): its tile is shown to "
                    "members of "
                    f"{', '.join(app.groups)} only, but ACCESS_RULES let {who} open {app.url}: "
                    "an app's groups do not guard it; add a rule for its url with those groups "
                    "(or guard it at the proxy with ?group=)"
                )
                break
    return warnings


def own_page(app: App, portal_host: str | None, prefix: str = "") -> tuple[str, str] | None:
    """Which of the portal's own guarded pages a tile opens: ("page", its slug), ("admin", ""),
    or None (an app, or a page of the portal anyone signed in may open). `prefix`: where the
    portal is mounted on its host (APPLICATION_ROOT), if anywhere."""
    if app.host is not None and (portal_host is None
                                 or normal_host(app.host) != normal_host(portal_host)):  # fmt: skip
        return None
    path = app.path
    if prefix:
        if not path.startswith(prefix + "/"):
            return None
        path = path[len(prefix) :]
    if match := _OWN_PAGE.fullmatch(path):
        return ("page", unquote(match[1]))
    return ("admin", "") if _ADMIN_PAGES.fullmatch(path) else None


def apps_for(apps: tuple[App, ...], rules: RuleSet, groups, portal_host: str, in_any_group,
             language: str, prefix: str = "",
             opens_own_page: Callable[[tuple[str, str]], bool] | None = None,
             ) -> list[tuple[str, list[App]]]:  # fmt: skip
    """The apps this person may open, grouped by category in the order settings give them:
    by the category's name in the reader's language (two apps whose categories read the same
    share one heading, however each was given). `opens_own_page` tells whether the person
    may open one of the portal's own guarded pages (`own_page`)."""
    by_category: dict[str, list[App]] = {}
    for app in apps:
        if app.groups and not in_any_group(app.groups):
            continue
        if not rules.decide(groups, app.host or portal_host, app.path).allowed:
            continue
        page = own_page(app, portal_host, prefix) if opens_own_page else None
        if page is not None and not opens_own_page(page):
            continue
        by_category.setdefault(app.category.in_language(language), []).append(app)
    return list(by_category.items())
