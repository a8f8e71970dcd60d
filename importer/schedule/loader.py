"""Schedule file -> raw frame: cells exactly as read, indexed by the spreadsheet row number Excel shows.

The loader finds the sheet and the header row, maps header aliases to canonical fields and keeps every source
column, but interprets no cell: parsing belongs to the schema, so that one place decides what a cell means.
It opens the input read-only and never writes to it.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import re
import stat
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd

from importer.errors import CellIssue, ScheduleError
from importer.outcomes import Status
from importer.progress import Tick, Ticker
from importer.schedule import prefetch
from importer.schedule.cells import as_text, is_blank
from importer.schedule.columns import (
    BY_NAME,
    IDENTITY,
    OUTCOME_COLUMNS,
    OUTCOME_CORE,
    REQUIRED,
    SUBSTITUTES,
    column_index,
    column_letter,
    field_for_header,
    normalise_header,
)
from importer.schedule.encodings import decode_text
from importer.schedule.limits import MAX_CELL_CHARS, MAX_HEADER_BYTES, cells_over, columns_over, file_over
from importer.schedule.prefetch import Early, ReadAhead
from importer.schedule.xlsx_meta import PackageProblem, SheetMeta, check_package, sheet_meta

HEADER_SEARCH_ROWS = 30  # a title block above the header is common; a header further down is not
EXCEL_LAST_ROW = 1_048_576  # a sheet with data on Excel's last row was almost surely cut off on export

Row = tuple[object, ...]


@dataclass(slots=True)
class RawSchedule:
    """What the loader read. `frame` columns are Excel column letters, its index the Excel row numbers."""

    path: Path
    kind: Literal["xlsx", "csv"]
    sheet: str | None  # None for CSV
    header_row: int
    headers: list[str]  # header text per column position, "" where the header cell is blank
    fields: dict[str, str]  # canonical field name -> column letter
    frame: pd.DataFrame  # data rows only (blank rows skipped), dtype object, values as read
    preamble: list[Row] = field(default_factory=list)  # rows above the header, reproduced in the results
    previous_outcomes: list[str] = field(default_factory=list)  # letters of outcome columns of an earlier run
    blank_rows: int = 0
    header_cells: Row = ()  # the header row's cells as read (a number, a date, spaces), for the results
    # Rows among or below the data that are not milestones (a table's totals row, a "Total" line): not checked
    # or sent, written back to the results where they were, with no outcome. (Excel row number, cells), sorted.
    trailer: list[tuple[int, Row]] = field(default_factory=list)
    issues: list[CellIssue] = field(default_factory=list)  # cell problems only the loader can see (merged, ...)
    notes: list[str] = field(default_factory=list)  # file-level remarks for the user: encoding, sheet used, ...
    sheets: tuple[str, ...] = ()  # every sheet of the workbook (a Workspaces sheet is pointed at in messages)

    def set_aside(self, rows: Collection[int]) -> list[int]:
        """Rows that are no milestones (a totals line, a table's totals row) out of the frame and into `trailer`,
        where the results writer puts them back at their place, as they were. Returns them, sorted."""
        kept = sorted(rows)
        self.trailer = sorted([*self.trailer, *((r, tuple(self.frame.loc[r].to_numpy().tolist())) for r in kept)])
        self.frame = self.frame.drop(index=kept)
        return kept

    @property
    def letters(self) -> list[str]:
        return [column_letter(i) for i in range(len(self.headers))]

    def header_of(self, letter: str) -> str:
        return self.headers[self.letters.index(letter)]


def load_schedule(
    path: Path | str,
    *,
    sheet: str | None = None,
    on_progress: Tick | None = None,
    read_ahead: ReadAhead | None = None,
    encoding: str | None = None,
) -> RawSchedule:
    """Read the schedule; `on_progress(done, total)` hears of the rows below the header every few thousand.
    `read_ahead` (prefetch.start_prefetch) is used only if it read this very file and sheet. `encoding` names a
    CSV file's encoding (None: told from its bytes, or a refusal when it cannot be told; encodings.py)."""
    path = Path(path)
    ticker = Ticker(on_progress, None)
    raw = _load(path, sheet, ticker, read_ahead, encoding)
    _set_aside_totals(raw)
    ticker.end()
    return raw


# What a totals line says in its first text cell: "Total", "Totals", "Grand total", "Sub-total", "Sum:".
_TOTAL_WORDS = re.compile(r"(?:grand\s*)?(?:sub[\s-]*)?totals?|sum", re.IGNORECASE)


def _is_total_text(value: object) -> bool:
    return isinstance(value, str) and _TOTAL_WORDS.fullmatch(value.strip().rstrip(":").strip()) is not None


def _set_aside_totals(raw: RawSchedule) -> None:
    """A "Total" line under the data, with no Project ID, is no milestone: it is set aside (kept for the results,
    as it was) instead of failing every run as a row without a project. A row with a project whose title
    reads like a total is imported as any other, with a warning: it may be a subtotal pasted among the rows."""
    project = raw.fields["workspace_id"]
    frame = raw.frame
    aside: list[int] = []
    for position in range(len(frame) - 1, -1, -1):  # from the bottom, while the rows are totals lines
        values = frame.iloc[position]
        if not is_blank(values[project]) or not any(map(_is_total_text, values.tolist())):
            break
        aside.append(int(frame.index[position]))
    if aside:
        kept = raw.set_aside(aside)
        raw.issues = [i for i in raw.issues if i.row not in aside]  # a merged or hidden total line is no error
        which = f"row {kept[0]} looks" if len(kept) == 1 else f"rows {', '.join(map(str, kept))} look"
        raw.notes.append(f"{which} like a totals line (no Project ID): not imported, kept in the results as it was")
    _flag_total_titles(raw)


# A title that starts like a totals line's: "Total Q1", "Subtotal Phase 2", "Grand total".
_TOTAL_TITLE = re.compile(r"\s*(?:grand\s*)?(?:sub[\s-]*)?totals?\b", re.IGNORECASE)
TOTAL_CODES = frozenset({"title-looks-like-a-total", "amount-sums-rows-above"})


def _flag_total_titles(raw: RawSchedule) -> None:
    """A row among the data whose title starts with Total or Subtotal is an error: a subtotal with a project id
    would bill the client a second time. `--allow-totals` makes it a warning (schema.validate_rows)."""
    title = raw.fields.get("title")
    if title is None:
        return
    titles = zip(raw.frame.index.tolist(), raw.frame[title].tolist(), strict=True)
    for row in [r for r, t in titles if type(t) is str and _TOTAL_TITLE.match(t)]:
        raw.issues.append(CellIssue(int(row), title, raw.header_of(title), str(raw.frame.at[row, title]).strip(),
                                    "title-looks-like-a-total", "this row reads like a totals line, not a milestone "
                                    "(it would bill the rows above it a second time); delete it, or pass "
                                    "--allow-totals if it is a milestone"))  # fmt: skip


def _flag_sums(raw: RawSchedule, sums: dict[str, str]) -> None:
    """An amount computed by SUM or SUBTOTAL over rows above it is a total, whatever the row's title says."""
    amounts = {raw.fields[f] for f in ("amount", "amount_in_cents") if f in raw.fields}
    data_rows = set(raw.frame.index)
    for coord, formula in sums.items():
        row, letter = _row_of(coord), coord.rstrip("0123456789")
        refs = [int(n) for n in re.findall(r"\$?[A-Z]{1,3}\$?([0-9]+)", formula)]
        if letter in amounts and row in data_rows and refs and max(refs) < row:
            raw.issues.append(CellIssue(row, letter, raw.header_of(letter), f"={formula}", "amount-sums-rows-above",
                                        f"{coord} is ={formula}, a total of the rows above, not a milestone's "
                                        "amount; delete the row, or pass --allow-totals if it is one"))  # fmt: skip


def check_schedule(path: Path) -> None:
    """The schedule is a file that exists and can be opened: said before anything is made of its name (the
    results' name, say), and in words, since the operating system's refusals (a name too long, a link loop, no
    permission, a pipe) otherwise surface as whatever the first reader happens to raise."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the name, no file has it
        raise ScheduleError(f"file not found (looked for {path.absolute()}); check the name and folder",
                            path=path) from None  # fmt: skip
    except OSError as exc:
        loop = exc.errno == errno.ELOOP
        what = "is a link that leads back to itself" if loop else f"cannot be found ({_os_words(exc)})"
        raise ScheduleError(f"{what}; check the name and folder", path=path) from None
    if stat.S_ISDIR(info.st_mode):
        raise ScheduleError("is a folder, not a file; give the schedule's file name", path=path)
    if not stat.S_ISREG(info.st_mode):
        raise ScheduleError("is not a regular file (a pipe or a device); give the schedule's file name", path=path)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ScheduleError(f"cannot be opened ({_os_words(exc)}); check that you may read it", path=path) from None


def _os_words(exc: OSError) -> str:
    """The operating system's reason, without Python's errno prefix or the path (the message names the file)."""
    return (exc.strerror or str(exc)).rstrip(".").lower()


def _load(
    path: Path, sheet: str | None, ticker: Ticker, read_ahead: ReadAhead | None, encoding: str | None
) -> RawSchedule:
    check_schedule(path)
    suffix = path.suffix.casefold()
    if suffix in {".xlsx", ".xlsm"}:
        return _load_xlsx(path, sheet, ticker, read_ahead)
    if suffix == ".csv":
        if sheet is not None:
            raise ScheduleError("is a CSV file, which has no sheets; leave out --sheet", path=path)
        return _load_csv(path, ticker, encoding)
    if suffix == ".xls":
        raise ScheduleError(
            "is an old-format .xls workbook; open it in Excel and use File > Save As > Excel Workbook (.xlsx)",
            path=path,
        )
    what = f'has the extension "{path.suffix}"' if path.suffix else "has no extension (.xlsx or .csv)"
    raise ScheduleError(f"{what}; use an .xlsx workbook or a .csv file", path=path)


# --- xlsx -------------------------------------------------------------------------------------------------


class _Book(Protocol):
    """The two readers behind one face: sheet names with their visibility, and a sheet's rows."""

    def sheets(self) -> list[tuple[str, bool]]: ...
    def rows(self, name: str) -> Iterator[Row]: ...
    def height(self, name: str) -> int | None: ...  # the sheet's last used row, when the reader knows it
    def close(self) -> None: ...


class _CalamineBook:
    """python-calamine (Rust): much faster than openpyxl read-only on large sheets (benchmarks/same_results.py
    times both). It shows error cells and formulas without a saved value as blank; xlsx_meta finds those in the
    XML, so nothing is lost."""

    def __init__(self, path: Path, early: Early | None = None) -> None:
        self._loaded: tuple[str, Any] | None = None  # the last sheet parsed: height() and rows() share it
        if early is not None:  # opened and parsed while the CLI imported pandas (prefetch.py)
            self._book = early.book
            self._loaded = (early.sheet_name, early.sheet)
            return
        from python_calamine import CalamineWorkbook

        self._book = CalamineWorkbook.from_path(str(path))

    def _sheet(self, name: str) -> Any:
        if self._loaded is None or self._loaded[0] != name:
            self._loaded = (name, self._book.get_sheet_by_name(name))
        return self._loaded[1]

    def sheets(self) -> list[tuple[str, bool]]:
        return prefetch.sheet_visibility(self._book)

    def rows(self, name: str) -> Iterator[Row]:
        sheet = self._sheet(name)
        top = sheet.start[0] if sheet.start else 0
        left = sheet.start[1] if sheet.start else 0
        # The used area only (`skip_empty_area=True`, the reader's default), placed at its `start` here: row 1,
        # column A are Excel's whatever blank rows and columns come before it. (With False the reader fills the
        # blank area in itself, and padding it here as well would shift every cell of a sheet not starting at A1.)
        for _ in range(top):
            yield ()
        pad = (None,) * left
        for row in sheet.to_python(skip_empty_area=True):
            yield pad + tuple([None if v == "" else v for v in row])

    def height(self, name: str) -> int | None:
        sheet = self._sheet(name)
        return int(sheet.height) + (sheet.start[0] if sheet.start else 0)

    def close(self) -> None:
        self._loaded = None
        self._book.close()


class _OpenpyxlBook:
    """openpyxl read-only: the fallback for packages calamine cannot read. The file is opened here and handed
    over, because openpyxl leaves a file it opened itself open when it fails on a part: it would be closed only
    by the garbage collector, with a ResourceWarning, whenever that runs."""

    def __init__(self, path: Path) -> None:
        import openpyxl

        self._file = path.open("rb")
        try:
            self._book = openpyxl.load_workbook(self._file, read_only=True, data_only=True, keep_links=False)
        except BaseException:
            self._file.close()
            raise

    def sheets(self) -> list[tuple[str, bool]]:
        return [(ws.title, ws.sheet_state == "visible") for ws in self._book.worksheets]

    def rows(self, name: str) -> Iterator[Row]:
        return self._book[name].iter_rows(values_only=True)

    def height(self, name: str) -> int | None:
        rows = self._book[name].max_row  # from the sheet's <dimension>, which a writer may leave out
        return rows if isinstance(rows, int) else None

    def close(self) -> None:
        try:
            self._book.close()
        finally:
            self._file.close()  # read-only mode reads from it until here; openpyxl leaves a file it was given open


def _reader_failed(exc: BaseException) -> bool:
    """Any exception, or a Rust reader's panic: pyo3 raises PanicException, a BaseException (so that `except
    Exception` does not swallow it); from a reader it only means that this file cannot be read that way."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _open_book(path: Path) -> _Book:
    try:
        return _CalamineBook(path)
    except BaseException as exc:  # any reader failure: let the other reader decide
        if not _reader_failed(exc):
            raise
    try:
        return _OpenpyxlBook(path)
    except Exception as exc:  # a damaged or hostile package can fail in many ways; all mean "unusable"
        raise ScheduleError(_unreadable(exc), path=path) from exc


# Sheets the template and the results workbook add beside the data: with only these beside it, which sheet was
# read is no news to the user.
COMPANIONS = frozenset({"Example", "Instructions", "Workspaces", "Tasks", "Summary", "Errors"})


def _load_xlsx(path: Path, sheet: str | None, ticker: Ticker, read_ahead: ReadAhead | None) -> RawSchedule:
    # The package checks passed on that thread, for this very file.
    early = read_ahead.claim(path, sheet) if read_ahead is not None else None
    if early is not None:
        book: _Book = _CalamineBook(path, early)
    else:
        try:
            check_package(path)
        except PackageProblem as problem:
            raise ScheduleError(str(problem), path=path) from None
        book = _open_book(path)
    try:
        sheets = book.sheets()
        names = [n for n, _ in sheets]
        if sheet is not None:
            if sheet not in names:
                # Excel's own sheet names ignore case (it refuses "billing" beside "Billing"): so does --sheet.
                same = [n for n in names if n.casefold() == sheet.strip().casefold()]
                if len(same) != 1:
                    listed = ", ".join(f'"{n}"' for n in names)
                    what = f'has no sheet named exactly "{sheet}"' if same else f'has no sheet "{sheet}"'
                    raise ScheduleError(f"{what}; its sheets are {listed}", path=path)
                sheet = same[0]
            candidates = [sheet]
        else:
            candidates = [n for n, visible in sheets if visible]
        tried: list[tuple[str, str]] = []  # (sheet, why it was passed over)
        for name in candidates:
            meta = early.meta if early and early.sheet_name == name else _checked_meta(path, name)
            ticker.total = book.height(name)
            found, why = _try_sheet(path, book, name, explicit=sheet is not None, ticker=ticker)
            if found is not None:
                found.sheets = tuple(names)
                others = [n for n, visible in sheets if visible and n != name and n not in COMPANIONS]
                if sheet is None and (tried or others):  # a sheet was passed over, or the user may have meant another
                    found.notes.append(f'read sheet "{name}" (the first whose header row matches)')
                _apply_meta(found, meta)
                return found
            tried.append((name, why))
    except ScheduleError:
        raise
    except BaseException as exc:
        if not _reader_failed(exc):
            raise
        raise ScheduleError(_unreadable(exc), path=path) from exc
    finally:
        book.close()
    looked = "; ".join(f'"{n}" ({why})' for n, why in tried) or "none (every sheet is hidden)"
    raise ScheduleError(
        f"no sheet has a header row with the columns {_required_text()} in its first {HEADER_SEARCH_ROWS} rows "
        f"(sheets looked at: {looked}); start from the template (kantata-import template), or name the billing "
        "sheet with --sheet NAME",
        path=path,
    )


def _checked_meta(path: Path, sheet: str) -> SheetMeta:
    """The sheet's XML read (and its part and extent checked) before the cell reader parses it."""
    try:
        return sheet_meta(path, sheet)
    except PackageProblem as problem:
        raise ScheduleError(str(problem), path=path, sheet=sheet) from None


def _try_sheet(path: Path, book: _Book, name: str, *, explicit: bool, ticker: Ticker) -> tuple[RawSchedule | None, str]:
    """The sheet's schedule, or None and why not. The README promises the first sheet whose header matches, so a
    summary sheet before the billing sheet (a header with other columns) is passed over, not an error; a sheet
    named with --sheet is the one the user means, and what is wrong with its header stops the run."""
    try:
        found = _build(path, "xlsx", name, book.rows(name), explicit=explicit, ticker=ticker)
    except ScheduleError as exc:
        if explicit:
            raise
        where = f'{path.name}, sheet "{name}"' + (f", cell {exc.cell}" if exc.cell else "")
        return None, str(exc).removeprefix(f"{where}: ").split("; the required columns are")[0]
    return found, f"no header row in its first {HEADER_SEARCH_ROWS} rows"


# --- csv --------------------------------------------------------------------------------------------------


def _load_csv(path: Path, ticker: Ticker, encoding: str | None) -> RawSchedule:
    size = path.stat().st_size
    if size == 0:
        raise ScheduleError("is empty; export the schedule again", path=path)
    if (over := file_over(size)) is not None:
        raise ScheduleError(over, path=path)
    _check_csv_head(path)
    data = path.read_bytes()
    decoded = decode_text(data, encoding, path=path)
    text, note = decoded.text, decoded.note
    rows, sep_note = _csv_rows(path, text)
    ticker.total = len(rows)
    found = _build(path, "csv", None, iter(rows), explicit=True, ticker=ticker)
    if found is None:
        raise ScheduleError(
            f"has no header row with the columns {_required_text()} in its first {HEADER_SEARCH_ROWS} rows",
            path=path,
        )
    found.notes += [n for n in (note, sep_note) if n]
    if len(found.frame) and (last := int(found.frame.index.max())) > EXCEL_LAST_ROW:
        raise ScheduleError(  # the results workbook could not hold its outcome (xlsxwriter drops it silently)
            f"has data on row {last:,}, past Excel's last row ({EXCEL_LAST_ROW:,}): the results workbook could not "
            "hold it. Split the schedule into files of fewer rows",
            path=path,
        )
    return found


def _check_csv_head(path: Path) -> None:
    """The first lines' width, from at most MAX_HEADER_BYTES of the file, before any of it is decoded or parsed:
    a header of a million columns is refused at once instead of after a minute and gigabytes of parsing. A
    separator counted inside quotes only makes the figure larger; the exact width is checked after parsing."""
    with path.open("rb") as fh:
        head = fh.read(MAX_HEADER_BYTES + 1)
    lines = head.split(b"\n", HEADER_SEARCH_ROWS + 1)
    if len(lines) == 1 and len(head) > MAX_HEADER_BYTES:
        raise ScheduleError(f"its first line is longer than the limit of {MAX_HEADER_BYTES // 2**20} MiB (a "
                            "schedule's header row is a few hundred characters); is it a CSV file?",
                            path=path)  # fmt: skip
    for number, line in enumerate(lines[:HEADER_SEARCH_ROWS], start=1):
        fields = max(line.count(sep) for sep in (b",", b";", b"\t")) + 1
        if (over := columns_over(fields)) is not None:
            raise ScheduleError(f"line {number} " + over.replace(" columns,", " fields,", 1),
                                path=path)  # fmt: skip


def _check_extent(path: Path, sheet: str | None, width: int, last_row: int) -> None:
    """The rows read fit the results workbook, outcome columns and all (limits.py)."""
    if (over := columns_over(width) or cells_over(last_row, width)) is not None:
        raise ScheduleError(over, path=path, sheet=sheet)


_SEP_LINE = re.compile(r"sep=(.)\r?")  # Excel's separator hint, a first line that Excel does not show as a row


def _csv_rows(path: Path, text: str) -> tuple[list[Row], str | None]:
    """Rows of the text, with the delimiter sniffed among comma, semicolon and tab, or as a first line "sep=;"
    names it (Excel reads that line as the separator and shows the next as row 1; so do we, and say so)."""
    first, _, rest = text.partition("\r" if "\n" not in text[:4096] else "\n")  # a Mac export ends lines with CR
    note = None
    if (hint := _SEP_LINE.fullmatch(first)) is not None:
        text, delimiter = rest, hint.group(1)
        note = f'the first line "{first.strip()}" names the separator (as Excel reads it); row 1 is the line after it'
    else:
        sample = "\n".join(text.splitlines()[:HEADER_SEARCH_ROWS])
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = ","
    try:
        return [tuple(r) for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)], note
    except csv.Error as exc:
        _refuse_long_field(path, exc)
        line = _bad_record_line(text, delimiter) + (note is not None)  # the file's line, the sep line counted
        raise ScheduleError(f"is not well-formed CSV: the row starting on line {line:,}: {exc} (an unclosed or "
                            "stray quote?); fix it there, or open the file in Excel and save it again as CSV UTF-8",
                            path=path) from None  # fmt: skip


def _refuse_long_field(path: Path, exc: csv.Error) -> None:
    """The csv module's own limit on a field (MAX_CELL_CHARS, its default) as the limit it is, not as a quote."""
    if "field larger than field limit" in str(exc):
        raise ScheduleError(f"has a cell longer than the limit of {MAX_CELL_CHARS:,} characters (Excel holds "
                            "32,767 in a cell); shorten it, or check that the file's quotes are closed",
                            path=path) from None  # fmt: skip


def _bad_record_line(text: str, delimiter: str) -> int:
    """The line on which the record that the csv module refuses starts (an unclosed quote runs to the end)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    with contextlib.suppress(csv.Error):
        for _ in reader:
            start = reader.line_num + 1
    return start


def _unreadable(exc: BaseException) -> str:
    name = type(exc).__name__
    if name in {"EntitiesForbidden", "DTDForbidden", "ExternalReferenceForbidden", "NotSupportedError"}:
        return ("contains XML entity or DTD declarations, which spreadsheets do not need (a known attack); not opened: "
                "ask for a copy saved from Excel")  # fmt: skip
    return f"could not be read as an .xlsx workbook ({name}: {exc}); open it in Excel and save it again"


def _apply_meta(raw: RawSchedule, meta: SheetMeta) -> None:
    """Turn what the sheet's XML says into issues on the rows concerned (and drop table totals rows)."""
    data_rows = set(raw.frame.index)
    field_letters = set(raw.fields.values())
    for table in meta.tables:
        totals = {r for r in range(table.last_row - table.totals_rows + 1, table.last_row + 1)} & data_rows
        if table.totals_rows and totals:
            raw.set_aside(totals)
            data_rows -= totals
            raw.notes.append(
                f"skipped the totals row of table {table.name} (row {', '.join(map(str, sorted(totals)))})"
            )
    for row in sorted(meta.hidden_rows & data_rows):
        message = "this row is hidden in Excel; it is imported like any other row (delete it if it should not be)"
        raw.issues.append(CellIssue(row, None, None, "", "hidden-row", message, "warning"))
    hidden = [column_letter(c - 1) for c in sorted(meta.hidden_columns) if c - 1 < len(raw.headers)]
    if hidden:
        raw.notes.append("hidden columns " + ", ".join(f"{h} ({raw.header_of(h) or 'no header'})" for h in hidden)
                         + " are read like the others")  # fmt: skip
    for ref in meta.merged:
        first, last = ref.split(":")
        top, bottom = _row_of(first), _row_of(last)
        letter = first.rstrip("0123456789")
        for row in sorted(set(range(top, bottom + 1)) & data_rows):
            raw.issues.append(CellIssue(row, letter, raw.header_of(letter) if column_index(letter) < len(raw.headers)
                                        else None, "", "merged-cells",
                                        f"cells {ref} are merged, so only {first} holds a value; unmerge them and "
                                        "give each row its own values"))  # fmt: skip
    _flag_sums(raw, meta.sums)
    lowest = max(data_rows, default=0)
    for coord in meta.formulas_without_value:
        row, letter = _row_of(coord), coord.rstrip("0123456789")
        if raw.header_row < row < lowest and row not in data_rows and not any(r == row for r, _ in raw.trailer):
            # a row with nothing but such formulas reads as blank: say so, or a milestone is skipped without a word
            raw.notes.append(f"row {row} was skipped as blank, but {coord} holds a formula with no saved result; "
                             "if the row is a milestone, open the file in Excel and save it again")  # fmt: skip
        if row in data_rows:
            severity = "error" if letter in field_letters else "warning"
            header = raw.header_of(letter) if column_index(letter) < len(raw.headers) else None
            raw.issues.append(CellIssue(row, letter, header, "", "formula-without-value",
                                        f"{coord} holds a formula with no saved result (the file was written by a "
                                        "program that does not calculate); open it in Excel and save it again",
                                        severity))  # fmt: skip
    for coord, value in meta.error_values.items():
        row, letter = _row_of(coord), coord.rstrip("0123456789")
        if row in data_rows and letter in raw.frame.columns:
            raw.frame.at[row, letter] = value  # shown as Excel shows it; the schema refuses it in a field column
            if letter not in field_letters:
                message = f"{coord} holds the Excel error {value}; it is kept as text"
                raw.issues.append(CellIssue(row, letter, raw.header_of(letter), value, "formula-error", message,
                                            "warning"))  # fmt: skip
    if data_rows and max(data_rows) >= EXCEL_LAST_ROW:
        raise ScheduleError(
            f"has data on row {EXCEL_LAST_ROW:,}, Excel's last row: the export was probably cut off. Split the "
            "schedule into smaller files (or use CSV) so no row is lost",
            path=raw.path,
            sheet=raw.sheet,
        )


def _row_of(coord: str) -> int:
    return int(coord.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


# --- shared ---------------------------------------------------------------------------------------------


def _required_text() -> str:
    """The required columns by the headers a user would write: Title, Amount (cents) or Amount, Project ID."""
    return ", ".join(_either(name) for name in REQUIRED)


def _looks_like(headers: Sequence[str], missing: Sequence[str]) -> str:
    """A user's header that starts like a missing column's ("Amount (USD)"), named as the likely one to rename."""
    for name in missing:
        stem = normalise_header(BY_NAME[name].label.split(" (")[0])  # "Amount (cents)": amount
        near = [h for h in headers if h and normalise_header(h).startswith(stem)]
        if near:
            return f' (is "{near[0]}" meant? head it {_either(name)})'
    return ""


def _either(name: str) -> str:
    """A required field's header, with the one that may stand in for it."""
    label = BY_NAME[name].label
    other = SUBSTITUTES.get(name)
    return f"{label} or {BY_NAME[other].label}" if other else label


def _header_fields(row: Row) -> dict[int, str]:
    """Column index -> canonical field, for the cells of `row` that name one."""
    found: dict[int, str] = {}
    for i, cell in enumerate(row):
        if isinstance(cell, str) and (name := field_for_header(cell)) is not None:
            found[i] = name
    return found


def _build(
    path: Path,
    kind: Literal["xlsx", "csv"],
    sheet: str | None,
    rows: Iterator[Row],
    *,
    explicit: bool,
    ticker: Ticker,
) -> RawSchedule | None:
    """Find the header in the first rows, then take every non-blank row below it. None if no header."""
    preamble: list[Row] = []
    header: Row | None = None
    header_row = 0
    for number, row in enumerate(rows, start=1):
        if len(_header_fields(row)) >= 2:
            header, header_row = row, number
            break
        preamble.append(row)
        if number >= HEADER_SEARCH_ROWS:
            break
    if header is None:
        return None
    headers = [as_text(c).strip() if not is_blank(c) else "" for c in header]
    fields = _check_header(path, sheet, header_row, headers, explicit=explicit)
    if ticker.total is not None:
        ticker.total = max(ticker.total - header_row, 0)  # the rows below the header: what the bar counts
    index, data, blank = _data_rows(rows, header_row, ticker)
    width = max([len(headers), *(len(r) for r in data)]) if data else len(headers)
    _check_extent(path, sheet, width, index[-1] if index else header_row)
    headers += [""] * (width - len(headers))
    letters = [column_letter(i) for i in range(width)]
    padded = [r + (None,) * (width - len(r)) if len(r) < width else r for r in data]
    frame = pd.DataFrame(padded, index=pd.Index(index, name="row"), columns=letters, dtype=object)
    previous = _earlier_outcomes(headers, frame)
    if previous and IDENTITY not in fields:
        # A results workbook fed back in: the ids it carries make each row an update of its milestone. A column
        # of the user's that only shares the name is theirs (_earlier_outcomes tells the two apart).
        fields[IDENTITY] = column_letter(max(i for i, h in enumerate(headers) if h == "billing_milestone_id"))
    return RawSchedule(
        path=path,
        kind=kind,
        sheet=sheet,
        header_row=header_row,
        headers=headers,
        fields=fields,
        frame=frame,
        preamble=preamble,
        previous_outcomes=previous,
        blank_rows=blank,
        header_cells=header,
    )


# "exists": the word results workbooks of earlier versions wrote for a row already in Kantata (now "unchanged").
_STATUSES = frozenset(s.value for s in Status) | {"exists"}


def _earlier_outcomes(headers: list[str], frame: pd.DataFrame) -> list[str]:
    """The outcome columns of a results workbook fed back in, which the new results write over: the headers
    exactly as the report writes them (the last of each), the core three at least (an earlier layout had only
    those), with a status column of statuses only. Anything else is the user's own column, however it is named
    ("Status", "Errors": an approval, a remark), and is kept: the new outcome columns then come before it."""
    last = {h: i for i, h in enumerate(headers) if h in OUTCOME_COLUMNS}
    if any(name not in last for name in OUTCOME_CORE):
        return []
    statuses = frame[column_letter(last["status"])].tolist()
    if not all(is_blank(v) or (isinstance(v, str) and v.strip() in _STATUSES) for v in statuses):
        return []
    return [column_letter(i) for i in sorted(last.values())]


def _check_header(
    path: Path, sheet: str | None, header_row: int, headers: Sequence[str], *, explicit: bool
) -> dict[str, str]:
    fields: dict[str, str] = {}
    for i, text in enumerate(headers):
        name = field_for_header(text) if text else None
        if name is None:
            continue
        letter = column_letter(i)
        if name in fields:
            first = fields[name]
            raise ScheduleError(
                f'columns {first} and {letter} both hold {name} ("{headers[column_index(first)]}" and "{text}"); '
                "keep one of them",
                path=path,
                sheet=sheet,
                cell=f"{letter}{header_row}",
            )
        fields[name] = letter
    missing = [name for name in REQUIRED if name not in fields and SUBSTITUTES.get(name) not in fields]
    if missing:
        raise ScheduleError(
            f"the header row (row {header_row}) has no column {' nor '.join(_either(m) for m in missing)}"
            f"{_looks_like(headers, missing)}; the required columns are {_required_text()}",
            path=path,
            sheet=sheet,
        )
    return fields


def _blank_row(row: Row) -> bool:
    """`all(is_blank(c) for c in row)`, but a data row usually ends it at its first cell (this runs per row)."""
    for cell in row:
        if cell is None:
            continue
        if cell.__class__ is str:
            if cell.strip():
                return False
        elif not is_blank(cell):
            return False
    return True


def _data_rows(rows: Iterable[Row], header_row: int, ticker: Ticker) -> tuple[list[int], list[Row], int]:
    """Row numbers and cells of the non-blank rows below the header, and how many blank rows were skipped."""
    index: list[int] = []
    data: list[Row] = []
    blank = 0
    for number, row in enumerate(rows, start=header_row + 1):
        ticker.at(number - header_row)
        if _blank_row(row):
            blank += 1
            continue
        index.append(number)
        data.append(tuple(row))
    return index, data, blank
