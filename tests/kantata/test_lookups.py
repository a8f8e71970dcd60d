"""Looking before sending, cheaply: a project where this importer has never created anything needs no look-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from importer.pipeline import run_upload
from importer.sandbox.server import DEFAULT_TOKEN
from importer.settings import Secret, Settings


def _schedule(path: Path, rows: list[tuple[str, int, int]]) -> Path:
    path.write_text("title,amount_in_cents,workspace_id\n" + "".join(f"{t},{a},{w}\n" for t, a, w in rows))
    return path


def _gets(sandbox: Any) -> int:
    return int(sandbox.stats().get("GET /billing_milestones", 0))


def test_a_first_import_costs_one_count_not_a_look_up_per_200_rows(sandbox: Any, tmp_path: Path) -> None:
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    rows = [(f"R{n}", n, 1001 + n % 3) for n in range(450)]
    first = run_upload(_schedule(tmp_path / "a.csv", rows), settings)
    assert first.counts["created"] == 450
    assert _gets(sandbox) == 2  # one count for the three projects before and one after; no key look-ups

    again = run_upload(_schedule(tmp_path / "a.csv", rows), settings, output=tmp_path / "again.xlsx")
    assert again.counts["unchanged"] == 450 and len(sandbox.milestones()) == 450  # nothing twice
    # the count is not zero now: one listing of this importer's milestones in the three projects, every page of
    # the 450 it holds there, finds every row's key (no look-up by key) and those no row matches (delivery/missing.py)
    assert _gets(sandbox) == 2 + 1 + 3


def test_rows_of_a_new_project_skip_the_look_up_and_an_old_project_keeps_it(sandbox: Any, tmp_path: Path) -> None:
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    old = [(f"Old {n}", n, 1001) for n in range(10)]
    run_upload(_schedule(tmp_path / "old.csv", old), settings)
    gets = _gets(sandbox)
    new = [(f"New {n}", n, 1002) for n in range(250)]
    result = run_upload(_schedule(tmp_path / "new.csv", new), settings)
    assert result.counts["created"] == 250
    assert _gets(sandbox) == gets + 2  # project 1002 has nothing of ours: the counts alone settle it
    both = run_upload(_schedule(tmp_path / "both.csv", old + new), settings)
    assert both.counts["unchanged"] == 260 and len(sandbox.milestones()) == 260


def test_a_small_schedule_is_looked_up_without_a_count(sandbox: Any, tmp_path: Path) -> None:
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    rows = [(f"R{n}", n, 1001) for n in range(200)]
    run_upload(_schedule(tmp_path / "a.csv", rows), settings)
    # one listing of this importer's milestones in the project before sending (it holds none: every key is
    # settled, and none is there that no row matches), and one look-up of the 200 keys after it (another upload
    # may have sent them too): counts before and after would cost more
    assert _gets(sandbox) == 2


def test_a_users_own_reference_is_always_looked_up(sandbox: Any, tmp_path: Path) -> None:
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    path = tmp_path / "own.csv"
    path.write_text("title,amount_in_cents,workspace_id,External service,External type,External ID\n"
                    "A,1,1003,NetSuite,line,L-1\n")  # fmt: skip
    run_upload(path, settings)
    # its key carries no project: looked up by reference before and after, no count; one listing of ours (for the
    # milestones no row matches)
    assert _gets(sandbox) == 3
    again = run_upload(path, settings, output=tmp_path / "again.xlsx")
    assert again.counts["unchanged"] == 1 and len(sandbox.milestones()) == 1
