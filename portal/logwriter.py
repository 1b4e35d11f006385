"""Log lines written to standard error by a thread of their own, never by a request.

A write to a pipe whose reader has stalled (a log shipper that stopped reading) blocks until it
reads again; written by the requests themselves, the first audit line past the pipe's buffer
held its request, the next held logging's lock, and within seconds every thread of every
worker waited: no page, no /auth/verify, no 503. Here a request only formats its line and puts
it in a bounded queue; one thread per process writes. When the destination stalls, the queue
fills and further lines are dropped, and when it refuses writes (a full disk) they are lost:
either way counted (`portal_log_lines_lost_total`, the status page), never waited for.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import sys
import threading
import time
from typing import TextIO

from . import metrics

#: Lines kept for the writer while the destination is slow: about 3 MB of lines.
QUEUE_LINES = 10_000
#: How long a stopping process waits for its last lines to be written.
EXIT_WAIT_SECONDS = 5.0


class Writer:
    """The queue of formatted lines and the thread that writes each to its stream."""

    def __init__(self, size: int = QUEUE_LINES) -> None:
        self.size = size
        self.lines: queue.Queue[tuple[TextIO, str]] = queue.Queue(size)
        self.lost = {"stalled": 0, "unwritable": 0}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def put(self, line: str, stream: TextIO) -> None:
        """Queue a line for writing to `stream`, or count it lost when the queue is full."""
        self._ensure_thread()
        try:
            self.lines.put_nowait((stream, line))
        except queue.Full:
            self._count("stalled")

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the queued lines to be written; True if they were."""
        deadline = time.monotonic() + timeout
        while self.lines.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.lines.unfinished_tasks

    def _ensure_thread(self) -> None:
        # Started on the first line, and again in a forked child (threads do not survive a
        # fork: a worker forked from a master that had logged must write its own lines), or
        # should it ever have ended.
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                if self._pid and self._pid != os.getpid():
                    # A child: the parent's queue and counts are not this process's (a thread
                    # that ended here leaves its queue to the next one, lines and counts kept).
                    self.lines = queue.Queue(self.size)
                    self.lost = {"stalled": 0, "unwritable": 0}
                self._thread = threading.Thread(target=self._run, name="portal-log", daemon=True)
                self._thread.start()
                self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            stream, line = self.lines.get()
            try:
                stream.write(line + "\n")
                stream.flush()
            except Exception:  # noqa: BLE001 - a full disk, a closed stream: never the end
                self._count("unwritable")
            finally:
                self.lines.task_done()

    def _count(self, reason: str) -> None:
        with self._lock:  # request threads count drops at once
            self.lost[reason] += 1
        metrics.log_line_lost(reason)


_writer = Writer()
atexit.register(lambda: _writer.drain(EXIT_WAIT_SECONDS))
# A lock another thread held at the fork would never be let go in the child.
os.register_at_fork(after_in_child=lambda: setattr(_writer, "_lock", threading.Lock()))


class QueuedStreamHandler(logging.Handler):
    """A logging handler that formats a record and leaves the writing of it to `stream` (as
    logging.StreamHandler: standard error when it was created, unless given) to the writer
    thread."""

    def __init__(self, stream: TextIO | None = None, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.stream = sys.stderr if stream is None else stream

    def emit(self, record: logging.LogRecord) -> None:
        """Format the record here (its arguments are this moment's) and queue the line."""
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own rule: a bad record never raises
            # Said through the writer too: logging's own report would write to standard
            # error from this thread, the very write that may block.
            line = f"--- a log line of {record.name} could not be formatted: {record.msg!r}"
        _writer.put(line, self.stream)


def queue_console_handlers(logger: logging.Logger) -> None:
    """Give `logger`'s handlers that write to standard output or error (gunicorn's access and
    error logs with "-") to the writer thread, with their format and level: a worker thread
    writing its access line to a stalled pipe held the next request as surely as an audit
    line."""
    for handler in list(logger.handlers):
        if type(handler) is not logging.StreamHandler:
            continue  # files and the rest are left as they are
        if handler.stream not in (sys.stdout, sys.stderr):
            continue
        queued = QueuedStreamHandler(handler.stream, handler.level)
        queued.setFormatter(handler.formatter)
        for log_filter in handler.filters:
            queued.addFilter(log_filter)
        logger.removeHandler(handler)
        logger.addHandler(queued)


def lines_lost() -> dict[str, int]:
    """Lines this process could not write since it started: {"stalled": n, "unwritable": n}."""
    return dict(_writer.lost)


def drain(timeout: float = EXIT_WAIT_SECONDS) -> bool:
    """Wait for the lines queued so far to be written (tests, and a process about to stop)."""
    return _writer.drain(timeout)
