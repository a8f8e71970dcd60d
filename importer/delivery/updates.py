"""Rows whose milestone exists with other values: each changed in place with one PUT, several at once.

A PUT carries only the fields that differ. Sending the same values twice changes nothing, so a PUT whose answer
never came is simply sent again (the client retries it as it retries a GET); what Kantata refuses (the milestone
invoiced meanwhile, a value it rejects) is `rejected` with its message, and a milestone deleted meanwhile is a
`conflict`. The first reason to stop (Kantata unreachable, the token refused, Ctrl-C) stops the rest: they are
`not_sent`, and the same command run again finds them still to update.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

from importer.delivery.planner import Step
from importer.delivery.recorder import Recorder
from importer.errors import ImporterError, Interrupted
from importer.kantata import KantataClient
from importer.outcomes import Outcome, Status


def describe(changes: Mapping[str, tuple[Any, Any]]) -> tuple[str, ...]:
    """Each change as a person reads it: `amount_in_cents: 100000 -> 125000`."""
    return tuple(f"{name}: {_shown(old)} -> {_shown(new)}" for name, (old, new) in changes.items())


def _shown(value: Any) -> str:
    return "(blank)" if value is None else str(value)


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
        fields = {name: new for name, (_, new) in step.changes.items()}
        answer = client.change(step.milestone.id, fields)
        changed = describe(step.changes)
        if answer.done:
            record(Outcome(step.item.row, Status.UPDATED, step.milestone.id, changes=changed))
        elif answer.status == 404:
            record(Outcome(step.item.row, Status.CONFLICT, step.milestone.id,
                           (f"milestone {step.milestone.id} was deleted in Kantata while this run changed it",),
                           changed))  # fmt: skip
        else:
            messages = tuple(str(e.get("message") or e) for e in answer.errors) or (f"HTTP {answer.status}",)
            record(Outcome(step.item.row, Status.REJECTED, step.milestone.id, messages, changed))

    stopped: ImporterError | None = None
    pool = ThreadPoolExecutor(max(1, min(client.settings.concurrency, len(steps))), thread_name_prefix="kantata-put")
    futures: list[Future[None]] = [pool.submit(update, step) for step in steps]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
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
