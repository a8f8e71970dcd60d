"""The loader (importer/schedule/loader.py): the sheet, the header row, every row at the number Excel shows, cells
exactly as read, from .xlsx and .csv alike; the input only read."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from importer.cli.main import main
from importer.errors import ScheduleError
from importer.schedule.loader import HEADER_SEARCH_ROWS, RawSchedule, load_schedule
from tests.conftest import HEADERS, MakeSchedule, collector_paused, files_open_on, good_row
from tests.corpus import makers_hostile


def test_the_fast_reader_is_the_one_used(make_schedule: MakeSchedule) -> None:
    import importer.schedule.loader

    path = make_schedule([["A", 1, 1001, None, None, None]])
    book = importer.schedule.loader._open_book(path)
    try:
        assert type(book).__name__ == "_CalamineBook"
    finally:
        book.close()


class PanicException(BaseException):
    """What pyo3 raises when Rust code panics (python-calamine is Rust): a BaseException, not an Exception."""


def test_a_panic_of_the_rust_reader_is_a_message_not_a_traceback(
    tmp_path: Path, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importer.schedule.loader

    path = make_schedule([["A", 1, 1001, "2026-01-31", None, "fixed_date"]])
    monkeypatch.setenv("KANTATA_IMPORT_NO_PREFETCH", "1")

    def panics_on_open(self: object, path: Path, early: object = None) -> None:
        raise PanicException("called `Option::unwrap()` on a `None` value")

    with monkeypatch.context() as m:  # opening panics: the openpyxl reader takes over
        m.setattr(importer.schedule.loader._CalamineBook, "__init__", panics_on_open)
        assert main(["validate", str(path), "-o", str(tmp_path / "a.xlsx")]) == 0

    def panics_on_rows(self: object, name: str) -> None:
        raise PanicException("index out of bounds")

    monkeypatch.setattr(importer.schedule.loader._CalamineBook, "rows", panics_on_rows)
    assert main(["validate", str(path), "-o", str(tmp_path / "b.xlsx")]) == 2
    err = capsys.readouterr().err
    assert "could not be read as an .xlsx workbook (PanicException" in err and "Traceback" not in err


def test_the_openpyxl_reader_leaves_no_file_open(tmp_path: Path, make_schedule: MakeSchedule,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The fallback reader holds the file it was handed until it is closed, and closes it when it cannot read
    the package: neither is left to the garbage collector (paused here, so a leak stays to be seen)."""
    import importer.schedule.loader

    def refuses(self: object, path: Path, early: object = None) -> None:
        raise ValueError("not this reader")

    monkeypatch.setattr(importer.schedule.loader._CalamineBook, "__init__", refuses)
    good = make_schedule([["A", 1, 1001, "2026-01-31", None, "fixed_date"]])
    broken = makers_hostile.malformed_xml_styles(tmp_path)
    with collector_paused():
        assert len(load_schedule(good).frame) == 1
        assert files_open_on(good) == []
        with pytest.raises(ScheduleError, match="could not be read as an .xlsx workbook"):
            load_schedule(broken)
        assert files_open_on(broken) == []


def _cells(raw: RawSchedule) -> dict[int, list[Any]]:
    """The data rows as read: Excel row number -> the cells, trailing blanks dropped."""
    out = {}
    for row, values in zip(raw.frame.index.tolist(), raw.frame.itertuples(index=False, name=None), strict=True):
        cells = list(values)
        while cells and cells[-1] is None:
            cells.pop()
        out[int(row)] = cells
    return out


# --- the header row ---


def test_the_header_is_found_under_a_title_block_and_the_block_is_kept(make_schedule: MakeSchedule) -> None:
    above = [["Acme Corp"], [], ["Prepared by", "Finance"]]
    raw = load_schedule(make_schedule([good_row(1), good_row(2)], above=above))
    assert raw.header_row == 4 and raw.headers == HEADERS
    assert [list(r)[:2] for r in raw.preamble] == [["Acme Corp", None], [None, None], ["Prepared by", "Finance"]]
    assert raw.frame.index.tolist() == [5, 6]
    assert raw.fields == {"title": "A", "amount_in_cents": "B", "workspace_id": "C", "date_to_invoice": "D",
                          "story_id": "E", "billing_type": "F"}  # fmt: skip


def test_the_header_is_looked_for_in_the_first_rows_only(make_schedule: MakeSchedule, tmp_path: Path) -> None:
    notes = [[f"note {n}"] for n in range(HEADER_SEARCH_ROWS - 1)]
    assert load_schedule(make_schedule([good_row(1)], above=notes, name="deep")).header_row == HEADER_SEARCH_ROWS
    too_deep = make_schedule([good_row(1)], above=[*notes, ["one more"]], name="deeper")
    with pytest.raises(ScheduleError, match=f"in its first {HEADER_SEARCH_ROWS} rows"):
        load_schedule(too_deep)


def test_a_row_naming_one_field_is_no_header_but_readable_headers_are(make_schedule: MakeSchedule) -> None:
    """ "Title" alone above the table (a caption) is not taken for the header; the template's headers are."""
    headers = ["Title", "Amount (cents)", "Project ID", "Task ID"]
    raw = load_schedule(make_schedule([["A", 1, 1001, 5001]], headers=headers, above=[["Title"]]))
    assert raw.header_row == 2
    assert raw.fields == {"title": "A", "amount_in_cents": "B", "workspace_id": "C", "story_id": "D"}


@pytest.mark.parametrize(("headers", "message"), [
    (["title", "amount_in_cents", "Notes"], "has no column Project ID"),
    (["title", "amount_in_cents", "workspace_id", "Title"], "columns A and D both hold title"),
])  # fmt: skip
def test_a_header_the_rows_cannot_be_read_by_stops_the_run(
    make_schedule: MakeSchedule, headers: list[str], message: str
) -> None:
    with pytest.raises(ScheduleError, match=message):
        load_schedule(make_schedule([["A", 1, 1001, "x"]], headers=headers))


# --- the sheet ---


def _book(path: Path) -> Path:
    """Sheets "Read me" (no header), "Old" (a schedule, hidden), "Billing" (a schedule), "Later" (one too)."""
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Read me"
    ws.append(["Fill in the Billing sheet"])
    for name, title, hidden in (("Old", "old", True), ("Billing", "new", False), ("Later", "later", False)):
        sheet = wb.create_sheet(name)
        sheet.append(HEADERS)
        sheet.append([title, 1, 1001, None, None, None])
        sheet.sheet_state = "hidden" if hidden else "visible"
    wb.save(path)
    return path


def test_the_first_visible_sheet_with_a_header_is_read_and_said(tmp_path: Path) -> None:
    raw = load_schedule(_book(tmp_path / "book.xlsx"))
    assert raw.sheet == "Billing" and raw.kind == "xlsx" and _cells(raw) == {2: ["new", 1, 1001]}
    assert 'read sheet "Billing" (the first whose header row matches)' in raw.notes


@pytest.mark.parametrize(("asked", "read"), [("Later", "later"), ("old", "old"), (" LATER ", "later")])
def test_a_sheet_named_is_read_even_hidden_in_any_letter_case(tmp_path: Path, asked: str, read: str) -> None:
    raw = load_schedule(_book(tmp_path / "book.xlsx"), sheet=asked)
    assert _cells(raw) == {2: [read, 1, 1001]} and raw.sheet == asked.strip().capitalize()


def test_a_sheet_that_is_not_there_is_refused_with_the_sheets_that_are(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match='has no sheet "2025"; its sheets are "Read me", "Old", "Billing", "Later"'):
        load_schedule(_book(tmp_path / "book.xlsx"), sheet="2025")


def test_a_csv_has_no_sheet_to_name(make_schedule: MakeSchedule) -> None:
    with pytest.raises(ScheduleError, match="is a CSV file, which has no sheets"):
        load_schedule(make_schedule([good_row(1)], fmt="csv"), sheet="Billing")


# --- row numbers ---


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_every_row_keeps_the_number_excel_shows(make_schedule: MakeSchedule, fmt: str) -> None:
    """Blank rows (spaces only, too) are skipped but counted: the rows after them keep their numbers."""
    rows: list[list[Any]] = [good_row(1), [], good_row(3), [None, "  ", None], [], good_row(6)]
    raw = load_schedule(make_schedule(rows, above=[["Billing 2026"]], fmt=fmt))
    assert raw.header_row == 2 and raw.frame.index.tolist() == [3, 5, 8] and raw.blank_rows == 3
    assert [raw.frame.at[r, "A"] for r in (3, 5, 8)] == ["Milestone 1", "Milestone 3", "Milestone 6"]


@pytest.mark.parametrize("reader", ["calamine", "openpyxl"])
def test_a_sheet_starting_at_c3_keeps_its_letters_and_numbers(
    tmp_path: Path, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if reader == "openpyxl":
        import importer.schedule.loader

        def refuse(path: Path) -> None:
            raise RuntimeError("calamine cannot read this package")

        monkeypatch.setattr(importer.schedule.loader, "_CalamineBook", refuse)
    path = tmp_path / "shifted.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    cells: dict[int, list[Any]] = {3: ["title", "amount_in_cents", "workspace_id"], 4: ["A", 100, 1001],
                                   6: ["B", 200, 1002]}  # fmt: skip
    for r, values in cells.items():
        for c, value in enumerate(values, start=3):
            ws.cell(row=r, column=c, value=value)
    wb.save(path)
    raw = load_schedule(path)
    assert raw.header_row == 3 and raw.fields == {"title": "C", "amount_in_cents": "D", "workspace_id": "E"}
    assert _cells(raw) == {4: [None, None, "A", 100, 1001], 6: [None, None, "B", 200, 1002]}


def test_a_totals_line_under_the_rows_is_set_aside_with_its_number(make_schedule: MakeSchedule) -> None:
    rows: list[list[Any]] = [good_row(1), good_row(2), ["Total", 20003, None, None, None, None]]
    raw = load_schedule(make_schedule(rows))
    assert raw.frame.index.tolist() == [2, 3]
    assert [(r, list(cells)[:2]) for r, cells in raw.trailer] == [(4, ["Total", 20003])]
    assert "row 4 looks like a totals line (no Project ID): not imported, kept in the results as it was" in raw.notes


# --- CSV and xlsx ---


def test_csv_and_xlsx_of_the_same_rows_load_alike_cells_as_read(make_schedule: MakeSchedule) -> None:
    """The same rows from either format: the same header, fields and row numbers; each cell as the file holds it
    (text in a CSV, typed in a workbook), interpreted by no one before the schema."""
    rows: list[list[Any]] = [["A", 100, 1001, dt.date(2026, 3, 31), None, "fixed_date"], [],
                             ["B", "12.5", 1002, None, 5004, "upon_completion"]]  # fmt: skip
    xlsx = load_schedule(make_schedule(rows, above=[["Acme"]]))
    csv = load_schedule(make_schedule(rows, above=[["Acme"]], fmt="csv"))
    assert (xlsx.kind, xlsx.sheet, csv.kind, csv.sheet) == ("xlsx", "Billing", "csv", None)
    for raw in (xlsx, csv):
        assert raw.header_row == 2 and raw.headers == HEADERS and raw.blank_rows == 1
        assert raw.frame.index.tolist() == [3, 5] and raw.fields["story_id"] == "E"
    assert _cells(xlsx) == {3: ["A", 100, 1001, dt.date(2026, 3, 31), None, "fixed_date"],
                            5: ["B", "12.5", 1002, None, 5004, "upon_completion"]}  # fmt: skip
    assert _cells(csv) == {3: ["A", "100", "1001", "2026-03-31", "", "fixed_date"],
                           5: ["B", "12.5", "1002", "", "5004", "upon_completion"]}  # fmt: skip


@pytest.mark.parametrize(("text", "note"), [
    ("title;amount_in_cents;workspace_id\nA;1;1001\nB;2;1002\n", None),
    ("title\tamount_in_cents\tworkspace_id\nA\t1\t1001\nB\t2\t1002\n", None),
    ("sep=;\ntitle;amount_in_cents;workspace_id\nA;1;1001\nB;2;1002\n", 'the first line "sep=;" names the separator'),
])  # fmt: skip
def test_a_csv_separator_is_found_and_excel_s_sep_line_is_no_row(tmp_path: Path, text: str, note: str | None) -> None:
    path = tmp_path / "in.csv"
    path.write_text(text, encoding="utf-8")
    raw = load_schedule(path)
    assert raw.header_row == 1 and _cells(raw) == {2: ["A", "1", "1001"], 3: ["B", "2", "1002"]}
    assert any(note in n for n in raw.notes) if note else raw.notes == []


def test_a_csv_row_number_counts_records_not_lines(tmp_path: Path) -> None:
    """A quoted line break is inside one record: Excel shows it as one row, and so do we."""
    path = tmp_path / "in.csv"
    path.write_bytes(b'title,amount_in_cents,workspace_id\n"Two\nlines",1,1001\nNext,2,1001\n')
    assert _cells(load_schedule(path)) == {2: ["Two\nlines", "1", "1001"], 3: ["Next", "2", "1001"]}


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_the_input_is_only_read(make_schedule: MakeSchedule, fmt: str) -> None:
    path = make_schedule([good_row(1), ["Total", 1, None, None, None, None]], fmt=fmt)
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    load_schedule(path)
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in path.parent.iterdir() if p.name != "home") == [path.name]
