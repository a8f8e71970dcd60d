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
from typing import Any

from importer.columns import Field

# A double holds every integer up to 2**53 exactly; beyond that a numeric cell may not be what was typed.
MAX_EXACT_FLOAT_INT = 2**53
MAX_INT64 = 2**63 - 1

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_DECIMAL_TEXT = re.compile(r"[+-]?[0-9]*\.[0-9]+|[+-]?[0-9]+\.")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


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
        raise CellProblem(f"{what}-too-large", f"{number} is too large")
    return number


def parse_cents(value: object) -> int:
    return _whole_number(value, what="amount", example="whole cents, e.g. 123456 for 1,234.56")


def parse_id(value: object) -> int:
    """Any exact whole number; that ids are positive is a rule, so the schema checks it."""
    return _whole_number(value, what="id", example="the id as a whole number, e.g. 1001")


def parse_date(value: object) -> dt.date:
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
        if _ISO_DATE.fullmatch(text):
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                raise CellProblem("invalid-date", f'"{text}" is not a real date; check the month and day') from None
        raise CellProblem(
            "invalid-date",
            f'"{text}" is not a date Kantata accepts; enter a date cell or text like 2026-03-31',
        )
    raise CellProblem(
        "invalid-date",
        f"{as_text(value)} is not a date; enter a date cell or text like 2026-03-31",
    )


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
    raise CellProblem("invalid-boolean", f'"{as_text(value)}" is not TRUE or FALSE')


def parser_for(field: Field) -> Callable[[object], Any]:
    """The parser for a field's kind; one table so every stage parses a column the same way."""
    return {
        "text": parse_text,
        "cents": parse_cents,
        "id": parse_id,
        "date": parse_date,
        "bool": parse_bool,
        "choice": parse_choice,
    }[field.kind]
