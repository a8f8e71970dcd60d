"""Milestones an interrupted run created for rows edited since: found, and updated from their rows.

A row without an id or its own external reference is known by a key derived from its values (kantata/keys.py),
so editing it gives it another key. Edited after a finished run, the row is a new milestone and the old one is
listed as not in the schedule: the results workbook holds its id, and fed back in, the edit is an update. But a
run killed mid-upload writes no workbook, and its journal belongs to the schedule as it was; the next run of the
edited schedule reads it (`Journal.earlier`; a dry run, `read_previous`, to show the same plan): each milestone
that run created whose key no row carries now is the milestone of the row at the same place, if that row names
the same project and is known by a derived key. That row then updates it, rather than creating a second one.
Any other (the row removed, or moved as well as edited) is listed as not in the schedule, as after a finished
run.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from importer.delivery.journal import Earlier
from importer.kantata import ImportKey, Item, KantataClient, Milestone


def hand_over(
    client: KantataClient,
    earlier: Sequence[Earlier],
    items: Sequence[Item],
    found: Collection[ImportKey],
    say: Callable[[str], None],
) -> dict[int, Milestone]:
    """Row -> the milestone an interrupted run of an earlier version (`earlier`, newest first) created for the
    row at its place, which it now updates. `found`: the keys of `items` Kantata holds; such a row is its own
    milestone already. Says once what it found."""
    keys = {i.key for i in items}
    ids = {i.milestone_id for i in items if i.milestone_id is not None}
    sent = [(row, key, mid) for group in earlier for row, key, mid in group.sent if key not in keys]
    if not sent:
        return {}
    by_key = client.find_milestones({key for _, key, _ in sent if key is not None})
    by_id = client.milestones({mid for _, key, mid in sent if key is None and mid is not None})
    at = {i.row: i for i in items}
    handed: dict[int, Milestone] = {}
    theirs: set[str] = set()  # ids of the milestones they made that no row carries
    for row, key, mid in sent:
        held = by_key.get(key, []) if key is not None else [m for m in (by_id.get(mid or ""),) if m is not None]
        if len(held) != 1:  # none (never written, or deleted since), or two: a conflict for the plan to name
            continue
        milestone = held[0]
        if milestone.id in ids or any(k in keys for k in milestone.keys) or milestone.id in theirs:
            continue
        theirs.add(milestone.id)
        item = at.get(row)
        if (
            item is not None
            and row not in handed
            and item.milestone_id is None
            and item.key.derived
            and item.key not in found
            and (key is None or key.derived)
            and milestone.workspace_id == int(item.body["workspace_id"])
        ):
            handed[row] = milestone
    if theirs:
        rest = len(theirs) - len(handed)
        say(f"an interrupted run of an edited version of this schedule created {len(theirs)} milestones for rows "
            f"that read otherwise now: {len(handed)} rows edited since are updates of them"
            + (f", {rest} are listed as not in this schedule" if rest else ""))  # fmt: skip
    return handed
