"""The journal's identity of an import (schedule_digest) and what a reopened journal restores."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from importer.clock import SYSTEM_CLOCK, Clock, boot_id
from importer.delivery.journal import Journal, journal_path, schedule_digest
from importer.kantata.client import KantataClient
from importer.kantata.keys import Item, build_items
from importer.pipeline import RunResult, run_upload
from importer.sandbox.server import DEFAULT_TOKEN
from importer.schedule.cells import DEFAULT_OPTIONS
from importer.schedule.loader import load_schedule
from importer.schedule.schema import validate_rows
from importer.settings import Secret, Settings
from tests.conftest import MakeSchedule, good_row
from tests.fake_clock import FakeClock


def digest_of(path: Path) -> str:
    validated = validate_rows(load_schedule(path), DEFAULT_OPTIONS)
    items, _ = build_items(validated.rows)
    return schedule_digest(validated.rows, [i.row for i in items])


def test_the_same_rows_give_the_same_digest_whatever_the_file(make_schedule: MakeSchedule) -> None:
    rows = [good_row(n) for n in range(30)]
    first = digest_of(make_schedule(rows, name="a"))
    assert digest_of(make_schedule(rows, name="b")) == first  # another file, other bytes: the same import
    assert digest_of(make_schedule(rows, name="c", fmt="csv")) == first  # the same cells saved as CSV


def test_any_change_to_what_is_sent_changes_the_digest(make_schedule: MakeSchedule) -> None:
    rows = [good_row(n) for n in range(30)]
    first = digest_of(make_schedule(rows, name="a"))
    amount = [list(r) for r in rows]
    amount[17][1] += 1  # one cent on one row
    moved = [list(r) for r in rows]
    moved[3], moved[4] = moved[4], moved[3]  # the same rows, two of them swapped: other row numbers
    fewer = rows[:-1]
    task = [list(r) for r in rows]
    task[5][4], task[5][5] = 5001, "upon_completion"
    changed = [digest_of(make_schedule(r, name=f"v{i}")) for i, r in enumerate([amount, moved, fewer, task])]
    assert len({first, *changed}) == 5


def test_a_row_left_out_of_the_items_changes_the_digest(make_schedule: MakeSchedule) -> None:
    validated = validate_rows(load_schedule(make_schedule([good_row(n) for n in range(5)])), DEFAULT_OPTIONS)
    items, _ = build_items(validated.rows)
    assert schedule_digest(validated.rows, [i.row for i in items]) != schedule_digest(
        validated.rows, [i.row for i in items[:-1]]
    )


def _went(journal: Journal, items: list[Item]) -> None:
    """A batch as an upload journals it when its request leaves: "sending", then "left"."""
    journal.sending(items)
    journal.left(items)


def _journal_of_sent(
    tmp_path: Path, make_schedule: MakeSchedule, sent: int, clock: Clock = SYSTEM_CLOCK
) -> tuple[Path, list[Item]]:
    """A journal ("digest-a") of an import of five rows that sent its first `sent` rows, and those items."""
    validated = validate_rows(load_schedule(make_schedule([good_row(n) for n in range(5)])), DEFAULT_OPTIONS)
    items, _ = build_items(validated.rows)
    path = tmp_path / ".results.xlsx.journal.jsonl"
    journal = Journal.open(path, "digest-a", clock)
    _went(journal, items[:sent])
    journal.close(finished=False)
    return path, items


def test_a_reopened_journal_restores_what_was_sent_only_for_its_digest(
    tmp_path: Path, make_schedule: MakeSchedule
) -> None:
    path, _ = _journal_of_sent(tmp_path, make_schedule, 3)
    same = Journal.open(path, "digest-a")
    assert (same.sent_before, same.in_flight) == ({2, 3, 4}, {2, 3, 4})
    same.close(finished=False)
    other = Journal.open(path, "digest-b")
    assert other.sent_before == set()
    other.close(finished=True)
    assert not path.exists()


def test_a_batch_journalled_that_never_left_is_not_in_flight_in_this_boot_only(
    tmp_path: Path, make_schedule: MakeSchedule
) -> None:
    """A "sending" line with no "left" line after it: its request never left, if written in this boot by a
    version that writes "left" lines (journal.tells_left); a resume need not wait for it."""
    clock = FakeClock(boot="this-boot")
    path, items = _journal_of_sent(tmp_path, make_schedule, 2, clock)  # rows 2, 3 left
    journal = Journal.open(path, "digest-a", clock)
    journal.sending(items[2:4])  # rows 4, 5: journalled ahead of their slot, then the kill
    journal.close(finished=False)
    resumed = Journal.open(path, "digest-a", clock)
    resumed.close(finished=False)
    assert (resumed.sent_before, resumed.in_flight) == ({2, 3}, {2, 3})  # 4, 5: neither sent nor in flight

    _shifted(path, tells=None)  # as a version before "left" lines wrote it: every row counts as gone
    assert _reopened(path, clock).in_flight == {2, 3, 4, 5}
    _shifted(path, tells="left")
    assert _reopened(path, clock).in_flight == {2, 3}
    clock.boot_id = "after-a-crash"  # the machine crashed and came back up: a flushed line may have been lost
    assert _reopened(path, clock).in_flight == {2, 3, 4, 5}


def _reopened(path: Path, clock: Clock) -> Journal:
    journal = Journal.open(path, "digest-a", clock)
    journal.close(finished=False)
    return journal


def test_a_rerun_after_a_kill_sends_at_once_what_was_journalled_but_never_left(
    sandbox: Any, tmp_path: Path, make_schedule: MakeSchedule
) -> None:
    """A batch journalled ahead of its slot, which every kill -9 leaves, is sent at once, once: not after the
    whole window (sending_ahead + Settings.writes_until, minutes by default)."""
    sandbox.reset()
    path = make_schedule([good_row(n) for n in range(30)], name="all")
    validated = validate_rows(load_schedule(path), DEFAULT_OPTIONS)
    items, _ = build_items(validated.rows)
    journal = Journal.open(journal_path(path.with_name("all.results.xlsx")),
                           schedule_digest(validated.rows, [i.row for i in items]))  # fmt: skip
    journal.sending(items[:10])  # journalled just now; the kill came before its slot did
    journal.close(finished=False)
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, server_timeout=180)
    said: list[str] = []
    result = run_upload(path, settings, on_stage=said.append)
    assert not any("waiting up to" in s for s in said), said
    assert result.counts["created"] == 30 and len(sandbox.milestones()) == 30


def test_created_lines_lost_to_a_power_cut_cost_no_wait_and_no_duplicate(
    sandbox: Any, tmp_path: Path, make_schedule: MakeSchedule
) -> None:
    """The journal does not fsync its "created" lines (journal.py). Say a power cut lost them: the batch's
    "sending" line survived, just now, and Kantata has its rows. The re-run finds them by key at once, so it
    neither waits for them (its server timeout is far off) nor sends them again, and reports them `created`."""
    sandbox.reset()
    rows = [good_row(n) for n in range(30)]
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, server_timeout=60)
    earlier = run_upload(make_schedule(rows[:10], name="first_ten"), settings)  # the same keys as rows 2-11 below
    assert earlier.counts["created"] == 10
    path = make_schedule(rows, name="all")
    validated = validate_rows(load_schedule(path), DEFAULT_OPTIONS)
    items, _ = build_items(validated.rows)
    journal = Journal.open(
        journal_path(path.with_name("all.results.xlsx")), schedule_digest(validated.rows, [i.row for i in items])
    )
    _went(journal, items[:10])  # sent now; the lines saying they were created are gone
    journal.close(finished=False)

    said: list[str] = []
    started = time.monotonic()
    result = run_upload(path, settings, on_stage=said.append)
    assert time.monotonic() - started < 30  # no wait for the read timeout (60 s after the "sending" line)
    assert any("resuming an interrupted upload of this schedule (10 rows sent before)" in s for s in said), said
    assert not any("waiting up to" in s for s in said), said
    assert result.counts["created"] == 30 and result.counts["unchanged"] == 0
    assert len(sandbox.milestones()) == 30  # none twice
    assert [result.outcomes[row].milestone_id for row in range(2, 12)] == [
        earlier.outcomes[row].milestone_id for row in range(2, 12)
    ]


def test_a_line_after_a_torn_tail_is_not_lost(tmp_path: Path, make_schedule: MakeSchedule) -> None:
    """A power cut mid-line leaves a torn last line; the resumed run's first line must not be glued onto it (and
    ignored with it), or a third run would not know that batch was in flight."""
    path, items = _journal_of_sent(tmp_path, make_schedule, 2)
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"kind": "outcome", "row": 2, "sta')  # torn by the cut
    resumed = Journal.open(path, "digest-a")
    assert resumed.in_flight == {2, 3}
    _went(resumed, items[2:4])
    resumed.close(finished=False)
    third = Journal.open(path, "digest-a")
    assert third.in_flight == {2, 3, 4, 5}
    third.close(finished=True)


def _shifted(path: Path, **change: Any) -> None:
    """Rewrite the journal's "sending" lines with `change` (a field: a value, or a function of the old value)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry["kind"] == "sending":
            for name, value in change.items():
                entry[name] = value(entry.get(name)) if callable(value) else value
        lines.append(json.dumps(entry) + "\n")
    path.write_text("".join(lines), encoding="utf-8")


def _rerun_while_a_batch_lands_late(sandbox: Any, path: Path, batch: list[Item]) -> tuple[RunResult, list[str]]:
    """Upload `path` again while a killed run's request for `batch`, still on its way, creates it (looking
    nothing up) 0.3 s after the re-run says it waits: started at a fixed time instead, it could land before the
    look-up on a loaded machine. A re-run that does not wait gets it after it ends: a duplicate. The re-run
    waits sending_ahead + connect_timeout + server_timeout (0.2 + 0.2 + 2 s) after the journal's last line at
    most, looking every 0.1 s."""
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, connect_timeout=0.2,
                        server_timeout=2, sending_ahead=0.2, settle_poll=0.1)  # fmt: skip
    client = KantataClient(settings, Secret(DEFAULT_TOKEN))
    late = threading.Timer(0.3, client.create, ([i.body for i in batch],))
    said: list[str] = []

    def stage(text: str) -> None:
        said.append(text)
        if "waiting up to" in text:
            late.start()

    try:
        result = run_upload(path, settings, on_stage=stage)
        if not late.is_alive() and not late.finished.is_set():  # never started: the request lands now
            late.start()
    finally:
        if late.ident is not None:
            late.join()
        client.close()
    return result, said


def _since(path: Path, clock: Clock) -> float:
    journal = Journal.open(path, "digest-a", clock)
    journal.close(finished=False)
    return journal.since_last_sent()


@pytest.mark.skipif(boot_id() is None, reason="the clock since boot is read on Linux only")
def test_a_wall_clock_stepped_forward_does_not_cut_the_wait_short(
    sandbox: Any, tmp_path: Path, make_schedule: MakeSchedule
) -> None:
    """A run was killed with a batch on the wire; since then the wall clock jumped forward (an NTP step, a user
    setting the clock), so by the wall clock that batch's line is hours old. The request is in fact still
    writing, and lands a moment later: the re-run must wait for it (by the clock since boot), not send its rows
    again and create them twice."""
    sandbox.reset()
    rows = [good_row(n) for n in range(30)]
    path = make_schedule(rows, name="all")
    validated = validate_rows(load_schedule(path), DEFAULT_OPTIONS)
    items, _ = build_items(validated.rows)
    journal_file = journal_path(path.with_name("all.results.xlsx"))
    journal = Journal.open(journal_file, schedule_digest(validated.rows, [i.row for i in items]))
    _went(journal, items[:10])
    journal.close(finished=False)
    _shifted(journal_file, at=lambda at: at - 10_000)  # as the wall clock now stands, written 10,000 s ago
    # The re-run waits 2.4 s at most after the line by the clock since boot; by the wall clock, 10,000 s are gone.
    result, said = _rerun_while_a_batch_lands_late(sandbox, path, items[:10])  # rows 2-11
    assert any("waiting up to" in s for s in said), said
    assert len(sandbox.milestones()) == 30  # none twice
    assert result.counts["created"] == 30


def test_how_long_ago_the_last_line_was_sent_by_which_clock(tmp_path: Path, make_schedule: MakeSchedule) -> None:
    """The clock since boot is trusted only when the last "sending" line was written in this boot; otherwise the
    wall clock, never below 0 (a clock set back must not make the wait longer than the whole window)."""
    clock = FakeClock(boot="this-boot", up=5_000.0)
    path, items = _journal_of_sent(tmp_path, make_schedule, 2, clock)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [e["up"] for e in lines if e["kind"] == "sending"] == [5_000.0]

    _shifted(path, at=lambda at: at - 7_200, up=4_990.0)  # by the wall clock 2 hours ago, by this boot's 10 s
    assert _since(path, clock) == pytest.approx(10.0)

    _shifted(path, boot="an-earlier-boot")  # its clock since boot means nothing now: the wall clock's 2 hours
    assert _since(path, clock) == pytest.approx(7_200, abs=5)

    _shifted(path, at=lambda at: at + 7_200 + 3_600)  # set an hour in the future (the clock stepped back): 0
    assert _since(path, clock) == 0.0

    # A line of this boot followed by one from another machine's run (a shared folder): the later line decides.
    _shifted(path, boot="this-boot", at=clock.now() - 30)
    journal = Journal.open(path, "digest-a", clock)
    clock.boot_id = "another-machine"
    _went(journal, items[2:4])
    journal.close(finished=False)
    clock.boot_id = "this-boot"
    assert _since(path, clock) == pytest.approx(0, abs=5)  # wall: just now, not 10 s


def test_a_row_refused_for_its_currency_does_not_change_which_journal_a_rerun_resumes(
    sandbox: Any, tmp_path: Path, make_schedule: MakeSchedule
) -> None:
    """Rows whose Amount does not fit their project's currency are refused after Kantata says the currency; the
    journal's identity of the import must not depend on that answer (else a run whose question failed would
    wipe the journal, and the next one send the batches still on the wire again). Here a killed
    run's batch is still being written when the re-run starts: the re-run waits for it and sends it once."""
    sandbox.reset()
    rows = [["EUR 5.00" if n == 0 else f"{n}.00", f"T{n}", 1001] for n in range(30)]
    path = make_schedule([[title, amount, ws] for amount, title, ws in rows], headers=["title", "amount",
                                                                                     "workspace_id"])  # fmt: skip
    validated = validate_rows(load_schedule(path), DEFAULT_OPTIONS)
    items, _ = build_items(validated.rows)  # as the killed run built them: every row checked offline
    journal = Journal.open(journal_path(path.with_name("schedule.results.xlsx")),
                           schedule_digest(validated.rows, [i.row for i in items]))  # fmt: skip
    _went(journal, items[10:20])
    journal.close(finished=False)
    result, said = _rerun_while_a_batch_lands_late(sandbox, path, items[10:20])
    assert any("resuming an interrupted upload" in s for s in said), said
    assert any("waiting up to" in s for s in said), said
    assert len(sandbox.milestones()) == 29  # each once; not the EUR row
    assert result.counts["created"] == 29 and result.counts["invalid"] == 1
    assert result.outcomes[2].status.value == "invalid"
