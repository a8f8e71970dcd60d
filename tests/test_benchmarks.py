"""The benchmark's upload figure runs end to end, for the importer and for the bare client it is compared with."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench import upload


@pytest.mark.parametrize("bare", [False, True])
def test_an_upload_figure_sends_every_row_once_and_times_the_sending(tmp_path: Path, bare: bool) -> None:
    run, made = upload(tmp_path, 500, 0.0, bare=bare)  # raises SystemExit unless the sandbox holds all 500 rows
    assert made["POST"] == 5 and 0 < made["send_seconds"] < run.seconds
