"""The import keys of requests whose answer never came, kept across runs, whatever the schedule or the results.

The journal (journal.py) resumes one schedule into one results workbook. But a killed run's requests may still
be writing at Kantata when the next run starts with the schedule edited, a row added, rows reordered, or another
`--output` (a timestamped results name): that run has no journal to go by, looks its keys up, misses the rows
still being written, and sends them again. The ledger records the *keys*
of every batch before it leaves (fsynced, timed by the same clocks as the journal) and that they settled when
their answer comes; every upload waits for the keys of its plan that the ledger shows may still be written, as
a resume waits for its journal's rows (delivery/settle.py).

One file for every schedule and account (`inflight.jsonl` in the state folder, `Settings.state_dir`), its lines
tagged with the account (kantata.Account.key). It is never replaced, only appended to and, at a run's start,
rewritten in place with the entries still live, all under an exclusive lock, so that runs at once lose none of
each other's lines. The lock that lets one upload at a time go to one Kantata account is in lock.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from filelock import lock_descriptor, unlock_descriptor

from importer.clock import SYSTEM_CLOCK, Clock
from importer.delivery.journal import clocks, seconds_since, tells_left
from importer.errors import JournalNotWritten
from importer.kantata import Account, ImportKey, Item, key_of
from importer.outcomes import Outcome, Status

FILE_NAME = "inflight.jsonl"
LEDGER = "the ledger of requests in flight"
SETTLED = (Status.CREATED, Status.REJECTED, Status.UNCHANGED)  # answered: nothing of theirs is still being written


LOCK_POLL = 0.002  # seconds between tries for the ledger's lock, held by another run only while it writes a line


def _flock(fh: IO[str]) -> None:
    """The ledger file's exclusive lock, on its own descriptor: filelock's primitive (flock on Unix, LockFileEx on
    Windows), so that every platform keeps runs from tearing each other's lines."""
    lock_descriptor(fh.fileno(), poll_interval=LOCK_POLL)


def _unlock(fh: IO[str]) -> None:
    unlock_descriptor(fh.fileno())


def _text(key: ImportKey) -> str:
    """The text "ki1-..." for a derived key, "service/model/ID" for the user's own: short, since a 100k upload writes
    each key twice. Two keys with one text would only make a run wait for both, never send one twice."""
    return str(key)


class Ledger:
    """This run's view of the keys that may still be written at `account`, and its own lines."""

    def __init__(self, path: Path, account: Account, window: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = path
        self.clock = clock
        self.url = account.key  # each line's tag: the account, the same for every spelling of its URL
        self.window = window  # seconds a request may go on writing after its "sending" line
        self.live: dict[str, float] = {}  # key text -> seconds it may still be written (other runs, earlier runs)
        self._keys: dict[int, str] = {}  # row -> key text, of the rows this run sent
        self._open: set[str] = set()  # key texts this run sent and has not seen settled
        self._base = 0  # the file's length after the prune at open
        self._mine = 0  # bytes this run appended since
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()
        self.broken = False  # a write failed: from then on this run records nothing more, and sends nothing
        self._failure: OSError | None = None
        self._told = False  # a "sending" line was written (or tried): a "left" line must follow what leaves

    @classmethod
    def open(cls, account: Account, window: float, folder: Path, clock: Clock = SYSTEM_CLOCK) -> Ledger | None:
        """Read (and prune) the ledger in the state folder `folder`; None when that cannot be written (a read-only
        home): the journal still guards a re-run of the same schedule and results workbook."""
        ledger = cls(folder / FILE_NAME, account, window, clock)
        try:
            ledger.path.parent.mkdir(parents=True, exist_ok=True)
            fh = ledger.path.open("a+", encoding="utf-8")
        except OSError:
            return None
        try:
            _flock(fh)
            try:
                fh.seek(0)
                kept = ledger._read(fh.read())
                fh.seek(0)
                fh.truncate()
                fh.write("".join(kept))
                fh.flush()
                os.fsync(fh.fileno())
                ledger._base = os.fstat(fh.fileno()).st_size
            finally:
                _unlock(fh)
        except OSError:  # a full disk while pruning: what was read is waited for; this run records nothing
            with contextlib.suppress(OSError):
                fh.close()
            ledger.broken = True
            return ledger
        except BaseException:
            fh.close()
            raise
        ledger._fh = fh
        return ledger

    @classmethod
    def read_only(cls, account: Account, window: float, folder: Path, clock: Clock = SYSTEM_CLOCK) -> Ledger:
        """The ledger as `open` reads it, for a dry run: nothing locked, pruned or written. One that cannot be read
        tells nothing."""
        ledger = cls(folder / FILE_NAME, account, window, clock)
        with contextlib.suppress(OSError, UnicodeDecodeError):
            ledger._read(ledger.path.read_text(encoding="utf-8"))
        return ledger

    def _read(self, text: str) -> list[str]:
        """Fill `live` for this account; the lines to keep: each "sending" line still live, of every account,
        with only its keys not settled since. A line's tag is read as an account key (`key_of`): an earlier
        version tagged its lines with the URL as typed, whose keys must still be waited for after an upgrade."""
        accounts: dict[str, str] = {}  # tag -> account key: a ledger holds many lines of few accounts
        entries: list[dict[str, Any]] = []
        sent: dict[tuple[str, str], tuple[float, int]] = {}  # (url, key) -> (seconds left, its entry)
        gone: set[tuple[str, str]] = set()  # keys a request of which left, or may have (journal.tells_left)
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn line (power cut mid-write)
            tag = str(entry.get("url"))
            url = accounts.get(tag) or accounts.setdefault(tag, key_of(tag))
            keys = [(url, str(key)) for key in entry.get("keys") or ()]
            if entry.get("kind") == "sending":
                left = float(entry.get("window") or self.window) - seconds_since(entry, self.clock)
                entries.append(entry)
                sent.update((k, (left, len(entries) - 1)) for k in keys)
                if not tells_left(entry, self.clock):
                    gone.update(keys)
            elif entry.get("kind") == "left":  # (a marker as its own kind: written by no release)
                gone.update(keys)
            elif entry.get("kind") == "settled":
                for k in keys:
                    sent.pop(k, None)
                gone.difference_update(keys)
        live = {k: v for k, v in sent.items() if v[0] > 0}
        # Waited for: the keys that may have left. Kept: every live one, for a run of another account may be
        # about to write the line saying its request left (one upload at a time is per account). A key that
        # left is kept on a line without "tells", whatever its last line was (a batch journalled again for a
        # retry): the fact sits on the line itself, which no rewrite cut short can part from it.
        self.live = {key: left for (url, key), (left, _) in live.items() if url == self.url and (url, key) in gone}
        keep: dict[tuple[int, bool], list[str]] = {}
        for k, (_, at) in live.items():
            keep.setdefault((at, k in gone), []).append(k[1])
        lines: list[str] = []
        for (at, went), texts in sorted(keep.items()):
            entry = {**entries[at], "keys": texts}
            if went:
                entry.pop("tells", None)
            lines.append(json.dumps(entry) + "\n")
        return lines

    def waits_for(self, items: Sequence[Item]) -> dict[ImportKey, float]:
        """The items' keys that an earlier or other run sent and that may still be written: seconds left."""
        return self.keys_waiting(i.key for i in items)

    def keys_waiting(self, keys: Iterable[ImportKey]) -> dict[ImportKey, float]:
        """`waits_for`, of keys no row of this run carries (an earlier version's, edited since)."""
        live = self.live
        return {key: live[t] for key in keys if (t := _text(key)) in live}

    def sending(self, items: Sequence[Item]) -> None:
        with self._lock:
            self._keys.update((i.row, _text(i.key)) for i in items)
            self._open.update(_text(i.key) for i in items)
            # From here on, what leaves must say so, and a failure to write that stops it. (A ledger that could
            # not be written from the start holds no line of this run's: it guards nothing, and stops nothing.)
            self._told |= self._fh is not None
        self._write({"kind": "sending", "url": self.url, "window": self.window, "tells": "left",
                     "keys": [_text(i.key) for i in items], **clocks(self.clock)}, durable=True)  # fmt: skip

    def left(self, items: Sequence[Item]) -> None:
        """A request of these keys leaves (journal.tells_left). Raises JournalNotWritten when that cannot be
        recorded, and then the request must not leave: its "sending" line says it would be.

        Said by a "sending" line without "tells" (flushed, not fsynced), not by a line of its own kind: a version
        before "left" lines keeps every "sending" line when it prunes the file, and would have dropped such a
        line, leaving the flagged one to say that the request never left, and its rows to be sent twice."""
        self._write({"kind": "sending", "url": self.url, "window": self.window,
                     "keys": [_text(i.key) for i in items], **clocks(self.clock)}, durable=False)  # fmt: skip
        if self.broken and self._told:
            raise JournalNotWritten(self.path, self._failure or OSError("not written"), what=LEDGER)

    def settled(self, outcomes: Sequence[Outcome]) -> None:
        """Rows answered (created, refused, found): no request of theirs is left to write them."""
        with self._lock:
            keys = [k for o in outcomes if o.status in SETTLED and (k := self._keys.get(o.row)) is not None]
            self._open.difference_update(keys)
        if keys:
            self._write({"kind": "settled", "url": self.url, "keys": keys}, durable=False)

    def withdrawn(self, items: Sequence[Item]) -> None:
        """Rows whose every request was answered 429 or never left: not in Kantata, nothing to wait for."""
        with self._lock:
            self._open.difference_update(_text(i.key) for i in items)
        self._write({"kind": "settled", "url": self.url, "keys": [_text(i.key) for i in items]}, durable=False)

    def _write(self, entry: dict[str, Any], *, durable: bool) -> None:
        """Append a line. It starts with a line break too: a line torn by another run (its disk full, its power
        cut) ends there instead of swallowing this one; the reader skips the empty line. A write
        that fails (a full disk) leaves the run without a ledger, as a read-only home does; what this run said
        would leave then does not (`left`). The fsync is outside the locks: a "left" line, written while its
        request holds a slot, does not wait for another batch's fsync."""
        text = "\n" + json.dumps(entry) + "\n"
        with self._lock:
            fh = self._fh
            if fh is None:
                return
            try:
                _flock(fh)
                try:
                    fh.write(text)
                    fh.flush()
                    self._mine += len(text.encode("utf-8"))
                finally:
                    _unlock(fh)
                if not durable:
                    return
                fd = os.dup(fh.fileno())  # its own descriptor: a failing thread may close fh meanwhile
            except OSError as exc:
                self._give_up(fh, exc)
                return
        try:
            os.fsync(fd)
        except OSError as exc:
            with self._lock:
                self._give_up(fh, exc)
        finally:
            os.close(fd)

    def _give_up(self, fh: IO[str], exc: OSError) -> None:
        """(Under self._lock.) A write failed: this run records nothing more."""
        self.broken = True
        self._failure = self._failure or exc
        if self._fh is fh:
            self._fh = None
            with contextlib.suppress(OSError):
                fh.close()

    def close(self) -> None:
        """When every key this run sent has settled and no other run appended meanwhile, its lines are cut off
        again: a large upload writes megabytes of them, which the next run would otherwise read and prune."""
        with self._lock:
            fh, self._fh = self._fh, None
            if fh is None:
                return
            try:
                _flock(fh)
                if not self._open and os.fstat(fh.fileno()).st_size == self._base + self._mine:
                    fh.truncate(self._base)
            except OSError:
                pass  # the next run prunes it
            finally:
                with contextlib.suppress(OSError):
                    fh.close()
