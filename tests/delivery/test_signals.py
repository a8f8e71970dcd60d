"""StopSwitch: Ctrl-C for an upload on another thread; ProgressFeed: progress read from another thread."""

from __future__ import annotations

import io
import os
import signal
import threading
from typing import Any

import pytest

from importer import ExitCode, ProgressFeed, Stage, StopSwitch, run_upload
from importer.delivery import patient_interrupts
from importer.delivery.signals import FINISHING
from importer.sandbox import DEFAULT_TOKEN
from importer.settings import Secret, Settings
from tests.conftest import MakeSchedule, good_row


def test_a_press_before_the_upload_begins_stops_it_there() -> None:
    stop = StopSwitch()
    stop.press()
    with pytest.raises(KeyboardInterrupt), patient_interrupts(lambda _: None, stop):
        pass  # (never reached)


class _SignalledMidWrite(io.RawIOBase):
    """A stream whose next write is interrupted by a SIGINT to this process, halfway through: the buffered writer
    above it holds its lock while the signal handler runs, as when a Ctrl-C lands during a progress line."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.armed = False

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self.armed:
            self.armed = False
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(1000))  # Python code runs: the handler runs here, inside the write
        self.data += bytes(b)
        return len(b)


def test_a_later_ctrl_c_landing_in_the_middle_of_a_write_still_says_it_is_finishing() -> None:
    """Writing to the stream from the signal handler itself would fail ("reentrant call inside BufferedWriter"),
    ending the run as an internal error instead of with its workbook: the message is written once that write
    is over."""
    raw = _SignalledMidWrite()
    stream = io.TextIOWrapper(io.BufferedWriter(raw), write_through=True)
    with patient_interrupts(lambda text: print(text, file=stream, flush=True)) as writing_begins:
        writing_begins()
        raw.armed = True
        print("sending  50%", file=stream, flush=True)
    assert raw.data.decode().splitlines() == ["sending  50%", FINISHING]  # said before the run ends


def test_a_press_once_the_workbook_is_being_written_only_waits() -> None:
    said: list[str] = []
    stop = StopSwitch()
    with patient_interrupts(said.append, stop) as writing_begins:
        writing_begins()
        stop.press()
        sum(range(1000))  # Python code runs on: no interrupt is pending
    assert said == ["finishing: settling what was sent and writing the results workbook"]
    stop.press()  # after the run: reaches nothing


def test_a_press_from_another_thread_stops_the_upload_as_ctrl_c_and_a_rerun_resumes(
    sandbox: Any, make_schedule: MakeSchedule
) -> None:
    schedule = make_schedule([good_row(n) for n in range(40)])
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=5, concurrency=1)
    sandbox.set_faults(latency=0.05)
    stop, feed = StopSwitch(), ProgressFeed()
    results: list[Any] = []

    def upload() -> None:
        results.append(run_upload(schedule, settings, stop=stop, on_progress=feed, on_stage=feed.say))

    worker = threading.Thread(target=upload)
    worker.start()
    seen = 0
    while _sent(feed) == 0:
        seen = feed.wait(seen, 5)
    stop.press()
    worker.join()
    stopped = results[0]
    assert stopped.exit_code == ExitCode.INTERRUPTED
    assert 0 < stopped.counts["not_sent"] < 40
    assert _sent(feed) > 0
    sandbox.set_faults(latency=0.0)
    again = run_upload(schedule, settings)
    assert again.exit_code == ExitCode.OK and again.counts["created"] + again.counts["unchanged"] == 40
    assert len(sandbox.milestones()) == 40


def test_the_feed_keeps_the_latest_per_stage_and_wakes_a_waiter() -> None:
    feed = ProgressFeed()
    woke: list[int] = []
    waiter = threading.Thread(target=lambda: woke.append(feed.wait(0, 5)))
    waiter.start()
    feed(Stage.READ, 0, None)
    waiter.join()
    feed(Stage.READ, 10, 10)
    feed.say("sending 10 rows")
    assert woke == [1]
    assert feed.snapshot() == {"version": 3, "stage": "read", "stages": {"read": {"done": 10, "total": 10}},
                               "messages": ["sending 10 rows"]}  # fmt: skip


def _sent(feed: ProgressFeed) -> int:
    stages: Any = feed.snapshot()["stages"]
    return int(stages.get("send", {}).get("done", 0))
