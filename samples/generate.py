"""Regenerate the sample schedules: python samples/generate.py

The workspace (project) and task ids are the ones the built-in sandbox is seeded with (importer/sandbox.py).
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import openpyxl
from openpyxl.styles import Font

from importer.schedule.columns import BY_NAME

HERE = Path(__file__).resolve().parent
LABELS = [BY_NAME[n].label for n in ("title", "amount_in_cents", "workspace_id", "date_to_invoice", "story_id",
                                      "billing_type")] + ["PO number"]  # fmt: skip

PROJECTS = {
    1001: ("Acme Website Redesign", [5001, 5002, 5003]),
    1002: ("Borealis ERP Rollout", [5004, 5005]),
    1003: ("Cobalt Data Migration", [5006]),
    1004: ("Daikoku Mobile App", [5007]),
    1005: ("Gulf Logistics Portal", [5008]),
}


def valid_rows() -> list[list[object]]:
    """48 rows: monthly fixed-date fees, completion milestones on tasks, and credits (negative amounts)."""
    rows: list[list[object]] = []
    for workspace, (name, stories) in PROJECTS.items():
        base = {1001: 1250000, 1002: 980050, 1003: 1500000, 1004: 120000, 1005: 4250}[workspace]
        for month in range(1, 8):
            date = dt.date(2026, month, 28)
            rows.append([f"{name} - monthly fee {date:%b %Y}", base + month, workspace, date, None, "fixed_date",
                         f"PO-{workspace}-{month:02d}"])  # fmt: skip
        for i, story in enumerate(stories, start=1):
            rows.append([f"{name} - milestone {i} on completion", base * 2 + i, workspace, None, story,
                         "upon_completion", f"PO-{workspace}-M{i}"])  # fmt: skip
        rows.append([f"{name} - credit for delayed delivery", -(base // 10), workspace, dt.date(2026, 6, 30), None,
                     "fixed_date", f"PO-{workspace}-CR"])  # fmt: skip
    return rows


MISTAKES: list[list[object]] = [
    ["Kickoff workshop", 250000, 1001, dt.date(2026, 2, 27), None, "fixed_date", "PO-1"],
    ["Design phase", "12.50", 1001, dt.date(2026, 3, 31), None, "fixed_date", "PO-2"],
    ["Build phase", 1250000, 1001, "31/03/2026", None, "fixed_date", "PO-3"],
    ["Go-live", 900000, 1001, None, None, "upon_completion", "PO-4"],
    [None, 50000, 1002, dt.date(2026, 4, 30), None, "fixed_date", "PO-5"],
    ["Support retainer", 75000, "Borealis", dt.date(2026, 4, 30), None, "fixed_date", "PO-6"],
    ["Training", 120000, 1002, dt.date(2026, 5, 29), None, "weekly", "PO-7"],
    ["Data audit", 1234.56, 1003, dt.date(2026, 5, 29), None, "fixed_date", "PO-8"],
    ["Credit note", -15000, 1003, dt.date(2026, 6, 30), None, "fixed_date", "PO-9"],
    ["Phase 2 sign-off", 300000, 1001, None, 5004, "upon_completion", "PO-10"],
    ["Board pack", 10000, 1099, dt.date(2026, 6, 30), None, "fixed_date", "PO-11"],
]


def write_xlsx(path: Path, rows: list[list[object]], *, title: str | None = None) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Billing"
    if title:
        ws.append([title])
        ws["A1"].font = Font(bold=True, size=14)
        ws.append([])
    ws.append(LABELS)
    for cell in ws[ws.max_row]:
        cell.font = Font(bold=True)
    for row in rows:
        ws.append(row)
    for (date_cell,) in ws.iter_rows(min_row=ws.max_row - len(rows) + 1, min_col=4, max_col=4):
        date_cell.number_format = "yyyy-mm-dd"
    ws.column_dimensions["A"].width = 50
    ws.freeze_panes = f"A{ws.max_row - len(rows) + 1}"
    wb.properties.created = dt.datetime(2026, 1, 1)
    wb.properties.modified = dt.datetime(2026, 1, 1)
    wb.save(path)


def write_csv(path: Path, rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(LABELS)
        for row in rows:
            writer.writerow(["" if v is None else v.isoformat() if isinstance(v, dt.date) else v for v in row])


def main() -> None:
    rows = valid_rows()
    write_xlsx(HERE / "billing_schedule.xlsx", rows, title="Billing schedule H1 2026 (sample)")
    write_csv(HERE / "billing_schedule.csv", rows)
    write_xlsx(HERE / "schedule_with_mistakes.xlsx", MISTAKES)
    print(f"wrote {len(rows)} valid rows and {len(MISTAKES)} rows with mistakes to {HERE}")


if __name__ == "__main__":
    main()
