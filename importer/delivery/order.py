"""The order in which an upload sends its batches, so that two uploads of one schedule racing from two machines
split the work instead of sending the same batches at the same moment.

Each batch's keys are looked up right before it leaves (upload.py): a batch that another upload has already sent
is found and not sent again. That only helps if the two are not in step. Two uploads that start together in file
order send batch 1 at the same moment, look it up at the same moment, find nothing, and create every row twice.
So each upload starts at its own point of the ring of batches, taken from its mark (a random hex string), goes
round it, and turns back once when it finds another upload's rows, so that the two work towards each other
instead of one trailing the other. Where they meet, a few batches on the wire on both sides may be sent twice;
converge.py deletes those copies after the sending.
"""

from __future__ import annotations

import threading
import zlib


def start(count: int, mark: str) -> int:
    """The batch an upload marked `mark` sends first, of `count` (the first one for an unmarked upload)."""
    return zlib.crc32(mark.encode()) % count if mark and count else 0


class Ring:
    """The batches of a plan, by number, each handed out once: `take()` from the thread that dispatches them,
    `turn()` from the sending threads."""

    def __init__(self, count: int, mark: str) -> None:
        self.count = count
        self._free = [True] * count
        self._left = count
        self._cursor = start(count, mark)
        self._step = 1
        self._turned = False
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """The next batch to send, or None when every batch has been handed out."""
        with self._lock:
            if not self._left:
                return None
            index = self._cursor
            while not self._free[index]:
                index = (index + self._step) % self.count
            self._free[index] = False
            self._left -= 1
            self._cursor = (index + self._step) % self.count
            return index

    def turn(self, index: int) -> None:
        """Batch `index` held rows another upload had sent: from now on go the other way round from it (once:
        after turning, the two uploads are heading for each other)."""
        with self._lock:
            if self._turned:
                return
            self._turned = True
            self._step = -self._step
            self._cursor = (index + self._step) % self.count
