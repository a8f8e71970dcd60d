"""One upload's delivery: find what Kantata already has, wait out what an interrupted run left in flight, send the
rest, and hand each row's fate to every sink that keeps it.

The order of the steps is the exactly-once rule. The journal (this schedule's unanswered requests) and the ledger
(any run's, for this account) are opened before anything is looked up, so that rows an interrupted run sent are
waited for rather than sent again; keys are looked up before the plan is made; every request is journalled before
it leaves and every answer before it is reported. `Recorder` is the one place that fan-out happens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from importer.delivery.converge import converge, others_wrote, remove_copies
from importer.delivery.handover import hand_over
from importer.delivery.journal import Earlier, Journal
from importer.delivery.ledger import Ledger
from importer.delivery.missing import DeleteMissing, confirmed, delete_missing, find_missing, kept
from importer.delivery.planner import Action, Plan, Step, living_plan, plan
from importer.delivery.recorder import OnOutcomes, Recorder
from importer.delivery.settle import settle_in_flight
from importer.delivery.updates import apply_updates, conflict
from importer.delivery.upload import Uploader
from importer.errors import ApiUnavailable, DeletionNotConfirmed, ImporterError, Interrupted, JournalNotWritten
from importer.kantata import Account, Currencies, ImportKey, Item, KantataClient, Milestone, counted_total
from importer.outcomes import NotInSchedule, Outcome, Status
from importer.progress import OnProgress, Stage, Ticker, for_stage
from importer.settings import Settings

Say = Callable[[str], None]


@dataclass(slots=True)
class ToSend:
    """The rows an upload must find or send. With `build`, their items are made while the first batches are out
    (none can turn out to be an issue while building); `items` is then empty until a look-up needs the keys.
    `found`: what Kantata holds of them (find_rows), once looked up."""

    rows: list[int]
    items: list[Item]
    build: Callable[[], Iterable[Item]] | None = None
    found: Found | None = None

    def without(self, rows: Collection[int]) -> None:
        """Leave these rows out: refused by a check made once the rows to send were chosen (and hashed into the
        journal's identity, which they stay part of)."""
        if not rows:
            return
        self.rows = [row for row in self.rows if row not in rows]
        self.items = [i for i in self.items if i.row not in rows]
        if (build := self.build) is not None:
            self.build = lambda: (i for i in build() if i.row not in rows)


@dataclass(slots=True)
class Found:
    """What Kantata holds of a schedule's rows: milestones by the ids rows carry, and by the keys of the rest; and
    `listed`, every milestone of this importer in the schedule's projects (the ones no row matches are not in the
    schedule: missing.py). find_rows adds `settled`, the keys found, also by waiting for an interrupted run's
    requests, and `handed`, row -> the milestone an interrupted run made for it before it was edited."""

    by_id: dict[str, Milestone]
    by_key: dict[ImportKey, list[Milestone]]
    listed: list[Milestone] = field(default_factory=list)
    settled: dict[ImportKey, str] = field(default_factory=dict)
    handed: dict[int, Milestone] = field(default_factory=dict)

    @property
    def existing(self) -> dict[ImportKey, str]:
        return {key: held[0].id for key, held in self.by_key.items()}

    def steps(self, items: Sequence[Item], mark: str = "") -> list[Step]:
        """Each row's step (planner.living_plan; `mark`: Journal.mark)."""
        return living_plan(items, self.by_id, self.by_key, self.settled, handed=self.handed, listed=self.listed,
                           mark=mark)  # fmt: skip


def look_up(
    client: KantataClient, items: Sequence[Item], projects: Sequence[int], *, untouched: Sequence[int] | None = None
) -> Found:
    """One look-up for a dry run and an upload alike, so that what `validate --online` shows is what `upload` then
    does. This importer's milestones in `projects` are listed once (KantataClient.list_imported), except in the
    projects `untouched` names (Kantata counted none of ours there); that listing answers for:

    - rows with an id whose milestone it holds; other ids (a milestone not made by this importer, deleted, or in
      a project the schedule does not name) are looked up by id, 200 a request;
    - rows with a derived key: the key hashes its project in, so its milestone can only be in that project, and
      is in the listing or nowhere (in an untouched project: nowhere). Only where the listing was not whole (a
      page contradicted the count) are they looked up by key;
    - the milestones no row matches (`listed`, for missing.py).

    Rows keyed by the user's own external reference are looked up by key: their milestones carry another service
    than this importer's. The listing can be larger than the look-ups it saves (projects holding years of this
    importer's milestones, a schedule of a few rows): it is read either way, for the milestones no row matches."""
    skip = set(untouched or ())
    listing = client.list_imported([p for p in projects if p not in skip])
    listed = {m.id: m for m in listing.milestones}
    holding: dict[ImportKey, list[Milestone]] = {}
    for milestone in listing.milestones:  # lowest id first, as a look-up by key gives them
        for key in milestone.keys:
            holding.setdefault(key, []).append(milestone)
    ids = [i.milestone_id for i in items if i.milestone_id is not None]
    by_id = {mid: listed[mid] for mid in ids if mid in listed}
    others = [mid for mid in ids if mid not in listed]
    by_id.update(client.milestones(others) if others else {})
    settled = skip | listing.whole  # projects where a derived key's milestone is in the listing or nowhere
    keyed = [i for i in items if i.milestone_id is None]
    known = {i.key for i in keyed if i.key.derived and int(i.body["workspace_id"]) in settled}
    by_key = {key: holding[key] for key in known if key in holding}
    wanted = [i.key for i in keyed if i.key not in known]
    by_key.update(client.find_milestones(wanted) if wanted else {})
    return Found(by_id, by_key, listing.milestones)


def find_rows(
    client: KantataClient,
    items: Sequence[Item],
    projects: Sequence[int],
    earlier: Sequence[Earlier],
    say: Say,
    *,
    untouched: Sequence[int] | None = None,
    settled: dict[ImportKey, str] | None = None,
    settle: Callable[[dict[ImportKey, str]], None] | None = None,
) -> Found:
    """What Kantata holds of the rows, for a dry run and an upload alike, so that both plan the same steps
    (`Found.steps`): the look-up (look_up), then, for an upload, `settle` waiting for what an interrupted run
    may still be writing (settle.py), then the milestones interrupted runs of earlier versions of this schedule
    (`earlier`, Journal.earlier or read_previous) made for rows edited since (hand_over). The keys found go
    into `settled` as they come, so that a stop meanwhile still reports those rows."""
    found = look_up(client, items, projects, untouched=untouched)
    found.settled = settled if settled is not None else {}
    found.settled.update(found.existing)
    if settle is not None:
        settle(found.settled)
    if earlier:
        found.handed = hand_over(client, earlier, items, set(found.by_key) | set(found.settled), say)
    return found


def plan_steps(
    client: KantataClient,
    items: Sequence[Item],
    projects: Sequence[int],
    earlier: Sequence[Earlier] = (),
    say: Say = lambda _: None,
    mark: str = "",
) -> tuple[list[Step], Found]:
    """The dry run's plan: each row's step, found as an upload finds them (find_rows) but without waiting for
    requests an interrupted run left in flight; and what it found. `earlier` and `mark`: what the journal an
    upload would resume tells (read_previous)."""
    found = find_rows(client, items, projects, earlier, say)
    return found.steps(items, mark), found


@dataclass(slots=True)
class Delivered:
    """What the delivery did: every row's outcome, why it stopped (if it did), and what it cost."""

    outcomes: dict[int, Outcome]
    stopped: ImporterError | None
    requests: dict[str, int]
    existing_found: int
    currencies: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    not_in_schedule: list[NotInSchedule] = field(default_factory=list)


@dataclass(slots=True)
class Delivery:
    """The upload's side of a run. `on_outcomes` is the caller's own callback; `sinks(plan)` gives the outcome sinks
    the caller adds once the plan is known (the results workbook); `writing_begins` tells the signal handlers that
    nothing is left to stop."""

    client: KantataClient
    settings: Settings
    account: Account
    say: Say
    on_progress: OnProgress | None
    writing_begins: Callable[[], None]
    on_outcomes: OnOutcomes | None = None

    def deliver(
        self,
        journal_file: Path,
        digest: str,
        projects: Sequence[int],
        to_send: ToSend,
        sinks: Callable[[Plan], Sequence[OnOutcomes]],
        *,
        unanswered: BaseException | None = None,
        delete: DeleteMissing | None = None,
        blocked: Sequence[int] = (),
    ) -> Delivered:
        """Carry the rows out exactly once. `unanswered`: a question asked before this (the currencies) that
        failed; nothing is sent then, and every row not found is `not_sent`. The milestones of this importer in
        `projects` that no row matches are listed, and deleted as `delete` says (missing.py) unless a row is
        invalid (`blocked`: it may be one of theirs)."""
        journal = Journal.open(journal_file, digest, self.settings.clock)
        window = self.settings.sending_ahead + self.settings.writes_until  # a request's rows may still be written
        ledger = Ledger.open(self.account, window, self.settings.state_dir, self.settings.clock)
        currencies = Currencies(self.client, projects if to_send.rows else [])
        notes: list[str] = []
        stopped: ImporterError | None = None
        try:
            if journal.sent_before:
                self.say(f"resuming an interrupted upload of this schedule ({len(journal.sent_before)} rows sent "
                         "before)")  # fmt: skip
            existing: dict[ImportKey, str] = {}  # what the look-ups found, kept should they be cut short
            try:
                if unanswered is not None:
                    raise unanswered
                before = self._look_up(journal, ledger, projects, to_send, existing)
            except ApiUnavailable as exc:  # nothing sent: the rows found are reported, the rest not_sent
                stopped = exc
            except KeyboardInterrupt:
                stopped = Interrupted()
            if stopped is not None:
                return self._not_sent(journal, to_send, existing, stopped)
            try:
                delivered = self._send(journal, ledger, to_send, sinks, (projects, before),
                                       (delete, blocked))  # fmt: skip
            except DeletionNotConfirmed:  # nothing was sent: no journal is left to resume (or to hand over)
                journal.close(finished=not (journal.sent_before or journal.earlier))
                raise
            if delivered.stopped is None:
                delivered.currencies = currencies.result()
            return delivered
        finally:
            self.writing_begins()  # nothing is left to stop: a Ctrl-C from here on waits for the workbook
            journal.close(finished=False)
            if ledger is not None:
                ledger.close()
                if ledger.broken and not isinstance(stopped, JournalNotWritten):  # (that says it already)
                    notes.append(f"the ledger of requests in flight ({ledger.path}) could not be written (a full "
                                 "disk?): a re-run of an edited schedule, or to another results workbook, may not "
                                 "know of this run's unanswered requests")  # fmt: skip
            currencies.cancel()  # answered by now, unless the run stopped early

    def _look_up(
        self,
        journal: Journal,
        ledger: Ledger | None,
        projects: Sequence[int],
        to_send: ToSend,
        existing: dict[ImportKey, str],
    ) -> int | None:
        """Find the rows Kantata already has, and wait for those an interrupted run may still be writing. Deferred
        items stay deferred only when Kantata provably holds none of this importer's rows in these projects.
        Returns the projects' count of this importer's milestones before anything is sent (converge.py)."""
        self.say(f"looking up {len(to_send.rows)} import keys in Kantata")
        lookup = Ticker(for_stage(self.on_progress, Stage.LOOKUP), len(to_send.rows))
        # A schedule that is not deferred is listed anyway (look_up), and the keys it creates are looked up again
        # afterwards (converge.py): for the few rows most such schedules create, a count before and after would
        # cost more than that second look-up.
        counts = self.client.import_counts(projects) if to_send.build is not None else []
        before = counted_total(counts) if counts else None
        untouched: list[int] | None = None
        if to_send.build is not None:
            if not (journal.sent_before or journal.earlier or (ledger is not None and ledger.live)):
                untouched = [i for chunk, count in counts if count == 0 for i in chunk]
            # A resume settles what it sent by key, and Kantata may hold some of these rows unless every project
            # is untouched: in both cases every key is needed.
            if untouched is None or len(untouched) < len(projects):
                to_send.items = list(to_send.build())
                to_send.build = None
        if to_send.build is None:
            keyed = [i for i in to_send.items if i.milestone_id is None]  # a row with an id is never created

            def settle(found: dict[ImportKey, str]) -> None:
                settle_in_flight(self.client, journal, ledger, keyed, found, self.settings, self.say)

            to_send.found = find_rows(self.client, to_send.items, projects, journal.earlier, self.say,
                                      untouched=untouched, settled=existing, settle=settle)  # fmt: skip
        lookup.end(len(to_send.rows))
        return before

    def _send(
        self,
        journal: Journal,
        ledger: Ledger | None,
        to_send: ToSend,
        sinks: Callable[[Plan], Sequence[OnOutcomes]],
        counted: tuple[Sequence[int], int | None],
        deleting: tuple[DeleteMissing | None, Sequence[int]],
    ) -> Delivered:
        batch_size = self.settings.batch_size
        steps: list[Step] = []
        missing: list[NotInSchedule] = []
        if to_send.build is not None:  # every project untouched: none of this importer's milestones to list
            the_plan = Plan(to_send.rows, to_send.build(), {}, batch_size)
        else:
            assert to_send.found is not None  # _look_up found them, or the delivery stopped before sending
            steps = to_send.found.steps(to_send.items, journal.mark)
            creates = [s.item for s in steps if s.action is Action.CREATE]
            unchanged = {s.item.row: s.milestone_id for s in steps if s.action is Action.UNCHANGED}
            the_plan = Plan([i.row for i in creates], creates, _ids(unchanged), batch_size)
            missing = find_missing(to_send.found.listed, steps)
        delete, blocked = deleting
        deleting_now = confirmed(missing, delete, blocked)  # before anything is sent: a wrong count sends nothing
        needed = -(-len(the_plan.rows) // batch_size)
        self.say(f"sending {len(the_plan.rows)} rows in {needed} request{'s' if needed != 1 else ''}")
        progress = _sending_progress(self.on_progress, the_plan.rows)
        recorder = Recorder(
            [journal, *([ledger] if ledger is not None else [])],
            [
                journal.record,
                *([self.on_outcomes] if self.on_outcomes else []),
                progress,
                *([ledger.settled] if ledger is not None else []),
                *sinks(the_plan),
            ],
        )
        conflicts = [conflict(s) for s in steps if s.action is Action.CONFLICT]
        if conflicts:
            recorder.record(conflicts)
        run = journal.mark
        uploader = Uploader(self.client, recorder=recorder, mark=run, say=self.say)
        result = uploader.run(the_plan, sent_before=journal.sent_before)
        outcomes = {**result.outcomes, **{o.row: o for o in conflicts}}
        stopped = result.stopped
        if stopped is None:
            outcomes.update(self._converge(the_plan, result.outcomes, result.items, counted, recorder, run))
            outcomes.update(_own_copies_removed(self.client, [s for s in steps if s.copies], outcomes, recorder))
        # (and the rows another upload created meanwhile with other values: upload.py)
        updates = [*(s for s in steps if s.action is Action.UPDATE), *result.late_updates]
        if updates and stopped is None:
            self.say(f"updating {len(updates)} milestone{'s' if len(updates) != 1 else ''} in place")
            changed, stopped = apply_updates(self.client, updates, recorder)
            outcomes.update(changed)
        elif updates:
            left = [Outcome(s.item.row, Status.NOT_SENT, s.milestone_id, (f"not sent: {stopped}",)) for s in updates]
            recorder.record(left)
            outcomes.update((o.row, o) for o in left)
        if missing and deleting_now and stopped is None:
            deletable = sum(not m.invoiced for m in missing)
            self.say(f"deleting {deletable} milestone{'s' if deletable != 1 else ''} not in this schedule")
            missing, stopped = delete_missing(self.client, missing)
        elif missing and deleting_now:  # the run stopped before the deletions: the same command does them
            missing = [replace(m, outcome="kept: on an invoice" if m.invoiced else f"not deleted: {stopped}")
                       for m in missing]  # fmt: skip
        elif missing:
            missing = kept(missing, delete, blocked)
        return Delivered(outcomes, stopped, result.requests, len(the_plan.existing), not_in_schedule=missing)

    def _converge(
        self,
        the_plan: Plan,
        outcomes: Mapping[int, Outcome],
        items: Mapping[int, Item],
        counted: tuple[Sequence[int], int | None],
        recorder: Recorder,
        run: str,
    ) -> dict[int, Outcome]:
        """One milestone per row created, whatever another machine sent meanwhile (converge.py)."""
        created = {row: (items[row], o.milestone_id) for row in the_plan.rows
                   if (o := outcomes.get(row)) is not None and o.status is Status.CREATED
                   and o.milestone_id is not None and row in items}  # fmt: skip
        if not created:
            return {}
        projects, before = counted
        derived = sum(1 for item, _ in created.values() if item.key.derived)
        try:
            after = self.client.imported_total(projects) if before is not None else None
            found = converge(self.client, created, every_key=others_wrote(before, after, derived), run=run)
        except (ImporterError, KeyboardInterrupt) as exc:  # what was created stands; a copy is a conflict next time
            self.say(f"could not check for copies made by another upload at the same time ({exc or 'Ctrl-C'}): "
                     "the next run reports any row held twice")  # fmt: skip
            return {}
        if found.outcomes:
            self.say(f"another upload sent {len(found.outcomes)} of these rows at the same time: one milestone "
                     f"each is kept, {len(found.removed)} copies deleted")  # fmt: skip
            recorder.record(found.outcomes)
        return {o.row: o for o in found.outcomes}

    def _not_sent(
        self, journal: Journal, to_send: ToSend, existing: dict[ImportKey, str], stopped: ImporterError
    ) -> Delivered:
        """Every row `not_sent`, except those found before the stop: `created` if the interrupted run sent them
        (as an uninterrupted run would report them), else `unchanged`."""
        reason = f"not sent: {stopped}"
        outcomes = {row: Outcome(row, Status.NOT_SENT, None, (reason,)) for row in to_send.rows}
        found = plan(to_send.items, existing, batch_size=self.settings.batch_size).existing
        for row, mid in found.items():
            outcomes[row] = Outcome(row, Status.CREATED if row in journal.sent_before else Status.UNCHANGED, mid)
        return Delivered(outcomes, stopped, {}, len(found))


def _ids(unchanged: dict[int, str | None]) -> dict[int, str]:
    return {row: mid for row, mid in unchanged.items() if mid is not None}


def _own_copies_removed(
    client: KantataClient, steps: Sequence[Step], outcomes: Mapping[int, Outcome], recorder: Recorder
) -> dict[int, Outcome]:
    """Delete the copies an interrupted run of this import made beside another upload's milestone (the plan keeps
    the other's, as converge.py does), and say so in their rows' outcomes."""
    if not steps:
        return {}
    refused = remove_copies(client, [mid for s in steps for mid in s.copies])
    noted = [replace(o, errors=(*o.errors, s.copies_note(not refused.intersection(s.copies))))
             for s in steps if (o := outcomes.get(s.item.row)) is not None]  # fmt: skip
    recorder.record(noted)
    return {o.row: o for o in noted}


def _sending_progress(on_progress: OnProgress | None, to_send: Sequence[int]) -> OnOutcomes:
    """Sending progress from the outcomes as they arrive: rows of the plan settled so far, once per batch."""
    rows = set(to_send)
    settled: set[int] = set()
    ticker = Ticker(for_stage(on_progress, Stage.SEND), len(rows), chunk=1)
    lock = threading.Lock()  # outcomes arrive from several sending threads

    def count(outcomes: Sequence[Outcome]) -> None:
        if on_progress is None:
            return
        with lock:
            settled.update(o.row for o in outcomes if o.row in rows and o.status is not Status.NOT_SENT)
            if len(settled) < len(rows):
                ticker.at(len(settled))
            elif ticker.done < len(rows):
                ticker.end(len(settled))

    return count
