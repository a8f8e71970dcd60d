"""The largest schedule that is read, checked before the work it would cost (docs/files.md, "Limits").

Each limit exists because something past it cannot end well: the results workbook could not hold the outcome
columns (they would be dropped, and with them the ids of what an upload created), or reading it would take
minutes and gigabytes before any answer. A file past a limit is refused with a message naming the limit and the
file's own figure, and nothing is sent.
"""

from __future__ import annotations

from importer.schedule.columns import OUTCOME_COLUMNS

EXCEL_COLUMNS = 16_384  # XFD, Excel's last column
EXCEL_ROWS = 1_048_576  # Excel's last row
# The results workbook repeats the schedule's columns and adds the outcome columns after them.
MAX_COLUMNS = EXCEL_COLUMNS - len(OUTCOME_COLUMNS)
# A sheet is read whole into memory, every cell of its used area (rows x columns) one value: this is room for
# Excel's full height at 19 columns, and it keeps a lying or sparse sheet from claiming gigabytes.
MAX_CELLS = 20_000_000
MAX_FILE_BYTES = 512 * 2**20  # a CSV of this size is already ~5 million rows
MAX_HEADER_BYTES = 2**20  # the first line of a CSV (or the header row) is never this long in a real schedule
MAX_CELL_CHARS = 131_072  # a cell this long is no milestone's text (Excel itself holds 32,767 characters)


def columns_over(width: int) -> str | None:
    """The sentence for a sheet wider than MAX_COLUMNS, or None."""
    if width <= MAX_COLUMNS:
        return None
    return (
        f"has {width:,} columns, over the limit of {MAX_COLUMNS:,} (Excel's {EXCEL_COLUMNS:,} less the "
        f"{len(OUTCOME_COLUMNS)} outcome columns the results workbook adds); delete the unused columns on the "
        "right, or copy the schedule's columns into a new file"
    )


def cells_over(rows: int, width: int) -> str | None:
    """The sentence for a used area (rows x columns) over MAX_CELLS, or None."""
    if rows * width <= MAX_CELLS:
        return None
    return (
        f"spans {rows:,} rows by {width:,} columns ({rows * width:,} cells), over the limit of {MAX_CELLS:,} "
        "cells; delete the unused rows and columns (a stray value far below or right of the data makes the "
        "used area that large), or split the schedule into smaller files"
    )


def file_over(size: int) -> str | None:
    if size <= MAX_FILE_BYTES:
        return None
    return f"is {size / 2**20:,.0f} MiB, over the limit of {MAX_FILE_BYTES // 2**20} MiB; split it into smaller files"
