"""One upload at a time to one Kantata account, the next waiting for the one before (or not: `--no-wait`).

Two uploads at once to one account both look their keys up, find nothing, and both send the rows they share
(the same schedule to two results workbooks, or a schedule and its copy with one row added). Serialised, the
second finds what the first created; two at once would also double the load Kantata asks to keep to a few
requests. The lock is a file in the state folder's `running/` folder, named after the account
(kantata.Account.lock_name, the same for every spelling of its URL), taken through filelock, so that Windows and
macOS keep uploads apart as Linux does. Beside it the holder leaves a note (its host, pid, start time and the
file it is loading), for the one that waits to say whom it waits for.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from importer.clock import SYSTEM_CLOCK, Clock
from importer.errors import AccountBusy
from importer.kantata import Account

POLL = 0.1  # seconds between tries while waiting: the lock is taken without blocking, so a Ctrl-C ends the wait
FOLDER = "running"


@dataclass(frozen=True, slots=True)
class AccountLockHolder:
    """Who holds an account's lock, as its note beside the lock says."""

    host: str
    pid: int
    started: float  # wall-clock seconds since the epoch
    file: str | None  # the schedule it is loading
    account: str

    @classmethod
    def read(cls, path: Path) -> AccountLockHolder | None:
        """The note at `path`; None when there is none (the holder is just starting, or is an earlier version)
        or it cannot be read."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(host=str(data["host"]), pid=int(data["pid"]), started=float(data["started"]),
                       file=None if data.get("file") is None else str(data["file"]),
                       account=str(data.get("account", "")))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool | None:
        """Whether the process still runs: None when that cannot be told (another host; Windows, where the only
        way to ask would be to open the process)."""
        if self.host != socket.gethostname() or os.name != "posix":
            return None
        if self.pid == os.getpid():
            return True
        try:
            os.kill(self.pid, 0)  # signal 0: asks whether the process exists, sends nothing
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process: it exists
            return True
        return True

    def describe(self) -> str:
        started = dt.datetime.fromtimestamp(self.started).astimezone().isoformat(timespec="seconds")
        loading = f", loading {self.file}" if self.file else ""
        said = f"pid {self.pid} on {self.host}, started {started}{loading}"
        if self.alive() is False:
            return (f"its note names {said}, which is no longer running: a stale note, so the upload holding the "
                    "lock now has not said who it is yet")  # fmt: skip
        return f"held by {said}"


def holder_of(account: Account, state_dir: Path) -> str:
    """Who holds `account`'s lock, in words, from the note beside it."""
    holder = AccountLockHolder.read(_note_path(account, state_dir))
    if holder is None:
        return "it has not said who it is: it is starting, or is an earlier version of kantata-import"
    return holder.describe()


def _note_path(account: Account, state_dir: Path) -> Path:
    return state_dir / FOLDER / f"{account.lock_name}.holder.json"


def _taken(lock: FileLock) -> bool:
    """Take the lock if it is free. Never blocking: filelock's blocking wait cannot be ended by a Ctrl-C nor timed
    by our clock, and it refuses (as a deadlock) a second lock of the same file in one process, which two
    uploads run by one program (the web page's threads) would ask for."""
    try:
        lock.acquire(blocking=False)
    except Timeout:
        return False
    return True


@contextlib.contextmanager
def one_upload_to(
    account: Account,
    say: Callable[[str], None],
    state_dir: Path,
    *,
    wait: float | None = None,
    loading: Path | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Iterator[None]:
    """Hold `account`'s lock while the block runs. Held by another upload: say by whom, once, and wait for it,
    at most `wait` seconds (None: as long as it takes); then AccountBusy, nothing sent. A Ctrl-C ends the wait.
    Without a state folder that can be written there is no lock: the journal's own lock still keeps apart two
    runs to the same results workbook."""
    folder = state_dir / FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(folder / f"{account.lock_name}.lock", thread_local=False)
        got = _taken(lock)
    except OSError:
        yield
        return
    if not got:
        holder = holder_of(account, state_dir)
        if wait is not None and wait <= 0:
            raise AccountBusy.from_wait(str(account), holder, 0)
        limit = "" if wait is None else f"; at most {wait:g} s (--wait)"
        say(f"waiting for another upload to {account} to finish ({holder}): one at a time per Kantata account, so "
            f"that no row is created twice{limit}")  # fmt: skip
        deadline = None if wait is None else clock.monotonic() + wait
        while not _taken(lock):
            left = None if deadline is None else deadline - clock.monotonic()
            if left is not None and left <= 0:
                raise AccountBusy.from_wait(str(account), holder, wait or 0)
            clock.sleep(POLL if left is None else min(POLL, left))
    note = _note_path(account, state_dir)
    try:
        _leave_note(note, account, loading, clock)
        yield
    finally:
        with contextlib.suppress(OSError):
            note.unlink()
        lock.release()


def _leave_note(note: Path, account: Account, loading: Path | None, clock: Clock) -> None:
    """Who holds the lock, for those who wait: written whole (a temporary file renamed), so that a reader never
    sees half of it. A note that cannot be written costs only the waiter's knowing whom it waits for."""
    holder = AccountLockHolder(host=socket.gethostname(), pid=os.getpid(), started=clock.now(),
                               file=None if loading is None else str(loading.absolute()),
                               account=account.url)  # fmt: skip
    temporary = note.with_name(f"{note.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(asdict(holder)), encoding="utf-8")
        os.replace(temporary, note)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
