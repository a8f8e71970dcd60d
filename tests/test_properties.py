"""Invariants that money and idempotence rest on, over many values (hypothesis), through more than one module.

The properties of one module live beside its other tests: cell parsing in tests/schedule/test_cells.py, the
schema's column paths in tests/schedule/test_schema.py.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.schedule.loader import load_schedule
from importer.schedule.schema import validate_rows
from tests.schedule.test_cells import CENTS, as_excel_stores_it


@settings(max_examples=10, deadline=None)
@given(st.lists(CENTS, min_size=1, max_size=200))
def test_amounts_round_trip_through_a_real_workbook(
    tmp_path_factory: pytest.TempPathFactory, amounts: list[int]
) -> None:
    """Through the real loader and schema, from sheet XML written as Excel writes numbers (17 digits)."""
    rows = "".join(
        f'<row r="{n}"><c r="A{n}" t="inlineStr"><is><t>T{n}</t></is></c>'
        f'<c r="B{n}"><v>{format(as_excel_stores_it(c), ".17g")}</v></c><c r="C{n}"><v>1001</v></c></row>'
        for n, c in enumerate(amounts, start=2)
    )
    path = _workbook(tmp_path_factory.mktemp("wb"), rows)
    validated = validate_rows(load_schedule(path))
    assert validated.issues == []
    assert validated.rows["amount_in_cents"].tolist() == amounts


def _workbook(folder: Path, rows: str) -> Path:
    buffer = io.BytesIO()
    wb = openpyxl.Workbook()
    wb.save(buffer)
    header = ('<row r="1"><c r="A1" t="inlineStr"><is><t>title</t></is></c><c r="B1" t="inlineStr"><is><t>amount'
              '</t></is></c><c r="C1" t="inlineStr"><is><t>workspace_id</t></is></c></row>')  # fmt: skip
    sheet = ('<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/'
             f'spreadsheetml/2006/main"><sheetData>{header}{rows}</sheetData></worksheet>')  # fmt: skip
    source = zipfile.ZipFile(buffer)
    path = folder / "amounts.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for item in source.infolist():
            name = item.filename
            zf.writestr(item, sheet.encode() if name == "xl/worksheets/sheet1.xml" else source.read(name))
    return path
