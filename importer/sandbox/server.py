"""A Kantata OX look-alike on loopback: the part of the API the importer uses, with fault switches.

It follows ``kantata/create-billing-milestones.md`` and ``kantata/api-notes.md``, not the client: same routes,
validation, error bodies and response format (``count``/``meta``/``results`` + collections keyed by id), including
the paginated answer to a create of many. Data lives in SQLite (``:memory:`` or a file that survives restarts).
Faults (429 with Retry-After, 5xx, latency, a connection dropped after the commit, a reserved title, and the
UNCONFIRMED behaviours: partial creates and per-item error indexes) are switched by `Faults`.

The standard library and orjson (a dependency of the package, for encoding answers fast), so the README's first
command and every end-to-end test need nothing the install does not bring.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import http
import json
import math
import re
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, NamedTuple, cast
from urllib.parse import parse_qs, urlsplit

import orjson

from importer.settings import is_loopback

DEFAULT_TOKEN: Final = "sandbox-token"
MAX_BATCH: Final = 100
DEFAULT_PER_PAGE: Final = 20
MAX_PER_PAGE: Final = 200
MAX_LOOKUP_REFS: Final = 200
FIRST_MILESTONE_ID: Final = 700001
FIRST_REFERENCE_ID: Final = 900001
BILLING_TYPES: Final = ("fixed_date", "upon_completion")
REFERENCE_STATUSES: Final = ("successful", "pending", "failed")
REFERENCE_FIELDS: Final = ("service_name", "service_model", "service_model_ref", "status", "external_message",
                           "external_link", "external_status", "locked")  # fmt: skip
_REFERENCE_TEXT: Final = REFERENCE_FIELDS[:-1]  # all but "locked"
_REFERENCE_CHECKS: Final = tuple((name, "External reference " + name.replace("_", " "), f"external_reference.{name}",
                                  name in ("service_name", "service_model", "service_model_ref"))
                                 for name in _REFERENCE_TEXT)  # fmt: skip
_Reference = tuple[Any, ...]  # a valid external reference: the values of REFERENCE_FIELDS, in that order
_BIGINT: Final = 2**63
_DATE: Final = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"


class Workspace(NamedTuple):
    """A seeded project; ``visible=False`` ones exist in the database but not for the token."""

    id: int
    title: str
    currency: str
    currency_base_unit: int
    currency_symbol: str
    visible: bool = True


class Story(NamedTuple):
    """A seeded task; visible exactly when its workspace is."""

    id: int
    workspace_id: int
    title: str
    state: str = "not started"


SEED_WORKSPACES: Final = (
    Workspace(1001, "Acme Website Redesign", "USD", 100, "$"),
    Workspace(1002, "Borealis ERP Rollout", "EUR", 100, "€"),
    Workspace(1003, "Cobalt Data Migration", "GBP", 100, "£"),
    Workspace(1004, "Daikoku Mobile App", "JPY", 1, "¥"),
    Workspace(1005, "Gulf Logistics Portal", "KWD", 1000, "KD"),
    Workspace(1099, "Confidential Merger", "USD", 100, "$", visible=False),
)
SEED_STORIES: Final = (
    Story(5001, 1001, "Design sign-off", "completed"),
    Story(5002, 1001, "Content migration", "started"),
    Story(5003, 1001, "Launch"),
    Story(5004, 1002, "Finance module go-live", "started"),
    Story(5005, 1002, "User acceptance testing"),
    Story(5006, 1003, "Data cut-over"),
    Story(5007, 1004, "App store release"),
    Story(5008, 1005, "Customs integration go-live"),
    Story(5099, 1099, "Due diligence report"),
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workspaces (id INTEGER PRIMARY KEY, title TEXT NOT NULL, currency TEXT NOT NULL,
    currency_base_unit INTEGER NOT NULL, currency_symbol TEXT NOT NULL, visible INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stories (id INTEGER PRIMARY KEY, workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    title TEXT NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS billing_milestones (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL,
    amount_in_cents INTEGER NOT NULL, currency TEXT NOT NULL, date_to_invoice TEXT, billing_type TEXT NOT NULL,
    story_id INTEGER, workspace_id INTEGER NOT NULL, invoice_id INTEGER, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS external_references (id INTEGER PRIMARY KEY AUTOINCREMENT, subject_type TEXT NOT NULL,
    subject_id INTEGER NOT NULL, service_name TEXT NOT NULL, service_model TEXT NOT NULL,
    service_model_ref TEXT NOT NULL, status TEXT, external_message TEXT, external_link TEXT, external_status TEXT,
    locked INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS external_references_subject ON external_references (subject_id);
CREATE INDEX IF NOT EXISTS external_references_ref ON external_references (service_model_ref);
"""


@dataclass(frozen=True, kw_only=True)
class Faults:
    """Fault switches. Frozen so a request reads one consistent snapshot while another thread changes them."""

    rate_limit_every: int = 0  # every Nth request (any route) answers 429 with Retry-After
    retry_after: float = 1
    fail_every: int = 0  # every Nth POST answers fail_status before writing
    fail_status: int = 503
    latency: float = 0.0  # seconds slept before answering any request
    # With latency: answer `latency` after the request arrived, the work done meanwhile (a server whose response
    # time is `latency`), instead of sleeping first and working after (response time = latency + the work).
    # Writes then happen at arrival, so tests that kill a client while a write is pending keep this off.
    latency_covers_work: bool = False
    drop_after_write_every: int = 0  # every Nth create that wrote commits, then closes the socket unanswered
    # Every Nth create closes the socket unanswered first and commits `late_write_after` seconds later: a request
    # Kantata is still working on when the client lost its connection (a proxy's reset, a network blip).
    drop_then_write_every: int = 0
    late_write_after: float = 0.5
    reject_title: str | None = None  # an item with exactly this title is invalid ("Title is reserved")
    partial_create: bool = False  # UNCONFIRMED alternative: valid items of a refused batch are created
    error_index: bool = False  # UNCONFIRMED alternative: list errors carry the item's "index"
    paginate_create: bool = True  # a create of many answers only one page (per_page, default 20)
    no_financial_access: bool = False  # documented: workspaces come without `currency` for such a user

    def __post_init__(self) -> None:
        for name in ("rate_limit_every", "fail_every", "drop_after_write_every", "drop_then_write_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Faults.{name} must be a whole number >= 0, not {value!r}")
        if not 400 <= self.fail_status <= 599:
            raise ValueError(f"Faults.fail_status must be an HTTP error status (400-599), not {self.fail_status!r}")
        if self.retry_after < 0 or self.latency < 0 or self.late_write_after < 0:
            raise ValueError("Faults.retry_after, Faults.latency and Faults.late_write_after must be >= 0")


class _NewMilestone(NamedTuple):
    """A validated item, ready to insert."""

    title: str
    amount_in_cents: int
    currency: str
    date_to_invoice: str | None
    billing_type: str
    story_id: int | None
    workspace_id: int
    reference: _Reference | None


class _Inserted(NamedTuple):
    """What one create wrote: its timestamp, the milestone ids in item order, and milestone id -> reference id."""

    at: str
    ids: list[int]
    reference_ids: dict[int, int]


@dataclass
class _Reply:
    """What a route answers; ``drop`` closes the socket instead of answering."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    _data: bytes | None = None

    def data(self) -> bytes:
        """The body as sent, encoded once (``_respond`` encodes it before a latency that covers the work).

        orjson, not json: the answer to a create of 100 is ~80 KB, and json.dumps took a quarter of the
        sandbox's work on it (1.7 of 6-8 ms of CPU in a 100k-row upload; 0.6 ms against 0.06 ms timed alone).
        Everything encoded here is the sandbox's own: string keys, integers it checked to fit in 64 bits."""
        if self._data is None:
            self._data = b"" if self.body is None else orjson.dumps(self.body)
        return self._data


def _error(status: int, kind: str, message: str) -> _Reply:
    return _Reply(status, {"errors": [{"type": kind, "message": message}]})


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --- storage ------------------------------------------------------------------------------------------------------


class _Store:
    """One SQLite connection behind a lock: handler threads share it, and sqlite3 objects are not thread-safe."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._lock, self._db:
            self._db.executescript(_SCHEMA)
            if self._db.execute("SELECT COUNT(*) FROM workspaces").fetchone()[0] == 0:
                self._seed()
        # The seed never changes while serving, so validation reads these without touching SQLite.
        rows = self._db.execute("SELECT * FROM workspaces").fetchall()
        self.workspaces = {r[0]: Workspace(*r)._replace(visible=bool(r[5])) for r in rows}
        self.stories = {s.id: s for s in (Story(*r) for r in self._db.execute("SELECT * FROM stories"))}

    def _seed(self) -> None:
        self._db.executemany("INSERT INTO workspaces VALUES (?, ?, ?, ?, ?, ?)", SEED_WORKSPACES)
        self._db.executemany("INSERT INTO stories VALUES (?, ?, ?, ?)", SEED_STORIES)
        self._restart_ids()

    def _restart_ids(self) -> None:
        """Ids start at 700001 / 900001 so they can't be mistaken for workspace or story ids."""
        self._db.execute("DELETE FROM sqlite_sequence WHERE name IN ('billing_milestones', 'external_references')")
        self._db.executemany("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)",
                             [("billing_milestones", FIRST_MILESTONE_ID - 1),
                              ("external_references", FIRST_REFERENCE_ID - 1)])  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def clear(self) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM external_references")
            self._db.execute("DELETE FROM billing_milestones")
            self._restart_ids()

    def insert(self, items: Sequence[_NewMilestone]) -> _Inserted:
        """All items in one transaction, with one created_at: they are one request's write.

        Ids are taken as AUTOINCREMENT would give them (one past the larger of the sequence and the largest id),
        so the rows go in with one executemany per table, and the answer is rendered from what was written
        without reading it back: a create costs the sandbox a few ms, not the 6-9 ms it did, and the sandbox
        stays a small part of what an upload measures (benchmarks/README.md)."""
        now = _now()
        with self._lock, self._db:
            first_id = self._next_id("billing_milestones")
            ids = list(range(first_id, first_id + len(items)))
            self._db.executemany(
                "INSERT INTO billing_milestones (id, title, amount_in_cents, currency, date_to_invoice, billing_type,"
                " story_id, workspace_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(milestone_id, *item[:7], now, now) for milestone_id, item in zip(ids, items, strict=True)],
            )  # the first seven fields, in column order
            with_reference = [(milestone_id, item.reference) for milestone_id, item in zip(ids, items, strict=True)
                              if item.reference is not None]  # fmt: skip
            first_ref = self._next_id("external_references")
            reference_ids = list(range(first_ref, first_ref + len(with_reference)))
            self._db.executemany(
                "INSERT INTO external_references (id, subject_type, subject_id, service_name, service_model,"
                " service_model_ref, status, external_message, external_link, external_status, locked, created_at)"
                " VALUES (?, 'BillingMilestone', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(ref_id, milestone_id, *ref, now)
                 for ref_id, (milestone_id, ref) in zip(reference_ids, with_reference, strict=True)],
            )  # fmt: skip
        return _Inserted(now, ids, dict(zip((m for m, _ in with_reference), reference_ids, strict=True)))

    def _next_id(self, table: str) -> int:
        """The id AUTOINCREMENT would give the next row of `table` (SQLite's rule: past both the sequence and
        the largest id); inserting it explicitly moves the sequence on, as an automatic id would."""
        seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", [table]).fetchone()
        largest = self._db.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0]  # noqa: S608 - a fixed name
        return max(seq[0] if seq else 0, largest or 0) + 1

    def select(self, where: list[str], params: list[Any], *, order: str = "DESC", limit: int = -1,
               offset: int = 0) -> tuple[int, list[sqlite3.Row]]:  # fmt: skip
        """Visible milestones matching every clause: the total and one page, newest first by default."""
        sql = " FROM billing_milestones m JOIN workspaces w ON w.id = m.workspace_id WHERE " + " AND ".join(
            ["w.visible = 1", *where]
        )
        with self._lock:
            total = self._db.execute("SELECT COUNT(*)" + sql, params).fetchone()[0]
            rows = self._db.execute(
                f"SELECT m.*{sql} ORDER BY m.created_at {order}, m.id {order} LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
        return total, rows

    def references(self, milestone_ids: list[int]) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(
                "SELECT * FROM external_references WHERE subject_type = 'BillingMilestone'"
                " AND subject_id IN (SELECT value FROM json_each(?)) ORDER BY id",
                [json.dumps(milestone_ids)],
            ).fetchall()

    def delete(self, milestone_id: int) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM external_references WHERE subject_id = ?", [milestone_id])
            self._db.execute("DELETE FROM billing_milestones WHERE id = ?", [milestone_id])

    def dump(self) -> list[dict[str, object]]:
        """Every milestone with its external reference flattened, for tests to assert against."""
        columns = ", ".join(f'r.{name} AS "external_reference.{name}"' for name in ("id", *REFERENCE_FIELDS))
        with self._lock:
            rows = self._db.execute(
                f"SELECT m.*, {columns} FROM billing_milestones m LEFT JOIN external_references r"
                " ON r.subject_id = m.id AND r.subject_type = 'BillingMilestone' ORDER BY m.id"
            ).fetchall()
        out = [dict(row) for row in rows]
        for row in out:
            if row["external_reference.locked"] is not None:
                row["external_reference.locked"] = bool(row["external_reference.locked"])
        return out


# --- validation (the rules of create-billing-milestones.md, with Rails-style messages) ---------------------------


def _invalid(message: str, field_name: str | None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": "validation", "message": message}
    if field_name is not None:
        error["field"] = field_name
    return error


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _valid_date(value: object) -> bool:
    return isinstance(value, str) and len(value) == 10 and _iso_date(value)  # (the cache keeps no long text)


@functools.lru_cache(maxsize=4096)
def _iso_date(text: str) -> bool:
    """Cached: a schedule's rows share a few dates, and this check was a tenth of a create's work."""
    if not re.fullmatch(_DATE, text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _check_id(item: Mapping[str, Any], key: str, label: str, errors: list[dict[str, Any]]) -> int | None:
    """The id under key when it is an integer; otherwise None, with an error unless it is simply absent."""
    value = item.get(key)
    if value is None:
        return None
    if not _is_int(value):
        errors.append(_invalid(f"{label} id is not a number", key))
        return None
    return cast(int, value)


def _check_reference(ref: object) -> tuple[list[dict[str, Any]], _Reference | None]:
    """All errors of an external reference, or its values in column order (text fields, then locked)."""
    if not isinstance(ref, dict):
        return [_invalid("External reference is invalid", "external_reference")], None
    values = [ref.get(name) for name in _REFERENCE_TEXT]
    errors = []
    for value, (name, label, where, required) in zip(values, _REFERENCE_CHECKS, strict=True):
        if type(value) is str and (not required or value.strip()) and (name != "status" or value in REFERENCE_STATUSES):
            continue  # the usual case, decided in one test
        if required and _blank(value):
            errors.append(_invalid(f"{label} can't be blank", where))
        elif value is not None and not isinstance(value, str):
            errors.append(_invalid(f"{label} is invalid", where))
        elif name == "status" and value is not None and value not in REFERENCE_STATUSES:
            errors.append(_invalid(f"{label} is not included in the list", where))
    locked = ref.get("locked")
    if locked is not None and not isinstance(locked, bool):
        errors.append(_invalid("External reference locked is not a boolean", "external_reference.locked"))
    return errors, None if errors else (*values, bool(locked))


def _check_milestone(
    item: object, workspaces: Mapping[int, Workspace], stories: Mapping[int, Story]
) -> tuple[list[dict[str, Any]], _NewMilestone | None]:
    """All errors of one item (never just the first), or the item ready to insert."""
    if not isinstance(item, dict):
        return [_invalid("Billing milestone is invalid", None)], None
    errors: list[dict[str, Any]] = []
    title, amount = item.get("title"), item.get("amount_in_cents")
    if _blank(title):
        errors.append(_invalid("Title can't be blank", "title"))
    elif not isinstance(title, str):
        errors.append(_invalid("Title is invalid", "title"))
    if amount is None:
        errors.append(_invalid("Amount in cents can't be blank", "amount_in_cents"))
    elif isinstance(amount, float):
        errors.append(_invalid("Amount in cents must be an integer", "amount_in_cents"))
    elif not _is_int(amount):
        errors.append(_invalid("Amount in cents is not a number", "amount_in_cents"))
    elif not -_BIGINT <= amount < _BIGINT:
        errors.append(_invalid("Amount in cents is out of range", "amount_in_cents"))
    workspace = None
    if "workspace_id" not in item or item["workspace_id"] is None:
        errors.append(_invalid("Workspace can't be blank", "workspace_id"))
    elif (workspace_id := _check_id(item, "workspace_id", "Workspace", errors)) is not None:
        workspace = workspaces.get(workspace_id)
        if workspace is None or not workspace.visible:
            errors.append(_invalid("Workspace not found", "workspace_id"))
            workspace = None
    date = item.get("date_to_invoice")
    if date is not None and not _valid_date(date):
        errors.append(_invalid("Date to invoice is not a valid date", "date_to_invoice"))
    billing_type = item.get("billing_type") or "fixed_date"
    if billing_type not in BILLING_TYPES:
        errors.append(_invalid("Billing type is not included in the list", "billing_type"))
    story_id = _check_id(item, "story_id", "Story", errors)
    if story_id is not None:
        story = stories.get(story_id)
        if story is None or not workspaces[story.workspace_id].visible:
            errors.append(_invalid("Story not found", "story_id"))
        elif workspace is not None and story.workspace_id != workspace.id:
            errors.append(_invalid("Story must belong to the billing milestone's workspace", "story_id"))
    elif item.get("story_id") is None and billing_type == "upon_completion":
        errors.append(_invalid("Story can't be blank", "story_id"))
    ref, reference = item.get("external_reference"), None
    if ref is not None:
        ref_errors, reference = _check_reference(ref)
        errors += ref_errors
    if errors or workspace is None:
        return errors, None
    return [], _NewMilestone(cast(str, title), cast(int, amount), workspace.currency, date, billing_type, story_id,
                             workspace.id, reference)  # fmt: skip


# --- rendering ----------------------------------------------------------------------------------------------------


def _milestone_json(row: sqlite3.Row) -> dict[str, Any]:
    story = row["story_id"]
    return {"id": str(row["id"]), "title": row["title"], "amount_in_cents": row["amount_in_cents"],
            "currency": row["currency"], "date_to_invoice": row["date_to_invoice"],
            "billing_type": row["billing_type"], "story_id": None if story is None else str(story),
            "workspace_id": str(row["workspace_id"]), "invoice_id": None, "created_at": row["created_at"],
            "updated_at": row["updated_at"]}  # fmt: skip


def _reference_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": str(row["id"]), "subject_type": row["subject_type"], "subject_id": str(row["subject_id"]),
            **{name: row[name] for name in REFERENCE_FIELDS}, "locked": bool(row["locked"]),
            "created_at": row["created_at"]}  # fmt: skip


def _written_milestone_json(milestone_id: int, item: _NewMilestone, at: str) -> dict[str, Any]:
    """What `_milestone_json` gives for the row `insert` wrote for `item`, without reading it back."""
    story = item.story_id
    return {"id": str(milestone_id), "title": item.title, "amount_in_cents": item.amount_in_cents,
            "currency": item.currency, "date_to_invoice": item.date_to_invoice, "billing_type": item.billing_type,
            "story_id": None if story is None else str(story), "workspace_id": str(item.workspace_id),
            "invoice_id": None, "created_at": at, "updated_at": at}  # fmt: skip


def _written_reference_json(reference_id: int, milestone_id: int, ref: _Reference, at: str) -> dict[str, Any]:
    """What `_reference_json` gives for the reference row `insert` wrote."""
    return {"id": str(reference_id), "subject_type": "BillingMilestone", "subject_id": str(milestone_id),
            **dict(zip(REFERENCE_FIELDS, ref, strict=True)), "created_at": at}  # fmt: skip


def _workspace_json(workspace: Workspace, faults: Faults) -> dict[str, Any]:
    shown = workspace._asdict()
    del shown["visible"]
    if faults.no_financial_access:
        del shown["currency"]  # api-notes: `currency` only for users with financial access to the project
    return shown | {"id": str(workspace.id)}


def _envelope(key: str, objects: list[dict[str, Any]], total: int, page: int, per_page: int) -> dict[str, Any]:
    """The response format every endpoint shares: totals, one page of sorted results, objects keyed by id."""
    return {
        "count": total,
        "meta": {"count": total, "page_count": math.ceil(total / per_page), "page_number": page, "page_size": per_page},
        "results": [{"key": key, "id": obj["id"]} for obj in objects],
        key: {obj["id"]: obj for obj in objects},
    }


def _number(text: str) -> int | None:
    """A plain decimal id or count that fits SQLite's integers; None for anything else."""
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text.strip()) else None


def _paging(query: Mapping[str, str]) -> tuple[int, int]:
    """page and per_page; nonsense falls back to the default and an over-large per_page is capped, not refused."""
    page = _number(query.get("page", "")) or 1
    per_page = _number(query.get("per_page", "")) or DEFAULT_PER_PAGE
    return page, min(per_page, MAX_PER_PAGE)


def _ids(text: str) -> list[int]:
    """A comma list of ids; tokens that are not ids match nothing, as a miss is simply absent."""
    return [n for n in map(_number, text.split(",")) if n is not None]


def _includes(query: Mapping[str, str]) -> set[str]:
    return {part.strip() for part in query.get("include", "").split(",")}


def _milestone_filters(query: Mapping[str, str]) -> tuple[list[str], list[Any]]:
    """SQL clauses for the documented GET /billing_milestones filters; unknown parameters are ignored."""
    where: list[str] = []
    params: list[Any] = []
    for name, column in (("workspace_ids", "m.workspace_id"), ("story_ids", "m.story_id"), ("only", "m.id")):
        if name in query:
            where.append(f"{column} IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(_ids(query[name])))
    if span := re.fullmatch(rf"({_DATE}):({_DATE})", query.get("date_between", "")):
        where.append("m.date_to_invoice BETWEEN ? AND ?")
        params += [span[1], span[2]]
    has_ref = "EXISTS (SELECT 1 FROM external_references r WHERE r.subject_type = 'BillingMilestone'" \
              " AND r.subject_id = m.id"  # fmt: skip
    if query.get("has_external_references") in ("true", "false"):
        where.append(("" if query["has_external_references"] == "true" else "NOT ") + has_ref + ")")
    conditions = []
    for column in ("service_name", "service_model", "service_model_ref", "status"):
        if f"external_reference_{column}" in query:
            conditions.append(f" AND r.{column} = ?")
            params.append(query[f"external_reference_{column}"])
    if "external_reference_service_model_refs" in query:
        refs = [ref for ref in query["external_reference_service_model_refs"].split(",") if ref]
        conditions.append(" AND r.service_model_ref IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(refs[:MAX_LOOKUP_REFS]))
    if conditions:
        where.append(has_ref + "".join(conditions) + ")")
    if "without_external_reference_service_name" in query:
        where.append("NOT " + has_ref + " AND r.service_name = ?)")
        params.append(query["without_external_reference_service_name"])
    return where, params


# --- the API ------------------------------------------------------------------------------------------------------

_ROUTE = re.compile(r"(?:/api/v1)?/(billing_milestones(?:/([0-9]{1,18}))?|workspaces|stories)/?")


def _route(method: str, path: str) -> tuple[str, int | None]:
    """The route's name for stats ("GET /billing_milestones/{id}") and the id in the path; .json is optional."""
    found = _ROUTE.fullmatch(path.removesuffix(".json"))
    if found is None:
        return f"{method} (unknown route)", None
    ident = found[2]
    name = "/billing_milestones/{id}" if ident else "/" + found[1]
    return f"{method} {name}", None if ident is None else int(ident)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Sandbox:
    """The look-alike server: SQLite data, fault switches and counters, served from a daemon thread."""

    def __init__(self, *, db: str = ":memory:", host: str = "127.0.0.1", port: int = 0, token: str = DEFAULT_TOKEN,
                 faults: Faults | None = None) -> None:  # fmt: skip
        if not is_loopback(host):
            raise ValueError(f"the sandbox serves loopback only, not {host!r}: its token is no secret")
        self._store = _Store(db)
        self._host, self._port, self._token = host, port, token
        self._initial_token = token
        self._faults = faults or Faults()
        self._lock = threading.Lock()  # guards faults, counters and the fault phase counters
        self._stats: Counter[str] = Counter()
        self._in_flight = 0
        self._most_in_flight = 0
        self._phase: Counter[str] = Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._late: list[threading.Timer] = []  # writes of --drop-then-write-every still to come
        self._era = 0  # bumped by reset and stop: a late write promised before either is dropped
        self._routes: dict[str, Callable[[int | None, Mapping[str, str], bytes, Faults], _Reply]] = {
            "POST /billing_milestones": self._create,
            "GET /billing_milestones": self._list,
            "GET /billing_milestones/{id}": self._show,
            "DELETE /billing_milestones/{id}": self._delete,
            "GET /workspaces": self._workspaces,
            "GET /stories": self._stories,
        }

    def start(self) -> Sandbox:
        """Listen now (port 0 picks a free port) and serve from a daemon thread."""
        if self._server is not None or self._stopped:
            raise RuntimeError("the sandbox is already running, or stopped: a stopped one cannot be restarted")
        self._server = _Server((self._host, self._port), self)
        # A short poll interval keeps stop() fast; serve_forever only polls for the shutdown flag.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="kantata-sandbox", daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end kept-alive connections and close the database; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.close_connections()  # or idle keep-alive threads would answer from a closed database
            self._server.server_close()
            self._thread.join()
        self._late_writes_done()
        self._store.close()

    def _late_writes_done(self) -> None:
        """Cancel the late writes promised so far (one already writing is waited for), so that none lands after
        a reset, in the next test's data, or on a closed database. A request still being served at the reset
        (sleeping its latency) promises its late write afterwards, in the new era, and writes it: as any request
        in progress then writes after the reset."""
        with self._lock:
            self._era += 1
            late, self._late = self._late, []
        for timer in late:
            timer.cancel()
            timer.join()

    def _write_late(self, era: int, items: Sequence[_NewMilestone]) -> None:
        with self._lock:  # held while writing: a reset or stop waits for this write, or this one sees their era
            if era == self._era:
                self._store.insert(items)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sandbox is not running: call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/api/v1"

    def set_faults(self, **changes: object) -> None:
        """Change some switches; the every-Nth counting restarts so the next faults are predictable."""
        with self._lock:
            self._faults = replace(self._faults, **cast(dict[str, Any], changes))
            self._phase.clear()

    def set_token(self, token: str) -> None:
        """Accept another token from now on: revoking the one a client holds, mid-run."""
        with self._lock:
            self._token = token

    def reset(self) -> None:
        """Empty milestones and references (ids restart), zero the counters, switch every fault off, restore the
        token."""
        self._late_writes_done()
        self._store.clear()
        with self._lock:
            self._token = self._initial_token
            self._faults = Faults()
            self._stats.clear()
            self._phase.clear()
            self._most_in_flight = 0

    def milestones(self) -> list[dict[str, object]]:
        """Every stored milestone (ids as integers), oldest first, its reference flattened as external_reference.*"""
        return self._store.dump()

    def stats(self) -> dict[str, int]:
        """Requests per route ("POST /billing_milestones") and faults injected ("429", "503", "drop_after_write")."""
        with self._lock:
            return dict(self._stats)

    @property
    def in_flight(self) -> int:
        """Requests being answered right now (a client that went away does not stop them)."""
        with self._lock:
            return self._in_flight

    @property
    def most_in_flight(self) -> int:
        """The most requests answered at once since the last reset: what a client's concurrency looked like."""
        with self._lock:
            return self._most_in_flight

    def _tick(self, *, stat: str | None = None, phase: str | None = None, every: int = 0) -> bool:
        """Count a stat and/or a phase; True when the phase has reached a multiple of ``every``."""
        with self._lock:
            if stat is not None:
                self._stats[stat] += 1
            if phase is None or not every:
                return False
            self._phase[phase] += 1
            return self._phase[phase] % every == 0

    def _respond(self, method: str, target: str, authorization: str | None, body: bytes) -> _Reply:
        """Count the request as in flight while it is served (`most_in_flight`)."""
        arrived = time.monotonic()
        with self._lock:
            self._in_flight += 1
            self._most_in_flight = max(self._most_in_flight, self._in_flight)
            faults = self._faults
        try:
            reply = self._serve_one(method, target, authorization, body)
            reply.data()  # rendering is work too: done before the answer is due
            if faults.latency and faults.latency_covers_work:
                time.sleep(max(0.0, faults.latency - (time.monotonic() - arrived)))
            return reply
        finally:
            with self._lock:
                self._in_flight -= 1

    def _serve_one(self, method: str, target: str, authorization: str | None, body: bytes) -> _Reply:
        """One request, in order: latency, counting, 429, auth, POST failures, then the route."""
        with self._lock:
            faults = self._faults
        if faults.latency and not faults.latency_covers_work:
            time.sleep(faults.latency)
        url = urlsplit(target)
        route, ident = _route(method, url.path)
        if self._tick(stat=route, phase="request", every=faults.rate_limit_every):
            self._tick(stat="429")
            seconds = faults.retry_after
            reply = _error(429, "system", "Rate limit exceeded")
            reply.headers["Retry-After"] = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
            return reply
        if authorization != f"Bearer {self._token}":
            return _error(401, "oauth", "Invalid OAuth 2 Request")
        if method == "POST" and self._tick(phase="post", every=faults.fail_every):
            self._tick(stat=str(faults.fail_status))
            return _error(faults.fail_status, "system", f"{_phrase(faults.fail_status)} (injected by the sandbox)")
        handler = self._routes.get(route)
        if handler is None:
            return _error(404, "system", f"No route matches {method} {url.path}")
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        return handler(ident, query, body, faults)

    def _parse_create(self, body: bytes) -> tuple[list[Any], bool] | _Reply:
        """The items to create and whether they came as a list, or the 400/422 that refuses the request."""
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "system", "The request body is not valid JSON")
        if not isinstance(payload, dict) or ("billing_milestone" in payload) == ("billing_milestones" in payload):
            return _error(400, "system", "Send a JSON object with either billing_milestone or billing_milestones")
        if "billing_milestone" in payload:
            return [payload["billing_milestone"]], False
        items = payload["billing_milestones"]
        if not isinstance(items, list):
            return _error(400, "system", "billing_milestones must be an array")
        if not 1 <= len(items) <= MAX_BATCH:
            message = f"You can create at most {MAX_BATCH} billing milestones per request" if items else (
                "billing_milestones must not be empty")  # fmt: skip
            return _error(422, "validation", message)
        return items, True

    def _create(self, _ident: int | None, query: Mapping[str, str], body: bytes, faults: Faults) -> _Reply:
        parsed = self._parse_create(body)
        if isinstance(parsed, _Reply):
            return parsed
        items, is_list = parsed
        errors: list[dict[str, Any]] = []
        valid: list[_NewMilestone] = []
        for index, item in enumerate(items):
            item_errors, milestone = _check_milestone(item, self._store.workspaces, self._store.stories)
            if faults.reject_title is not None and isinstance(item, dict) and item.get("title") == faults.reject_title:
                self._tick(stat="reject_title")
                item_errors.append(_invalid("Title is reserved", "title"))
            if is_list and faults.error_index:
                item_errors = [{**error, "index": index} for error in item_errors]
            errors += item_errors
            if milestone is not None and not item_errors:
                valid.append(milestone)
        if errors and not faults.partial_create:
            return _Reply(422, {"errors": errors})
        if valid and not errors and self._tick(phase="late", every=faults.drop_then_write_every):
            self._tick(stat="drop_then_write")
            with self._lock:
                late = threading.Timer(faults.late_write_after, self._write_late, args=(self._era, valid))
                late.daemon = True
                self._late = [t for t in self._late if t.is_alive()]
                self._late.append(late)
            late.start()
            return _Reply(0, drop=True)
        written = self._store.insert(valid) if valid else None
        if written is not None and self._tick(phase="write", every=faults.drop_after_write_every):
            self._tick(stat="drop_after_write")
            return _Reply(0, drop=True)
        if errors:
            return _Reply(422, {"errors": errors})
        assert written is not None  # no errors, so at least one valid item (an empty list was refused above)
        ids = written.ids
        page, per_page = _paging(query) if faults.paginate_create else (1, len(ids))
        # Newest first, as a listing orders them (one created_at, so by id): ids grow in item order.
        shown = list(reversed(range(len(ids))))[(page - 1) * per_page : page * per_page]
        include = _includes(query)
        objects = [_written_milestone_json(ids[i], valid[i], written.at) for i in shown]
        # In id order, as a listing gives them: ids grow in item order, and `shown` runs newest first.
        references = [_written_reference_json(written.reference_ids[ids[i]], ids[i], ref, written.at)
                      for i in reversed(shown) if (ref := valid[i].reference) is not None
                      ] if "external_references" in include else []  # fmt: skip
        return _Reply(200, self._render_page(objects, references, len(ids), page, per_page, include))

    def _milestone_page(self, rows: list[sqlite3.Row], total: int, page: int, per_page: int,
                        include: set[str]) -> dict[str, Any]:  # fmt: skip
        references = self._store.references([row["id"] for row in rows]) if "external_references" in include else []
        return self._render_page([_milestone_json(row) for row in rows], [_reference_json(r) for r in references],
                                 total, page, per_page, include)  # fmt: skip

    @staticmethod
    def _render_page(objects: list[dict[str, Any]], references: list[dict[str, Any]], total: int, page: int,
                     per_page: int, include: set[str]) -> dict[str, Any]:  # fmt: skip
        """One page of milestones as JSON objects, with their references (in id order) when asked to include them."""
        if "external_references" not in include:
            return _envelope("billing_milestones", objects, total, page, per_page)
        by_subject: dict[str, list[str]] = {}
        for r in references:  # one pass, not one scan per milestone: pages hold up to 200 of each
            by_subject.setdefault(r["subject_id"], []).append(r["id"])
        for obj in objects:
            obj["external_reference_ids"] = by_subject.get(obj["id"], [])
        body = _envelope("billing_milestones", objects, total, page, per_page)
        body["external_references"] = {r["id"]: r for r in references}
        return body

    def _list(self, _ident: int | None, query: Mapping[str, str], _body: bytes, _faults: Faults) -> _Reply:
        where, params = _milestone_filters(query)
        page, per_page = _paging(query)
        order = "ASC" if query.get("order") == "created_at:asc" else "DESC"
        total, rows = self._store.select(where, params, order=order, limit=per_page, offset=(page - 1) * per_page)
        return _Reply(200, self._milestone_page(rows, total, page, per_page, _includes(query)))

    def _show(self, ident: int | None, query: Mapping[str, str], _body: bytes, _faults: Faults) -> _Reply:
        total, rows = self._store.select(["m.id = ?"], [ident])
        if not total:
            return _error(404, "system", f"Billing milestone {ident} not found")
        return _Reply(200, self._milestone_page(rows, 1, 1, DEFAULT_PER_PAGE, _includes(query)))

    def _delete(self, ident: int | None, query: Mapping[str, str], body: bytes, faults: Faults) -> _Reply:
        found = self._show(ident, {}, body, faults)
        if found.status != 200:
            return found
        self._store.delete(cast(int, ident))
        return _Reply(204)

    def _workspaces(self, _ident: int | None, query: Mapping[str, str], _body: bytes, faults: Faults) -> _Reply:
        chosen = [w for w in self._store.workspaces.values() if w.visible]
        if "only" in query:
            chosen = [w for w in chosen if w.id in _ids(query["only"])]
        shown = [_workspace_json(w, faults) for w in sorted(chosen)]
        return self._paged("workspaces", shown, query)

    def _stories(self, _ident: int | None, query: Mapping[str, str], _body: bytes, faults: Faults) -> _Reply:
        workspaces = self._store.workspaces
        chosen = [s for s in self._store.stories.values() if workspaces[s.workspace_id].visible]
        for name, attribute in (("only", "id"), ("workspace_ids", "workspace_id")):
            if name in query:
                chosen = [s for s in chosen if getattr(s, attribute) in _ids(query[name])]
        with_workspace = "workspace" in _includes(query)
        objects = [{"id": str(s.id), "title": s.title, "state": s.state}
                   | ({"workspace_id": str(s.workspace_id)} if with_workspace else {})
                   for s in sorted(chosen)]  # fmt: skip
        reply = self._paged("stories", objects, query)
        if with_workspace and reply.body is not None:
            shown = sorted({self._store.stories[int(story_id)].workspace_id for story_id in reply.body["stories"]})
            reply.body["workspaces"] = {str(w): _workspace_json(workspaces[w], faults) for w in shown}
        return reply

    @staticmethod
    def _paged(key: str, objects: list[dict[str, Any]], query: Mapping[str, str]) -> _Reply:
        page, per_page = _paging(query)
        return _Reply(200, _envelope(key, objects[(page - 1) * per_page : page * per_page], len(objects), page,
                                     per_page))  # fmt: skip


# --- HTTP plumbing ------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, so a requests.Session reuses its connection."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # without it every answer waits ~40 ms for a delayed ACK (PERF-NOTES.md)
    server_version = "KantataSandbox/1.0"

    def do_GET(self) -> None:
        self._serve(self.command)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: per-request lines on stderr would drown the importer's own output."""

    def _serve(self, method: str) -> None:
        length = self.headers.get("Content-Length", "0")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or not length.isdigit():
            self.close_connection = True  # the body's end is unknown, so the stream can't be reused
            self._send(_error(400, "system", "Send the body with a Content-Length"))
            return
        body = self.rfile.read(int(length))
        app = cast(_Server, self.server).app
        try:
            reply = app._respond(method, self.path, self.headers.get("Authorization"), body)
        except Exception as exc:  # a sandbox bug should reach the client as a 500, not a hung socket
            reply = _error(500, "system", f"sandbox error: {type(exc).__name__}: {exc}")
        if reply.drop:
            self.close_connection = True  # committed, never answered: the client's outcome is unknown
            return
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        data = reply.data()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("x-request-id", uuid.uuid4().hex)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != 204:  # a 204 must not carry Content-Length (RFC 9110 8.6)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    """Tracks open connections so stop() can end idle keep-alive threads instead of leaving them blocked."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: Sandbox) -> None:
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._open_lock:
                self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._open_lock:
                self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up is not a sandbox bug; anything else still prints its traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


# --- command line -------------------------------------------------------------------------------------------------


def serve(*, host: str = "127.0.0.1", port: int = 8765, db: str = ":memory:", token: str = DEFAULT_TOKEN,
          faults: Faults | None = None) -> None:  # fmt: skip
    """Run until Ctrl-C: the ``kantata-import sandbox`` command."""
    with Sandbox(db=db, host=host, port=port, token=token, faults=faults) as sandbox:
        print(f"sandbox: Kantata OX look-alike at {sandbox.url}, token {token!r} (Ctrl-C stops it)",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("sandbox: stopped", file=sys.stderr, flush=True)


def _loopback(host: str) -> str:
    if not is_loopback(host):
        raise argparse.ArgumentTypeError(f"{host!r} is not a loopback address; the sandbox serves this machine only")
    return host


def _within(kind: type[int] | type[float], low: float, high: float = math.inf) -> Callable[[str], float]:
    """An argparse type that refuses out-of-range numbers with a clear message instead of a traceback later."""

    def convert(text: str) -> float:
        value = kind(text)
        if not (math.isfinite(value) and low <= value <= high):
            bounds = f">= {low:g}" if high == math.inf else f"from {low:g} to {high:g}"
            raise argparse.ArgumentTypeError(f"{text!r} is not a number {bounds}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in "invalid int value" messages
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sandbox command's flags: where to listen, where to keep data, and one flag per fault switch."""
    default = Faults()
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 picks a free one)")
    parser.add_argument("--host", type=_loopback, default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--db", default=":memory:", help="SQLite file that keeps the data across restarts "
                        "(default: in memory)")  # fmt: skip
    faults = parser.add_argument_group("faults")
    faults.add_argument("--rate-limit-every", type=_within(int, 0), default=0, metavar="N",
                        help="answer every Nth request with 429 and Retry-After")  # fmt: skip
    faults.add_argument("--retry-after", type=_within(float, 0), default=default.retry_after, metavar="S",
                        help="the Retry-After seconds sent with a 429 (default 1)")  # fmt: skip
    faults.add_argument("--fail-every", type=_within(int, 0), default=0, metavar="N",
                        help="answer every Nth POST with --fail-status, writing nothing")  # fmt: skip
    faults.add_argument("--fail-status", type=_within(int, 400, 599), default=default.fail_status, metavar="CODE",
                        help="status for --fail-every (default 503)")  # fmt: skip
    faults.add_argument(
        "--latency", type=_within(float, 0), default=0.0, metavar="S", help="wait S seconds before answering"
    )
    faults.add_argument("--latency-covers-work", action="store_true",
                        help="answer S seconds after the request arrived, the work done meanwhile")  # fmt: skip
    faults.add_argument("--drop-after-write-every", type=_within(int, 0), default=0, metavar="N",
                        help="every Nth create commits, then closes the connection without answering")  # fmt: skip
    faults.add_argument("--drop-then-write-every", type=_within(int, 0), default=0, metavar="N",
                        help="every Nth create closes the connection without answering, then commits "
                             "--late-write-after seconds later")  # fmt: skip
    faults.add_argument("--late-write-after", type=_within(float, 0), default=default.late_write_after, metavar="S",
                        help="seconds from closing to committing, --drop-then-write-every (default 0.5)")  # fmt: skip
    faults.add_argument("--reject-title", metavar="T", help="refuse any milestone titled exactly T")
    faults.add_argument("--partial-create", action="store_true",
                        help="create the valid items of a refused batch (UNCONFIRMED Kantata behaviour)")  # fmt: skip
    faults.add_argument("--error-index", action="store_true",
                        help="give each error of a list the item's index (UNCONFIRMED Kantata behaviour)")  # fmt: skip
    faults.add_argument("--no-paginate-create", dest="paginate_create", action="store_false",
                        help="answer a create with every created milestone, ignoring per_page")  # fmt: skip
    faults.add_argument("--no-financial-access", action="store_true",
                        help="answer as for a user without financial access: projects without currency")  # fmt: skip


def faults_from_args(args: argparse.Namespace) -> Faults:
    return Faults(**{f.name: getattr(args, f.name) for f in fields(Faults)})
