"""The benchmark's upload figure runs end to end, for the importer and for the bare client it is compared with."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench import BARE, upload


@pytest.mark.parametrize("sender", [None, BARE])
def test_an_upload_figure_sends_every_row_once_and_times_the_sending(tmp_path: Path, sender: str | None) -> None:
    run, made = upload(tmp_path, 500, 0.0, sender)  # raises SystemExit unless the sandbox holds all 500 rows
    assert made["POST"] == 5 and 0 < made["send_seconds"] < run.seconds
