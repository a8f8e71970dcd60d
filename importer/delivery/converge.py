"""After creating: one milestone per row, even when another upload sent the same rows at the same time.

The ledger and the lock keep two uploads from one state folder apart; two machines (two colleagues, two CI jobs,
a laptop and a server) share nothing but Kantata. Both may then look a row's key up, find nothing, and create it.
The rule that makes them agree without talking: once its sending is over, an upload looks up the keys it created
whenever Kantata shows that someone else wrote in these projects meanwhile; of the milestones holding one key the
lowest id (the oldest) is kept, and each upload deletes only its own other copies (the ids it was given, and any
milestone carrying its mark: an answer lost during the race hides which copy it made). Both runs pick the same one, so
the schedule ends with one milestone per row and both results name it. That needs each key's milestones read
at one moment (KantataClient.find_milestones): the other upload may be deleting its copies during the look-up,
and a look-up read page by page would skip the milestones a deletion moved onto a page already read.

Deleting only its own copies is what lets the count below be trusted: a run that deleted another's copy could
balance, in that other run's count, a milestone it created, and the other run would never look and would name
a deleted id. When each deletes its own, a copy left by the other always shows in the count of the one that must
delete.

Telling "someone else wrote" costs one count per 100 projects before and after the sending (derived keys only:
the user's own references are not counted, so the keys of those rows are always looked up again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from importer.kantata import Item, KantataClient, Milestone
from importer.outcomes import Outcome, Status


@dataclass(frozen=True, slots=True)
class Converged:
    """The rows held more than once (their outcomes name the id kept), and the ids deleted, each with the id kept."""

    outcomes: list[Outcome]
    removed: dict[str, str]


def others_wrote(before: int | None, after: int | None, created: int) -> bool:
    """Whether the projects' count of this importer's milestones moved by other than what this run created
    (unknown counts say yes: the look-up is then made)."""
    return before is None or after is None or after != before + created


def converge(
    client: KantataClient, created: Mapping[int, tuple[Item, str]], *, every_key: bool, run: str = ""
) -> Converged:
    """Look up the keys of the rows this run created (`created`: row -> its item and the id Kantata gave), all of
    them with `every_key`, else those the projects' count does not cover; where a key is held more than once, keep
    the lowest id and delete this run's copies that are not that one: the id it recorded, and any milestone
    carrying its mark `run` (a retry after a lost answer may have made two)."""
    wanted = [(item, mid) for item, mid in created.values() if every_key or not item.key.derived]
    if not wanted:
        return Converged([], {})
    found = client.find_milestones(item.key for item, _ in wanted)
    copies = [(item, mid, held) for item, mid in wanted if len(held := found.get(item.key, [])) > 1]
    removals = {m.id: held[0].id for _, mid, held in copies for m in held[1:] if _removable(m, mid, run)}
    kept = remove_copies(client, list(removals))
    outcomes: list[Outcome] = []
    for item, mid, held in copies:
        keep = held[0].id
        mine = [m.id for m in held[1:] if m.id == mid or m.made_by(run)]
        others = [m.id for m in held[1:] if m.id not in mine]
        note = f"another upload created this row at the same time: milestone {keep} is kept"
        if mid == keep or not mine:
            note += f"; the other upload deletes its copy {', '.join(others)}" if others else ""
        if mine and all(i in removals and i not in kept for i in mine):
            note += f"; this upload's copy {', '.join(mine)} was deleted"
        elif mine:
            note += f"; this upload's copy {', '.join(mine)} could not be deleted (delete it in Kantata)"
        status = Status.CREATED if mid == keep else Status.UNCHANGED
        outcomes.append(Outcome(item.row, status, keep, (note,)))
    return Converged(outcomes, {i: k for i, k in removals.items() if i not in kept})


def _removable(milestone: Milestone, mid: str, run: str) -> bool:
    """This run's copy (its recorded id, or its mark), unless it is already on an invoice (then it is not only a
    copy: kept, and reported)."""
    return (milestone.id == mid or milestone.made_by(run)) and not milestone.invoiced


def remove_copies(client: KantataClient, ids: Sequence[str]) -> set[str]:
    """DELETE each copy, and return those Kantata kept. One already gone answers 404, which is as good."""
    if not ids:
        return set()
    with ThreadPoolExecutor(max(1, min(client.settings.concurrency, len(ids))), "kantata-delete") as pool:
        answers = list(pool.map(client.remove, ids))
    return {i for i, answer in zip(ids, answers, strict=True) if not (answer.done or answer.status == 404)}
