"""Progress: the library reports it through a callback and never prints; the CLI draws bars only on a terminal."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from importer.cli.bars import Bars
from importer.pipeline import run_upload, run_validate
from importer.progress import CHUNK, Stage, Ticker
from importer.sandbox.server import DEFAULT_TOKEN
from importer.settings import Secret, Settings
from tests.conftest import MakeSchedule, good_row

ROOT = Path(__file__).resolve().parent.parent
Calls = dict[Stage, list[tuple[int, int | None]]]


def _recorder() -> tuple[Calls, Any]:
    calls: Calls = defaultdict(list)

    def on_progress(stage: Stage, done: int, total: int | None) -> None:
        calls[stage].append((done, total))

    return calls, on_progress


def _check_stage(calls: list[tuple[int, int | None]], total: int) -> None:
    """Starts at 0, never goes back, ends at exactly `total`, and calls back per chunk, not per row."""
    assert calls[0][0] == 0
    assert calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert len(calls) <= total // CHUNK + 2


def test_every_stage_of_a_dry_run_reports_from_zero_to_its_total_per_chunk(
    make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = 2 * CHUNK + 123
    path = make_schedule([good_row(n) for n in range(rows)], fmt="csv")
    calls, on_progress = _recorder()

    result = run_validate(path, on_progress=on_progress)

    assert result.counts["valid"] == rows
    assert list(calls) == [Stage.READ, Stage.VALIDATE, Stage.WRITE]  # in this order; a dry run builds no requests
    for stage in calls:
        _check_stage(calls[stage], rows)
        assert len(calls[stage]) >= 3, stage  # chunks in between, not only a start and an end
    assert capsys.readouterr() == ("", "")  # the library never prints


def test_read_progress_counts_rows_below_the_header_and_knows_the_total_of_a_workbook(
    make_schedule: MakeSchedule,
) -> None:
    path = make_schedule([good_row(n) for n in range(CHUNK + 10)], above=[["Billing 2026"], []])
    calls, on_progress = _recorder()
    run_validate(path, on_progress=on_progress)
    assert calls[Stage.READ][0] == (0, None)  # not known before the sheet is opened
    assert calls[Stage.READ][1] == (CHUNK, CHUNK + 10)  # known from the sheet's used range, header excluded
    assert calls[Stage.READ][-1] == (CHUNK + 10, CHUNK + 10)


def test_upload_reports_lookup_and_sending_once_per_batch(sandbox: Any, make_schedule: MakeSchedule) -> None:
    path = make_schedule([good_row(n) for n in range(40)])
    calls, on_progress = _recorder()
    # Batches of the same size, so that the counts are the same whichever batch's answer is recorded first (the
    # order is the network's, even at concurrency 1: a spare thread sends while an answer is recorded).
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10, concurrency=1)

    result = run_upload(path, settings, on_progress=on_progress)

    assert result.counts["created"] == 40
    assert list(calls) == [Stage.READ, Stage.VALIDATE, Stage.PREPARE, Stage.LOOKUP, Stage.SEND, Stage.WRITE]
    assert calls[Stage.LOOKUP] == [(0, 40), (40, 40)]
    assert calls[Stage.SEND] == [(0, 40), (10, 40), (20, 40), (30, 40), (40, 40)]


def test_sending_counts_only_rows_it_sends(sandbox: Any, make_schedule: MakeSchedule, tmp_path: Path) -> None:
    path = make_schedule([good_row(n) for n in range(30)])
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN), batch_size=10)
    run_upload(path, settings, output=tmp_path / "first.xlsx")
    more = make_schedule([good_row(n) for n in range(35)], name="more")
    calls, on_progress = _recorder()
    run_upload(more, settings, on_progress=on_progress)
    assert calls[Stage.SEND] == [(0, 5), (5, 5)]  # the 30 already in Kantata are not "sent"


def test_ticker_calls_back_at_the_start_per_chunk_and_at_the_end() -> None:
    seen: list[tuple[int, int | None]] = []
    ticker = Ticker(lambda d, t: seen.append((d, t)), 25, chunk=10)
    for n in range(1, 26):
        ticker.at(n)
    ticker.end()
    assert seen == [(0, 25), (10, 25), (20, 25), (25, 25)]  # 25 itself is left to end(): no double end
    Ticker(None, 5).at(5)  # no callback: nothing to do, nothing fails


# --- the CLI: bars on a terminal only ---------------------------------------------------------------------


def test_bars_draw_one_bar_per_stage_and_print_messages_above_them() -> None:
    stream = io.StringIO()
    bars = Bars(stream, delay=0)
    bars(Stage.READ, 0, None)
    bars(Stage.READ, 5, 10)
    bars.say("a message")
    bars(Stage.READ, 10, 10)
    bars(Stage.READ, 10, 10)  # a late call for a finished stage draws nothing more
    bars(Stage.SEND, 0, 4)
    bars.close()
    lines = stream.getvalue().replace("\r", "\n").splitlines()
    finals = [line for line in lines if "10/10" in line]
    assert finals and all(line.startswith("reading") and "100%" in line and "rows/s" in line for line in finals)
    assert "a message" in lines and lines.index("a message") < lines.index(finals[0])
    after = lines[len(lines) - lines[::-1].index(finals[-1]) :]
    assert not any(line.startswith("reading") for line in after)  # no second bar for the finished stage
    assert any(line.startswith("sending") and "0/4" in line for line in lines)


def test_a_short_stage_shows_no_bar() -> None:
    stream = io.StringIO()
    bars = Bars(stream)  # the CLI's delay: 0.5 s
    bars(Stage.READ, 0, 48)
    bars(Stage.READ, 48, 48)
    bars.close()
    assert stream.getvalue() == ""


def _run_in_pty(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run the CLI as a real subprocess whose stdin, stdout and stderr are a pseudo-terminal; all it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "importer", *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=ROOT, env=env, close_fds=True)  # fmt: skip
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def slow_sandbox_env(sandbox: Any) -> dict[str, str]:
    """Each request takes 0.15 s, so sending 60 rows 10 at a time, one request at a time (--concurrency 1), lasts
    over the bars' 0.5 s delay."""
    sandbox.set_faults(latency=0.15)
    return {**os.environ, "KANTATA_BASE_URL": sandbox.url, "KANTATA_API_TOKEN": DEFAULT_TOKEN}


def test_a_terminal_sees_progress_bars_with_rate_and_time_left(
    slow_sandbox_env: dict[str, str], make_schedule: MakeSchedule
) -> None:
    path = make_schedule([good_row(n) for n in range(60)])
    code, seen = _run_in_pty(["upload", str(path), "--batch-size", "10", "--concurrency", "1"], slow_sandbox_env)
    assert code == 0, seen
    bars = [line for line in seen.replace("\r\n", "\n").replace("\r", "\n").splitlines() if "rows/s" in line]
    assert bars, seen
    assert any(line.startswith("sending") and "60/60" in line and "100%" in line for line in bars), bars
    assert any("<" in line for line in bars)  # elapsed<remaining: the time left
    assert "60 rows read" in seen and "60 created" in seen


def test_quiet_on_a_terminal_shows_no_bars(slow_sandbox_env: dict[str, str], make_schedule: MakeSchedule) -> None:
    path = make_schedule([good_row(n) for n in range(60)])
    code, seen = _run_in_pty(
        ["upload", str(path), "--batch-size", "10", "--concurrency", "1", "--quiet"], slow_sandbox_env
    )
    assert code == 0, seen
    assert "rows/s" not in seen and "\r" not in seen.replace("\r\n", "")
    assert "60 created" in seen


def test_without_a_terminal_there_are_no_bars(slow_sandbox_env: dict[str, str], make_schedule: MakeSchedule) -> None:
    path = make_schedule([good_row(n) for n in range(60)])
    command = [sys.executable, "-m", "importer", "upload", str(path), "--batch-size", "10", "--concurrency", "1"]
    proc = subprocess.run(command, env=slow_sandbox_env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "rows/s" not in proc.stderr and "\r" not in proc.stderr and "%|" not in proc.stderr
    assert "sending 60 rows in 6 requests" in proc.stderr  # the stage messages are still there
    assert "60 created" in proc.stdout
