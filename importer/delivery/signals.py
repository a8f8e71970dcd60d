"""Ctrl-C, SIGTERM and SIGHUP during an upload: the first stops the sending, later ones wait for the workbook.

A caller whose upload runs on another thread than the main one (a web page's Stop button) gets no signal there;
`StopSwitch` is its Ctrl-C: the same KeyboardInterrupt, raised in the thread that runs the upload, with the same
rule that once the results workbook is being written a press only waits for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType


class StopSwitch:
    """Ctrl-C for an upload running on a thread of the caller's choosing (`Settings.stop`): `press()` from any
    thread raises KeyboardInterrupt in the upload's thread, which then stops exactly as after a Ctrl-C (in-flight
    batches settled, the rest `not_sent`, the workbook written, exit 130, resumable). A press before the upload
    has begun sending stops it as soon as it begins; a press once the workbook is being written only waits.

    The exception is delivered between two steps of Python code, so a press lands when the thread next runs
    one: at the latest when the batch it is waiting for is answered (a Ctrl-C also interrupts the wait itself,
    which only the main thread's signals can do)."""

    __slots__ = ("_lock", "_pressed", "_say", "_thread", "_writing")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pressed = False
        self._writing = False
        self._thread: int | None = None
        self._say: Callable[[str], None] = lambda _: None

    @property
    def pressed(self) -> bool:
        return self._pressed

    def press(self) -> None:
        """Stop the upload as a Ctrl-C would; pressing again changes nothing."""
        with self._lock:
            first, self._pressed = not self._pressed, True
            if self._writing:
                self._say("finishing: settling what was sent and writing the results workbook")
            elif first and self._thread is not None:
                _raise_in(self._thread)

    def _arm(self, say: Callable[[str], None]) -> None:
        """The current thread runs the upload from now on; a press made before that stops it here."""
        with self._lock:
            self._thread, self._say, self._writing = threading.get_ident(), say, False
            pressed = self._pressed
        if pressed:
            raise KeyboardInterrupt

    def _writing_begins(self) -> None:
        with self._lock:
            self._writing = True

    def _disarm(self) -> None:
        """The upload is over: a press now reaches nothing (an exception left pending would hit the thread's
        next, unrelated work)."""
        with self._lock:
            self._thread = None
            self._writing = True


def _raise_in(thread: int) -> None:
    """KeyboardInterrupt in `thread`, as a signal raises it in the main thread (CPython's documented call)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(KeyboardInterrupt))


@contextmanager
def patient_interrupts(say: Callable[[str], None], stop: StopSwitch | None = None) -> Iterator[Callable[[], None]]:
    """The first Ctrl-C stops the upload (KeyboardInterrupt); later ones only say that it is finishing, so the
    batches on the wire are settled and the results workbook is written. Once the writing has begun (the
    callable given), every Ctrl-C is one of those: stopping then would lose the new ids of the rows sent
    (the journal would give them back on a re-run, but the user asked to stop, not to lose the workbook).
    Only the main thread gets signals; `stop` (any thread) is pressed by the caller instead, with the same rules."""
    if stop is not None:
        with _switched(stop, say) as pressed_late:
            if threading.current_thread() is not threading.main_thread():
                yield pressed_late
                return
            with patient_interrupts(say) as signalled:

                def both() -> None:
                    pressed_late()
                    signalled()

                yield both
        return
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    # What the user sees through a terminal: when it hangs up (SIGHUP: the ssh connection dropped, the window
    # closed), writing to it would fail, and the run must still settle and write its workbook in silence.
    ttys = [fd for fd in (1, 2) if _isatty(fd)]

    # Said by a thread of its own, handed the message on a SimpleQueue (whose put is safe in a signal handler):
    # the signal may have interrupted this thread halfway through writing to the same stream, which it cannot
    # write to again until that write is over (a "reentrant call" error), and starting a thread from the handler
    # could wait on a lock of `threading` that the interrupted code holds.
    said: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    sayer = threading.Thread(target=_say_each, args=(said, say), name="kantata-finishing")

    def later(signum: int, frame: FrameType | None) -> None:
        if signum == _SIGHUP:
            _hung_up(ttys)
        said.put(FINISHING)

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
    sayer.start()
    previous = {signum: signal.signal(signum, first) for signum in taken}
    try:
        yield writing
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        said.put(None)
        sayer.join()


def _say_each(said: queue.SimpleQueue[str | None], say: Callable[[str], None]) -> None:
    while (text := said.get()) is not None:
        with contextlib.suppress(OSError, ValueError):  # a courtesy: a stream gone or closed does not end the run
            say(text)


@contextmanager
def _switched(stop: StopSwitch, say: Callable[[str], None]) -> Iterator[Callable[[], None]]:
    stop._arm(say)
    try:
        yield stop._writing_begins
    finally:
        stop._disarm()


FINISHING = "finishing: settling what was sent and writing the results workbook (Ctrl-C is ignored until then)"
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
