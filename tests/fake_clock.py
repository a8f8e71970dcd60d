"""A clock for tests (importer.clock.Clock): every sleep and wait returns at once, having moved the time on by
what it was asked, so that a window of minutes is waited out in an instant and each wait is on record."""

from __future__ import annotations

import threading


class FakeClock:
    def __init__(self, *, now: float = 1_800_000_000.0, boot: str | None = "this-boot", up: float = 5_000.0) -> None:
        self.mono = 1_000.0
        self.wall = now  # the wall clock may be stepped on its own (`step_wall`), as NTP or a user does
        self.boot_id = boot  # None: no clock since boot (not Linux)
        self.up = up
        self.sleeps: list[float] = []  # every sleep and wait asked for, in order
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.mono

    def now(self) -> float:
        with self._lock:
            return self.wall

    def boot(self) -> tuple[str, float] | None:
        with self._lock:
            return None if self.boot_id is None else (self.boot_id, self.up)

    def advance(self, seconds: float) -> None:
        """Time passes: on every clock alike."""
        with self._lock:
            self.mono += seconds
            self.wall += seconds
            self.up += seconds

    def step_wall(self, seconds: float) -> None:
        """The wall clock alone is set forward (or back)."""
        with self._lock:
            self.wall += seconds

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
        self.advance(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.sleep(seconds)
        return event.is_set()
