"""Every setting, with its default and what it means (read by portal.settings.defaults()).

Keys are flat UPPERCASE names; settings.toml and `PORTAL_<KEY>` environment variables override
them. Nothing here does any I/O.
"""

from __future__ import annotations

from typing import Any

#: "production" (the default) refuses the dev-only secrets of settings.toml and insecure
#: cookies; `make run`, the tests and the demo docker-compose set PORTAL_ENV=development.
ENV = "production"

# --- Servers and transport ------------------------------------------------------------------
#: Directory servers, tried in order: ``ldap://host:port`` or ``ldaps://host:port``.
LDAP_URLS: list[str] = []
#: Upgrade ldap:// connections with StartTLS before any bind (refused if the upgrade fails).
LDAP_START_TLS = False
#: Allow simple binds over unencrypted ldap:// to hosts other than this machine (passwords
#: then cross the network in clear text; a warning is logged at start-up).
LDAP_ALLOW_CLEARTEXT = False
#: PEM file of the CA certificates that sign the directory's TLS certificate; empty means the
#: system's trusted CAs. Certificates and host names are always verified.
LDAP_CA_FILE = ""
#: Seconds to wait for a TCP connection to one server (whole seconds: ldap3 needs integers).
LDAP_CONNECT_TIMEOUT = 3
#: Seconds to wait for any one LDAP operation's answer.
LDAP_OPERATION_TIMEOUT = 5
#: Seconds a login may take in all (searches, bind, groups, a second server) before the person
#: is told to try again (503) and the worker is free; 0 means LDAP_OPERATION_TIMEOUT + 1.
LDAP_LOGIN_DEADLINE = 0
#: Longest a directory server that failed is left alone before it is tried again (seconds). The
#: first wait is 1 s, doubling with each failure in a row up to this; meanwhile the next server
#: is used, or the answer is a quick 503.
LDAP_BREAKER_MAX_SECONDS = 30
#: Connections each process may use at once, and keeps open for reuse, in each of its two
#: pools: service searches, and password checks (so also the logins checked at one time).
LDAP_POOL_SIZE = 4
#: Results per page when reading groups (Active Directory answers at most 1000 per page).
LDAP_PAGE_SIZE = 500

# --- Service account ------------------------------------------------------------------------
#: DN of the read-only service account used to search people and groups.
LDAP_BIND_DN = ""
#: Password of the service account (put it in the environment in production).
LDAP_BIND_PASSWORD = ""
#: Search anonymously instead (LDAP_BIND_DN and LDAP_BIND_PASSWORD left empty).
LDAP_ANONYMOUS_SEARCH = False

# --- People ---------------------------------------------------------------------------------
#: Where people live: one DN or a list of DNs (a login name must match one entry across all).
LDAP_USER_BASE: str | list[str] = ""
#: Filter that finds one person. ``{username}`` is the login name without a domain,
#: ``{login}`` the whole name as typed (lower-cased); both are escaped before use.
LDAP_USER_FILTER = "(&(objectClass=inetOrgPerson)(uid={username}))"
#: Domains people may type with their name, as ``alice@corp.example`` or ``CORP\\alice``.
LDAP_LOGIN_DOMAINS: list[str] = []
#: Bind straight to this DN or UPN template instead of searching first (``{username}`` is
#: RFC 4514-escaped for DNs), e.g. ``uid={username},ou=people,dc=example,dc=org``.
LDAP_USER_DN_TEMPLATE = ""
#: Attribute holding the login name; its value (lower-cased) is the portal's identity.
LDAP_ATTR_USERNAME = "uid"
#: Attribute shown as the person's name.
LDAP_ATTR_DISPLAY_NAME = "displayName"
#: Attribute holding the e-mail address.
LDAP_ATTR_EMAIL = "mail"
#: How account state is read: "none", "ad" (userAccountControl and friends) or "ppolicy".
LDAP_ACCOUNT_STATE = "none"
#: Accounts matching this filter count as disabled (e.g. ``(nsAccountLock=TRUE)``).
LDAP_DISABLED_FILTER = ""
#: With "ppolicy": the policy's pwdMaxAge in days, so people signed in when their password
#: expires are signed out within USER_CACHE_TTL (0: only checked when they sign in).
LDAP_PASSWORD_MAX_AGE_DAYS = 0
#: With "ppolicy": the policy entry of people without a pwdPolicySubentry (the overlay's
#: ppolicy_default), whose pwdMaxAge tells when passwords expire; empty: use
#: LDAP_PASSWORD_MAX_AGE_DAYS.
LDAP_PASSWORD_POLICY_DN = ""
#: Warn people on their home page this many days before their password expires (0: never).
PASSWORD_WARN_DAYS = 14
#: Where people change an expired or reset password (shown when they must).
PASSWORD_CHANGE_URL = ""
#: Where people reset a forgotten password: a "Forgot your password?" link on the login page.
PASSWORD_RESET_URL = ""
#: The portal's own change-password page (/password): the directory's policy decides. False
#: hides it (PASSWORD_CHANGE_URL, if set, is offered instead).
PASSWORD_SELF_SERVICE = True
#: The password policy in people's words, shown on /password where the new one is typed, e.g.
#: "At least 12 characters, not one of your last 5 passwords." (empty: a line saying the
#: directory checks it against its policy). The directory still decides.
PASSWORD_RULES = ""

# --- Directory watcher ------------------------------------------------------------------------
#: Seconds between two polls of the directory for changed people and groups; the people they
#: affect are re-read at once, so a removal ends access within about this long instead of
#: USER_CACHE_TTL. One process of the deployment polls (elected through Redis with RedisCache;
#: each process with SimpleCache). 0 turns it off.
WATCH_INTERVAL = 2

# --- Look -----------------------------------------------------------------------------------
#: The portal's name, in every page's title and header (left as it is, said in each language).
PORTAL_NAME = "Intranet portal"
#: A folder whose templates/ and static/ come before the package's: put a template or a file
#: of the same name there to replace it (logo, portal.css, app icons) without editing the package.
BRAND_DIR = ""
#: The logo in the header, a file in the static folder (BRAND_DIR's first); empty: the name only.
PORTAL_LOGO = ""
#: The browser tab's icon, a file in the static folder.
PORTAL_FAVICON = "favicon.svg"
#: Buttons, links and tiles in the company's colour, "#rrggbb" dark enough for white text.
ACCENT_COLOUR = ""
#: A line at the foot of every page, and links there: tables with title and url.
FOOTER_TEXT = ""
FOOTER_LINKS: list[dict[str, str]] = []

#: The languages pages are shown in, chosen from the browser's Accept-Language; the first is
#: used when the browser asks for none of them. Available: "en", "de".
#: Every text below a person reads (PORTAL_NAME, FOOTER_TEXT, a footer link's title, HELP_TEXT,
#: HELP_LINK_TEXT, PASSWORD_RULES, a page's title and body, an app's title, description and
#: category) may be one text, or a table with one per language: { en = "Expenses", de =
#: "Spesen" }. A table
#: needs the first language's text, shown to whoever asks for a language it has none for.
LANGUAGES = ["en", "de"]

# --- Help -----------------------------------------------------------------------------------
#: Shown wherever someone may be stuck (login, refused, must change password, too many
#: attempts, 403, 503): who to ask, e.g. "The service desk answers on extension 4357.".
HELP_TEXT = ""
#: The service desk's page, linked after HELP_TEXT, with HELP_LINK_TEXT as the link's text
#: (empty: "Contact the service desk", in the page's language).
HELP_URL = ""
HELP_LINK_TEXT = ""

# --- Groups ---------------------------------------------------------------------------------
#: Where groups come from: "search" (LDAP_GROUP_FILTER), "memberof" (the person's
#: LDAP_ATTR_MEMBER_OF values, no search) or "both".
LDAP_GROUP_MEMBERSHIP = "search"
#: Attribute listing a person's groups as DNs.
LDAP_ATTR_MEMBER_OF = "memberOf"
#: Where groups live; searched with LDAP_GROUP_FILTER.
LDAP_GROUP_BASE = ""
#: Filter that finds a person's groups; ``{user_dn}`` and ``{username}`` are escaped values.
LDAP_GROUP_FILTER = (
    "(|(&(objectClass=groupOfNames)(member={user_dn}))"
    "(&(objectClass=posixGroup)(memberUid={username})))"
)
#: Attribute holding a group's name (compared case-insensitively): its value in the group's DN,
#: else its first value; other values name nothing.
LDAP_GROUP_NAME_ATTR = "cn"
#: Levels of groups-inside-groups to follow (0: direct membership only); one search a level.
LDAP_GROUP_NESTING_DEPTH = 0
#: Filter that finds the groups containing a group; ``{group_dn}`` is an escaped DN.
LDAP_GROUP_NESTED_FILTER = "(|(member={group_dn})(uniqueMember={group_dn}))"

# --- Access ---------------------------------------------------------------------------------
#: A person must be in at least one of these groups to use the portal.
ACCESS_ALLOWED_GROUPS: list[str] = []
#: A person in any of these groups may not use the portal, whatever else they are in.
ACCESS_DENIED_GROUPS: list[str] = []
#: Members of these groups may open the admin pages.
ACCESS_ADMIN_GROUPS: list[str] = []
#: Group-restricted pages: tables with slug, title, groups and either body (plain text: a blank
#: line starts a paragraph, a line break stays one) or template.
PAGES: list[dict[str, Any]] = []
#: The apps the home page offers, as tiles grouped by category: tables with title, url (an
#: https:// address, or a path on the portal's host), and optionally description, icon (a file
#: in static/icons/), category and groups. A person sees an app only when ACCESS_RULES let them
#: open its url (as /auth/verify would) and, if groups are given, they are in one of them.
#: Those groups only hide the tile; ACCESS_RULES guard the app (start-up warns otherwise).
APPS: list[dict[str, Any]] = []
#: Ordered rules for the portal's pages and for apps behind the same proxy (/auth/verify):
#: tables with optional hosts ("*.corp.example" allowed), paths (prefixes), methods and groups
#: (empty: anyone signed in), and policy "allow" or "deny". The first rule that matches decides.
ACCESS_RULES: list[dict[str, Any]] = []
#: What happens to a signed-in, active person when no rule matches an app's address: "allow"
#: or "deny". Not for the portal's own pages, which only a matching rule may refuse.
ACCESS_DEFAULT_POLICY = "allow"
#: Paths are judged as apps read them: escapes of letters, digits and "-._~" are decoded, any
#: other escape is refused (403). Escapes listed here (e.g. ["%20"] for an app whose addresses
#: hold spaces) are let through and matched as they are; list only escapes your apps do not
#: turn into something else (an app that trims spaces would read "/x%20" as "/x").
ACCESS_KEPT_ESCAPES: list[str] = []

# --- Metrics (GET /metrics) -----------------------------------------------------------------
#: Client networks (CIDRs, or single addresses) that may read /metrics without a token.
METRICS_ALLOWED_NETWORKS: list[str] = ["127.0.0.0/8", "::1/128"]
#: A token that also lets a client read /metrics from anywhere, sent as
#: ``Authorization: Bearer <token>``; empty: no token is accepted (networks only).
METRICS_BEARER_TOKEN = ""

# --- Single sign-on -------------------------------------------------------------------------
#: Hosts (and their subdomains) the login page may send people back to after signing in (the
#: portal's own host, with its scheme and port, always).
SSO_ALLOWED_DOMAINS: list[str] = []
#: The portal's public address (e.g. ``https://portal.corp.example``) for the login links
#: /auth/verify gives proxies; empty for a portal on the same host as the apps (paths only).
SSO_PORTAL_URL = ""
#: Which headers tell /auth/verify the original request: "original" (nginx: X-Original-URL and
#: X-Original-Method) or "forwarded" (Traefik, Caddy: X-Forwarded-Proto/-Host/-Uri/-Method).
#: Only that family is read, so a client cannot slip in the other one.
SSO_REQUEST_HEADERS = "original"
#: The groups Remote-Groups lists for the apps: names or patterns such as "app-*", without
#: regard to case; empty lists every group of the person. With hundreds of groups (common in
#: Active Directory), list the ones the apps read.
SSO_FORWARDED_GROUPS: list[str] = []
#: The most bytes the four Remote-* values may take together: a person whose identity is
#: larger gets 403 from /auth/verify (logged, with what to set), not a 500 from the proxy.
#: Keep it below the proxy's buffer for an answer's headers (the shipped nginx keeps 16 KB)
#: and the apps' servers' limit for one header field (often 8 KB); 0 removes the bound.
SSO_IDENTITY_HEADERS_MAX_BYTES = 8000

# --- Login throttling and audit --------------------------------------------------------------
#: Failed logins allowed per account, from any address (Flask-Limiter syntax). The browsers
#: the person signed in from before have one more such count for them (signin/devices.py), so
#: keep twice this below the directory's own lockout threshold: guessing then never locks
#: anyone out of the directory.
THROTTLE_ACCOUNT_LIMIT = "5 per 15 minutes"
#: Failed logins allowed per client address, whatever the usernames (password spraying).
THROTTLE_IP_LIMIT = "50 per 15 minutes"
#: Where the counts live: empty means CACHE_REDIS_URL with RedisCache (shared by every worker
#: and instance), else this process's memory; or ``memory://``, or a Redis URL of any form
#: CACHE_REDIS_URL takes (Sentinel and TLS too, with the same timeout and CA file). In memory a
#: million names and addresses are counted each on its own; past that, new ones share counts.
THROTTLE_STORAGE_URL = ""
#: Every failed login takes at least this long (milliseconds), so how long the answer takes
#: does not tell an unknown name from a wrong password.
LOGIN_FAILURE_FLOOR_MS = 250

# --- Cache and sessions ---------------------------------------------------------------------
#: Flask-Caching backend: SimpleCache (one process) or RedisCache (shared by workers and hosts).
CACHE_TYPE = "SimpleCache"
#: Redis URL when CACHE_TYPE is RedisCache: ``redis://host:6379/0``, ``rediss://`` for TLS,
#: ``unix:///path/redis.sock``, or Redis Sentinel's master:
#: ``redis+sentinel://host:26379[,host2:26379...]/<master name>[/db]`` (``rediss+sentinel://``
#: for TLS to the sentinels and the master; a password in the URL goes to both).
CACHE_REDIS_URL = ""
#: PEM file of the CA certificates that sign Redis's TLS certificates (``rediss://`` URLs, for
#: the cache and the throttle counts); empty means the system's trusted CAs. Certificates and
#: host names are always verified.
CACHE_REDIS_CA_FILE = ""
#: Prefix of every cache key, so several portals can share one Redis.
CACHE_KEY_PREFIX = "portal:"
#: Seconds to wait for Redis before treating the cache as down (reads then go to the directory).
CACHE_REDIS_TIMEOUT = 1
#: Most people SimpleCache keeps per process before it drops entries.
CACHE_THRESHOLD = 10000
#: Seconds a signed-in person's directory data is reused before it is read again.
USER_CACHE_TTL = 300
#: Seconds after that during which a signed-in person goes on working from their last known
#: data when the directory does not answer (the page says so; of the admin pages only the
#: status page, never those that act on people); then the 503 page. 0: no grace, a 503 as
#: soon as the data is due and the directory is down.
USER_STALE_GRACE = 900
#: Seconds this process keeps a person's data read from the directory while Redis fails, so the
#: directory sees one read per person per process per interval rather than one per request.
CACHE_FALLBACK_SECONDS = 60
#: Seconds /readyz reuses its last answer, so frequent probes cannot hammer the directory.
HEALTH_CACHE_SECONDS = 5
#: Days a "keep me signed in" login lasts (its remember-me cookie carries the expiry).
REMEMBER_COOKIE_DAYS = 14
#: Hours a login without "keep me signed in" lasts, however active (closing the browser also
#: ends it).
SESSION_MAX_AGE_HOURS = 12
#: What happens when a session comes back from another client address or browser: "basic"
#: (it must re-enter the password for admin pages), "strong" (it is signed out) or "off".
#: The address is the TCP peer, or the one TRUSTED_PROXY_HOPS proxies vouch for; never a
#: header the client can set.
SESSION_PROTECTION = "basic"
#: Reverse proxies in front of the portal whose X-Forwarded-For and X-Forwarded-Proto are
#: believed (0: none, the client is the TCP peer). Set it to the real number: one more lets a
#: client choose its own address (and so dodge throttling).
TRUSTED_PROXY_HOPS = 0
#: Send cookies only over HTTPS (turn off only for plain-HTTP local development); they are then
#: named __Host-portal-session and __Host-portal-remember (__Secure-... with a cookie domain).
SESSION_COOKIE_SECURE = True
#: Seconds browsers keep to HTTPS for this host (Strict-Transport-Security, sent only on
#: answers to HTTPS requests); 0 makes them forget an earlier value.
HSTS_MAX_AGE = 31536000
#: Largest request body accepted (bytes); longer login forms are refused before any LDAP traffic.
MAX_CONTENT_LENGTH = 16 * 1024
#: Longest login name accepted (characters).
USERNAME_MAX_LENGTH = 256
#: Longest password accepted (characters).
PASSWORD_MAX_LENGTH = 1024
