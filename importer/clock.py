"""The clocks the importer waits by, as one object handed down from `Settings`, so that a caller (a test) can
run a window of minutes in an instant without touching the process's own `time` module."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    """What the importer reads the time from and waits with."""

    def monotonic(self) -> float:
        """Seconds on a clock that no clock change moves (deadlines, windows)."""
        ...

    def now(self) -> float:
        """Seconds since the epoch (the wall clock written in the journal and ledger)."""
        ...

    def boot(self) -> tuple[str, float] | None:
        """This boot's id and the seconds since it began, suspends included, or None where there is no such
        clock: unlike the wall clock, no NTP step or clock change moves it, but it means something only in the
        boot it was read in."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait `seconds` or until `event` is set, whichever comes first; whether it was set."""
        ...


class SystemClock:
    """The real clocks: `time.monotonic`, `time.time`, `time.sleep`, and an event's own timed wait."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> float:
        return time.time()

    def boot(self) -> tuple[str, float] | None:
        clock = getattr(time, "CLOCK_BOOTTIME", None)
        ident = boot_id()
        return (ident, time.clock_gettime(clock)) if clock is not None and ident is not None else None

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


@functools.cache  # one per boot: read once
def boot_id() -> str | None:
    """This boot's id (Linux), or None."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except OSError:
        return None


SYSTEM_CLOCK = SystemClock()
