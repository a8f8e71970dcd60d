"""The hostile corpus (tests/corpus/cases/hostile.toml) beyond what the corpus runner checks of every case: a few
go through `upload` against the sandbox, which must receive nothing, and a few run as a real process."""

from __future__ import annotations

import importlib
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from importer.cli.main import main
from importer.sandbox.server import DEFAULT_TOKEN
from tests import forked_cli
from tests.conftest import read_results
from tests.corpus import makers_hostile

TABLE = Path(__file__).parents[1] / "corpus" / "cases" / "hostile.toml"
CASES: list[dict[str, Any]] = tomllib.loads(TABLE.read_text(encoding="utf-8"))["case"]


def _make(case: dict[str, Any], folder: Path) -> Path:
    module, function = case["make"].split(":")
    maker = getattr(importlib.import_module(f"tests.corpus.{module}"), function)
    path: Path = maker(folder)
    return path


UPLOADED = ["bad-crc-styles", "corrupt-deflate-sheet", "xfd-wide-sheet", "csv-16385-columns", "zip-bomb-lying"]


@pytest.mark.parametrize("name", UPLOADED)
def test_upload_sends_nothing(name: str, tmp_path: Path, sandbox: Any, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    case = next(c for c in CASES if c["name"] == name)
    path = _make(case, tmp_path)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    code = main(["upload", str(path), "--base-url", sandbox.url, "--non-interactive"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "traceback" not in err.casefold()
    assert sandbox.milestones() == []


@pytest.mark.parametrize("name", ["far-cell", "corrupt-deflate-workbook"])
def test_a_real_process_answers(name: str, tmp_path: Path) -> None:
    """The cell reader runs in Rust: a file it would abort on must be refused before it sees it, in a real
    process too (an abort is no exception a test in-process could see)."""
    case = next(c for c in CASES if c["name"] == name)
    path = _make(case, tmp_path)
    done = forked_cli.run(["validate", str(path)], env=os.environ)
    assert done.returncode == 2, done.stderr
    assert case["says"][0].casefold() in done.stderr.casefold()
    assert "Traceback" not in done.stderr


def test_right_to_left_and_combining_titles_are_kept_exactly(tmp_path: Path) -> None:
    for make in (makers_hostile.rtl_and_combining, makers_hostile.rtl_and_combining_csv):
        folder = tmp_path / make.__name__
        folder.mkdir()
        path = make(folder)
        assert main(["validate", str(path), "--quiet"]) == 0
        titles = [r["Title"] for r in read_results(path.with_name(f"{path.stem}.results.xlsx"), "Billing"
                                                   if path.suffix == ".xlsx" else "Schedule")]  # fmt: skip
        assert titles == [makers_hostile.RTL_TITLE, makers_hostile.COMBINING_TITLE]


def test_outcome_columns_that_cannot_be_placed_stop_the_run(tmp_path: Path) -> None:
    """However a schedule got past the loader's limits, the results writer never drops an outcome column."""
    import pandas as pd

    from importer.errors import ScheduleError
    from importer.results import outcome_columns
    from importer.schedule import EXCEL_COLUMNS, OUTCOME_COLUMNS, RawSchedule
    from importer.schedule.limits import MAX_COLUMNS

    def raw(width: int) -> RawSchedule:
        return RawSchedule(path=tmp_path / "s.xlsx", kind="xlsx", sheet="Billing", header_row=1,
                           headers=["Title", *[""] * (width - 1)], fields={}, frame=pd.DataFrame())  # fmt: skip

    placed, offset = outcome_columns(raw(MAX_COLUMNS))  # the outcome columns first, the user's 16,378 after
    assert list(placed.values()) == list(range(len(OUTCOME_COLUMNS))) and offset + MAX_COLUMNS == EXCEL_COLUMNS
    with pytest.raises(ScheduleError, match=f"{MAX_COLUMNS + 1:,} columns, over the limit of {MAX_COLUMNS:,}"):
        outcome_columns(raw(MAX_COLUMNS + 1))
