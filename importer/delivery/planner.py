"""The plan of an upload: each row created, updated in place, left as it is, or a conflict; the creates in
batches of at most `batch_size`."""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from importer.kantata import ImportKey, Item, Milestone, changes


@dataclass(slots=True)
class Plan:
    rows: list[int]  # the rows to send (not found in Kantata), in file order
    items: Iterable[Item]  # their items, in the same order: a list, or built while the first batches are sent
    existing: dict[int, str]  # row -> milestone id, for rows an earlier run created
    batch_size: int

    def batches(self) -> Iterator[list[Item]]:
        batch: list[Item] = []
        for item in self.items:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def plan(items: Sequence[Item], existing: Mapping[ImportKey, str], *, batch_size: int) -> Plan:
    """Drop the rows Kantata already has; the rest go out in file order, `batch_size` at a time."""
    found = {item.row: existing[item.key] for item in items if item.key in existing}
    to_send = [item for item in items if item.row not in found]
    return Plan(rows=[i.row for i in to_send], items=to_send, existing=found, batch_size=batch_size)


class Action(enum.StrEnum):
    """What an upload does with a row that Kantata may already hold."""

    CREATE = "create"
    UPDATE = "update"  # its milestone exists with other values and is not invoiced: changed in place
    UNCHANGED = "unchanged"  # its milestone exists with these values: nothing is sent
    CONFLICT = "conflict"  # cannot be applied as it stands: nothing is sent, `reason` says why


@dataclass(frozen=True, slots=True)
class Step:
    item: Item
    action: Action
    milestone: Milestone | None = None
    changes: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    reason: str = ""
    copies: tuple[str, ...] = ()  # this import's own copies of the milestone, deleted before sending
    note: str = ""  # said in the row's outcome once the step is carried out (why an update was found late)

    def copies_note(self, deleted: bool | None) -> str:
        """What the results say of `copies`: deleted by the upload, not deleted (Kantata refused), or None: to be
        deleted by an upload (a dry run)."""
        end = {None: "is deleted by the upload", True: "was deleted", False: "could not be deleted (delete it in "
               "Kantata)"}[deleted]  # fmt: skip
        return (f"an interrupted run of this upload and another upload both created this row: milestone "
                f"{self.milestone_id} is kept, and this upload's copy {', '.join(self.copies)} {end}")  # fmt: skip

    @property
    def milestone_id(self) -> str | None:
        """The milestone's id, else the one the row carries (deleted in Kantata): the results keep it, so that
        the row fed back in is the same conflict again instead of a silent create."""
        return self.milestone.id if self.milestone is not None else self.item.milestone_id


def living_plan(
    items: Sequence[Item],
    by_id: Mapping[str, Milestone],
    by_key: Mapping[ImportKey, Sequence[Milestone]],
    settled: Mapping[ImportKey, str] | None = None,
    *,
    handed: Mapping[int, Milestone] | None = None,
    listed: Sequence[Milestone] = (),
    mark: str = "",
) -> list[Step]:
    """Each row's step. A row is its milestone by id when it carries one, else by its key (the user's own
    external reference, or the derived one). Nothing is changed that is on an invoice, that Kantata no longer has,
    that sits in another project than the row names, or whose key two milestones hold: those are conflicts.
    `settled`: keys found by id only, after waiting for an interrupted run's requests; that run sent these very
    rows, so they are unchanged. `handed`: row -> the milestone an interrupted run made for it before it was
    edited (handover.py). `listed`: this importer's milestones in the rows' projects (`already_there`). `mark`:
    what an interrupted run of this import wrote in what it made (Journal.mark): a key held twice only because
    that run made a copy beside another upload's milestone is that milestone, and the copy is deleted."""
    steps = [_step(item, by_id, by_key, settled or {}, handed or {}, mark) for item in items]
    return already_there(steps, listed) if listed else steps


def _step(
    item: Item,
    by_id: Mapping[str, Milestone],
    by_key: Mapping[ImportKey, Sequence[Milestone]],
    settled: Mapping[ImportKey, str],
    handed: Mapping[int, Milestone],
    mark: str,
) -> Step:
    if item.milestone_id is not None:
        found = by_id.get(item.milestone_id)
        if found is None:
            return Step(item, Action.CONFLICT, reason=f"milestone {item.milestone_id} is not in Kantata (deleted "
                        "there?): clear its id to create it again, or remove the row")  # fmt: skip
        return _compare(item, found)
    held = by_key.get(item.key, ())
    if not held and item.key in settled:
        return Step(item, Action.UNCHANGED, Milestone(settled[item.key], None, {}, invoiced=False))
    if not held and item.row in handed:
        return _compare(item, handed[item.row])
    if not held:
        return Step(item, Action.CREATE)
    if len(held) > 1:
        kept, *extra = held
        if all(m.made_by(mark) and not m.invoiced for m in extra):  # as converge.py keeps the oldest
            return replace(_compare(item, kept), copies=tuple(m.id for m in extra))
        return _held_twice(item, held)
    return _compare(item, held[0])


def _held_twice(item: Item, held: Sequence[Milestone]) -> Step:
    """A key that several milestones hold (a copy made by hand, or by another tool) is a conflict naming them all:
    neither is created again nor changed, since which one the row means is for a person to say. The step names no
    milestone, so that the results fed back in are the same conflict again until one is left."""
    kept, *extra = held  # lowest id first: the oldest, which an upload that finds its own copy keeps (converge.py)
    ids, others = ", ".join(m.id for m in held), ", ".join(m.id for m in extra)
    return Step(item, Action.CONFLICT, reason=f"external reference {item.key} is held by {len(held)} milestones "
                f"({ids}): delete {others} in Kantata to keep the oldest ({kept.id}), then run again; or put the "
                "id of the one to keep in this row's billing_milestone_id")  # fmt: skip


def _compare(item: Item, found: Milestone) -> Step:
    project = int(item.body["workspace_id"])
    if found.workspace_id is not None and found.workspace_id != project:
        reason = (f"milestone {found.id} belongs to project {found.workspace_id}, not {project}; Kantata cannot "
                  "move a milestone between projects")  # fmt: skip
        return Step(item, Action.CONFLICT, found, reason=reason)
    changed = changes(found, item.body)
    if not changed:
        return Step(item, Action.UNCHANGED, found)
    if found.invoiced:
        return Step(item, Action.CONFLICT, found, changed, reason=f"milestone {found.id} is on an invoice and "
                    f"cannot be changed (the row would change {', '.join(changed)})")  # fmt: skip
    return Step(item, Action.UPDATE, found, changed)


def in_kantata(steps: Sequence[Step], blocked: Collection[int] = ()) -> dict[int, tuple[int, int]]:
    """Per project, the cents of the milestones the rows match in Kantata before the plan is carried out and after:
    a create adds its row's amount, an update replaces the old amount with the row's, and a conflict, or a row
    `blocked` by an error found online, leaves its milestone's as it is, counted in the milestone's own project
    (a row may name another). A key held by two milestones is a conflict naming neither: counted in neither.
    Integers only."""
    totals: dict[int, list[int]] = {}
    for step in steps:
        project = int(step.item.body["workspace_id"])
        new = int(step.item.body["amount_in_cents"])
        held = step.milestone.fields.get("amount_in_cents") if step.milestone is not None else None
        old = int(held) if held is not None else (new if step.action is Action.UNCHANGED else None)
        home = step.milestone.workspace_id if step.milestone is not None else None
        before = totals.setdefault(project if home is None else home, [0, 0])
        if old is not None:
            before[0] += old
        if step.action in (Action.CREATE, Action.UNCHANGED, Action.UPDATE) and step.item.row not in blocked:
            totals.setdefault(project, [0, 0])[1] += new
        elif old is not None:
            before[1] += old
    return {workspace: (now, after) for workspace, (now, after) in totals.items()}


def already_there(steps: Sequence[Step], listed: Sequence[Milestone]) -> list[Step]:
    """Rows to create, known by a derived key, whose values a milestone of this importer in their project holds
    under a key no row carries: that milestone, unchanged. It was updated in place after it was created (from a
    row edited since, handover.py, or one fed back in with its id), and its external reference still holds the
    old key, whether or not Kantata moves it on a PUT: created again, the row would be there twice. Each such
    milestone is one row's, taken in file order."""
    keys = {s.item.key for s in steps}
    taken = {s.milestone_id for s in steps if s.milestone_id is not None}
    free: dict[tuple[int, str], list[Milestone]] = {}
    for m in sorted(listed, key=lambda m: m.sort_id):
        if m.id not in taken and m.workspace_id is not None and not any(k in keys for k in m.keys):
            free.setdefault((m.workspace_id, str(m.fields.get("title"))), []).append(m)
    if not free:
        return list(steps)
    out: list[Step] = []
    for step in steps:
        item = step.item
        if step.action is Action.CREATE and item.key.derived:
            spot = free.get((int(item.body["workspace_id"]), str(item.body.get("title"))), [])
            same = next((m for m in spot if not changes(m, item.body)), None)
            if same is not None:
                spot.remove(same)
                step = Step(item, Action.UNCHANGED, same)
        out.append(step)
    return out
