"""The stages wired together: the one call a Python script needs, and all the CLI does besides printing.

result = run_upload("schedule.xlsx", Settings.from_env())
print(result.counts, result.output)

Neither prints: progress goes to an optional `on_progress(stage, done, total)` (see `importer.progress`).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

from importer.cells import DEFAULT_OPTIONS, ParseOptions
from importer.client import KantataClient
from importer.errors import ApiUnavailable, CellIssue, ExitCode, ImporterError, MissingToken
from importer.journal import Journal, journal_path
from importer.loader import RawSchedule, load_schedule
from importer.outcomes import FAILED, Outcome, Status
from importer.planner import Item, build_items, plan
from importer.progress import OnProgress, Stage, Ticker, for_stage
from importer.report import RunInfo, check_output, default_output, write_results
from importer.schema import Validated, validate_rows
from importer.settings import TOKEN_ENV, Settings, sanitize_url
from importer.totals import ProjectTotal, project_totals
from importer.upload import OnOutcomes, Uploader


@dataclass(slots=True)
class RunResult:
    """What a run did; the CLI prints it, a script reads it."""

    output: Path
    sheet: str | None
    rows: int
    counts: dict[str, int]
    issues: list[CellIssue]
    outcomes: dict[int, Outcome]
    exit_code: ExitCode
    stopped: ImporterError | None = None
    requests: dict[str, int] = field(default_factory=dict)
    existing_found: int = 0
    notes: list[str] = field(default_factory=list)  # file-level remarks: encoding, sheet used, skipped rows
    totals: list[ProjectTotal] = field(default_factory=list)  # per project: rows and cents per status
    schedule: Path | None = None  # the input file
    dry_run: bool = True
    base_url: str | None = None  # sanitised; None for a dry run


def _prepare(
    path: Path | str,
    sheet: str | None,
    output: Path | str | None,
    options: ParseOptions,
    on_progress: OnProgress | None,
) -> tuple[RawSchedule, Validated, list[Item], list[CellIssue], Path]:
    schedule = Path(path)
    out = check_output(Path(output) if output else default_output(schedule), schedule)
    raw = load_schedule(schedule, sheet=sheet, on_progress=for_stage(on_progress, Stage.READ))
    validated = validate_rows(raw, options, on_progress=for_stage(on_progress, Stage.VALIDATE))
    items, key_issues = build_items(validated.rows, on_progress=for_stage(on_progress, Stage.PREPARE))
    issues = sorted([*validated.issues, *key_issues], key=lambda i: i.row)
    return raw, validated, items, issues, out


def _finish(
    raw: RawSchedule,
    validated: Validated,
    issues: list[CellIssue],
    outcomes: dict[int, Outcome],
    info: RunInfo,
    out: Path,
    stopped: ImporterError | None = None,
    requests_made: dict[str, int] | None = None,
    existing_found: int = 0,
    on_progress: OnProgress | None = None,
) -> RunResult:
    for issue in issues:
        if issue.is_error:
            outcomes.setdefault(issue.row, Outcome(issue.row, Status.INVALID))
    totals = project_totals(validated.rows, outcomes)
    written = write_results(raw, outcomes, issues, totals, info, out, on_progress=for_stage(on_progress, Stage.WRITE))
    counts = Counter(o.status.value for o in outcomes.values())
    if stopped is not None:
        code = stopped.exit_code
    elif any(o.status in FAILED for o in outcomes.values()):
        code = ExitCode.ROWS_FAILED
    else:
        code = ExitCode.OK
    return RunResult(
        output=written,
        sheet=raw.sheet,
        rows=len(raw.frame),
        counts={s.value: counts.get(s.value, 0) for s in Status},
        issues=issues,
        outcomes=outcomes,
        exit_code=code,
        stopped=stopped,
        requests=requests_made or {},
        existing_found=existing_found,
        notes=list(raw.notes),
        totals=totals,
        schedule=raw.path,
        dry_run=info.dry_run,
        base_url=info.base_url,
    )


def run_validate(
    path: Path | str,
    *,
    sheet: str | None = None,
    output: Path | str | None = None,
    options: ParseOptions = DEFAULT_OPTIONS,
    on_progress: OnProgress | None = None,
) -> RunResult:
    """The dry run: every check that needs no Kantata account; writes the results workbook, sends nothing."""
    started = dt.datetime.now(dt.UTC)
    raw, validated, items, issues, out = _prepare(path, sheet, output, options, on_progress)
    outcomes = {i.row: Outcome(i.row, Status.VALID) for i in items}
    return _finish(raw, validated, issues, outcomes, RunInfo(True, None, started), out, on_progress=on_progress)


def run_upload(
    path: Path | str,
    settings: Settings,
    *,
    sheet: str | None = None,
    output: Path | str | None = None,
    session: requests.Session | None = None,
    on_outcomes: OnOutcomes | None = None,
    on_stage: Callable[[str], None] | None = None,
    options: ParseOptions = DEFAULT_OPTIONS,
    on_progress: OnProgress | None = None,
) -> RunResult:
    """Create the milestones of every valid row that Kantata does not already have; write the results."""
    started = dt.datetime.now(dt.UTC)
    if settings.token is None:
        raise MissingToken.from_env(TOKEN_ENV)
    raw, validated, items, issues, out = _prepare(path, sheet, output, options, on_progress)
    client = KantataClient(settings, settings.token, session=session)
    say = on_stage or (lambda _: None)
    try:
        stopped: ImporterError | None = None
        try:
            say(f"looking up {len(items)} import keys in Kantata")
            lookup = Ticker(for_stage(on_progress, Stage.LOOKUP), len(items))
            existing = client.find_existing(i.key for i in items) if items else {}
            lookup.end(len(items))
        except ApiUnavailable as exc:  # nothing was sent: every row is not_sent, the re-run starts afresh
            existing, stopped = {}, exc
        the_plan = plan(items, existing, batch_size=settings.batch_size)
        if stopped is None:
            journal = Journal.open(journal_path(out), items)
            if journal.sent_before:
                say(f"resuming an interrupted upload of this schedule ({len(journal.sent_before)} rows sent before)")
            needed = -(-len(the_plan.to_send) // settings.batch_size)
            say(f"sending {len(the_plan.to_send)} rows in {needed} request{'s' if needed != 1 else ''}")
            record = _both(_both(journal.record, on_outcomes), _sent(on_progress, the_plan.to_send))
            try:
                uploader = Uploader(client, on_outcomes=record, on_sending=journal.sending)
                result = uploader.run(the_plan, sent_before=journal.sent_before)
            finally:
                journal.close(finished=False)
            outcomes, stopped, made = result.outcomes, result.stopped, result.requests
        else:
            reason = f"not sent: {stopped}"
            outcomes = {i.row: Outcome(i.row, Status.NOT_SENT, None, (reason,)) for i in items}
            made = {}
    finally:
        client.close()
    made = {**made, "GET": client.stats.gets, "POST": client.stats.posts}
    info = RunInfo(False, sanitize_url(settings.base_url), started, str(stopped) if stopped else "")
    result_ = _finish(raw, validated, issues, outcomes, info, out, stopped, made, len(the_plan.existing), on_progress)
    if stopped is None:  # every row settled and the workbook written: nothing left to resume
        journal_path(out).unlink(missing_ok=True)
    return result_


def _sent(on_progress: OnProgress | None, to_send: Sequence[Item]) -> OnOutcomes | None:
    """Sending progress from the outcomes as they arrive: rows of the plan settled so far, once per batch."""
    if on_progress is None:
        return None
    rows = {i.row for i in to_send}
    settled: set[int] = set()
    ticker = Ticker(for_stage(on_progress, Stage.SEND), len(rows), chunk=1)
    lock = threading.Lock()  # outcomes may arrive from several sending threads

    def count(outcomes: Sequence[Outcome]) -> None:
        with lock:
            settled.update(o.row for o in outcomes if o.row in rows and o.status is not Status.NOT_SENT)
            if len(settled) < len(rows):
                ticker.at(len(settled))
            elif ticker.done < len(rows):
                ticker.end(len(settled))

    return count


def _both(first: OnOutcomes, second: OnOutcomes | None) -> OnOutcomes:
    if second is None:
        return first

    def both(outcomes: Sequence[Outcome]) -> None:
        first(outcomes)
        second(outcomes)

    return both
