"""A throwaway OpenLDAP server on 127.0.0.1, seeded from LDIF, for tests and `make run`.

It runs the Debian `slapd` binary as the current user from a temporary folder: no root, no
system configuration touched, nothing left behind after `stop()`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

from .process import ChildServer, accepts_connections

SUFFIX = "dc=example,dc=org"
ROOT_DN = "cn=admin,dc=example,dc=org"
FIXTURES = Path(__file__).resolve().parents[2] / "ldap_fixtures"
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])

_CONFIG = """\
# Modules first: moduleload needs modulepath, and a module may define schema (ppolicy does).
modulepath {module_dir}
moduleload back_mdb
{module_loads}
{schema_includes}
{global_config}
pidfile {work}/slapd.pid
argsfile {work}/slapd.args

database mdb
maxsize {max_size}
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_pw_hash}
directory {work}/db
index objectClass eq
index uid,cn,memberUid eq
index member eq

# Passwords are only compared by a bind (or changed by their owner); nobody may read them.
access to attrs=userPassword
  by self =wx
  by anonymous auth
  by * none
# The portal's service account may read the tree; users may read their own entry.
access to *
  by dn.exact="{service_dn}" read
  by self read
{users_read}  by * none
{extra_config}

# Operation and connection counters, read by tests to count what the portal asked of slapd.
database monitor
access to *
  by dn.exact="{root_dn}" read
  by * none
"""


class SlapdMissing(RuntimeError):
    """The slapd or ldap-utils binaries are not installed."""


def find_binary(name: str) -> str | None:
    """Return the path of an OpenLDAP binary, looking in sbin folders too."""
    return shutil.which(name, path=_SEARCH_PATH)


_PORTS_HANDED_OUT: set[int] = set()


def _ephemeral_port_range() -> tuple[int, int]:
    """The ports the kernel gives the local end of outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    Chosen outside the kernel's range for outgoing connections: a port the kernel picked
    (bind to 0) can become the local end of some client's connection, to a server started
    a moment earlier, before the server meant to listen on it binds ("Address already in
    use"). No port is handed out twice by one process.
    """
    low, high = _ephemeral_port_range()
    # The wider of the stretches below and above that range (above it on a machine whose
    # outgoing range starts low).
    choices = max(range(10000, low), range(high + 1, 65536), key=len)
    for _ in range(1000 if choices else 0):
        port = random.choice(choices)  # noqa: S311 (a port number, not a secret)
        if port in _PORTS_HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port on 127.0.0.1 outside {low}-{high}, the outgoing range")


def ssha(password: str) -> str:
    """Return an {SSHA} hash of password, the form slapd accepts in rootpw and userPassword."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


class Slapd(ChildServer):
    """Start, seed, change and stop one throwaway slapd.

    With no arguments it serves the demo tree (`ldap_fixtures/*.ldif`) under dc=example,dc=org.
    portal/testing/trees.py builds other shapes (Active Directory-like, memberOf overlay,
    password policy) from the keyword-only options:

    suffix: the database suffix; the root DN is `cn=admin,<suffix>`.
    service_dn: the one account the ACL lets read the whole tree (default
        `cn=portal-reader,ou=services,<suffix>`).
    schemas: extra schema files, included after core, cosine, nis and inetorgperson.
    modules: extra modules from /usr/lib/ldap (e.g. "memberof", "ppolicy"), loaded before
        any schema, so their overlays can be named in extra_config.
    post_start_ldif: LDIF files added with ldapadd as the root DN once slapd answers, on the
        first start only: entries that overlays must see being written (memberOf is kept only
        for changes made through the server, never for slapadd).
    max_size: how large the database may grow, in bytes (32 MiB; more for generated trees).
    """

    log_name = "slapd.log"

    def __init__(
        self,
        ldif_files=None,
        port: int | None = None,
        extra_config: str = "",
        global_config: str = "",
        tls_files: tuple[Path, Path] | None = None,
        *,
        suffix: str = SUFFIX,
        service_dn: str | None = None,
        schemas=(),
        modules=(),
        post_start_ldif=(),
        users_may_read: bool = False,
        max_size: int = 32 << 20,
    ):
        super().__init__("portal-slapd-")
        # Let every signed-in person read the tree, as many directories do (the default is
        # stricter: only the service account and each person's own entry).
        self.users_may_read = users_may_read
        self.ldif_files = [Path(p) for p in (ldif_files or sorted(FIXTURES.glob("*.ldif")))]
        self.port = port or free_port()
        self.extra_config = extra_config  # appended to the database section
        self.global_config = global_config  # placed before it (e.g. "allow bind_anon_dn")
        # (certificate, key): also serve ldaps:// on a second port.
        self.tls_files = tls_files
        self.ldaps_port = free_port() if tls_files else None
        self.suffix = suffix
        self.root_dn = f"cn=admin,{suffix}"  # ROOT_DN for the default suffix
        self.root_password = secrets.token_urlsafe(16)
        self.service_dn = service_dn or f"cn=portal-reader,ou=services,{suffix}"
        self.schemas = [Path(p) for p in schemas]
        self.modules = list(modules)
        self.post_start_ldif = [Path(p) for p in post_start_ldif]
        self.max_size = max_size  # bytes the database may grow to (mdb maxsize)

    @property
    def url(self) -> str:
        """The ldap:// URL clients use to reach this server."""
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        """The ldaps:// URL, when the server was given TLS files."""
        if not self.ldaps_port:
            raise ValueError("this slapd was started without tls_files")
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    def start(self, timeout: float = 15.0) -> Slapd:
        """Write the config, load the LDIF (first start only) and wait until slapd answers."""
        slapd, slapadd = find_binary("slapd"), find_binary("slapadd")
        if not slapd or not slapadd or not find_binary("ldapmodify"):
            raise SlapdMissing(
                "OpenLDAP is not installed: run `sudo apt-get install slapd ldap-utils`"
            )
        config = self.work / "slapd.conf"
        first_start = not config.exists()
        if first_start:
            self._write_config(config)
            self._load(slapadd, config)
        listeners = f"{self.url}/" + (f" {self.ldaps_url}/" if self.tls_files else "")
        command = [slapd, "-f", str(config), "-h", listeners, "-d", "0"]
        self.launch(command, lambda: accepts_connections(self.port), timeout)
        self._readings = 0  # counters() readings since this start (slapd counts from zero)
        if first_start and self.post_start_ldif:
            try:
                for path in self.post_start_ldif:
                    self.add(path.read_text())
            except BaseException:  # a half-seeded tree is of no use: leave no child behind
                self.stop()
                raise
        return self

    def modify(self, ldif: str) -> None:
        """Apply an LDIF change as the root DN with ldapmodify, as an administrator would."""
        self._ldap_tool("ldapmodify", ldif)

    def add(self, ldif: str) -> None:
        """Add entries as the root DN with ldapadd."""
        self._ldap_tool("ldapadd", ldif)

    def delete(self, dn: str) -> None:
        """Delete one entry as the root DN with ldapdelete."""
        self._ldap_tool("ldapdelete", None, dn)

    def counters(self) -> dict[str, int]:
        """Return slapd's own counts since it started (cn=Monitor): "connections" accepted
        and completed "bind" and "search" operations, this reading's own bind and search left
        out, so differences between two readings are what others asked."""
        command = [find_binary("ldapsearch") or "ldapsearch", "-x", "-LLL", "-H", self.url]
        command += ["-D", self.root_dn, "-w", self.root_password, "-b", "cn=Monitor"]
        command += ["(|(cn=Total)(cn=Bind)(cn=Search))", "monitorCounter", "monitorOpCompleted"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"ldapsearch of cn=Monitor failed: {result.stderr.strip()}")
        found: dict[str, int] = {}
        for block in result.stdout.strip().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            dn = lines.get("dn", "")
            if dn == "cn=Total,cn=Connections,cn=Monitor":
                found["connections"] = int(lines["monitorCounter"])
            elif dn == "cn=Bind,cn=Operations,cn=Monitor":
                found["bind"] = int(lines["monitorOpCompleted"])
            elif dn == "cn=Search,cn=Operations,cn=Monitor":
                found["search"] = int(lines["monitorOpCompleted"])
        # Counted so far: every earlier reading's connection, bind and search, and this
        # reading's connection and bind (its search is still running).
        self._readings += 1
        found["connections"] -= self._readings
        found["bind"] -= self._readings
        found["search"] -= self._readings - 1
        return found

    def _ldap_tool(self, tool: str, stdin: str | None, *args: str) -> None:
        command = [find_binary(tool) or tool, "-x", "-H", self.url, "-D", self.root_dn]
        command += ["-w", self.root_password, *args]
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}")

    def _write_config(self, config: Path) -> None:
        (self.work / "db").mkdir()
        schemas = [f"/etc/ldap/schema/{name}.schema" for name in SCHEMAS] + self.schemas
        includes = "\n".join(f"include {path}" for path in schemas)
        module_loads = "\n".join(f"moduleload {name}" for name in self.modules)
        global_config = self.global_config
        if self.tls_files:
            cert, key = self.tls_files
            global_config += f"\nTLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n"
        config.write_text(
            _CONFIG.format(
                schema_includes=includes,
                module_dir="/usr/lib/ldap",
                module_loads=module_loads,
                work=self.work,
                suffix=self.suffix,
                root_dn=self.root_dn,
                service_dn=self.service_dn,
                root_pw_hash=ssha(self.root_password),
                extra_config=self.extra_config,
                global_config=global_config,
                users_read="  by users read\n" if self.users_may_read else "",
                max_size=self.max_size,
            )
        )

    def _load(self, slapadd: str, config: Path) -> None:
        ldif = "\n".join(path.read_text() for path in self.ldif_files)
        result = subprocess.run(
            [slapadd, "-f", str(config), "-q"],
            input=ldif,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"slapadd failed: {result.stderr.strip()}")
