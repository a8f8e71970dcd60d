"""A run pauses and freezes the cycle collector for speed (pipeline.py); a caller's process must get it back."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from importer.errors import ImporterError
from importer.pipeline import run_validate
from tests.conftest import MakeSchedule, good_row


@pytest.fixture
def collector_on() -> Iterator[None]:
    gc.enable()
    gc.unfreeze()
    yield
    gc.enable()
    gc.unfreeze()


@pytest.mark.usefixtures("collector_on")
def test_a_run_leaves_the_collector_on_and_nothing_frozen(make_schedule: MakeSchedule) -> None:
    run_validate(make_schedule([good_row(n) for n in range(20)]))
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


@pytest.mark.usefixtures("collector_on")
def test_a_run_that_fails_on_its_input_leaves_the_collector_on(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(ImporterError):
        run_validate(broken)
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_collector_the_caller_turned_off_stays_off(make_schedule: MakeSchedule) -> None:
    gc.disable()
    try:
        run_validate(make_schedule([good_row(n) for n in range(3)]))
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
