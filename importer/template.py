"""The blank schedule users fill in: generated from `columns.FIELDS`, so its headers always match the loader.

`templates/billing_schedule.xlsx` is this function's output, committed; a test regenerates it and compares.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import xlsxwriter

from importer.columns import FIELDS, LOCAL_ONLY
from importer.errors import ConfigError

SHEET = "Billing"
COLUMNS = tuple(f for f in FIELDS if f.name not in LOCAL_ONLY)  # one amount column to fill: cents
DATA_ROWS = 1000  # rows that carry the dropdown and the formats; users may go past them
_WIDTHS = {"text": 30, "cents": 16, "id": 12, "date": 16, "choice": 18, "bool": 14}
_FIXED_DATE = dt.datetime(2026, 1, 1)  # stable document properties, so regenerating changes nothing


def write_template(path: Path, *, overwrite: bool = False) -> Path:
    path = path.expanduser()
    if path.suffix.casefold() != ".xlsx":
        raise ConfigError(f"template {path} must end in .xlsx")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; choose another name (a template never overwrites a file)")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.xlsx")
    os.close(fd)
    try:
        _write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write(path: Path) -> None:
    wb = xlsxwriter.Workbook(str(path))
    wb.set_properties({"title": "Kantata billing schedule", "created": _FIXED_DATE, "author": "kantata-import"})
    bold = wb.add_format({"bold": True, "bg_color": "#D9E1F2", "border": 1})
    required = wb.add_format({"bold": True, "bg_color": "#FCE4D6", "border": 1})
    formats = {
        "date": wb.add_format({"num_format": "yyyy-mm-dd"}),
        "cents": wb.add_format({"num_format": "0"}),
        "id": wb.add_format({"num_format": "0"}),
        "text": wb.add_format({"num_format": "@"}),  # typed ids and titles stay text, never numbers or dates
    }
    ws = wb.add_worksheet(SHEET)
    last = DATA_ROWS
    for c, f in enumerate(COLUMNS):
        ws.write_string(0, c, f.label, required if f.required else bold)
        ws.set_column(c, c, _WIDTHS[f.kind], formats.get(f.kind))
        validation: dict[str, object] = {"input_title": f.label[:32], "input_message": f.help[:255]}
        if f.kind == "choice":
            validation |= {"validate": "list", "source": list(f.choices),
                           "error_message": f"Choose {' or '.join(f.choices)}."}  # fmt: skip
        elif f.kind in ("cents", "id"):
            low = -(10**15) if f.kind == "cents" else 1
            validation |= {"validate": "integer", "criteria": "between", "minimum": low, "maximum": 10**15,
                           "error_message": "Enter a whole number (no decimals)."}  # fmt: skip
        elif f.kind == "date":
            validation |= {"validate": "date", "criteria": ">", "value": dt.date(1900, 1, 1),
                           "error_message": "Enter a date, e.g. 2026-03-31."}  # fmt: skip
        elif f.kind == "bool":
            validation |= {"validate": "list", "source": ["TRUE", "FALSE"]}
        else:
            validation |= {"validate": "any"}
        ws.data_validation(1, c, last, c, validation)
    ws.freeze_panes(1, 0)
    _instructions(wb)
    wb.close()


def _instructions(wb: xlsxwriter.Workbook) -> None:
    ws = wb.add_worksheet("Instructions")
    bold = wb.add_format({"bold": True})
    wrap = wb.add_format({"text_wrap": True, "valign": "top"})
    ws.set_column(0, 0, 30)
    ws.set_column(1, 1, 100, wrap)
    lines = [
        ("How to use", f'Fill in one row per billing milestone on the "{SHEET}" sheet, from row 2 down. '
         "Orange headers are required. Then run: kantata-import validate <this file>, and when it reports "
         "no problems: kantata-import upload <this file>."),
        ("Amounts", "Amount (cents) is a whole number in the smallest unit of the project's currency: "
         "1,234.56 USD is 123456. Nothing is ever rounded: a decimal is an error."),
        ("Re-running", "Running upload again on the same file never creates a milestone twice: rows already "
         "in Kantata are reported as exists with their id."),
        ("Other columns", "You may add your own columns (notes, PO numbers); they are kept in the results "
         "workbook and not sent."),
        ("", ""),
        ("Column", "What to enter"),
    ]  # fmt: skip
    lines += [(f.label, f.help) for f in COLUMNS]
    lines += [
        ("", ""),
        (
            "Amount (optional)",
            "You may add a column headed Amount and give amounts in currency units "
            "(1234.56) instead of cents; it is converted exactly.",
        ),
    ]
    for r, (label, text) in enumerate(lines):
        ws.write_string(r, 0, label, bold)
        ws.write_string(r, 1, text)
