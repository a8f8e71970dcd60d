"""The sandbox's data: the seeded projects and tasks, and the milestones created, changed and invoiced, in SQLite.

SQLite because the sandbox can keep its data in a file that survives restarts (``--db``), and because the
documented list filters are set operations that SQL states directly; ``:memory:`` when nothing needs to last.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any, Final, Literal, NamedTuple

FIRST_MILESTONE_ID: Final = 700001
FIRST_REFERENCE_ID: Final = 900001
FIRST_INVOICE_ID: Final = 800001
UPDATABLE: Final = ("title", "amount_in_cents", "date_to_invoice", "billing_type", "story_id")
REFERENCE_FIELDS: Final = ("service_name", "service_model", "service_model_ref", "status", "external_message",
                           "external_link", "external_status", "locked")  # fmt: skip
Reference = tuple[Any, ...]  # a valid external reference: the values of REFERENCE_FIELDS, in that order


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


class NewMilestone(NamedTuple):
    """A validated item, ready to insert; the first seven fields are in the table's column order."""

    title: str
    amount_in_cents: int
    currency: str
    date_to_invoice: str | None
    billing_type: str
    story_id: int | None
    workspace_id: int
    reference: Reference | None


class Inserted(NamedTuple):
    """What one create wrote: its timestamp, the milestone ids in item order, and milestone id -> reference id."""

    at: str
    ids: list[int]
    reference_ids: dict[int, int]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _later(previous: str) -> str:
    """Now, or a second past `previous` when the clock has not moved on: timestamps have whole seconds, and a
    change must show in ``updated_at`` even when it comes within the second of the last one."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return max(now, dt.datetime.fromisoformat(previous) + dt.timedelta(seconds=1)).isoformat(timespec="seconds")


class Store:
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

    def insert(self, items: Sequence[NewMilestone]) -> Inserted:
        """All items in one transaction, with one created_at: they are one request's write.

        Ids are taken as AUTOINCREMENT would give them (one past the larger of the sequence and the largest id),
        so the rows go in with one executemany per table and the answer is rendered from what was written
        without reading it back: the sandbox should stay a small part of what an upload's benchmark measures."""
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
        return Inserted(now, ids, dict(zip((m for m, _ in with_reference), reference_ids, strict=True)))

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
        """The external references of these milestones, in id order."""
        with self._lock:
            return self._db.execute(
                "SELECT * FROM external_references WHERE subject_type = 'BillingMilestone'"
                " AND subject_id IN (SELECT value FROM json_each(?)) ORDER BY id",
                [json.dumps(milestone_ids)],
            ).fetchall()

    def _locked_row(self, milestone_id: int) -> sqlite3.Row | Literal["missing", "invoiced"]:
        """The milestone when it can still change; the caller holds the lock, so the answer stays true."""
        row: sqlite3.Row | None = self._db.execute(
            "SELECT * FROM billing_milestones WHERE id = ?", [milestone_id]
        ).fetchone()
        if row is None:
            return "missing"
        return "invoiced" if row["invoice_id"] is not None else row

    def update(self, milestone_id: int, changes: dict[str, Any]) -> sqlite3.Row | Literal["missing", "invoiced"]:
        """Set the UPDATABLE columns in `changes`, unless the milestone is gone or invoiced (checked under the
        same lock as the write, so an invoice cannot slip in between); the row as it is now, or why not.
        ``updated_at`` moves only when a value changes, as a Rails model's does."""
        with self._lock, self._db:
            row = self._locked_row(milestone_id)
            if isinstance(row, str):
                return row
            changed = {name: value for name, value in changes.items() if name in UPDATABLE and row[name] != value}
            if changed:
                assignments = ", ".join(f"{name} = ?" for name in changed)
                self._db.execute(
                    f"UPDATE billing_milestones SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608 - UPDATABLE names
                    [*changed.values(), _later(row["updated_at"]), milestone_id],
                )
            now: sqlite3.Row = self._db.execute(
                "SELECT * FROM billing_milestones WHERE id = ?", [milestone_id]
            ).fetchone()
            return now

    def delete(self, milestone_id: int) -> Literal["missing", "invoiced", "deleted"]:
        """Delete the milestone and its external references, unless it is gone or invoiced."""
        with self._lock, self._db:
            row = self._locked_row(milestone_id)
            if isinstance(row, str):
                return row
            self._db.execute("DELETE FROM external_references WHERE subject_id = ?", [milestone_id])
            self._db.execute("DELETE FROM billing_milestones WHERE id = ?", [milestone_id])
            return "deleted"

    def invoice(self, milestone_ids: Sequence[int], invoice_id: int, *, all_or_none: bool) -> list[int]:
        """Put these milestones on invoice `invoice_id`; the ids marked. With `all_or_none`, a missing id raises
        KeyError and marks none; without, missing ids are passed over (they may be created later)."""
        with self._lock, self._db:
            found = self._db.execute(
                "SELECT id FROM billing_milestones WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
                [json.dumps(list(milestone_ids))],
            ).fetchall()
            marked = [row[0] for row in found]
            missing = sorted(set(milestone_ids) - set(marked))
            if all_or_none and missing:
                raise KeyError(f"no billing milestone {', '.join(map(str, missing))} to invoice")
            self._db.execute(
                "UPDATE billing_milestones SET invoice_id = ? WHERE id IN (SELECT value FROM json_each(?))",
                [invoice_id, json.dumps(marked)],
            )
            return marked

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
