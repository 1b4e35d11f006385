"""`make run`: a throwaway demo directory on 127.0.0.1 and the portal in front of it.

Ctrl-C (or SIGTERM) stops the portal and the directory and deletes the directory's temp folder;
so does the directory stopping on its own (exit status 1 then), since the demo would only answer
503 from then on. PORTAL_DEV_PORT chooses the portal's port (default 5000).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading

from .testing.slapd import Slapd, SlapdMissing


def main() -> int:
    """Start the demo directory, serve the portal until interrupted, then clean up."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Also SIGINT: a shell script that starts `make run &` passes SIGINT on as "ignored".
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    typed = os.environ.get("PORTAL_DEV_PORT", "5000")
    if not (typed.isascii() and typed.isdigit()) or not 0 < int(typed) < 65536:
        print(f"PORTAL_DEV_PORT={typed} is no port: give a number such as 5001 "
              "(PORTAL_DEV_PORT=5001 make run)", file=sys.stderr, flush=True)  # fmt: skip
        return 2
    port = int(typed)
    if not _port_free(port):
        # Said before anything starts: Werkzeug would say it after the banner and a traceback.
        print(f"Port {port} is in use by another program: start on another one, e.g. "
              f"PORTAL_DEV_PORT={port + 1} make run", file=sys.stderr, flush=True)  # fmt: skip
        return 2
    slapd = Slapd()
    stopping, died = threading.Event(), threading.Event()
    try:
        slapd.start()
        threading.Thread(target=_watch_directory, args=(slapd, stopping, died), daemon=True,
                         name="demo-directory").start()  # fmt: skip
        os.environ["PORTAL_LDAP_URLS"] = json.dumps([slapd.url])
        # The demo directory's dev-only secrets and plain-HTTP cookies are for development only.
        os.environ.setdefault("PORTAL_ENV", "development")
        from . import create_app

        app = create_app()
        print(
            f"Demo directory at {slapd.url}; portal at http://127.0.0.1:{port}/ (Ctrl-C stops)",
            flush=True,
        )
        print(
            "Demo accounts: see README.md (alice / alice-secret, erin / erin-secret, ...)",
            flush=True,
        )
        urls = os.environ["PORTAL_LDAP_URLS"]
        print(f"Operator commands against this demo, e.g.: PORTAL_ENV=development "
              f"PORTAL_LDAP_URLS='{urls}' .venv/bin/portal whois alice", flush=True)  # fmt: skip
        # Revocation and group changes are seen within seconds: try them on the demo directory.
        # Whole lines to paste: the change itself goes to ldapmodify's input.
        tool = f"ldapmodify -x -H {slapd.url} -D '{slapd.root_dn}' -w '{slapd.root_password}'"
        for verb, kind in (("Suspend alice (her sign-ins end within seconds)", "add"),
                           ("Lift it (she signs in again)", "delete")):  # fmt: skip
            change = (
                "dn: cn=suspended,ou=groups,dc=example,dc=org\\nchangetype: modify\\n"
                f"{kind}: member\\nmember: uid=alice,ou=people,dc=example,dc=org\\n"
            )
            print(f"{verb}: printf '{change}' | {tool}", flush=True)
        app.run(host="127.0.0.1", port=port, use_reloader=False)
    except SlapdMissing as error:
        print(error, file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        stopping.set()
        # A second Ctrl-C (or the directory's end, said a moment late) must not cut the
        # clean-up short, leaving slapd and its folder behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        slapd.cleanup()
        print("Stopped the portal and the demo directory.", flush=True)
    return 1 if died.is_set() else 0


#: How long a directory that ended cleanly waits for this process's own stop before it is
#: taken for one that stopped by itself.
_CLEAN_EXIT_GRACE_SECONDS = 2.0


def _watch_directory(slapd: Slapd, stopping: threading.Event, died: threading.Event) -> None:
    # The demo directory ended by itself (killed, crashed): say so and stop, rather than serve
    # a portal whose every sign-in answers 503 with nothing on the terminal to say why.
    status = slapd.process.wait()
    # slapd ends cleanly (0) on the Ctrl-C the terminal sends the whole group, which may reach
    # it before this process has begun to stop: then the stop follows at once.
    if stopping.wait(_CLEAN_EXIT_GRACE_SECONDS if status == 0 else 0):
        return
    died.set()
    print(f"The demo directory stopped on its own (exit status {status}): stopping the portal "
          "too; `make run` starts both afresh.", file=sys.stderr, flush=True)  # fmt: skip
    os.kill(os.getpid(), signal.SIGINT)


def _port_free(port: int) -> bool:
    try:
        with socket.create_server(("127.0.0.1", port)):
            return True
    except OSError:
        return False


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
