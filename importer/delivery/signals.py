"""Ctrl-C, SIGTERM and SIGHUP during an upload: the first stops the sending, later ones wait for the workbook."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType


@contextmanager
def patient_interrupts(say: Callable[[str], None]) -> Iterator[Callable[[], None]]:
    """The first Ctrl-C stops the upload (KeyboardInterrupt); later ones only say that it is finishing, so the
    batches on the wire are settled and the results workbook is written. Once the writing has begun (the
    callable given), every Ctrl-C is one of those: stopping then would lose the new ids of the rows sent
    (the journal would give them back on a re-run, but the user asked to stop, not to lose the workbook).
    Only the main thread gets signals."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    # What the user sees through a terminal: when it hangs up (SIGHUP: the ssh connection dropped, the window
    # closed), writing to it would fail, and the run must still settle and write its workbook in silence.
    ttys = [fd for fd in (1, 2) if _isatty(fd)]

    def later(signum: int, frame: FrameType | None) -> None:
        if signum == _SIGHUP:
            _hung_up(ttys)
        say("finishing: settling what was sent and writing the results workbook (Ctrl-C is ignored until then)")

    # SIGHUP ignored when the run began (nohup) stays ignored: the user asked for the run to outlive the terminal.
    # (SIGINT is taken even so: a shell ignores it for its background jobs, where only a `kill -INT` by hand
    # reaches them, which asks for the stop.)
    taken = [s for s in _STOPPING if s != _SIGHUP or signal.getsignal(s) is not signal.SIG_IGN]

    def writing() -> None:
        for signum in taken:
            signal.signal(signum, later)

    def first(signum: int, frame: FrameType | None) -> None:
        if signum == _SIGHUP:
            _hung_up(ttys)
        writing()
        raise KeyboardInterrupt

    # SIGTERM (`timeout`, systemd, Kubernetes stopping a job) as Ctrl-C: settle, write, exit 130, so a stopped job
    # still leaves its workbook and JSON; a later one waits for the workbook as well. SIGHUP the same: by default
    # it would end the run as kill -9 does, leaving no workbook and a re-run to wait out the window of the
    # requests it left in flight.
    previous = {signum: signal.signal(signum, first) for signum in taken}
    try:
        yield writing
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


_SIGHUP = getattr(signal, "SIGHUP", None)  # not on Windows
_STOPPING = [signal.SIGINT, signal.SIGTERM, *([_SIGHUP] if _SIGHUP is not None else [])]


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _hung_up(ttys: Sequence[int]) -> None:
    """The terminal is gone: what would have been written to it goes nowhere (as under nohup), instead of
    failing with EIO in the middle of settling. Output to a file or a pipe is kept, and so is a terminal that
    still answers (a `kill -HUP` by hand): a hung-up one fails isatty's question (EIO)."""
    gone = [fd for fd in ttys if not _isatty(fd)]
    if not gone:
        return
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in gone:
            os.dup2(devnull, fd)
        os.close(devnull)
