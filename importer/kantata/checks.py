"""Validated rows against what Kantata has: the online half of `kantata-import validate --online`.

One job: compare the rows that passed the offline checks with Kantata, reading only (GETs), and say what each
difference means for a row, as `CellIssue`s placed at the Excel row and column letter. The look-ups themselves
are the client's (`only=` with 200 ids a request, every page read, cached for the run).

- Rows an earlier run created (found by their import key) are `unchanged`, with their id, and not checked further:
  nothing would be sent for them.
- Every Project ID must be a project the token can see. Kantata answers a miss by leaving it out, so "no such
  project", "archived" and "the token's user is not on it" look the same and get one message.
- Every Task ID must be a task the token can see, of the row's own project.
- Amounts must fit the project's currency (0 decimals for JPY, 3 for KWD): an Amount column in currency units
  must not have more decimals than the currency, and must have been converted with the currency's decimals.
  Kantata gives `currency` only to users with financial access; without it, a note says the check was skipped.

Rows that repeat another row's project, title, amount and date are warned about (`duplicate_rows`); that needs no
Kantata, so the offline dry run does it too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd

from importer.errors import CellIssue
from importer.kantata.client import KantataClient, StoryInfo, WorkspaceInfo
from importer.schedule import (
    BY_NAME,
    CellProblem,
    ParseOptions,
    RawSchedule,
    as_text,
    currency_decimals,
    currency_marks,
    is_blank,
    mark_fits,
    parse_amount,
    subunit,
)

_SAME = ("workspace_id", "title", "amount_in_cents", "date_to_invoice")  # what makes two rows look like one


@dataclass(slots=True)
class OnlineCheck:
    """What Kantata said about the rows: problems, rows already there (row -> milestone id), notes for the run."""

    issues: list[CellIssue] = field(default_factory=list)
    existing: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    currencies: dict[int, str] = field(default_factory=dict)  # project -> ISO code, where Kantata told it


def check_online(
    raw: RawSchedule,
    rows: pd.DataFrame,
    client: KantataClient,
    options: ParseOptions,
    *,
    known: Mapping[int, str],
) -> OnlineCheck:
    """Compare the valid rows (indexed by Excel row) with Kantata. `known`: the rows already in Kantata as they
    stand (row -> milestone id), as the plan's look-up found them (delivery/session.look_up)."""
    result = OnlineCheck(existing=dict(known))
    todo = rows.loc[~rows.index.isin(list(result.existing))]
    # Every row's project, not only those of the rows still to check: the results show each amount, and the plan's
    # totals, in its project's currency, and a row already in Kantata is shown too.
    workspaces = client.workspaces(int(w) for w in rows["workspace_id"]) if len(rows) else {}
    story_ids = todo["story_id"].dropna()
    stories = client.stories(int(s) for s in story_ids) if len(story_ids) else {}
    result.issues += _workspace_issues(raw, todo, workspaces)
    result.issues += _story_issues(raw, todo, workspaces, stories)
    unplaced = sorted(s.id for s in stories.values() if s.workspace_id is None)
    if unplaced:
        listed = ", ".join(map(str, unplaced))
        result.notes.append(f"Kantata did not say which project task {listed} belongs to: not checked")
    result.issues += amount_issues(raw, todo, workspaces, options)
    result.notes += _currency_notes(raw, todo, workspaces)
    result.currencies = {w: info.currency for w, info in workspaces.items() if info.currency}
    return result


def duplicate_rows(raw: RawSchedule, rows: pd.DataFrame) -> list[CellIssue]:
    """A warning on each row with the same project, title, amount and date as an earlier one.

    Both become milestones (the import key counts occurrences), which is right for two equal instalments and
    wrong for a row pasted twice; only the user knows which, so it is a warning, not an error."""
    letter = raw.fields.get("title")
    header = raw.header_of(letter) if letter else BY_NAME["title"].label
    same_columns = rows[list(_SAME)]
    involved = same_columns[same_columns.duplicated(keep=False)]  # vectorised: only repeated rows reach the loop
    first: dict[tuple[Any, ...], int] = {}
    issues: list[CellIssue] = []
    for row, *values in involved.itertuples(name=None):
        same = tuple(None if pd.isna(v) else v for v in values)
        if same not in first:
            first[same] = int(row)
            continue
        issues.append(CellIssue(
            int(row), letter, header, str(same[1]), "duplicate-row",
            f"same project, title, amount and date as row {first[same]}: both would be created, as two "
            "milestones; delete this row if it is a copy", severity="warning",
        ))  # fmt: skip
    return issues


def _cells(rows: pd.DataFrame, name: str) -> Iterator[tuple[int, int, Any]]:
    """(Excel row, the row's workspace id, the typed value of `name`) for each row."""
    for row, workspace, value in zip(rows.index, rows["workspace_id"], rows[name], strict=True):
        yield int(row), int(workspace), value


def _issue(raw: RawSchedule, row: int, name: str, code: str, message: str) -> CellIssue:
    """An issue on the cell of field `name` in `row`, its message led by the user's own header text."""
    letter = raw.fields[name]
    header = raw.header_of(letter)
    return CellIssue(row, letter, header, as_text(raw.frame.at[row, letter]), code, f"{header}: {message}")


def _workspace_issues(raw: RawSchedule, rows: pd.DataFrame, workspaces: Mapping[int, WorkspaceInfo]) -> list[CellIssue]:
    return [
        _issue(raw, row, "workspace_id", "workspace-not-found",
               f"Kantata has no project {workspace} that this token can see (no such id, an archived project, or "
               "the token's user is not on it); check the id (kantata-import template --online lists the projects "
               "you can see)")
        for row, workspace, _ in _cells(rows, "workspace_id")
        if workspace not in workspaces
    ]  # fmt: skip


def _story_issues(
    raw: RawSchedule, rows: pd.DataFrame, workspaces: Mapping[int, WorkspaceInfo], stories: Mapping[int, StoryInfo]
) -> list[CellIssue]:
    """Unknown tasks, and tasks of another project; rows whose project is unknown already have their issue."""
    issues: list[CellIssue] = []
    for row, workspace, story in _cells(rows, "story_id"):
        if pd.isna(story) or workspace not in workspaces:
            continue
        info = stories.get(int(story))
        if info is None:
            issues.append(_issue(raw, row, "story_id", "story-not-found",
                                 f"Kantata has no task {story} that this token can see (no such id, or an "
                                 "archived, deleted or to-do task, which Kantata hides); check the id"))  # fmt: skip
        elif info.workspace_id is not None and info.workspace_id != workspace:
            message = (f'task {story} ("{info.title}") belongs to project {info.workspace_id}, not to '
                       f"project {workspace} of this row; use a task of project {workspace}, or correct the "
                       "Project ID")  # fmt: skip
            issues.append(_issue(raw, row, "story_id", "story-in-other-workspace", message))
    return issues


def amount_issues(
    raw: RawSchedule, rows: pd.DataFrame, workspaces: Mapping[int, WorkspaceInfo], options: ParseOptions
) -> list[CellIssue]:
    """An Amount in currency units must fit the currency of the row's project: be in it, when the cell names a
    currency ("EUR 5.00" in a USD project would be billed as 5.00 USD), and have been read with its decimals
    (1500 read with --currency-decimals 2 is 150000 subunits, which in yen is 100 times too much). Only rows
    that can fail are looked at: those naming a currency, and those of projects whose currency has other
    decimals than the ones read with.

    A project whose currency Kantata withholds (it gives it only to users with financial access) cannot be
    checked: its Amounts are refused unless the user chose the decimals (`currency_decimals_given`), and those
    naming a currency always, since 5000 read with the default 2 decimals is 500,000 yen in a yen project and
    "EUR 10.00" is 10.00 of whatever the project bills in. An Amount (cents) column needs no currency."""
    letter = raw.fields.get("amount")
    if letter is None:
        return []
    read_with = options.currency_decimals
    other = {w for w, info in workspaces.items() if info.currency and currency_decimals(info.currency) != read_with}
    hidden = {w for w, info in workspaces.items() if not info.currency}
    cells = raw.frame.loc[rows.index, letter].tolist()
    issues: list[CellIssue] = []
    for (row, workspace, cents), cell in zip(_cells(rows, "amount_in_cents"), cells, strict=True):
        if workspace in hidden and not is_blank(cell):
            if problem := _unchecked(cell, workspace, options):
                issues.append(_issue(raw, row, "amount", "amount-currency-unknown", problem))
            continue
        marks = currency_marks(cell)
        project = workspaces.get(workspace)
        if (workspace not in other and not marks) or is_blank(cell) or project is None or project.currency is None:
            continue
        currency, decimals = project.currency, currency_decimals(project.currency)
        if wrong := sorted(m for m in marks if not mark_fits(m, currency)):
            issues.append(_issue(raw, row, "amount", "amount-in-other-currency",
                                 f"{as_text(cell)} is written in {' '.join(wrong)}, but project {workspace} is in "
                                 f"{currency}, and Kantata bills the number in the project's currency; enter the "
                                 f"amount in {currency} (or check the Project ID)"))  # fmt: skip
            continue
        if workspace not in other:
            continue
        where = f"project {workspace} is in {currency}, which {_has(decimals)}"
        try:
            meant = parse_amount(cell, decimals)
        except CellProblem:
            issues.append(_issue(raw, row, "amount", "amount-decimals-for-currency",
                                 f"{as_text(cell)} has more decimals than {currency} allows: {where}; enter the "
                                 "amount as Kantata will bill it (nothing is rounded)"))  # fmt: skip
            continue
        if meant != int(cents):
            billed = f"{Decimal(int(cents)).scaleb(-decimals):,.{decimals}f} {currency}"
            issues.append(_issue(raw, row, "amount", "amount-read-with-other-decimals",
                                 f"{as_text(cell)} was read as {int(cents)} subunits (--currency-decimals "
                                 f"{options.currency_decimals}), but {where}: it would be billed as {billed}, not "
                                 f"{as_text(cell)} {currency} ({meant} subunits); run again with --currency-decimals "
                                 f"{decimals}, or give this project's amounts in an Amount (cents) column when the "
                                 "schedule mixes currencies"))  # fmt: skip
    return issues


def _unchecked(cell: object, workspace: int, options: ParseOptions) -> str | None:
    """Why an Amount of a project whose currency Kantata did not give cannot be sent, if it cannot."""
    why = (f"Kantata did not give the currency of project {workspace} (it does only to users with financial "
           "access to the project)")  # fmt: skip
    if marks := sorted(currency_marks(cell)):
        return (f"{as_text(cell)} is written in {' '.join(marks)}, but {why}, so whether it bills in that "
                "currency cannot be checked; give the amount without a currency once you have checked it, or in "
                "an Amount (cents) column")  # fmt: skip
    if not options.currency_decimals_given:
        return (f"{why}, so how many decimals it has is not known (JPY has none, KWD 3): pass --currency-decimals "
                "with that currency's decimals (2 for USD, EUR, GBP), or give the amount in an Amount (cents) "
                "column")  # fmt: skip
    return None


def _has(decimals: int) -> str:
    return "has no subunits" if decimals == 0 else f"has {decimals} decimals"


def _currency_notes(raw: RawSchedule, rows: pd.DataFrame, workspaces: Mapping[int, WorkspaceInfo]) -> list[str]:
    """What the cents mean where they are not hundredths, and which projects' currencies Kantata withheld."""
    notes: list[str] = []
    cents_letter = raw.fields.get("amount_in_cents")
    label = raw.header_of(cents_letter) if cents_letter else BY_NAME["amount_in_cents"].label
    amount_letter = raw.fields.get("amount")
    example: dict[int, tuple[int, int]] = {}  # workspace -> its first row with cents typed in, and the cents
    for row, workspace, cents in _cells(rows, "amount_in_cents"):
        if amount_letter is None or is_blank(raw.frame.at[row, amount_letter]):
            example.setdefault(workspace, (row, int(cents)))
    for workspace, (row, cents) in sorted(example.items()):
        project = workspaces.get(workspace)
        if project is None or project.currency is None or (decimals := currency_decimals(project.currency)) == 2:
            continue
        code = project.currency
        shown = f"{Decimal(cents).scaleb(-decimals):,.{decimals}f} {code}"
        notes.append(f'project {workspace} ("{project.title}") is in {code}, which {_has(decimals)}: '
                     f"its {label} values count {subunit(code)} (row {row}: {cents} is {shown})")  # fmt: skip
    return notes + withheld_currencies(rows, workspaces)


def withheld_currencies(rows: pd.DataFrame, workspaces: Mapping[int, WorkspaceInfo]) -> list[str]:
    """A note naming the projects whose currency Kantata did not give: their amounts could not be checked."""
    projects = rows["workspace_id"].astype(int).unique().tolist()
    hidden = sorted(w for w in projects if w in workspaces and not workspaces[w].currency)
    if not hidden:
        return []
    listed = ", ".join(map(str, hidden))
    return [f"Kantata did not give the currency of project {listed} (it does only to users with financial access "
            "to a project): amounts there were not checked against their currency"]  # fmt: skip
