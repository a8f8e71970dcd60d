"""The blank schedule users fill in: generated from `columns.FIELDS`, so its headers always match the loader.

Sheets: Billing (to fill in), Example (two filled-in rows, one per billing type), Workspaces and Tasks (only
when made with a token: the projects and tasks it can see, to look ids up in, and what the Project ID and Task ID
dropdowns offer) and Instructions.

The Billing sheet has the columns a finance user fills: Title, Amount (in currency units), Project ID, Date to
invoice, Billing type, Task ID, and Reference, a column of their own for their own id (kept in the results, not
sent). The external-reference fields come only when asked for (`external`); cents remain accepted in an
`Amount (cents)` column the user adds.
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
from importer.kantata import StoryInfo, WorkspaceInfo
from importer.results.atomic import write_then_rename
from importer.schedule import BY_NAME, EXT_FIELDS, FIELDS, Field, subunit

SHEET = "Billing"
REFERENCE = Field("Reference", "Reference", "text",
                  help="Optional: your own id for the row (a PO or invoice line). Kept in the results, "
                  "not sent.")  # fmt: skip
# What a finance user fills, in the order they think of it; the milestone id is the results workbook's to carry,
# not the user's to type, and amounts in currency units (cents stay accepted, in a column the user adds).
BASIC = ("title", "amount", "workspace_id", "date_to_invoice", "billing_type", "story_id")
COLUMNS: tuple[Field, ...] = (*(BY_NAME[n] for n in BASIC), REFERENCE)
EXTERNAL: tuple[Field, ...] = (*COLUMNS, *(f for f in FIELDS if f.name in EXT_FIELDS))
DATA_ROWS = 1000  # rows that carry the dropdown and the formats; users may go past them
_WIDTHS = {"text": 30, "cents": 16, "money": 16, "id": 12, "date": 16, "choice": 18, "bool": 14}
_FIXED_DATE = dt.datetime(2026, 1, 1)  # stable document properties, so regenerating changes nothing
# The Example sheet's rows, by field name; the ids are the built-in sandbox's (task 5003 is in project 1001), so
# `kantata-import validate --sandbox --sheet Example` passes. "Notes" is a column of the user's own: kept, not sent.
EXAMPLE_ROWS: tuple[dict[str, Any], ...] = (
    {"title": "Design phase - sign-off", "amount": 12500.00, "workspace_id": 1001,
     "date_to_invoice": dt.datetime(2026, 3, 31), "billing_type": "fixed_date", "Reference": "PO-4471",
     "Notes": "fixed_date: invoiceable on 2026-03-31. 12,500.00 in the project's currency (USD here); in a JPY "
              "project amounts have no decimals."},
    {"title": "Launch - on completion", "amount": 25000.00, "workspace_id": 1001, "story_id": 5003,
     "billing_type": "upon_completion", "Reference": "PO-4472",
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


def write_template(
    path: Path,
    *,
    overwrite: bool = False,
    workspaces: Sequence[WorkspaceInfo] | None = None,
    tasks: Sequence[StoryInfo] | None = None,
    external: bool = False,
) -> Path:
    """Write the template atomically; `workspaces` and `tasks` (what a token can see) add the Workspaces and
    Tasks sheets and feed the Project ID and Task ID dropdowns; `external` adds the external-reference columns."""
    path = check_template_path(path, overwrite=overwrite)
    return write_then_rename(path, lambda tmp: _write(tmp, workspaces, tasks, EXTERNAL if external else COLUMNS))


def _write(
    path: Path,
    workspaces: Sequence[WorkspaceInfo] | None,
    tasks: Sequence[StoryInfo] | None,
    columns: tuple[Field, ...],
) -> None:
    wb = xlsxwriter.Workbook(str(path))
    wb.set_properties({"title": "Kantata billing schedule", "created": _FIXED_DATE, "author": "kantata-import"})
    bold = wb.add_format({"bold": True, "bg_color": "#D9E1F2", "border": 1})
    required = wb.add_format({"bold": True, "bg_color": "#FCE4D6", "border": 1})
    formats = {
        "date": wb.add_format({"num_format": "yyyy-mm-dd"}),
        "cents": wb.add_format({"num_format": "0"}),
        "money": wb.add_format({"num_format": "#,##0.00"}),
        "id": wb.add_format({"num_format": "0"}),
        "text": wb.add_format({"num_format": "@"}),  # typed ids and titles stay text, never numbers or dates
    }
    ws = wb.add_worksheet(SHEET)
    last = DATA_ROWS
    for c, f in enumerate(columns):
        ws.write_string(0, c, f.label, required if f.required or f.name == "amount" else bold)
        ws.set_column(c, c, _WIDTHS[f.kind], formats.get(f.kind))
        validation: dict[str, object] = {"input_title": f.label[:32], "input_message": f.help[:255]}
        listed = _listed(f.name, workspaces, tasks)
        if listed is not None:  # ids to pick from the lookup sheet; any other id is still allowed (a warning)
            validation |= {"validate": "list", "source": listed, "error_type": "warning",
                           "error_message": "Not one the token could see when this template was made."}  # fmt: skip
        elif f.kind == "money":
            validation |= {"validate": "decimal", "criteria": "between", "minimum": -(10**13), "maximum": 10**13,
                           "error_message": "Enter an amount, e.g. 1234.56."}  # fmt: skip
        elif f.kind == "choice":
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
    _example(wb, bold, required, formats, columns)
    if workspaces is not None:
        _workspaces(wb, bold, workspaces)
    if tasks is not None:
        _tasks(wb, bold, tasks, {w.id: w.title for w in workspaces or ()})
    _instructions(wb, columns)
    wb.close()


def _listed(name: str, workspaces: Sequence[WorkspaceInfo] | None, tasks: Sequence[StoryInfo] | None) -> str | None:
    """The lookup sheet's id range a dropdown offers, when there is one with ids in it."""
    if name == "workspace_id" and workspaces:
        return f"=Workspaces!$A$2:$A${len(workspaces) + 1}"
    if name == "story_id" and tasks:
        return f"=Tasks!$B$2:$B${len(tasks) + 1}"
    return None


def _example(
    wb: xlsxwriter.Workbook, bold: Format, required: Format, formats: dict[str, Format], columns: tuple[Field, ...]
) -> None:
    """The Billing sheet's columns with two filled-in rows, one of each billing type."""
    ws = wb.add_worksheet("Example")
    for c, f in enumerate(columns):
        ws.write_string(0, c, f.label, required if f.required or f.name == "amount" else bold)
        ws.set_column(c, c, _WIDTHS[f.kind], formats.get(f.kind))
    notes = len(columns)
    ws.write_string(0, notes, NOTES, bold)
    ws.set_column(notes, notes, 90)
    for r, row in enumerate(EXAMPLE_ROWS, start=1):
        for c, name in enumerate([*(f.name for f in columns), NOTES]):
            value = row.get(name)
            if isinstance(value, dt.datetime):
                ws.write_datetime(r, c, value, formats["date"])
            elif isinstance(value, float):
                ws.write_number(r, c, value, formats["money"])
            elif isinstance(value, int):
                ws.write_number(r, c, value)
            elif isinstance(value, str):
                ws.write_string(r, c, value)
    ws.freeze_panes(1, 0)


def _workspaces(wb: xlsxwriter.Workbook, bold: Format, workspaces: Sequence[WorkspaceInfo]) -> None:
    """The projects the token can see: ids to pick in Project ID, and what an amount counts in each."""
    ws = wb.add_worksheet("Workspaces")
    for c, (text, width) in enumerate((("Project ID", 12), ("Title", 50), ("Currency", 12),
                                       ("Amount (cents) would count", 40))):  # fmt: skip
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


def _tasks(wb: xlsxwriter.Workbook, bold: Format, tasks: Sequence[StoryInfo], titles: dict[int, str]) -> None:
    """The tasks the token can see, by project: ids to pick in Task ID for an upon_completion row."""
    ws = wb.add_worksheet("Tasks")
    for c, (text, width) in enumerate((("Project ID", 12), ("Task ID", 12), ("Task", 50), ("Project", 40))):
        ws.write_string(0, c, text, bold)
        ws.set_column(c, c, width)
    for r, t in enumerate(sorted(tasks, key=lambda t: (t.workspace_id or 0, t.id)), start=1):
        if t.workspace_id is not None:
            ws.write_number(r, 0, t.workspace_id)
            ws.write_string(r, 3, titles.get(t.workspace_id, ""))
        ws.write_number(r, 1, t.id)
        ws.write_string(r, 2, t.title)
    ws.freeze_panes(1, 0)
    ws.autofilter(0, 0, max(len(tasks), 1), 3)


def _instructions(wb: xlsxwriter.Workbook, columns: tuple[Field, ...]) -> None:
    ws = wb.add_worksheet("Instructions")
    bold = wb.add_format({"bold": True})
    wrap = wb.add_format({"text_wrap": True, "valign": "top"})
    ws.set_column(0, 0, 30)
    ws.set_column(1, 1, 100, wrap)
    lines = [
        ("How to use", f'Fill in one row per billing milestone on the "{SHEET}" sheet, from row 2 down. '
         "Orange headers are required. Then run: kantata-import validate <this file>, and when it reports "
         "no problems: kantata-import upload <this file>."),
        ("Amounts", "Amount is in the project's currency, e.g. 1234.56 (no more decimals than the currency has; "
         "JPY has none). Nothing is ever rounded. You may instead add a column headed Amount (cents) with whole "
         "cents: 1,234.56 is 123456."),
        ("Re-running", "Running upload again on the same file never creates a milestone twice: rows already "
         "in Kantata are reported as unchanged with their id."),
        ("Other columns", "You may add your own columns (notes, PO numbers); they are kept in the results "
         "workbook and not sent."),
        ("Example", "The Example sheet holds two filled-in rows: a fixed_date one and an upon_completion one "
         "(its ids are the built-in sandbox's; use your own)."),
        ("Workspaces and Tasks", "Made with kantata-import template --online, the Workspaces sheet lists the "
         "projects your token can see (id, title, currency) and the Tasks sheet their tasks; the Project ID "
         "and Task ID cells offer them in a dropdown."),
        ("Check against Kantata", "kantata-import validate <this file> --online also checks, reading only, "
         "that each project and task exists and belong together, and which rows are already in Kantata."),
        ("", ""),
        ("Column", "What to enter"),
    ]  # fmt: skip
    lines += [(f.label, f.help) for f in columns]
    cents = BY_NAME["amount_in_cents"]
    lines += [("", ""), (f"{cents.label} (optional)", "Instead of Amount: " + cents.help.removeprefix("Required. "))]
    for r, (label, text) in enumerate(lines):
        ws.write_string(r, 0, label, bold)
        ws.write_string(r, 1, text)
