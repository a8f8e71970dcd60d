"""How many requests may be in flight to Kantata at once, adapting to its rate limit.

Kantata publishes its rate limits only to customers and documents only "answer 429, retry after a small delay"
(`api-notes.md`). So the importer starts at a modest number of requests in flight and, like TCP's congestion
control (additive increase, multiplicative decrease), halves it when a 429 comes back and adds one back after
a run of successes, never above what the user allowed. Several requests in flight when a 429 burst arrives
halve the limit once, not once each: a 429 counts only for a request sent after the last decrease.

A 429's wait (Retry-After) is the whole client's: Kantata limits an account, not a request. While it lasts no
other request leaves, and when it ends the request that was told to wait goes first (`hold`): otherwise the
other threads' requests could take the allowance each time it comes back, and one request could be answered
429 until its tries run out (seen with the sandbox answering every 3rd request 429).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from importer.settings import MAX_CONCURRENCY, Settings

GROW_AFTER = 20  # successes in a row before one more request may be in flight
HOLD_GRACE = Settings().hold_grace  # the default: seconds the others wait past a hold for the held request


class Cancelled(Exception):
    """The run was stopped before this request went out: nothing was sent."""


class Limiter:
    """A semaphore whose size shrinks on 429 and grows back slowly; shared by every thread of one client."""

    def __init__(self, maximum: int, *, grow_after: int = GROW_AFTER, hold_grace: float = HOLD_GRACE) -> None:
        if not 1 <= maximum <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
        self.maximum = maximum
        self.limit = maximum
        self.lowest = maximum  # the lowest limit this run came down to, for the summary
        self.decreases = 0
        self._grow_after = grow_after
        self._hold_grace = hold_grace
        self._active = 0
        self._successes = 0
        self._generation = 0  # bumped at every decrease
        # No request but the holder's leaves before this (a 429's wait). By the real clock, time.monotonic, not
        # Settings.clock: the condition's timed waits that end a hold are real ones.
        self._held_until = 0.0
        self._holder: int | None = None  # the thread told to wait, until it takes its next slot
        self._cond = threading.Condition()

    @contextmanager
    def slot(self, cancelled: Callable[[], bool] | None = None) -> Iterator[int]:
        """Wait for room, hold it for one request; yields the generation the request was sent in. Raises
        Cancelled, sending nothing, when `cancelled()` becomes true while it waits (see `wake`)."""
        me = threading.get_ident()
        with self._cond:
            while True:
                if cancelled is not None and cancelled():
                    raise Cancelled
                if self._holder == me:  # back from its wait: it goes first, then the others may follow
                    self._holder = None
                    self._cond.notify_all()
                elif (held := self._held_until + (self._hold_grace if self._holder else 0.0) - time.monotonic()) > 0:
                    self._cond.wait(held)
                    continue
                if self._active < self.limit:
                    break
                self._cond.wait()
            self._active += 1
            generation = self._generation
        try:
            yield generation
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify()

    def hold(self, seconds: float) -> None:
        """The calling thread's request was answered 429 and waits `seconds` before its next try: no other
        request leaves meanwhile, nor before that try (`hold_grace` at most after the wait)."""
        with self._cond:
            self._held_until = max(self._held_until, time.monotonic() + seconds)
            self._holder = threading.get_ident()

    def wake(self) -> None:
        """Let every waiting request re-check whether it was cancelled."""
        with self._cond:
            self._cond.notify_all()

    def throttled(self, generation: int) -> None:
        """A request sent in `generation` was answered 429 (or 5xx: a server in distress)."""
        with self._cond:
            self._successes = 0
            if generation < self._generation or self.limit == 1:
                return  # this burst already halved the limit, or it cannot go lower
            self.limit = max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)
            self.decreases += 1
            self._generation += 1

    def succeeded(self) -> None:
        with self._cond:
            self._successes += 1
            if self.limit < self.maximum and self._successes >= self._grow_after:
                self.limit += 1
                self._successes = 0
                self._cond.notify()
