"""One place where a row's fate, and each request's comings and goings, reach every sink that keeps them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from importer.kantata import Item
from importer.logevents import DECISION, emit
from importer.outcomes import Outcome, Status

OnOutcomes = Callable[[Sequence[Outcome]], None]
OnSending = Callable[[Sequence[Item]], None]

_log = logging.getLogger(__name__)
# Fates a person reading the log should not miss: the row is not in Kantata as the schedule has it.
_TROUBLE = frozenset({Status.REJECTED, Status.CONFLICT, Status.NOT_SENT})


class RequestSink(Protocol):
    """Keeps track of requests on the wire: the journal and the ledger."""

    def sending(self, items: Sequence[Item]) -> None: ...
    def left(self, items: Sequence[Item]) -> None: ...
    def withdrawn(self, items: Sequence[Item]) -> None: ...


class Recorder:
    """Passes each batch's comings and goings, and each row's fate, to every sink in the order given.

    The journal comes first in both lists: a row is reported (to the caller, the results workbook, the progress)
    only once a re-run could find it. Called from several sending threads at once; each sink locks its own state.
    """

    def __init__(self, requests: Sequence[RequestSink], outcomes: Sequence[OnOutcomes]) -> None:
        self._requests = tuple(requests)
        self._outcomes = tuple(outcomes)

    def sending(self, items: Sequence[Item]) -> None:
        for sink in self._requests:
            sink.sending(items)

    def left(self, items: Sequence[Item]) -> None:
        for sink in self._requests:
            sink.left(items)

    def withdrawn(self, items: Sequence[Item]) -> None:
        for sink in self._requests:
            sink.withdrawn(items)

    def record(self, outcomes: Sequence[Outcome]) -> None:
        for sink in self._outcomes:
            sink(outcomes)
        log_decisions(outcomes)


def log_decisions(outcomes: Sequence[Outcome]) -> None:
    """One `decision` event per row (logevents.py): its row, status and milestone id; for a row Kantata refused,
    or one that is not as the schedule has it, the reason; for an update, the names of the fields changed
    (never their values: those are the row's contents)."""
    if not _log.isEnabledFor(logging.INFO):  # nobody listens: not a call per row
        return
    for o in outcomes:
        level = logging.WARNING if o.status in _TROUBLE else logging.INFO
        fields = [change.split(":", 1)[0] for change in o.changes]
        reason = "; ".join(o.errors) if o.status in _TROUBLE else None
        said = f"row {o.row}: {o.status.value}" + (f" {o.milestone_id}" if o.milestone_id else "")
        emit(_log, level, DECISION, said + (f" ({reason})" if reason else ""), row=o.row, status=o.status.value,
             milestone_id=o.milestone_id, reason=reason, changed=fields or None)  # fmt: skip
