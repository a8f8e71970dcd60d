"""The ledger of keys in flight (importer/ledger.py): what a later run waits for, and what it keeps of the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from importer.errors import ConfigError
from importer.ledger import FILE_NAME, STATE_ENV, Ledger, one_upload_of
from importer.outcomes import Outcome, Status
from importer.planner import SERVICE_MODEL, SERVICE_NAME, ImportKey, Item

URL = "https://api.example.test/api/v1"


def _item(row: int) -> Item:
    return Item(row, ImportKey(SERVICE_NAME, SERVICE_MODEL, f"ki1-{row:024x}"), {})


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(STATE_ENV, str(tmp_path / "state"))
    return tmp_path / "state"


def test_a_later_run_waits_for_the_keys_sent_without_an_answer_and_for_no_other(state: Path) -> None:
    first = Ledger.open(URL, 60.0)
    assert first is not None
    first.sending([_item(1), _item(2), _item(3)])
    first.settled([Outcome(1, Status.CREATED, "7"), Outcome(2, Status.REJECTED), Outcome(3, Status.NOT_SENT)])
    first.sending([_item(4)])
    first.withdrawn([_item(4)])  # answered 429 only: never in Kantata
    first.close()

    later = Ledger.open(URL, 60.0)
    assert later is not None
    waits = later.waits_for([_item(n) for n in range(1, 6)])
    assert list(waits) == [_item(3).key] and 59 < waits[_item(3).key] <= 60
    other = Ledger.open("http://127.0.0.1:9/api/v1", 60.0)  # another account: nothing of this one's
    assert other is not None and other.waits_for([_item(3)]) == {}
    for ledger in (later, other):
        ledger.close()
    lines = [json.loads(line) for line in (state / FILE_NAME).read_text().splitlines()]
    assert [(e["kind"], e["keys"]) for e in lines] == [("sending", [str(_item(3).key)])]  # only what lives


def test_a_key_whose_window_has_passed_is_forgotten(state: Path) -> None:
    first = Ledger.open(URL, 0.05)
    assert first is not None
    first.sending([_item(1)])
    first.close()
    import time

    time.sleep(0.1)
    later = Ledger.open(URL, 60.0)  # its own window does not lengthen the line's
    assert later is not None and later.waits_for([_item(1)]) == {}
    later.close()
    assert (state / FILE_NAME).read_text() == ""


def test_an_unwritable_state_folder_means_no_ledger_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(STATE_ENV, str(blocker / "state"))  # under a file: cannot be made
    assert Ledger.open(URL, 60.0) is None
    with one_upload_of("digest"):
        pass


def test_one_upload_of_a_schedule_at_a_time(state: Path) -> None:
    refused = pytest.raises(ConfigError, match="another upload of this schedule is running")
    with one_upload_of("abc"), one_upload_of("other"), refused, one_upload_of("abc"):
        pass
    with one_upload_of("abc"):  # free again once the first has finished
        pass


def test_a_run_whose_keys_all_settled_leaves_the_file_as_it_found_it(state: Path) -> None:
    """A 100k-row upload appends 6.5 MB, which the next run would read and prune (0.18 s): cut off at close
    when nothing of it can still be written and no other run appended meanwhile."""
    earlier = Ledger.open(URL, 60.0)
    assert earlier is not None
    earlier.sending([_item(9)])  # unanswered: stays
    earlier.close()
    kept = (state / FILE_NAME).read_bytes()
    run = Ledger.open(URL, 60.0)
    assert run is not None
    run.sending([_item(1), _item(2)])
    run.settled([Outcome(1, Status.CREATED, "7"), Outcome(2, Status.EXISTS, "8")])
    run.close()
    assert (state / FILE_NAME).read_bytes() == kept
    other = Ledger.open(URL, 60.0)
    assert other is not None
    other.sending([_item(3)])
    interleaved = Ledger.open(URL, 60.0)  # another run appends meanwhile: its line must not be cut off
    assert interleaved is not None
    interleaved.sending([_item(4)])
    other.settled([Outcome(3, Status.CREATED, "9")])
    other.close()
    interleaved.close()
    final = Ledger.open(URL, 60.0)
    assert final is not None
    waits = final.waits_for([_item(n) for n in (3, 4, 9)])
    final.close()
    assert sorted(waits) == sorted([_item(4).key, _item(9).key])
