"""The I/O floor of a dry run: the fastest way here to read a schedule's raw cells and write them back with three
outcome columns as .xlsx. No checks at all; what any tool that reads and writes these files must at least spend.

    python -m benchmarks.floor SCHEDULE OUT.xlsx
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from importer.results.packing import ResultsWorkbook


def read_cells(path: Path) -> list[list[object]]:
    if path.suffix == ".csv":
        import csv

        with path.open(newline="", encoding="utf-8") as fh:
            return [list(row) for row in csv.reader(fh)]
    from python_calamine import CalamineWorkbook

    return CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()  # type: ignore[return-value]


def write_cells(rows: list[list[object]], out: Path) -> None:
    # Packed as the importer packs its results (zlib level 1, importer.results.packing): a floor must not pay
    # what the importer does not.
    wb = ResultsWorkbook(str(out), {"constant_memory": True})
    ws = wb.add_worksheet("Schedule")
    ws.write_row(0, 0, [*rows[0], "status", "billing_milestone_id", "errors"])
    for r in range(1, len(rows)):
        ws.write_row(r, 0, [*rows[r], "valid", "", ""])
    wb.close()


def main(argv: list[str]) -> int:
    cells = read_cells(Path(argv[0]))
    # The cells live until the end; without this, each full collection walks all of them again while writing
    # (the importer does the same: pipeline._unfreezing). A floor must not pay what the importer does not.
    gc.freeze()
    write_cells(cells, Path(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
