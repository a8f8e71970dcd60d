"""One upload at a time per Kantata account (importer/delivery/lock.py): the next waits, or with --no-wait or a
--wait that runs out stops, saying who holds the lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from importer.delivery import AccountLockHolder, one_upload_to
from importer.errors import AccountBusy, ExitCode
from importer.kantata import Account
from tests.fake_clock import FakeClock

ACCOUNT = Account.parse("http://127.0.0.1:9/api/v1")
SAME = Account.parse("http://LOCALHOST:9/api/v1/.")  # another spelling of it
OTHER = Account.parse("http://127.0.0.1:10/api/v1")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_one_upload_at_a_time_per_account_whatever_its_spelling(state: Path) -> None:
    """A schedule and its copy with a row added, uploaded at once under two spellings of one URL, both sent the
    rows they share: the second must wait for the first."""
    said: list[str] = []
    entered = threading.Event()

    def second() -> None:
        with one_upload_to(SAME, said.append, state):
            entered.set()

    with one_upload_to(ACCOUNT, print, state, loading=Path("first.xlsx")), one_upload_to(OTHER, print, state):
        waiting = threading.Thread(target=second)
        waiting.start()
        while not said and waiting.is_alive():
            waiting.join(0.01)
        assert not entered.is_set()
    waiting.join(30)
    assert entered.is_set()
    assert said[0].startswith(f"waiting for another upload to {SAME} to finish (held by pid {os.getpid()} on ")
    assert "first.xlsx" in said[0] and len(said) == 1  # said once


def test_no_wait_stops_at_once_saying_who_holds_the_lock(state: Path) -> None:
    clock = FakeClock()
    with one_upload_to(ACCOUNT, print, state, loading=Path("big.xlsx"), clock=clock):
        note = json.loads(next((state / "running").glob("*.holder.json")).read_text())
        assert note["pid"] == os.getpid() and note["host"] == socket.gethostname()
        assert note["file"] == str(Path("big.xlsx").absolute()) and note["account"] == ACCOUNT.url
        with pytest.raises(AccountBusy) as raised, one_upload_to(SAME, print, state, wait=0, clock=clock):
            pass
        assert clock.sleeps == []
    assert raised.value.exit_code == ExitCode.BUSY and int(ExitCode.BUSY) == 6
    assert f"held by pid {os.getpid()}" in str(raised.value) and "--no-wait" in str(raised.value)
    assert list((state / "running").glob("*.holder.json")) == []  # the note goes with the lock
    with one_upload_to(SAME, print, state, wait=0):  # free again
        pass


def test_a_wait_that_runs_out_stops_by_the_clock_given(state: Path) -> None:
    clock = FakeClock()
    said: list[str] = []
    with one_upload_to(ACCOUNT, print, state), pytest.raises(AccountBusy) as raised:  # noqa: SIM117
        with one_upload_to(SAME, said.append, state, wait=5, clock=clock):
            pass
    assert sum(clock.sleeps) == pytest.approx(5) and "after --wait 5 s" in str(raised.value)
    assert len(said) == 1 and "at most 5 s" in said[0]


def test_a_stale_note_is_said_to_be_stale(state: Path) -> None:
    """A holder killed with -9 leaves its note: the one holding the lock now has not written its own yet."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    pid = int(gone.stdout)
    with one_upload_to(ACCOUNT, print, state):
        note = next((state / "running").glob("*.holder.json"))
        note.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "started": 1_800_000_000.0,
                                    "file": "old.xlsx", "account": ACCOUNT.url}))  # fmt: skip
        holder = AccountLockHolder.read(note)
        assert holder is not None and holder.alive() is False
        with pytest.raises(AccountBusy) as raised, one_upload_to(SAME, print, state, wait=0):
            pass
    assert f"its note names pid {pid} on {socket.gethostname()}" in str(raised.value)
    assert "no longer running: a stale note" in str(raised.value)


def test_a_holder_without_a_note_is_said_to_be_unnamed(state: Path) -> None:
    with one_upload_to(ACCOUNT, print, state):
        next((state / "running").glob("*.holder.json")).unlink()  # as an earlier version, which wrote none
        with pytest.raises(AccountBusy, match="it has not said who it is"), one_upload_to(SAME, print, state, wait=0):
            pass


def test_a_lock_file_left_by_a_killed_upload_is_free(state: Path) -> None:
    """kill -9 leaves the lock file and its note behind; the lock itself went with the process."""
    script = ("import sys, os; from pathlib import Path; from importer.delivery import one_upload_to; "
              "from importer.kantata import Account\n"
              "with one_upload_to(Account.parse(sys.argv[1]), print, Path(sys.argv[2])): os._exit(9)")  # fmt: skip
    killed = subprocess.run([sys.executable, "-c", script, ACCOUNT.url, str(state)], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert killed.returncode == 9, killed.stderr
    assert list((state / "running").glob("*.holder.json"))  # left behind
    with one_upload_to(SAME, print, state, wait=0):
        pass
