"""Batches -> outcomes, exactly once: every sent row ends `created` with its id, `rejected` with Kantata's
message, or `not_sent` when the run had to stop.

Three rules make this safe without an idempotency key:
1. A row is `created` only when an id came back for its import key, or a look-up by key found it. Each batch's
   keys are looked up right before it leaves: a row another upload (another machine) created since the plan
   was made is that milestone, not sent again. Batches go round a ring from the upload's own starting point
   (order.py), so that two uploads racing do not send the same batch at the same moment.
2. Before anything is resent after an unknown outcome (timeout, dropped connection, 5xx) the batch's keys are
   looked up, and only the rows Kantata does not have go again. When Kantata may still be working on the
   request (no answer came, or a gateway's 502/504), its rows are looked up until it can no longer write them
   (Settings.writes_until after it left) before any is sent again: a dropped connection does not stop a create.
3. A refused batch (400/422) is looked up too, since Kantata may have created its valid items (UNCONFIRMED);
   the bad rows are then isolated by the `index` Kantata gives, or by halving the batch until each bad row
   stands alone and gets Kantata's own message.

The look-up after a refusal is skipped only once the run has *proof* that Kantata refuses batches whole: a row
that sat in a refused batch, was looked up and found absent, was later created on its own, so it was valid and
was refused with its batch anyway. Until then (and forever, once a look-up finds a partial create) every
refusal is looked up. This halves the cost of isolating bad rows against an all-or-nothing server.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Callable, Collection, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from importer.delivery.order import Ring
from importer.delivery.planner import Action, Plan, Step, living_plan
from importer.delivery.recorder import Recorder
from importer.delivery.updates import conflict
from importer.errors import ApiUnavailable, AuthError, ImporterError, Interrupted, JournalNotWritten, TokenRejected
from importer.kantata import Cancelled, Item, KantataClient, Milestone, OutcomeUnknown, marked
from importer.outcomes import Outcome, Status
from importer.settings import Settings

# Sending threads per request allowed in flight (the client's limiter still lets only `concurrency` requests
# out at once). A thread whose answer came back still has work to do on it outside its slot (reading the JSON,
# journalling, handing the rows to the results writer); a second thread, its batch ready, takes the slot at
# once instead of after that.
SENDERS_PER_SLOT = 2
SETTLE_POLL = Settings().settle_poll  # the default, for callers that have no Settings


@dataclass(slots=True)
class _Try:
    """One POST of a batch: when its rows' "sending" line was written (Settings.clock.monotonic), and when it left."""

    journalled: float
    left: float | None = None  # None: it never left (cancelled, or refused before a slot)


@dataclass(slots=True)
class UploadResult:
    outcomes: dict[int, Outcome]  # row -> outcome, for every row the plan holds
    stopped: ImporterError | None = None  # why the run stopped early, if it did
    refused_batches: int = 0  # 400/422 answers (each one costs isolation requests)
    unknown_outcomes: int = 0  # answers that never came (each one costs a look-up)
    requests: dict[str, int] = field(default_factory=dict)
    items: dict[int, Item] = field(default_factory=dict)  # row -> item, for every row handed to a sending thread
    # Rows another upload created while this one was sending, with other values: to update (no outcome yet).
    late_updates: list[Step] = field(default_factory=list)


class _Stop(Exception):
    """Raised in a sending thread when another thread has stopped the run: send nothing more."""


class Uploader:
    """Sends the batches of a plan, several at once (`Settings.concurrency`), each until every row of it settles.

    Batches are independent: a batch's rows are sent, looked up and isolated by one thread, so the rules above
    hold per batch whatever the others do. Shared state (outcomes, and the recorder that journals and reports
    them) is behind one lock; the recorder's `sending` and `withdrawn` are called outside it, from several threads at
    once (the journal locks its own writes). The first thread to hit a reason to stop (Kantata unreachable,
    token refused, the journal unwritable) stops the others before their next request; Ctrl-C does the same
    from the main thread, and in-flight batches are settled.
    """

    def __init__(
        self,
        client: KantataClient,
        *,
        recorder: Recorder | None = None,
        mark: str = "",
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.client = client
        self._say = say
        self.mark = mark  # this upload's mark in what it creates (kantata.marked); none when empty
        self._clock = client.settings.clock
        self.outcomes: dict[int, Outcome] = {}
        self._recorder = recorder if recorder is not None else Recorder([], [])
        self.refused = 0
        self.unknown = 0
        self.all_or_nothing = False  # proven: Kantata created nothing of a refused batch that held a valid row
        self._partial_seen = False  # seen: a refused batch had rows created
        self._refused_absent: set[int] = set()  # rows of refused batches that a look-up found absent
        self._lock = threading.RLock()
        self._stop: ImporterError | None = None
        self._halt = False
        self._items: dict[int, Item] = {}
        self.late_updates: list[Step] = []  # rows found created by another upload with other values
        self._sent: set[int] = set()  # rows handed to Kantata at least once (maybe created, maybe not)
        # Its own lock: a batch about to leave never waits for another thread recording its answer.
        self._sent_lock = threading.Lock()

    def run(self, plan: Plan, *, sent_before: Collection[int] = ()) -> UploadResult:
        """Send the plan. `sent_before`: rows an interrupted run of this import sent (from the journal); those
        Kantata has are reported `created`, as an uninterrupted run would have, rather than `unchanged`."""
        try:
            self._send_all(plan, sent_before)
        except KeyboardInterrupt:  # the first Ctrl-C, before the sending began or in its clean-up: escaping
            self._stop_with(Interrupted())  # run_upload, it would lose the workbook; nothing is on the wire
        # A Ctrl-C may have landed while the rows found before sending were being recorded: the rest are found.
        self._record(_found(plan, sent_before, self.outcomes))
        return self._result(plan)

    def _send_all(self, plan: Plan, sent_before: Collection[int]) -> None:
        self._record(_found(plan, sent_before, {}))
        count = -(-len(plan.rows) // plan.batch_size)
        ring = Ring(count, self.mark)
        batches: list[list[Item]] = []
        source = plan.batches()  # built as needed: the plan may build its items meanwhile, the first batches out
        workers = max(1, min(SENDERS_PER_SLOT * self.client.settings.concurrency, count))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="kantata-send")
        finished: queue.SimpleQueue[Future[None]] = queue.SimpleQueue()
        try:
            running = 0
            while True:
                while running < workers and self._stop is None and (index := ring.take()) is not None:
                    batches.extend(itertools.islice(source, max(0, index + 1 - len(batches))))
                    batch = batches[index]  # (an IndexError: the plan holds fewer items than rows, a bug)
                    self._items.update((i.row, i) for i in batch)
                    pool.submit(self._send_batch, batch, partial(ring.turn, index)).add_done_callback(finished.put)
                    running += 1
                if not running:  # every batch handed out, or the run stopped: the rest stay not_sent, unbuilt
                    break
                # A wait that a Ctrl-C interrupts at once, and back here once a batch is done: a StopSwitch's
                # press lands at the latest then.
                finished.get().result()  # _send_batch catches what stops a run; anything else is a bug, raised here
                running -= 1
        except KeyboardInterrupt:
            self._stop_with(Interrupted())
            self._say("stopping: nothing more is sent; the requests already on their way to Kantata are settled, "
                      "then the results workbook is written")  # fmt: skip
            pool.shutdown(wait=True, cancel_futures=True)  # threads finish the request they are in, no more
            self._resolve_in_flight()
        finally:
            self._halt = True  # every batch is done by now, unless a bug is on its way up: then stop the rest
            self._cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(plan.items, Generator):  # items being built: let it end now (and clean up after itself)
                plan.items.close()

    def _result(self, plan: Plan) -> UploadResult:
        stopped = self._stop
        reason = f"not sent: {stopped}" if stopped else "not sent"
        # A row sent whose answer never came (nor a look-up that found it) may be in Kantata after all: still
        # not_sent, the status a re-run settles, but not said to be unsent.
        unknown = (
            f"sent, and the run stopped ({stopped}) before Kantata confirmed it: it may have been created; "
            "run the same command again, which looks it up and sends it only if Kantata does not have it"
        )
        with self._sent_lock:
            sent = set(self._sent)
        later = {s.item.row for s in self.late_updates}
        self._record([Outcome(row, Status.NOT_SENT, None, (unknown if row in sent else reason,))
                      for row in plan.rows if row not in self.outcomes and row not in later])  # fmt: skip
        stats = self.client.stats
        return UploadResult(
            outcomes=self.outcomes,
            stopped=stopped,
            refused_batches=self.refused,
            unknown_outcomes=self.unknown,
            items=self._items,
            late_updates=self.late_updates,
            requests={
                "POST": stats.posts,
                "GET": stats.gets,
                "retries": stats.retries,
                "429": stats.throttled,
                "concurrency_lowest": self.client.limiter.lowest,
            },
        )

    def _stop_with(self, reason: ImporterError) -> None:
        with self._lock:
            if self._stop is None:
                self._stop = reason
        self._cancel()

    def _cancel(self) -> None:
        """No thread sends another POST: those waiting for a slot or a backoff give up at once."""
        self.client.cancel.set()
        self.client.limiter.wake()

    def _send_batch(self, batch: Sequence[Item], found_another: Callable[[], None] = lambda: None) -> None:
        """Look the batch's keys up right before it leaves, then send what Kantata does not have yet.
        `found_another`: called when another upload had sent some of it."""
        try:
            self._check_stop()
            self.send(self._not_sent_by_another(batch, found_another))
        except (_Stop, Cancelled):
            pass
        except (ApiUnavailable, AuthError, JournalNotWritten) as exc:
            self._stop_with(exc)

    def _not_sent_by_another(self, batch: Sequence[Item], found_another: Callable[[], None]) -> list[Item]:
        """The rows of a batch that Kantata does not hold yet. A row it holds was created since the upload looked
        its keys up at the start: by another upload of the same rows (on another machine; the lock keeps two
        apart on one), which creates it with the row's values as this one would. The row is then that
        milestone, as if it had been found at the start: `unchanged`, or updated after the sending when the
        other upload sent other values (its `late_updates`), or a conflict."""
        found = self.client.find_milestones((i.key for i in batch), stop=self.client.cancel)
        if not found:
            return list(batch)
        outcomes: list[Outcome] = []
        updates: list[Step] = []
        for item in batch:
            held = found.get(item.key)
            if not held:
                continue
            if any(m.made_by(self.mark) for m in held):  # this import's own, from a run that was interrupted
                outcomes.append(Outcome(item.row, Status.CREATED, own_or_oldest(held, self.mark)))
                continue
            found_another()
            step, note = _made_by_another(item, held)
            if step.action is Action.UPDATE:
                updates.append(replace(step, note=note))
            elif step.action is Action.UNCHANGED:
                outcomes.append(Outcome(item.row, Status.UNCHANGED, step.milestone_id, (note,)))
            else:
                outcomes.append(conflict(step))
        with self._lock:
            self.late_updates.extend(updates)
        self._record(outcomes)
        return [i for i in batch if i.key not in found]

    def _journal_ahead(self, batch: Sequence[Item]) -> _Try:
        """Before the slot wait: the recorder's `sending` (the journal's fsync) overlaps it, not holding the slot."""
        this_try = _Try(self._clock.monotonic())
        self._recorder.sending(batch)  # not under self._lock: its fsync holds up no thread recording answers
        return this_try

    def _sending(self, batch: Sequence[Item], this_try: _Try) -> None:
        """Just before a POST leaves: from now on Kantata may hold these rows. Their "sending" line was written
        before the slot wait; if that was longer ago than Settings.sending_ahead (a long wait, a retry after a
        backoff), it is written again now. Then the recorder's `left` says that it leaves (journal.tells_left)."""
        now = self._clock.monotonic()
        if now - this_try.journalled > self.client.settings.sending_ahead:
            this_try.journalled = now
            self._recorder.sending(batch)  # (raising JournalNotWritten, the try does not leave: not yet `_sent`)
        self._recorder.left(batch)  # the same
        with self._sent_lock:
            self._sent.update(i.row for i in batch)
        this_try.left = self._clock.monotonic()

    def _withdrawn(self, batch: Sequence[Item]) -> None:
        """A stop cancelled these rows before any request of theirs could write: none is in flight any more."""
        with self._sent_lock:
            self._sent.difference_update(i.row for i in batch)
        self._recorder.withdrawn(batch)

    def _check_stop(self) -> None:
        if self._stop is not None or self._halt:
            raise _Stop

    def send(self, items: Sequence[Item]) -> None:
        """Send one batch until every row in it has an outcome (or the run must stop)."""
        pending = [i for i in items if i.row not in self.outcomes]
        attempt = 0
        while pending:
            self._check_stop()
            batch = pending
            this_try = self._journal_ahead(batch)
            try:
                bodies = [marked(i.body, self.mark) for i in batch] if self.mark else [i.body for i in batch]
                answer = self.client.create(bodies, on_send=partial(self._sending, batch, this_try))
            except (Cancelled, TokenRejected, JournalNotWritten) as exc:  # a stop before this try left, the token
                # refused, or the line saying it leaves not written (then it did not leave; the journal's may
                # have been written before the ledger's failed, and is taken back here: else a re-run waits for
                # it). No try of these rows went unanswered, and this one wrote nothing: Kantata does not have
                # them. (401 only: a 403 might come after part of a batch was written, which Kantata does not say.)
                if attempt == 0 and not (isinstance(exc, TokenRejected) and exc.status != 401):
                    self._withdrawn(batch)
                raise
            except OutcomeUnknown as unknown:
                with self._lock:
                    self.unknown += 1
                pending = self._created_by_lookup(pending)
                if pending and unknown.running and this_try.left is not None:
                    pending = self._awaited(pending, this_try.left + self.client.settings.writes_until)
                attempt += 1
                if pending and attempt >= self.client.settings.max_attempts:
                    raise ApiUnavailable(
                        f"Kantata gave no usable answer for a batch of {len(pending)} rows after {attempt} tries "
                        f"(last: {unknown.reason})",
                        attempts=attempt,
                        body=unknown.body,
                    ) from None
                if pending:
                    self._check_stop()
                    self.client.backoff(attempt, cancel=self.client.cancel)
                continue
            if answer.refused:
                with self._lock:
                    self.refused += 1
                self._isolate(pending, answer.errors)
                return
            created = [i for i in pending if i.key in answer.ids]
            with self._lock:
                if not self._partial_seen and any(i.row in self._refused_absent for i in created):
                    self.all_or_nothing = True
            self._record([Outcome(i.row, Status.CREATED, answer.ids[i.key]) for i in created])
            # An answer may list only part of what it created (paged results): look the rest up.
            pending = self._created_by_lookup([i for i in pending if i.key not in answer.ids])
            attempt += 1
            if pending and attempt >= self.client.settings.max_attempts:
                raise ApiUnavailable(
                    f"Kantata accepted a batch but {len(pending)} of its rows could not be found afterwards",
                    attempts=attempt,
                )

    def _isolate(self, pending: list[Item], errors: list[dict[str, Any]]) -> None:
        if self.all_or_nothing and not self._partial_seen:  # another thread may have seen a partial create since
            remaining = pending
        else:
            remaining = self._created_by_lookup(pending)
            with self._lock:
                self._partial_seen |= len(remaining) < len(pending)
                self._refused_absent.update(i.row for i in remaining)
        if not remaining:
            return
        by_index: dict[int, list[str]] = {}
        for error in errors:
            index = error.get("index")
            if isinstance(index, int) and 0 <= index < len(pending):
                by_index.setdefault(index, []).append(_message(error))
        if by_index:
            bad = {pending[i].row: msgs for i, msgs in by_index.items()}
            self._record([_rejected(i.row, bad[i.row]) for i in remaining if i.row in bad])
            rest = [i for i in remaining if i.row not in bad]
            if rest:
                self.send(rest)
        elif len(remaining) == 1:
            self._record([_rejected(remaining[0].row, [_message(e) for e in errors])])
        else:
            half = len(remaining) // 2
            self.send(remaining[:half])
            self.send(remaining[half:])

    def _awaited(self, items: list[Item], until: float) -> list[Item]:
        """A request that got no answer may still be writing: its rows are looked up (every Settings.settle_poll
        seconds at most) until they are all there or `until` (Settings.clock.monotonic) has passed:
        Settings.writes_until after it left, when Kantata no longer writes for it (a resumed run waits the same:
        delivery/settle.py). Only what is missing then is sent again. A stop ends the wait with Cancelled: the
        rows stay in flight, for the next run to settle."""
        poll = self.client.settings.settle_poll
        pause = min(0.1, poll)  # doubling up to settle_poll: a request that was about to finish is found at once
        while items and (left := until - self._clock.monotonic()) > 0:
            if self._clock.wait(self.client.cancel, min(pause, left)):
                raise Cancelled
            items = self._created_by_lookup(items)
            pause = min(pause * 2, poll)
        return items

    def _created_by_lookup(self, items: Sequence[Item]) -> list[Item]:
        """Record the items Kantata already has as created; return the ones it does not have. Where a key is held
        twice (another upload sent the row too), this upload's is the one with its mark, else the oldest; a row
        that gives a message of its own carries no mark, and is then a conflict naming them all."""
        if not items:
            return []
        found = self.client.find_milestones(i.key for i in items)
        settled: list[Outcome] = []
        for item in items:
            held = found.get(item.key)
            if not held:
                continue
            if len(held) > 1 and self.mark and marked(item.body, self.mark) is item.body:
                ids = ", ".join(m.id for m in held)
                settled.append(Outcome(item.row, Status.CONFLICT, None, (
                    f"its answer was lost while another upload sent this row too: milestones {ids} hold its "
                    "external reference, and a row with an External message of its own carries no mark to tell "
                    "which one this upload made; delete all but one in Kantata",)))  # fmt: skip
            else:
                settled.append(Outcome(item.row, Status.CREATED, own_or_oldest(held, self.mark)))
        self._record(settled)
        return [i for i in items if i.key not in found]

    def _resolve_in_flight(self) -> None:
        """After Ctrl-C the batches on the wire may have been written: one look-up settles them."""
        # What cannot be settled now stays not_sent: the next run looks those keys up before sending.
        with self._lock, self._sent_lock:
            unsettled = [row for row in self._sent if row not in self.outcomes]
        items = [self._items[row] for row in unsettled if row in self._items]
        with contextlib.suppress(ImporterError, KeyboardInterrupt):
            self._created_by_lookup(items)

    def _record(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        with self._lock:
            for outcome in outcomes:
                self.outcomes[outcome.row] = outcome
            self._recorder.record(outcomes)


def _found(plan: Plan, sent_before: Collection[int], settled: Collection[int]) -> list[Outcome]:
    """The outcomes of the rows Kantata had before sending, but those in `settled`: `created` when an
    interrupted run of this import sent them, else `unchanged`."""
    return [Outcome(row, Status.CREATED if row in sent_before else Status.UNCHANGED, mid)
            for row, mid in plan.existing.items() if row not in settled]  # fmt: skip


def _message(error: dict[str, Any]) -> str:
    text = str(error.get("message") or "refused")
    fld = error.get("field")
    return f"Kantata: {text}" + (f" (field {fld})" if fld else "")


def _rejected(row: int, messages: list[str]) -> Outcome:
    return Outcome(row, Status.REJECTED, None, tuple(dict.fromkeys(messages)))


def _made_by_another(item: Item, held: Sequence[Milestone]) -> tuple[Step, str]:
    """The step of a row whose key another upload created while this one was sending (`held`: oldest first), and
    the note its outcome carries. Copies beside the oldest that other uploads made (their mark) are theirs to
    delete, and the row is the oldest (converge.py); a copy made by hand or by another tool makes the key a
    conflict, as in any plan."""
    if all(m.runs and not m.invoiced for m in held[1:]):
        [step] = living_plan([item], {}, {item.key: held[:1]})
    else:
        [step] = living_plan([item], {}, {item.key: held})
    copies = f"; the upload that made {', '.join(m.id for m in held[1:])} deletes it" if held[1:] else ""
    return step, f"another upload created this row while this one was sending: milestone {held[0].id}{copies}"


def own_or_oldest(held: Sequence[Milestone], run: str) -> str:
    """The id of the milestone (of those holding one key, lowest id first) that the upload marked `run` created,
    else the oldest."""
    return next((m.id for m in held if m.made_by(run)), held[0].id)
