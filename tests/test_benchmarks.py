"""The benchmark's upload figure runs end to end, for the importer and for the bare client it is compared with."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench import upload
from benchmarks.month2 import run as run_month_two


@pytest.mark.parametrize("bare", [False, True])
def test_an_upload_figure_sends_every_row_once_and_times_the_sending(tmp_path: Path, bare: bool) -> None:
    run, made = upload(tmp_path, 500, 0.0, bare=bare)  # raises SystemExit unless the sandbox holds all 500 rows
    assert made["POST"] == 5 and 0 < made["send_seconds"] < run.seconds


def test_the_second_month_figure_updates_the_edited_tenth_in_place(tmp_path: Path) -> None:
    m = run_month_two(tmp_path, 300, 0.0)  # raises SystemExit unless 300 milestones remain, the 30 edited updated
    assert (m.rows, m.edited) == (300, 30)
    # the listing of the 300 milestones (2 pages) answers every row's id: no look-up by id
    assert m.requests == {"GET /billing_milestones": 2, "GET /workspaces": 1, "PUT /billing_milestones/{id}": 30}
    assert (m.pages, m.workspaces, m.least) == (2, 1, 33) and 0 < m.looking < m.sending < m.seconds and m.floor > 0
