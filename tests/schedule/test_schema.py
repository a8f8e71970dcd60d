"""The row schema (importer/schedule/schema.py): typed rows, and every problem at once, placed as Excel shows it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer.schedule.cells import CellProblem, ParseOptions, parse_cents
from importer.schedule.loader import load_schedule
from importer.schedule.schema import Validated, validate_rows
from tests.conftest import MakeSchedule

WHOLE_OR_NOT = st.one_of(
    st.integers(min_value=-(2**53) - 2, max_value=2**53 + 2).map(float),
    st.floats(),  # fractions, nan, inf, huge and tiny ones
    st.sampled_from([0.0, -0.0, 2.0**53, -(2.0**53), 2.0**53 - 1, 0.5, 1e300]),
)


@given(st.lists(WHOLE_OR_NOT, min_size=1, max_size=30))
def test_the_numpy_path_for_number_columns_agrees_with_the_parser(values: list[float]) -> None:
    """`_whole_floats` (a whole column at once) gives exactly the parser's ints, or leaves the column to it."""
    from importer.schedule.schema import _whole_floats

    parsed: list[object] = []
    for v in values:
        try:
            parsed.append(parse_cents(v))
        except CellProblem:
            parsed.append(None)
    fast = _whole_floats(list(values))
    if None in parsed:
        assert fast is None  # a cell the parser refuses: the parser must see the column
    else:
        assert fast == parsed and all(type(n) is int for n in fast)


TEXT_CELLS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64).map(str),  # past int64 too
    st.tuples(
        st.sampled_from(["", " ", "\u00a0", "\t"]),
        st.sampled_from(["+", "-", ""]),
        st.from_regex(r"[0-9]{1,20}", fullmatch=True),
        st.sampled_from(["", " ", "\u3000"]),
    ).map("".join),
    st.sampled_from(["", "  ", "12.5", "101.0", "1e3", "1_000", "١٢", "#N/A", " #REF! ", "0x10", "-", "+"]),
    st.text(max_size=8),
)


@given(st.sampled_from(["cents", "id", "text"]), st.lists(TEXT_CELLS, min_size=1, max_size=30))
def test_the_column_paths_for_text_cells_agree_with_the_parser(kind: str, values: list[str]) -> None:
    """`_column_at_once` (a CSV column at a time) gives exactly what each cell's parse gives, or leaves the
    column to the parser when one cell is blank or a problem the parser must explain."""
    from importer.schedule.cells import parser_for
    from importer.schedule.columns import FIELDS
    from importer.schedule.schema import _column_at_once, _parse_cell

    assert _column_at_once("cents", ["733569", " -12 ", "+0"]) == [733569, -12, 0]  # the paths are taken
    assert _column_at_once("text", [" Retainer ", "Licence"]) == ["Retainer", "Licence"]
    field = next(f for f in FIELDS if f.kind == kind)
    parsed = [_parse_cell(v, parser_for(field)) for v in values]
    fast = _column_at_once(kind, list(values))
    if any(p is None or isinstance(p, CellProblem) for p in parsed):
        assert fast is None
    elif fast is not None:
        assert fast == parsed and [type(v) for v in fast] == [type(p) for p in parsed]


D = dt.date(2026, 3, 31)


def _validated(make_schedule: MakeSchedule, rows: list[list[Any]], **kw: Any) -> Validated:
    return validate_rows(load_schedule(make_schedule(rows, **kw)))


def _where(validated: Validated) -> list[tuple[int, str | None, str]]:
    return [(i.row, i.column, i.code) for i in validated.issues]


# Columns in an order of the user's, with a column of their own, under a title block: the header is on row 3.
SHUFFLED = ["Project ID", "Notes", "Title", "amount_in_cents", "Date to invoice", "Task ID", "Billing type"]
ABOVE = [["Acme billing 2026"], []]


def test_every_error_of_every_row_at_once_with_its_excel_cell(make_schedule: MakeSchedule) -> None:
    rows: list[list[Any]] = [
        [1001, "ok", "A", 100, D, None, "fixed_date"],  # row 4
        [0, "", "B", "x", D, None, "fixed_date"],  # row 5: two bad cells
        [1001, "", None, 300, "2026-02-30", None, None],  # row 6: no title, no such date
        [1001, "", "D", 400, None, None, "monthly"],  # row 7
        [1001, "", "E", 500, None, None, "upon_completion"],  # row 8: no task
        [1002, "", "F", 600, None, 5004, "upon_completion"],  # row 9
    ]
    validated = _validated(make_schedule, rows, headers=SHUFFLED, above=ABOVE)
    assert _where(validated) == [
        (5, "A", "id-not-positive"), (5, "D", "amount-not-a-number"),
        (6, "C", "required"), (6, "E", "invalid-date"),
        (7, "G", "invalid-choice"),
        (8, "F", "story-required"),
    ]  # fmt: skip
    by_cell = {i.cell: i for i in validated.issues}
    assert (by_cell["A5"].header, by_cell["A5"].value) == ("Project ID", "0")
    assert (by_cell["D5"].header, by_cell["D5"].value) == ("amount_in_cents", "x")
    assert by_cell["G7"].value == "monthly" and "fixed_date or upon_completion" in by_cell["G7"].message
    assert by_cell["F8"].header == "Task ID" and by_cell["F8"].message.startswith("Task ID is required")
    assert all(i.is_error for i in validated.issues)
    assert validated.invalid_rows == {5, 6, 7, 8} and validated.total_rows == 6
    assert validated.rows.index.tolist() == [4, 9]


def test_valid_rows_come_out_typed_and_exact(make_schedule: MakeSchedule) -> None:
    rows: list[list[Any]] = [[1001, "", " Retainer ", "733569", "2026-03-31", None, "Fixed date"],
                             [1002, "", "Licence", 12.0, D, 5004, "upon-completion"]]  # fmt: skip
    typed = _validated(make_schedule, rows, headers=SHUFFLED, above=ABOVE).rows
    fields = ["title", "amount_in_cents", "workspace_id", "date_to_invoice", "story_id", "billing_type"]
    assert [typed.at[4, f] for f in fields] == ["Retainer", 733569, 1001, D, pd.NA, "fixed_date"]
    assert [typed.at[5, f] for f in fields] == ["Licence", 12, 1002, D, 5004, "upon_completion"]
    assert str(typed["amount_in_cents"].dtype) == "Int64" and type(typed.at[4, "amount_in_cents"]) is not float


@pytest.mark.parametrize(("cell", "code"), [("x", "amount-not-a-number"), ("12.5", "amount-not-whole"),
                                            ("#REF!", "formula-error")])  # fmt: skip
def test_a_cell_that_does_not_parse_is_one_issue_not_also_a_missing_value(
    make_schedule: MakeSchedule, cell: str, code: str
) -> None:
    """A required cell that fails to parse is also empty to the rules: the parse failure is the cause, said once."""
    rows: list[list[Any]] = [["A", cell, "abc", None, None, None]]
    validated = _validated(make_schedule, rows)
    assert _where(validated) == [(2, "B", code), (2, "C", "id-not-a-number")]


def test_one_issue_per_cell_when_a_row_breaks_several_rules(make_schedule: MakeSchedule) -> None:
    """An upon_completion row whose task id is no number: the id's problem, not also 'task required'."""
    rows: list[list[Any]] = [["A", 1, 1001, None, "T-12", "upon_completion"]]
    assert _where(_validated(make_schedule, rows)) == [(2, "E", "id-not-a-number")]


def test_a_missing_amount_is_named_by_the_column_the_sheet_has(make_schedule: MakeSchedule) -> None:
    """A sheet giving amounts in currency units ("amount") is told its Amount is missing, in its own column."""
    rows: list[list[Any]] = [["A", None, 1001], ["B", "1.50", 1001]]
    validated = _validated(make_schedule, rows, headers=["title", "amount", "workspace_id"])
    assert _where(validated) == [(2, "B", "required")]
    assert validated.issues[0].header == "amount" and validated.rows["amount_in_cents"].tolist() == [150]


def test_a_required_column_the_rules_need_but_the_sheet_lacks_is_named(make_schedule: MakeSchedule) -> None:
    """No Task ID column at all: the issue names the row and says which column to add."""
    rows: list[list[Any]] = [["A", 1, 1001, "upon_completion"]]
    validated = _validated(make_schedule, rows, headers=["title", "amount_in_cents", "workspace_id", "billing_type"])
    assert _where(validated) == [(2, None, "story-required")]
    assert validated.issues[0].message.endswith("(add a Task ID column)")


def test_an_incomplete_external_reference_names_each_empty_cell(make_schedule: MakeSchedule) -> None:
    headers = ["title", "amount_in_cents", "workspace_id", "External service", "External type", "External ID"]
    rows: list[list[Any]] = [["A", 1, 1001, "NetSuite", None, None], ["B", 2, 1001, "NetSuite", "line", "L-1"]]
    validated = _validated(make_schedule, rows, headers=headers)
    assert _where(validated) == [(2, "E", "external-reference-incomplete"), (2, "F", "external-reference-incomplete")]
    assert validated.rows.index.tolist() == [3]


def test_amount_and_cents_must_agree_to_the_cent(make_schedule: MakeSchedule) -> None:
    headers = ["title", "amount", "amount_in_cents", "workspace_id"]
    rows: list[list[Any]] = [["A", "12.34", 1234, 1001], ["B", "12.34", 1243, 1001], ["C", None, 77, 1001]]
    validated = _validated(make_schedule, rows, headers=headers)
    assert _where(validated) == [(3, "B", "amounts-disagree")]
    assert validated.rows["amount_in_cents"].to_dict() == {2: 1234, 4: 77}


def test_a_warning_leaves_its_row_valid(make_schedule: MakeSchedule) -> None:
    """The loader's warnings (a row titled like a total, with --allow-totals) come with the schema's issues, and
    send the row anyway."""
    rows: list[list[Any]] = [["Total", 1, 1001, None, None, None], ["B", "x", 1001, None, None, None]]
    validated = validate_rows(load_schedule(make_schedule(rows)), ParseOptions(allow_totals=True))
    assert [(i.row, i.column, i.code, i.severity) for i in validated.issues] == [
        (2, "A", "title-looks-like-a-total", "warning"), (3, "B", "amount-not-a-number", "error")]  # fmt: skip
    assert validated.invalid_rows == {3} and validated.rows.index.tolist() == [2]


def test_progress_is_told_for_the_rows_parsed(make_schedule: MakeSchedule) -> None:
    heard: list[tuple[int, int | None]] = []
    raw = load_schedule(make_schedule([["A", 1, 1001, None, None, None]] * 3))
    validate_rows(raw, on_progress=lambda done, total: heard.append((done, total)))
    assert heard and heard[-1] == (3, 3)
