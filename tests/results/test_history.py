"""A run never destroys the results of the run before: kept beside the latest under a dated name, and a kept one
fed back in is read as a results workbook."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from importer.cli.main import main
from importer.results.history import dated_name, keep_previous, kept_results, undated
from importer.schedule import load_schedule
from tests.conftest import MakeSchedule, good_row


def test_two_runs_keep_the_first_ones_results_beside_the_latest(
    make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_schedule([good_row(1), good_row(2)])
    out = path.with_name("schedule.results.xlsx")
    assert main(["validate", str(path)]) == 0
    os.utime(out, (1_800_000_000, 1_800_000_000))  # written at a known minute
    first = out.read_bytes()
    capsys.readouterr()
    assert main(["validate", str(path)]) == 0
    kept = kept_results(out)
    assert len(kept) == 1 and kept[0].read_bytes() == first and out.exists()
    assert kept[0].name.startswith("schedule.results.20") and kept[0].suffix == ".xlsx"
    assert f"earlier results kept beside it: {kept[0].name}" in capsys.readouterr().out
    fed = load_schedule(kept[0])  # the living schedule: a dated results workbook fed back in
    assert fed.previous_outcomes and fed.fields["milestone_id"] == "B"
    assert undated(kept[0]) == out


def test_names_never_collide(tmp_path: Path) -> None:
    target = tmp_path / "r.xlsx"
    target.write_bytes(b"1")
    one = keep_previous(target)
    newer = tmp_path / "new"
    newer.write_bytes(b"2")
    os.replace(newer, target)  # as a run replaces it: a new file, not the old one written over
    os.utime(target, (one.stat().st_mtime, one.stat().st_mtime) if one else None)
    two = keep_previous(target)
    assert one is not None and two is not None and one != two and two.name.endswith("-2.xlsx")
    assert (one.read_bytes(), two.read_bytes()) == (b"1", b"2")
    assert kept_results(target) == [one, two]
    assert keep_previous(tmp_path / "none.xlsx") is None


def test_a_dated_name_sorts_by_time(tmp_path: Path) -> None:
    import datetime as dt

    name = dated_name(tmp_path / "s.results.xlsx", dt.datetime(2026, 12, 5, 14, 32))
    assert name.name == "s.results.2026-12-05T1432.xlsx"
