"""What happened to each row: the value that travels from the uploader to the report."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(enum.StrEnum):
    VALID = "valid"  # dry run: passed every check and would be sent
    CREATED = "created"  # Kantata created it; milestone_id holds the new id
    UNCHANGED = "unchanged"  # already in Kantata with these values (same id or key); nothing was sent
    UPDATE = "update"  # dry run: in Kantata with other values, not invoiced; an upload changes it in place
    UPDATED = "updated"  # was in Kantata with other values; changed in place (PUT)
    CONFLICT = "conflict"  # cannot be applied as it stands (invoiced, deleted, another project, a key on two)
    INVALID = "invalid"  # failed local validation; nothing was sent
    REJECTED = "rejected"  # Kantata refused it; errors hold Kantata's message
    NOT_SENT = "not_sent"  # the run stopped before this row was sent; safe to re-run


FAILED = frozenset({Status.INVALID, Status.REJECTED, Status.CONFLICT})


@dataclass(frozen=True, slots=True)
class Outcome:
    row: int  # spreadsheet row number, the identity every stage carries
    status: Status
    milestone_id: str | None = None
    errors: tuple[str, ...] = field(default_factory=tuple)
    changes: tuple[str, ...] = field(default_factory=tuple)  # "field: old -> new", for updates and conflicts


@dataclass(frozen=True, slots=True)
class NotInSchedule:
    """A milestone this importer created in one of the schedule's projects that no row of the schedule matches
    (by id or by key). Listed, never deleted unless the user asks; `outcome` says what an upload did with it."""

    milestone_id: str
    workspace_id: int
    title: str
    amount_in_cents: int | None
    date_to_invoice: str | None  # ISO text, as Kantata gives it
    invoiced: bool
    hint: str = ""  # a create row with the same project and title: how to make it an update instead
    outcome: str = ""  # upload only: "deleted", or why it was kept
