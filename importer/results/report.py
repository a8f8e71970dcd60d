"""Outcomes -> the results workbook the user opens in Excel.

The results sheet keeps the input's rows: every row sits at the same row number as in the input (title block
and blank rows included), so "row 17" means the same row in both files. The outcome columns come first, where
they are seen without scrolling (status, milestone id, the amount in currency units and the cents Kantata got,
what an update changes, what to fix), and the user's columns follow in their order, as they were. When the input
is itself an earlier results workbook, its outcome columns are reused in place rather than duplicated.

Written with xlsxwriter in constant-memory mode (faster than openpyxl, its memory not growing with the rows), to
a temporary file that is renamed into place, so a crash never leaves half a workbook, and never over the input.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xlsxwriter
from xlsxwriter.worksheet import Worksheet

from importer.errors import CellIssue, ConfigError, ScheduleError
from importer.outcomes import NotInSchedule, Outcome, Status
from importer.progress import CHUNK, Tick, Ticker
from importer.results.atomic import write_then_rename
from importer.results.packing import ResultsWorkbook
from importer.results.totals import ProjectTotal, decimals_for, format_units
from importer.schedule import (
    BY_NAME,
    EXCEL_COLUMNS,
    MAX_EXACT_FLOAT_INT,
    OUTCOME_COLUMNS,
    RawSchedule,
    as_text,
    column_index,
    column_letter,
    columns_over,
    normalise_header,
)

if TYPE_CHECKING:
    import pandas as pd

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")  # OWASP's list for CSV/spreadsheet injection
MAX_CELL_TEXT = 32767  # Excel's limit per cell
EXACT_UNITS = 10**15  # Excel shows 15 significant digits: an amount of more cents is shown as exact text
Cut = tuple[int, int, int]  # a cell shown cut in the results: (row, column index, characters it holds)
STATUS_COLOURS = {
    Status.VALID: "#E2EFDA",
    Status.CREATED: "#C6EFCE",
    Status.UNCHANGED: "#DDEBF7",
    Status.UPDATE: "#FFF2CC",
    Status.UPDATED: "#FFE699",
    Status.CONFLICT: "#F4B084",
    Status.INVALID: "#FFC7CE",
    Status.REJECTED: "#F8CBAD",
    Status.NOT_SENT: "#FFEB9C",
}


KANTATA_FIELD = re.compile(r" \(field ([A-Za-z_.]+)\)$")  # how a refusal names the field Kantata objected to
BASE_FIELD = "base"  # Kantata's word for "the record as a whole": no column to point at


@dataclass(frozen=True, slots=True)
class Money:
    """Each row's amount as it is sent (integer cents) and its project, and each project's currency as far as
    known: what the results show in currency units, with the currency's decimals."""

    cents: Mapping[int, int] = field(default_factory=dict)  # row -> amount_in_cents
    projects: Mapping[int, int] = field(default_factory=dict)  # row -> workspace_id
    currencies: Mapping[int, str] = field(default_factory=dict)  # workspace_id -> ISO code
    decimals: int = 2  # for a project whose currency is not known (--currency-decimals)

    @classmethod
    def of(cls, rows: pd.DataFrame, currencies: Mapping[int, str] | None = None, decimals: int = 2) -> Money:
        """From the checked rows (`workspace_id`, `amount_in_cents`, indexed by row) of those that parsed."""
        both = rows[["workspace_id", "amount_in_cents"]].dropna()
        index = both.index.tolist()
        return cls(dict(zip(index, map(int, both["amount_in_cents"].tolist()), strict=True)),
                   dict(zip(index, map(int, both["workspace_id"].tolist()), strict=True)),
                   dict(currencies or {}), decimals)  # fmt: skip

    def decimals_of(self, workspace: int) -> int:
        return decimals_for(self.currencies.get(workspace), self.decimals)


def in_words(message: str, fields: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """Kantata's refusal as the user reads it, and the column it concerns: "(field story_id)" becomes the Task ID
    column's letter (when the schedule has it), "(field base)" (the record as a whole) is dropped."""
    found = KANTATA_FIELD.search(message)
    if found is None:
        return message, None
    name, text = found.group(1), message[: found.start()]
    if name == BASE_FIELD:
        return text, None
    letter = (fields or {}).get(name)
    label = BY_NAME[name].label if name in BY_NAME else name
    return (text.replace("Kantata: ", f"Kantata: {label}: ", 1) if text.startswith("Kantata: ") else text), letter


MISSING_SHEET = "Not in this schedule"  # the sheet of milestones no row matches, written only when there are any


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the Summary sheet says about the run."""

    dry_run: bool
    base_url: str | None  # sanitised; None for an offline dry run
    started: dt.datetime
    note: str = ""  # why the run stopped early, if it did
    notes: tuple[str, ...] = ()  # remarks of the run besides the file's (online checks: currencies, requests)
    not_in_schedule: tuple[NotInSchedule, ...] = ()  # milestones of this importer that no row matches


def check_output(output: Path, schedule: Path) -> Path:
    """Refuse to write over the input (or to a place that cannot hold the results)."""
    out = output.expanduser()
    try:
        return _checked_output(out, schedule)
    except ValueError:  # a NUL in the name: no file system takes it
        raise ConfigError(f"cannot write results to {out!r}: the name has a NUL character; choose another") from None
    except OSError as exc:  # a name too long, a link loop: the system's words, which name the cause
        raise ConfigError(f"cannot write results to {out}: {exc.strerror or exc}; choose another place with "
                          "--output") from None  # fmt: skip


def _checked_output(out: Path, schedule: Path) -> Path:
    if out.suffix.casefold() != ".xlsx":
        raise ConfigError(f"results workbook {out} must end in .xlsx")
    same = out.resolve() == schedule.resolve()
    with contextlib.suppress(OSError):
        same = same or (out.exists() and os.path.samefile(out, schedule))
    if same:
        raise ConfigError(f"--output {out} is the input schedule; results are never written over the input")
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write results to {out}: folder {out.parent} does not exist")
    if out.is_dir():  # else found only when the finished workbook is renamed into place: after an upload
        raise ConfigError(f"cannot write results to {out}: it is a folder; name a file, e.g. {out / 'results.xlsx'}")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        # Checked before anything is sent: an upload whose results cannot be written would leave the user
        # without the new ids (the journal beside it could not be written either).
        raise ConfigError(f"cannot write results to {out}: permission denied; choose another place with --output")
    return out


def cut_note(raw: RawSchedule, cut: Sequence[Cut]) -> str:
    """The note for the terminal and --json: the Errors sheet lists each cell, where few look."""
    first = ", ".join(f"{column_letter(c)}{row}" for row, c, _ in cut[:3]) + (", ..." if len(cut) > 3 else "")
    many = len(cut) != 1
    return (f"{len(cut)} cell{'s' if many else ''} of {raw.path.name} ({first}) hold{'' if many else 's'} more "
            f"text than an Excel cell ({MAX_CELL_TEXT:,} characters): shown cut in the results workbook (your file "
            "keeps the whole text, and the whole text is what is sent)")  # fmt: skip


def outcome_columns(raw: RawSchedule) -> tuple[dict[str, int], int]:
    """Column index for each outcome column, and how far the user's columns move right to make room.

    A fresh schedule: the outcome columns first, the user's after them. A results workbook fed back in: its own
    outcome columns where they are (nothing moves), any it lacks (an earlier layout's) after the rest. A
    ScheduleError when a column would fall past Excel's last: xlsxwriter drops such a cell without a word, and
    with it the id of a milestone an upload created, so this is asked before anything is sent (and again when
    writing)."""
    existing = {normalise_header(raw.headers[column_index(letter)]): column_index(letter)
                for letter in raw.previous_outcomes}  # fmt: skip
    width = len(raw.headers)
    placed: dict[str, int] = {}
    if not existing:
        placed, offset = {name: c for c, name in enumerate(OUTCOME_COLUMNS)}, len(OUTCOME_COLUMNS)
        width += offset
    else:
        offset = 0
        for name in OUTCOME_COLUMNS:
            if normalise_header(name) in existing:
                placed[name] = existing[normalise_header(name)]
            else:
                placed[name] = width
                width += 1
    if width > EXCEL_COLUMNS:
        raise ScheduleError(columns_over(len(raw.headers)) or "has no room for the outcome columns",
                            path=raw.path, sheet=raw.sheet)  # fmt: skip
    return placed, offset


def default_output(schedule: Path) -> Path:
    return schedule.with_name(f"{schedule.stem}.results.xlsx")


def write_results(
    raw: RawSchedule,
    outcomes: Mapping[int, Outcome],
    issues: Sequence[CellIssue],
    totals: Sequence[ProjectTotal],
    info: RunInfo,
    output: Path,
    *,
    on_progress: Tick | None = None,
    cut: list[Cut] | None = None,
    money: Money | None = None,
) -> Path:
    """Write atomically: a temp file beside the target, renamed over it only once complete.

    `on_progress(done, total)` hears of the rows written every few thousand, and once more when the file is in
    place (closing a large workbook takes a while of its own). `cut` hears of the cells shown cut. `money`: the
    amounts to show in currency units (none without it). A workbook already at `output` is kept beside it under
    a dated name (history.py)."""
    out = check_output(output, raw.path)
    ticker = Ticker(on_progress, len(raw.frame))

    def write(tmp: Path) -> None:
        workbook = ResultsWorkbook(str(tmp), {"constant_memory": True, "strings_to_numbers": False})
        writer = Writer(workbook, raw, outcomes, issues, totals, info, ticker, money)
        writer.write()
        workbook.close()
        if cut is not None:
            cut[:] = writer.cut

    write_then_rename(out, write, keep=True)
    ticker.end(len(raw.frame))
    return out


class Writer:
    """The three sheets; the results sheet in steps (`results_head`, `rows`, `finish`) so that streaming.py can
    write rows while an upload runs."""

    def __init__(
        self,
        workbook: xlsxwriter.Workbook,
        raw: RawSchedule,
        outcomes: Mapping[int, Outcome],
        issues: Sequence[CellIssue],
        totals: Sequence[ProjectTotal],
        info: RunInfo | None,  # needed by the Summary sheet only: streaming.py gives it at the end
        ticker: Ticker,
        money: Money | None = None,
    ) -> None:
        self.wb = workbook
        self.raw = raw
        self.outcomes = outcomes
        self.issues = issues
        self.totals = totals
        self.info = info
        self.ticker = ticker
        self.money = money or Money()
        self.decimals_used: dict[int, int] = {}  # project -> the decimals its rows were shown with so far
        self.placed: dict[str, int] = {}  # outcome column -> index; set by results_head
        self.offset = 0  # how far right of its input column each of the user's cells goes; set by results_head
        self.skip: set[int] = set()
        self.by_row: dict[int, list[str]] = {}
        self._cursor: Iterator[tuple[int, tuple[Any, ...]]] = iter(())  # see _cells
        self._at = -1  # the frame position _cursor is at; -1: none
        self._aside = 0  # raw.trailer's rows written so far (each goes in before the first data row below it)
        self.cut: list[Cut] = []  # the cells shown cut
        self.fmt_date = workbook.add_format({"num_format": "yyyy-mm-dd"})
        self.fmt_datetime = workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.fmt_time = workbook.add_format({"num_format": "hh:mm:ss"})
        self.fmt_duration = workbook.add_format({"num_format": "[h]:mm:ss"})
        self.fmt_text = workbook.add_format({"quote_prefix": True})
        self.fmt_bold = workbook.add_format({"bold": True})
        self.fmt_wrap = workbook.add_format({"text_wrap": True, "valign": "top"})
        self.fmt_link = workbook.add_format({"font_color": "blue", "underline": 1})
        self.fmt_cents = workbook.add_format({"num_format": "#,##0"})
        self.fmt_id = workbook.add_format({"num_format": "0"})
        self.fmt_head = workbook.add_format({"bold": True, "bg_color": "#D9E1F2", "border": 1})
        # A changed cell: bold in a frame, since a row's status colour (a conditional format) covers any fill.
        changed = {"bold": True, "border": 2, "border_color": "#C65911"}
        self.fmt_changed = workbook.add_format(changed)
        self.fmt_changed_date = workbook.add_format({**changed, "num_format": "yyyy-mm-dd"})
        self.fmt_changed_text = workbook.add_format({**changed, "quote_prefix": True})
        self.fmt_units: dict[int, Any] = {}  # decimals -> "#,##0.00"-style format, made when first needed
        names = {raw.sheet or "Schedule"}
        self.sheet_name = raw.sheet or "Schedule"
        self.summary_name = _unique("Summary", names)
        self.errors_name = _unique("Errors", names)
        self.missing_name = _unique(MISSING_SHEET, names)

    def write(self) -> None:
        ws = self.wb.add_worksheet(self.sheet_name)
        self.results_head(ws)
        self.rows(ws, 0, len(self.raw.frame))
        self.finish(ws)

    def finish(self, ws: Worksheet) -> None:
        """Everything after the last row: the sheet's settings, then the Summary and Errors sheets."""
        self._results_tail(ws)
        self._summary_sheet(self.wb.add_worksheet(self.summary_name))
        self._errors_sheet(self.wb.add_worksheet(self.errors_name))
        if self.info is not None and self.info.not_in_schedule:
            self._missing_sheet(self.wb.add_worksheet(self.missing_name), self.info.not_in_schedule)

    # --- the user's rows + outcomes ---

    def _outcome_letters(self) -> tuple[dict[str, int], int]:
        return outcome_columns(self.raw)

    def results_column(self, letter: str | None) -> str | None:
        """The results sheet's letter of an input column (the user's columns follow the outcome columns)."""
        return None if letter is None else column_letter(column_index(letter) + self.offset)

    def results_head(self, ws: Worksheet) -> None:
        """The rows above the data: the title block as it was, and the header with the outcome columns."""
        raw = self.raw
        self.placed, off = placed, _ = self._outcome_letters()
        self.offset = off
        # The input's own columns that held an earlier run's outcomes: written anew, not copied.
        self.skip = skip = {column_index(letter) for letter in raw.previous_outcomes}
        for r, row in enumerate(raw.preamble):
            for c, value in enumerate(row):
                self._cell(ws, r, c + off, value)
        hr = raw.header_row - 1
        for c, text in enumerate(raw.headers):
            if c not in skip and text:
                cell = raw.header_cells[c] if c < len(raw.header_cells) else text
                # as it was: "  Notes " untrimmed, 2026 a number, a date a date (bold only for text: a date's
                # or number's own format shows it as the user saw it)
                self._cell(ws, hr, c + off, cell, self.fmt_bold if isinstance(cell, str) else None)
        for name, c in placed.items():
            ws.write_string(hr, c, name, self.fmt_head)
        self.by_row = _messages_by_row(self.issues)

    def rows(self, ws: Worksheet, start: int, stop: int) -> None:
        """Data rows at positions start..stop-1 of the frame, in order (constant-memory mode writes forward)."""
        placed, skip, by_row, off = self.placed, self.skip, self.by_row, self.offset
        write_number, write_string, cell = ws.write_number, ws.write_string, self._cell
        aside = self.raw.trailer
        next_aside = aside[self._aside][0] if self._aside < len(aside) else None
        for done, (row_number, values) in enumerate(self._cells(start, stop), start=start):
            if not done % CHUNK:
                self.ticker.at(done)
            if next_aside is not None and row_number > next_aside:  # constant-memory mode writes forward only
                self._aside_rows(ws, below=row_number)
                next_aside = aside[self._aside][0] if self._aside < len(aside) else None
            r = int(row_number) - 1
            for c, value in enumerate(values):
                # The common cells inline (this loop runs once per cell of the file); the rest through _cell.
                kind = type(value)
                if value is None or c in skip:
                    continue
                if kind is str and len(value) < MAX_CELL_TEXT and not value.startswith(FORMULA_TRIGGERS):
                    write_string(r, c + off, value)
                elif (kind is float and value == value) or (kind is int and abs(value) < MAX_EXACT_FLOAT_INT):
                    write_number(r, c + off, value)
                else:
                    if kind is str and len(value) > MAX_CELL_TEXT:  # cut by _text: said on the Errors sheet
                        self.cut.append((r + 1, c, len(value)))
                    cell(ws, r, c + off, value)
            row = int(row_number)
            outcome = self.outcomes.get(row)
            if outcome is None:
                raise AssertionError(f"row {row_number} has no outcome")  # every row must end with one
            ws.write_string(r, placed["status"], outcome.status.value)
            if outcome.milestone_id is not None:
                self._id(ws, r, placed["billing_milestone_id"], outcome.milestone_id)
            self._amount(ws, r, row)
            if outcome.changes:
                self._cell(ws, r, placed["changes"], "; ".join(outcome.changes))
                self._mark_changed(ws, r, values, outcome.changes)
            messages = by_row.get(row, []) + [in_words(e, self.raw.fields)[0] for e in outcome.errors]
            if messages:
                self._cell(ws, r, placed["errors"], "; ".join(dict.fromkeys(messages)))
        self._at = stop

    def _id(self, ws: Worksheet, r: int, c: int, milestone_id: str) -> None:
        """A milestone id as a number, as Excel shows ids (no "number stored as text" mark); as text only when
        Excel could not hold its digits."""
        if milestone_id.isdigit() and int(milestone_id) < MAX_EXACT_FLOAT_INT:
            ws.write_number(r, c, int(milestone_id), self.fmt_id)
        else:
            ws.write_string(r, c, milestone_id)

    def _amount(self, ws: Worksheet, r: int, row: int) -> None:
        """The row's amount as sent: in currency units with its currency's decimals, and in cents."""
        money = self.money
        cents = money.cents.get(row)
        if cents is None:
            return
        project = money.projects[row]
        decimals = self.decimals_used.get(project)
        if decimals is None:
            decimals = self.decimals_used[project] = money.decimals_of(project)
        if abs(cents) < EXACT_UNITS:
            ws.write_number(r, self.placed["amount_in_units"], cents / 10**decimals, self._units(decimals))
            ws.write_number(r, self.placed["api_amount_in_cents"], cents, self.fmt_cents)
        else:  # past what a number cell shows digit for digit: the exact figures as text
            ws.write_string(r, self.placed["amount_in_units"], format_units(cents, decimals))
            ws.write_string(r, self.placed["api_amount_in_cents"], str(cents))

    def _units(self, decimals: int) -> Any:
        fmt = self.fmt_units.get(decimals)
        if fmt is None:
            pattern = "#,##0" + ("." + "0" * decimals if decimals else "")
            fmt = self.fmt_units[decimals] = self.wb.add_format({"num_format": pattern})
        return fmt

    def _mark_changed(self, ws: Worksheet, r: int, values: tuple[Any, ...], changes: Sequence[str]) -> None:
        """The user's cells an update changes (or, in a conflict, would change): framed, with the old value in a
        note, so a finance user sees at a glance what moves."""
        fields, letters = self.raw.fields, self.raw.frame.columns
        for change in changes:
            name, _, old_new = change.partition(": ")
            note = f"{name}: {old_new}"
            letter = fields.get(name)
            if name == "amount_in_cents":
                letter, note = self._amount_mark(r + 1, values, old_new) or (letter, note)
            if letter is None or letter not in letters:
                continue
            c = column_index(letter)
            value = values[letters.get_loc(letter)]
            if not _blank(value):
                dated = isinstance(value, dt.date) and not isinstance(value, dt.datetime)
                self._cell(ws, r, c + self.offset, value, self.fmt_changed_date if dated else self.fmt_changed)
            ws.write_comment(r, c + self.offset, note, {"x_scale": 1.5})

    def _amount_mark(self, row: int, values: tuple[Any, ...], old_new: str) -> tuple[str, str] | None:
        """Where a changed amount is marked, and its note: the Amount (cents) cell when the row filled it, else
        the Amount cell with the change in currency units (a schedule may hold both columns, a row only one).
        None when the row has no Amount column to fall back on."""
        fields, letters = self.raw.fields, self.raw.frame.columns
        cents, units = fields.get("amount_in_cents"), fields.get("amount")
        if units is None or units not in letters:
            return None
        if cents is not None and cents in letters and not _blank(values[letters.get_loc(cents)]):
            return None
        project = self.money.projects.get(row)
        decimals = self.money.decimals if project is None else self.money.decimals_of(project)
        old, _, new = old_new.partition(" -> ")
        return units, f"amount: {_in_units(old, decimals)} -> {_in_units(new, decimals)}"

    def _cells(self, start: int, stop: int) -> Iterator[tuple[int, tuple[Any, ...]]]:
        """Row numbers and cells of positions start..stop-1. Consecutive calls share one pass over the frame:
        streaming.py asks for each batch's 100 rows as its answer comes, and slicing the frame anew for each call
        adds up over a large file, on the GIL the sending threads wait for."""
        if self._at != start:
            rest = self.raw.frame.iloc[start:]
            self._cursor = zip(rest.index.tolist(), rest.itertuples(index=False, name=None), strict=True)
        self._at = -1  # until this call's rows are all written
        return itertools.islice(self._cursor, stop - start)

    def _aside_rows(self, ws: Worksheet, *, below: int | None = None) -> None:
        """raw.trailer's rows not yet written, above row `below` (all of them if None), as they were."""
        aside = self.raw.trailer
        while self._aside < len(aside) and (below is None or aside[self._aside][0] < below):
            row_number, values = aside[self._aside]
            for c, value in enumerate(values):
                if value is not None and c not in self.skip:
                    self._cell(ws, row_number - 1, c + self.offset, value)
            self._aside += 1

    def _results_tail(self, ws: Worksheet) -> None:
        raw, placed, letters = self.raw, self.placed, self.raw.frame.columns
        self._aside_rows(ws)  # those below every data row
        hr = raw.header_row - 1
        last = int(raw.frame.index[-1]) - 1 if len(raw.frame) else hr
        # The outcome columns stay in view (when they come first) as the user scrolls right through their own.
        ws.freeze_panes(hr + 1, self.offset)
        widths = {"status": 11, "billing_milestone_id": 20, "amount_in_units": 16, "api_amount_in_cents": 20,
                  "changes": 40, "errors": 60}  # fmt: skip
        for name, c in placed.items():
            ws.set_column(c, c, widths[name])
        width = max(len(letters) + self.offset, max(placed.values()) + 1)
        if last > hr:
            self._colour_rows(ws, hr + 1, last, width, placed["status"])
            ws.autofilter(hr, 0, last, width - 1)

    def _colour_rows(self, ws: Worksheet, first: int, last: int, width: int, status_col: int) -> None:
        """One conditional-format rule per status: cheaper than a format on every cell."""
        anchor = f"${column_letter(status_col)}{first + 1}"
        for status, colour in STATUS_COLOURS.items():
            fmt = self.wb.add_format({"bg_color": colour})
            ws.conditional_format(first, 0, last, width - 1, {
                "type": "formula", "criteria": f'={anchor}="{status.value}"', "format": fmt,
            })  # fmt: skip

    def _cell(self, ws: Worksheet, r: int, c: int, value: Any, fmt: Any = None) -> None:
        """Write a value as what it is; text is always text, never a formula."""
        if value is None or (isinstance(value, float) and value != value):
            return
        if isinstance(value, bool):
            ws.write_boolean(r, c, value, fmt)
        elif isinstance(value, int) and abs(value) >= MAX_EXACT_FLOAT_INT:
            ws.write_string(r, c, str(value), fmt)  # Excel would lose digits of a number this large
        elif isinstance(value, int | float):
            ws.write_number(r, c, value, fmt)
        elif isinstance(value, dt.datetime):
            ws.write_datetime(r, c, value, fmt or self.fmt_datetime)
        elif isinstance(value, dt.date):
            ws.write_datetime(r, c, dt.datetime.combine(value, dt.time()), fmt or self.fmt_date)
        elif isinstance(value, dt.time):  # a time of day, a duration: as Excel keeps them, not as text
            ws.write_datetime(r, c, value, fmt or self.fmt_time)
        elif isinstance(value, dt.timedelta):
            ws.write_datetime(r, c, value, fmt or self.fmt_duration)
        else:
            self._text(ws, r, c, as_text(value), fmt)

    def _text(self, ws: Worksheet, r: int, c: int, text: str, fmt: Any = None) -> None:
        if len(text) > MAX_CELL_TEXT:
            text = text[: MAX_CELL_TEXT - 40] + " [cut: longer than Excel allows]"
        if text.startswith(FORMULA_TRIGGERS):
            # shown as typed, stays text even when the user edits the cell; a changed cell keeps its frame
            fmt = self.fmt_changed_text if fmt is self.fmt_changed else self.fmt_text
        ws.write_string(r, c, text, fmt)

    # --- Summary ---

    def _summary_sheet(self, ws: Worksheet) -> None:
        raw, info = self.raw, self.info
        assert info is not None  # given by the time the Summary is written
        counts = Counter(o.status for o in self.outcomes.values())
        lines: list[tuple[str, Any]] = [
            # A name in another encoding than the system's holds bytes no workbook can store: shown escaped
            ("File", os.fsencode(raw.path).decode("utf-8", "backslashreplace")),
            ("Sheet", raw.sheet or "(CSV file)"),
            ("Header row", raw.header_row),
            ("Run at", info.started.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")),
            ("Mode", "dry run (nothing sent)" if info.dry_run else "upload"),
            ("Kantata", info.base_url or "(not contacted)"),
            ("Rows read", len(raw.frame)),
            ("Blank rows skipped", raw.blank_rows),
        ]
        if info.note:
            lines.append(("Stopped early", info.note))
        lines += [("Note", note) for note in (*raw.notes, *info.notes)]
        lines.append(("", None))
        lines += [(f"Rows {s.value}", counts.get(s, 0)) for s in Status]
        if info.not_in_schedule:
            lines.append((MISSING_SHEET, f"{len(info.not_in_schedule)} milestones (see that sheet)"))
        ws.set_column(0, 0, 22)
        ws.set_column(1, 1, 50)
        r = 0
        for r, (label, value) in enumerate(lines):
            if label:
                ws.write_string(r, 0, label, self.fmt_bold)
                self._cell(ws, r, 1, value)
        self._totals(ws, r + 2)

    def _totals(self, ws: Worksheet, top: int) -> None:
        """Amount per project and status in currency units, with the project's currency (the cents Kantata got
        in the last column), for rows that parsed. A project whose currency is not known is shown with
        --currency-decimals."""
        statuses = [s.value for s in Status if any(s.value in t.cents for t in self.totals)]
        planned = any(t.kantata is not None for t in self.totals)  # an online dry run: Kantata now and after
        header = ["Project ID", "Currency", "Rows", *statuses, "Total", "Total (cents)",
                  *(["In Kantata now", "In Kantata after upload"] if planned else [])]  # fmt: skip
        ws.write_string(top, 0, "Amounts per project and currency (rows that passed validation)", self.fmt_bold)
        for c, text in enumerate(header):
            ws.write_string(top + 1, c, text, self.fmt_bold)
        ws.set_column(2, len(header) - 1, 16)
        default = self.money.decimals
        for r, total in enumerate(self.totals, start=top + 2):
            decimals = decimals_for(total.currency, default)
            self._cell(ws, r, 0, total.workspace_id)  # as text beyond 2**53
            ws.write_string(r, 1, total.currency or f"({decimals} decimals)")
            ws.write_number(r, 2, sum(total.rows.values()))
            for c, cents in enumerate([*(total.cents[s] for s in statuses), total.total_cents], start=3):
                self._units_cell(ws, r, c, cents, decimals)
            self._units_cell(ws, r, 3 + len(statuses) + 1, total.total_cents, None)
            for c, cents in enumerate(total.kantata or (), start=3 + len(statuses) + 2):
                self._units_cell(ws, r, c, cents, decimals)

    def _units_cell(self, ws: Worksheet, r: int, c: int, cents: int, decimals: int | None) -> None:
        """Cents in currency units (`decimals`), or as cents (None); exact text where a number cell is not."""
        if abs(cents) >= EXACT_UNITS:
            ws.write_string(r, c, str(cents) if decimals is None else format_units(cents, decimals))
        elif decimals is None:
            ws.write_number(r, c, cents, self.fmt_cents)
        else:
            ws.write_number(r, c, cents / 10**decimals, self._units(decimals))

    # --- Not in this schedule ---

    def _missing_sheet(self, ws: Worksheet, missing: Sequence[NotInSchedule]) -> None:
        """The milestones of this importer in the schedule's projects that no row matches, one a line."""
        header = ["billing_milestone_id", "Project ID", "Title", "Amount", "Amount (cents)", "Date to invoice",
                  "Invoiced", "Outcome", "Hint"]  # fmt: skip
        for c, text in enumerate(header):
            ws.write_string(0, c, text, self.fmt_bold)
        for r, m in enumerate(missing, start=1):
            self._id(ws, r, 0, m.milestone_id)
            self._cell(ws, r, 1, m.workspace_id)
            self._cell(ws, r, 2, m.title)
            if m.amount_in_cents is not None:
                self._units_cell(ws, r, 3, m.amount_in_cents, self.money.decimals_of(m.workspace_id))
                self._units_cell(ws, r, 4, m.amount_in_cents, None)
            if m.date_to_invoice is not None:
                ws.write_string(r, 5, m.date_to_invoice)
            ws.write_string(r, 6, "yes" if m.invoiced else "no")
            self._cell(ws, r, 7, m.outcome or None)
            self._cell(ws, r, 8, m.hint or None)
        ws.freeze_panes(1, 0)
        ws.set_column(2, 2, 30)
        ws.set_column(7, 8, 60)
        ws.autofilter(0, 0, len(missing), len(header) - 1)

    # --- Errors ---

    def _errors_sheet(self, ws: Worksheet) -> None:
        """One line per problem: its row and column (the schedule's), the header, the value, what to do, and a
        link to the cell on the results sheet."""
        header = ["Row", "Column", "Header", "Value", "Code", "Message", "Go to", "Severity"]
        for c, text in enumerate(header):
            ws.write_string(0, c, text, self.fmt_bold)
        entries = [(i.row, i.column, i.header, i.value, i.code, i.message, i.severity)
                   for i in all_issues(self.issues, self.outcomes, self.raw.fields)]  # fmt: skip
        # Known only once the rows are written, and listed so that no text is cut without a word; a CSV cell can
        # be longer than an Excel cell holds, an .xlsx cell cannot. (The run's notes say it too: cut_note.)
        entries += [(row, column_letter(c), self.raw.header_of(column_letter(c)), "", "text-cut-in-results",
                     f"{n:,} characters, where an Excel cell holds {MAX_CELL_TEXT:,}: shown cut here (your file keeps "
                     "the whole text)", "warning") for row, c, n in self.cut]  # fmt: skip
        sheet_ref = "'" + self.sheet_name.replace("'", "''") + "'"
        for r, (row, column, head, value, code, message, severity) in enumerate(entries, start=1):
            # Column: the schedule's letter, as the terminal names it, where the user fixes it. Go to: that cell
            # on the results sheet, or for a problem of the whole row (a refusal of the record) its errors cell.
            letter = self.results_column(column) or column_letter(self.placed["errors"])
            ws.write_number(r, 0, row)
            self._cell(ws, r, 1, column)
            self._cell(ws, r, 2, head)
            self._cell(ws, r, 3, value)
            ws.write_string(r, 4, code)
            self._cell(ws, r, 5, message)
            cell = f"{letter}{row}"
            ws.write_url(r, 6, f"internal:{sheet_ref}!{cell}", self.fmt_link, cell)
            ws.write_string(r, 7, severity)
        ws.freeze_panes(1, 0)
        ws.set_column(5, 5, 90)
        if entries:
            ws.autofilter(0, 0, len(entries), len(header) - 1)


_OUTCOME_CODES = {Status.REJECTED: "rejected-by-kantata", Status.CONFLICT: "conflict", Status.NOT_SENT: "not-sent"}


def all_issues(
    issues: Sequence[CellIssue], outcomes: Mapping[int, Outcome], fields: Mapping[str, str] | None = None
) -> list[CellIssue]:
    """Every problem of the run in row order: the checks' issues plus Kantata's refusals, conflicts and rows not
    sent, Kantata's in words and at the column of the field it named (`fields`: field -> the schedule's letter).
    What the Errors sheet lists and `--json` reports, from one place: a row that fails the run (exit 1) always
    says why there."""
    out = list(issues)
    for o in outcomes.values():
        code = _OUTCOME_CODES.get(o.status)
        if code is not None:
            for message in o.errors:
                text, letter = in_words(message, fields)
                header = _header_for(letter, fields)
                out.append(CellIssue(o.row, letter, header, "", code, text))
    out.sort(key=lambda i: i.row)
    return out


def _header_for(letter: str | None, fields: Mapping[str, str] | None) -> str | None:
    name = next((n for n, at in (fields or {}).items() if at == letter), None) if letter else None
    return BY_NAME[name].label if name in BY_NAME else name


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


CENTS_TEXT = re.compile(r"-?[0-9]+")  # an amount_in_cents as a change describes it


def _in_units(cents: str, decimals: int) -> str:
    """One side of an amount_in_cents change ("1250", "(blank)") in currency units ("12.50"); as it was when it
    is not a whole number of cents."""
    return format_units(int(cents), decimals) if CENTS_TEXT.fullmatch(cents) else cents


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate.casefold() in {t.casefold() for t in taken}:
        n += 1
        candidate = f"{name} ({n})"
    taken.add(candidate)
    return candidate


def _messages_by_row(issues: Sequence[CellIssue]) -> dict[int, list[str]]:
    """Each row's messages for its errors cell: on the row itself, so without the row; each names its column's
    header (the schedule's letter would be another column of the results sheet)."""
    out: dict[int, list[str]] = defaultdict(list)
    for issue in issues:
        out[issue.row].append(("" if issue.is_error else "warning: ") + issue.message)
    return out
