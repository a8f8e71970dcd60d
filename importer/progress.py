"""How a run reports its progress without printing: plain calls that a caller may turn into progress bars.

The library never prints. `run_validate` / `run_upload` take an `on_progress(stage, done, total)` callable; the
CLI draws a bar per stage from it, a script may log it or ignore it. Each stage starts with `done == 0` and,
when it runs to completion, ends with `done == total`. `total` is None while it is unknown. Calls come every
`CHUNK` rows (or once per batch while sending), never per row, so reporting costs nothing measurable; a stage
that stops early (Kantata unreachable) simply gets no more calls, and the next stage, or the return of the run,
closes it.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable

CHUNK = 5_000  # rows between two calls: ~20 updates for a 100k-row file, a start and an end for a small one


class Stage(enum.StrEnum):
    READ = "read"  # rows read from the file
    VALIDATE = "validate"  # rows whose cells were parsed and checked
    PREPARE = "prepare"  # rows given an import key and a request body
    LOOKUP = "lookup"  # import keys looked up in Kantata (upload only; start and end only)
    SEND = "send"  # rows to send that have an outcome (upload only)
    WRITE = "write"  # rows written to the results workbook


OnProgress = Callable[[Stage, int, int | None], None]
Tick = Callable[[int, int | None], None]  # one stage's progress: (done, total)


def for_stage(on_progress: OnProgress | None, stage: Stage) -> Tick | None:
    """The stage's own callable, so that a module reports (done, total) without knowing its stage's name."""
    if on_progress is None:
        return None

    def tick(done: int, total: int | None) -> None:
        on_progress(stage, done, total)

    return tick


class Ticker:
    """Calls `tick` at the start, then at most once per `chunk` units, then at the end: rows cost a compare."""

    __slots__ = ("_chunk", "_next", "_tick", "done", "total")

    def __init__(self, tick: Tick | None, total: int | None, *, chunk: int = CHUNK) -> None:
        self._tick = tick
        self._chunk = chunk
        self._next = chunk
        self.done = 0
        self.total = total
        if tick is not None:
            tick(0, total)

    def at(self, done: int) -> None:
        """`done` units so far; passed on when a chunk boundary was crossed (the last one is left to `end`)."""
        self.done = done
        if done >= self._next and self._tick is not None and (self.total is None or done < self.total):
            self._next = done + self._chunk
            self._tick(done, self.total)

    def end(self, done: int | None = None) -> None:
        """The stage is complete: `done` (default: the last count) is the exact total, whatever was estimated."""
        done = self.done if done is None else done
        self.done = self.total = done
        if self._tick is not None:
            self._tick(done, done)


class ProgressFeed:
    """A run's progress and stage messages kept for readers on other threads (a web page polling the server):
    pass the feed as `on_progress` and its `say` as `on_stage`, then read `snapshot()`, or `wait(seen)` for
    the next change. Thread-safe; it keeps the latest (done, total) per stage and the last `KEEP` messages."""

    KEEP = 50

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._stages: dict[Stage, tuple[int, int | None]] = {}
        self._messages: list[str] = []
        self._current: Stage | None = None
        self.version = 0  # bumped on every change

    def __call__(self, stage: Stage, done: int, total: int | None) -> None:
        with self._changed:
            self._stages[stage] = (done, total)
            self._current = stage
            self._bump()

    def say(self, text: str) -> None:
        with self._changed:
            self._messages = [*self._messages[-(self.KEEP - 1) :], text]
            self._bump()

    def _bump(self) -> None:
        self.version += 1
        self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """The version once it is past `seen`, or after `timeout` seconds, whichever comes first."""
        with self._changed:
            self._changed.wait_for(lambda: self.version > seen, timeout)
            return self.version

    def snapshot(self) -> dict[str, object]:
        """{"version", "stage" (the latest reported), "stages": {name: {"done", "total"}}, "messages"}."""
        with self._changed:
            return {
                "version": self.version,
                "stage": None if self._current is None else self._current.value,
                "stages": {s.value: {"done": d, "total": t} for s, (d, t) in self._stages.items()},
                "messages": list(self._messages),
            }
