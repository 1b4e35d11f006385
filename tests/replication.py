"""Two OpenLDAP providers replicating to each other (multi-provider syncrepl), one direction
through a relay a test can pause: a replication link that stalls, then catches up with changes
that carry the older stamps of the moment they were made."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from portal.testing.slapd import Slapd
from tests.conftest import start_slapd
from tests.servers import require_binary

SYNCREPL = """\
overlay syncprov
syncrepl rid={rid:03d}
  provider=ldap://127.0.0.1:{port}
  bindmethod=simple
  binddn="{root_dn}"
  credentials={password}
  searchbase="{suffix}"
  type=refreshAndPersist
  retry="1 +"
multiprovider on
"""


class Relay:
    """A TCP relay to 127.0.0.1:target whose traffic can be held (pause) and let go (resume):
    a link that stalls without closing, as a congested or partitioned network does."""

    def __init__(self, target: int):
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self) -> None:
        """Hold every byte from now on, in both directions, connections kept open."""
        self._flowing.clear()

    def resume(self) -> None:
        """Pass what was held, and what comes next."""
        self._flowing.set()

    def close(self) -> None:
        """Close the listener and every relayed connection."""
        self._closed = True
        self._flowing.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the target is not up (yet): as a refused connection
                client.close()
                continue
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class ProviderPair:
    """Providers `a` (seeded with the demo tree) and `b` (filled by replication from a), each
    replicating the other's changes; b's changes reach a through `relay`."""

    def __init__(self, tmp_path: Path):
        require_binary("slapd", "apt-get install slapd ldap-utils")
        empty = tmp_path / "empty.ldif"
        empty.write_text("")
        self.a = Slapd(global_config="serverID 1", modules=["syncprov"])
        self.b = Slapd(ldif_files=[empty], global_config="serverID 2", modules=["syncprov"])
        self.relay = Relay(self.b.port)
        self.a.extra_config = _syncrepl(2, self.relay.port, self.b)
        self.b.extra_config = _syncrepl(1, self.a.port, self.a)

    def __enter__(self) -> ProviderPair:
        self.a.start()
        try:
            self.b.start()
        except BaseException:
            self.a.cleanup()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.relay.close()
        self.b.cleanup()
        self.a.cleanup()


def _syncrepl(rid: int, port: int, provider: Slapd) -> str:
    return SYNCREPL.format(rid=rid, port=port, root_dn=provider.root_dn,
                           password=provider.root_password, suffix=provider.suffix)  # fmt: skip


__all__ = ["ProviderPair", "Relay", "start_slapd"]
