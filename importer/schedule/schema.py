"""Raw frame -> typed rows + every problem at once.

Two steps, each with one job: `cells` turns each cell into a typed value (or a problem), then one pandera
model holds every rule the API documents and runs lazily, so a single run reports every failing cell.
Pandera's failure cases become `CellIssue`s here, at the boundary; nothing downstream sees a pandera object.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, cast

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.config import ValidationDepth, config_context
from pandera.typing import Series

from importer.errors import CellIssue
from importer.progress import CHUNK, Tick, Ticker
from importer.schedule.cells import (
    DEFAULT_OPTIONS,
    ERROR_VALUES,
    MAX_EXACT_FLOAT_INT,
    UNIT_DECIMALS,
    CellProblem,
    ParseOptions,
    as_text,
    is_blank,
    parse_cents,
    parser_for,
    units_value,
    writes_decimal_comma,
)
from importer.schedule.columns import BY_NAME, EXT, EXT_FIELDS, EXT_REQUIRED, FIELDS, LOCAL_ONLY, SUBSTITUTES, Field
from importer.schedule.loader import TOTAL_CODES, RawSchedule

_DTYPES = {"text": "str", "choice": "str", "cents": "Int64", "money": "Int64", "id": "Int64", "date": object,
           "bool": "boolean"}  # fmt: skip


class MilestoneRows(pa.DataFrameModel):
    """Every rule of POST /billing_milestones as Kantata's API documentation states it, one row each."""

    title: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    amount_in_cents: Series[pd.Int64Dtype] = pa.Field(nullable=False)
    workspace_id: Series[pd.Int64Dtype] = pa.Field(nullable=False, gt=0)
    date_to_invoice: Series[object] = pa.Field(nullable=True)
    story_id: Series[pd.Int64Dtype] = pa.Field(nullable=True, gt=0)
    billing_type: Series[str] = pa.Field(nullable=True, isin=BY_NAME["billing_type"].choices)
    milestone_id: Series[pd.Int64Dtype] = pa.Field(nullable=True, gt=0)
    ext_service_name: Series[str] = pa.Field(nullable=True, alias=EXT + "service_name")
    ext_service_model: Series[str] = pa.Field(nullable=True, alias=EXT + "service_model")
    ext_service_model_ref: Series[str] = pa.Field(nullable=True, alias=EXT + "service_model_ref")
    ext_status: Series[str] = pa.Field(nullable=True, alias=EXT + "status", isin=BY_NAME[EXT + "status"].choices)
    ext_external_message: Series[str] = pa.Field(nullable=True, alias=EXT + "external_message")
    ext_external_link: Series[str] = pa.Field(nullable=True, alias=EXT + "external_link")
    ext_external_status: Series[str] = pa.Field(nullable=True, alias=EXT + "external_status")
    ext_locked: Series[pd.BooleanDtype] = pa.Field(nullable=True, alias=EXT + "locked")

    class Config:
        strict = True
        coerce = False

    @pa.dataframe_check(name="story-required")
    def story_required(cls, df: pd.DataFrame) -> pd.Series[bool]:
        return ~((df["billing_type"] == "upon_completion") & df["story_id"].isna())

    @pa.dataframe_check(name="external-reference-incomplete")
    def external_reference_complete(cls, df: pd.DataFrame) -> pd.Series[bool]:
        any_given = df[list(EXT_FIELDS)].notna().any(axis=1)
        all_required = df[list(EXT_REQUIRED)].notna().all(axis=1)
        return ~any_given | all_required


@dataclass(slots=True)
class Validated:
    """Typed rows that passed every rule (indexed by Excel row number) and the issues of those that did not."""

    rows: pd.DataFrame
    issues: list[CellIssue]
    invalid_rows: frozenset[int]
    total_rows: int


def validate_rows(
    raw: RawSchedule, options: ParseOptions = DEFAULT_OPTIONS, *, on_progress: Tick | None = None
) -> Validated:
    """Parse and check every row; `on_progress(done, total)` hears of the rows parsed every few thousand."""
    ticker = Ticker(on_progress, len(raw.frame))
    options = _amount_style(raw, options)
    typed, parsed = _parse(raw, options, ticker)
    issues = [*_totals_allowed(raw.issues, options), *parsed]  # the loader's findings (merged cells, ...) first
    typed = _merge_amounts(raw, typed, issues)
    issues += _units_edited(raw, typed, options)
    issues += _check(raw, typed)
    issues += _ids_repeated(raw, typed)
    issues = _dedupe(raw, issues)
    invalid = frozenset(i.row for i in issues if i.is_error)
    rows = typed.loc[~typed.index.isin(list(invalid))]
    ticker.end(len(typed))
    return Validated(rows=rows, issues=issues, invalid_rows=invalid, total_rows=len(typed))


def _amount_style(raw: RawSchedule, options: ParseOptions) -> ParseOptions:
    """Decimal commas are read without being asked when the whole Amount column is written with them (a European
    Excel's CSV), and said once; a column that mixes the two ways is left to the cells' own errors."""
    letter = raw.fields.get("amount")
    if options.decimal_comma is not None or letter is None:
        return options
    if not writes_decimal_comma(raw.frame[letter].tolist()):
        return replace(options, decimal_comma=False)
    raw.notes.append(f"every amount in column {letter} ({raw.header_of(letter)}) is written with a decimal comma "
                     "(1.234,50), so they were read that way")  # fmt: skip
    return replace(options, decimal_comma=True)


def _totals_allowed(issues: list[CellIssue], options: ParseOptions) -> list[CellIssue]:
    """With --allow-totals, rows that read like a total are the user's milestones: a warning each, not an error."""
    if not options.allow_totals:
        return issues
    return [replace(i, severity="warning", message=i.message.split("; delete")[0] + " (sent: --allow-totals)")
            if i.code in TOTAL_CODES else i for i in issues]  # fmt: skip


# --- step 1: cells -> typed values --------------------------------------------------------------------------


def _parse(raw: RawSchedule, options: ParseOptions, ticker: Ticker) -> tuple[pd.DataFrame, list[CellIssue]]:
    """Column by column within chunks of rows, so that progress can be told without a call per row."""
    issues: list[CellIssue] = []
    values: dict[str, list[object]] = {f.name: [] for f in FIELDS}
    total = len(raw.frame)
    caches: dict[str, dict[tuple[type, object], object]] = {f.name: {} for f in FIELDS}  # across chunks
    for start in range(0, total, CHUNK):
        chunk = raw.frame.iloc[start : start + CHUNK]
        for f in FIELDS:
            letter = raw.fields.get(f.name)
            if letter is None:
                values[f.name] += [None] * len(chunk)
            else:
                values[f.name] += _parse_column(raw, chunk[letter], f, letter, issues, options, caches[f.name])
        ticker.at(start + len(chunk))
    columns = {f.name: pd.Series(values[f.name], index=raw.frame.index, dtype=_DTYPES[f.kind])  # type: ignore[call-overload]
               for f in FIELDS}  # fmt: skip
    return pd.DataFrame(columns, index=raw.frame.index), issues


def _parse_column(
    raw: RawSchedule,
    cells: pd.Series[Any],
    f: Field,
    letter: str,
    issues: list[CellIssue],
    options: ParseOptions,
    cache: dict[tuple[type, object], object],
) -> list[object]:
    """Each cell parsed once per distinct value: a schedule repeats its workspaces, types and dates thousands
    of times. Keyed by (type, value), since 1, 1.0 and True are equal in Python but not to a parser."""
    values = cells.tolist()
    if (fast := _column_at_once(f.kind, values)) is not None:
        return fast
    parse: Callable[[object], object] = parser_for(f, options)

    def fill(key: tuple[type, object], cell: object) -> object:
        result = cache[key] = _parse_cell(cell, parse)
        return result

    try:  # one comprehension, not a loop of statements: this runs once per cell of the file
        results = [cache[k] if (k := (type(c), c)) in cache else fill(k, c) for c in values]
    except TypeError:  # an unhashable value somewhere (a reader's rich-text object): parse each cell
        results = [_parse_cell(c, parse) for c in values]
    bad = [i for i, r in enumerate(results) if isinstance(r, CellProblem)]
    if bad:
        header = raw.header_of(letter)
        rows = cells.index.tolist()
        # A project typed by name in a workbook that lists them (an --online template): say where the ids are.
        look_up = f.name == "workspace_id" and "Workspaces" in raw.sheets
        for i in bad:
            problem = cast(CellProblem, results[i])
            hint = "; the Workspaces sheet of this workbook lists each project's id" if look_up else ""
            issues.append(CellIssue(int(rows[i]), letter, header, as_text(values[i]), problem.code,
                                    f"{header}: {problem.message}{hint}"))  # fmt: skip
            results[i] = None
    return results


_WHOLE_NUMBER_KINDS = {"cents", "id"}
_WHOLE_TEXT = re.compile(r"[+-]?[0-9]{1,18}")  # below 10**18: within int64, as the parser's range check asks


def _column_at_once(kind: str, values: list[object]) -> list[object] | None:
    """The parser's results for a column whose every cell is the common case (a CSV's amounts, ids and titles
    are all distinct text), a column at a time; None for any other column, which the parser then sees whole."""
    if kind in _WHOLE_NUMBER_KINDS:
        whole = _whole_floats(values)
        return whole if whole is not None else _whole_texts(values)
    if kind == "text":
        return _plain_texts(values)
    return None


def _stripped(values: list[object]) -> list[str] | None:
    """Every cell's text without the surrounding blanks, if every cell is text (None otherwise)."""
    if not values or set(map(type, values)) != {str}:  # map and set: no Python call per cell
        return None
    return [text.strip() for text in cast(list[str], values)]


def _whole_texts(values: list[object]) -> list[object] | None:
    """Integer text ("733569", " -12 ") as ints, exactly as `parse_cents` / `parse_id` read it; None when a
    cell is blank, a decimal, or anything else the parser must explain."""
    texts = _stripped(values)
    if texts is None or not all(map(_WHOLE_TEXT.fullmatch, texts)):
        return None
    return list(map(int, texts))


def _plain_texts(values: list[object]) -> list[object] | None:
    """Text cells as `parse_text` gives them (stripped); None when one is blank or an Excel error value."""
    texts = _stripped(values)
    if texts is None or not all(texts) or not ERROR_VALUES.isdisjoint(texts):
        return None
    return cast(list[object], texts)


def _whole_floats(values: list[object]) -> list[object] | None:
    """A column of number cells (Excel stores doubles) that are all whole and exactly representable, as ints,
    checked in numpy instead of one parser call per distinct value (amounts are nearly all distinct). None as
    soon as one cell is anything else, so that the parser sees, and reports, every cell as it would without this."""
    if not values or any(v.__class__ is not float for v in values):
        return None
    floats = np.array(values, dtype=np.float64)
    if not (np.isfinite(floats).all() and (floats == np.trunc(floats)).all()
            and (np.abs(floats) < MAX_EXACT_FLOAT_INT).all()):  # fmt: skip
        return None
    return cast(list[object], floats.astype(np.int64).tolist())  # exact: whole and below 2**53


def _parse_cell(cell: object, parse: Callable[[object], object]) -> object:
    """The typed value, None for a blank, or the CellProblem that makes the cell an error."""
    if is_blank(cell):
        return None
    try:
        if isinstance(cell, str) and cell.strip() in ERROR_VALUES:
            raise CellProblem(
                "formula-error",
                f"{cell.strip()} is an Excel error (a broken formula); fix the formula in Excel, or type the value",
            )
        return parse(cell)
    except CellProblem as problem:
        return problem


def _merge_amounts(raw: RawSchedule, typed: pd.DataFrame, issues: list[CellIssue]) -> pd.DataFrame:
    """`amount` (currency units) fills `amount_in_cents`; when both are given they must agree to the cent."""
    given = typed["amount"].notna()
    if not given.any():
        return typed.drop(columns=list(LOCAL_ONLY))
    both = given & typed["amount_in_cents"].notna()
    cents_from_amount: dict[Any, Any] = typed["amount"].to_dict()
    cents_given: dict[Any, Any] = typed["amount_in_cents"].to_dict()
    for row in typed.index[both & (typed["amount"] != typed["amount_in_cents"])]:
        letter = raw.fields["amount"]
        header, cents_header = raw.header_of(letter), raw.header_of(raw.fields["amount_in_cents"])
        issues.append(CellIssue(
            int(row), letter, header, as_text(raw.frame.at[row, letter]), "amounts-disagree",
            f"{header} {as_text(raw.frame.at[row, letter])} is {cents_from_amount[row]} cents, but "
            f"{cents_header} says {cents_given[row]}; keep one of them",
        ))  # fmt: skip
    typed["amount_in_cents"] = typed["amount_in_cents"].fillna(typed["amount"])
    return typed.drop(columns=list(LOCAL_ONLY))


def _units_edited(raw: RawSchedule, typed: pd.DataFrame, options: ParseOptions) -> list[CellIssue]:
    """A results workbook fed back in: each row whose amount_in_units was edited while its own amount was not. That
    outcome column is written anew by every run and never read, so the edit would be dropped without a word and
    the milestone left as it is; the amount belongs in the row's own column.

    api_amount_in_cents holds the cents the last run sent, and amount_in_units showed them in the currency's units.
    A row is caught when its own amount, as the cents this run would send, is still those cents, and its
    amount_in_units is not them in units with the decimals its project was shown with. Those decimals are read
    from the file: of any currency's decimals and this run's, the ones that the project's rows with an unchanged
    own amount agree on, when more agree on them than on any other; without such a majority (one row, a tie) any of
    them will do. An edit by a power of ten (1000.50 retyped as 100.05) is thus caught wherever the project has a
    clear majority. Where the own amount was edited (or an Amount is read with other decimals than its project's,
    which the online checks refuse in any case) the cents differ, and amount_in_units is merely stale: no error.
    Text is read with a decimal comma as the amounts are (a European Excel's CSV writes "1000,5"). Only Decimal and
    int comparisons decide."""
    outcome = {raw.header_of(letter): letter for letter in raw.previous_outcomes}
    units_letter, sent_letter = outcome.get("amount_in_units"), outcome.get("api_amount_in_cents")
    if units_letter is None or sent_letter is None:
        return []
    units_cells = raw.frame[units_letter].tolist()
    # Unless the amounts are read with decimal commas already, the column says itself how it is written (an
    # Amount column of round numbers tells nothing).
    comma = bool(options.decimal_comma) or writes_decimal_comma(units_cells)
    # The run's own decimals first: the ones most rows were shown with, so most rows need one comparison.
    decimals = (options.currency_decimals, *sorted(UNIT_DECIMALS - {options.currency_decimals}))
    projects = typed["workspace_id"].tolist() if "workspace_id" in typed else [pd.NA] * len(typed)
    kept: list[tuple[int, Any, int, Decimal | None, object]] = []  # rows whose own amount is what was sent
    cells = zip(typed.index.tolist(), projects, typed["amount_in_cents"].tolist(), raw.frame[sent_letter].tolist(),
                units_cells, strict=True)  # fmt: skip
    for row, project, cents, sent_cell, units_cell in cells:
        if cents is pd.NA or is_blank(sent_cell) or is_blank(units_cell) or _sent(sent_cell) != cents:
            continue
        kept.append((int(row), None if project is pd.NA else project, int(cents), _units(units_cell, comma),
                     units_cell))  # fmt: skip
    shown_with = _project_decimals(kept, decimals)
    own = [raw.header_of(raw.fields[name]) for name in ("amount_in_cents", "amount") if name in raw.fields]
    issues: list[CellIssue] = []
    for row, project, cents, units, units_cell in kept:
        fitting = (shown_with[project],) if project in shown_with else decimals
        if units is not None and any(units == Decimal(cents).scaleb(-d) for d in fitting):
            continue
        shown = as_text(units_cell)
        issues.append(CellIssue(row, units_letter, "amount_in_units", shown, "amount-in-units-not-read",
                                f"amount_in_units was changed to {shown} but is not read (each run writes it "
                                f"anew from the amount it sends): put the new amount in {' or '.join(own)}, or "
                                "put amount_in_units back"))  # fmt: skip
    return issues


def _project_decimals(
    kept: list[tuple[int, Any, int, Decimal | None, object]], decimals: tuple[int, ...]
) -> dict[Any, int]:
    """Per project, the decimals its amount_in_units were shown with: those more of its rows agree on than any
    other. A row of 0 cents agrees with every one and says nothing; a row agreeing with none is an edit."""
    votes: dict[Any, Counter[int]] = {}
    for _, project, cents, units, _ in kept:
        if project is None or units is None or cents == 0:
            continue
        # Other decimals give other values of the same nonzero cents: a row agrees with one at most, most often
        # with the run's own, tried first.
        agreed = next((d for d in decimals if units == Decimal(cents).scaleb(-d)), None)
        if agreed is not None:
            votes.setdefault(project, Counter())[agreed] += 1
    shown_with: dict[Any, int] = {}
    for project, tally in votes.items():
        ranked = tally.most_common(2)
        if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
            shown_with[project] = ranked[0][0]
    return shown_with


def _sent(cell: object) -> int | None:
    """The cents an api_amount_in_cents cell says were sent; None when it says nothing readable."""
    try:
        return parse_cents(cell)
    except CellProblem:
        return None


def _units(cell: object, decimal_comma: bool) -> Decimal | None:
    """An amount_in_units cell's value; None when it holds no amount (retyped as anything else, it was edited)."""
    try:
        return units_value(cell, decimal_comma=decimal_comma)
    except CellProblem:
        return None


# --- step 2: rules (pandera) ------------------------------------------------------------------------------


def _check(raw: RawSchedule, typed: pd.DataFrame) -> list[CellIssue]:
    # Pinned so that a PANDERA_VALIDATION_* variable in the user's environment cannot switch the rules off.
    with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        try:
            MilestoneRows.validate(typed, lazy=True)
        except pa.errors.SchemaErrors as errors:
            cases = errors.failure_cases
        else:
            return []
    issues: list[CellIssue] = []
    for case in cases.itertuples(index=False):
        if pd.isna(case.index):
            raise AssertionError(f"schema-level failure, a bug in the typed frame: {case.check} on {case.column}")
        row = int(case.index)
        issues.extend(_issues_for(raw, typed, row, str(case.column), str(case.check), case.schema_context))
    return issues


def _ids_repeated(raw: RawSchedule, typed: pd.DataFrame) -> list[CellIssue]:
    """A milestone id carried by two rows (a row copied with its id): one milestone is one row, and both rows would
    change it, the last one sent winning while the copy is never created. Every such row is an error: which one is
    the milestone and which the copy (Excel may insert a copy above its original) is for the user to say."""
    if "milestone_id" not in typed.columns:
        return []
    ids = typed["milestone_id"].dropna()
    rows_of: dict[int, list[int]] = {}
    for row, milestone_id in zip(ids.index.tolist(), ids.tolist(), strict=True):
        rows_of.setdefault(int(milestone_id), []).append(int(row))
    issues: list[CellIssue] = []
    for rows in rows_of.values():
        for row in rows if len(rows) > 1 else ():
            others = ", ".join(str(r) for r in rows if r != row)
            issues.append(_rule(raw, row, "milestone_id", "duplicate-milestone-id",
                                f"{{label}} {{value}} is also on row {others}: one milestone is one row. Keep the id "
                                "on the row that is that milestone and clear it on the copy, to add the copy as a "
                                "new milestone"))  # fmt: skip
    return sorted(issues, key=lambda i: i.row)


def _issues_for(
    raw: RawSchedule, typed: pd.DataFrame, row: int, column: str, check: str, context: str
) -> list[CellIssue]:
    if context == "DataFrameSchema":
        if check == "story-required":
            return [_rule(raw, row, "story_id", "story-required", "{label} is required when billing type is "
                          "upon_completion: enter the task's id, or make it fixed_date")]  # fmt: skip
        if check == "external-reference-incomplete":
            return [
                _rule(raw, row, name, "external-reference-incomplete",
                      "{label} is empty but other external reference cells are filled: fill in service, type and "
                      "ID together, or clear them")
                for name in EXT_REQUIRED
                if _missing(typed.at[row, name])
            ]  # fmt: skip
        raise AssertionError(f"unmapped dataframe check {check}")
    f = BY_NAME[column]
    if check in {"not_nullable"} or check.startswith("str_length"):
        return [_rule(raw, row, column, "required", "{label} is required: fill in this cell")]
    if check.startswith("isin"):
        choices = ", ".join(f.choices[:-1]) + " or " + f.choices[-1]
        return [_rule(raw, row, column, "invalid-choice", f'{{label}} "{{value}}" is not allowed; enter {choices}')]
    if check.startswith("greater_than"):
        return [_rule(raw, row, column, "id-not-positive",
                      "{label} {value} is not a Kantata id; enter the id, a whole number above 0")]  # fmt: skip
    raise AssertionError(f"unmapped check {check} on {column}")


def _missing(value: Any) -> bool:
    return bool(pd.isna(value))


def _rule(raw: RawSchedule, row: int, name: str, code: str, message: str) -> CellIssue:
    """An issue on the cell of field `name`; `message` may name {label} (the header as typed) and {value}."""
    if name not in raw.fields and SUBSTITUTES.get(name) in raw.fields:
        name = SUBSTITUTES[name]  # "Amount is required" when the sheet gives amounts in currency units
    letter = raw.fields.get(name)
    label = raw.header_of(letter) if letter else BY_NAME[name].label
    value = as_text(raw.frame.at[row, letter]) if letter else ""
    where = "" if letter else f" (add a {label} column)"
    return CellIssue(row, letter, label, value, code, message.format(label=label, value=value) + where)


def _dedupe(raw: RawSchedule, issues: list[CellIssue]) -> list[CellIssue]:
    """One issue per (row, column): a parse failure also shows up as a missing value, and is the real cause."""
    seen: set[tuple[int, str | None, str]] = set()
    unique: list[CellIssue] = []
    for issue in issues:  # loader and parse issues come first, so they win
        key = (issue.row, issue.column or issue.header, issue.severity)
        if key not in seen:
            seen.add(key)
            unique.append(issue)
    order = {letter: i for i, letter in enumerate(raw.letters)}
    unique.sort(key=lambda i: (i.row, order.get(i.column or "", -1)))
    return unique
