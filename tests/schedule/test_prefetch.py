"""The early read the CLI starts before importing pandas: used only for the same, unchanged file and --sheet;
anything wrong with the file is left to the loader, which reports it exactly as without the early read."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import openpyxl
import pytest

from importer.cli.main import main
from importer.errors import ScheduleError
from importer.schedule import prefetch
from importer.schedule.loader import load_schedule
from tests.conftest import MakeSchedule, good_row, read_results


def _started(path: Path, sheet: str | None) -> prefetch.ReadAhead:
    ahead = prefetch.start_prefetch(path, sheet)
    assert ahead is not None
    return ahead


def _two_sheets(tmp_path: Path) -> Path:
    wb = openpyxl.Workbook()
    notes = wb.active
    assert notes is not None
    notes.title = "Notes"
    notes.append(["just notes"])
    billing = wb.create_sheet("Billing")
    billing.append(["title", "amount_in_cents", "workspace_id", "date_to_invoice", "story_id", "billing_type"])
    billing.append(good_row(1))
    path = tmp_path / "two.xlsx"
    wb.save(path)
    return path


def test_the_early_read_is_claimed_once_and_gives_the_same_schedule(make_schedule: MakeSchedule) -> None:
    path = make_schedule([good_row(n) for n in range(1, 30)])
    without = load_schedule(path)
    ahead = prefetch.start_prefetch(path, None)
    assert ahead is not None
    early = ahead.claim(path, None)
    assert early is not None and early.sheet_name == "Billing"
    early.book.close()
    assert ahead.claim(path, None) is None  # claimed: gone

    ahead = prefetch.start_prefetch(path, None)
    assert ahead is not None
    with_early = load_schedule(path, read_ahead=ahead)
    assert ahead.claim(path, None) is None  # the loader took it
    assert with_early.frame.equals(without.frame) and with_early.sheet == without.sheet
    assert with_early.issues == without.issues and with_early.notes == without.notes


def test_not_used_for_another_sheet_or_file_or_a_changed_file(make_schedule: MakeSchedule, tmp_path: Path) -> None:
    path = make_schedule([good_row(1)])
    assert _started(path, None).claim(path, "Billing") is None  # started without --sheet, claimed with one
    other = make_schedule([good_row(2)], name="other")
    assert _started(path, None).claim(other, None) is None
    ahead = _started(path, None)
    os.utime(path, ns=(1, 1))  # saved again in between (the mtime is part of what must match)
    assert ahead.claim(path, None) is None
    csv_path = make_schedule([good_row(3)], fmt="csv")
    assert prefetch.start_prefetch(csv_path, None) is None  # CSV: nothing to read ahead


def test_it_parses_the_sheet_the_loader_would_try_first(tmp_path: Path) -> None:
    path = _two_sheets(tmp_path)
    early = _started(path, None).claim(path, None)
    assert early is not None and early.sheet_name == "Notes"  # the first visible sheet, as the loader tries
    early.book.close()
    ahead = _started(path, None)
    raw = load_schedule(path, read_ahead=ahead)  # Notes has no header: on to Billing with the same open book
    assert raw.sheet == "Billing" and raw.frame.index.tolist() == [2]
    assert ahead.claim(path, None) is None  # the loader took it
    early = _started(path, "Billing").claim(path, "Billing")
    assert early is not None and early.sheet_name == "Billing"
    early.book.close()
    assert _started(path, "Nope").claim(path, "Nope") is None


def test_a_hostile_or_broken_file_is_left_to_the_loader(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/worksheets/sheet1.xml", b"\0" * (20 * 2**20))  # 20 MiB of zeros: expands ~1000x
    text = tmp_path / "text.xlsx"
    text.write_text("title,amount\n")
    for path in (bomb, text):
        with pytest.raises(ScheduleError) as plain:
            load_schedule(path)
        with pytest.raises(ScheduleError) as early:
            load_schedule(path, read_ahead=_started(path, None))
        assert str(early.value) == str(plain.value)


def test_the_cli_writes_the_same_results_with_and_without_it(
    make_schedule: MakeSchedule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_schedule([good_row(n) for n in range(1, 40)] + [["", "x", 1001, "2026-13-01", None, "weekly"]])
    assert main(["validate", str(path), "-q", "-o", str(tmp_path / "early.xlsx")]) == 1
    monkeypatch.setenv("KANTATA_IMPORT_NO_PREFETCH", "1")
    assert main(["validate", str(path), "-q", "-o", str(tmp_path / "plain.xlsx")]) == 1
    early, plain = read_results(tmp_path / "early.xlsx"), read_results(tmp_path / "plain.xlsx")
    assert early == plain and len(early) == 40 and early[-1]["status"] == "invalid"
