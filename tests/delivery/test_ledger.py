"""The ledger of keys in flight (importer/ledger.py): what a later run waits for, and what it keeps of the file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO

import pytest

from importer.delivery.journal import Previous
from importer.delivery.ledger import FILE_NAME, Ledger
from importer.delivery.lock import one_upload_to
from importer.delivery.settle import still_writing
from importer.errors import JournalNotWritten
from importer.kantata import Account
from importer.kantata.keys import SERVICE_MODEL, SERVICE_NAME, ImportKey, Item
from importer.outcomes import Outcome, Status
from importer.settings import Settings
from tests.fake_clock import FakeClock

URL = "https://api.example.test/api/v1"
ACCOUNT = Account.parse(URL)


def _item(row: int) -> Item:
    return Item(row, ImportKey(SERVICE_NAME, SERVICE_MODEL, f"ki1-{row:024x}"), {})


def _went(ledger: Ledger, items: list[Item]) -> None:
    """A batch's keys as an upload records them when its request leaves: "sending", then "left"."""
    ledger.sending(items)
    ledger.left(items)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_a_later_run_waits_for_the_keys_sent_without_an_answer_and_for_no_other(state: Path) -> None:
    started = time.monotonic()
    first = Ledger.open(ACCOUNT, 60.0, state)
    assert first is not None
    _went(first, [_item(1), _item(2), _item(3)])
    first.settled([Outcome(1, Status.CREATED, "7"), Outcome(2, Status.REJECTED), Outcome(3, Status.NOT_SENT)])
    _went(first, [_item(4)])
    first.withdrawn([_item(4)])  # answered 429 only: never in Kantata
    first.close()

    later = Ledger.open(ACCOUNT, 60.0, state)
    assert later is not None
    waits = later.waits_for([_item(n) for n in range(1, 6)])
    assert list(waits) == [_item(3).key] and 60 - (time.monotonic() - started) <= waits[_item(3).key] <= 60
    other = Ledger.open(Account.parse("http://127.0.0.1:9/api/v1"), 60.0, state)  # another account: none of these
    assert other is not None and other.waits_for([_item(3)]) == {}
    for ledger in (later, other):
        ledger.close()
    lines = [json.loads(line) for line in (state / FILE_NAME).read_text().splitlines()]
    # Only what lives, on a line that says it left (no "tells": see the test of an older version's prune).
    assert [(e["kind"], e["keys"], e.get("tells")) for e in lines] == [("sending", [str(_item(3).key)], None)]


def test_a_key_whose_window_has_passed_is_forgotten(state: Path) -> None:
    first = Ledger.open(ACCOUNT, 0.05, state)
    assert first is not None
    _went(first, [_item(1)])
    first.close()
    time.sleep(0.1)
    later = Ledger.open(ACCOUNT, 60.0, state)  # its own window does not lengthen the line's
    assert later is not None and later.waits_for([_item(1)]) == {}
    later.close()
    assert (state / FILE_NAME).read_text() == ""


def test_an_unwritable_state_folder_means_no_ledger_not_a_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    unwritable = blocker / "state"  # under a file: cannot be made
    assert Ledger.open(ACCOUNT, 60.0, unwritable) is None
    with one_upload_to(ACCOUNT, print, unwritable):
        pass


def test_a_line_torn_by_another_run_does_not_swallow_the_next(state: Path) -> None:
    """A run whose disk filled mid-line leaves a line without its end: the next line another run appends must
    not be glued to it and lost, or the wait for that run's keys would be lost with it."""
    running = Ledger.open(ACCOUNT, 60.0, state)
    assert running is not None
    with (state / FILE_NAME).open("a", encoding="utf-8") as fh:
        fh.write('{"kind": "sending", "url": "' + URL + '", "keys": ["ki1-torn')  # a write cut short
    _went(running, [_item(7)])
    running.close()
    later = Ledger.open(ACCOUNT, 60.0, state)
    assert later is not None and list(later.waits_for([_item(7)])) == [_item(7).key]
    later.close()


def _filled_up(ledger: Ledger) -> IO[str]:
    """The ledger's disk full from now on: every write fails (ENOSPC). The real file, to close."""

    class Full:
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

        def fileno(self) -> int:
            return fd

        def close(self) -> None:
            pass

    assert ledger._fh is not None
    fd = ledger._fh.fileno()
    real, ledger._fh = ledger._fh, Full()  # type: ignore[assignment]
    return real


def test_a_ledger_that_cannot_be_written_stops_what_it_said_would_leave(state: Path) -> None:
    """Its "sending" line promises a "left" line for a request that leaves (a kill -9 re-run trusts that): once
    it cannot be written, the request must not leave (JournalNotWritten stops the run)."""
    ledger = Ledger.open(ACCOUNT, 60.0, state)
    assert ledger is not None
    real = _filled_up(ledger)
    ledger.sending([_item(1)])  # no exception yet: the line may be in the file or not
    assert ledger.broken
    stopped = r"the ledger of requests in flight .* \(No space left on device\): sending stopped"
    with pytest.raises(JournalNotWritten, match=stopped):
        ledger.left([_item(1)])
    ledger.settled([Outcome(1, Status.CREATED, "7")])
    ledger.close()
    real.close()

    unwritten = Ledger.open(ACCOUNT, 60.0, state)  # broken before it wrote a line: nothing promised, nothing stopped
    assert unwritten is not None
    _filled_up(unwritten).close()
    unwritten.settled([Outcome(2, Status.CREATED, "8")])
    unwritten.broken, unwritten._fh = True, None  # as Ledger.open leaves it when the prune fails
    _went(unwritten, [_item(3)])
    unwritten.close()


def _pruned_by_a_version_before_left_lines(state: Path) -> None:
    """What 7d502a8's Ledger.open did to the file: kept each live "sending" line (as written, "tells" included,
    which it did not know), with its keys not settled since; dropped every other line."""
    sent: dict[str, tuple[int, dict[str, object]]] = {}
    entries = [json.loads(line) for line in (state / FILE_NAME).read_text().splitlines() if line.strip()]
    for at, entry in enumerate(entries):
        for key in entry["keys"]:
            if entry["kind"] == "sending":
                sent[key] = (at, entry)
            elif entry["kind"] == "settled":
                sent.pop(key, None)
    keep: dict[int, list[str]] = {}
    for key, (at, _) in sent.items():
        keep.setdefault(at, []).append(key)
    (state / FILE_NAME).write_text("".join(json.dumps({**entries[at], "keys": keys}) + "\n"
                                           for at, keys in sorted(keep.items())))  # fmt: skip


def test_a_key_that_left_is_waited_for_after_an_older_version_pruned_the_file(state: Path) -> None:
    """The line that says a request left is a "sending" line, which every version keeps: were it a kind of its
    own, an older version pruning the shared state folder (for another account) would drop it, and the next run
    would take the keys for never sent and send them twice."""
    first = Ledger.open(ACCOUNT, 60.0, state)
    assert first is not None
    _went(first, [_item(1)])
    first.sending([_item(2)])  # journalled ahead, never left
    first.close()
    _pruned_by_a_version_before_left_lines(state)
    later = Ledger.open(ACCOUNT, 60.0, state)
    assert later is not None and list(later.waits_for([_item(1), _item(2)])) == [_item(1).key]
    later.close()


def test_a_key_journalled_again_after_it_left_still_counts_as_gone_after_a_prune(state: Path) -> None:
    """A retry writes a new flagged "sending" line for a batch whose earlier request left: the prune keeps
    the last line of each key, so it must say, on the line, that the key left."""
    first = Ledger.open(ACCOUNT, 60.0, state)
    assert first is not None
    _went(first, [_item(1)])
    first.sending([_item(1)])  # journalled again for a retry; the kill comes before it leaves
    first.close()
    for _ in range(2):  # each open prunes and rewrites the file
        again = Ledger.open(ACCOUNT, 60.0, state)
        assert again is not None and list(again.waits_for([_item(1)])) == [_item(1).key]
        again.close()


def test_a_batch_said_sending_that_never_left_is_not_waited_for_in_this_boot_only(state: Path) -> None:
    """A kill -9 leaves a batch or two journalled ahead of their slot: without a "left" line they never left (in
    this boot: a crash of the machine could lose a line only flushed), so a re-run need not wait their window.
    Lines of a version that wrote no "left" lines count as gone."""
    clock = FakeClock(boot="this-boot")
    first = Ledger.open(ACCOUNT, 60.0, state, clock)
    assert first is not None
    first.sending([_item(1)])  # journalled ahead, never left
    _went(first, [_item(2)])
    first.close()
    with (state / FILE_NAME).open("a", encoding="utf-8") as fh:  # an older version's line: no "tells"
        fh.write("\n" + json.dumps({"kind": "sending", "url": URL, "window": 60.0, "keys": [str(_item(3).key)],
                                    "at": clock.now()}) + "\n")  # fmt: skip
    later = Ledger.open(ACCOUNT, 60.0, state, clock)
    assert later is not None
    assert sorted(later.waits_for([_item(n) for n in (1, 2, 3)])) == sorted([_item(2).key, _item(3).key])
    later.close()
    clock.boot_id = "after-a-crash"  # the machine crashed and came back up: a flushed line may have been lost
    rebooted = Ledger.open(ACCOUNT, 60.0, state, clock)
    assert rebooted is not None
    assert len(rebooted.waits_for([_item(n) for n in (1, 2, 3)])) == 3  # the line of item 1 counts as gone
    rebooted.close()


def test_a_run_whose_keys_all_settled_leaves_the_file_as_it_found_it(state: Path) -> None:
    """A large upload appends megabytes, which the next run would read and prune: cut off at close when nothing
    of it can still be written and no other run appended meanwhile."""
    earlier = Ledger.open(ACCOUNT, 60.0, state)
    assert earlier is not None
    _went(earlier, [_item(9)])  # unanswered: stays
    earlier.close()
    pruned = Ledger.open(ACCOUNT, 60.0, state)  # the file as the next run finds it: pruned at open (one line a key)
    assert pruned is not None
    pruned.close()
    kept = (state / FILE_NAME).read_bytes()
    run = Ledger.open(ACCOUNT, 60.0, state)
    assert run is not None
    _went(run, [_item(1), _item(2)])
    run.settled([Outcome(1, Status.CREATED, "7"), Outcome(2, Status.UNCHANGED, "8")])
    run.close()
    assert (state / FILE_NAME).read_bytes().split() == kept.split()  # the earlier line only (blank lines aside)
    other = Ledger.open(ACCOUNT, 60.0, state)
    assert other is not None
    _went(other, [_item(3)])
    interleaved = Ledger.open(ACCOUNT, 60.0, state)  # another run appends meanwhile: its line must not be cut off
    assert interleaved is not None
    _went(interleaved, [_item(4)])
    other.settled([Outcome(3, Status.CREATED, "9")])
    other.close()
    interleaved.close()
    final = Ledger.open(ACCOUNT, 60.0, state)
    assert final is not None
    waits = final.waits_for([_item(n) for n in (3, 4, 9)])
    final.close()
    assert sorted(waits) == sorted([_item(4).key, _item(9).key])


def test_keys_an_earlier_version_left_in_flight_are_waited_for_under_any_spelling(state: Path) -> None:
    """Before accounts had one name, lines were tagged with the URL as typed: a run killed with a batch on the
    wire before an upgrade must still be waited for after it, whatever spelling the new run uses."""
    clock = FakeClock(boot="this-boot")
    state.mkdir()
    with (state / FILE_NAME).open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"kind": "sending", "url": "http://127.0.0.1:8765/api/v1", "window": 60.0,
                             "keys": [str(_item(1).key)], "at": clock.now()}) + "\n")  # fmt: skip
    for spelling in ("http://127.0.0.1:8765/api/v1", "http://LOCALHOST:8765/api/v1/", "http://[::1]:8765/api/v1/."):
        later = Ledger.open(Account.parse(spelling), 60.0, state, clock)
        assert later is not None and list(later.waits_for([_item(1), _item(2)])) == [_item(1).key], spelling
        later.close()
    elsewhere = Ledger.open(Account.parse("http://127.0.0.1:8766/api/v1"), 60.0, state, clock)
    assert elsewhere is not None and elsewhere.waits_for([_item(1)]) == {}
    elsewhere.close()


def test_a_dry_run_reads_the_ledger_as_an_upload_would_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    """`validate --online` tells for how long requests another run left unanswered may still be written, from
    the ledger an upload would wait by; reading it locks, prunes and writes nothing."""
    sent = Ledger.open(ACCOUNT, 60.0, tmp_path)
    assert sent is not None
    sent.sending([_item(2), _item(3)])
    sent.left([_item(2), _item(3)])
    sent.settled([Outcome(3, Status.CREATED, "9")])
    sent.close()
    before = (tmp_path / FILE_NAME).read_bytes()
    read = Ledger.read_only(ACCOUNT, 60.0, tmp_path)
    assert (tmp_path / FILE_NAME).read_bytes() == before
    settings = Settings()  # (the ledger keeps each request's own window: 60 s here)
    assert 50 < still_writing(Previous(), read, [_item(2), _item(3)], set(), settings) <= 60  # row 2's request
    assert still_writing(Previous(), read, [_item(3)], set(), settings) == 0  # answered
    assert still_writing(Previous(), read, [_item(2)], {_item(2).key}, settings) == 0  # found in Kantata
    assert Ledger.read_only(ACCOUNT, 60.0, tmp_path / "none").live == {}
