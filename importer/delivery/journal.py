"""An append-only record of each row's outcome as it arrives, so an interrupted upload resumes as if it never
stopped.

Kantata itself is the source of truth for *whether* a row exists (the look-up by import key); the journal adds
what Kantata cannot tell: that a milestone was created by *this* import, not an earlier one. Each batch is
journalled *before* it is sent (a kill during the request may still create it) and its created ids after. On
resume, rows this import sent that Kantata now has are reported `created` (not `unchanged`), so the final workbook
is the one an uninterrupted run would have written. A journal belongs to one schedule content and one results
path; it is removed when a run ends with every row settled, and kept (for the next run to resume from) when it
stops early. A run of the schedule edited since does not resume it, but neither drops it: what it sent (each
row's key, and the ids it saw created) is carried into the new journal as "earlier" lines (`Earlier`), for the
run to find those milestones and update the rows edited since (handover.py).

Format: JSON lines, each write flushed. The "start" line names the import (its digest) and the mark it writes in
what it creates (kantata.marked), which a resume keeps. A batch's "sending" line is also fsynced before the batch
goes out (at most Settings.sending_ahead seconds before). It carries the wall-clock time and, on Linux, the boot id
and the seconds since boot: a resume in the same boot times its wait by that clock, which no clock change moves. A
"left" line (flushed) follows as the request leaves: in the same boot, a row journalled with none never left, and a
resume does not wait for it (`tells_left`). A "created" line is not fsynced: should it be lost (power loss), the
row counts as in flight on resume, and the look-up that settles in-flight rows finds it in Kantata at once, so
nothing waits and nothing is sent twice. Skipping that fsync, taken while the other threads wait, saves a slot's
worth of time per answer. A torn last line (power loss mid-write) is ignored. Writes from several sending threads
are serialised by the journal's own lock."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from filelock import lock_descriptor

from importer.clock import SYSTEM_CLOCK, Clock
from importer.errors import ConfigError, JournalNotWritten
from importer.kantata import ImportKey, Item
from importer.outcomes import Outcome, Status
from importer.settings import Settings

# A batch's "sending" line is written (and fsynced) before its thread waits for a slot, so that the fsync
# overlaps the wait instead of holding the slot; a POST that leaves later than Settings.sending_ahead after its
# line writes a fresh one first. So every request leaves within that much of a "sending" line of its rows, and a
# resume waits that much longer than Settings.writes_until (connecting, then the server's own limit) for the
# requests of an interrupted run (delivery/settle.py). At answer times of seconds a spare thread's wait often
# passes it, and its batch is journalled twice, which costs one more line.
SENDING_AHEAD = Settings().sending_ahead  # the default, for callers that have no Settings

VERSION = 3  # 3: "sending" lines carry each row's key; 2: the digest hashes the validated rows column-wise
DIGEST_VERSION = 2  # what the digest hashes, kept apart from the lines' format so a resume survives an upgrade


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
    """One run per import at a time: two runs would both look the same keys up, find nothing, and both send.
    filelock's primitive on the journal's own descriptor (flock on Unix, LockFileEx on Windows), held until the
    file is closed; the journal is read through that same descriptor, which Windows' lock would deny another."""
    if not lock_descriptor(fh.fileno(), blocking=False):
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
    h.update(json.dumps([DIGEST_VERSION, [str(c) for c in rows.columns], [str(t) for t in rows.dtypes]]).encode())
    h.update(pd.util.hash_pandas_object(rows, index=True).to_numpy().tobytes())
    h.update(np.asarray(sent, dtype=np.int64).tobytes())
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Earlier:
    """What an interrupted run of another version of this schedule (edited since) sent to the same results
    workbook: each row it sent, with its key (from a journal that records keys) and the id Kantata gave it (when
    the answer came), and the keys whose answer never came, which may still be being written until
    Settings.sending_ahead + Settings.writes_until after `last_sent`. The next run looks these up, so that a
    milestone the killed run made for a row edited since is that row's, updated, rather than a second one."""

    sent: tuple[tuple[int, ImportKey | None, str | None], ...]  # (row, key, id)
    in_flight: frozenset[ImportKey]
    last_sent: dict[str, Any]

    def line(self) -> dict[str, Any]:
        return {"kind": "earlier", "sent": [[row, _key_text(key), mid] for row, key, mid in self.sent],
                "in_flight": sorted(_key_text(k) for k in self.in_flight), "last": self.last_sent}  # fmt: skip

    @classmethod
    def of_line(cls, entry: dict[str, Any]) -> Earlier:
        sent = tuple((int(row), _key_of(key), None if mid is None else str(mid)) for row, key, mid in entry["sent"])
        in_flight = frozenset(k for t in entry.get("in_flight") or () if (k := _key_of(t)) is not None)
        return cls(sent, in_flight, dict(entry.get("last") or {}))


def _key_text(key: ImportKey | None) -> str | list[str] | None:
    """A key as a journal line holds it: a derived key by its reference alone (short: a 100k upload writes every
    key once), the user's own as its three parts."""
    if key is None:
        return None
    return key.ref if key.derived else list(key)


def _key_of(text: Any) -> ImportKey | None:
    if isinstance(text, str):
        return ImportKey.derived_from(text)
    if isinstance(text, list) and len(text) == 3:
        return ImportKey(*(str(t) for t in text))
    return None


@dataclass(slots=True)
class _Read:
    """One journal's lines, read: the rows whose request left (or may have), and of those the ones seen created."""

    went: set[int] = field(default_factory=set)
    created: dict[int, str | None] = field(default_factory=dict)
    keys: dict[int, ImportKey] = field(default_factory=dict)
    last_sent: dict[str, Any] = field(default_factory=dict)
    earlier: list[Earlier] = field(default_factory=list)

    @property
    def in_flight(self) -> set[int]:
        return self.went - set(self.created)

    def as_earlier(self) -> Earlier:
        rows = sorted(self.went | set(self.created))
        sent = tuple((row, self.keys.get(row), self.created.get(row)) for row in rows)
        in_flight = frozenset(k for row in self.in_flight if (k := self.keys.get(row)) is not None)
        return Earlier(sent, in_flight, dict(self.last_sent))


def _read_lines(lines: Sequence[str], clock: Clock) -> _Read:
    read = _Read()
    sent: set[int] = set()
    left: set[int] = set()  # rows a request of which left (or may have: see `untold`)
    untold: set[int] = set()  # rows of "sending" lines whose "left" lines cannot be trusted to tell
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a torn line from a crash mid-write
        kind = entry.get("kind")
        rows = [int(r) for r in entry.get("rows") or ()]
        if kind == "sending":
            sent.update(rows)
            if not tells_left(entry, clock):
                untold.update(rows)
            read.keys.update((row, key) for row, text in zip(rows, entry.get("keys") or (), strict=False)
                             if (key := _key_of(text)) is not None)  # fmt: skip
            # Lines are in the order written: the last one decides (a run on another machine may follow).
            read.last_sent = {k: entry[k] for k in ("at", "boot", "up") if k in entry}
        elif kind == "left":
            left.update(rows)
        elif kind == "unsent":
            sent.difference_update(rows)
            left.difference_update(rows)
            untold.difference_update(rows)
        elif kind == "outcome" and entry.get("status") == Status.CREATED.value:
            read.created[int(entry["row"])] = None if entry.get("id") is None else str(entry["id"])
        elif kind == "earlier":
            with contextlib.suppress(KeyError, TypeError, ValueError):
                read.earlier.append(Earlier.of_line(entry))
    read.went = sent & (left | untold)  # a row journalled that provably never left was not sent
    return read


@dataclass(slots=True)
class Previous:
    """What a journal tells the next run of `digest`: the rows an interrupted run of this same import sent (or
    created), those of them whose answer it never saw and its last "sending" line's clocks; and what interrupted
    runs of earlier versions of the schedule sent (`Earlier`, newest first)."""

    sent_before: set[int] = field(default_factory=set)
    in_flight: set[int] = field(default_factory=set)
    last_sent: dict[str, Any] = field(default_factory=dict)
    earlier: list[Earlier] = field(default_factory=list)
    mark: str = ""  # the mark the interrupted run of this same import wrote in what it created (kantata.marked)


def _previous(text: str, digest: str, clock: Clock) -> Previous:
    lines = text.splitlines()
    try:
        first = json.loads(lines[0]) if lines else {}
    except ValueError:
        first = {}
    if not isinstance(first, dict) or first.get("kind") != "start":
        return Previous()  # not a journal this version can read: start afresh
    read = _read_lines(lines[1:], clock)
    if first.get("digest") != digest:  # another version of this schedule: what it sent is looked up
        mine = read.as_earlier()
        return Previous(earlier=[*([mine] if mine.sent else []), *reversed(read.earlier)])
    mark = first.get("mark")
    return Previous(read.went | set(read.created), read.in_flight, read.last_sent, list(reversed(read.earlier)),
                    mark if isinstance(mark, str) else "")  # fmt: skip


def read_previous(path: Path, digest: str, clock: Clock = SYSTEM_CLOCK) -> Previous:
    """What `Journal.open(path, digest)` would read, read without opening the journal for writing, locking it
    or changing it: the dry run plans from it as the upload will. A journal that cannot be read (none, or one an
    upload holds where its lock bars reading) tells nothing."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return Previous()
    return _previous(text, digest, clock)


class Journal:
    def __init__(self, path: Path, digest: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = path
        self.clock = clock
        self.digest = digest
        self.sent_before: set[int] = set()  # rows an interrupted run of this same import sent (or created)
        self.in_flight: set[int] = set()  # of those, the ones whose answer it never saw
        self.last_sent: dict[str, Any] = {}  # its last "sending" line's clocks: its requests may still be running
        # What interrupted runs of earlier versions of this schedule sent (newest first), carried from journal to
        # journal until a run ends with every row settled.
        self.earlier: list[Earlier] = []
        # The mark this import writes in what it creates (kantata.marked), kept by a resume: a copy the interrupted
        # run made is then known as this import's own (planner.living_plan, converge.py).
        self.mark = uuid.uuid4().hex[:16]
        self._fh: IO[str] | None = None
        self._write_lock = threading.Lock()
        self._failed: JournalNotWritten | None = None  # a write failed: no batch may leave any more

    @classmethod
    def open(cls, path: Path, digest: str, clock: Clock = SYSTEM_CLOCK) -> Journal:
        """Resume the journal of the same import (`schedule_digest`) if there is one; otherwise start a new one,
        carrying over what a journal of an edited version of the schedule sent (`earlier`)."""
        journal = cls(path, digest, clock)
        try:
            fh = path.open("a+", encoding="utf-8")  # not "w": another run may hold it, and must not lose it
        except OSError as exc:
            raise JournalNotWritten(path, exc, at_start=True) from None
        try:
            _lock(fh, path)
            fh.seek(0)
            text = fh.read()
            journal.sent_before = journal._read_previous(text)
            if not journal.sent_before:
                fh.truncate(0)
            elif text and not text.endswith("\n"):
                fh.write("\n")  # a torn last line: end it, or the next line would be glued to it and lost
            journal._fh = fh
            if not journal.sent_before:
                journal._write([{"kind": "start", "v": VERSION, "digest": journal.digest, "mark": journal.mark},
                                *(e.line() for e in reversed(journal.earlier))])  # fmt: skip
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

    def _read_previous(self, text: str) -> set[int]:
        """The rows the journal's run sent, if it is this import's; `earlier` either way."""
        previous = _previous(text, self.digest, self.clock)
        self.earlier = previous.earlier
        self.in_flight = previous.in_flight
        self.last_sent = previous.last_sent
        if previous.sent_before and previous.mark:
            self.mark = previous.mark
        return previous.sent_before

    def sending(self, items: Sequence[Item]) -> None:
        """Called before a batch goes out (within Settings.sending_ahead): from then on, Kantata may hold these rows
        because of this import. Raises JournalNotWritten, once any write has failed: the batch must not leave,
        for a re-run would not know to wait for it (and a line after a torn one may be lost with it)."""
        if self._failed is not None:
            raise self._failed
        self._write([{"kind": "sending", "rows": [i.row for i in items], "keys": [_key_text(i.key) for i in items],
                      "tells": "left", **clocks(self.clock)}])  # fmt: skip

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
