"""Several batches in flight: the limiter's arithmetic, and what the sandbox sees of a real upload."""

from __future__ import annotations

import _thread
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

import importer.delivery.upload
import importer.pipeline
from importer.delivery.journal import Journal
from importer.kantata.client import KantataClient
from importer.kantata.concurrency import Cancelled, Limiter
from importer.pipeline import run_upload
from importer.sandbox.server import DEFAULT_TOKEN
from importer.settings import Secret, Settings
from tests.fake_clock import FakeClock


def test_a_burst_of_429s_halves_the_limit_once_and_successes_grow_it_back() -> None:
    limiter = Limiter(8, grow_after=3)
    with limiter.slot() as first, limiter.slot() as second:
        pass
    limiter.throttled(first)
    limiter.throttled(second)  # sent before the decrease: the same burst
    assert limiter.limit == 4 and limiter.decreases == 1
    with limiter.slot() as later:
        pass
    limiter.throttled(later)
    assert limiter.limit == 2 and limiter.lowest == 2
    for _ in range(3):
        limiter.succeeded()
    assert limiter.limit == 3
    for _ in range(100):
        limiter.succeeded()
    assert limiter.limit == 8  # never above what the user allowed


def test_the_limit_never_goes_below_one() -> None:
    limiter = Limiter(2)
    for _ in range(5):
        with limiter.slot() as generation:
            pass
        limiter.throttled(generation)
    assert limiter.limit == 1


def test_a_429s_wait_holds_every_request_and_the_one_told_to_wait_goes_first() -> None:
    """Kantata's Retry-After is for the account. Another thread's request waits it out, and then the held request
    (back from its own wait) leaves before it, even with room for one request only. Without the hold, another
    thread's cycle of requests could take every turn, and the held request see 429 until its tries ran out."""
    limiter = Limiter(1)
    order: list[str] = []
    over = time.monotonic() + 3.0  # (3 s, not 1: a thread's start and the 0.2 s below fit in it on a busy machine)
    limiter.hold(3.0)  # this (main) thread's request was answered 429, Retry-After 3 s
    waiting = threading.Event()

    def other() -> None:
        waiting.set()
        with limiter.slot():
            order.append("other")

    thread = threading.Thread(target=other)
    thread.start()
    waiting.wait(5)
    time.sleep(0.2)  # the other thread is at the slot now, with room for it, and held
    assert order == []
    with limiter.slot():  # the held request's next try (its own wait cut short, as a test's sleep is): first
        order.append("held")
        assert time.monotonic() < over  # the hold does not hold the request it was made for
    thread.join(5)
    assert order == ["held", "other"]


def test_a_request_waiting_out_a_hold_is_cancelled_by_a_stop() -> None:
    """A stop (Ctrl-C) during another request's 429 hold sends nothing: the waiting request is cancelled when
    woken, not sent when the hold ends."""
    limiter = Limiter(2)
    limiter.hold(5.0)  # this (main) thread's request was answered 429
    stop = threading.Event()
    outcome: list[str] = []

    def other() -> None:
        try:
            with limiter.slot(stop.is_set):
                outcome.append("sent")
        except Cancelled:
            outcome.append("cancelled")

    thread = threading.Thread(target=other)
    thread.start()
    time.sleep(0.2)
    stop.set()
    limiter.wake()
    thread.join(2)
    assert outcome == ["cancelled"]


def test_no_more_requests_in_flight_than_the_limit() -> None:
    limiter = Limiter(3)
    active = 0
    most = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal active, most
        with limiter.slot():
            with lock:
                active += 1
                most = max(most, active)
            time.sleep(0.01)
            with lock:
                active -= 1

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 3


@pytest.mark.parametrize("bad", [0, 17])
def test_concurrency_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 16"):
        Limiter(bad)


def _schedule(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "s.csv"
    path.write_text("title,amount_in_cents,workspace_id\n" + "".join(f"R{i},{i},1001\n" for i in range(n)))
    return path


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_sandbox_sees_as_many_requests_at_once_as_allowed(sandbox: Any, tmp_path: Path, concurrency: int) -> None:
    sandbox.reset()
    sandbox.set_faults(latency=0.03)
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, concurrency=concurrency)
    result = run_upload(_schedule(tmp_path, 200), settings)
    assert result.counts["created"] == 200 and len(sandbox.milestones()) == 200
    assert sandbox.most_in_flight == concurrency


def test_429s_bring_the_concurrency_down_and_every_row_still_lands_once(sandbox: Any, tmp_path: Path) -> None:
    sandbox.reset()
    sandbox.set_faults(rate_limit_every=4, retry_after=0.01, latency=0.01)
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, concurrency=8,
                        backoff_base=0.001, max_attempts=10)  # fmt: skip
    result = run_upload(_schedule(tmp_path, 300), settings)
    assert result.counts["created"] == 300
    assert sorted(str(m["title"]) for m in sandbox.milestones()) == sorted(f"R{i}" for i in range(300))
    assert result.requests["429"] > 0 and result.requests["concurrency_lowest"] < 8


def test_ctrl_c_during_a_long_look_up_sends_no_further_get(sandbox: Any) -> None:
    """Every GET answered 429 (Retry-After 1 s): the look-up threads are waiting to retry, or waiting for the
    429's hold to pass before their first request (concurrency.Limiter.hold), when Ctrl-C comes; they stop there
    instead of sending anything more."""
    import os
    import signal

    from importer.kantata.client import KantataClient
    from importer.kantata.keys import SERVICE_MODEL, SERVICE_NAME, ImportKey

    sandbox.reset()
    sandbox.set_faults(rate_limit_every=1, retry_after=1)
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), concurrency=4, max_attempts=6)
    client = KantataClient(settings, Secret(DEFAULT_TOKEN))
    keys = [ImportKey(SERVICE_NAME, SERVICE_MODEL, f"ki1-{n:024x}") for n in range(2000)]  # 10 look-ups
    seen_at_interrupt: list[int] = []

    def interrupt() -> None:
        while sandbox.stats().get("GET /billing_milestones", 0) < 1:  # the first is answered 429
            time.sleep(0.01)
        time.sleep(0.3)  # every thread now waits: out its Retry-After, or for the hold to pass
        seen_at_interrupt.append(sandbox.stats()["GET /billing_milestones"])
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: it wakes the main thread from its wait

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        client.find_existing(keys)
    client.close()
    assert 1 <= seen_at_interrupt[0] <= 4  # at most one request per thread before the first 429 came back
    time.sleep(1.5)  # past every Retry-After and hold: a thread still waiting would have sent by now
    # no retry, and no query not yet started, was sent
    assert sandbox.stats()["GET /billing_milestones"] == seen_at_interrupt[0]


def _posts(sandbox: Any) -> int:
    """POSTs that have reached the sandbox (with latency_covers_work, counted when they arrive)."""
    return int(sandbox.stats().get("POST /billing_milestones", 0))


def test_the_next_batch_leaves_while_the_answer_before_it_is_still_being_recorded(sandbox: Any, tmp_path: Path) -> None:
    """One request in flight at most, yet the second batch does not wait for the first's answer to be journalled
    and handed to the results: a spare sending thread takes the free slot at once (upload.SENDERS_PER_SLOT)."""
    sandbox.reset()
    sandbox.set_faults(latency=0.1, latency_covers_work=True)
    posts_seen: list[int] = []

    def slow_to_record(outcomes: Any) -> None:
        if not posts_seen:  # the first answer: has the second batch reached Kantata while this one is recorded?
            deadline = time.monotonic() + 3
            while _posts(sandbox) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
        posts_seen.append(_posts(sandbox))

    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, concurrency=1)
    result = run_upload(_schedule(tmp_path, 30), settings, on_outcomes=slow_to_record)
    assert result.counts["created"] == 30 and len(sandbox.milestones()) == 30
    assert posts_seen[0] == 2
    assert sandbox.most_in_flight == 1  # the limiter still let one request out at a time


def test_a_batch_whose_slot_came_late_is_journalled_again_just_before_it_leaves(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's "sending" line is written before its thread waits for a slot (the fsync overlaps the wait); a
    request leaving more than Settings.sending_ahead after that line writes a fresh one first. So every request
    leaves within sending_ahead of a line of its rows, which is what a resumed run's wait counts on.

    Timed by a clock that only Kantata's answers move, 10 s each: the spare thread waits a whole request for
    the single slot, and no other time passes from a line's writing to its POST."""
    ahead = 2.0
    clock = FakeClock()
    sandbox.reset()
    create = sandbox._routes["POST /billing_milestones"]

    def slow_create(*args: Any) -> Any:
        time.sleep(0.05)  # (real time: the spare thread is at its slot wait by now)
        clock.advance(10.0)
        return create(*args)

    monkeypatch.setitem(sandbox._routes, "POST /billing_milestones", slow_create)
    lines: list[tuple[float, tuple[int, ...]]] = []
    posts: list[tuple[float, tuple[int, ...]]] = []
    journal_sending, post = Journal.sending, requests.Session.post

    def sending(self: Journal, items: Any) -> None:
        journal_sending(self, items)  # recorded once written: the line is durable from here on
        lines.append((clock.monotonic(), tuple(i.row for i in items)))

    def posting(self: requests.Session, url: str, **kwargs: Any) -> requests.Response:
        if url.endswith("/billing_milestones") and "data" in kwargs:
            titles = [m["title"] for m in json.loads(kwargs["data"])["billing_milestones"]]
            posts.append((clock.monotonic(), tuple(int(t[1:]) + 2 for t in titles)))  # R0 is on row 2
        return post(self, url, **kwargs)

    monkeypatch.setattr(Journal, "sending", sending)
    monkeypatch.setattr(requests.Session, "post", posting)
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, concurrency=1,
                        clock=clock, sending_ahead=ahead)  # fmt: skip
    result = run_upload(_schedule(tmp_path, 40), settings)
    assert result.counts["created"] == 40 and len(posts) == 4
    for at, rows in posts:
        written = [t for t, r in lines if r == rows and t <= at]
        assert written and at - max(written) <= ahead, (rows, [round(at - t, 3) for t in written])
    # Both ways were taken: lines written ahead of a slot wait, and again for the batches whose wait was long.
    assert len(lines) > len(posts) and any(at - min(t for t, r in lines if r == rows) > ahead for at, rows in posts)


def test_the_projects_currencies_are_asked_while_the_batches_are_sent(sandbox: Any, tmp_path: Path) -> None:
    """Not one more round trip after the last answer: by the time the last batch is recorded, it is answered."""
    sandbox.reset()
    sandbox.set_faults(latency=0.05)
    asked: list[int] = []

    def note(outcomes: Any) -> None:
        asked.append(int(sandbox.stats().get("GET /workspaces", 0)))

    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, concurrency=1)
    result = run_upload(_schedule(tmp_path, 60), settings, on_outcomes=note)
    assert result.counts["created"] == 60 and len(asked) == 6
    assert asked[-1] == 1 and sandbox.stats()["GET /workspaces"] == 1
    assert [t.currency for t in result.totals] == ["USD"]  # and its answer made it into the totals


def test_the_first_batches_leave_before_the_last_requests_are_built(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_file_order: None
) -> None:
    """A first import of over 200 rows without user keys builds its requests while the first batches are sent
    (pipeline._deferrable): here the building waits, after the second batch, for the first POST to arrive."""
    sandbox.reset()
    sandbox.set_faults(latency=0.05, latency_covers_work=True)
    building = importer.kantata.keys.items_as_built
    posts_while_building: list[int] = []

    def watched(rows: Any) -> Any:
        for n, item in enumerate(building(rows)):
            if n == 200:  # the first batch (rows 0-99) has been handed to a sending thread by now
                deadline = time.monotonic() + 3
                while _posts(sandbox) == 0 and time.monotonic() < deadline:
                    time.sleep(0.005)
                posts_while_building.append(_posts(sandbox))
            yield item

    monkeypatch.setattr(importer.pipeline, "items_as_built", watched)
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=100)
    result = run_upload(_schedule(tmp_path, 1000), settings)
    assert posts_while_building and posts_while_building[0] >= 1
    assert result.counts["created"] == 1000 and len(sandbox.milestones()) == 1000
    # The projects counted before the upload and after it (another machine may have written), and each batch's
    # keys right before it left (another machine may have sent it meanwhile); nothing else looked up.
    assert sandbox.stats()["GET /billing_milestones"] == 2 + 10


def _interrupt_main_when_in(qualname: str) -> None:
    """A Ctrl-C (a real SIGINT: `interrupt_main` would not wake a blocked join) once the main thread is inside the
    function `qualname`."""
    main = threading.main_thread().ident
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main or 0)
        while frame is not None:
            if frame.f_code.co_qualname == qualname:
                os.kill(os.getpid(), signal.SIGINT)
                return
            frame = frame.f_back
        time.sleep(0.002)


def test_a_ctrl_c_in_the_uploaders_clean_up_is_the_end_of_the_run_not_an_escape(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C landing in Uploader.run's clean-up (the thread pool's shutdown, after every batch was answered)
    must end the run as any Ctrl-C does (every row settled, the workbook written, exit 130), not escape
    run_upload as a bare KeyboardInterrupt that leaves no workbook."""
    pools: list[Any] = []

    class SlowToShutDown(ThreadPoolExecutor):
        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
            if not pools:  # the first shutdown: in `finally`, every batch answered
                pools.append(self)
                _thread.interrupt_main()
                time.sleep(0.2)  # the handler runs here, in the main thread
            super().shutdown(wait, cancel_futures=cancel_futures)

    monkeypatch.setattr(importer.delivery.upload, "ThreadPoolExecutor", SlowToShutDown)
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10)
    result = run_upload(_schedule(tmp_path, 30), settings)
    assert pools and int(result.exit_code) == 130 and result.counts["created"] == 30
    assert result.output.exists() and len(sandbox.milestones()) == 30


def test_a_ctrl_c_once_every_row_is_settled_only_waits_for_the_workbook(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the last answer and the writing (closing the journal and the ledger), there is nothing left to
    stop: a first Ctrl-C there escaped run_upload, and the workbook was lost. Now it only says it is finishing."""
    close = Journal.close

    def closing_with_a_ctrl_c(self: Journal, *, finished: bool) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # the handler runs here, in the main thread
        close(self, finished=finished)

    monkeypatch.setattr(Journal, "close", closing_with_a_ctrl_c)
    said: list[str] = []
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10)
    result = run_upload(_schedule(tmp_path, 30), settings, on_stage=said.append)
    assert int(result.exit_code) == 0 and result.counts["created"] == 30 and result.output.exists()
    assert any(s.startswith("finishing: settling what was sent") for s in said), said


def test_a_ctrl_c_while_the_currencies_are_awaited_costs_only_them(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row is settled by the time the run waits for the currencies: a Ctrl-C then leaves totals in cents
    and the run ends as it would have, workbook written, instead of losing the workbook."""
    sandbox.reset()
    slow = threading.Event()
    answered = threading.Event()
    asked = KantataClient.workspaces

    def slow_workspaces(self: KantataClient, ids: Any, **kwargs: Any) -> Any:
        slow.wait(30)  # Kantata is slow to answer this one (set free at the end)
        answered.set()
        return asked(self, ids, **kwargs)

    monkeypatch.setattr(KantataClient, "workspaces", slow_workspaces)
    # Ctrl-C once the main thread's stack shows it waiting for the currencies: a timer could fire before that
    # point on a loaded machine, and the test would then exercise another path than the one it names.
    presser = threading.Thread(target=_interrupt_main_when_in, args=("Currencies.result",), daemon=True)
    presser.start()
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10)
    result = run_upload(_schedule(tmp_path, 30), settings)
    assert not answered.is_set(), "the Ctrl-C did not end the wait: the run waited for the answer"
    slow.set()
    presser.join(5)
    assert not presser.is_alive()
    assert int(result.exit_code) == 0 and result.counts["created"] == 30
    assert result.output.exists() and [t.currency for t in result.totals] == [None]
