"""The Redis clients of the user cache and the throttle counts, built from the portal's settings.

One form of URL per way of reaching Redis (CACHE_REDIS_URL, THROTTLE_STORAGE_URL):

- ``redis://[[user]:password@]host:port/db`` (or ``unix:///path/redis.sock?db=0``): one server;
- ``rediss://...``: the same over TLS;
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/<master name>[/db]``: the master
  that Redis Sentinel names, the sentinels asked in the order given (port 26379 when left out);
  ``rediss+sentinel://`` speaks TLS to the sentinels and to the master. The user and password
  are sent to the sentinels and the master alike. After a failover the next connection goes to
  the promoted replica. Reads go to the master too, never to a replica: one a moment behind
  would still serve an entry the master has just dropped (a flush, a sign-out).

Every connection, to a sentinel or a server, waits at most CACHE_REDIS_TIMEOUT seconds to
connect and for each answer, and is not retried: the caller then treats Redis as down (reads go
to the directory, login pauses) instead of holding a worker. Over TLS the server's certificate
and host name are always verified, against CACHE_REDIS_CA_FILE or the system's trusted CAs; a
master named by a sentinel must have a certificate for the address the sentinel announces.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

#: URL schemes of a Redis Sentinel deployment (value: whether TLS is spoken).
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
#: URL schemes of a single Redis server.
SERVER_SCHEMES = ("redis", "rediss", "unix")
_SENTINEL_PORT = 26379
# Query options redis-py would let override the verification and the timeouts set here.
_SETTINGS_OWN = {
    "ssl_cert_reqs": "CACHE_REDIS_CA_FILE",
    "ssl_check_hostname": "CACHE_REDIS_CA_FILE",
    "ssl_ca_certs": "CACHE_REDIS_CA_FILE",
    "ssl_ca_path": "CACHE_REDIS_CA_FILE",
    "ssl_ca_data": "CACHE_REDIS_CA_FILE",
    "socket_timeout": "CACHE_REDIS_TIMEOUT",
    "socket_connect_timeout": "CACHE_REDIS_TIMEOUT",
    "retry_on_timeout": "CACHE_REDIS_TIMEOUT",
}


@dataclass(frozen=True)
class SentinelAddress:
    """What a ``redis+sentinel://`` URL names: where to ask, for which master, which database."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def scheme(url: str) -> str:
    """The URL's scheme, lower-cased ("" when there is none)."""
    return urlsplit(url).scheme.lower() if "://" in url else ""


def is_redis_url(url: object) -> bool:
    """Tell whether `url` has one of the schemes this module connects to."""
    return isinstance(url, str) and scheme(url) in (*SERVER_SCHEMES, *SENTINEL_SCHEMES)


def location(url: str) -> str:
    """Where a Redis URL points, for logs: its scheme, hosts and path, never its credentials."""
    kind, _, rest = url.partition("://")
    # Up to the last "@", not urlsplit's netloc: an unencoded password may hold "/", "?" or "#",
    # which would end the netloc early and leave the password in the text (cutting too much
    # is the safe mistake).
    where = rest.rpartition("@")[2]
    for end in "?#":
        where = where.partition(end)[0]
    return f"{kind}://{where}"


def check_url(url: str) -> None:
    """Raise ValueError saying what is wrong with a Redis URL; return None when it can be used."""
    kind = scheme(url)
    if kind in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
    elif kind in SERVER_SCHEMES:
        parse_url(url)  # redis-py's own parser: bad option values raise ValueError
    else:
        raise ValueError(
            "use redis://host:6379/0, rediss:// (TLS), unix:///path, or "
            "redis+sentinel://host:26379/<master name>/0"
        )
    for option in parse_qs(urlsplit(url).query):
        if option in _SETTINGS_OWN:
            raise ValueError(
                f"{option} in the URL is not taken: {_SETTINGS_OWN[option]} sets it "
                "(certificates and host names are always verified)"
            )


def parse_sentinel_url(url: str) -> SentinelAddress:
    """Read a ``redis+sentinel://`` (or ``rediss+sentinel://``) URL; ValueError if malformed."""
    parts = urlsplit(url)
    tls = SENTINEL_SCHEMES.get(parts.scheme.lower())
    if tls is None:
        raise ValueError("not a redis+sentinel:// URL")
    if parts.query or parts.fragment:
        raise ValueError("a Sentinel URL takes no ?options or #fragment")
    hosts = parts.netloc.rpartition("@")[2]
    sentinels = tuple(_sentinel(item) for item in hosts.split(","))
    path = [segment for segment in parts.path.split("/") if segment]
    if not 1 <= len(path) <= 2:
        raise ValueError("name the master after the sentinels: .../<master name>[/<db>]")
    master = unquote(path[0])
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"the database {path[1]!r} is not a number")
    return SentinelAddress(
        sentinels=sentinels,
        master=master,
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


def connect(url: str, config) -> redis.Redis:
    """A Redis client for `url`: one server, or the master a Sentinel deployment names.

    `config` gives CACHE_REDIS_TIMEOUT and CACHE_REDIS_CA_FILE. Nothing is sent until the
    first command.
    """
    timeout = config["CACHE_REDIS_TIMEOUT"]
    # Without socket timeouts a hung Redis would hang every request that reads the cache, and
    # every login (the throttle counts); without retries one timeout is all it costs.
    options = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    tls = {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": config["CACHE_REDIS_CA_FILE"] or None,  # None: the system's CAs
    }
    if scheme(url) in SENTINEL_SCHEMES:
        return _sentinel_master(parse_sentinel_url(url), options, tls)
    kwargs = parse_url(url)
    kwargs.update(options)  # after the URL's own options, so the settings always win
    if kwargs.get("connection_class") is SSLConnection:
        kwargs.update(tls)
    return redis.Redis(connection_pool=redis.ConnectionPool(**kwargs))


def _sentinel_master(address: SentinelAddress, options: dict, tls: dict) -> redis.Redis:
    common = dict(options)
    if address.username:
        common["username"] = address.username
    if address.password:
        common["password"] = address.password
    if address.tls:
        common.update(tls, ssl=True)
    # sentinel_kwargs reach the connections to the sentinels, the rest those to the master.
    sentinel = Sentinel(list(address.sentinels), sentinel_kwargs=dict(common), **common)
    return sentinel.master_for(address.master, db=address.db)


def _sentinel(item: str) -> tuple[str, int]:
    location = urlsplit("//" + item.strip())
    try:
        port = location.port or _SENTINEL_PORT
    except ValueError as error:
        raise ValueError(f"the sentinel {item!r} has no valid port") from error
    if not location.hostname or location.username or location.password:
        raise ValueError(f"the sentinel {item!r} is not host:port")
    return location.hostname, port
