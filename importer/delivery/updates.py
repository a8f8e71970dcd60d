"""Rows whose milestone exists with other values: each changed in place with one PUT, several at once.

A PUT carries only the fields that differ. One whose answer never came may have been carried out: as for a create,
the milestone is looked up before deciding. Holding the new values, it is `updated` with nothing sent again (were it
invoiced since, a second PUT would be refused and the row wrongly `rejected`); holding the old ones and invoiced
since, it is a `conflict`; gone, a `conflict`; otherwise the same PUT is sent again, which changes nothing if the
first one lands late. What Kantata refuses (the milestone invoiced meanwhile, a value it rejects) is `rejected` with
its message, and a milestone deleted meanwhile is a `conflict`. The first reason to stop (Kantata unreachable, the
token refused, Ctrl-C) stops the rest: they are `not_sent`, and the same command run again finds them still to
update.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from importer.delivery.planner import Step
from importer.delivery.recorder import Recorder
from importer.errors import ApiUnavailable, ImporterError, Interrupted
from importer.kantata import Cancelled, ChangeAnswer, KantataClient, OutcomeUnknown, changes
from importer.outcomes import Outcome, Status


def describe(changes: Mapping[str, tuple[Any, Any]]) -> tuple[str, ...]:
    """Each change as a person reads it: `amount_in_cents: 100000 -> 125000`."""
    return tuple(f"{name}: {_shown(old)} -> {_shown(new)}" for name, (old, new) in changes.items())


def conflict(step: Step) -> Outcome:
    """A conflict step's outcome: nothing is sent, and the reason and the changes the row would make are shown."""
    return Outcome(step.item.row, Status.CONFLICT, step.milestone_id, (step.reason,), describe(step.changes))


def _shown(value: Any) -> str:
    return "(blank)" if value is None else str(value)


def _changed(
    client: KantataClient, milestone_id: str, fields: dict[str, Any], stop: threading.Event
) -> ChangeAnswer | None:
    """PUT `fields`; after an answer that never came, the milestone as Kantata holds it decides: its new values
    are the answer (done), its absence a 404, and None when it was invoiced with the change not made."""
    tries = client.settings.max_attempts
    for attempt in range(tries):
        try:
            return client.change(milestone_id, fields, stop=stop, tried=attempt)
        except OutcomeUnknown as unknown:
            held = client.milestone(milestone_id, stop=stop)
            if held is None:
                return ChangeAnswer(404)
            if not changes(held, fields):
                return ChangeAnswer(200, milestone=held)
            if held.invoiced:
                return None
            if attempt + 1 == tries:
                raise ApiUnavailable(f"Kantata did not confirm PUT billing_milestones/{milestone_id} after {tries} "
                                     f"tries, and the milestone does not hold the change (last: {unknown.reason})",
                                     attempts=tries, body=unknown.body) from None  # fmt: skip
            client.backoff(attempt, cancel=stop)
    raise AssertionError("unreachable: the last try returns or raises")


def apply_updates(
    client: KantataClient, steps: Sequence[Step], recorder: Recorder
) -> tuple[dict[int, Outcome], ImporterError | None]:
    """PUT each step's changes; every step's row gets exactly one outcome, recorded as it comes."""
    outcomes: dict[int, Outcome] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def record(outcome: Outcome) -> None:
        with lock:
            outcomes[outcome.row] = outcome
            recorder.record([outcome])

    def update(step: Step) -> None:
        if stop.is_set():
            return
        assert step.milestone is not None  # an update always names its milestone
        try:
            answer = _changed(client, step.milestone.id, {name: new for name, (_, new) in step.changes.items()}, stop)
        except Cancelled:  # a stop while this PUT was retried: it may have landed, and a re-run finds out
            return
        changed = describe(step.changes)
        if answer is None:
            record(Outcome(step.item.row, Status.CONFLICT, step.milestone.id,
                           (f"milestone {step.milestone.id} was put on an invoice in Kantata while this run changed "
                            "it, before the change landed",), changed))  # fmt: skip
        elif answer.done:
            record(Outcome(step.item.row, Status.UPDATED, step.milestone.id, (step.note,) if step.note else (),
                           changed))  # fmt: skip
        elif answer.status == 404:
            record(Outcome(step.item.row, Status.CONFLICT, step.milestone.id,
                           (f"milestone {step.milestone.id} was deleted in Kantata while this run changed it",),
                           changed))  # fmt: skip
        else:
            messages = tuple(str(e.get("message") or e) for e in answer.errors) or (f"HTTP {answer.status}",)
            record(Outcome(step.item.row, Status.REJECTED, step.milestone.id, messages, changed))

    stopped: ImporterError | None = None
    pool = ThreadPoolExecutor(max(1, min(client.settings.concurrency, len(steps))), thread_name_prefix="kantata-put")
    # Each PUT hands itself over as it ends, on a queue: a Ctrl-C interrupts that wait at once and leaves no lock
    # held, where concurrent.futures.wait takes every future's lock in Python code a Ctrl-C can cut in two.
    finished: queue.SimpleQueue[Future[None]] = queue.SimpleQueue()
    futures: list[Future[None]] = [pool.submit(update, step) for step in steps]
    for future in futures:
        future.add_done_callback(finished.put)
    try:
        for _ in futures:
            if finished.get().exception() is not None:  # a bug, or what stops the run: raised below
                break
    except KeyboardInterrupt:
        stopped = Interrupted()
    finally:
        stop.set()  # steps not yet begun send nothing; those on the wire finish their request
        pool.shutdown(wait=True, cancel_futures=True)
    for future in futures:
        exc = None if future.cancelled() else future.exception()
        if exc is None:
            continue
        if not isinstance(exc, ImporterError):
            raise exc  # a bug: never turned into a row's outcome
        stopped = stopped or exc
    reason = f"not sent: {stopped}"
    missing = [Outcome(s.item.row, Status.NOT_SENT, s.milestone_id, (reason,)) for s in steps
               if s.item.row not in outcomes]  # fmt: skip
    for outcome in missing:
        record(outcome)
    return outcomes, stopped
