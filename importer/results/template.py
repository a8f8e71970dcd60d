"""The blank schedule users fill in: generated from `columns.FIELDS`, so its headers always match the loader.

Sheets: Billing (to fill in), Example (two filled-in rows, one per billing type), Workspaces (only when made
with a token: the projects it can see, to look ids up in) and Instructions.
`templates/billing_schedule.xlsx` is this function's output without projects, committed; a test regenerates it
and compares.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xlsxwriter
from xlsxwriter.format import Format

from importer.errors import ConfigError
from importer.kantata import WorkspaceInfo
from importer.results.atomic import write_then_rename
from importer.schedule import FIELDS, IDENTITY, LOCAL_ONLY, subunit

SHEET = "Billing"
# One amount column to fill (cents); the milestone id is the results workbook's to carry, not the user's to type.
COLUMNS = tuple(f for f in FIELDS if f.name not in LOCAL_ONLY and f.name != IDENTITY)
DATA_ROWS = 1000  # rows that carry the dropdown and the formats; users may go past them
_WIDTHS = {"text": 30, "cents": 16, "id": 12, "date": 16, "choice": 18, "bool": 14}
_FIXED_DATE = dt.datetime(2026, 1, 1)  # stable document properties, so regenerating changes nothing
# The Example sheet's rows, by field name; the ids are the built-in sandbox's (task 5003 is in project 1001), so
# `kantata-import validate --sandbox --sheet Example` passes. "Notes" is a column of the user's own: kept, not sent.
EXAMPLE_ROWS: tuple[dict[str, Any], ...] = (
    {"title": "Design phase - sign-off", "amount_in_cents": 1250000, "workspace_id": 1001,
     "date_to_invoice": dt.datetime(2026, 3, 31), "billing_type": "fixed_date",
     "Notes": "fixed_date: invoiceable on 2026-03-31. 1250000 is 12,500.00 in a USD project (cents); "
              "in a JPY project it would be 1,250,000 yen."},
    {"title": "Launch - on completion", "amount_in_cents": 2500000, "workspace_id": 1001, "story_id": 5003,
     "billing_type": "upon_completion",
     "Notes": "upon_completion: invoiceable when task 5003 of project 1001 is completed; no date needed."},
)  # fmt: skip
NOTES = "Notes"


def check_template_path(path: Path, *, overwrite: bool = False) -> Path:
    """Refuse a path the template cannot go to, before anything else is done (such as asking Kantata)."""
    path = path.expanduser()
    if path.suffix.casefold() != ".xlsx":
        raise ConfigError(f"template {path} must end in .xlsx")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; choose another name (a template never overwrites a file)")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist")
    return path


def write_template(path: Path, *, overwrite: bool = False, workspaces: Sequence[WorkspaceInfo] | None = None) -> Path:
    """Write the template atomically; `workspaces` (what a token can see) adds the Workspaces sheet."""
    path = check_template_path(path, overwrite=overwrite)
    return write_then_rename(path, lambda tmp: _write(tmp, workspaces))


def _write(path: Path, workspaces: Sequence[WorkspaceInfo] | None) -> None:
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
    _example(wb, bold, required, formats)
    if workspaces is not None:
        _workspaces(wb, bold, workspaces)
    _instructions(wb)
    wb.close()


def _example(wb: xlsxwriter.Workbook, bold: Format, required: Format, formats: dict[str, Format]) -> None:
    """The Billing sheet's columns with two filled-in rows, one of each billing type."""
    ws = wb.add_worksheet("Example")
    for c, f in enumerate(COLUMNS):
        ws.write_string(0, c, f.label, required if f.required else bold)
        ws.set_column(c, c, _WIDTHS[f.kind], formats.get(f.kind))
    notes = len(COLUMNS)
    ws.write_string(0, notes, NOTES, bold)
    ws.set_column(notes, notes, 90)
    for r, row in enumerate(EXAMPLE_ROWS, start=1):
        for c, name in enumerate([*(f.name for f in COLUMNS), NOTES]):
            value = row.get(name)
            if isinstance(value, dt.datetime):
                ws.write_datetime(r, c, value, formats["date"])
            elif isinstance(value, int):
                ws.write_number(r, c, value)
            elif isinstance(value, str):
                ws.write_string(r, c, value)
    ws.freeze_panes(1, 0)


def _workspaces(wb: xlsxwriter.Workbook, bold: Format, workspaces: Sequence[WorkspaceInfo]) -> None:
    """The projects the token can see: ids to copy into Project ID, and what Amount (cents) means in each."""
    ws = wb.add_worksheet("Workspaces")
    for c, (text, width) in enumerate((("Project ID", 12), ("Title", 50), ("Currency", 12),
                                       ("Amount (cents) counts", 40))):  # fmt: skip
        ws.write_string(0, c, text, bold)
        ws.set_column(c, c, width)
    for r, w in enumerate(workspaces, start=1):
        ws.write_number(r, 0, w.id)
        ws.write_string(r, 1, w.title)
        if w.currency is None:
            ws.write_string(r, 3, "(Kantata shows the currency only to users with financial access)")
        else:
            ws.write_string(r, 2, w.currency)
            ws.write_string(r, 3, subunit(w.currency))
    ws.freeze_panes(1, 0)


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
         "in Kantata are reported as unchanged with their id."),
        ("Other columns", "You may add your own columns (notes, PO numbers); they are kept in the results "
         "workbook and not sent."),
        ("Example", "The Example sheet holds two filled-in rows: a fixed_date one and an upon_completion one "
         "(its ids are the built-in sandbox's; use your own)."),
        ("Workspaces", "Made with kantata-import template --online, the Workspaces sheet lists the projects "
         "your token can see: id, title and currency."),
        ("Check against Kantata", "kantata-import validate <this file> --online also checks, reading only, "
         "that each project and task exists and belong together, and which rows are already in Kantata."),
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
