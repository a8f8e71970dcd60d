"""One place where a row's fate, and each request's comings and goings, reach every sink that keeps them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from importer.kantata import Item
from importer.outcomes import Outcome

OnOutcomes = Callable[[Sequence[Outcome]], None]
OnSending = Callable[[Sequence[Item]], None]


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
