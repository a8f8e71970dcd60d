"""The results workbook (importer/results/report.py), read back cell by cell with openpyxl: the user's sheet at
its own addresses with the outcome columns after it, the Errors and Summary sheets, text that looks like a
formula kept as text, and the input never written."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from importer.errors import ConfigError
from importer.outcomes import Outcome, Status
from importer.results.report import Money, RunInfo, check_output, in_words, write_results
from importer.results.totals import project_totals
from importer.schedule.loader import RawSchedule, load_schedule
from importer.schedule.schema import Validated, validate_rows
from tests.conftest import HEADERS, MakeSchedule, good_row

INFO = RunInfo(dry_run=False, base_url="https://api.example.test/api/v1",
               started=dt.datetime(2026, 3, 31, 12, 0, tzinfo=dt.UTC), note="", notes=("3 requests",))  # fmt: skip
REJECTED = "Kantata: Title is reserved (field title)"


def _schedule(make_schedule: MakeSchedule) -> Path:
    """A title block, the header on row 2, a column of the user's, a blank row, text that starts like a formula."""
    rows: list[list[Any]] = [
        ["=1+1", *good_row(3)[1:], "-5 owed"],  # row 3: created
        [],  # row 4
        [*good_row(5)[:1], "x", *good_row(5)[2:], "@mention"],  # row 5: invalid
        [*good_row(6), "+44 20 7946 0000"],  # row 6: rejected by Kantata
        [*good_row(7), "\tindented"],  # row 7: not sent
    ]
    path = make_schedule(rows, headers=[*HEADERS, "Notes"], above=[["Acme billing 2026"]])
    wb = openpyxl.load_workbook(path)
    wb["Billing"]["A3"].data_type = "s"  # text typed with a leading apostrophe, as Excel keeps it: no formula
    wb.save(path)
    return path


def _outcomes() -> dict[int, Outcome]:
    return {3: Outcome(3, Status.CREATED, "900001"), 5: Outcome(5, Status.INVALID),
            6: Outcome(6, Status.REJECTED, None, (REJECTED,)),
            7: Outcome(7, Status.NOT_SENT, None, ("not sent",))}  # fmt: skip


def _write(
    raw: RawSchedule,
    validated: Validated,
    out: Path,
    outcomes: dict[int, Outcome] | None = None,
    money: Money | None = None,
) -> Path:
    outcomes = _outcomes() if outcomes is None else outcomes
    currencies = {1001: "USD"} if money is None else dict(money.currencies)
    money = Money.of(validated.rows, currencies) if money is None else money
    totals = project_totals(validated.rows, outcomes, currencies)
    return write_results(raw, outcomes, validated.issues, totals, INFO, out, money=money)


def _sheet(path: Path, name: str) -> list[list[Any]]:
    wb = openpyxl.load_workbook(path)
    try:
        return [[c.value for c in row] for row in wb[name].iter_rows()]
    finally:
        wb.close()


@pytest.fixture
def written(make_schedule: MakeSchedule, tmp_path: Path) -> tuple[Path, Path]:
    path = _schedule(make_schedule)
    raw = load_schedule(path)
    return path, _write(raw, validate_rows(raw), tmp_path / "results.xlsx")


OUTCOMES = ["status", "billing_milestone_id", "amount_in_units", "api_amount_in_cents", "changes", "errors"]
AMOUNT_ERROR = 'amount_in_cents: "x" is not a number; enter whole cents, e.g. 123456 for 1,234.56'


def test_the_outcome_columns_come_first_and_the_users_sheet_follows_cell_for_cell(
    written: tuple[Path, Path],
) -> None:
    path, out = written
    given = _sheet(path, "Billing")
    got = _sheet(out, "Billing")
    assert openpyxl.load_workbook(out).sheetnames == ["Billing", "Summary", "Errors"]
    assert got[0][6] == "Acme billing 2026" and got[1] == [*OUTCOMES, *HEADERS, "Notes"]
    for r in range(2, len(given)):  # every input cell on its row, six columns right (dates come back as dates)
        assert [v.date() if isinstance(v, dt.datetime) else v for v in got[r][6:13]] == [
            v.date() if isinstance(v, dt.datetime) else v for v in given[r][:7]]  # fmt: skip
    assert [row[:6] for row in got[2:]] == [
        ["created", 900001, 100.03, 10003, None, None],
        [None] * 6,  # the blank row, blank
        ["invalid", None, None, None, None, AMOUNT_ERROR],  # its amount did not parse: none shown
        ["rejected", None, 100.06, 10006, None, "Kantata: Title: Title is reserved"],  # in words, not "(field ..)"
        ["not_sent", None, 100.07, 10007, None, "not sent"],
    ]
    assert len(got) == 7  # nothing below the last row


def test_ids_are_numbers_and_amounts_carry_the_currencys_number_format(written: tuple[Path, Path]) -> None:
    ws = openpyxl.load_workbook(written[1])["Billing"]
    assert ws["B3"].value == 900001 and ws["B3"].data_type == "n" and ws["B3"].number_format == "0"
    assert ws["C3"].value == 100.03 and ws["C3"].number_format == "#,##0.00"
    assert ws["D3"].value == 10003 and ws["D3"].number_format == "#,##0"  # the cents Kantata got, exactly


def test_a_project_in_yen_shows_its_amounts_with_no_decimals(make_schedule: MakeSchedule, tmp_path: Path) -> None:
    raw = load_schedule(_schedule(make_schedule))
    validated = validate_rows(raw)
    out = _write(raw, validated, tmp_path / "results.xlsx", money=Money.of(validated.rows, {1001: "JPY"}))
    ws = openpyxl.load_workbook(out)["Billing"]
    assert (ws["C3"].value, ws["C3"].number_format, ws["D3"].value) == (10003, "#,##0", 10003)
    table = _sheet(out, "Summary")
    assert [1001, "JPY", 3, 10003, 10006, 10007, 30016, 30016] in table


@pytest.mark.parametrize(("given", "shown"), [("A3", "G3"), ("G3", "M3"), ("G5", "M5"), ("G6", "M6"), ("G7", "M7")])
def test_text_that_looks_like_a_formula_is_written_as_text(written: tuple[Path, Path], given: str, shown: str) -> None:
    """ "=1+1", "-5 owed", "@mention", "+44 ...": text in the input, text in the results, shown as typed even when
    the user edits the cell (Excel's quote prefix); never a formula Excel would run."""
    cell = openpyxl.load_workbook(written[0])["Billing"][given]
    ws = openpyxl.load_workbook(written[1])["Billing"]
    assert ws[shown].value == cell.value and ws[shown].data_type == "s" and ws[shown].quotePrefix


def test_the_errors_sheet_lists_every_problem_with_its_column_and_a_link_to_its_cell(
    written: tuple[Path, Path],
) -> None:
    ws = openpyxl.load_workbook(written[1])["Errors"]
    rows = [[c.value for c in row] for row in ws.iter_rows()]
    assert rows[0] == ["Row", "Column", "Header", "Value", "Code", "Message", "Go to", "Severity"]
    assert [(r[0], r[1], r[2], r[3], r[4], r[6], r[7]) for r in rows[1:]] == [
        (5, "B", "amount_in_cents", "x", "amount-not-a-number", "H5", "error"),  # the schedule's B: the results' H
        (6, "A", "Title", "", "rejected-by-kantata", "G6", "error"),  # Kantata named the field: its column
        (7, None, None, "", "not-sent", "F7", "error"),  # the whole row: a link to its errors cell
    ]
    assert [r[5] for r in rows[1:]] == [AMOUNT_ERROR, "Kantata: Title: Title is reserved", "not sent"]
    links = [ws.cell(row=r, column=7).hyperlink for r in (2, 3, 4)]
    assert [link.location if link else None for link in links] == ["'Billing'!H5", "'Billing'!G6", "'Billing'!F7"]


def test_kantatas_messages_read_as_words() -> None:
    fields = {"story_id": "E", "title": "A"}
    assert in_words("Kantata: must be unique (field base)", fields) == ("Kantata: must be unique", None)
    assert in_words("Kantata: is not in this project (field story_id)", fields) == (
        "Kantata: Task ID: is not in this project", "E")  # fmt: skip
    assert in_words("Kantata: odd (field story_id)", {}) == ("Kantata: Task ID: odd", None)
    assert in_words("connection reset", fields) == ("connection reset", None)


def test_the_summary_tells_the_run_and_the_amounts_in_currency_units(written: tuple[Path, Path]) -> None:
    path, out = written
    rows = _sheet(out, "Summary")
    said = {r[0]: r[1] for r in rows if r[0] is not None and r[0] != "Note"}
    told = ("File", "Sheet", "Header row", "Mode", "Kantata", "Rows read", "Blank rows skipped")
    assert {k: said[k] for k in told} == {
        "File": str(path), "Sheet": "Billing", "Header row": 2, "Mode": "upload",
        "Kantata": "https://api.example.test/api/v1", "Rows read": 4, "Blank rows skipped": 1}  # fmt: skip
    assert [r[1] for r in rows if r[0] == "Note"] == ["3 requests"]
    counted = {"created": 1, "invalid": 1, "rejected": 1, "not_sent": 1}
    assert {s.value: said[f"Rows {s.value}"] for s in Status} == {s.value: counted.get(s.value, 0) for s in Status}
    table = rows[[r[0] for r in rows].index("Amounts per project and currency (rows that passed validation)") + 1 :]
    assert [r[:8] for r in table] == [
        ["Project ID", "Currency", "Rows", "created", "rejected", "not_sent", "Total", "Total (cents)"],
        [1001, "USD", 3, 100.03, 100.06, 100.07, 300.16, 30016],  # the invalid row's amount did not parse
    ]
    ws = openpyxl.load_workbook(out)["Summary"]
    row = len(rows)
    assert ws.cell(row=row, column=7).number_format == "#,##0.00"


def test_the_input_is_never_written(make_schedule: MakeSchedule, tmp_path: Path) -> None:
    path = _schedule(make_schedule)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    raw = load_schedule(path)
    validated = validate_rows(raw)
    _write(raw, validated, tmp_path / "results.xlsx")
    with pytest.raises(ConfigError, match="results are never written over the input"):
        _write(raw, validated, path)
    with pytest.raises(ConfigError, match="is the input schedule"):
        check_output(tmp_path / "." / path.name, path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["results.xlsx", "schedule.xlsx"]


def test_an_earlier_results_workbook_fed_back_has_its_outcome_columns_reused(
    make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    first = tmp_path / "schedule.results.2026-12-05T1432.xlsx"  # a dated one, as history.py keeps them
    raw = load_schedule(_schedule(make_schedule))
    _write(raw, validate_rows(raw), first)
    again = load_schedule(first, sheet="Billing")
    assert again.previous_outcomes == ["A", "B", "C", "D", "E", "F"]
    assert again.fields["milestone_id"] == "B"  # the id, a number now, still names the row's milestone
    validated = validate_rows(again)
    assert validated.rows.loc[3, "milestone_id"] == 900001
    assert again.fields["title"] == "G" and again.fields["amount_in_cents"] == "H"  # the amounts shown: not input
    created = {row: Outcome(row, Status.UNCHANGED, "900001") if row == 3 else o for row, o in _outcomes().items()}
    second = _write(again, validated, tmp_path / "again.xlsx", created)
    got = _sheet(second, "Billing")
    assert got[1] == [*OUTCOMES, *HEADERS, "Notes"]  # not a second set, nothing moved
    assert got[2][:6] == ["unchanged", 900001, 100.03, 10003, None, None]


def test_a_results_workbook_of_the_earlier_layout_is_still_recognised(tmp_path: Path) -> None:
    """Outcome columns after the user's, the id as text, "exists" for unchanged: read back, kept in place."""
    path = tmp_path / "old.results.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Billing"
    ws.append([*HEADERS, "status", "billing_milestone_id", "errors"])
    ws.append([*good_row(2), "exists", "900001", None])
    wb.save(path)
    raw = load_schedule(path)
    assert raw.previous_outcomes == ["G", "H", "I"] and raw.fields["milestone_id"] == "H"
    out = _write(raw, validate_rows(raw), tmp_path / "new.xlsx", {2: Outcome(2, Status.UNCHANGED, "900001")})
    got = _sheet(out, "Billing")
    assert got[0] == [*HEADERS, "status", "billing_milestone_id", "errors", "amount_in_units",
                      "api_amount_in_cents", "changes"]  # fmt: skip
    assert got[1][6:9] == ["unchanged", 900001, None]
