"""The second month of a living schedule: last month's results workbook, a tenth of its rows edited, loaded again.

    .venv/bin/python -m benchmarks.month2                  # 20,000 rows, 10 % edited, 100 ms per request
    .venv/bin/python -m benchmarks.month2 --rows 2000      # a quick look

Month one uploads the generated schedule (benchmarks/generate.py, csv) to a sandbox in this process with no
latency. Its results workbook, with every 10th row's amount, date or title changed in turn, is month two's
schedule, uploaded with `latency` from each request's arrival to its answer (the sandbox's work done meanwhile).
Printed: the requests made by kind against the least a correct upload must make, and the time against the floor
that least number of requests sets. The least: the listing of this importer's milestones in the schedule's
projects, 200 a page (every row's milestone is there, and it is the only way to see the ones no row matches), one
GET /workspaces per 200 projects (their currencies: the results show amounts in currency units), and one PUT per
edited row. The floor: those requests x the mean round trip the sandbox measured (arrival to answer) / the client's
concurrency. "Sending" is the time from the CLI's `looking up` line to its `writing the results workbook` line,
split at `sending` (the look-ups, and the creates, none here) and `updating` (the PUTs); "all" also starts
Python, reads the schedule and writes the results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import openpyxl

from benchmarks.bench import CLI, measure
from benchmarks.generate import ensure
from importer.kantata.client import LOOKUP_CHUNK, PER_PAGE, PROBE_CHUNK
from importer.sandbox.rules import Reply
from importer.sandbox.server import DEFAULT_TOKEN, Sandbox
from importer.settings import DEFAULT_CONCURRENCY


class TimedSandbox(Sandbox):
    """The sandbox, timing each request from its arrival to its answer (the round trip the floor is made of)."""

    def __init__(self) -> None:
        super().__init__()
        self.round_trips: list[float] = []
        self._timing = threading.Lock()

    def _respond(self, method: str, target: str, authorization: str | None, body: bytes) -> Reply:
        arrived = time.monotonic()
        try:
            return super()._respond(method, target, authorization, body)
        finally:
            with self._timing:
                self.round_trips.append(time.monotonic() - arrived)


def edit_tenth(results: Path, out: Path) -> dict[str, dict[str, object]]:
    """Month two's schedule: `results` with every 10th row edited (amount, date or title in turn; a row with no
    date gets its title changed). The edits made, by milestone id, as the sandbox should then hold them."""
    wb = openpyxl.load_workbook(results)
    ws = wb.worksheets[0]
    header = [c.value for c in ws[1]]
    col = {name: header.index(name) for name in ("title", "amount_in_cents", "date_to_invoice", "billing_milestone_id")}
    wanted: dict[str, dict[str, object]] = {}
    for n, row in enumerate(ws.iter_rows(min_row=2)):
        if n % 10:
            continue
        kind = (n // 10) % 3
        date = row[col["date_to_invoice"]].value
        if kind == 0:
            amount = row[col["amount_in_cents"]]
            amount.value = int(amount.value) + 100  # type: ignore[arg-type]
            change: dict[str, object] = {"amount_in_cents": amount.value}
        elif kind == 1 and date not in (None, ""):
            day = date.date() if isinstance(date, dt.datetime) else dt.date.fromisoformat(str(date)[:10])
            new = day + dt.timedelta(days=7)
            row[col["date_to_invoice"]].value = new.isoformat()  # typed as text, as the csv's cells were
            change = {"date_to_invoice": new.isoformat()}
        else:
            title = row[col["title"]]
            title.value = f"{title.value} (revised)"
            change = {"title": title.value}
        wanted[str(row[col["billing_milestone_id"]].value)] = change
    wb.save(out)
    wb.close()
    return wanted


@dataclass(frozen=True)
class MonthTwo:
    """What month two's upload made and took."""

    rows: int
    edited: int
    latency: float
    requests: dict[str, int]  # by route, as the sandbox counted them
    pages: int  # the listing of this importer's milestones, PER_PAGE a page, one listing per PROBE_CHUNK projects
    workspaces: int  # the projects' currencies, LOOKUP_CHUNK projects a request
    round_trip: float  # mean seconds from a request's arrival to its answer, as the sandbox measured
    looking: float  # seconds from the CLI's `looking up` line to its `sending` line
    updating: float  # from `updating` to `writing the results workbook`
    sending: float  # from `looking up` to `writing the results workbook`
    seconds: float  # the whole command

    @property
    def made(self) -> int:
        return sum(self.requests.values())

    @property
    def least(self) -> int:
        return self.pages + self.workspaces + self.edited

    @property
    def floor(self) -> float:
        return self.least * self.round_trip / DEFAULT_CONCURRENCY


def run(folder: Path, n: int, latency: float) -> MonthTwo:
    """Month one without latency, then month two with it, each a fresh CLI process; raises SystemExit unless
    month two left exactly `n` milestones, the edited ones holding their new values."""
    schedule = ensure(folder, n, "csv")
    month1, month2 = folder / f"month1_{n}.results.xlsx", folder / f"month2_{n}.xlsx"
    month2_results = folder / f"month2_{n}.results.xlsx"
    timed = TimedSandbox()
    with timed as sandbox:
        env = {**os.environ, "KANTATA_API_TOKEN": DEFAULT_TOKEN, "KANTATA_BASE_URL": sandbox.url,
               "KANTATA_IMPORT_STATE": str(folder / "state")}  # fmt: skip
        measure([*CLI, "upload", str(schedule), "-o", str(month1), "-q"], env)
        wanted = edit_tenth(month1, month2)
        pages, workspaces = least_reads(sandbox.milestones())
        before = Counter(sandbox.stats())
        timed.round_trips.clear()
        sandbox.set_faults(latency=latency, latency_covers_work=True)
        marks: list[tuple[float, str]] = []
        whole = measure([*CLI, "upload", str(month2), "-o", str(month2_results)], env, marks)
        made = Counter(sandbox.stats())
        made.subtract(before)
        round_trip = statistics.mean(timed.round_trips)
        check(sandbox.milestones(), n, wanted)
    at = {text.split(" ")[0]: t for t, text in marks}  # the CLI's stage lines: "looking up ...", "writing ..."
    return MonthTwo(
        rows=n, edited=len(wanted), latency=latency,
        requests={k: v for k, v in sorted(made.items()) if " /" in k and v > 0},  # routes, not faults counted
        pages=pages, workspaces=workspaces, round_trip=round_trip,
        looking=at["sending"] - at["looking"], updating=at["writing"] - at["updating"],
        sending=at["writing"] - at["looking"], seconds=whole.seconds,
    )  # fmt: skip


def table(m: MonthTwo) -> list[str]:
    kinds = ", ".join(f"{k} {v}" for k, v in m.requests.items())
    return [
        "| month two | rows | edited | requests made | least | requests ÷ least | round trip (ms) | floor (s) "
        "| sending (s): look-ups + updates | all (s) | sending ÷ floor | all ÷ floor |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {m.latency * 1000:.0f} ms from arrival to answer, concurrency {DEFAULT_CONCURRENCY} | {m.rows:,} | "
        f"{m.edited:,} | {m.made:,} ({kinds}) | {m.least:,} ({m.pages} GET listing + {m.workspaces} GET /workspaces "
        f"+ {m.edited:,} PUT) | "
        f"{m.made / m.least:.3f} | {m.round_trip * 1000:.1f} | {m.floor:.1f} | "
        f"{m.sending:.1f}: {m.looking:.1f} + {m.updating:.1f} | {m.seconds:.1f} | "
        f"{m.sending / m.floor:.2f} | {m.seconds / m.floor:.2f} |",
        "goals: requests ÷ least ≤ 1.05, all ÷ floor ≤ 1.25",
    ]


def least_reads(milestones: list[dict[str, object]]) -> tuple[int, int]:
    """The pages of the listing of these milestones (one listing per PROBE_CHUNK projects, at least one page
    each) and the GET /workspaces for their projects' currencies."""
    counts = Counter(int(str(m["workspace_id"])) for m in milestones)
    projects = sorted(counts)
    groups = [projects[start : start + PROBE_CHUNK] for start in range(0, len(projects), PROBE_CHUNK)]
    pages = sum(max(1, -(-sum(counts[p] for p in group) // PER_PAGE)) for group in groups)
    return pages, -(-len(projects) // LOOKUP_CHUNK)


def check(milestones: list[dict[str, object]], n: int, wanted: Mapping[str, Mapping[str, object]]) -> None:
    """Month two changed the edited milestones in place and created none: a benchmark of a wrong run is void."""
    if len(milestones) != n:
        raise SystemExit(f"month two left {len(milestones)} milestones, not {n}")
    by_id = {str(m["id"]): m for m in milestones}
    wrong = [mid for mid, change in wanted.items() if any(by_id[mid][k] != v for k, v in change.items())]
    if wrong:
        raise SystemExit(f"{len(wrong)} edited milestones do not hold their new values, e.g. {wrong[:3]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="rows in the schedule (default 20,000)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds from arrival to answer (default 0.1)")
    parser.add_argument("--folder", type=Path, help="where schedules are generated (default: a temp folder)")
    args = parser.parse_args(argv)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="kantata-import-month2-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    print("\n".join(table(run(folder, args.rows, args.latency))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
