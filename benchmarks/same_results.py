"""The results workbook is the same whichever reader loaded the schedule (python-calamine, or the openpyxl
fallback used for packages calamine cannot read): every cell of every sheet, but the run's time stamp.

    .venv/bin/python -m benchmarks.same_results [SCHEDULE.xlsx]     (default: the benchmark's 100k-row file)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from python_calamine import CalamineWorkbook

import importer.schedule.loader
from benchmarks.generate import ensure
from importer.pipeline import run_validate


def cells(path: Path) -> dict[str, list[list[Any]]]:
    book = CalamineWorkbook.from_path(str(path))
    sheets = {name: book.get_sheet_by_name(name).to_python() for name in book.sheet_names}
    sheets["Summary"] = [row for row in sheets["Summary"] if row and row[0] != "Run at"]
    return sheets


def main(argv: list[str]) -> int:
    folder = Path(tempfile.gettempdir()) / "kantata-import-bench"
    folder.mkdir(parents=True, exist_ok=True)
    schedule = Path(argv[0]) if argv else ensure(folder, 100_000, "xlsx")
    started = time.perf_counter()
    fast = run_validate(schedule, output=folder / "same_fast.xlsx")
    fast_seconds = time.perf_counter() - started

    def refuse(path: Path) -> None:
        raise RuntimeError("calamine left out, to take the fallback reader")

    importer.schedule.loader._CalamineBook = refuse  # type: ignore[assignment,misc]
    started = time.perf_counter()
    slow = run_validate(schedule, output=folder / "same_fallback.xlsx")
    slow_seconds = time.perf_counter() - started
    a, b = cells(fast.output), cells(slow.output)
    same = a == b
    print(f"{schedule.name}: {fast.rows} rows; calamine {fast_seconds:.1f} s, openpyxl {slow_seconds:.1f} s; "
          f"results workbooks {'identical' if same else 'DIFFERENT'} in every cell of {', '.join(a)}")  # fmt: skip
    if not same:
        for name in a:
            if a[name] != b.get(name):
                diff = next(i for i, (x, y) in enumerate(zip(a[name], b.get(name, []), strict=False)) if x != y)
                print(f"  {name}, row {diff + 1}: {a[name][diff]} != {b[name][diff]}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
