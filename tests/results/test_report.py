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
from importer.results.report import RunInfo, check_output, write_results
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


def _write(raw: RawSchedule, validated: Validated, out: Path, outcomes: dict[int, Outcome] | None = None) -> Path:
    outcomes = _outcomes() if outcomes is None else outcomes
    return write_results(raw, outcomes, validated.issues, project_totals(validated.rows, outcomes), INFO, out)


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


def test_the_users_sheet_comes_back_cell_for_cell_with_an_outcome_per_row(written: tuple[Path, Path]) -> None:
    path, out = written
    given = _sheet(path, "Billing")
    got = _sheet(out, "Billing")
    assert openpyxl.load_workbook(out).sheetnames == ["Billing", "Summary", "Errors"]
    assert got[0][0] == "Acme billing 2026" and got[1] == [*HEADERS, "Notes", "status", "billing_milestone_id",
                                                             "errors"]  # fmt: skip
    for r in range(2, len(given)):  # every input cell at its address (dates come back as date cells)
        assert [v.date() if isinstance(v, dt.datetime) else v for v in got[r][:7]] == [
            v.date() if isinstance(v, dt.datetime) else v for v in given[r][:7]]  # fmt: skip
    assert [row[7:] for row in got[2:]] == [
        ["created", "900001", None],
        [None, None, None],  # the blank row, blank
        ["invalid", None, 'B5: amount_in_cents: "x" is not a number; enter whole cents, e.g. 123456 for 1,234.56'],
        ["rejected", None, REJECTED],
        ["not_sent", None, "not sent"],
    ]
    assert len(got) == 7  # nothing below the last row


def test_a_milestone_id_is_text_so_that_no_digit_is_lost(written: tuple[Path, Path]) -> None:
    ws = openpyxl.load_workbook(written[1])["Billing"]
    assert ws["I3"].value == "900001" and ws["I3"].data_type == "s"


@pytest.mark.parametrize("cell", ["A3", "G3", "G5", "G6", "G7"])
def test_text_that_looks_like_a_formula_is_written_as_text(written: tuple[Path, Path], cell: str) -> None:
    """ "=1+1", "-5 owed", "@mention", "+44 ...": text in the input, text in the results, shown as typed even when
    the user edits the cell (Excel's quote prefix); never a formula Excel would run."""
    given = openpyxl.load_workbook(written[0])["Billing"][cell]
    ws = openpyxl.load_workbook(written[1])["Billing"]
    assert ws[cell].value == given.value and ws[cell].data_type == "s" and ws[cell].quotePrefix


def test_the_errors_sheet_lists_every_problem_with_a_link_to_its_cell(written: tuple[Path, Path]) -> None:
    ws = openpyxl.load_workbook(written[1])["Errors"]
    rows = [[c.value for c in row] for row in ws.iter_rows()]
    assert rows[0] == ["Row", "Column", "Header", "Value", "Code", "Message", "Go to", "Severity"]
    assert [(r[0], r[1], r[2], r[3], r[4], r[6], r[7]) for r in rows[1:]] == [
        (5, "B", "amount_in_cents", "x", "amount-not-a-number", "B5", "error"),
        (6, None, None, "", "rejected-by-kantata", "A6", "error"),
        (7, None, None, "", "not-sent", "A7", "error"),
    ]
    assert [r[5] for r in rows[1:]] == ['amount_in_cents: "x" is not a number; enter whole cents, e.g. 123456 for '
                                        "1,234.56", REJECTED, "not sent"]  # fmt: skip
    links = [ws.cell(row=r, column=7).hyperlink for r in (2, 3, 4)]
    assert [link.location if link else None for link in links] == ["'Billing'!B5", "'Billing'!A6", "'Billing'!A7"]


def test_the_summary_tells_the_run_and_the_amounts(written: tuple[Path, Path]) -> None:
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
    table = rows[[r[0] for r in rows].index("Amounts per project (rows that passed validation)") + 1 :]
    assert [r[:6] for r in table] == [
        ["Project ID", "Rows", "created (cents)", "rejected (cents)", "not_sent (cents)", "Total (cents)"],
        [1001, 3, 10003, 10006, 10007, 30016],  # the invalid row's amount did not parse: in no total
    ]


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
    first = tmp_path / "results.xlsx"
    raw = load_schedule(_schedule(make_schedule))
    _write(raw, validate_rows(raw), first)
    again = load_schedule(first, sheet="Billing")
    assert again.previous_outcomes == ["H", "I", "J"]
    created = {row: Outcome(row, Status.UNCHANGED, "900001") if row == 3 else o for row, o in _outcomes().items()}
    second = _write(again, validate_rows(again), tmp_path / "again.xlsx", created)
    got = _sheet(second, "Billing")
    assert got[1] == [*HEADERS, "Notes", "status", "billing_milestone_id", "errors"]  # not a second set
    assert got[2][7:] == ["unchanged", "900001", None]
