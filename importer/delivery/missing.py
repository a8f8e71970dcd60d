"""Milestones this importer created in the schedule's projects that no row of the schedule matches.

A schedule is the whole list for its projects: a milestone kantata-import created there (it carries the derived
key's service) that no row names, by id or by key, was removed from the schedule or edited out of its key. Both
a dry run and an upload list them after the plan; an upload deletes them only when told to, after its creates
and updates, and never one on an invoice (Kantata would refuse, and an invoice must not lose its line).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from importer.delivery.planner import Action, Step
from importer.errors import DeletionNotConfirmed, ImporterError, Interrupted
from importer.kantata import KantataClient, Milestone
from importer.outcomes import NotInSchedule

Confirm = Callable[[Sequence[NotInSchedule]], bool]


@dataclass(frozen=True, slots=True)
class DeleteMissing:
    """An upload's instruction to delete the milestones not in the schedule that are not on an invoice.

    `count`: how many the user expects; the deletion goes ahead only when exactly that many are found, else the
    upload stops before sending anything (`DeletionNotConfirmed`), as a script must not delete a list it never
    saw. Without it, `confirm` is asked with the list before anything is sent (a terminal's y/N); no means kept."""

    count: int | None = None
    confirm: Confirm | None = None


def find_missing(listed: Sequence[Milestone], steps: Sequence[Step]) -> list[NotInSchedule]:
    """The milestones of `listed` (this importer's in the schedule's projects, lowest id first: session.look_up)
    that no row of the plan's `steps` matches: by the id the row carries, by its key, or as the milestone its
    step names (planner.already_there, handover.py). The rows the plan creates give the hint that one of them is
    probably an edited row."""
    ids = {s.item.milestone_id for s in steps if s.item.milestone_id is not None}
    ids |= {s.milestone_id for s in steps if s.milestone_id is not None}
    keys = {s.item.key for s in steps}
    edited: dict[tuple[int, str], int] = {}
    for item in (s.item for s in steps if s.action is Action.CREATE):
        edited.setdefault((int(item.body["workspace_id"]), str(item.body.get("title", ""))), item.row)
    found: list[NotInSchedule] = []
    for milestone in listed:
        if milestone.id in ids or any(key in keys for key in milestone.keys) or milestone.workspace_id is None:
            continue
        fields = milestone.fields
        title = "" if fields.get("title") is None else str(fields["title"])
        row = edited.get((milestone.workspace_id, title))
        hint = (f"probably row {row} edited: put {milestone.id} in its billing_milestone_id to update it instead"
                if row is not None else "")  # fmt: skip
        cents = fields.get("amount_in_cents")
        date = fields.get("date_to_invoice")
        found.append(NotInSchedule(milestone.id, milestone.workspace_id, title, cents if isinstance(cents, int)
                                   else None, None if date is None else str(date), milestone.invoiced,
                                   hint))  # fmt: skip
    return found


def confirmed(missing: Sequence[NotInSchedule], delete: DeleteMissing | None, blocked: Sequence[int]) -> bool:
    """Whether to delete: asked for, no invalid row that may be one of them, and the count or the user agrees.
    A count that is not the one found raises `DeletionNotConfirmed` (before anything is sent)."""
    deletable = sum(not m.invoiced for m in missing)
    if delete is None or blocked or not deletable:
        return False
    if delete.count is not None:
        if delete.count != deletable:
            raise DeletionNotConfirmed(delete.count, deletable)
        return True
    return delete.confirm is not None and delete.confirm(missing)


def kept(missing: Sequence[NotInSchedule], delete: DeleteMissing | None, blocked: Sequence[int]) -> list[NotInSchedule]:
    """Each milestone's outcome when none is deleted, and why."""
    if delete is None:
        why = "kept: an upload with --delete-missing deletes it"
    elif blocked:
        shown = ", ".join(map(str, blocked[:5])) + (" ..." if len(blocked) > 5 else "")
        why = (f"kept: rows {shown} are invalid, and one of them may be this milestone's row; fix them, then run "
               "again to delete it")  # fmt: skip
    else:
        why = "kept: deletion not confirmed"
    return [replace(m, outcome="kept: on an invoice" if m.invoiced else why) for m in missing]


def delete_missing(
    client: KantataClient, missing: Sequence[NotInSchedule]
) -> tuple[list[NotInSchedule], ImporterError | None]:
    """DELETE each one not on an invoice, one at a time (a handful a month); the first reason to stop (Kantata
    unreachable, Ctrl-C) keeps the rest, which the same command run again finds still to delete."""
    done: list[NotInSchedule] = []
    stopped: ImporterError | None = None
    for m in missing:
        if m.invoiced:
            done.append(replace(m, outcome="kept: on an invoice"))
            continue
        if stopped is not None:
            done.append(replace(m, outcome=f"not deleted: {stopped}"))
            continue
        try:
            answer = client.remove(m.milestone_id)
        except ImporterError as exc:
            stopped = exc
        except KeyboardInterrupt:
            stopped = Interrupted()
        if stopped is not None:
            done.append(replace(m, outcome=f"not deleted: {stopped}"))
        elif answer.done or answer.status == 404:  # 404: already gone, which is what was asked
            done.append(replace(m, outcome="deleted"))
        else:
            words = "; ".join(str(e.get("message") or e) for e in answer.errors) or f"HTTP {answer.status}"
            done.append(replace(m, outcome=f"kept: Kantata refused to delete it: {words}"))
    return done, stopped
