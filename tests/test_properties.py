"""Invariants that money and idempotence rest on, over many values (hypothesis)."""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.schedule.cells import CellProblem, parse_amount, parse_cents, parse_date
from importer.schedule.loader import load_schedule
from importer.schedule.schema import validate_rows

# Every amount of at most 15 significant digits, in cents: what a user can type and Excel can hold exactly.
CENTS = st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1)


def _typed(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def _as_excel_stores_it(cents: int) -> float:
    """Excel keeps the typed decimal as a double and writes it with 17 significant digits; a reader parses that."""
    return float(format(float(str(_typed(cents))), ".17g"))


@given(CENTS)
def test_any_amount_typed_in_excel_with_two_decimals_is_exact_cents(cents: int) -> None:
    assert parse_amount(_as_excel_stores_it(cents), 2) == cents
    result = parse_amount(str(_typed(cents)), 2)
    assert result == cents and type(result) is int


@given(CENTS, st.sampled_from(["{}", "${}", "USD {}", "{} EUR"]), st.booleans())
def test_any_amount_typed_as_text_with_separators_is_exact_cents(cents: int, wrap: str, accounting: bool) -> None:
    text = f"{abs(_typed(cents)):,.2f}"
    if cents < 0:
        text = f"({text})" if accounting else f"-{text}"
    assert parse_amount(wrap.format(text), 2) == cents


@given(st.decimals(min_value=-(10**6), max_value=10**6, places=3, allow_nan=False, allow_infinity=False))
def test_a_third_decimal_is_refused_never_rounded(value: Decimal) -> None:
    if value == value.quantize(Decimal("0.01")) and re.fullmatch(r"-?[1-9][0-9]{0,2}\.[0-9]{3}", str(value)):
        with pytest.raises(CellProblem, match="could be"):  # "1.680": 1.68, or 1680 with a thousands point
            parse_amount(str(value), 2)
        assert parse_amount(float(value), 2) == int(value.scaleb(2))  # a number cell is a number
    elif value == value.quantize(Decimal("0.01")):
        assert parse_amount(str(value), 2) == int(value.scaleb(2))
    else:
        with pytest.raises(CellProblem):
            parse_amount(str(value), 2)
        with pytest.raises(CellProblem):
            parse_amount(float(value), 2)


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()))
def test_amount_in_cents_never_accepts_a_fraction(value: float) -> None:
    with pytest.raises(CellProblem):
        parse_cents(value)


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


@settings(max_examples=10, deadline=None)
@given(st.lists(CENTS, min_size=1, max_size=200))
def test_amounts_round_trip_through_a_real_workbook(
    tmp_path_factory: pytest.TempPathFactory, amounts: list[int]
) -> None:
    """Through the real loader and schema, from sheet XML written as Excel writes numbers (17 digits)."""
    rows = "".join(
        f'<row r="{n}"><c r="A{n}" t="inlineStr"><is><t>T{n}</t></is></c>'
        f'<c r="B{n}"><v>{format(_as_excel_stores_it(c), ".17g")}</v></c><c r="C{n}"><v>1001</v></c></row>'
        for n, c in enumerate(amounts, start=2)
    )
    path = _workbook(tmp_path_factory.mktemp("wb"), rows)
    validated = validate_rows(load_schedule(path))
    assert validated.issues == []
    assert validated.rows["amount_in_cents"].tolist() == amounts


def _workbook(folder: Path, rows: str) -> Path:
    buffer = io.BytesIO()
    wb = openpyxl.Workbook()
    wb.save(buffer)
    header = ('<row r="1"><c r="A1" t="inlineStr"><is><t>title</t></is></c><c r="B1" t="inlineStr"><is><t>amount'
              '</t></is></c><c r="C1" t="inlineStr"><is><t>workspace_id</t></is></c></row>')  # fmt: skip
    sheet = ('<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/'
             f'spreadsheetml/2006/main"><sheetData>{header}{rows}</sheetData></worksheet>')  # fmt: skip
    source = zipfile.ZipFile(buffer)
    path = folder / "amounts.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for item in source.infolist():
            name = item.filename
            zf.writestr(item, sheet.encode() if name == "xl/worksheets/sheet1.xml" else source.read(name))
    return path


@pytest.mark.parametrize(
    ("text", "suggested"),
    [("31.01.2026", "--date-format %d.%m.%Y"), ("01/31/2026", "--date-format %m/%d/%Y"),
     ("31/01/2026", "--date-format %d/%m/%Y"), ("Jan 31 2026", "--date-format %b %d %Y"),
     ("01/02/2026", "--date-format %d/%m/%Y or --date-format %m/%d/%Y (whichever your dates follow)"),
     ("31/01/26", "--date-format %d/%m/%y"),
     ("1/2/26", "--date-format %d/%m/%y or --date-format %m/%d/%y (whichever your dates follow)")],
)  # fmt: skip
def test_a_date_not_in_iso_form_is_told_a_date_format_that_reads_it(text: str, suggested: str) -> None:
    """Every format suggested reads the cell (helper-15 saw %d/%m/%Y suggested for 01/31/2026 and 31.01.2026)."""
    with pytest.raises(CellProblem) as caught:
        parse_date(text)
    assert caught.value.message.endswith(f"retype it, or pass {suggested}")
    for date_format in suggested.split(" (")[0].replace("--date-format ", "").split(" or "):
        assert parse_date(text, date_format).year == 2026


def test_a_serial_reads_with_a_date_format_but_a_date_one_digit_short_is_no_serial() -> None:
    assert parse_date("46053", "%d/%m/%Y") == dt.date(2026, 1, 31)  # as without --date-format
    with pytest.raises(CellProblem, match="does not match --date-format %Y%m%d"):
        parse_date("2026230", "%Y%m%d")  # 2026-02-30 with a digit dropped: not the serial of the year 7447


@pytest.mark.parametrize("text", ["0,500", "0,5"])
def test_a_thousands_group_led_by_zero_is_a_decimal_comma(text: str) -> None:
    """ "0,500" was read as 500 (five hundred dinars where half a dinar was meant): no thousands start with 0."""
    with pytest.raises(CellProblem) as caught:
        parse_amount(text, 3)
    assert caught.value.code == "amount-decimal-comma"


@pytest.mark.parametrize(("text", "decimals"), [("1.500", 2), ("12.000", 2), ("(1.500)", 2), ("$1.500", 2),
                                                ("1.000", 0), ("EUR 999.990", 2)])  # fmt: skip
def test_a_point_before_three_digits_is_refused_when_it_could_be_a_thousands_point(text: str, decimals: int) -> None:
    """helper-17: "1.500" in a European CSV (1,500 meant) was read as 1.50, a thousandth of it; "1.234" was
    already refused (3 decimals), so only trailing zeros decided. Both readings are offered."""
    with pytest.raises(CellProblem) as caught:
        parse_amount(text, decimals)
    assert caught.value.code == "amount-ambiguous-point"
    digits = text.strip("$()EUR ")
    assert f"or {'-' if '(' in text else ''}{digits.replace('.', '')}" in caught.value.message


@pytest.mark.parametrize(("text", "decimals", "cents"), [("1.500", 3, 1500), ("0.500", 2, 50), ("1234.500", 2, 123450),
                                                         ("1,234.500", 2, 123450), ("1.5000", 2, 150),
                                                         ("1.50", 2, 150), ("1 234.500", 2, 123450),
                                                         ("12\u00a0345.000", 2, 1234500)])  # fmt: skip
def test_a_point_that_cannot_separate_thousands_is_a_decimal_point(text: str, decimals: int, cents: int) -> None:
    assert parse_amount(text, decimals) == cents


@pytest.mark.parametrize(("text", "cents"), [("1 234.56", 123456), ("10 000 000", 1000000000), ("$ 5", 500),
                                             ("USD 10.5", 1050), ("1\u202f234.50", 123450), ("1\u00a0234", 123400),
                                             ("- 5", -500)])  # fmt: skip
def test_spaces_between_thousands_and_around_marks_are_read(text: str, cents: int) -> None:
    assert parse_amount(text, 2) == cents


@pytest.mark.parametrize("text", ["12 34", "5 00", "1 23", "12 345 67", "1 2345"])
def test_a_space_inside_a_number_elsewhere_is_refused(text: str) -> None:
    """helper-17: "5 00" (a typo of 5.00) was read as 500.00: every space was dropped."""
    with pytest.raises(CellProblem) as caught:
        parse_amount(text, 2)
    assert caught.value.code == "amount-not-a-number" and "space inside the number" in caught.value.message


@pytest.mark.parametrize("text", ["2026", "202603", "366", "20260331", "73051"])
def test_a_number_that_is_no_plausible_date_serial_is_an_error(text: str) -> None:
    """helper-17: "2026" (a year) and "202603" (a period) were read as serials: 1905-07-18 and the year 2454."""
    with pytest.raises(CellProblem, match="is a number, not a date") as caught:
        parse_date(text)
    assert caught.value.code == "invalid-date"
    assert parse_date("29221") == dt.date(1980, 1, 1) and parse_date("73050") == dt.date(2099, 12, 31)
