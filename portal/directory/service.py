"""The Directory: find a person, verify their password, read their groups, probe the servers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager

import ldap3

from .. import metrics
from ..quietlog import QuietLog
from . import account_state, mapping, passwords
from .account_state import State
from .changes import ChangeFeed
from .connections import BindPool, ServicePool, make_servers
from .deadline import Deadline
from .errors import (
    BindUnanswered,
    DirectoryError,
    DirectoryUnavailable,
    PasswordChangeRequired,
    ServerUnavailable,
)
from .groups import dn_key, resolve_groups
from .health import ServerHealth, probe
from .passwords import PasswordRefused
from .queries import bind_name, check_password, fill_filter, fold_name, login_forms
from .search import OUTAGE_CODES, SERVER_DOWN_CODES, run_search
from .settings import DirectorySettings

log = logging.getLogger(__name__)
quiet = QuietLog(log)

_INVALID_CREDENTIALS = 49


class _SendFailed(Exception):
    """The connection failed while sending a bind (not an answer from the directory)."""

    server_fault = True  # the pool opens that server's breaker


class Directory:
    """One configured directory; safe to share between threads."""

    def __init__(self, settings: DirectorySettings):
        self.settings = settings
        self.servers = make_servers(settings)
        self.pool = ServicePool(settings, self.servers)
        self.bind_pool = BindPool(settings, self.servers)
        # As many logins at once as there are connections to check passwords on, and a few
        # more that wait for one.
        self.deadline = Deadline(settings.login_deadline, settings.pool_size * 2)
        self._pinned = threading.local()  # this thread's one connection, in one_server()

    def authenticate(self, username: object, password: object) -> dict | None:
        """Return the user's attributes if the password is right and the account usable.

        Returns None for every refusal a stranger must not tell apart (unknown user, wrong
        password, disabled, locked). Raises InvalidInput before any LDAP traffic for input that
        may not be sent, PasswordChangeRequired when the password was right but must be changed
        first, and DirectoryUnavailable when the directory cannot answer.
        """
        name, login = login_forms(
            username, self.settings.username_max_length, self.settings.login_domains
        )
        check_password(password, self.settings.password_max_length)
        if self.settings.dn_template:
            entry = self._bind_by_template(name, password)
        else:
            entry = self._search_then_bind(name, login, password)
        if entry is None or not self._names_this_entry(entry, name):
            return None
        return self._attributes(entry)

    def lookup(self, username: object, nesting: dict[str, str] | None = None,
               for_sign_ins: bool = False) -> dict | None:  # fmt: skip
        """Return the current attributes of a usable account by canonical username, else None.

        A dict `nesting` is filled with each nested group's name -> the group it came through.
        `for_sign_ins`: the answer decides the person's sign-ins, so an account's state that
        ends them is logged (an administrator's look-up ends nothing, and says nothing).
        """
        name, _ = login_forms(username, self.settings.username_max_length)
        entry = self._find_user(name, name)
        if entry is None or self._identity(entry) is None:
            return None
        state = account_state.from_entry(self.settings, entry["attributes"])
        if state is not State.OK:
            if for_sign_ins:
                log.info("%s is no longer signed in: account %s", name, state.value)
            return None
        attrs = self._attributes(entry, nesting)
        # The filter may match on another attribute than the one that names people: only the
        # very person the session was issued to may be loaded for it.
        return attrs if attrs["username"] == name else None

    def change_password(self, username: object, current: object, new: object,
                        may_use: Callable[[list[str]], bool] | None = None) -> str:  # fmt: skip
        """Change a person's password, bound as them, the directory's policy deciding; return
        their canonical username. With `may_use`, the person's groups are read once the bind
        has proved the current password (for AD's must-change accounts, its refusal saying so),
        and the change is refused (REFUSED_BY_PORTAL) unless may_use(groups). Raises
        InvalidInput for an unusable name or password,
        PasswordRefused (with its reason: a wrong current password among them), or
        DirectoryUnavailable."""
        name, login = login_forms(
            username, self.settings.username_max_length, self.settings.login_domains
        )
        check_password(current, self.settings.password_max_length)
        passwords.check_new(new, self.settings.password_max_length)
        entry = None
        if self.settings.dn_template:
            dn = bind_name(self.settings.dn_template, name)
        else:
            entry = self._find_user(name, login)
            if entry is None or self._identity(entry) != name:
                raise PasswordRefused(passwords.WRONG_CURRENT)  # as for a wrong password
            dn = entry["dn"]

        def check_standing() -> None:
            # Only after the bind: a stranger must not learn someone's standing by naming them.
            # (Active Directory's must-change answer, 532 or 773, comes only for the right
            # password: there the bind's refusal is the proof.)
            found = entry or self._template_entry(name, dn)
            if found is None:
                # An entry the template names but LDAP_USER_FILTER leaves out (disabled by
                # LDAP_DISABLED_FILTER, a service account): as for a wrong password, or the
                # answer would confirm that its password is right.
                raise PasswordRefused(passwords.WRONG_CURRENT)
            if may_use is None:
                return
            if not may_use(resolve_groups(found, self.settings, self._group_search)):
                raise PasswordRefused(passwords.REFUSED_BY_PORTAL)

        passwords.change(self.servers, self.settings, dn, current, new,
                         before_change=check_standing)  # fmt: skip
        return name

    def unusable_reason(self, username: object) -> str:
        """Why lookup finds no usable account by this name: "no such person", "disabled",
        "locked", "must change password" or "its entry cannot be used"; "" if it finds one."""
        name, _ = login_forms(username, self.settings.username_max_length)
        entry = self._find_user(name, name)
        if entry is None:
            plain = self.settings.plain_user_filter
            if self.settings.disabled_filter and self._find_user(name, name, plain) is not None:
                return State.DISABLED.value
            return "no such person"
        if self._identity(entry) is None:
            return "its entry cannot be used (see the log)"
        state = account_state.from_entry(self.settings, entry["attributes"])
        return "" if state is State.OK else state.value

    def identity(self, username: object, any_state: bool = False) -> str | None:
        """The name the portal knows the person by whom this name finds (an e-mail address
        the filter also matches finds its owner), or None; with `any_state`, a disabled
        account's too (LDAP_DISABLED_FILTER left out of the search). A name with a domain
        of LDAP_LOGIN_DOMAINS is looked for as a sign-in looks for it (a user principal name
        the filter matches as {login})."""
        name, login = login_forms(
            username, self.settings.username_max_length, self.settings.login_domains
        )
        # Every account at once, disabled ones too: a disabled person's address kept on
        # another's entry must be the two entries it is (refused), not the active one alone.
        every = any_state and self.settings.disabled_filter
        user_filter = self.settings.plain_user_filter if every else ""
        entry = self._find_user(name, login, user_filter)
        # As a sign-in: the name the entry gives must lead back to it, or a name typed for one
        # entry would act on another's (an entry calling itself by someone else's uid).
        if entry is None or not self._names_this_entry(entry, name, user_filter):
            return None
        return self._identity(entry)

    def change_feed(self) -> ChangeFeed:
        """A feed of the people directory changes affect (see changes.py)."""

        def read_base(dn: str, attributes: list[str] | None = None) -> list:
            attributes = attributes or [self.settings.attr_username]
            return self._search(dn, "(objectClass=*)", attributes, scope=ldap3.BASE)

        return ChangeFeed(self.settings, self._group_search, read_base, self.one_server)

    @contextmanager
    def one_server(self, fresh: bool = False) -> Iterator[None]:
        """Send every search this thread makes inside to one service connection, so to one
        server: what a poll of the changes reads must be one server's view (two replicas
        differ). A new connection if `fresh`. Raises DirectoryUnavailable when a search fails
        (the caller's own errors pass as they are). Inside another, the outer one holds."""
        if getattr(self._pinned, "connection", None) is not None:
            yield  # already pinned: no second connection (with one, it would wait for itself)
            return
        self._pinned.failed, self._pinned.fresh = None, fresh
        own_error = None
        try:
            with self.pool.connection(fresh=fresh) as connection:
                self._pinned.connection = connection
                try:
                    yield
                except Exception as error:
                    if isinstance(error, DirectoryError) or error is self._pinned.failed:
                        raise
                    own_error = error  # not the directory's: its connection goes back
                finally:
                    self._pinned.connection = None
        except DirectoryError:
            raise
        except Exception as error:  # noqa: BLE001 - a search's socket or protocol error
            self.pool.clear()
            raise DirectoryUnavailable("directory search failed") from error
        if own_error is not None:
            raise own_error  # a poll's own error shows as it is

    def check_health(self) -> list[ServerHealth]:
        """Probe every server at once (fresh service bind and base search), in LDAP_URLS order.

        In parallel, so one dead or hanging server costs its own timeouts, not the sum of all.
        """
        with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
            return list(pool.map(lambda server: probe(server, self.settings), self.servers))

    def some_server_answers(self) -> bool:
        """Whether some server answers a fresh service bind and base search: True as soon as
        one does, without waiting for the others (a hung one would hold the answer for its
        whole operation timeout); False once every one has failed."""
        pool = ThreadPoolExecutor(max_workers=len(self.servers))
        try:
            probes = [pool.submit(probe, server, self.settings) for server in self.servers]
            return any(finished.result().ok for finished in as_completed(probes))
        finally:
            pool.shutdown(wait=False)  # the probes still running end on their own timeouts

    def close(self) -> None:
        """Close the pooled connections."""
        self.pool.clear()
        self.bind_pool.clear()

    def _search_then_bind(self, name: str, login: str, password: str) -> Mapping | None:
        entry = self._find_user(name, login)
        if entry is None:
            return None
        # Every known account gets its bind, usable or not, so refusals cost the same work.
        with self._bound_as(entry["dn"], password) as (_, bound):
            pass
        return self._usable(entry, entry["dn"]) if bound else None

    def _bind_by_template(self, name: str, password: str) -> Mapping | None:
        # No search before the bind; the entry is then read for the identity the server bound.
        who = bind_name(self.settings.dn_template, name)
        try:
            with self._bound_as(who, password) as (connection, bound):
                try:
                    entry = self._bound_entry(connection, name) if bound else None
                except DirectoryError:
                    raise
                except Exception as error:  # noqa: BLE001 - the server failed after the bind
                    raise ServerUnavailable("reading the bound entry failed") from error
        except PasswordChangeRequired:
            # Said by the bind, before the entry was read: "must change it" confirms the
            # password, so only for an entry a sign-in may be for (the filter finds it).
            if self._template_entry(name, who) is None:
                return None
            raise
        return None if entry is None else self._usable(entry, who)

    def _template_entry(self, name: str, who: str) -> Mapping | None:
        # The entry the template named, if LDAP_USER_FILTER finds it as every later read of
        # the person does: by this name, the entry of that DN. A UPN (Active Directory) names
        # the entry holding it, found under its own name (a UPN's first part may be another
        # account's name: "alice.smith@corp.example" is asmith's); one nobody holds is AD's
        # implicit sAMAccountName@domain, the account of the typed name.
        check_dn = "=" in self.settings.dn_template
        if not check_dn and (holder := self._upn_holder(who)) is not None:
            name, who, check_dn = self._identity(holder) or "", holder["dn"], True
        found = self._find_user(name, name) if name else None
        if found is None or self._identity(found) != name:
            return None
        return None if check_dn and dn_key(found["dn"]) != dn_key(who) else found

    def _upn_holder(self, upn: str) -> Mapping | None:
        # The one entry under the user bases holding this userPrincipalName, else None.
        search_filter = fill_filter("(userPrincipalName={upn})", upn=upn)
        holders: dict[str, Mapping] = {}
        for base in self.settings.user_bases:
            for entry in self._search(base, search_filter, [self.settings.attr_username],
                                      size_limit=2, truncation_ok=True):  # fmt: skip
                holders.setdefault(entry["dn"].lower(), entry)
        return next(iter(holders.values())) if len(holders) == 1 else None

    def _bound_entry(self, connection: ldap3.Connection, name: str) -> Mapping | None:
        # Ask the server who is bound (RFC 4532): a UPN may name another account than the
        # typed name suggests, and only the bound identity may be signed in.
        identity = str(connection.extend.standard.who_am_i() or "")
        if identity.startswith("u:"):  # Active Directory answers u:DOMAIN\account
            account = identity[2:].rpartition("\\")[2].lower()
            return self._find_user(account, account) if account else None
        if not identity.startswith("dn:") or not identity[3:]:
            log.warning("the directory did not say who is bound (%r)", identity)
            return None
        # Found as every later read finds the person: by LDAP_USER_FILTER, with the service
        # account. An entry the template names but the filter leaves out (a contractor, a
        # service account) was signed in and refused only at the next directory read; and what
        # the service account may see (pwdChangedTime above all, which names the password)
        # must not differ between the login and the reads that follow.
        found = self._find_user(name, name)
        if found is None or dn_key(found["dn"]) != dn_key(identity[3:]):
            return None
        return found

    def _usable(self, entry: Mapping, who: str) -> Mapping | None:
        # After a successful bind, the account state recorded in the entry decides.
        state = account_state.from_entry(self.settings, entry["attributes"])
        if state is State.MUST_CHANGE_PASSWORD:
            raise PasswordChangeRequired(who)
        if state is State.LOCKED and self.settings.account_state == "ppolicy":
            # ppolicy enforces its lockout in the bind just accepted; a lock time still recorded
            # is one whose duration ran out (this bind clears it).
            return entry
        if state is not State.OK:
            log.info("login refused for %s: account %s", who, state.value)
            return None
        return entry

    @contextmanager
    def _bound_as(self, who: str, password: str) -> Iterator[tuple[ldap3.Connection, bool]]:
        """Bind a pooled connection as `who`; yield it and whether the bind was accepted."""
        # A pooled connection may be dead: one retry on a new one, as for searches. Errors
        # raised by the caller's block are not retried (they pass straight through).
        for fresh in (False, True):
            try:
                with self.bind_pool.connection(fresh=fresh) as connection:
                    try:
                        bound = self._send_bind(connection, who, password)
                    except (DirectoryError, PasswordChangeRequired):
                        raise
                    except Exception as error:  # noqa: BLE001 - socket and protocol errors
                        raise _SendFailed from error
                    yield connection, bound
                    return
            except _SendFailed as failure:
                self.bind_pool.clear()
                if fresh:
                    # The server's own failure is logged (with host:port) by the pool.
                    quiet.warning("bind failed", "bind as %s failed: %r", who, failure.__cause__)
                    raise BindUnanswered("no directory server answered the bind") from None

    def _send_bind(self, connection: ldap3.Connection, who: str, password: str) -> bool:
        # The password-policy control is asked for on every bind (non-critical: servers without
        # ppolicy ignore it), so a reset or grace-login bind is never taken for a full login.
        connection.user, connection.password = who, password
        connection.authentication = ldap3.SIMPLE
        try:
            with metrics.ldap_operation("bind", connection):  # metrics: time, errors
                bound = connection.bind(
                    read_server_info=False, controls=[(account_state.PPOLICY_CONTROL, False, None)]
                )
        finally:
            # A pooled object never keeps a password: ldap3 also keeps the last request.
            connection.password = connection.request = None
        result = connection.result or {}
        code = result.get("result")
        state = account_state.from_bind(result)
        if state is State.MUST_CHANGE_PASSWORD:
            raise PasswordChangeRequired(who, account_state.grace_logins_left(result))
        if state is not State.OK:
            log.info("bind as %s refused: account %s", who, state.value)
            return False
        if not bound and code in OUTAGE_CODES:
            detail = f"result code {code} {result.get('description', '')}".strip()
            metrics.ldap_error("bind", connection, detail)  # metrics, status page
            unavailable = ServerUnavailable if code in SERVER_DOWN_CODES else DirectoryUnavailable
            raise unavailable(f"bind answered result code {code}")
        if not bound and code != _INVALID_CREDENTIALS:
            # Not a wrong password: a policy or configuration refusal an administrator must see.
            log.warning("bind as %s refused: %s %s", who, code, result.get("description", ""))
        return bound

    def _find_user(self, name: str, login: str, user_filter: str = "") -> Mapping | None:
        user_filter = user_filter or self.settings.user_filter
        search_filter = fill_filter(user_filter, username=name, login=login)
        found: dict[str, Mapping] = {}  # by DN: overlapping bases return an entry twice
        for base in self.settings.user_bases:
            for entry in self._search(base, search_filter, self.settings.user_attributes,
                                      size_limit=2, truncation_ok=True):  # fmt: skip
                found.setdefault(entry["dn"].lower(), entry)
            if len(found) > 1:
                log.warning("login name %r matches several directory entries; refusing it", name)
                return None
        return next(iter(found.values()), None)

    def _identity(self, entry: Mapping) -> str | None:
        # The portal's name for the person: the one value of LDAP_ATTR_USERNAME. With two
        # ("uid: erin" listed first on mallory's entry) either could be taken for the person.
        attribute = self.settings.attr_username
        names = {fold_name(value) for value in mapping.values(entry["attributes"], attribute)}
        names.discard("")
        if len(names) == 1:
            return names.pop()
        problem = "no" if not names else "more than one"
        log.error("entry %s has %s %s value: check LDAP_ATTR_USERNAME; refusing it",
                  entry["dn"], problem, attribute)  # fmt: skip
        return None

    def _names_this_entry(self, entry: Mapping, typed: str, user_filter: str = "") -> bool:
        # The identity a login gets must lead back to this very entry, or signing in as one
        # entry could give someone else's name, groups and cache entry. When the name typed is
        # that identity, the search (or the bound DN) already proved it; otherwise (a UPN or an
        # e-mail address typed) the identity is looked up once more.
        identity = self._identity(entry)
        if identity is None:
            return False
        if identity == typed:
            return True
        owner = self._find_user(identity, identity, user_filter)
        if owner is not None and owner["dn"].lower() == entry["dn"].lower():
            return True
        log.error("entry %s calls itself %r, which names another entry; refusing the login",
                  entry["dn"], identity)  # fmt: skip
        return False

    def _attributes(self, entry: Mapping, nesting: dict[str, str] | None = None) -> dict:
        names = resolve_groups(entry, self.settings, self._group_search, nesting)
        attrs = mapping.user_attributes(entry, self.settings, names)
        attrs["password_expires"] = account_state.password_expiry(
            self.settings, entry["attributes"], self._policy_max_age
        )
        return attrs

    def _policy_max_age(self, policy_dn: str) -> int:
        # The ppolicy entry's pwdMaxAge, read each time (one base search, ppolicy only): a
        # policy change shows at the next read of the person.
        entries = self._search(policy_dn, "(objectClass=*)", ["pwdMaxAge"], scope=ldap3.BASE)
        if not entries:
            return 0
        try:
            return int(mapping.first_value(entries[0]["attributes"], "pwdMaxAge") or 0)
        except ValueError:
            return 0

    def _group_search(self, base: str, search_filter: str, attributes: list[str]) -> list:
        return self._search(base, search_filter, attributes, paged=True)

    def _search(self, base: str, search_filter: str, attributes: list[str], **options) -> list:
        pinned = getattr(self._pinned, "connection", None)
        if pinned is not None:  # inside one_server(), which reports failures
            try:
                return run_search(pinned, self.settings, base, search_filter, attributes,
                                  **options)  # fmt: skip
            except DirectoryError:
                raise
            except Exception as error:  # noqa: BLE001 - socket, protocol and decoding errors
                self._pinned.failed = error
                if self._pinned.fresh:  # as below: a kept connection may just have been cut
                    quiet.warning("search failed", "directory search under %s failed: %r",
                                  base, error)  # fmt: skip
                raise
        # A pooled connection may be dead (server restarted, idle connection cut): then its
        # idle siblings are too, so they are dropped and the search retried once on a new one.
        for fresh in (False, True):
            try:
                with self.pool.connection(fresh=fresh) as connection:
                    return run_search(connection, self.settings, base, search_filter,
                                      attributes, **options)  # fmt: skip
            except DirectoryError:
                raise
            except Exception as error:  # noqa: BLE001 - socket, protocol and decoding errors
                self.pool.clear()
                if fresh:
                    quiet.warning("search failed", "directory search under %s failed: %r",
                                  base, error)  # fmt: skip
                    raise DirectoryUnavailable("directory search failed") from error
        raise AssertionError("unreachable")
