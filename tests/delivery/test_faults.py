"""Exactly once under a misbehaving network: each fault of the sandbox, and mixes of them, over real HTTP.

The truth is the sandbox's own database: every valid row exists exactly once, the workbook's ids are the
sandbox's, every bad row is `invalid` or `rejected` with a message, and nothing else was created.
`benchmarks/fault_table.py` runs the same scenarios and prints the table of figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import gc
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import openpyxl
import pytest

import importer.cli.main
import importer.delivery.upload
import importer.pipeline
from importer.delivery.upload import SENDERS_PER_SLOT
from importer.kantata.keys import items_as_built
from importer.pipeline import RunResult, run_upload
from importer.sandbox.server import DEFAULT_TOKEN
from importer.settings import Secret, Settings
from tests import forked_cli
from tests.conftest import HEADERS, milestone_id, read_results
from tests.fake_clock import FakeClock

ROOT = Path(__file__).resolve().parents[2]
GOOD = 290
REJECT_TITLE = "Reserved title"

SCENARIOS: dict[str, dict[str, Any]] = {
    "none": {},
    "429 every 3rd request": {"rate_limit_every": 3, "retry_after": 0.01},
    "503 every 2nd POST": {"fail_every": 2, "fail_status": 503},
    "500 every 3rd POST": {"fail_every": 3, "fail_status": 500},
    "drop after write, every 2nd POST": {"drop_after_write_every": 2},
    "drop, then written 0.3 s later, every 2nd POST": {"drop_then_write_every": 2, "late_write_after": 0.3},
    "latency 20 ms": {"latency": 0.02},
    "reject a title": {"reject_title": REJECT_TITLE},
    "partial create": {"partial_create": True},
    "error index": {"error_index": True},
    "partial create + error index": {"partial_create": True, "error_index": True},
    "mix: 429/3 + drop/2 + 503/5 + partial": {"rate_limit_every": 3, "retry_after": 0.01, "drop_after_write_every": 2,
                                             "fail_every": 5, "partial_create": True},
    "mix: drop/1 + reject title + index": {"drop_after_write_every": 1, "reject_title": REJECT_TITLE,
                                          "error_index": True},
}  # fmt: skip


def schedule_rows() -> tuple[list[list[Any]], set[str], set[str], set[str]]:
    """290 good rows, 5 invalid here, 5 that Kantata refuses, 1 with the reserved title: spread across batches."""
    rows: list[list[Any]] = []
    good: set[str] = set()
    invalid: set[str] = set()
    refused: set[str] = set()
    for n in range(GOOD):
        title = f"Good {n}"
        rows.append([title, 1000 + n, 1001 + n % 3, dt.date(2026, 1, 1) + dt.timedelta(days=n), None, "fixed_date"])
        good.add(title)
        if n % 60 == 10:
            rows.append([f"Invalid {n}", "12.50", 1001, None, None, "fixed_date"])
            invalid.add(f"Invalid {n}")
        if n % 60 == 40:
            title = f"Refused {n}"
            rows.append([title, 500, 1099, None, None, "fixed_date"] if n % 120 == 40 else
                        [title, 500, 1001, None, 5004, "upon_completion"])  # fmt: skip
            refused.add(title)
    rows.insert(150, [REJECT_TITLE, 777, 1002, None, None, "fixed_date"])
    return rows, good, invalid, refused


@dataclass
class Figures:
    rows_sent: int
    duplicates: int
    lost_ids: int
    unexpected: int
    requests: int
    result: RunResult
    runs: int  # 1, or more when a run stopped (exit 4) and the same command was run again


MAX_RUNS = 20


def run_scenario(
    sandbox: Any, folder: Path, faults: dict[str, Any], *, batch_size: int = 100, concurrency: int = 1
) -> Figures:
    """Upload the schedule under `faults`; when a run stops (a batch ran out of tries), run it again, as a user
    would, until it finishes. Several batches in flight against a fault on every Nth request can starve one
    batch of its tries (it keeps drawing the failing turn); each run must still make progress."""
    sandbox.reset()
    sandbox.set_faults(**faults)
    rows, good, invalid, refused = schedule_rows()
    if faults.get("reject_title"):
        refused = refused | {REJECT_TITLE}
    else:
        good = good | {REJECT_TITLE}
    path = folder / "schedule.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(HEADERS)
    for row in rows:
        ws.append(row)
    wb.save(path)
    # A re-run waits sending_ahead + connect_timeout + server_timeout for rows a stopped run left in doubt, and
    # a dropped request's rows are looked up for the last two after it left: 0.2 + 0.2 + 1 s here (the late
    # writes come 0.3 s after a drop), looking every 0.1 s; the defaults would make one such re-run take minutes.
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=batch_size, max_attempts=8,
                        backoff_base=0.002, backoff_cap=0.05, concurrency=concurrency, connect_timeout=0.2,
                        server_timeout=1, sending_ahead=0.2, settle_poll=0.1)  # fmt: skip
    result = run_upload(path, settings, output=folder / "results.xlsx")
    runs = 1
    while result.stopped is not None and runs < MAX_RUNS:
        done_before = result.counts["created"] + result.counts["rejected"]
        result = run_upload(path, settings, output=folder / "results.xlsx")
        runs += 1
        assert result.counts["created"] + result.counts["rejected"] > done_before, "a re-run made no progress"
    deadline = time.monotonic() + 30
    while sandbox.late_writes_pending:  # a late write still on its way would hide a duplicate
        assert time.monotonic() < deadline, "a late write never landed"
        time.sleep(0.01)
    in_db = Counter(str(m["title"]) for m in sandbox.milestones())
    ids = {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}
    results = read_results(folder / "results.xlsx", sheet="Sheet")
    by_title = {r["title"]: r for r in results}
    lost = sum(1 for t in good if by_title[t]["status"] != "created" or milestone_id(by_title[t]) != ids.get(t))
    stats = sandbox.stats()
    return Figures(
        rows_sent=len(good) + len(refused),
        duplicates=sum(n - 1 for n in in_db.values()),
        lost_ids=lost,
        unexpected=len(set(in_db) - good),
        requests=sum(v for k, v in stats.items() if k.startswith(("GET ", "POST "))),
        result=result,
        runs=runs,
    )


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_valid_row_exactly_once_under_faults(sandbox: Any, tmp_path: Path, name: str, concurrency: int) -> None:
    figures = run_scenario(sandbox, tmp_path, SCENARIOS[name], concurrency=concurrency)
    if concurrency == 1:
        assert figures.runs == 1  # one batch at a time: every fault here is survived within the tries
    rows, good, invalid, refused = schedule_rows()
    if SCENARIOS[name].get("reject_title"):
        refused.add(REJECT_TITLE)
    else:
        good.add(REJECT_TITLE)

    assert figures.duplicates == 0
    assert figures.lost_ids == 0
    assert figures.unexpected == 0
    assert sorted(str(m["title"]) for m in sandbox.milestones()) == sorted(good)
    results = {r["title"]: r for r in read_results(tmp_path / "results.xlsx", sheet="Sheet")}
    assert len(results) == len(rows)
    for title in invalid:
        assert results[title]["status"] == "invalid" and "12.50" in results[title]["errors"]
    for title in refused:
        assert results[title]["status"] == "rejected", title
        assert results[title]["errors"].startswith("Kantata: "), results[title]["errors"]
    assert int(figures.result.exit_code) == 1
    assert figures.result.stopped is None


def test_a_create_slower_than_the_read_timeout_is_waited_for_and_not_sent_twice(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client stops waiting for an answer after read_timeout (1 s); Kantata goes on and writes the batch
    (1.3 s in). Its rows are looked up until server_timeout after the request left, and found: never sent
    again."""
    create = sandbox._routes["POST /billing_milestones"]  # only creates are slow: look-ups answer at once

    def slow_create(*args: Any) -> Any:
        time.sleep(1.3)
        return create(*args)

    monkeypatch.setitem(sandbox._routes, "POST /billing_milestones", slow_create)
    path = tmp_path / "s.csv"
    path.write_text("title,amount_in_cents,workspace_id\n" + "".join(f"T{n},{n},1001\n" for n in range(20)))
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, concurrency=2,
                        read_timeout=1, connect_timeout=1, server_timeout=10, settle_poll=0.1)  # fmt: skip
    result = run_upload(path, settings)
    deadline = time.monotonic() + 30
    while sandbox.in_flight:  # a second write of a batch sent again lands by the time its request ends
        assert time.monotonic() < deadline
        time.sleep(0.05)
    titles = Counter(str(m["title"]) for m in sandbox.milestones())
    assert len(titles) == 20 and set(titles.values()) == {1}, titles.most_common(3)
    assert result.counts["created"] == 20 and result.exit_code == 0
    assert sandbox.stats()["POST /billing_milestones"] == 2


def test_retries_exhausted_stop_the_run_with_exit_4_and_a_rerun_completes(sandbox: Any, tmp_path: Path) -> None:
    sandbox.reset()
    sandbox.set_faults(fail_every=1)  # every POST fails
    path = tmp_path / "s.csv"
    path.write_text("title,amount_in_cents,workspace_id\n" + "".join(f"T{n},{n},1001\n" for n in range(120)))
    # A 503 may follow a write, so the re-run waits for those rows before sending them: 0.2 + 0.2 + 1 s here.
    fast = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), max_attempts=3, backoff_base=0.001,
                    connect_timeout=0.2, server_timeout=1, sending_ahead=0.2, settle_poll=0.1)  # fmt: skip
    first = run_upload(path, fast)
    assert int(first.exit_code) == 4
    assert first.counts["not_sent"] == 120 and sandbox.milestones() == []
    # Each was sent, and answered 503 (which may follow a write): not said to be unsent
    assert all(o.errors and "may have been created" in o.errors[0] for o in first.outcomes.values())

    sandbox.set_faults(fail_every=0)
    second = run_upload(path, fast)
    assert int(second.exit_code) == 0 and second.counts["created"] == 120
    assert len(sandbox.milestones()) == 120


@pytest.mark.parametrize("concurrency", [1, 4])
def test_token_refused_midway_stops_with_exit_3_without_touching_other_rows(
    sandbox: Any, tmp_path: Path, concurrency: int
) -> None:
    sandbox.reset()
    path = tmp_path / "s.csv"
    path.write_text("title,amount_in_cents,workspace_id\n" + "".join(f"T{n},{n},1001\n" for n in range(200)))
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, concurrency=concurrency)

    def revoke_after_first_batch(outcomes: Any) -> None:
        sandbox.set_token("another-token")  # the user's token is revoked while the run goes on

    result = run_upload(path, settings, on_outcomes=revoke_after_first_batch)
    assert int(result.exit_code) == 3
    created = result.counts["created"]
    # The first batch, plus at most one batch per sending thread: each may have sent its batch before the first
    # answer was recorded (and the token revoked), none a second one after.
    assert 10 <= created <= 10 * SENDERS_PER_SLOT * concurrency and created % 10 == 0
    assert result.counts == {"valid": 0, "created": created, "unchanged": 0, "update": 0, "updated": 0, "conflict": 0,
                             "invalid": 0, "rejected": 0, "not_sent": 200 - created}  # fmt: skip
    ids = {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}
    assert {f"T{o.row - 2}": o.milestone_id for o in result.outcomes.values() if o.milestone_id} == ids
    # Each sending thread stops after its first refused request: the 20 batches are not all tried.
    assert sandbox.stats()["POST /billing_milestones"] <= 2 * SENDERS_PER_SLOT * concurrency


class _FillsUp:
    """The journal's file on a disk that fills up just as the batch holding `row` is journalled: that write and
    every later one fail with ENOSPC, as on a full disk."""

    def __init__(self, fh: Any, row: int) -> None:
        self.fh, self.row, self.full = fh, row, False

    def write(self, text: str) -> int:
        entries = [json.loads(line) for line in text.splitlines() if line]
        self.full |= any(e["kind"] == "sending" and self.row in e["rows"] for e in entries)
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return int(self.fh.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


def test_a_journal_that_cannot_be_written_stops_the_sending_and_a_rerun_resumes(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_file_order: None
) -> None:
    """A full disk under the journal ended the run "internal error" (exit 70) with no workbook, and the batch
    whose "sending" line failed was one write away from leaving unrecorded. Now that batch does not leave, nor
    any after it; the batches sent are settled, the workbook written, exit 4; the same command resumes."""
    import importer.delivery.journal

    sandbox.reset()
    path = _schedule(tmp_path, 50)  # spreadsheet rows 2-51: batches of 10, the third starts at row 22
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, concurrency=1,
                        server_timeout=2, connect_timeout=1)  # fmt: skip
    real_open = importer.delivery.journal.Journal.open

    def open_on_a_disk_filling_up(path: Path, digest: str, clock: Any) -> importer.delivery.journal.Journal:
        journal = real_open(path, digest, clock)
        journal._fh = _FillsUp(journal._fh, 22)  # type: ignore[assignment]
        return journal

    with monkeypatch.context() as patched:
        patched.setattr(importer.delivery.journal.Journal, "open", open_on_a_disk_filling_up)
        result = run_upload(path, settings)
    assert int(result.exit_code) == 4 and "No space left on device" in str(result.stopped)
    assert "journal" in str(result.stopped) and "sending stopped" in str(result.stopped)
    ids = {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}
    posts = sandbox.stats()["POST /billing_milestones"]
    # Of the first two batches (one a sending thread), those that got the slot before the third failed to be
    # journalled; the other is cancelled in its wait (which goes first depends on the scheduling, so either may).
    # None after.
    first, second = ({f"Row {n}" for n in range(b * 10, b * 10 + 10)} for b in range(2))
    assert set(ids) in (first, second, first | second) and posts == len(ids) // 10
    results = read_results(tmp_path / "schedule.results.xlsx", sheet="Schedule")
    assert [r["status"] for r in results] == ["created" if r["title"] in ids else "not_sent" for r in results]
    assert {r["title"]: milestone_id(r) for r in results if milestone_id(r)} == ids
    assert all("journal" in r["errors"] for r in results if r["status"] == "not_sent")
    next_step = importer.cli.main._next_step(result, argparse.Namespace(), dry_run=False)
    assert next_step is not None and next_step.startswith(f"free some space in {tmp_path}")  # not "when reachable"

    again = run_upload(path, settings)  # the disk has room again
    assert int(again.exit_code) == 0 and again.counts["created"] == 50
    titles = Counter(str(m["title"]) for m in sandbox.milestones())
    assert len(titles) == 50 and set(titles.values()) == {1}
    assert sandbox.stats()["POST /billing_milestones"] == 5


def test_a_ledger_that_fills_up_stops_the_sending_and_exit_5_does_not_blame_the_journal(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state folder's disk fills up after the ledger's first lines: the sending stops
    (JournalNotWritten, naming the ledger), and when the results workbook cannot be written either, the
    message says the rows are kept in the journal, which was written, not that the journal failed."""
    import importer.delivery.ledger
    import importer.results.streaming
    from importer.errors import ResultsNotWritten

    class FillsUpAfterTheFirstLeft:
        """Every write fails once one request has been said to leave (a "sending" line without "tells")."""

        def __init__(self, fh: Any) -> None:
            self.fh, self.full = fh, False

        def write(self, text: str) -> int:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            entry = json.loads(text)
            self.full = entry["kind"] == "sending" and "tells" not in entry
            return int(self.fh.write(text))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

    real_open = importer.delivery.ledger.Ledger.open

    def open_on_a_disk_filling_up(base_url: Any, window: float, folder: Path, clock: Any) -> Any:
        ledger = real_open(base_url, window, folder, clock)
        assert ledger is not None and ledger._fh is not None
        ledger._fh = FillsUpAfterTheFirstLeft(ledger._fh)  # type: ignore[assignment]
        return ledger

    def full(done: Path, target: Path, **_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    sandbox.reset()
    path = _schedule(tmp_path, 50)
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, concurrency=1,
                        server_timeout=2, connect_timeout=1)  # fmt: skip
    monkeypatch.setattr(importer.delivery.ledger.Ledger, "open", open_on_a_disk_filling_up)
    monkeypatch.setattr(importer.results.streaming, "move_into_place", full)
    with pytest.raises(ResultsNotWritten) as raised:
        run_upload(path, settings)
    message = str(raised.value)
    assert "rows were created in Kantata and are kept in the journal beside it" in message, message
    assert len(sandbox.milestones()) == 10  # the batch said to leave; the sending stopped at the next

    monkeypatch.setattr(importer.results.streaming, "move_into_place", lambda done, target, **_: done.replace(target))
    said: list[str] = []
    result = run_upload(path, settings, on_stage=said.append)
    assert int(result.exit_code) == 4 and "the ledger of requests in flight" in str(result.stopped)
    # The batch stopped by the ledger did not leave, though the journal had said it would: taken back, so the
    # re-run does not wait out its window.
    assert not any("waiting up to" in s for s in said), said


def _hold_creates(sandbox: Any, monkeypatch: pytest.MonkeyPatch, at_most: float, *, after: int = 0) -> threading.Event:
    """The sandbox's creates, but the first `after`, wait (at most `at_most` seconds) until the event returned is
    set."""
    released = threading.Event()
    create = sandbox._routes["POST /billing_milestones"]
    arrived = itertools.count()

    def held_create(*args: Any) -> Any:
        if next(arrived) >= after:
            released.wait(at_most)
        return create(*args)

    monkeypatch.setitem(sandbox._routes, "POST /billing_milestones", held_create)
    return released


def _cli(path: Path, url: str, *extra: str, server_timeout: int = 5) -> forked_cli.Forked:
    """The CLI as its own process. A short server_timeout and connect_timeout bound how long a resumed run waits
    for requests that an interrupted run may have left running at Kantata (the defaults, 180 s and 10 s, are
    Kantata's own limit and a slow network's); the sandbox on loopback connects at once."""
    env = {**os.environ, "KANTATA_BASE_URL": url, "KANTATA_API_TOKEN": DEFAULT_TOKEN}
    config = path.with_name("test-config.toml")
    config.write_text(f"server_timeout = {server_timeout}\nconnect_timeout = 1\n")
    return forked_cli.popen(["upload", str(path), "--batch-size", "10", "--config", str(config), *extra], env=env)


def _wait_for_posts(sandbox: Any, n: int, proc: subprocess.Popen[str] | forked_cli.Forked) -> None:
    deadline = time.monotonic() + 60
    while sandbox.stats().get("POST /billing_milestones", 0) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the upload never got going"
        time.sleep(0.01)


def _schedule(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "schedule.csv"
    path.write_text("title,amount_in_cents,workspace_id\n" + "".join(f"Row {i},{100 + i},1001\n" for i in range(n)))
    return path


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_killed_or_interrupted_upload_resumes_to_the_same_workbook(sandbox: Any, tmp_path: Path, sig: int) -> None:
    """SIGTERM (`timeout`, systemd) and SIGHUP (the terminal closed) are taken as Ctrl-C, so that they too end
    with the workbook written and a re-run resumes to the same workbook; kill -9 leaves that to the re-run."""
    sandbox.reset()
    sandbox.set_faults(latency=0.05)
    path = _schedule(tmp_path, 200)  # 20 requests of 10
    proc = _cli(path, sandbox.url)
    _wait_for_posts(sandbox, 5, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    if sig != signal.SIGKILL:
        assert proc.returncode == 130, err
        interrupted = read_results(tmp_path / "schedule.results.xlsx", sheet="Schedule")
        assert {r["status"] for r in interrupted} <= {"created", "not_sent"}
        assert "not_sent" in {r["status"] for r in interrupted}
    else:
        assert proc.returncode == -signal.SIGKILL
    created_before_resume = len(sandbox.milestones())
    assert 0 < created_before_resume < 200
    if sig == signal.SIGKILL:  # the dry run shows which rows the resumed upload will report created
        env = {**os.environ, "KANTATA_BASE_URL": sandbox.url, "KANTATA_API_TOKEN": DEFAULT_TOKEN}
        journal = (tmp_path / ".schedule.results.xlsx.journal.jsonl").read_bytes()
        dry = forked_cli.run(["validate", str(path), "--online", "--json"], env=env)  # the upload's journal
        assert dry.returncode == 0, dry.stderr
        noted = [r for r in read_results(tmp_path / "schedule.results.xlsx", sheet="Schedule")
                 if r["status"] == "unchanged"]  # fmt: skip
        assert len(noted) >= created_before_resume  # (and what was on the wire at the kill, once it landed)
        assert all("created by the interrupted upload" in str(r["errors"]) for r in noted)
        assert (tmp_path / ".schedule.results.xlsx.journal.jsonl").read_bytes() == journal

    sandbox.set_faults(latency=0.0)
    proc = _cli(path, sandbox.url)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "resuming an interrupted upload" in err

    titles = Counter(str(m["title"]) for m in sandbox.milestones())
    assert len(titles) == 200 and set(titles.values()) == {1}  # no duplicates, nothing lost
    ids = {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}
    results = read_results(tmp_path / "schedule.results.xlsx", sheet="Schedule")
    # What an uninterrupted run writes: every row created, with the id Kantata holds.
    assert [r["status"] for r in results] == ["created"] * 200
    assert {r["title"]: milestone_id(r) for r in results} == ids
    assert not (tmp_path / ".schedule.results.xlsx.journal.jsonl").exists()


def test_a_hang_up_under_nohup_is_ignored_as_nohup_asks(sandbox: Any, tmp_path: Path) -> None:
    """nohup ignores SIGHUP so that the run goes on after the terminal closes: an ignored signal stays ignored,
    rather than being taken as Ctrl-C."""
    sandbox.reset()
    sandbox.set_faults(latency=0.05)
    path = _schedule(tmp_path, 200)
    env = {**os.environ, "KANTATA_BASE_URL": sandbox.url, "KANTATA_API_TOKEN": DEFAULT_TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "importer", "upload", str(path), "--batch-size", "10"], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # fmt: skip
    _wait_for_posts(sandbox, 5, proc)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(sandbox.milestones()) == 200


def test_a_terminal_that_hangs_up_midway_still_gets_the_workbook_written(sandbox: Any, tmp_path: Path) -> None:
    """The ssh connection drops: the terminal hangs up, and the run gets SIGHUP. It settles and writes the
    workbook as on Ctrl-C, in silence: its messages to the gone terminal would fail (EIO), and the JSON on a
    pipe is still written whole."""
    import pty

    sandbox.reset()
    sandbox.set_faults(latency=0.05)
    path = _schedule(tmp_path, 200)
    master, terminal = pty.openpty()
    env = {**os.environ, "KANTATA_BASE_URL": sandbox.url, "KANTATA_API_TOKEN": DEFAULT_TOKEN}
    proc = forked_cli.popen(["upload", str(path), "--batch-size", "10", "--json"], env=env, stderr=terminal)
    os.close(terminal)
    try:
        _wait_for_posts(sandbox, 5, proc)
    finally:
        os.close(master)  # the terminal hangs up: writing to it fails with EIO from now on
    proc.send_signal(signal.SIGHUP)  # (sent by the kernel to the session's leader, and by the shell to its jobs)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    summary = json.loads(out)
    results = read_results(tmp_path / "schedule.results.xlsx", sheet="Schedule")
    created = [r for r in results if r["status"] == "created"]
    assert summary["counts"]["created"] == len(created) == len(sandbox.milestones())
    assert 0 < len(created) < 200 and {r["status"] for r in results} == {"created", "not_sent"}


def _journal_sendings(tmp_path: Path) -> int:
    journal = tmp_path / ".schedule.results.xlsx.journal.jsonl"
    return journal.read_text().count('"sending"') if journal.exists() else 0


def _killed_with_four_batches_at_kantata(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, rows: int = 80
) -> tuple[Path, float, threading.Event]:
    """An upload killed (-9) once four batches of 10 are journalled and at "Kantata", which writes them only once
    the event returned is set (creates that arrive later are not held); the schedule, and a deadline for the
    rest of the test. Which four of the first eight batches (one per sending thread, all waiting for the four
    slots) are at Kantata is up to the threads."""
    sandbox.reset()
    written = _hold_creates(sandbox, monkeypatch, 120)
    path = _schedule(tmp_path, rows)
    proc = _cli(path, sandbox.url, "--concurrency", "4")
    deadline = time.monotonic() + 60
    while _journal_sendings(tmp_path) < 4 or sandbox.most_in_flight < 4:  # journalled, and arrived at Kantata
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.kill()
    proc.communicate(timeout=60)
    assert len(sandbox.milestones()) == 0  # nothing written yet: all four batches are still at "Kantata"
    return path, deadline, written


@pytest.mark.parametrize("change", ["none", "edit a row not sent", "another results workbook"])
def test_a_rerun_right_after_a_kill_waits_for_the_batches_still_running_at_kantata(
    sandbox: Any, tmp_path: Path, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed with four batches on the wire, which Kantata is still writing: a re-run at once must not send them
    again. It finds them missing, waits, finds them written (Kantata writes them once the re-run says it
    waits), and sends only the rest. So also when the schedule was edited or the results go elsewhere: the
    journal belongs to one schedule content and one results workbook, and the ledger
    (delivery/ledger.py) keeps the keys in flight across both. (Reordered rows change the digest as an edit
    does.) The four batches journalled ahead of their slot never left: the re-run does not wait for them (nor
    count them among the rows it waits for).
    160 rows: the eight sending threads hold the first 80, any of which may be at Kantata, so the edited row is
    the last, whose batch no thread could take before the kill."""
    path, deadline, written = _killed_with_four_batches_at_kantata(sandbox, tmp_path, monkeypatch, rows=160)
    lines = path.read_text().splitlines(keepends=True)
    extra: tuple[str, ...] = ()
    if change == "edit a row not sent":
        lines[-1] = lines[-1].replace("Row 159,", "Row 159 edited,")
    elif change == "another results workbook":
        extra = ("-o", str(tmp_path / "schedule.results-2.xlsx"))
    path.write_text("".join(lines))

    rerun = _cli(path, sandbox.url, "--concurrency", "4", *extra)
    said: list[str] = []

    def watch() -> None:  # the four requests are written once the re-run has looked them up and waits
        assert rerun.stderr is not None
        for line in rerun.stderr:
            said.append(line)
            if "waiting up to" in line:
                written.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        watcher.join(120)
        rerun.communicate(timeout=60)  # (what is left: its stdout; and the pipes closed)
    finally:
        written.set()  # a re-run that did not wait: the killed run's requests land after it, as duplicates
    err = "".join(said)
    assert rerun.returncode == 0, err
    while sandbox.in_flight:  # let the killed run's requests finish: only then can a duplicate show
        assert time.monotonic() < deadline + 60
        time.sleep(0.05)
    titles = Counter(str(m["title"]) for m in sandbox.milestones())
    assert set(titles.values()) == {1}, titles.most_common(3)  # none twice
    assert len(titles) == 160 and "requests may still be running: waiting up to" in err
    waited = re.search(r"(\d+) rows an interrupted run sent are not in Kantata yet", err)
    assert waited and int(waited.group(1)) <= 40, err  # the four batches at Kantata at most, not the other four
    if change == "edit a row not sent":
        assert "Row 159 edited" in titles and "Row 159" not in titles
    if change == "none":  # the journal's resume: what an uninterrupted run writes
        results = read_results(tmp_path / "schedule.results.xlsx", sheet="Schedule")
        assert [r["status"] for r in results] == ["created"] * 160


def test_ctrl_c_during_the_resumes_wait_reports_the_rows_already_found(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed with four batches in flight, three of which Kantata wrote, the re-run finds those 30 rows and
    waits for the other 10; a Ctrl-C then must not throw away what was found: the 30 are `created` (the killed
    run sent them), only the 10 not_sent."""
    path, deadline, written = _killed_with_four_batches_at_kantata(sandbox, tmp_path, monkeypatch, rows=40)
    written.set()
    while sandbox.in_flight or len(sandbox.milestones()) < 40:  # the four requests finish at "Kantata"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    lost = [m for m in sandbox.milestones() if str(m["title"]).endswith(tuple(f" {n}" for n in range(10)))]
    for milestone in lost:  # as if one batch had never been written: the re-run must wait for it
        sandbox._store.delete(int(str(milestone["id"])))

    def on_stage(text: str) -> None:
        if "waiting up to" in text:
            os.kill(os.getpid(), signal.SIGINT)

    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), server_timeout=60, connect_timeout=1)
    result = run_upload(path, settings, output=tmp_path / "schedule.results.xlsx", on_stage=on_stage)
    assert result.exit_code == 130
    assert (result.counts["created"], result.counts["not_sent"]) == (30, 10)
    ids = {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}
    results = read_results(tmp_path / "schedule.results.xlsx", sheet="Schedule")
    assert {r["title"]: milestone_id(r) for r in results if r["status"] == "created"} == ids
    assert len(ids) == 30 and sandbox.stats().get("POST /billing_milestones", 0) == 4  # the killed run's only


def test_ctrl_c_ends_the_wait_for_a_request_that_may_still_be_writing(sandbox: Any, tmp_path: Path) -> None:
    """A batch whose connection dropped is looked up until Kantata can no longer be writing it (70 s here);
    Ctrl-C meanwhile stops the run at once, the workbook written, and the rows stay in flight for the re-run."""
    sandbox.set_faults(drop_then_write_every=1, late_write_after=3.0)
    path = _schedule(tmp_path, 10)
    proc = _cli(path, sandbox.url, server_timeout=60)
    deadline = time.monotonic() + 60
    while sandbox.stats().get("drop_then_write", 0) < 1:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    time.sleep(0.5)  # in the wait now: looking the rows up
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - stopped_at < 10, "the wait went on after Ctrl-C"
    results = read_results(tmp_path / "schedule.results.xlsx", sheet="Schedule")
    assert {r["status"] for r in results} == {"not_sent"}  # not written yet: its write comes 3 s after the drop


def test_a_second_ctrl_c_is_ignored_until_the_workbook_is_written(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.reset()
    # The first two creates are answered at once; the next ones are held until after the second Ctrl-C, so the
    # run is still settling them when it comes, however slowly the process is scheduled.
    answer = _hold_creates(sandbox, monkeypatch, 60, after=2)
    path = _schedule(tmp_path, 200)
    proc = _cli(path, sandbox.url, "--concurrency", "2")
    said: list[str] = []
    stopping = threading.Event()

    def read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)
            if line.startswith("stopping:"):
                stopping.set()

    assert proc.stderr is not None and proc.stdout is not None
    streams: list[tuple[IO[str], list[str]]] = [(proc.stderr, said), (proc.stdout, [])]
    readers = [threading.Thread(target=read, args=stream, daemon=True) for stream in streams]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 60
        while sandbox.in_flight < 1 or len(sandbox.milestones()) < 20:  # two batches in, the next one held
            assert proc.poll() is None and time.monotonic() < deadline, "no request in flight"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        # The second Ctrl-C only once the first was handled (two at once are one), which the run says. Waiting
        # for that line, not for a time, holds on a loaded machine where the process may not be scheduled for a
        # while.
        assert stopping.wait(60), "the first Ctrl-C was not handled"
        proc.send_signal(signal.SIGINT)
        posts_at_interrupt = sandbox.stats()["POST /billing_milestones"]
    finally:
        answer.set()
    code = proc.wait(timeout=60)
    for reader, (stream, _) in zip(readers, streams, strict=True):
        reader.join()
        stream.close()
    err = "".join(said)
    assert code == 130, err
    assert "Ctrl-C is ignored until then" in err
    # No new request after the Ctrl-C: at most the ones on the wire then (2), and their settling look-up.
    assert sandbox.stats()["POST /billing_milestones"] <= posts_at_interrupt + 2
    results = read_results(tmp_path / "schedule.results.xlsx", sheet="Schedule")
    assert {r["status"] for r in results} == {"created", "not_sent"}
    ids = {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}
    assert {r["title"]: milestone_id(r) for r in results if r["status"] == "created"} == ids


@pytest.mark.parametrize("streamed", [True, False])
def test_ctrl_c_while_the_results_are_written_does_not_lose_them(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """Every row is created when the writing begins: a Ctrl-C then (a real SIGINT to this process, which the
    main thread takes during the writing) is told to wait, and the workbook with the new ids is written."""
    sandbox.reset()
    path = _schedule(tmp_path, 300)
    said: list[str] = []

    def on_stage(text: str) -> None:
        said.append(text)
        if text.startswith("writing the results workbook"):
            os.kill(os.getpid(), signal.SIGINT)

    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), stream_results=streamed)
    result = run_upload(path, settings, output=tmp_path / "out.xlsx", on_stage=on_stage)
    assert result.exit_code == 0 and result.counts["created"] == 300
    assert any("Ctrl-C is ignored" in text for text in said), said
    ids = {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}
    results = read_results(tmp_path / "out.xlsx", sheet="Schedule")
    assert {r["title"]: milestone_id(r) for r in results} == ids and len(ids) == 300


@pytest.mark.parametrize("schedule", ["the same", "the same, to another results workbook", "one row more"])
def test_a_second_upload_to_the_same_account_waits_for_the_first_and_creates_nothing_twice(
    sandbox: Any, tmp_path: Path, schedule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads to one account go one at a time, whatever their results workbooks: a lock per results workbook
    alone would let two uploads of one schedule (or of a schedule and its copy with a row more) both send the
    rows they share. The second waits, then finds the first's rows."""
    sandbox.reset()
    # The first upload's creates are held until the second has said that it waits (or has ended): timed
    # instead, a second process slow to start on a loaded machine could find the first one done, and not wait.
    go = _hold_creates(sandbox, monkeypatch, 60)
    path = _schedule(tmp_path, 100)
    first = _cli(path, sandbox.url, "--concurrency", "1", "--batch-size", "10")
    _wait_for_posts(sandbox, 1, first)
    other, extra = path, []
    if schedule == "one row more":
        other = tmp_path / "more.csv"
        other.write_text(path.read_text() + "Row 100,200,1001\n")
    elif schedule != "the same":
        extra = ["-o", str(tmp_path / "other.results.xlsx")]
    second = _cli(other, sandbox.url, *extra)
    said: list[str] = []

    def watch() -> None:
        assert second.stderr is not None
        for line in second.stderr:
            said.append(line)
            if "waiting for another upload to" in line:
                break
        go.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    watcher.join(120)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert "waiting for another upload to" in "".join(said)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    titles = Counter(str(m["title"]) for m in sandbox.milestones())
    assert set(titles.values()) == {1} and len(titles) == (101 if schedule == "one row more" else 100)


def test_rows_cancelled_before_they_were_sent_do_not_make_the_rerun_wait(sandbox: Any, tmp_path: Path) -> None:
    """429s bring the limit down to one request in flight, so the other sending threads wait for a slot; Ctrl-C
    cancels them before they send. Their rows were never on the wire: the re-run must not wait for them."""
    sandbox.reset()
    sandbox.set_faults(rate_limit_every=2, retry_after=0.2, latency=0.2)
    path = _schedule(tmp_path, 200)
    proc = _cli(path, sandbox.url, "--concurrency", "4")
    _wait_for_posts(sandbox, 6, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err

    sandbox.set_faults(rate_limit_every=0, latency=0.0)
    rerun = _cli(path, sandbox.url)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert "waiting up to" not in err, err  # nothing was left in flight: only rows that went out are waited for
    titles = Counter(str(m["title"]) for m in sandbox.milestones())
    assert len(titles) == 200 and set(titles.values()) == {1}


def test_a_first_import_built_while_sending_stops_and_resumes_exactly_once(
    sandbox: Any, tmp_path: Path, in_file_order: None
) -> None:
    """Over 200 rows without user keys, the requests are built while the first batches are out
    (pipeline._deferrable). Stopped midway (the token revoked), the re-run resumes from the journal: it builds
    every request first, settles what was sent by key, and creates each row once."""
    sandbox.reset()
    sandbox.set_faults(latency=0.05)  # a round trip outlasts recording an answer: the revocation comes in time
    path = tmp_path / "s.csv"
    path.write_text("title,amount_in_cents,workspace_id\n" + "".join(f"T{n},{n},{1001 + n % 2}\n" for n in range(600)))
    # One request at a time: the token is revoked once the first batch is answered, so a later request is
    # refused with 401 and the run stops; a batch is built only when a sending thread is free for it, so the
    # building stops with the sending.
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=50, concurrency=1)

    def revoke_after_first_batch(outcomes: Any) -> None:
        sandbox.set_token("another-token")

    stopped = threading.Event()
    stop_with = importer.delivery.upload.Uploader._stop_with

    def stopping(self: importer.delivery.upload.Uploader, reason: Any) -> None:
        stop_with(self, reason)
        stopped.set()

    built: list[int] = []
    collecting: list[bool] = []  # the collector is back on by the time the workbook is written

    def building(rows: Any) -> Any:
        for n, item in enumerate(items_as_built(rows)):
            if n == 200:  # the fifth batch: built only once the run has stopped (the 401), if at all
                assert stopped.wait(10)
            built.append(item.row)
            yield item

    def noting(message: str) -> None:
        if message.startswith("writing the results workbook"):
            collecting.append(gc.isenabled())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(importer.pipeline, "items_as_built", building)
        patch.setattr(importer.delivery.upload.Uploader, "_stop_with", stopping)
        first = run_upload(path, settings, on_outcomes=revoke_after_first_batch, on_stage=noting)
    sandbox.set_faults(latency=0.0)
    assert 100 <= len(built) <= 250  # deferred: built while sending, and no further once the run had stopped
    assert collecting == [True]
    assert int(first.exit_code) == 3
    created = first.counts["created"]
    assert 50 <= created < 600 and first.counts["not_sent"] == 600 - created
    assert len(sandbox.milestones()) == created

    sandbox.set_token(DEFAULT_TOKEN)
    said: list[str] = []
    started = time.monotonic()
    second = run_upload(path, settings, on_stage=said.append)
    assert int(second.exit_code) == 0, second.stopped
    assert any(s.startswith("resuming an interrupted upload") for s in said), said
    # The batches refused with 401 were not written: journalled as withdrawn, so nothing is waited for.
    assert not any("waiting up to" in s for s in said) and time.monotonic() - started < 60, said
    assert second.counts["created"] == 600 and second.counts["unchanged"] == 0  # as an uninterrupted run reports
    titles = Counter(str(m["title"]) for m in sandbox.milestones())
    assert len(titles) == 600 and set(titles.values()) == {1}
    assert {o.milestone_id for o in second.outcomes.values()} == {str(m["id"]) for m in sandbox.milestones()}


def test_a_proxys_html_error_page_stops_the_run_with_one_line(sandbox: Any, tmp_path: Path) -> None:
    """502 with a proxy's HTML page on every POST: the stop message is one line with the status, the content type
    and the page's first words; the page itself travels on the exception for --debug."""
    sandbox.reset()
    sandbox.set_faults(fail_every=1, fail_status=502, fail_html=True)
    path = tmp_path / "s.csv"
    path.write_text("title,amount_in_cents,workspace_id\nT1,100,1001\n")
    # Each try's 502 may follow a write: its rows are looked up until server_timeout, on a clock that runs the
    # wait at once.
    fast = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), max_attempts=2, backoff_base=0.001,
                    connect_timeout=0.2, server_timeout=1, sending_ahead=0.2, settle_poll=0.1,
                    clock=FakeClock())  # fmt: skip
    result = run_upload(path, fast)
    sandbox.set_faults(fail_every=0, fail_status=503, fail_html=False)
    assert int(result.exit_code) == 4 and result.stopped is not None
    line = str(result.stopped)
    assert "\n" not in line and len(line) < 300, line
    assert "HTTP 502: a text/html answer, not Kantata's: \"502 Bad Gateway 502 Bad Gateway upstream detail" in line
    assert "nginx" not in line and DEFAULT_TOKEN not in line  # the page's end is for --debug


def test_a_maintenance_page_answered_as_a_success_is_shown_in_full_with_debug_never_the_token(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A proxy's page with 200 (it answers for a Kantata under maintenance): exit 4 and one line; with --debug
    the page follows in full on stderr, the token it echoes starred out."""
    sandbox.reset()
    sandbox.set_faults(fail_every=1, fail_status=200, fail_html=True)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    config = tmp_path / "fast.toml"
    config.write_text("server_timeout = 1\nconnect_timeout = 1\n")
    said = {}
    for debug in (False, True):
        # Each run its own schedule and row: the second is no resume of the first, which would wait out the
        # first's request (a page may follow a write) before sending.
        path = tmp_path / f"s{int(debug)}.csv"
        path.write_text(f"title,amount_in_cents,workspace_id\nT{int(debug)},100,1001\n")
        argv = ["upload", str(path), "--base-url", sandbox.url, "--config", str(config), "--non-interactive"]
        code = importer.cli.main.main(["--debug", *argv] if debug else argv)
        captured = capsys.readouterr()
        said[debug] = captured.err
        assert code == 4, captured.err
        assert DEFAULT_TOKEN not in captured.out + captured.err
    sandbox.set_faults(fail_every=0, fail_status=503, fail_html=False)
    (error,) = [line for line in said[False].splitlines() if line.startswith("stopped: ")]
    assert "not JSON: HTTP 200, a text/html answer, not Kantata's: \"200 OK 200 OK upstream detail" in error
    assert "nginx" not in said[False] and "debug:" not in said[False]
    assert "debug: Kantata's answer, in full: HTTP 200 OK (text/html; charset=utf-8):\n<html>" in said[True]
    assert "<center>nginx</center>" in said[True] and "Authorization: Bearer ***" in said[True]
    assert "Traceback" not in said[True]
