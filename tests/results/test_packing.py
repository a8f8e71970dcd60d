"""How the results workbook is packed: zlib level 1 (packing.ResultsWorkbook), and no other workbook changed by it."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import xlsxwriter
import xlsxwriter.workbook

from importer.pipeline import run_validate
from tests.conftest import MakeSchedule, good_row

SHEET = "xl/worksheets/sheet1.xml"


def packed_at(path: Path, member: str = SHEET) -> int | None:
    """The zlib level that gives this member's packed size (the lowest, if several do)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
        data = archive.read(member)
    assert info.compress_type == zipfile.ZIP_DEFLATED
    for level in range(1, 10):
        packer = zlib.compressobj(level, zlib.DEFLATED, -15)
        if len(packer.compress(data) + packer.flush()) == info.compress_size:
            return level
    return None


def test_the_results_workbook_is_packed_at_level_1_and_other_workbooks_are_not(
    make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    result = run_validate(make_schedule([good_row(n) for n in range(3000)]))
    assert packed_at(result.output) == 1
    assert xlsxwriter.workbook.ZipFile is zipfile.ZipFile  # put back once closed
    other = tmp_path / "other.xlsx"
    workbook = xlsxwriter.Workbook(str(other))
    sheet = workbook.add_worksheet()
    for n in range(3000):
        sheet.write_row(n, 0, [f"Milestone {n}", 10000 + n, 1001, "2026-01-01", "fixed_date"])
    workbook.close()
    assert packed_at(other) == 6  # xlsxwriter's own default, untouched
