"""Two uploads of one schedule at once, sharing nothing but Kantata (two machines): one milestone per row, and
both results name it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from importer.outcomes import Status
from importer.pipeline import RunResult, run_upload
from importer.sandbox.server import DEFAULT_TOKEN
from importer.settings import Secret, Settings


def _schedule(path: Path, rows: int) -> Path:
    path.write_text(
        "title,amount_in_cents,workspace_id\n" + "".join(f"R{n},{n + 1},{1001 + n % 3}\n" for n in range(rows))
    )
    return path


def _settings(sandbox: Any, state: Path, **changes: Any) -> Settings:
    return Settings(**{"base_url": sandbox.url, "token": Secret(DEFAULT_TOKEN), "state_dir": state, **changes})


def _one_per_row(sandbox: Any, rows: int) -> dict[str, str]:
    """title -> id of the one milestone Kantata holds for it (fails on a copy or a missing row)."""
    held = Counter(str(m["title"]) for m in sandbox.milestones())
    assert sorted(held.values()) == [1] * rows, [t for t, n in held.items() if n > 1][:5]
    return {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}


def _ids(result: RunResult) -> dict[str, str]:
    """title -> the id the result names, for every row (the schedule's row n is Excel row n + 2)."""
    assert result.stopped is None and len(result.outcomes) == result.rows
    assert {o.status for o in result.outcomes.values()} <= {Status.CREATED, Status.UNCHANGED}
    return {f"R{row - 2}": str(o.milestone_id) for row, o in result.outcomes.items()}


def test_an_upload_that_finishes_while_another_is_sending_ends_with_one_milestone_per_row(
    sandbox: Any, tmp_path: Path
) -> None:
    """Run B is sending when run A, on another machine, uploads the whole schedule: A finds B's first batches and
    creates the rest; B sends the rest as well, sees in its count that someone else wrote, and keeps A's."""
    rows = 1000
    path = _schedule(tmp_path / "s.csv", rows)
    other: list[RunResult] = []

    def the_other_machine(_: object) -> None:
        if not other:
            other.append(run_upload(path, _settings(sandbox, tmp_path / "a"), output=tmp_path / "a.xlsx"))

    mine = run_upload(
        path, _settings(sandbox, tmp_path / "b"), output=tmp_path / "b.xlsx", on_outcomes=the_other_machine
    )
    kept = _one_per_row(sandbox, rows)
    assert _ids(other[0]) == kept and _ids(mine) == kept
    copies = [o for o in mine.outcomes.values() if o.errors and "another upload" in o.errors[0]]
    assert copies, "the other upload created rows this one sent as well: they were found and deleted"
    assert all(o.status is Status.UNCHANGED for o in copies)
    assert sandbox.stats().get("DELETE /billing_milestones/{id}", 0) >= len(copies)


@pytest.mark.parametrize("attempt", range(3))
def test_two_uploads_started_together_agree_on_one_milestone_per_row(
    sandbox: Any, tmp_path: Path, attempt: int
) -> None:
    """Free-running threads, a small latency so their batches interleave, separate state folders and two spellings
    of the URL (two machines): whichever way they race, each row is held once and both results name the one kept.
    `python -m benchmarks.race` runs the same race many times on 3,000 rows."""
    rows = 600
    sandbox.set_faults(latency=0.002 * (attempt + 1))
    path = _schedule(tmp_path / "s.csv", rows)
    start = threading.Barrier(2)
    results: dict[str, RunResult] = {}
    failures: list[BaseException] = []

    def upload(name: str) -> None:
        try:
            start.wait()
            if name == "b":  # in part or whole: the second starts 0, 0.1 or 0.2 s after the first
                time.sleep(0.1 * attempt)
            url = sandbox.url if name == "a" else sandbox.url.replace("127.0.0.1", "localhost") + "/"
            settings = _settings(sandbox, tmp_path / name, concurrency=2 + attempt, base_url=url)
            results[name] = run_upload(path, settings, output=tmp_path / f"{name}.xlsx")
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=upload, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    kept = _one_per_row(sandbox, rows)
    assert _ids(results["a"]) == kept and _ids(results["b"]) == kept
