"""Log lines are written by a thread of their own: a destination that stalls or refuses
writes costs lines (counted), never a request's time (tests/test_gunicorn.py runs it for real
under gunicorn)."""

from __future__ import annotations

import contextlib
import os
import time

import pytest

from portal import logwriter


def test_a_stalled_destination_drops_and_counts_lines_past_the_queue():
    """The reader of standard error stops: the writer waits on its write, three lines wait in
    a queue of three, and the fourth and fifth are dropped and counted at once (the caller
    returns); once the reader reads again, the queued lines are written."""
    import fcntl

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)  # F_SETPIPE_SZ: one page (64 KiB on some kernels)
    stalled = os.fdopen(write_end, "w")
    writer = logwriter.Writer(size=3)
    big = "x" * 70_000  # more than the pipe holds: the write blocks until read
    writer.put(big, stalled)
    while writer.lines.qsize():  # readiness poll: the writer took it, blocked writing it
        time.sleep(0.001)
    for number in range(5):
        writer.put(f"line {number}", stalled)
    assert writer.lost == {"stalled": 2, "unwritable": 0}
    received = b""
    while b"line 2\n" not in received:
        received += os.read(read_end, 65536)
    assert received.endswith(b"line 0\nline 1\nline 2\n")
    assert writer.drain(10)
    stalled.close()
    os.close(read_end)


def test_a_full_disk_counts_the_lines_it_refused():
    """Standard error is /dev/full (every write fails with "no space left"): each line is
    counted as unwritable (Python's logging printed its error to the same full stream, and
    nothing said the audit trail was being lost)."""
    full = open("/dev/full", "w")  # noqa: SIM115 - closed below, its last flush failing too
    writer = logwriter.Writer()
    for number in range(3):
        writer.put(f"audit line {number}", full)
    assert writer.drain(10)
    assert writer.lost == {"stalled": 0, "unwritable": 3}
    with contextlib.suppress(OSError):
        full.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_thread_that_ended_is_replaced_with_its_lines_and_counts_kept():
    """A stream whose write ends the writer thread (SystemExit, which no except clause of
    the writer takes): the next line starts another thread, which writes the lines still
    queued and keeps the counts (the restart emptied the queue and the counts, as after a
    fork)."""
    import io

    class Ending(io.StringIO):
        def write(self, text):
            raise SystemExit

    writer = logwriter.Writer()
    writer.put("ends the thread", Ending())
    while writer._thread.is_alive():  # readiness poll: the thread took the line and ended
        time.sleep(0.001)
    writer.lost["unwritable"] = 1  # as if a line had been refused before
    kept = io.StringIO()
    writer.lines.put_nowait((kept, "queued while no thread ran"))
    writer.put("written by the next thread", kept)
    assert writer.drain(10)
    assert kept.getvalue() == "queued while no thread ran\nwritten by the next thread\n"
    assert writer.lost["unwritable"] == 1
