"""Validated rows -> import keys, request bodies and batches of at most 100.

Kantata has no idempotency key, so every milestone carries an *import key* as its external reference; it is
how a re-run, a resend after a timeout and the mapping of created ids back to rows find each row. The rule:

- A row whose external reference (service, type and ID) is filled in uses it as its key, unchanged.
- Any other row gets a derived key: service_name "kantata-import", service_model "billing_schedule_row",
  service_model_ref "ki1-" + 24 hex digits of SHA-256 over the row's workspace, title, amount, date, billing
  type and task, plus its occurrence (the 2nd identical row gets another key, so two identical rows stay two
  milestones). Column order, other columns, and moving rows up or down do not change a key.
- Editing any of those fields between runs gives the row a new key: the re-run creates a new milestone and the
  one created before stays in Kantata (find it by its key in the earlier results workbook). Two exceptions, made
  by the delivery: a row a killed run created and that was edited before its re-run updates that milestone
  (delivery/handover.py), and a milestone already holding the row's values under another key is the row's
  (delivery/planner.already_there).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd

from importer.errors import CellIssue
from importer.progress import CHUNK, Tick, Ticker
from importer.schedule import EXT, EXT_REQUIRED, FIELDS, IDENTITY, LOCAL_ONLY, REQUIRED

SERVICE_NAME = "kantata-import"
SERVICE_MODEL = "billing_schedule_row"
KEY_PREFIX = "ki1-"
_KEY_FIELDS = ("workspace_id", "title", "amount_in_cents", "date_to_invoice", "billing_type", "story_id")
_TOP_FIELDS = tuple(
    f.name for f in FIELDS if not f.name.startswith(EXT) and f.name not in LOCAL_ONLY and f.name != IDENTITY
)
_EXT_FIELDS = tuple(f.name for f in FIELDS if f.name.startswith(EXT))
# json.dumps(x, ensure_ascii=False) builds a new encoder on every call; one kept encoder writes the same text
# (the key's formula must never change: it is how a re-run finds what an earlier version created).
_KEY_TEXT = json.JSONEncoder(ensure_ascii=False).encode
_STR_TEXT = json.encoder.encode_basestring  # what that encoder writes for a str (C, when built)


class ImportKey(NamedTuple):
    service_name: str
    service_model: str
    ref: str

    @property
    def derived(self) -> bool:
        """The importer made this key from the row's content (not the user's own external reference)."""
        return self.service_name == SERVICE_NAME and self.service_model == SERVICE_MODEL

    @classmethod
    def derived_from(cls, ref: str) -> ImportKey:
        """The derived key whose reference is `ref` (what `str` gives of a derived key)."""
        return cls(SERVICE_NAME, SERVICE_MODEL, ref)

    def __str__(self) -> str:
        if self.derived:
            return self.ref
        return f"{self.service_name}/{self.service_model}/{self.ref}"


@dataclass(frozen=True, slots=True)
class Item:
    """One row ready to send: its identity, its key and the JSON object for the request."""

    row: int
    key: ImportKey
    body: dict[str, Any]
    milestone_id: str | None = None  # the row's own milestone (its id given): it is updated, never created


def _columns(rows: pd.DataFrame) -> dict[str, list[Any]]:
    """Each field that has a value anywhere, as a plain Python list (None where blank, ISO text for dates).

    Column-wise, because building request dicts row by row from a DataFrame is slow.
    """
    out: dict[str, list[Any]] = {}
    for name in (*_TOP_FIELDS, *_EXT_FIELDS):
        if name not in rows.columns or not rows[name].notna().any():
            continue
        # pandas-stubs omits None as na_value, which pandas documents and this relies on (NA -> None)
        values = rows[name].to_numpy(dtype=object, na_value=None).tolist()  # type: ignore[call-overload]
        if name == "date_to_invoice":
            values = [None if v is None else v.isoformat() for v in values]
        out[name] = values
    return out


def _ids(rows: pd.DataFrame) -> list[Any] | None:
    """Each row's milestone id, None where it has none; None when the schedule has no id column at all."""
    if IDENTITY not in rows.columns or not rows[IDENTITY].notna().any():
        return None
    ids: list[Any] = rows[IDENTITY].to_numpy(dtype=object, na_value=None).tolist()  # type: ignore[call-overload]
    return ids


def _json_texts(values: list[Any]) -> list[str]:
    """Each value as `_KEY_TEXT` writes it inside a list: the common types directly (C-speed for text), any
    other through the encoder itself. tests/kantata/test_keys.py pins the result to the formula in the module
    docstring."""
    out: list[str] = []
    for v in values:
        kind = type(v)
        if kind is str:
            out.append(_STR_TEXT(v))
        elif kind is int:
            out.append(int.__repr__(v))
        elif v is None:
            out.append("null")
        else:
            out.append(_KEY_TEXT(v))
    return out


def _key_contents(columns: Mapping[str, list[Any]], n: int) -> list[str]:
    """`_KEY_TEXT([body.get(name) for name in _KEY_FIELDS])` for every row, a column at a time (much cheaper
    than encoding a list per row); a field no row has is null throughout, as body.get gives."""
    texts = [_json_texts(columns[name]) if name in columns else ["null"] * n for name in _KEY_FIELDS]
    return ["[" + ", ".join(parts) + "]" for parts in zip(*texts, strict=True)]


def build_items(rows: pd.DataFrame, *, on_progress: Tick | None = None) -> tuple[list[Item], list[CellIssue]]:
    """Give every valid row its key and body; a user key used by two rows makes the later row an issue."""
    issues: list[CellIssue] = []
    items = list(_items(rows, issues, on_progress))
    return items, issues


def has_user_keys(rows: pd.DataFrame) -> bool:
    """Whether any row carries the user's own external reference (else every key is derived)."""
    return any(c in rows.columns and bool(rows[c].notna().any()) for c in EXT_REQUIRED)


def items_as_built(rows: pd.DataFrame) -> Iterator[Item]:
    """`build_items` one item at a time, for rows without a user key, where no row can be an issue (a derived
    key hashes its occurrence in): the first batches can go out while the rest are built."""
    issues: list[CellIssue] = []
    for item in _items(rows, issues, None):
        if issues:  # sha-256 collided, or a user key slipped through: never send past it
            raise AssertionError(f"row {issues[0].row}: {issues[0].message}")
        yield item
    if issues:
        raise AssertionError(f"row {issues[0].row}: {issues[0].message}")


def _items(rows: pd.DataFrame, issues: list[CellIssue], on_progress: Tick | None) -> Iterator[Item]:
    ticker = Ticker(on_progress, len(rows))
    if rows.empty:  # no valid row (every one invalid, or only headers): nothing to send
        ticker.end(0)
        return
    occurrences: Counter[str] = Counter()
    first_row: dict[ImportKey, int] = {}
    sha256 = hashlib.sha256
    # A chunk of rows at a time: the column-wise steps (lists, key texts) over a whole large frame would all
    # come before the first item, and so before a deferred upload's first POST. Per row, a chunk gives what
    # the whole frame gives: a field no row of the chunk has is left out of its bodies, as a blank is.
    for start in range(0, len(rows), CHUNK):
        chunk = rows.iloc[start : start + CHUNK]
        columns = _columns(chunk)
        for name in REQUIRED:
            values = columns.get(name)
            if values is None or None in values:  # the schema guarantees these; a miss here is a bug, never a
                missing = chunk.index[0] if values is None else chunk.index[values.index(None)]  # silent omission
                raise AssertionError(f"valid row {missing} without {name}")
        top = [(name, columns[name]) for name in _TOP_FIELDS if name in columns]
        ext = [(name[len(EXT) :], columns[name]) for name in _EXT_FIELDS if name in columns]
        contents = _key_contents(columns, len(chunk))
        ids = _ids(chunk)
        for i, row in enumerate(chunk.index.tolist()):
            ticker.at(start + i)
            body = {name: v for name, values in top if (v := values[i]) is not None}
            reference = {name: v for name, values in ext if (v := values[i]) is not None} if ext else None
            if reference:
                body["external_reference"] = reference
                key = ImportKey(reference["service_name"], reference["service_model"],
                                reference["service_model_ref"])  # fmt: skip
            else:
                content = contents[i]
                occurrences[content] += 1
                digest = sha256(f"{content}#{occurrences[content]}".encode()).hexdigest()
                key = ImportKey(SERVICE_NAME, SERVICE_MODEL, KEY_PREFIX + digest[:24])
                body["external_reference"] = {"service_name": SERVICE_NAME, "service_model": SERVICE_MODEL,
                                              "service_model_ref": key.ref}  # fmt: skip
            if key in first_row:
                issues.append(_reused(int(row), key, first_row[key]))
                continue
            first_row[key] = int(row)
            yield Item(int(row), key, body, None if ids is None or ids[i] is None else str(ids[i]))
    ticker.end(len(rows))


def _reused(row: int, key: ImportKey, first: int) -> CellIssue:
    return CellIssue(row, None, None, str(key), "duplicate-external-reference",
                     f"external reference {key} is also used by row {first}; each milestone needs its own "
                     "External ID")  # fmt: skip


def reference_issues(rows: pd.DataFrame) -> list[CellIssue]:
    """The issues `build_items` finds (a user's external reference on two rows), without building any request:
    all a dry run needs, at a fraction of the cost. Derived keys cannot collide (the occurrence is hashed in)."""
    if not all(c in rows.columns for c in EXT_REQUIRED):
        return []
    given = rows.loc[rows[list(EXT_REQUIRED)].notna().all(axis=1), list(EXT_REQUIRED)].astype(str)
    if given.empty:
        return []
    repeated = given.duplicated(keep="first")
    if not repeated.any():
        return []
    first_row: dict[ImportKey, int] = {}
    issues = []
    for row, service, model, ref in given.itertuples(name=None):
        key = ImportKey(service, model, ref)
        if key in first_row:
            issues.append(_reused(int(row), key, first_row[key]))
        else:
            first_row[key] = int(row)
    return issues
