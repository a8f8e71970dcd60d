"""Cell parsing (importer/schedule/cells.py): each cell becomes an exact value or a `CellProblem`, never a guess."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer.schedule.cells import (
    MAX_INT64,
    CellProblem,
    ParseOptions,
    currency_marks,
    mark_fits,
    parse_amount,
    parse_cents,
    parse_date,
    parse_id,
    parser_for,
)
from importer.schedule.columns import BY_NAME

# Every amount of at most 15 significant digits, in cents: what a user can type and Excel can hold exactly.
CENTS = st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1)


def typed(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def as_excel_stores_it(cents: int) -> float:
    """Excel keeps the typed decimal as a double and writes it with 17 significant digits; a reader parses that."""
    return float(format(float(str(typed(cents))), ".17g"))


@given(CENTS)
def test_any_amount_typed_in_excel_with_two_decimals_is_exact_cents(cents: int) -> None:
    assert parse_amount(as_excel_stores_it(cents), 2) == cents
    result = parse_amount(str(typed(cents)), 2)
    assert result == cents and type(result) is int


@given(CENTS, st.sampled_from(["{}", "${}", "USD {}", "{} EUR"]), st.booleans())
def test_any_amount_typed_as_text_with_separators_is_exact_cents(cents: int, wrap: str, accounting: bool) -> None:
    text = f"{abs(typed(cents)):,.2f}"
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


# A number cell is read as Excel shows it, at 15 significant digits (17592186044416.984 is 17592186044417 on the
# sheet): a fraction is one that is still there at that precision.
@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not float(f"{f:.15g}").is_integer()))
def test_amount_in_cents_never_accepts_a_fraction(value: float) -> None:
    with pytest.raises(CellProblem):
        parse_cents(value)


@pytest.mark.parametrize(
    ("text", "suggested"),
    [("31.01.2026", "--date-format %d.%m.%Y"), ("01/31/2026", "--date-format %m/%d/%Y"),
     ("31/01/2026", "--date-format %d/%m/%Y"), ("Jan 31 2026", "--date-format %b %d %Y"),
     ("01/02/2026", "--date-format %d/%m/%Y or --date-format %m/%d/%Y (whichever your dates follow)"),
     ("31/01/26", "--date-format %d/%m/%y"),
     ("1/2/26", "--date-format %d/%m/%y or --date-format %m/%d/%y (whichever your dates follow)")],
)  # fmt: skip
def test_a_date_not_in_iso_form_is_told_a_date_format_that_reads_it(text: str, suggested: str) -> None:
    """Every format suggested reads the cell (not %d/%m/%Y for 01/31/2026 or 31.01.2026, which it cannot read)."""
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
    """ "1.500" in a European CSV (1,500 meant) must not be read as 1.50, a thousandth of it; "1.234" is refused
    for its 3 decimals anyway, so only trailing zeros would decide. Both readings are offered."""
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
    """ "5 00" (a typo of 5.00) must not become 500.00 by dropping every space."""
    with pytest.raises(CellProblem) as caught:
        parse_amount(text, 2)
    assert caught.value.code == "amount-not-a-number" and "space inside the number" in caught.value.message


@pytest.mark.parametrize("text", ["2026", "202603", "366", "20260331", "73051"])
def test_a_number_that_is_no_plausible_date_serial_is_an_error(text: str) -> None:
    """ "2026" (a year) and "202603" (a period) are no serials, though Excel would read 1905-07-18 and the year 2454."""
    with pytest.raises(CellProblem, match="is a number, not a date") as caught:
        parse_date(text)
    assert caught.value.code == "invalid-date"
    assert parse_date("29221") == dt.date(1980, 1, 1) and parse_date("73050") == dt.date(2099, 12, 31)


def _problem(parse: object, *args: object) -> CellProblem:
    """The CellProblem a parser raises for these arguments (the test fails if it returns a value instead)."""
    assert callable(parse)
    with pytest.raises(CellProblem) as caught:
        parse(*args)
    return caught.value


# --- amounts in currency units, at Excel's edges ---


@pytest.mark.parametrize(("text", "cents"), [("1,234,567.89", 123456789), ("1,234", 123400), ("12,345,678", 1234567800),
                                             ("0.5", 50), (".5", 50), ("4.9300", 493), ("+7", 700)])  # fmt: skip
def test_thousands_commas_and_plain_decimals_are_exact(text: str, cents: int) -> None:
    result = parse_amount(text, 2)
    assert result == cents and type(result) is int


@pytest.mark.parametrize("text", ["1,23,456", "12,3456", ",123", "1,,234"])
def test_commas_that_do_not_group_thousands_are_refused_not_dropped(text: str) -> None:
    """ "1,23,456" could be 123456 or a typo: a comma is read only between groups of three."""
    assert _problem(parse_amount, text, 2).code == "amount-not-a-number"


@pytest.mark.parametrize(("text", "decimals", "cents", "marks"), [
    ("$1,234.56", 2, 123456, {"$"}), ("€5", 2, 500, {"€"}), ("5 €", 2, 500, {"€"}), ("USD 10", 2, 1000, {"USD"}),
    ("10.50 EUR", 2, 1050, {"EUR"}), ("¥500", 0, 500, {"¥"}), ("£0.99", 2, 99, {"£"}), ("KWD 1.250", 3, 1250, {"KWD"}),
    ("KD 7", 3, 7000, {"KD"}), ("KD 1,234.567", 3, 1234567, {"KD"}), ("7.250 KD", 3, 7250, {"KD"}),
    ("(KD 0.500)", 3, -500, {"KD"}),
])  # fmt: skip
def test_currency_marks_are_peeled_and_reported(text: str, decimals: int, cents: int, marks: set[str]) -> None:
    assert parse_amount(text, decimals) == cents
    assert currency_marks(text) == marks  # checked against the project's currency later, never ignored


def test_a_number_cell_names_no_currency_and_marks_fit_only_their_currencies() -> None:
    assert currency_marks(1234.5) == frozenset() and currency_marks("1,234.50") == frozenset()
    assert mark_fits("€", "EUR") and not mark_fits("€", "USD")
    assert mark_fits("$", "USD") and mark_fits("$", "MXN") and not mark_fits("$", "EUR")  # "$" is any dollar/peso
    assert mark_fits("JPY", "JPY") and not mark_fits("JPY", "CNY")
    assert mark_fits("KD", "KWD") and not mark_fits("KD", "USD") and not mark_fits("$", "KWD")  # as Kantata shows KWD


@pytest.mark.parametrize(("value", "cents"), [("-5.00", -500), ("(5.00)", -500), ("$(1.00)", -100), ("($1.00)", -100),
                                              ("-$5", -500), ("$-5", -500), ("(1,234.56)", -123456), ("EUR -3", -300),
                                              (-0.01, -1), (-3, -300), ("-0", 0)])  # fmt: skip
def test_negative_amounts_keep_their_sign(value: object, cents: int) -> None:
    assert parse_amount(value, 2) == cents


@pytest.mark.parametrize("value", ["12.345", "0.001", 12.345, 0.001, "(1,234.567)", "1,234.5678"])
def test_a_third_decimal_is_refused_for_a_two_decimal_currency(value: object) -> None:
    assert _problem(parse_amount, value, 2).code == "amount-too-many-decimals"


def test_the_currency_decides_how_many_decimals_an_amount_may_have() -> None:
    assert parse_amount("12.345", 3) == 12345 and parse_amount(12.345, 3) == 12345
    assert parse_amount(1500, 0) == 1500
    assert _problem(parse_amount, "12.5", 0).code == "amount-too-many-decimals"
    assert parser_for(BY_NAME["amount"], ParseOptions(currency_decimals=3))("1.5") == 1500
    assert parser_for(BY_NAME["amount"])("1.5") == 150


@pytest.mark.parametrize(("noise", "cents"), [(0.1 + 0.2, 30), (7.000000000000001, 700), (100.00000000000001, 10000),
                                             (1500 * 1.1, 165000), (16.5 * 1.1, 1815)])  # fmt: skip
def test_float_noise_from_a_formula_is_read_at_excels_fifteen_digits(noise: float, cents: int) -> None:
    """=1500*1.1 is saved as 1650.0000000000002 and shown by Excel as 1,650.00: that is the amount."""
    assert parse_amount(noise, 2) == cents


@pytest.mark.parametrize("value", [1.0 / 3, 1650.005, 0.125, 100000000000.5 / 7])
def test_a_real_fraction_past_the_currencys_decimals_is_refused_never_rounded(value: float) -> None:
    assert _problem(parse_amount, value, 2).code == "amount-too-many-decimals"


def test_cents_from_a_formula_are_read_at_excels_fifteen_digits_but_a_real_fraction_is_not() -> None:
    assert parse_cents(1.1 * 100) == 110
    assert _problem(parse_cents, 100000000000000.5).code == "amount-not-whole"


def test_a_double_that_reads_back_as_the_typed_decimal_is_that_decimal() -> None:
    """Excel saves 1234.56 as 1234.5599999999999 (17 digits): the same double, so the amount typed."""
    assert parse_amount(1234.5599999999999, 2) == 123456
    assert parse_amount(0.07, 2) == 7 and parse_amount(19.99, 2) == 1999


def test_huge_amounts_are_exact_up_to_int64_and_refused_past_it() -> None:
    assert parse_amount("92233720368547758.07", 2) == MAX_INT64
    assert _problem(parse_amount, "92233720368547758.08", 2).code == "amount-too-large"
    assert parse_amount(92233720368547758, 2) == 9223372036854775800
    assert _problem(parse_amount, 92233720368547759, 2).code == "amount-too-large"
    # A number cell with more digits than a double holds: what was typed cannot be told.
    assert _problem(parse_amount, 12345678901234567.0, 2).code == "amount-too-large"
    assert parse_amount(1e16, 2) == 10**18  # a double that is exactly its value


@pytest.mark.parametrize("value", [True, None, float("nan"), float("inf"), dt.date(2026, 1, 1), "", "abc", "$", "()"])
def test_what_is_no_amount_is_refused(value: object) -> None:
    assert _problem(parse_amount, value, 2).code == "amount-not-a-number"


# --- whole cents ---


@pytest.mark.parametrize(("value", "cents"), [(12345, 12345), ("12345", 12345), (" -12 ", -12), (12.0, 12), ("+0", 0),
                                              (MAX_INT64, MAX_INT64), (str(MAX_INT64), MAX_INT64)])  # fmt: skip
def test_whole_cents_are_read_exactly(value: object, cents: int) -> None:
    result = parse_cents(value)
    assert result == cents and type(result) is int


@pytest.mark.parametrize(("value", "code"), [
    (12.5, "amount-not-whole"), ("12.50", "amount-not-whole"), (float(2**53), "amount-too-large"),
    (MAX_INT64 + 1, "amount-too-large"), (str(MAX_INT64 + 1), "amount-too-large"), (True, "amount-not-a-number"),
    ("1e3", "amount-not-a-number"), ("1,000", "amount-not-a-number"), (float("inf"), "amount-not-a-number"),
])  # fmt: skip
def test_cents_that_are_not_an_exact_whole_number_are_refused(value: object, code: str) -> None:
    assert _problem(parse_cents, value).code == code


# --- dates ---


@pytest.mark.parametrize(("value", "date"), [
    (dt.date(2026, 3, 31), dt.date(2026, 3, 31)), (dt.datetime(2026, 3, 31), dt.date(2026, 3, 31)),
    ("2026-03-31", dt.date(2026, 3, 31)), (" 2026-03-31 ", dt.date(2026, 3, 31)),
    ("46112", dt.date(2026, 3, 31)),  # an Excel serial, as a CSV export writes a date cell
])  # fmt: skip
def test_dates_from_cells_iso_text_and_serials(value: object, date: dt.date) -> None:
    assert parse_date(value) == date


@pytest.mark.parametrize(("value", "message"), [
    (dt.datetime(2026, 3, 31, 14, 30), "has a time of day"), ("2026-02-30", "is not a real date"),
    (46112, "is a number, not a date"), (46112.0, "is a number, not a date"), ("next tuesday", "is not a date"),
    ("2026.13.45", "is not written like 2026-03-31"),
])  # fmt: skip
def test_what_is_no_date_is_refused_with_the_reason(value: object, message: str) -> None:
    problem = _problem(parse_date, value)
    assert problem.code in {"invalid-date", "date-has-time"} and message in problem.message


def test_a_date_format_reads_the_dates_written_that_way_and_only_those() -> None:
    assert parse_date("31/03/2026", "%d/%m/%Y") == dt.date(2026, 3, 31)
    assert parse_date("03/31/2026", "%m/%d/%Y") == dt.date(2026, 3, 31)
    assert parse_date("2026-03-31", "%d/%m/%Y") == dt.date(2026, 3, 31)  # ISO is always read
    assert "does not match --date-format %m/%d/%Y" in _problem(parse_date, "31/03/2026", "%m/%d/%Y").message
    assert parser_for(BY_NAME["date_to_invoice"], ParseOptions(date_format="%d.%m.%Y"))("31.03.2026") == dt.date(
        2026, 3, 31
    )


# --- ids ---


@pytest.mark.parametrize(("value", "number"), [(1001, 1001), (1001.0, 1001), ("1001", 1001), ("1001.0", 1001),
                                               ("1001.00", 1001), (" 1001 ", 1001), (-5, -5), (0, 0)])  # fmt: skip
def test_an_id_is_any_exact_whole_number(value: object, number: int) -> None:
    """Excel exports write ids as 1001.0; whether an id is above 0 is the schema's rule, not the parser's."""
    result = parse_id(value)
    assert result == number and type(result) is int


@pytest.mark.parametrize(("value", "code"), [("1001.5", "id-not-whole"), (1001.5, "id-not-whole"),
                                             ("abc", "id-not-a-number"), (True, "id-not-a-number"),
                                             ("1e3", "id-not-a-number"), ("#1001", "id-not-a-number"),
                                             (MAX_INT64 + 1, "id-too-large"),
                                             (float(2**53), "id-too-large")])  # fmt: skip
def test_what_is_no_whole_number_is_no_id(value: object, code: str) -> None:
    assert _problem(parse_id, value).code == code


@pytest.mark.parametrize(("cell", "value"), [
    (444.44, Decimal("444.44")), (10.002, Decimal("10.002")), (12000, Decimal(12000)), (-150.0, Decimal(-150)),
    (1500 * 1.1, Decimal(1650)),  # a formula's binary noise, read as Excel shows it
    ("12,345,678,901,234,567.89", Decimal("12345678901234567.89")),  # past int64 in thousandths: still exact
    ("(1,234.56)", Decimal("-1234.56")), ("KD 7.000", Decimal(7)),
])  # fmt: skip
def test_units_value_is_the_exact_amount_whatever_its_decimals(cell: object, value: Decimal) -> None:
    from importer.schedule.cells import units_value

    got = units_value(cell)
    assert got == value and isinstance(got, Decimal)


@pytest.mark.parametrize("cell", ["444,44", "abc", True, float("nan"), dt.date(2026, 1, 1)])
def test_units_value_refuses_what_is_no_amount(cell: object) -> None:
    from importer.schedule.cells import units_value

    with pytest.raises(CellProblem):
        units_value(cell)


@pytest.mark.parametrize(("cell", "value"), [
    ("1000,5", Decimal("1000.5")), ("2.000,00", Decimal(2000)), ("10,002", Decimal("10.002")),
    ("-1.234,56", Decimal("-1234.56")), ("KD 7,000", Decimal(7)), ("10000", Decimal(10000)),
    (1000.5, Decimal("1000.5")),  # a number cell has no comma to read
])  # fmt: skip
def test_units_value_reads_a_decimal_comma_when_the_amounts_are_written_so(cell: object, value: Decimal) -> None:
    """A European Excel's CSV writes amount_in_units 1000.50 as "1000,5": with --decimal-comma it is that amount,
    as an Amount written so is."""
    from importer.schedule.cells import units_value

    got = units_value(cell, decimal_comma=True)
    assert got == value and isinstance(got, Decimal)


def test_units_value_with_a_decimal_comma_refuses_a_decimal_point() -> None:
    """Under --decimal-comma "1234.50" is not how the amounts are written, as parse_amount refuses it."""
    from importer.schedule.cells import units_value

    with pytest.raises(CellProblem):
        units_value("1234.50", decimal_comma=True)
