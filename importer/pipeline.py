"""The stages wired together: the one call a Python script needs, and all the CLI does besides printing.

result = run_upload("schedule.xlsx", Settings.from_env())  # from_env reads the environment; nothing below does
print(result.counts, result.output)

Neither prints: progress goes to an optional `on_progress(stage, done, total)` (see `importer.progress`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import requests

from importer.delivery import (
    Action,
    DeleteMissing,
    Delivery,
    Ledger,
    OnOutcomes,
    Plan,
    Previous,
    Step,
    StopSwitch,
    ToSend,
    describe,
    find_missing,
    in_kantata,
    journal_path,
    one_upload_to,
    patient_interrupts,
    plan_steps,
    read_previous,
    schedule_digest,
    still_writing,
)
from importer.errors import (
    ApiUnavailable,
    CellIssue,
    ExitCode,
    ImporterError,
    JournalNotWritten,
    MissingToken,
    ResultsNotWritten,
)
from importer.kantata import (
    LOOKUP_CHUNK,
    Account,
    Item,
    KantataClient,
    OnlineCheck,
    StoryInfo,
    WorkspaceInfo,
    amount_issues,
    build_items,
    check_online,
    duplicate_rows,
    has_user_keys,
    items_as_built,
    reference_issues,
    withheld_currencies,
)
from importer.outcomes import FAILED, NotInSchedule, Outcome, Status
from importer.progress import OnProgress, Stage, for_stage
from importer.results import (
    Cut,
    Money,
    ProjectTotal,
    RunInfo,
    StreamedResults,
    check_output,
    check_template_path,
    cut_note,
    default_output,
    outcome_columns,
    project_totals,
    write_results,
    write_template,
)
from importer.schedule import (
    DEFAULT_OPTIONS,
    IDENTITY,
    CellProblem,
    ParseOptions,
    RawSchedule,
    ReadAhead,
    Validated,
    check_schedule,
    is_blank,
    load_schedule,
    parse_id,
    validate_rows,
)
from importer.settings import TOKEN_ENV, Settings, sanitize_url


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
    # milestones of this importer in the schedule's projects that no row matches (online runs only)
    not_in_schedule: list[NotInSchedule] = field(default_factory=list)


def _prepare(
    path: Path | str,
    sheet: str | None,
    output: Path | str | None,
    options: ParseOptions,
    on_progress: OnProgress | None,
    *,
    requests: bool,
    defer: bool = False,
    read_ahead: ReadAhead | None = None,
) -> tuple[RawSchedule, Validated, list[Item], list[CellIssue], Path, bool]:
    """Load and validate; build the requests (keys and bodies) only when they will be sent or looked up.

    With `defer`, rows whose requests can be built while the first batches are sent (`_deferrable`) are left
    unbuilt: the last value is then True, and the items list empty."""
    schedule = Path(path)
    check_schedule(schedule)
    out = check_output(Path(output) if output else default_output(schedule), schedule)
    raw = load_schedule(schedule, sheet=sheet, on_progress=for_stage(on_progress, Stage.READ), read_ahead=read_ahead,
                        encoding=options.encoding)  # fmt: skip
    outcome_columns(raw)  # the results have room for every row's outcome, or nothing is sent
    validated = validate_rows(raw, options, on_progress=for_stage(on_progress, Stage.VALIDATE))
    items: list[Item] = []
    deferred = defer and _deferrable(validated.rows)
    if deferred:
        key_issues: list[CellIssue] = []  # none possible: every key is derived, and hashes its occurrence
    elif requests:
        items, key_issues = build_items(validated.rows, on_progress=for_stage(on_progress, Stage.PREPARE))
    else:
        key_issues = reference_issues(validated.rows)
    issues = sorted([*validated.issues, *key_issues], key=lambda i: i.row)
    return raw, validated, items, issues, out, deferred


def _deferrable(rows: pd.DataFrame) -> bool:
    """Whether an upload can send its first batches before every request is built, so that building a large
    schedule's requests overlaps the sending instead of delaying the first request. Only when no row can turn
    out to be an issue while building (no user keys: a derived key hashes its occurrence in, so none repeats),
    and when the look-up needs no key (over LOOKUP_CHUNK rows, it first asks which projects hold any import at
    all: in those that hold none, no key needs looking up; otherwise they are all built first, as before)."""
    return len(rows) > LOOKUP_CHUNK and not has_user_keys(rows) and not has_ids(rows)


def has_ids(rows: pd.DataFrame) -> bool:
    """Whether any row names its milestone: such a row is updated, never created, so its look-up is needed."""
    return IDENTITY in rows.columns and bool(rows[IDENTITY].notna().any())


def _rows_to_send(validated: Validated, items: Sequence[Item], *, deferred: bool = False) -> list[int]:
    """The rows an upload finds or sends, which the journal's identity hashes in (schedule_digest): a deferred
    upload has built no item yet, and every valid row is one. The dry run names the same journal from them."""
    return validated.rows.index.tolist() if deferred else [i.row for i in items]


def _built(rows: pd.DataFrame) -> Iterator[Item]:
    """The items of deferred rows, made as they are taken (by the uploader, batch by batch, or all at once when
    a key must be looked up after all)."""
    yield from items_as_built(rows)


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
    *,
    currencies: Mapping[int, str] | None = None,
    stream: StreamedResults | None = None,
    decimals: int = 2,
    kantata: Mapping[int, tuple[int, int]] | None = None,
) -> RunResult:
    for issue in issues:
        if issue.is_error:
            outcomes.setdefault(issue.row, _invalid(raw, issue.row))
    totals = project_totals(validated.rows, outcomes, currencies, kantata)
    money = Money.of(validated.rows, currencies, decimals)  # the results show each amount in currency units
    writing = for_stage(on_progress, Stage.WRITE)
    cut: list[Cut] = []
    try:
        if stream is not None:
            written = stream.finish(outcomes, totals, info, on_progress=writing, cut=cut, money=money)
        else:
            written = write_results(raw, outcomes, issues, totals, info, out, on_progress=writing, cut=cut,
                                    money=money)  # fmt: skip
    except OSError as exc:  # a full disk, a folder made read-only meanwhile: the user's to mend, not a bug
        reason = exc.strerror or str(exc)
        if info.dry_run:
            raise ResultsNotWritten(f"the results workbook {out} could not be written ({reason}); nothing was sent. "
                                    "Free some space, or choose another place with --output") from exc  # fmt: skip
        done = sum(o.status is Status.CREATED for o in outcomes.values())
        journal_failed = isinstance(stopped, JournalNotWritten) and stopped.path == journal_path(out)  # not the ledger
        kept = (" before the journal beside it could not be written either, which stopped the sending"
                if journal_failed else " and are kept in the journal beside it")  # fmt: skip
        raise ResultsNotWritten(f"the results workbook {out} could not be written ({reason}). {done} rows were "
                                f"created in Kantata{kept}: mend that, then run the same command again; it finds "
                                "them (nothing is created twice) and writes the workbook") from exc  # fmt: skip
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
        notes=[*raw.notes, *info.notes, *([cut_note(raw, cut)] if cut else [])],
        totals=totals,
        schedule=raw.path,
        dry_run=info.dry_run,
        base_url=info.base_url,
        not_in_schedule=list(info.not_in_schedule),
    )


def run_validate(
    path: Path | str,
    *,
    sheet: str | None = None,
    output: Path | str | None = None,
    settings: Settings | None = None,
    online: bool | None = None,
    session: requests.Session | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_progress: OnProgress | None = None,
    read_ahead: ReadAhead | None = None,
) -> RunResult:
    """The dry run; writes the results workbook and sends nothing.

    Offline it checks each row on its own. `online` (by default: when `settings` are given; they need a token)
    it also asks Kantata, with GETs only, whether projects and tasks exist and belong together, whether amounts
    fit each project's currency and which rows an earlier run created (`checks.py`); those rows are `unchanged`.
    How cells are read (`ParseOptions.of(settings)`, the sheet) comes from `settings`; `sheet` wins when given.
    `read_ahead`: the early read the caller started (schedule.start_prefetch), used only for this file."""
    started = dt.datetime.now(dt.UTC)
    online = settings is not None if online is None else online
    if online and (settings is None or settings.token is None):
        raise MissingToken.from_env(TOKEN_ENV)
    options = ParseOptions.of(settings) if settings is not None else DEFAULT_OPTIONS
    sheet = settings.sheet if sheet is None and settings is not None else sheet
    raw, validated, items, issues, out, _ = _prepare(path, sheet, output, options, on_progress, requests=online,
                                                     read_ahead=read_ahead)  # fmt: skip
    issues += duplicate_rows(raw, validated.rows)
    failed = {i.row for i in issues if i.is_error}
    outcomes = {row: Outcome(row, Status.VALID) for row in validated.rows.index.tolist() if row not in failed}
    if not online or settings is None:
        return _finish(raw, validated, _in_order(issues), outcomes, RunInfo(True, None, started), out,
                       on_progress=on_progress, decimals=options.currency_decimals)  # fmt: skip
    say = on_stage or (lambda _: None)
    say(f"checking {len(items)} rows against Kantata (projects, tasks, earlier runs)")
    # The journal an upload of these rows to `out` would open, read as it would read it and left as it is.
    previous = read_previous(journal_path(out), schedule_digest(validated.rows, _rows_to_send(validated, items)),
                             settings.clock)  # fmt: skip
    checked, steps, made, missing, writing = _check_online(raw, validated, items, settings, session, options,
                                                           previous, say)  # fmt: skip
    resumed = ("created by the interrupted upload of this schedule: the upload resumes it, and reports the row "
               "created",)  # fmt: skip
    for row, milestone_id in checked.existing.items():
        outcomes[row] = Outcome(row, Status.UNCHANGED, milestone_id, resumed if row in previous.sent_before else ())
    for step in steps:  # what an upload would do with the rows Kantata holds
        if step.action is Action.UPDATE:
            outcomes[step.item.row] = Outcome(step.item.row, Status.UPDATE, step.milestone_id,
                                              changes=describe(step.changes))  # fmt: skip
        elif step.action is Action.CONFLICT:
            outcomes[step.item.row] = Outcome(step.item.row, Status.CONFLICT, step.milestone_id, (step.reason,),
                                              describe(step.changes))  # fmt: skip
        if step.copies and (shown := outcomes.get(step.item.row)) is not None:
            outcomes[step.item.row] = replace(shown, errors=(*shown.errors, step.copies_note(None)))
    for issue in checked.issues:
        if issue.is_error:
            outcomes[issue.row] = _invalid(raw, issue.row, outcomes.get(issue.row))
    cost = ", ".join(f"{route} {n}" for route, n in sorted(made.items()))
    total = sum(made.values())
    waited = (f"an earlier upload's requests may still be written at Kantata for up to {writing:.0f} s: the "
              "upload waits for them and finds what they create, which this plan cannot show yet",)  # fmt: skip
    notes = (
        *checked.notes,
        *(waited if writing > 0 else ()),
        f"online checks: {total} request{'s' if total != 1 else ''} to Kantata ({cost}), nothing sent",
    )
    info = RunInfo(True, sanitize_url(settings.base_url), started, notes=notes, not_in_schedule=tuple(missing))
    all_issues = _in_order([*issues, *checked.issues])
    blocked = {i.row for i in all_issues if i.is_error}
    return _finish(raw, validated, all_issues, outcomes, info, out, None, made, len(checked.existing), on_progress,
                   currencies=checked.currencies, decimals=options.currency_decimals,
                   kantata=in_kantata(steps, blocked))  # fmt: skip


def _check_online(
    raw: RawSchedule,
    validated: Validated,
    items: list[Item],
    settings: Settings,
    session: requests.Session | None,
    options: ParseOptions,
    previous: Previous,
    say: Callable[[str], None],
) -> tuple[OnlineCheck, list[Step], dict[str, int], list[NotInSchedule], float]:
    """The online checks over one client, the plan an upload would carry out, what they cost in requests per route, the
    milestones of this importer in the schedule's projects that no row matches, and for how long requests left
    unanswered, not found, may still be written (still_writing: the journal's and the ledger's). `previous`: what
    the journal an upload would open tells (read_previous); its milestones for rows edited since are handed over as
    an upload does."""
    assert settings.token is not None  # run_validate refused a missing token before reading the file
    client = KantataClient(settings, settings.token, session=session)
    try:
        projects = sorted({int(i.body["workspace_id"]) for i in items})
        steps, found = plan_steps(client, items, projects, previous.earlier, say, previous.mark)
        known = {s.item.row: s.milestone_id for s in steps if s.action is Action.UNCHANGED and s.milestone_id}
        checked = check_online(raw, validated.rows, client, options, known=known)
        missing = find_missing(found.listed, steps)
    finally:
        client.close()
    landed = {*found.settled, *(k for m in found.handed.values() for k in m.keys)}
    window = settings.sending_ahead + settings.writes_until
    ledger = Ledger.read_only(Account.of(settings), window, settings.state_dir, settings.clock)
    return checked, steps, dict(client.stats.routes), missing, still_writing(previous, ledger, items, landed, settings)


def _invalid(raw: RawSchedule, row: int, found: Outcome | None = None) -> Outcome:
    """An invalid row's outcome, with the milestone id it carries (or that Kantata showed it to be, `found`):
    written back into the results, it keeps the row that milestone's once the row is fixed and loaded again,
    where a blank id would make the fixed row a second milestone."""
    if found is not None and found.milestone_id is not None:
        return Outcome(row, Status.INVALID, found.milestone_id)
    letter = raw.fields.get(IDENTITY)
    value = None if letter is None else raw.frame.at[row, letter]
    if value is None or is_blank(value):
        return Outcome(row, Status.INVALID)
    try:
        return Outcome(row, Status.INVALID, str(parse_id(value)))
    except CellProblem:  # an id that is itself the error: kept as typed, for the user to mend
        return Outcome(row, Status.INVALID, str(value).strip() or None)


def _in_order(issues: list[CellIssue]) -> list[CellIssue]:
    """By row, then by column as the sheet lays them out (A..Z, AA..), row-wide issues first."""
    return sorted(issues, key=lambda i: (i.row, len(i.column or ""), i.column or ""))


def run_upload(
    path: Path | str,
    settings: Settings,
    *,
    sheet: str | None = None,
    output: Path | str | None = None,
    session: requests.Session | None = None,
    on_outcomes: OnOutcomes | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_progress: OnProgress | None = None,
    read_ahead: ReadAhead | None = None,
    stop: StopSwitch | None = None,
    delete_missing: DeleteMissing | None = None,
) -> RunResult:
    """Create the milestones of every valid row that Kantata does not already have; write the results. How cells
    are read comes from `settings` (`sheet` wins when given); `read_ahead` as in run_validate. `stop`: the Ctrl-C
    of a caller running this on another thread than the main one (a web page's Stop button). The milestones of
    this importer in the schedule's projects that no row matches are listed (`RunResult.not_in_schedule`), and
    deleted after the creates and updates only as `delete_missing` says (delivery/missing.py)."""
    started = dt.datetime.now(dt.UTC)
    if settings.token is None:
        raise MissingToken.from_env(TOKEN_ENV)
    options = ParseOptions.of(settings)
    sheet = settings.sheet if sheet is None else sheet
    raw, validated, items, issues, out, deferred = _prepare(path, sheet, output, options, on_progress,
                                                            requests=True, defer=True,
                                                            read_ahead=read_ahead)  # fmt: skip
    say = on_stage or (lambda _: None)
    # The journal's identity of this import, and every row's key, come from the rows as checked offline: were
    # they to depend on Kantata's answer below (the currencies), a run whose question failed would not know
    # the journal of the run before it, nor find its rows by key, and send them twice.
    to_send = ToSend(_rows_to_send(validated, items, deferred=deferred), items,
                     (lambda: _built(validated.rows)) if deferred else None)  # fmt: skip
    digest = schedule_digest(validated.rows, to_send.rows)
    projects = sorted(set(validated.rows["workspace_id"].astype(int).tolist()))
    account = Account.of(settings)
    streams: list[StreamedResults] = []
    with contextlib.closing(KantataClient(settings, settings.token, session=session)) as client:
        amount_errors, notes, unanswered = _amounts_checked(raw, validated, client, options)
        issues = sorted([*issues, *amount_errors], key=lambda i: i.row)
        to_send.without({i.row for i in amount_errors if i.is_error})  # not sent; their keys stay as they were

        def results(_: Plan) -> list[OnOutcomes]:
            money = Money.of(validated.rows, None, options.currency_decimals)
            streams.extend([_stream(raw, issues, out, money)] if settings.stream_results else [])
            return [s.add for s in streams]

        with (
            patient_interrupts(say, stop) as writing_begins,
            _abandoned_on_error(lambda: streams[0] if streams else None),
            one_upload_to(
                account, say, settings.state_dir, wait=settings.lock_wait, loading=Path(path), clock=settings.clock
            ),
        ):
            delivery = Delivery(client, settings, account, say, on_progress, writing_begins, on_outcomes)
            blocked = sorted({i.row for i in issues if i.is_error})
            done = delivery.deliver(journal_path(out), digest, projects, to_send, results, unanswered=unanswered,
                                    delete=delete_missing, blocked=blocked)  # fmt: skip
            made = {**done.requests, "GET": client.stats.gets, "POST": client.stats.posts}
            stopped = done.stopped
            info = RunInfo(False, sanitize_url(settings.base_url), started, str(stopped) if stopped else "",
                           notes=(*notes, *done.notes), not_in_schedule=tuple(done.not_in_schedule))  # fmt: skip
            say(f"writing the results workbook ({len(raw.frame)} rows)")
            stream = streams[0] if streams else None
            result = _finish(raw, validated, issues, done.outcomes, info, out, stopped, made, done.existing_found,
                             on_progress, currencies=done.currencies, stream=stream,
                             decimals=options.currency_decimals)  # fmt: skip
            # Every row settled and the workbook written: nothing left to resume. Removed while the account's
            # lock is held, so that it cannot remove the journal a waiting upload opens once the lock is free.
            if stopped is None:
                journal_path(out).unlink(missing_ok=True)
    return result


def _amounts_checked(
    raw: RawSchedule, validated: Validated, client: KantataClient, options: ParseOptions
) -> tuple[list[CellIssue], list[str], BaseException | None]:
    """The issues of rows whose Amount (in currency units) does not fit its project's currency, which are then
    not sent, as `validate --online` reports them (checks.amount_issues): 5000 in a yen project is not sent as
    500,000 yen; and a note on the currencies Kantata withheld. Needs the projects' currencies first (one GET
    for up to 200 projects; the totals reuse them from the client's cache); none when the schedule gives its
    amounts in cents only. Kantata unreachable or a Ctrl-C here is returned, not raised: the delivery then
    reports every row not_sent, as when its own look-ups fail."""
    amounts = raw.fields.get("amount")
    if amounts is None or validated.rows.empty or raw.frame.loc[validated.rows.index, amounts].map(is_blank).all():
        return [], [], None
    projects = sorted(set(validated.rows["workspace_id"].astype(int).tolist()))
    try:
        workspaces = client.workspaces(projects)
    except (ApiUnavailable, KeyboardInterrupt) as exc:
        return [], [], exc
    issues = amount_issues(raw, validated.rows, workspaces, options)
    return issues, withheld_currencies(validated.rows, workspaces), None


def _stream(raw: RawSchedule, issues: Sequence[CellIssue], out: Path, money: Money) -> StreamedResults:
    """The results workbook written while sending (streaming.py); without `Settings.stream_results` it is
    written after the last answer instead, as a dry run does (the benchmark compares both)."""
    stream = StreamedResults(raw, issues, out, money)
    stream.add([_invalid(raw, i.row) for i in issues if i.is_error])  # as _finish will record them
    return stream


@contextmanager
def _abandoned_on_error(stream: Callable[[], StreamedResults | None]) -> Iterator[None]:
    """A run that fails outright (a bug, a full disk) leaves no half-written temporary workbook behind."""
    try:
        yield
    except BaseException:
        if (current := stream()) is not None:
            current.abandon()
        raise


@dataclass(frozen=True, slots=True)
class TemplateResult:
    """The template written, and the projects and tasks listed in it, so the CLI can say how many the token sees."""

    path: Path
    workspaces: list[WorkspaceInfo] | None  # None: made without a token, so without a Workspaces sheet
    tasks: list[StoryInfo] | None = None  # likewise for the Tasks sheet


def run_template(
    path: Path | str,
    settings: Settings | None = None,
    *,
    session: requests.Session | None = None,
    overwrite: bool = False,
    external: bool = False,
) -> TemplateResult:
    """Write the blank schedule; with `settings` (a token) add the projects it can see and their tasks, for
    looking ids up. `overwrite` replaces a file already there; `external` adds the external-reference columns."""
    out = check_template_path(Path(path), overwrite=overwrite)  # before asking Kantata anything
    if settings is None:
        return TemplateResult(write_template(out, overwrite=overwrite, external=external), None)
    if settings.token is None:
        raise MissingToken.from_env(TOKEN_ENV)
    client = KantataClient(settings, settings.token, session=session)
    try:
        workspaces = client.all_workspaces()
        tasks = client.all_stories([w.id for w in workspaces])
    finally:
        client.close()
    made = write_template(out, overwrite=overwrite, workspaces=workspaces, tasks=tasks, external=external)
    return TemplateResult(made, workspaces, tasks)
