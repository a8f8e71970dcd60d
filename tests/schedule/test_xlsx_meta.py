"""The sheet's extent as xlsx_meta reads it from the XML before the cell reader allocates it: the widest column
reference is found wherever it is and however the XML spaces its attributes (XML allows a tab, a line feed or a
carriage return where a writer usually puts a space)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from importer.schedule.xlsx_meta import _CHUNK, PackageProblem, sheet_meta
from tests.corpus import makers_hostile as mh

ROWS = 25_000  # their XML is several chunks long, and 703 columns of them are within the limit of cells


def _sheet(far: bytes | None, at: int) -> bytes:
    """A sheet of columns A to C on ROWS rows, the cell `far` (its whole opening tag) added to row `at`."""
    rows = []
    for n in range(1, ROWS + 1):
        cells = b"".join(b'<c r="%s%d" t="inlineStr"><is><t>v</t></is></c>' % (c, n) for c in (b"A", b"B", b"C"))
        if n == at and far is not None:
            cells += far + b"<is><t>x</t></is></c>"
        rows.append(b'<row r="%d">%s</row>' % (n, cells))
    return (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
            + b"".join(rows) + b"</sheetData></worksheet>")  # fmt: skip


def _workbook(folder: Path, far: bytes | None, at: int = ROWS // 2) -> Path:
    data = mh._workbook()
    sheet = _sheet(far, at)
    assert len(sheet) > 2 * _CHUNK
    path = mh._write(folder, "extent.xlsx", mh._rezip(data, replace={"xl/worksheets/sheet1.xml": sheet}))
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as zf:
        assert zf.read("xl/worksheets/sheet1.xml") == sheet
    return path


@pytest.mark.parametrize("space", [b" ", b"\t", b"\n", b"\r", b"\r\n  "], ids=["space", "tab", "lf", "cr", "crlf"])
@pytest.mark.parametrize(("ref", "width"), [(b"AB", 28), (b"ZZ", 702), (b"AAA", 703)])
def test_the_widest_reference_is_found_however_the_attributes_are_spaced(
    tmp_path: Path, space: bytes, ref: bytes, width: int
) -> None:
    path = _workbook(tmp_path, b"<c" + space + b'r="' + ref + b'%d"' % (ROWS // 2) + space + b't="inlineStr">')
    meta = sheet_meta(path, "Billing")
    assert (meta.last_row, meta.last_column) == (ROWS, width)


def test_a_usual_sheet_is_as_wide_as_its_columns(tmp_path: Path) -> None:
    meta = sheet_meta(_workbook(tmp_path, None), "Billing")
    assert (meta.last_row, meta.last_column) == (ROWS, 3)


@pytest.mark.parametrize("space", [b" ", b"\n"], ids=["space", "lf"])
def test_a_far_cell_in_the_middle_of_a_long_sheet_is_refused_before_the_reader_sees_it(
    tmp_path: Path, space: bytes
) -> None:
    path = _workbook(tmp_path, b"<c" + space + b'r="XFD%d" t="inlineStr">' % (ROWS // 3), at=ROWS // 3)
    with pytest.raises(PackageProblem, match="has 16,384 columns"):
        sheet_meta(path, "Billing")
