"""Throwaway Redis on 127.0.0.1, for tests of the shared user cache: one server, or a Sentinel
group (a master, its replica and a sentinel watching them), optionally over TLS.

Each runs the Debian `redis-server` binary as the current user from a temporary folder, without
snapshots, and with an append-only file only when asked to keep its data across a restart
(`persistent`): nothing is written outside that folder, and `cleanup()` leaves nothing behind.
A sentinel is `redis-server <its config file> --sentinel`; it rewrites that file, which lives
in its folder too.
"""

from __future__ import annotations

import signal
import time

import redis

from .process import ChildServer, wait_until
from .slapd import find_binary, free_port
from .tls import ServerCertificate


class RedisMissingError(RuntimeError):
    """The redis-server binary is not installed."""


def _redis_server_binary() -> str:
    binary = find_binary("redis-server")
    if not binary:
        raise RedisMissingError("Redis is not installed: run `sudo apt-get install redis-server`")
    return binary


def _tls_options(tls: ServerCertificate | None) -> dict[str, str]:
    if tls is None:
        return {}
    # Clients (the portal, replicas, the sentinel) are not asked for certificates of their own;
    # replicas and the sentinel verify the master's against the CA like any client.
    return {
        "tls-cert-file": str(tls.cert_file),
        "tls-key-file": str(tls.key_file),
        "tls-ca-cert-file": str(tls.ca_file),
        "tls-auth-clients": "no",
        "tls-replication": "yes",
    }


class _RedisProcess(ChildServer):
    """What a redis-server and a sentinel share: a client on 127.0.0.1 (TLS and password as
    the process was started with) and a PING."""

    tls: ServerCertificate | None
    password: str

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A plain client of this server (as an operator would use), trusting the test CA."""
        options = _client_options(self.tls, timeout)
        return redis.Redis("127.0.0.1", self.port, password=self.password or None, **options)

    def ping(self, timeout: float = 0.5) -> bool:
        """Tell whether the server answers PING right now."""
        return _answers(self.client(timeout))


class RedisServer(_RedisProcess):
    """Start and stop one throwaway redis-server (a replica of another with `replica_of`; TLS
    only, with `tls`; asking for `password` from clients and from its master)."""

    log_name = "redis.log"

    def __init__(
        self,
        port: int | None = None,
        *,
        replica_of: int | None = None,
        tls: ServerCertificate | None = None,
        password: str = "",
        persistent: bool = False,
    ):
        super().__init__("portal-redis-")
        self.port = port or free_port()
        self.replica_of = replica_of
        self.tls = tls
        self.password = password
        #: Keep the data across a restart (an append-only file in the temporary folder,
        #: written on every change), as the portal's Redis must in production.
        self.persistent = persistent

    @property
    def url(self) -> str:
        """The redis:// (rediss:// with TLS) URL, database 0, clients use to reach this server."""
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start redis-server in the temporary folder and wait until it answers PING."""
        options: dict[str, str | list[str]] = {
            "bind": "127.0.0.1",
            "dir": str(self.work),
            "save": "",  # no RDB snapshots
            "appendonly": "yes" if self.persistent else "no",
            "appendfsync": "always",
            "daemonize": "no",
            "loglevel": "notice",
            # A replica's first copy starts at once, not after the five seconds Redis waits for
            # more replicas to share it.
            "repl-diskless-sync-delay": "0",
        }
        if self.tls:
            options |= {"port": "0", "tls-port": str(self.port)} | _tls_options(self.tls)
        else:
            options["port"] = str(self.port)
        if self.replica_of is not None:
            options["replicaof"] = ["127.0.0.1", str(self.replica_of)]
        if self.password:
            options |= {"requirepass": self.password, "masterauth": self.password}
        command = [_redis_server_binary()]
        for key, value in options.items():
            command += [f"--{key}", *([value] if isinstance(value, str) else value)]
        self.launch(command, self.ping, timeout)
        return self

    def role(self) -> str:
        """ "master" or "slave", as the server itself says; "" when it does not answer."""
        try:
            with self.client() as client:
                return client.info("replication")["role"]
        except redis.RedisError:
            return ""

    def in_sync(self) -> bool:
        """Whether this replica is connected to its master and has copied its data set."""
        try:
            with self.client() as client:
                info = client.info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up" and not info.get("master_sync_in_progress")

    def kill(self) -> None:
        """SIGKILL the server (kill -9: no shutdown, no goodbye to clients) and reap it."""
        assert self.process is not None, "the server is not running"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None


class RedisSentinel(_RedisProcess):
    """Start and stop one redis-sentinel watching the master `master_name` at `master_port`.

    It declares the master down after one second without an answer and, being the only
    sentinel (quorum 1), promotes a replica on its own.
    """

    log_name = "sentinel.log"

    def __init__(
        self,
        master_name: str,
        master_port: int,
        *,
        tls: ServerCertificate | None = None,
        password: str = "",
    ):
        super().__init__("portal-sentinel-")
        self.port = free_port()
        self.master_name = master_name
        self.first_master_port = master_port
        self.tls = tls
        self.password = password

    def start(self, timeout: float = 15.0) -> RedisSentinel:
        """Write the sentinel's configuration, start it and wait until it answers PING."""
        name = self.master_name
        lines = ["bind 127.0.0.1", f"dir {self.work}", "daemonize no", "loglevel notice"]
        if self.tls:
            lines += ["port 0", f"tls-port {self.port}"]
            lines += [f"{key} {value}" for key, value in _tls_options(self.tls).items()]
        else:
            lines.append(f"port {self.port}")
        if self.password:
            lines.append(f"requirepass {self.password}")
        lines += [
            f"sentinel monitor {name} 127.0.0.1 {self.first_master_port} 1",
            f"sentinel down-after-milliseconds {name} 1000",
            f"sentinel failover-timeout {name} 10000",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {name} {self.password}")
        config = self.work / "sentinel.conf"
        config.write_text("\n".join(lines) + "\n")
        self.launch([_redis_server_binary(), str(config), "--sentinel"], self.ping, timeout)
        return self

    def master_port(self) -> int | None:
        """The port of the master the sentinel gives clients now; None while it vouches for
        none (the master is down, or a failover is under way), as redis-py's Sentinel reads it.
        """
        try:
            with self.client() as client:
                state = client.sentinel_master(self.master_name)
        except redis.RedisError:
            return None
        if not state["is_master"] or state["is_sdown"] or state["is_odown"]:
            return None
        return int(state["port"])

    def replicas_in_sync(self) -> int:
        """How many replicas the sentinel knows of, up and linked to their master."""
        try:
            with self.client() as client:
                replicas = client.sentinel_slaves(self.master_name)
        except redis.RedisError:
            return 0
        return sum(
            1
            for replica in replicas
            if not (replica["is_sdown"] or replica["is_odown"] or replica["is_disconnected"])
            and replica.get("master-link-status") == "ok"
        )


class RedisSentinelGroup:
    """A master, one replica and a sentinel watching them, on free 127.0.0.1 ports.

    `url()` is what the portal is given; `fail_over()` kills the master with SIGKILL and waits
    (bounded) until the sentinel has promoted the replica and the replica says it is master.
    """

    master_name = "portal"

    def __init__(self, *, tls: ServerCertificate | None = None, password: str = ""):
        self.tls = tls
        self.password = password
        self.servers = [RedisServer(tls=tls, password=password)]
        self.servers.append(
            RedisServer(replica_of=self.servers[0].port, tls=tls, password=password)
        )
        self.sentinel = RedisSentinel(
            self.master_name, self.servers[0].port, tls=tls, password=password
        )

    def start(self, timeout: float = 30.0) -> RedisSentinelGroup:
        """Start master, replica and sentinel; return once the sentinel sees the replica in sync
        (so that it could promote it)."""
        try:
            master, replica = self.servers
            master.start()
            replica.start()
            # The replica in sync before the sentinel starts, so its first look at the master
            # finds the replica (it looks again only every ten seconds).
            wait_until(replica.in_sync, replica.process, timeout, "the replica", replica.log_text)
            self.sentinel.start()
            sentinel = self.sentinel
            wait_until(sentinel.replicas_in_sync, sentinel.process, timeout, "the sentinel",
                       sentinel.log_text)  # fmt: skip
        except BaseException:
            self.cleanup()
            raise
        return self

    def url(self, db: int = 0) -> str:
        """The ``redis+sentinel://`` (``rediss+sentinel://`` with TLS) URL of the group."""
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        auth = f":{self.password}@" if self.password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.sentinel.port}/{self.master_name}/{db}"

    def master(self) -> RedisServer:
        """The server the sentinel names as master now."""
        port = self.sentinel.master_port()
        matches = [server for server in self.servers if server.port == port]
        assert matches, f"the sentinel names no server of this group as master ({port})"
        return matches[0]

    def replicate(self, timeout_ms: int = 5000) -> None:
        """Wait until every write the master has acknowledged reached the replica (WAIT 1)."""
        with self.master().client() as client:
            copies = client.wait(1, timeout_ms)
        assert copies >= 1, "the replica did not acknowledge the master's writes"

    def fail_over(self, timeout: float = 60.0) -> RedisServer:
        """Kill the master (kill -9); return the replica once it is the master the sentinel
        names and it says so itself. Polls, bounded by `timeout`; never a fixed sleep."""
        old = self.master()
        old.kill()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.sentinel.master_port()
            if port not in (None, old.port):
                promoted = self.master()
                if promoted.role() == "master":
                    return promoted
            time.sleep(0.1)  # a readiness poll, not a timing assertion
        raise RuntimeError(
            f"no replica was promoted within {timeout}s:\n{self.sentinel.log_text()[-3000:]}"
        )

    def cleanup(self) -> None:
        """Stop every process of the group and delete their folders."""
        self.sentinel.cleanup()
        for server in self.servers:
            server.cleanup()

    def __enter__(self) -> RedisSentinelGroup:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def _client_options(tls: ServerCertificate | None, timeout: float) -> dict:
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if tls:
        # The chain, not the name: a test may give a server a certificate for another host on
        # purpose (to see the portal refuse it), and must still reach it itself.
        options |= {"ssl": True, "ssl_ca_certs": str(tls.ca_file), "ssl_check_hostname": False}
    return options


def _answers(client: redis.Redis) -> bool:
    try:
        with client:
            return bool(client.ping())
    except redis.RedisError:
        return False
