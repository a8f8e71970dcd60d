"""The plan's totals (delivery/planner.py `in_kantata`): what the schedule's milestones add up to in Kantata now and
once the plan is carried out, per project, in exact cents."""

from __future__ import annotations

from importer.delivery.planner import Action, Step, in_kantata
from importer.kantata import ImportKey, Item, Milestone


def _step(row: int, action: Action, cents: int, old: int | None, project: int = 1001) -> Step:
    item = Item(row, ImportKey.derived_from(f"ki1-{row:024x}"), {"workspace_id": project, "amount_in_cents": cents})
    held = None if old is None else Milestone(str(700000 + row), project, {"amount_in_cents": old}, invoiced=False)
    return Step(item, action, held)


def test_creates_add_updates_replace_and_conflicts_and_blocked_rows_stay_as_they_are() -> None:
    steps = [
        _step(2, Action.CREATE, 100, None),
        _step(3, Action.UPDATE, 250, 200),
        _step(4, Action.UNCHANGED, 300, 300),
        _step(5, Action.CONFLICT, 999, 400),  # on an invoice: stays at 400
        _step(6, Action.CONFLICT, 999, None),  # its id deleted in Kantata: nothing there, nothing after
        _step(7, Action.UPDATE, 1, 500),  # blocked by an error found online: not sent, stays at 500
        _step(8, Action.CREATE, 7, None),  # blocked: not created
        _step(9, Action.UNCHANGED, 11, None, project=1004),  # found by key only (its fields not read): as it is
        Step(
            Item(10, ImportKey.derived_from("ki1-" + "a" * 24), {"workspace_id": 1004, "amount_in_cents": 5}),
            Action.UNCHANGED,
            Milestone("9", None, {}, invoiced=False),
        ),  # fmt: skip
    ]
    assert in_kantata(steps, blocked={7, 8}) == {1001: (200 + 300 + 400 + 500, 100 + 250 + 300 + 400 + 500),
                                                 1004: (16, 16)}  # fmt: skip
    assert in_kantata([]) == {}


def test_a_conflict_with_a_milestone_of_another_project_counts_in_that_projects_currency() -> None:
    """A row of project 1001 (USD) naming a milestone of project 1004 (yen): its 50,000 yen are not dollars."""
    item = Item(2, ImportKey.derived_from("ki1-" + "b" * 24), {"workspace_id": 1001, "amount_in_cents": 999})
    held = Milestone("700005", 1004, {"amount_in_cents": 50000}, invoiced=False)
    assert in_kantata([Step(item, Action.CONFLICT, held), _step(3, Action.UNCHANGED, 100, 100)]) == {
        1001: (100, 100), 1004: (50000, 50000)}  # fmt: skip
