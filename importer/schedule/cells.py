"""Exact cell parsing: each cell becomes a typed value or a `CellProblem`, never a guess.

Money never passes through binary floating point on its way to the request: text is parsed with `int()`,
and a numeric cell (which Excel stores as a double) is accepted only when it holds an exact whole number.
Nothing is rounded: 12.5 cents is an error, not 12 or 13.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from importer.schedule.columns import Field
from importer.settings import Settings

# A double holds every integer up to 2**53 exactly; beyond that a numeric cell may not be what was typed.
MAX_EXACT_FLOAT_INT = 2**53
MAX_INT64 = 2**63 - 1

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_DECIMAL_TEXT = re.compile(r"[+-]?[0-9]*\.[0-9]+|[+-]?[0-9]+\.")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME_SUFFIX = re.compile(r"[ T]([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?(?:Z|[+-]00:?00)?$")
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


# A double holds any decimal of up to 15 significant digits exactly enough that repr() gives it back as typed
# (IEEE 754: DBL_DIG = 15); an amount needing more digits cannot be trusted from a numeric cell.
MAX_SIGNIFICANT_DIGITS = 15
EXCEL_EPOCH = dt.date(1899, 12, 30)  # serial 1 = 1900-01-01 in Excel's 1900 date system (with its leap-year bug)
ERROR_VALUES = frozenset({"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#GETTING_DATA",
                          "#SPILL!", "#CALC!", "#FIELD!", "#BLOCKED!", "#CONNECT!", "#BUSY!", "#UNKNOWN!"})  # fmt: skip
# Thousands commas after a first group that is not 0 ("0,500" is a decimal comma: _DECIMAL_COMMA).
_MONEY_TEXT = re.compile(r"(?P<sign>[+-])?(?P<digits>[1-9][0-9]{0,2}(?:,[0-9]{3})+|[0-9]*)(?:\.(?P<frac>[0-9]+))?")
_CURRENCY_SIGNS = "$€£¥₩₹₽₪₫₺₴₦฿"
# Letter signs as Kantata shows some currencies (KWD as "KD"), read like a code, before or after the number.
_LETTER_SIGNS = ("KD",)
_CURRENCY_CODE = re.compile(
    rf"^(?:[A-Z]{{3}}|{'|'.join(_LETTER_SIGNS)})\s*|\s*(?:[A-Z]{{3}}|{'|'.join(_LETTER_SIGNS)})$"
)
# "1.234,50" or "99,99": a comma before 1 or 2 final digits (a thousands comma has 3 after it), dots between
# thousands: the European way, refused with the amount as it must be typed.
_DECIMAL_COMMA = re.compile(r"[0-9]{1,3}(?:\.[0-9]{3})*,[0-9]{1,2}|[0-9]+,[0-9]{1,2}|0,[0-9]+")
_MARK = re.compile(f"[A-Z{_CURRENCY_SIGNS}]")
# "1.500", "12.000": one to three digits, a point, exactly three digits, no comma. A point between thousands in a
# European Excel as much as a decimal point; refused where the currency has fewer than 3 decimals, since the two
# readings differ a thousandfold (as "1.234" is, for its decimals). "0.500" and "1234.500" are not thousands.
_THOUSANDS_POINT = re.compile(r"(?<![0-9.,])[1-9][0-9]{0,2}\.[0-9]{3}(?![0-9.,])")
# Spaces inside a number (a space, Excel's no-break or narrow no-break space) only between groups of three:
# "1 234 567.50" is a number; "12 34" is a typo, and which number was meant cannot be told.
_SPACE_IN_NUMBER = re.compile("[0-9][ \u00a0\u202f]+[0-9]")
_SPACED_NUMBER = re.compile("[0-9][0-9 \u00a0\u202f]*")
_SPACED_GROUPS = re.compile("[1-9][0-9]{0,2}(?:[ \u00a0\u202f][0-9]{3})+")


# ISO 4217 minor units: how many decimals a currency has, so what one unit of amount_in_cents is worth.
# Every currency not listed has 2 (USD, EUR, GBP, ...).
_CURRENCY_DECIMALS: dict[str, int] = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
                     "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    "CLF": 4, "UYW": 4,
}  # fmt: skip


# The currencies each sign (in _CURRENCY_SIGNS or _LETTER_SIGNS) may stand for; "$" stands for any currency without
# a sign here (the dollars, the pesos, ...). An amount written with a sign or code that its project's currency does not
# have is an error: Kantata bills the number in the project's currency (checks.amount_issues).
_SIGN_CURRENCIES: dict[str, frozenset[str]] = {
    "€": frozenset({"EUR"}), "£": frozenset({"GBP", "GIP", "FKP", "SHP", "EGP", "SSP"}),
    "¥": frozenset({"JPY", "CNY"}), "₩": frozenset({"KRW", "KPW"}), "₹": frozenset({"INR"}),
    "₽": frozenset({"RUB"}), "₪": frozenset({"ILS"}), "₫": frozenset({"VND"}), "₺": frozenset({"TRY"}),
    "₴": frozenset({"UAH"}), "₦": frozenset({"NGN"}), "฿": frozenset({"THB"}), "KD": frozenset({"KWD"}),
}  # fmt: skip
_SIGNED = frozenset().union(*_SIGN_CURRENCIES.values())


def mark_fits(mark: str, currency: str) -> bool:
    """Whether a currency mark written in an amount ("EUR", "€", "$") can mean `currency`."""
    if mark == "$":
        return currency not in _SIGNED
    if mark in _SIGN_CURRENCIES:
        return currency in _SIGN_CURRENCIES[mark]
    return mark == currency


def currency_marks(value: object) -> frozenset[str]:
    """The currency codes and signs written in an amount's text ("EUR 5.00": EUR); none for a number cell."""
    if not isinstance(value, str) or _MARK.search(value) is None:  # the usual case, in one regex search
        return frozenset()
    try:
        return _money_text(value)[1]
    except CellProblem:
        return frozenset()


# The decimals currencies have: the ones an amount in a currency's units is shown with.
UNIT_DECIMALS: frozenset[int] = frozenset({2, *_CURRENCY_DECIMALS.values()})


def currency_decimals(code: str) -> int:
    """Decimals of an ISO 4217 currency: 0 for JPY, 3 for KWD, 2 for USD and any code not in the table."""
    return _CURRENCY_DECIMALS.get(code.strip().upper(), 2)


def subunit(code: str) -> str:
    """What one unit of amount_in_cents is in this currency: "1/100 of a USD", "whole JPY"."""
    decimals = currency_decimals(code)
    return f"whole {code}" if decimals == 0 else f"1/{10**decimals} of a {code}"


@dataclass(frozen=True, slots=True)
class ParseOptions:
    """What the user told us about their cells: `--date-format` and `--currency-decimals`."""

    date_format: str | None = None  # strptime format for text dates that are not ISO, e.g. "%d/%m/%Y"
    currency_decimals: int = 2  # decimals the `amount` column may have: 2 for USD/EUR, 0 for JPY, 3 for KWD
    # Whether the user chose `currency_decimals` (a flag, the config file) rather than taking the default: in a
    # project whose currency Kantata withholds, an Amount is converted with the decimals only when they did.
    currency_decimals_given: bool = False
    encoding: str | None = None  # a CSV file's encoding, `--encoding`; None: told from its bytes
    decimal_comma: bool | None = None  # `--decimal-comma`; None: read so when the whole Amount column is
    allow_totals: bool = False  # `--allow-totals`: rows that read like a total are milestones (a warning)

    @classmethod
    def of(cls, settings: Settings) -> ParseOptions:
        """What reading cells needs of the run's one Settings."""
        return cls(date_format=settings.date_format, currency_decimals=settings.currency_decimals,
                   currency_decimals_given=settings.currency_decimals_given, encoding=settings.encoding,
                   decimal_comma=settings.decimal_comma, allow_totals=settings.allow_totals)  # fmt: skip


class CellProblem(Exception):
    """Why one cell cannot be used; turned into a `CellIssue` with its row and column by the schema."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def is_blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def as_text(value: object) -> str:
    """The value as the user would read it, for messages and the Errors sheet."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < MAX_EXACT_FLOAT_INT:
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ") if value.time() != dt.time() else value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _whole_number(value: object, *, what: str, example: str) -> int:
    """An exact integer from an int, an integral float or integer text; a CellProblem otherwise."""
    if isinstance(value, bool):
        raise CellProblem(f"{what}-not-a-number", f"{as_text(value)} is not a number; enter {example}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CellProblem(f"{what}-not-a-number", f"{value} is not a number; enter {example}")
        seen = _excel_digits(value)
        if not value.is_integer() and what == "amount" and seen == seen.to_integral_value() and _is_noise(value, seen):
            value = float(seen)  # a formula's result with binary noise past Excel's 15 digits: =16.5*100
        if not value.is_integer():
            raise CellProblem(
                f"{what}-not-whole",
                f"{value!r} is not a whole number; enter {example} (nothing is rounded)",
            )
        if abs(value) >= MAX_EXACT_FLOAT_INT:
            raise CellProblem(
                f"{what}-too-large",
                f"{value:.0f} is too large for Excel to store exactly; type it as text to keep every digit",
            )
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if _INT_TEXT.fullmatch(text):
            number = int(text)
        elif _DECIMAL_TEXT.fullmatch(text):
            raise CellProblem(
                f"{what}-not-whole", f'"{text}" is not a whole number; enter {example} (nothing is rounded)'
            )
        else:
            raise CellProblem(f"{what}-not-a-number", f'"{text}" is not a number; enter {example}')
    else:
        raise CellProblem(f"{what}-not-a-number", f"{as_text(value)} is not a number; enter {example}")
    if abs(number) > MAX_INT64:
        raise CellProblem(f"{what}-too-large", f"{number} is too large for Kantata; check the cell")
    return number


def _excel_digits(value: float) -> Decimal:
    """A double as Excel shows and computes it: 15 significant digits, as decimal text (no float arithmetic)."""
    return Decimal(f"{value:.{MAX_SIGNIFICANT_DIGITS}g}")


NOISE_ULPS = 4  # how far a formula's binary result may stray from the decimal it stands for


def _is_noise(value: float, seen: Decimal) -> bool:
    """Whether `value` differs from the decimal `seen` only by binary rounding (a few units in the last place), and
    not by a real fraction that 15 digits cannot show (100000000000000.5)."""
    if len(seen.as_tuple().digits) >= MAX_SIGNIFICANT_DIGITS:  # no digit to spare: the difference may be real
        return False
    return abs(Decimal(value) - seen) <= NOISE_ULPS * Decimal(math.ulp(value))


def parse_cents(value: object) -> int:
    return _whole_number(value, what="amount", example="whole cents, e.g. 123456 for 1,234.56")


def parse_id(value: object) -> int:
    """Any exact whole number ("101.0", which Excel exports make of ids, included); positivity is a rule."""
    if isinstance(value, str) and _DECIMAL_TEXT.fullmatch(text := value.strip()):
        number = Decimal(text)
        if number == number.to_integral_value():
            return int(number)
    return _whole_number(value, what="id", example="the id as a whole number, e.g. 1001")


def parse_amount(value: object, decimals: int, *, decimal_comma: bool = False) -> int:
    """An amount in currency units ("1,234.56", "(1,234.56)", "$1,234.56", or a number cell) as exact subunits.

    Only `Decimal` arithmetic: a number cell's double is read back as the shortest decimal that produces it,
    which is what the user typed whenever it has at most 15 significant digits. Never rounded.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise CellProblem("amount-not-a-number", f"{as_text(value)} is not an amount; enter e.g. 1234.56")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CellProblem("amount-not-a-number", f"{value} is not an amount; enter e.g. 1234.56")
        amount = Decimal(repr(value))
        if len(amount.as_tuple().digits) > MAX_SIGNIFICANT_DIGITS and abs(amount) >= 10**13:
            raise CellProblem(
                "amount-too-large",
                f"{value!r} has more digits than a number cell holds exactly; type it as text to keep every digit",
            )
        if len(amount.as_tuple().digits) > MAX_SIGNIFICANT_DIGITS:
            # A formula's result carries binary noise past Excel's 15 significant digits (=1500*1.1 is saved as
            # 1650.0000000000002 and shown as 1,650.00): read it as Excel shows it. A real third decimal is within
            # those 15 digits, and is still refused below.
            amount = _excel_digits(value)
            if not _is_noise(value, amount) or -amount.as_tuple().exponent > decimals:  # type: ignore[operator]
                raise CellProblem(
                    "amount-too-many-decimals",
                    f"{value!r} has more than {decimals} decimal places (a formula result?); "
                    f"round it in Excel, e.g. =ROUND(...,{decimals}), or type it",
                )
    elif isinstance(value, int):
        amount = Decimal(value)
    else:
        if decimal_comma:
            value = from_decimal_comma(value)
        amount = _money_text(value)[0]
        fits = amount == amount.quantize(Decimal(1).scaleb(-decimals))  # else too many decimals, below
        grouped = "," in value or _SPACE_IN_NUMBER.search(value)  # thousands marked otherwise: the point is decimal
        if decimals < 3 and fits and not grouped and (point := _THOUSANDS_POINT.search(value)):
            readings = f"{amount:.{decimals}f} or {'-' if amount < 0 else ''}{point.group().replace('.', '')}"
            raise CellProblem("amount-ambiguous-point", f'"{value.strip()}" could be {readings} (a point before '
                              "three digits separates thousands in many countries); enter the one you mean: "
                              f"{readings}")  # fmt: skip
    exponent = amount.normalize().as_tuple().exponent  # "4.930" is 4.93: trailing zeros lose nothing
    assert isinstance(exponent, int)  # finite by construction
    places = max(0, -exponent)
    if places > decimals:
        raise CellProblem(
            "amount-too-many-decimals",
            f"{as_text(value)} has {places} decimal places, the currency {decimals}; enter the exact amount "
            "(nothing is rounded), or set --currency-decimals",
        )
    cents = amount.scaleb(decimals)
    if cents != cents.to_integral_value():  # unreachable given the check above; kept as the invariant
        raise AssertionError(f"inexact conversion of {value!r}")
    if abs(cents) > MAX_INT64:
        raise CellProblem("amount-too-large", f"{as_text(value)} is too large for Kantata; check the cell")
    return int(cents)


def units_value(value: object, *, decimal_comma: bool = False) -> Decimal:
    """An amount cell's exact value in currency units, whatever its decimals: a number cell's double read back as
    the shortest decimal that gives it (a formula's binary noise dropped as parse_amount drops it), text as
    parse_amount reads it ("1,234.56", "(5.00)", "KD 7.000"; with `decimal_comma`, "1.234,56" and "1000,5"). A
    CellProblem when the cell is no amount."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise CellProblem("amount-not-a-number", f"{as_text(value)} is not an amount")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        return _money_text(from_decimal_comma(value) if decimal_comma else value)[0]
    if not math.isfinite(value):
        raise CellProblem("amount-not-a-number", f"{value} is not an amount")
    amount = Decimal(repr(value))
    if len(amount.as_tuple().digits) > MAX_SIGNIFICANT_DIGITS and _is_noise(value, seen := _excel_digits(value)):
        return seen
    return amount


# The number in an amount written with a decimal comma: points (or spaces) between thousands, a comma before the
# decimals: "1.234,50", "1 234,50", "99,99", "1.500".
_COMMA_NUMBER = re.compile("[0-9]{1,3}(?:[. \u00a0\u202f][0-9]{3})+(?:,[0-9]+)?|[0-9]+(?:,[0-9]+)?")
_NUMBER_PART = re.compile("[0-9][0-9.,  \u00a0\u202f]*[0-9]|[0-9]")
_POINT_DECIMAL = re.compile(r"[0-9]\.[0-9]{1,2}(?![0-9])|[0-9],[0-9]{3}\.|^[^,]*[0-9],[0-9]{3}(?![0-9])")
_COMMA_DECIMAL = re.compile(r"[0-9],[0-9]{1,2}(?![0-9])")


def from_decimal_comma(text: str) -> str:
    """An amount written with a decimal comma as the same amount with a decimal point ("1.234,50": "1234.50");
    a CellProblem when its number is not written that way (a point before decimals: "1234.50")."""
    match = _NUMBER_PART.search(text)
    if match is None:
        return text
    if not _COMMA_NUMBER.fullmatch(match.group()):
        raise CellProblem("amount-not-a-number", f'"{text.strip()}" is not written with a decimal comma as the other '
                          "amounts are (--decimal-comma): enter e.g. 1.234,50 or 1234,50")  # fmt: skip
    number = re.sub("[. \u00a0\u202f]", "", match.group()).replace(",", ".")
    return text[: match.start()] + number + text[match.end() :]


def writes_decimal_comma(values: list[object]) -> bool:
    """Whether a column's text amounts are all written with a decimal comma: one at least has a comma before one
    or two final digits ("1.234,50"), and none has a decimal point or a thousands comma ("1234.50", "1,234")."""
    texts = [v for v in values if isinstance(v, str) and v.strip()]
    if "," not in "\n".join(texts) or not any(_COMMA_DECIMAL.search(t) for t in texts):  # the join: one C scan
        return False
    return not any(_POINT_DECIMAL.search(t) for t in texts)


def _money_text(text: str) -> tuple[Decimal, frozenset[str]]:
    """Peel currency marks, an accounting (parenthesised) negative or a sign, in whatever order they come:
    "$(1,234.56)", "($1,234.56)", "-$5", "$-5", "USD 10.5", "10.5 EUR"; the amount and the marks peeled. Two
    signs ("-(5.00)", "(-5)", "--5") are refused: which one the user meant cannot be told."""
    raw = text.strip()
    if _SPACE_IN_NUMBER.search(raw):
        spaced = [m.group().strip() for m in _SPACED_NUMBER.finditer(raw)]
        if not all(_SPACED_GROUPS.fullmatch(part) for part in spaced if _SPACE_IN_NUMBER.search(part)):
            raise CellProblem("amount-not-a-number", f'"{raw}" has a space inside the number; enter e.g. 1234.56 '
                              "(spaces only between thousands: 1 234.56)")  # fmt: skip
        raw_body = raw.replace("\u202f", "")
    else:
        raw_body = raw
    body = raw_body.replace("\u00a0", "").replace(" ", "")
    negative = False
    signs = 0
    marks: set[str] = set()
    marked = _MARK.search(body) is not None  # most amounts name no currency: nothing to peel but signs
    for _ in range(3):
        if marked:
            marks.update(code.strip() for code in _CURRENCY_CODE.findall(body))
            body = _CURRENCY_CODE.sub("", body)
            bare = body.strip(_CURRENCY_SIGNS)
            if bare != body:
                marks.update(c for c in body if c in _CURRENCY_SIGNS)
                body = bare
        if body.startswith("(") and body.endswith(")"):
            negative, body, signs = not negative, body[1:-1], signs + 1
        elif body[:1] in ("-", "+"):
            negative, body, signs = negative != (body[0] == "-"), body[1:], signs + 1
    match = _MONEY_TEXT.fullmatch(body)
    if match is None and _DECIMAL_COMMA.fullmatch(body):
        point = ("-" if negative else "") + body.replace(".", "").replace(",", ".")
        raise CellProblem("amount-decimal-comma", f'"{raw}" is written with a decimal comma; enter {point} (a point '
                          "before the decimals, no dots between thousands), or pass --decimal-comma if every "
                          "amount is written so")  # fmt: skip
    if signs + bool(match and match.group("sign")) > 1:
        raise CellProblem("amount-two-signs", f'"{raw}" has more than one sign (a minus, a plus or parentheses); '
                          "enter -1234.56 or (1,234.56) for a credit, 1234.56 otherwise")  # fmt: skip
    if not body or match is None or not (match.group("digits") or match.group("frac")):
        raise CellProblem("amount-not-a-number", f'"{raw}" is not an amount; enter e.g. 1234.56 or (1,234.56)')
    try:
        amount = Decimal(body.replace(",", ""))
    except InvalidOperation:
        raise CellProblem("amount-not-a-number", f'"{raw}" is not an amount; enter e.g. 1234.56') from None
    return (-amount if negative else amount), frozenset(marks)


def parse_date(value: object, date_format: str | None = None) -> dt.date:
    if isinstance(value, dt.datetime):
        if value.time() != dt.time():
            raise CellProblem(
                "date-has-time", f"{as_text(value)} has a time of day; enter just the date, e.g. 2026-03-31"
            )
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        if (clock := _TIME_SUFFIX.search(text)) is not None and text[: clock.start()].strip():
            # SQL and ERP exports write dates as "2026-01-31 00:00:00": a time of exactly midnight is no time at all
            if any(int(part or 0) for part in clock.groups()):
                raise CellProblem("date-has-time", f'"{text}" has a time of day; enter just the date, e.g. 2026-03-31')
            text = text[: clock.start()].strip()
        if _ISO_DATE.fullmatch(text):
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                raise CellProblem("invalid-date", f'"{text}" is not a real date; check the month and day') from None
        if date_format is not None:
            try:
                return dt.datetime.strptime(text, date_format).date()
            except ValueError:
                # A serial reads as it does without --date-format; five digits at most (up to the year 2173), so
                # that a date typed in the format's own digits, one short ("2026230" for %Y%m%d), is not one.
                if len(text) <= 5 and _INT_TEXT.fullmatch(text) and _is_serial(int(text)):
                    return EXCEL_EPOCH + dt.timedelta(days=int(text))
                raise CellProblem(
                    "invalid-date",
                    f'"{text}" does not match --date-format {date_format}; write it that way, or like 2026-03-31',
                ) from None
        if _INT_TEXT.fullmatch(text):
            if _is_serial(int(text)):
                return EXCEL_EPOCH + dt.timedelta(days=int(text))  # an Excel date serial, as CSV exports write them
            raise CellProblem("invalid-date", f'"{text}" is a number, not a date (read as an Excel date serial it '
                              f"is not within {_SERIAL_YEARS}); enter the date like 2026-03-31")  # fmt: skip
        if fitting := [f for f in _DATE_FORMATS if _parses(text, f)]:
            which = " (whichever your dates follow)" if len(fitting) > 1 else ""
            options = " or --date-format ".join(fitting)
            retype = f'"{text}" is not written like 2026-03-31; retype it'
            raise CellProblem("invalid-date", f"{retype}, or pass --date-format {options}{which}")
        if "/" in text or "." in text:
            raise CellProblem("invalid-date", f'"{text}" is not written like 2026-03-31; retype it, or pass '
                              "--date-format with the way it is written (e.g. %d/%m/%Y)")  # fmt: skip
        raise CellProblem("invalid-date", f'"{text}" is not a date; enter a date cell or text like 2026-03-31')
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise CellProblem(
            "invalid-date", f"{as_text(value)} is a number, not a date; format the cell as a date, or type 2026-03-31"
        )
    raise CellProblem("invalid-date", f"{as_text(value)} is not a date; enter a date cell or text like 2026-03-31")


# Date layouts suggested for --date-format, when a date is not ISO: those that read the cell are named (both
# day-first and month-first when both read it, as 01/02/2026 does: only the user knows which was meant).
_DATE_FORMATS = (
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%d-%m-%Y",
    "%m-%d-%Y",
    "%Y/%m/%d",
    "%d %b %Y",
    "%b %d %Y",
    "%d/%m/%y",
    "%m/%d/%y",
    "%d.%m.%y",
)  # the last: Excel's short forms, a two-digit year


def _parses(text: str, date_format: str) -> bool:
    try:
        dt.datetime.strptime(text, date_format)
    except ValueError:
        return False
    return True


# The serials read as dates: 1980-01-01..2099-12-31. Excel's run from 1 (1900-01-01) to 2958465 (9999-12-31),
# but a billing date outside these years is far likelier a year ("2026" is serial 1905-07-18) or a period
# ("202603": the year 2454) typed where a date belongs; read as a serial, either would go out as a date no one meant.
_SERIALS = range((dt.date(1980, 1, 1) - EXCEL_EPOCH).days, (dt.date(2099, 12, 31) - EXCEL_EPOCH).days + 1)
_SERIAL_YEARS = "1980-2099"


def _is_serial(number: int) -> bool:
    return number in _SERIALS


def parse_text(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    return as_text(value)


def parse_choice(value: object) -> str:
    """Spelling variants of a choice ("Fixed date", "fixed-date") become its API value; membership is a rule."""
    text = as_text(value).strip()
    return re.sub(r"[\s-]+", "_", text.casefold())


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = as_text(value).strip().casefold()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CellProblem("invalid-boolean", f'"{as_text(value)}" is not TRUE or FALSE; enter one of them')


DEFAULT_OPTIONS = ParseOptions()


def parser_for(field: Field, options: ParseOptions = DEFAULT_OPTIONS) -> Callable[[object], Any]:
    """The parser for a field's kind; one table so every stage parses a column the same way."""
    parsers: dict[str, Callable[[object], Any]] = {
        "text": parse_text,
        "cents": parse_cents,
        "money": lambda v: parse_amount(v, options.currency_decimals, decimal_comma=bool(options.decimal_comma)),
        "id": parse_id,
        "date": lambda v: parse_date(v, options.date_format),
        "bool": parse_bool,
        "choice": parse_choice,
    }
    return parsers[field.kind]
