"""The results workbook of an upload, written while the batches are on the wire.

Writing a large schedule's results is a sizeable part of a run (docs/benchmarks.md has the figures, with and
without streaming); written after the last answer, it would add to the sending instead of overlapping it.
Constant-memory xlsxwriter writes rows forward only, so a thread writes each row once the outcome of every row
above it is known; batches go out in row order, so it follows the answers closely, in the gaps while the senders
wait on Kantata. `finish` writes the rest, then the Summary and Errors sheets.

The file is exactly what `report.write_results` makes from the final outcomes: a row's outcome is recorded once,
and `finish` checks that every row written early ended as written, its amount shown with the decimals its
project's currency has (a currency first learnt during the upload can differ from the default); if one did not,
or the thread failed, the workbook is written again from scratch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from importer.errors import CellIssue
from importer.outcomes import Outcome
from importer.progress import CHUNK, Tick, Ticker
from importer.results.atomic import move_into_place, process_gone
from importer.results.packing import ResultsWorkbook
from importer.results.report import Cut, Money, RunInfo, Writer, check_output, write_results
from importer.results.totals import ProjectTotal
from importer.schedule import RawSchedule

SCRATCH_PREFIX = "kantata-import-"


LEFTOVER_AGE = 3600.0  # seconds untouched before a dead run's scratch folder is removed
# Where no process can be asked whether it still runs (process_gone), a scratch folder is taken for a dead run's
# only once untouched for a day: a run writes rows into it as answers come, and none waits that long between.
UNASKED_LEFTOVER_AGE = 24 * 3600.0


def _remove_leftovers() -> None:
    """Scratch folders of runs killed outright (kill -9, a power cut), which nothing else removes and which add
    up run after run: those named for a process that no longer exists and untouched for an hour (a process of
    another PID namespace sharing /tmp would look gone; its files would not be old), or, where that cannot be
    asked (Windows), untouched for a day."""
    now = time.time()
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = folder.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        gone = process_gone(int(pid))
        if gone is False:
            continue
        with contextlib.suppress(OSError):
            touched = max([folder.stat().st_mtime, *(f.stat().st_mtime for f in folder.iterdir())])
            if now - touched > (LEFTOVER_AGE if gone else UNASKED_LEFTOVER_AGE):
                shutil.rmtree(folder, ignore_errors=True)  # one we may not remove stays


class StreamedResults:
    """Feed it outcomes from any thread (`add`), then `finish` once, or `abandon` if the run failed outright."""

    def __init__(self, raw: RawSchedule, issues: Sequence[CellIssue], output: Path, money: Money | None = None) -> None:
        """`money`: the amounts, and the currencies known before sending (write_results)."""
        self._raw, self._issues = raw, list(issues)
        self._out = check_output(output, raw.path)
        # The workbook and xlsxwriter's row files live in a scratch folder, not beside the results, until the
        # end: an upload killed while sending leaves nothing in the user's folder.
        _remove_leftovers()
        self._scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
        self._tmp = Path(self._scratch) / "results.xlsx"
        self._written: dict[int, Outcome] = {}  # what the rows written so far show: the writer reads this
        try:
            self._workbook = ResultsWorkbook(
                str(self._tmp), {"constant_memory": True, "strings_to_numbers": False, "tmpdir": self._scratch}
            )
            self._writer = Writer(self._workbook, raw, self._written, self._issues, [], None, Ticker(None, None),
                                  money)  # fmt: skip
            self._sheet = self._workbook.add_worksheet(self._writer.sheet_name)
            self._writer.results_head(self._sheet)
        except BaseException:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise
        self._rows = raw.frame.index.tolist()
        self._next = 0  # position in the frame of the first row not written yet
        self._known: dict[int, Outcome] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="results-writer", daemon=True)
        self._thread.start()

    def add(self, outcomes: Sequence[Outcome]) -> None:
        with self._cond:
            for outcome in outcomes:
                self._known[outcome.row] = outcome
            self._cond.notify()

    @property
    def rows_written(self) -> int:
        """Rows written so far by the thread (the tests look at it)."""
        return self._next

    def _ready(self) -> int:
        """How many rows from `_next` on have an outcome (at most a chunk, so `finish` never waits long)."""
        stop = self._next
        end = min(len(self._rows), self._next + CHUNK)
        while stop < end and self._rows[stop] in self._known:
            stop += 1
        return stop - self._next

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closing and not (count := self._ready()):
                        self._cond.wait()
                    if self._closing:
                        return
                    start = self._next
                    for row in self._rows[start : start + count]:
                        self._written[row] = self._known[row]
                self._writer.rows(self._sheet, start, start + count)
                self._next = start + count
        except BaseException as exc:  # noqa: BLE001 - kept for finish(), which writes the workbook afresh
            self._error = exc

    def finish(
        self,
        outcomes: Mapping[int, Outcome],
        totals: Sequence[ProjectTotal],
        info: RunInfo,
        *,
        on_progress: Tick | None = None,
        cut: list[Cut] | None = None,
        money: Money | None = None,
    ) -> Path:
        """The workbook in place, from the final outcomes (every row has one by now); `cut` and `money` as
        write_results."""
        self._stop_thread()
        money = money or Money()
        # Each row's outcome is the very object recorded (`is`, rather than `!=` alone, which is slower).
        written = self._written.items()
        shown = self._writer.decimals_used.items()
        if (
            self._error is not None
            or any((now := outcomes.get(row)) is not o and now != o for row, o in written)
            or any(money.decimals_of(project) != decimals for project, decimals in shown)
        ):
            self.abandon()
            return write_results(self._raw, outcomes, self._issues, totals, info, self._out, on_progress=on_progress,
                                 cut=cut, money=money)  # fmt: skip
        total = len(self._rows)
        ticker = Ticker(on_progress, total)
        writer = self._writer
        writer.outcomes, writer.totals, writer.info, writer.ticker = outcomes, totals, info, ticker
        writer.money = money
        try:
            ticker.at(self._next)
            writer.rows(self._sheet, self._next, total)
            writer.finish(self._sheet)
            self._closed = True
            self._workbook.close()
            move_into_place(self._tmp, self._out, keep=True)
            if cut is not None:
                cut[:] = writer.cut
        except BaseException:
            self.abandon()
            raise
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)
        ticker.end(total)
        return self._out

    def abandon(self) -> None:
        """Stop writing and remove what was written; the results are written another way, or not at all."""
        self._stop_thread()
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):  # only to release its open row files; the file is not kept
                self._workbook.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _stop_thread(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
