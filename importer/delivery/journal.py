"""An append-only record of each row's outcome as it arrives, so an interrupted upload resumes as if it never
stopped.

Kantata itself is the source of truth for *whether* a row exists (the look-up by import key); the journal adds
what Kantata cannot tell: that a milestone was created by *this* import, not an earlier one. Each batch is
journalled *before* it is sent (a kill during the request may still create it) and its created ids after. On
resume, rows this import sent that Kantata now has are reported `created` (not `unchanged`), so the final workbook
is the one an uninterrupted run would have written. A journal belongs to one schedule content and one results
path; it is removed when a run ends with every row settled, and kept (for the next run to resume from) when it
stops early.

Format: JSON lines, each write flushed; a batch's "sending" line is also fsynced before the batch goes out (at
most Settings.sending_ahead seconds before). It carries the wall-clock time and, on Linux, the boot id and the
seconds since boot: a resume in the same boot times its wait by that clock, which no clock change moves. A
"left" line (flushed) follows as the request leaves: in the same boot, a row journalled with none never left, and a
resume does not wait for it (`tells_left`).
A "created" line is not fsynced: should it be lost (power loss), the row counts as in flight on resume, and the
look-up that settles in-flight rows finds it in Kantata at once, so nothing waits and nothing is sent twice.
Skipping that fsync, taken while the other threads wait, saves a slot's worth of time per answer. A torn last
line (power loss mid-write) is ignored. Writes from several sending threads are serialised by the journal's own
lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from importer.clock import SYSTEM_CLOCK, Clock
from importer.errors import ConfigError, JournalNotWritten
from importer.kantata import Item
from importer.outcomes import Outcome, Status
from importer.settings import Settings

# A batch's "sending" line is written (and fsynced) before its thread waits for a slot, so that the fsync
# overlaps the wait instead of holding the slot; a POST that leaves later than Settings.sending_ahead after its
# line writes a fresh one first. So every request leaves within that much of a "sending" line of its rows, and a
# resume waits that much longer than Settings.writes_until (connecting, then the server's own limit) for the
# requests of an interrupted run (delivery/settle.py). At answer times of seconds a spare thread's wait often
# passes it, and its batch is journalled twice, which costs one more line.
SENDING_AHEAD = Settings().sending_ahead  # the default, for callers that have no Settings

VERSION = 2  # 2: the digest hashes the validated rows column-wise (1 hashed each request body)


def clocks(clock: Clock) -> dict[str, Any]:
    """When a line is written: the wall clock, and in this boot the seconds since boot (with the boot's id)."""
    entry: dict[str, Any] = {"at": clock.now()}
    if (boot := clock.boot()) is not None:
        entry |= {"boot": boot[0], "up": boot[1]}
    return entry


def seconds_since(entry: dict[str, Any], clock: Clock) -> float:
    """Seconds since a line stamped by `clocks()`: by the clock since boot when it was written in this boot, so
    that a wall clock stepped forward (NTP, a user's change) does not cut short a wait for its requests, nor one
    stepped back lengthen it; else by the wall clock, and at least 0."""
    boot = clock.boot()
    if entry.get("up") is not None and boot is not None and entry.get("boot") == boot[0]:
        return max(0.0, boot[1] - float(entry["up"]))
    return max(0.0, clock.now() - float(entry.get("at") or 0))


def tells_left(entry: dict[str, Any], clock: Clock) -> bool:
    """Whether a "sending" line can be trusted to have a "left" line after it if its request left, so that
    without one it never left, and a resume need not wait for it (a kill -9 leaves a batch or two journalled
    ahead of their slot, and waiting out their window, Settings.writes_until, would cost every such resume minutes).

    A "left" line is written, flushed but not fsynced, before the request leaves (a write that fails stops it
    leaving). Flushed, it is in the kernel's cache: no kill of the process loses it, only a crash of the
    machine, which starts another boot. So the line is trusted only in the boot it was written in, and only
    from a version that writes "left" lines; else every request journalled counts as gone."""
    boot = clock.boot()
    return entry.get("tells") == "left" and boot is not None and entry.get("boot") == boot[0]


def _lock(fh: IO[str], path: Path) -> None:
    """One run per import at a time: two runs would both look the same keys up, find nothing, and both send."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; running one upload at a time is up to the user
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(
            f"another upload of this schedule to the same results workbook is running (it holds {path.name}); "
            "wait for it to finish, or stop it first"
        ) from None


def journal_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.journal.jsonl")


def schedule_digest(rows: pd.DataFrame, sent: Sequence[int]) -> str:
    """Identity of what is being imported: the validated rows (values, columns, row numbers) and which of them
    are sent (`sent`: their row numbers). Keys and bodies are made from exactly these (kantata/keys.py), so this
    names them as well as hashing every body would, and column-wise (pandas' hash_pandas_object) it costs a
    fraction of encoding each body, all of which would come before the first request could leave. Needing no
    body, it can be taken before they are built."""
    h = hashlib.sha256()
    h.update(json.dumps([VERSION, [str(c) for c in rows.columns], [str(t) for t in rows.dtypes]]).encode())
    h.update(pd.util.hash_pandas_object(rows, index=True).to_numpy().tobytes())
    h.update(np.asarray(sent, dtype=np.int64).tobytes())
    return h.hexdigest()


class Journal:
    def __init__(self, path: Path, digest: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = path
        self.clock = clock
        self.digest = digest
        self.sent_before: set[int] = set()  # rows an interrupted run of this same import sent (or created)
        self.in_flight: set[int] = set()  # of those, the ones whose answer it never saw
        self.last_sent: dict[str, Any] = {}  # its last "sending" line's clocks: its requests may still be running
        self._fh: IO[str] | None = None
        self._write_lock = threading.Lock()
        self._failed: JournalNotWritten | None = None  # a write failed: no batch may leave any more

    @classmethod
    def open(cls, path: Path, digest: str, clock: Clock = SYSTEM_CLOCK) -> Journal:
        """Resume the journal of the same import (`schedule_digest`) if there is one; otherwise start a new one."""
        journal = cls(path, digest, clock)
        try:
            fh = path.open("a", encoding="utf-8")  # not "w": another run may hold it, and must not lose it
        except OSError as exc:
            raise JournalNotWritten(path, exc, at_start=True) from None
        try:
            _lock(fh, path)
            journal.sent_before = journal._read_previous()
            if not journal.sent_before:
                fh.truncate(0)
            elif not journal.path.read_bytes().endswith(b"\n"):
                fh.write("\n")  # a torn last line: end it, or the next line would be glued to it and lost
            journal._fh = fh
            if not journal.sent_before:
                journal._write([{"kind": "start", "v": VERSION, "digest": journal.digest}])
        except BaseException as exc:
            journal._fh = None
            with contextlib.suppress(OSError):
                fh.close()
            if isinstance(exc, JournalNotWritten):  # the first line
                raise JournalNotWritten(path, exc.cause, at_start=True) from None
            if isinstance(exc, OSError):
                raise JournalNotWritten(path, exc, at_start=True) from None
            raise
        return journal

    def _read_previous(self) -> set[int]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return set()
        sent: set[int] = set()
        left: set[int] = set()  # rows a request of which left (or may have: see `untold`)
        untold: set[int] = set()  # rows of "sending" lines whose "left" lines cannot be trusted to tell
        created: set[int] = set()
        for number, line in enumerate(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn line from a crash mid-write
            if number == 0 and (entry.get("kind") != "start" or entry.get("digest") != self.digest):
                return set()  # another schedule, or another version of this one: start afresh
            kind = entry.get("kind")
            rows = [int(r) for r in entry.get("rows") or ()]
            if kind == "sending":
                sent.update(rows)
                if not tells_left(entry, self.clock):
                    untold.update(rows)
                # Lines are in the order written: the last one decides (a run on another machine may follow).
                self.last_sent = entry
            elif kind == "left":
                left.update(rows)
            elif kind == "unsent":
                sent.difference_update(rows)
                left.difference_update(rows)
                untold.difference_update(rows)
            elif kind == "outcome" and entry.get("status") == Status.CREATED.value:
                created.add(int(entry["row"]))
        went = sent & (left | untold)  # a row journalled that provably never left was not sent
        self.in_flight = went - created
        return went | created

    def sending(self, items: Sequence[Item]) -> None:
        """Called before a batch goes out (within Settings.sending_ahead): from then on, Kantata may hold these rows
        because of this import. Raises JournalNotWritten, once any write has failed: the batch must not leave,
        for a re-run would not know to wait for it (and a line after a torn one may be lost with it)."""
        if self._failed is not None:
            raise self._failed
        self._write([{"kind": "sending", "rows": [i.row for i in items], "tells": "left", **clocks(self.clock)}])

    def left(self, items: Sequence[Item]) -> None:
        """Called as a request of these rows leaves (`tells_left`); raises JournalNotWritten, and then the
        request must not leave."""
        self._write([{"kind": "left", "rows": [i.row for i in items]}], durable=False)

    def since_last_sent(self) -> float:
        """Seconds since the previous run's last "sending" line (`seconds_since`)."""
        return seconds_since(self.last_sent, self.clock)

    def withdrawn(self, items: Sequence[Item]) -> None:
        """Called when a stop cancelled rows whose every request so far was answered (429) or never left: they
        are not in Kantata, and a resumed run need not wait for them. (Unwritten, a resume waits for them.)"""
        with contextlib.suppress(JournalNotWritten):
            self._write([{"kind": "unsent", "rows": [i.row for i in items]}])

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Called as outcomes arrive; only what Kantata created matters for resuming."""
        entries = [{"kind": "outcome", "row": o.row, "status": o.status.value, "id": o.milestone_id}
                   for o in outcomes if o.status is Status.CREATED]  # fmt: skip
        if entries:  # see the module docstring: a lost one costs nothing, so a failure only stops the sending
            with contextlib.suppress(JournalNotWritten):
                self._write(entries, durable=False)

    def _write(self, entries: list[dict[str, Any]], *, durable: bool = True) -> None:
        text = "".join(json.dumps(e) + "\n" for e in entries)
        try:
            with self._write_lock:
                if self._failed is not None:
                    raise self._failed
                assert self._fh is not None
                self._fh.write(text)
                self._fh.flush()
                fd = self._fh.fileno()
            if durable:  # outside the lock: a "left" line, written while its request holds a slot, does not wait
                os.fsync(fd)  # for another batch's fsync
        except OSError as exc:  # a full disk, the folder made read-only: not a bug, so not exit 70
            with self._write_lock:
                self._failed = self._failed or JournalNotWritten(self.path, exc)
            raise self._failed from None

    def close(self, *, finished: bool) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):  # what a failed write left in the buffer fails again here
                self._fh.close()
            self._fh = None
        if finished:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
