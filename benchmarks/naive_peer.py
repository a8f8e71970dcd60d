"""What a finance engineer writes by hand: pandas + openpyxl, a Python loop of checks per row, to_excel.

    python -m benchmarks.naive_peer SCHEDULE OUT.xlsx

It checks far less than kantata-import (no Excel coordinates, no formulas, no amounts in currency units, no
hostile-file checks); it is the baseline the tool must beat by a wide margin while doing more.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pandas as pd


def check(row: pd.Series) -> list[str]:
    errors = []
    if not isinstance(row["title"], str) or not row["title"].strip():
        errors.append("title missing")
    amount = row["amount_in_cents"]
    if pd.isna(amount) or float(amount) != int(float(amount)):
        errors.append("amount_in_cents must be a whole number")
    if pd.isna(row["workspace_id"]):
        errors.append("workspace_id missing")
    date = row["date_to_invoice"]
    if not pd.isna(date) and not isinstance(date, (dt.date, pd.Timestamp)):
        try:
            dt.date.fromisoformat(str(date))
        except ValueError:
            errors.append("date_to_invoice is not a date")
    if row["billing_type"] not in ("fixed_date", "upon_completion"):
        errors.append("billing_type must be fixed_date or upon_completion")
    if row["billing_type"] == "upon_completion" and pd.isna(row["story_id"]):
        errors.append("story_id required for upon_completion")
    return errors


def main(argv: list[str]) -> int:
    path, out = Path(argv[0]), Path(argv[1])
    frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_excel(path, engine="openpyxl")
    statuses, messages = [], []
    for _, row in frame.iterrows():
        errors = check(row)
        statuses.append("invalid" if errors else "valid")
        messages.append("; ".join(errors))
    frame["status"] = statuses
    frame["billing_milestone_id"] = ""
    frame["errors"] = messages
    frame.to_excel(out, index=False, engine="openpyxl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
