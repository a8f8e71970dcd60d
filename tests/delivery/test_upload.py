"""The uploader (importer/delivery/upload.py) against the real sandbox on loopback: batches of at most
batch_size, exactly one outcome per row, and each kind of answer Kantata gives handled as the rules say."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from importer.delivery.planner import Plan, plan
from importer.delivery.recorder import Recorder
from importer.delivery.upload import Uploader, UploadResult
from importer.kantata.client import KantataClient
from importer.kantata.keys import Item, build_items
from importer.outcomes import Outcome, Status
from importer.sandbox.server import DEFAULT_TOKEN
from importer.schedule.loader import load_schedule
from importer.schedule.schema import validate_rows
from importer.settings import Secret, Settings
from tests.conftest import MakeSchedule, good_row
from tests.fake_clock import FakeClock

RESERVED = "Reserved title"


class Sink:
    """A request sink, as the Recorder takes them, that keeps which rows each try held and when it left (with
    a hook on the n-th POST leaving, to change the sandbox's faults between tries)."""

    def __init__(self, on_left: Callable[[int], None] | None = None) -> None:
        self.journalled: list[list[int]] = []
        self.left_rows: list[list[int]] = []
        self.withdrawn_rows: list[list[int]] = []
        self._on_left = on_left
        self._lock = threading.Lock()  # called from several sending threads at once

    def sending(self, items: Sequence[Item]) -> None:
        with self._lock:
            self.journalled.append([i.row for i in items])

    def left(self, items: Sequence[Item]) -> None:
        with self._lock:
            self.left_rows.append([i.row for i in items])
            n = len(self.left_rows)
        if self._on_left is not None:
            self._on_left(n)

    def withdrawn(self, items: Sequence[Item]) -> None:
        with self._lock:
            self.withdrawn_rows.append([i.row for i in items])


def _items(make_schedule: MakeSchedule, rows: list[list[Any]]) -> list[Item]:
    """The rows as the pipeline makes them: loaded, checked and keyed from a real workbook."""
    validated = validate_rows(load_schedule(make_schedule(rows)))
    assert validated.issues == []
    items, issues = build_items(validated.rows)
    assert issues == []
    return items


def _upload(sandbox: Any, the_plan: Plan, sink: Sink, sleeps: list[float], *, concurrency: int = 1,
            heard: list[Outcome] | None = None) -> UploadResult:  # fmt: skip
    clock = FakeClock()  # the waits are recorded, not slept
    settings = Settings(base_url=sandbox.url, concurrency=concurrency, max_attempts=4, backoff_base=0.001,
                        clock=clock)  # fmt: skip
    client = KantataClient(settings, Secret(DEFAULT_TOKEN))
    said: list[Outcome] = [] if heard is None else heard
    try:
        return Uploader(client, recorder=Recorder([sink], [said.extend])).run(the_plan)
    finally:
        client.close()
        sleeps.extend(clock.sleeps)


def _ids_in_sandbox(sandbox: Any) -> dict[str, str]:
    """Title -> id of every milestone the sandbox holds; a title twice fails the test (created twice)."""
    milestones = sandbox.milestones()
    titles = Counter(str(m["title"]) for m in milestones)
    assert [t for t, n in titles.items() if n > 1] == []
    return {str(m["title"]): str(m["id"]) for m in milestones}


def _titles(items: Sequence[Item]) -> dict[int, str]:
    return {i.row: str(i.body["title"]) for i in items}


@pytest.mark.parametrize(("rows", "batch_size", "concurrency"), [(23, 5, 1), (23, 5, 3), (7, 100, 2), (6, 1, 2)])
def test_batches_of_at_most_batch_size_and_exactly_one_outcome_per_row(
    sandbox: Any, make_schedule: MakeSchedule, rows: int, batch_size: int, concurrency: int
) -> None:
    items = _items(make_schedule, [good_row(n) for n in range(rows)])
    sink = Sink()
    heard: list[Outcome] = []
    result = _upload(sandbox, plan(items, {}, batch_size=batch_size), sink, [], concurrency=concurrency, heard=heard)
    sent = sink.left_rows
    assert all(1 <= len(batch) <= batch_size for batch in sent)
    assert sorted(row for batch in sent for row in batch) == sorted(i.row for i in items)  # each row sent once
    assert len(sent) == -(-rows // batch_size) == sandbox.stats()["POST /billing_milestones"]
    assert sorted(sink.journalled) == sorted(sent)  # each POST's rows were journalled before it left
    assert Counter(o.row for o in heard) == Counter(i.row for i in items)  # each row told once, no more
    ids = _ids_in_sandbox(sandbox)
    titles = _titles(items)
    assert result.outcomes == {row: Outcome(row, Status.CREATED, ids[titles[row]]) for row in titles}
    assert result.stopped is None and result.refused_batches == 0 and result.unknown_outcomes == 0


def test_a_500_is_looked_up_then_the_batch_is_sent_again(sandbox: Any, make_schedule: MakeSchedule) -> None:
    items = _items(make_schedule, [good_row(n) for n in range(3)])
    sandbox.set_faults(fail_every=1, fail_status=500)  # answered before anything is written
    sink = Sink(on_left=lambda n: sandbox.set_faults(fail_every=0) if n == 2 else None)
    sleeps: list[float] = []
    heard: list[Outcome] = []
    result = _upload(sandbox, plan(items, {}, batch_size=10), sink, sleeps, heard=heard)
    stats = sandbox.stats()
    assert stats["500"] == 1 and stats["POST /billing_milestones"] == 2
    assert stats["GET /billing_milestones"] >= 1  # looked up before the resend: none of them was there
    assert len(sleeps) == 1 and result.unknown_outcomes == 1 and result.requests["retries"] == 1
    ids = _ids_in_sandbox(sandbox)
    assert len(ids) == 3 and sorted(o.row for o in heard) == sorted(i.row for i in items)
    assert {o.status for o in result.outcomes.values()} == {Status.CREATED}


def test_a_batch_written_but_unanswered_is_found_not_sent_again(sandbox: Any, make_schedule: MakeSchedule) -> None:
    items = _items(make_schedule, [good_row(n) for n in range(4)])
    sandbox.set_faults(drop_after_write_every=1)
    result = _upload(sandbox, plan(items, {}, batch_size=10), Sink(), [])
    assert sandbox.stats()["POST /billing_milestones"] == 1 and sandbox.stats()["drop_after_write"] == 1
    ids = _ids_in_sandbox(sandbox)
    titles = _titles(items)
    assert result.outcomes == {row: Outcome(row, Status.CREATED, ids[titles[row]]) for row in titles}


@pytest.mark.parametrize("error_index", [False, True])
def test_a_rejected_row_gets_kantatas_message_and_the_others_are_created(
    sandbox: Any, make_schedule: MakeSchedule, error_index: bool
) -> None:
    """Without an index in the errors, the batch is halved until the bad row stands alone; with one, it is
    singled out at once. Either way it carries Kantata's own words."""
    rows = [good_row(n) for n in range(5)]
    rows[3][0] = RESERVED
    items = _items(make_schedule, rows)
    sandbox.set_faults(reject_title=RESERVED, error_index=error_index)
    heard: list[Outcome] = []
    result = _upload(sandbox, plan(items, {}, batch_size=5), Sink(), [], heard=heard)
    bad = items[3].row
    assert result.outcomes[bad] == Outcome(bad, Status.REJECTED, None, ("Kantata: Title is reserved (field title)",))
    ids = _ids_in_sandbox(sandbox)
    assert sorted(ids) == sorted(str(i.body["title"]) for i in items if i.row != bad)
    assert {o.status for r, o in result.outcomes.items() if r != bad} == {Status.CREATED}
    assert Counter(o.row for o in heard) == Counter(i.row for i in items)
    # With the index: the batch, then its other 4 rows. Halving 5 rows with the bad one 4th: 5, then 2 and 3,
    # then 1 and 2, then 1 and 1; each of the 4 requests holding it refused.
    posts, refused = (2, 1) if error_index else (7, 4)
    assert sandbox.stats()["POST /billing_milestones"] == posts and result.refused_batches == refused


def test_a_429_is_waited_out_as_long_as_retry_after_says(sandbox: Any, make_schedule: MakeSchedule) -> None:
    items = _items(make_schedule, [good_row(n) for n in range(3)])
    # The second request, the POST after the batch's look-up, answers 429.
    sandbox.set_faults(rate_limit_every=2, retry_after=0.02)
    sink = Sink(on_left=lambda n: sandbox.set_faults(rate_limit_every=0) if n == 2 else None)
    sleeps: list[float] = []
    result = _upload(sandbox, plan(items, {}, batch_size=10), sink, sleeps)
    assert sleeps == [0.02]  # Kantata's Retry-After, not the client's own backoff
    assert sandbox.stats()["429"] == 1 and result.requests["429"] == 1
    assert sink.left_rows == [[i.row for i in items]] * 2  # the same batch again, once
    assert len(_ids_in_sandbox(sandbox)) == 3 and result.unknown_outcomes == 0
    assert {o.status for o in result.outcomes.values()} == {Status.CREATED}


def test_rows_kantata_already_has_are_not_sent(sandbox: Any, make_schedule: MakeSchedule) -> None:
    items = _items(make_schedule, [good_row(n) for n in range(3)])
    the_plan = plan(items, {items[1].key: "424242"}, batch_size=10)
    sink = Sink()
    result = _upload(sandbox, the_plan, sink, [])
    assert sink.left_rows == [[items[0].row, items[2].row]]
    assert result.outcomes[items[1].row] == Outcome(items[1].row, Status.UNCHANGED, "424242")
    assert len(_ids_in_sandbox(sandbox)) == 2


def test_a_run_that_must_stop_still_gives_every_row_one_outcome(sandbox: Any, make_schedule: MakeSchedule) -> None:
    """The token refused on the first POST: nothing was written, and every row says it was not sent, and why."""
    items = _items(make_schedule, [good_row(n) for n in range(12)])
    sandbox.set_token("another token")
    heard: list[Outcome] = []
    sink = Sink()
    result = _upload(sandbox, plan(items, {}, batch_size=4), sink, [], heard=heard)
    assert result.stopped is not None and sandbox.milestones() == []
    withdrawn = {r for batch in sink.withdrawn_rows for r in batch}
    assert {r for batch in sink.left_rows for r in batch} <= withdrawn  # refused, so none is in flight any more
    assert withdrawn <= {r for batch in sink.journalled for r in batch}
    assert Counter(o.row for o in heard) == Counter(i.row for i in items)
    assert {o.status for o in result.outcomes.values()} == {Status.NOT_SENT}
    assert all(o.errors == (f"not sent: {result.stopped}",) for o in result.outcomes.values())


def test_a_ctrl_c_while_the_rows_found_before_sending_are_recorded_leaves_none_without_an_outcome(
    sandbox: Any, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Ctrl-C lands halfway through recording the rows Kantata already had (the first thing an upload does):
    the upload stops as after any Ctrl-C, nothing is sent, and every row still ends with its outcome."""
    items = _items(make_schedule, [good_row(n) for n in range(6)])
    the_plan = plan(items, {i.key: f"4242{n}" for n, i in enumerate(items[:4])}, batch_size=10)
    record = Uploader._record
    calls: list[int] = []

    def interrupted_halfway(self: Uploader, outcomes: Sequence[Outcome]) -> None:
        calls.append(len(outcomes))
        if len(calls) == 1:
            record(self, outcomes[:2])
            raise KeyboardInterrupt
        record(self, outcomes)

    monkeypatch.setattr(Uploader, "_record", interrupted_halfway)
    sink = Sink()
    result = _upload(sandbox, the_plan, sink, [])
    assert result.stopped is not None and sink.left_rows == [] and sandbox.milestones() == []
    assert {row: o.status for row, o in result.outcomes.items()} == {
        **{i.row: Status.UNCHANGED for i in items[:4]},
        **{i.row: Status.NOT_SENT for i in items[4:]},
    }
    assert [result.outcomes[i.row].milestone_id for i in items[:4]] == ["42420", "42421", "42422", "42423"]
