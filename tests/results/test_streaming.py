"""The results workbook written while an upload runs: rows really are written before the end, and the file is
cell for cell what write_results makes from the final outcomes, whatever happened on the way."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from python_calamine import CalamineWorkbook

import importer.results.streaming
from importer.cli.main import main
from importer.outcomes import Outcome, Status
from importer.results.report import RunInfo, write_results
from importer.results.streaming import StreamedResults
from importer.sandbox.server import DEFAULT_TOKEN
from importer.schedule.loader import load_schedule
from tests.conftest import MakeSchedule, good_row, read_results
from tests.results.test_packing import packed_at


def _cells(path: Path) -> dict[str, list[list[Any]]]:
    book = CalamineWorkbook.from_path(str(path))
    return {name: book.get_sheet_by_name(name).to_python() for name in book.sheet_names}


def _wait_for(stream: StreamedResults, rows: int) -> None:
    deadline = time.monotonic() + 10
    while stream.rows_written < rows:
        assert time.monotonic() < deadline, f"only {stream.rows_written} of {rows} rows written"
        time.sleep(0.01)


def test_an_upload_writes_rows_while_sending_and_the_file_equals_write_results(
    sandbox: Any, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rows: list[list[Any]] = [good_row(n) for n in range(1200)]
    rows[7] = ["", 5, 1001, "2026-02-30", None, "fixed_date"]  # invalid: no title, no such date
    rows[650][0] = "Refuse me"
    path = make_schedule(rows, above=[["Billing schedule, November"], []])
    sandbox.set_faults(latency=0.02, reject_title="Refuse me")
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    seen: dict[str, Any] = {}
    finish = StreamedResults.finish

    def observed(self: StreamedResults, outcomes: Mapping[int, Outcome], totals: Sequence[Any], info: RunInfo,
                 **kwargs: Any) -> Path:  # fmt: skip
        seen["early"] = self.rows_written
        out = finish(self, outcomes, totals, info, **kwargs)
        seen["reference"] = write_results(self._raw, outcomes, self._issues, totals, info, tmp_path / "ref.xlsx",
                                          money=kwargs["money"])  # fmt: skip
        return out

    monkeypatch.setattr(importer.results.streaming.StreamedResults, "finish", observed)
    assert main(["upload", str(path), "-q", "--concurrency", "2", "--batch-size", "50"]) == 1
    assert seen["early"] > 100  # written while the last batches were still on the wire
    results = path.with_name("schedule.results.xlsx")
    assert _cells(results) == _cells(seen["reference"])
    assert packed_at(results) == packed_at(seen["reference"]) == 1
    statuses = {r["_row"]: r["status"] for r in read_results(results)}
    assert statuses[4 + 7] == "invalid" and statuses[4 + 650] == "rejected"
    assert sum(s == "created" for s in statuses.values()) == 1198
    assert sorted(p.name for p in path.parent.glob("*.xlsx")) == ["ref.xlsx", "schedule.results.xlsx", "schedule.xlsx"]


def test_a_row_that_ended_differently_from_what_was_written_gets_the_workbook_rewritten(
    make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    path = make_schedule([good_row(n) for n in range(10)])
    raw = load_schedule(path)
    stream = StreamedResults(raw, [], tmp_path / "out.xlsx")
    stream.add([Outcome(r, Status.CREATED, str(r)) for r in raw.frame.index.tolist()])
    _wait_for(stream, 10)
    final = {r: Outcome(r, Status.CREATED, str(r)) for r in raw.frame.index.tolist()}
    final[5] = Outcome(5, Status.REJECTED, None, ("Kantata: no",))
    info = RunInfo(False, "http://kantata.test", __import__("datetime").datetime.now())
    out = stream.finish(final, [], info)
    statuses = {r["_row"]: (r["status"], r.get("errors")) for r in read_results(out)}
    assert statuses[5] == ("rejected", "Kantata: no") and statuses[6] == ("created", None)


def test_a_failure_of_the_writing_thread_falls_back_to_writing_at_the_end(
    make_schedule: MakeSchedule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_schedule([good_row(n) for n in range(10)])
    raw = load_schedule(path)
    stream = StreamedResults(raw, [], tmp_path / "out.xlsx")

    def broken(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(stream._writer, "rows", broken)
    stream.add([Outcome(r, Status.CREATED, str(r)) for r in raw.frame.index.tolist()])
    time.sleep(0.2)
    final = {r: Outcome(r, Status.CREATED, str(r)) for r in raw.frame.index.tolist()}
    info = RunInfo(False, "http://kantata.test", __import__("datetime").datetime.now())
    out = stream.finish(final, [], info)
    assert [r["billing_milestone_id"] for r in read_results(out)] == list(range(2, 12))


def test_abandoning_leaves_no_file_anywhere(make_schedule: MakeSchedule, tmp_path: Path) -> None:
    path = make_schedule([good_row(n) for n in range(10)])
    raw = load_schedule(path)
    stream = StreamedResults(raw, [], tmp_path / "out.xlsx")
    stream.add([Outcome(r, Status.CREATED, str(r)) for r in raw.frame.index.tolist()[:5]])
    _wait_for(stream, 5)
    scratch = Path(stream._scratch)
    assert scratch.is_dir()
    stream.abandon()
    assert not scratch.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["schedule.xlsx"]


def test_scratch_folders_of_runs_killed_long_ago_are_removed_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 during sending runs no clean-up, so a later run removes the scratch folders that runs since ended
    left in $TMPDIR long ago, and none of a run still going or of one that ended a moment ago."""
    import os
    import subprocess
    import sys
    import tempfile

    import importer.results.streaming as streaming

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)  # a process that has ended
    old, recent, alive = (tmp_path / f"kantata-import-{dead}-a", tmp_path / f"kantata-import-{dead}-b",
                          tmp_path / f"kantata-import-{os.getppid()}-c")  # fmt: skip
    for folder in (old, recent, alive):
        folder.mkdir()
        (folder / "results.xlsx").write_bytes(b"x")
    for path in (old, old / "results.xlsx", alive, alive / "results.xlsx"):
        os.utime(path, (0, 0))  # untouched since 1970
    streaming._remove_leftovers()
    assert not old.exists() and recent.exists() and alive.exists()


def test_where_no_process_can_be_asked_about_only_a_day_untouched_makes_a_leftover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows' os.kill(pid, 0) ends the process it names: there no process is asked about, and a scratch folder
    is a dead run's only once untouched for a day, whoever it is named for."""
    import os
    import tempfile

    import importer.results.atomic as atomic
    import importer.results.streaming as streaming

    def kills(pid: int, signal: int) -> None:
        raise AssertionError(f"os.kill({pid}, {signal}) was called")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(atomic, "CAN_ASK_WHETHER_RUNNING", False)
    monkeypatch.setattr(os, "kill", kills)
    then = time.time()
    folders = {age: tmp_path / f"kantata-import-{os.getppid()}-{age}" for age in (2 * 3600, 2 * 24 * 3600)}
    for age, folder in folders.items():
        folder.mkdir()
        (folder / "results.xlsx").write_bytes(b"x")
        for path in (folder, folder / "results.xlsx"):
            os.utime(path, (then - age, then - age))
    streaming._remove_leftovers()
    assert folders[2 * 3600].exists() and not folders[2 * 24 * 3600].exists()
