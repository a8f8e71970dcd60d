"""The blank schedule: generated from the column table, committed, and the committed file still matches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openpyxl
import pytest
from openpyxl.utils import get_column_letter

from importer.cli import main
from importer.errors import ConfigError
from importer.loader import load_schedule
from importer.template import COLUMNS, write_template

COMMITTED = Path(__file__).resolve().parent.parent / "templates" / "billing_schedule.xlsx"


def _content(path: Path) -> dict[str, Any]:
    """Everything a user sees: cell values per sheet, and each data validation's range, type and list."""
    wb = openpyxl.load_workbook(path)
    return {
        ws.title: {
            "cells": [[c.value for c in row] for row in ws.iter_rows()],
            "validations": sorted(
                (str(dv.sqref), dv.type, dv.formula1, dv.promptTitle, dv.prompt)
                for dv in ws.data_validations.dataValidation
            ),
            "freeze": ws.freeze_panes,
        }
        for ws in wb.worksheets
    }


def test_committed_template_matches_what_the_code_writes(tmp_path: Path) -> None:
    fresh = write_template(tmp_path / "fresh.xlsx")
    assert _content(COMMITTED) == _content(fresh), "run: kantata-import template -o templates/billing_schedule.xlsx"


def test_template_headers_dropdown_formats_and_instructions(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    assert main(["template", "-o", str(path)]) == 0
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Billing", "Instructions"]
    ws = wb["Billing"]
    assert [c.value for c in ws[1]] == [f.label for f in COLUMNS]
    validations = {str(dv.sqref): dv for dv in ws.data_validations.dataValidation}
    billing = next(i for i, f in enumerate(COLUMNS) if f.name == "billing_type")
    letter = get_column_letter(billing + 1)
    dropdown = validations[f"{letter}2:{letter}1001"]
    assert dropdown.type == "list" and dropdown.formula1 == '"fixed_date,upon_completion"'
    amount = validations["B2:B1001"]
    assert amount.type == "whole" and ws.column_dimensions["B"].width > 0
    assert ws.freeze_panes == "A2"
    help_lines = [r[0].value for r in wb["Instructions"].iter_rows() if r[0].value]
    assert {f.label for f in COLUMNS} <= set(help_lines)


def test_template_is_a_schedule_the_loader_accepts(tmp_path: Path) -> None:
    raw = load_schedule(write_template(tmp_path / "t.xlsx"))
    assert raw.sheet == "Billing" and raw.header_row == 1 and len(raw.frame) == 0
    assert set(raw.fields) == {f.name for f in COLUMNS}


def test_template_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    path.write_bytes(b"my work")
    with pytest.raises(ConfigError, match="already exists"):
        write_template(path)
    assert path.read_bytes() == b"my work"
