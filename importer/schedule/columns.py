"""The one table of columns that the loader, the schema, the template and the report all read.

Keeping field names, header aliases and the template's readable headers here means they cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["text", "cents", "money", "id", "date", "choice", "bool"]

EXT = "external_reference."


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # the API's field name; external reference fields are dotted ("external_reference.status")
    label: str  # the readable header our template uses
    kind: Kind
    required: bool = False
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # further headers users write for this field
    help: str = ""  # one line for the template's Instructions sheet and input messages


FIELDS: tuple[Field, ...] = (
    Field("title", "Title", "text", True, aliases=("milestone", "milestone title", "name"),
          help="Required. The milestone's title as it will appear on the invoice."),
    Field("amount_in_cents", "Amount (cents)", "cents", True, aliases=("amount cents", "cents"),
          help="Required. Whole number of cents (subunits of the project's currency): 1234.56 is 123456. "
          "Negative for credits."),
    Field("amount", "Amount", "money", aliases=("amount in currency", "value"),
          help="Instead of Amount (cents): the amount in currency units, e.g. 1234.56, 1,234.56 or (1,234.56) "
          "for a credit. Converted exactly; more decimals than the currency has is an error."),
    Field("workspace_id", "Project ID", "id", True, aliases=("workspace", "workspace id", "project"),
          help="Required. The Kantata project (workspace) id, a whole number."),
    Field("date_to_invoice", "Date to invoice", "date", aliases=("invoice date", "date"),
          help="Optional. The date the milestone becomes invoiceable, as a date cell or 2026-03-31."),
    Field("story_id", "Task ID", "id", aliases=("story", "story id", "task"),
          help="Required when billing type is upon_completion: the Kantata task (story) id."),
    Field("billing_type", "Billing type", "choice", choices=("fixed_date", "upon_completion"),
          help="Optional. fixed_date (the default) or upon_completion."),
    Field("milestone_id", "Milestone ID", "id", aliases=("kantata milestone id",),
          help="Optional. The Kantata milestone this row is (a results workbook fed back in carries it): the row "
          "then updates that milestone instead of creating another."),
    Field(EXT + "service_name", "External service", "text",
          help="Optional external reference: the system the row comes from (e.g. NetSuite)."),
    Field(EXT + "service_model", "External type", "text",
          help="Optional external reference: the kind of record there (e.g. billing_line)."),
    Field(EXT + "service_model_ref", "External ID", "text",
          help="Optional external reference: the record's id there. Service, type and id go together."),
    Field(EXT + "status", "External status (integration)", "choice", choices=("successful", "pending", "failed"),
          help="Optional: successful, pending or failed."),
    Field(EXT + "external_message", "External message", "text", help="Optional."),
    Field(EXT + "external_link", "External link", "text", help="Optional."),
    Field(EXT + "external_status", "External record status", "text", help="Optional."),
    Field(EXT + "locked", "External locked", "bool", help="Optional: TRUE or FALSE."),
)  # fmt: skip

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
REQUIRED: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required)
# Columns that stand in for a required one: a schedule may give amounts in currency units instead of cents.
SUBSTITUTES: dict[str, str] = {"amount_in_cents": "amount"}
LOCAL_ONLY: frozenset[str] = frozenset({"amount"})  # read and checked here, never sent as such
# Which milestone a row is: it addresses a PUT, it is never a field of a request body.
IDENTITY = "milestone_id"
EXT_REQUIRED: tuple[str, ...] = (EXT + "service_name", EXT + "service_model", EXT + "service_model_ref")
EXT_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.name.startswith(EXT))

# The outcome columns the results workbook puts before the user's columns, where they are seen first: what
# happened, the milestone's id, the amount in currency units and in the cents Kantata got, what an update
# changes, and what to fix. None of their headers names a field, so a results workbook fed back in reads only
# the user's own columns as input.
OUTCOME_COLUMNS: tuple[str, ...] = (
    "status", "billing_milestone_id", "amount_in_units", "api_amount_in_cents", "changes", "errors"
)  # fmt: skip
# The ones every results workbook has had: enough to know one fed back in (an earlier layout had only these).
OUTCOME_CORE: tuple[str, ...] = ("status", "billing_milestone_id", "errors")

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def normalise_header(text: str) -> str:
    """Header matching ignores case, spaces, underscores, dots and other punctuation."""
    return _NOT_ALNUM.sub("", text.casefold())


def _alias_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for f in FIELDS:
        for alias in (f.name, f.label, *f.aliases):
            key = normalise_header(alias)
            if key in table and table[key] != f.name:  # pragma: no cover - guarded by a test
                raise AssertionError(f"header alias {alias!r} is ambiguous")
            table[key] = f.name
    return table


ALIASES: dict[str, str] = _alias_table()


def field_for_header(header: str) -> str | None:
    """The canonical field a header names, or None for a column we keep but do not send."""
    return ALIASES.get(normalise_header(header))


def column_letter(index: int) -> str:
    """Excel's letter for a 0-based column index: 0 -> A, 25 -> Z, 26 -> AA."""
    letters = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def column_index(letter: str) -> int:
    """The 0-based index of an Excel column letter: A -> 0, AA -> 26."""
    n = 0
    for ch in letter:
        n = n * 26 + ord(ch) - 64
    return n - 1
