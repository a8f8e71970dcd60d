"""Realistic billing schedules of any size, written fast (xlsxwriter constant-memory; csv module).

Six columns as a finance export has them: titles that vary, amounts in cents (some negative), five workspaces,
real date cells, a task on the upon_completion rows. Deterministic: the same size gives the same file.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path

import xlsxwriter

HEADERS = ["title", "amount_in_cents", "workspace_id", "date_to_invoice", "story_id", "billing_type"]
_SERVICES = ["Consulting", "Implementation", "Training", "Support retainer", "Data migration", "Licence resale"]
_STORIES = {1001: [5001, 5002, 5003], 1002: [5004, 5005], 1003: [5006], 1004: [5007], 1005: [5008]}  # the sandbox's


def rows(n: int) -> Iterator[list[object]]:
    rng = random.Random(n)
    start = dt.date(2026, 1, 1)
    for i in range(n):
        workspace = 1001 + i % 5
        month = start + dt.timedelta(days=(i // 5) % 365)
        if i % 7 == 3:
            story: int | None = rng.choice(_STORIES[workspace])
            billing, date = "upon_completion", None
        else:
            story, billing, date = None, "fixed_date", month
        amount = rng.randrange(-50_000, 5_000_000) if i % 50 == 0 else rng.randrange(10_000, 5_000_000)
        yield [f"{rng.choice(_SERVICES)} phase {i // 5 + 1} ({month:%b %Y})", amount, workspace, date, story, billing]


def write_xlsx(path: Path, n: int) -> None:
    wb = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    ws = wb.add_worksheet("Schedule")
    date_format = wb.add_format({"num_format": "yyyy-mm-dd"})
    ws.write_row(0, 0, HEADERS)
    for r, row in enumerate(rows(n), start=1):
        for c, value in enumerate(row):
            if isinstance(value, dt.date):
                ws.write_datetime(r, c, dt.datetime.combine(value, dt.time()), date_format)
            elif value is not None:
                ws.write(r, c, value)
    wb.close()


def write_csv(path: Path, n: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(HEADERS)
        for row in rows(n):
            out.writerow(["" if v is None else v.isoformat() if isinstance(v, dt.date) else v for v in row])


def ensure(folder: Path, n: int, kind: str) -> Path:
    """The schedule of `n` rows as .xlsx or .csv in `folder`, generated once."""
    path = folder / f"schedule_{n}.{kind}"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.tmp.{kind}")
        (write_xlsx if kind == "xlsx" else write_csv)(tmp, n)
        tmp.replace(path)
    return path
