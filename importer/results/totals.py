"""Amounts per project in exact integer cents, and their display in currency units.

Computed once per run and handed to the results workbook's Summary sheet, the terminal summary and `--json`, so
the three cannot disagree. Only integers: cents are summed as Python ints and shown in currency units by
integer division, never through a float.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import pandas as pd

from importer.outcomes import Outcome, Status
from importer.schedule import currency_decimals

# Statuses of rows that are, or (dry run) would be, in Kantata: `valid` occurs only in a dry run and
# `created` / `unchanged` only in an upload, so one sum serves both.
LANDED = (Status.VALID, Status.CREATED, Status.UNCHANGED, Status.UPDATE, Status.UPDATED)


@dataclass(frozen=True, slots=True)
class ProjectTotal:
    """One project's rows that passed validation: how many, and their cents, per status."""

    workspace_id: int
    rows: Counter[str]  # status -> rows
    cents: Counter[str]  # status -> sum of amount_in_cents
    currency: str | None = None  # ISO code when a look-up told it; None offline
    # The cents of the schedule's milestones in Kantata before the plan and after it (an online dry run's plan:
    # delivery.in_kantata); None when not asked.
    kantata: tuple[int, int] | None = None

    @property
    def landed_rows(self) -> int:
        """Rows created or already in Kantata (upload), or that would be created (dry run)."""
        return sum(self.rows[s.value] for s in LANDED)

    @property
    def landed_cents(self) -> int:
        return sum(self.cents[s.value] for s in LANDED)

    @property
    def total_cents(self) -> int:
        return sum(self.cents.values())


def project_totals(
    amounts: pd.DataFrame,
    outcomes: Mapping[int, Outcome],
    currencies: Mapping[int, str] | None = None,
    kantata: Mapping[int, tuple[int, int]] | None = None,
) -> list[ProjectTotal]:
    """Per project, from the valid rows' `workspace_id` and `amount_in_cents` (indexed by row) and their outcomes;
    `kantata`: the plan's before and after (ProjectTotal.kantata), per project."""
    import pandas as pd  # here, not at the top: the CLI imports this module before it needs pandas

    rows: dict[int, Counter[str]] = defaultdict(Counter)
    cents: dict[int, Counter[str]] = defaultdict(Counter)
    frame = amounts[["workspace_id", "amount_in_cents"]].dropna()
    # The Status itself (a str), not `.value`: an enum property read per row is a large share of this step.
    by_row = [o.status if (o := outcomes.get(r)) else None for r in frame.index.tolist()]
    frame = frame.assign(status=pd.Series(by_row, index=frame.index, dtype=object)).dropna(subset=["status"])
    # Grouped in pandas, not row by row: this runs over every row of the file. Its int64 sums are exact while
    # no sum can pass 2**63 (rows x the largest amount); past that they wrap silently (two rows of 5e18 cents
    # would sum to -8.4e18), so such a frame is summed as Python ints instead.
    largest = int(frame["amount_in_cents"].abs().max()) if len(frame) else 0
    if largest * len(frame) >= 2**63:
        frame = frame.assign(amount_in_cents=frame["amount_in_cents"].map(int).astype(object))
    grouped = frame.groupby(["workspace_id", "status"])["amount_in_cents"]
    for key, total in grouped.sum().items():
        workspace, status = cast(tuple[int, str], key)
        cents[int(workspace)][str(status)] += int(total)
    for key, n in grouped.size().items():
        workspace, status = cast(tuple[int, str], key)
        rows[int(workspace)][str(status)] += int(n)
    known, planned = currencies or {}, kantata or {}
    return [ProjectTotal(w, rows[w], cents[w], known.get(w), planned.get(w)) for w in sorted(rows)]


def decimals_for(currency: str | None, default: int) -> int:
    """The currency's decimal places when it is known, else what the user said (--currency-decimals)."""
    if currency is None:
        return default
    return currency_decimals(currency)


def format_units(cents: int, decimals: int) -> str:
    """Integer subunits as currency units with thousands separators: 123456, 2 -> "1,234.56". Exact."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 10**decimals)
    return f"{sign}{whole:,}" + (f".{frac:0{decimals}d}" if decimals else "")
