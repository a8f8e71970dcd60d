"""The corpus of messy and hostile files: every case of every table in cases/*.toml, through the real CLI.

Each case names a committed file (`file`) or a maker that writes one (`make = "module:function"`), the extra
arguments to `kantata-import validate FILE`, the exit code, substrings the output must contain, and optionally the
invalid rows counted in the --json summary. Every case also must print no traceback and leave the input file's
bytes as they were. Most run in-process through the CLI's main(argv); the first cases of each table also run as a
real subprocess, as a user's shell runs them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from importer.cli.main import main
from tests import forked_cli
from tests.conftest import collector_paused, files_open_on

HERE = Path(__file__).parent
CASES_DIR = HERE / "cases"
SUBPROCESS_PER_TABLE = 2  # the first cases of each table also run as a real command
KEYS = {"name", "file", "make", "args", "exit", "says", "invalid", "why"}


@dataclass(frozen=True, slots=True)
class Case:
    table: str
    name: str
    file: str | None
    make: str | None
    args: tuple[str, ...]
    exit: int
    says: tuple[str, ...]
    invalid: int | None
    why: str

    @property
    def id(self) -> str:
        return f"{self.table}:{self.name}"

    def build(self, folder: Path) -> Path:
        """The input file: the committed one itself (so its bytes are checked), or one the maker writes."""
        if self.file is not None:
            return HERE / self.file
        assert self.make is not None
        module, function = self.make.split(":")
        maker: Callable[[Path], Path] = getattr(importlib.import_module(f"tests.corpus.{module}"), function)
        return maker(folder)


def load_cases() -> list[Case]:
    cases: list[Case] = []
    for table in sorted(CASES_DIR.glob("*.toml")):
        for raw in tomllib.loads(table.read_text(encoding="utf-8")).get("case", []):
            unknown = set(raw) - KEYS
            assert not unknown, f"{table.name}: case {raw.get('name')!r} has unknown keys {sorted(unknown)}"
            assert ("file" in raw) != ("make" in raw), f"{table.name}: {raw['name']!r} needs one of file, make"
            args, says = tuple(raw.get("args", ())), tuple(raw.get("says", ()))
            cases.append(Case(table.stem, raw["name"], raw.get("file"), raw.get("make"), args, int(raw["exit"]), says,
                              raw.get("invalid"), raw.get("why", "")))  # fmt: skip
    return cases


CASES = load_cases()
BY_ID = {c.id: c for c in CASES}


def _digest(path: Path) -> str:
    """The input's bytes, or what stands in their place (a folder's names, a link's target) when it has none."""
    if path.is_symlink() and not path.exists():
        return f"link to {os.readlink(path)}"
    if path.is_dir():
        return f"folder of {sorted(p.name for p in path.iterdir())}"
    if not path.is_file():  # a pipe: reading it would wait for a writer
        return stat.filemode(path.stat().st_mode)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check(case: Case, code: int, output: str, summary: dict[str, Any] | None) -> None:
    assert code == case.exit, output
    assert "Traceback" not in output and "internal error" not in output, output
    for text in case.says:
        assert text.casefold() in output.casefold(), f"{text!r} not in:\n{output}"
    if case.invalid is not None:
        assert summary is not None and summary["counts"] is not None, output
        assert summary["counts"]["invalid"] == case.invalid, output


def _summary(stdout: str) -> dict[str, Any] | None:
    try:
        value = json.loads(stdout)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def test_the_tables_are_well_formed() -> None:
    assert len({c.id for c in CASES}) == len(CASES), "case names must be unique within a table"
    for case in CASES:
        if case.file is not None:
            path = HERE / case.file
            assert path.is_file() and path.stat().st_size <= 200 * 1024, case.id


@pytest.mark.parametrize("table", ["finance", "hostile"])
def test_each_table_has_at_least_thirty_cases(table: str) -> None:
    assert len([c for c in CASES if c.table == table]) >= 30


@pytest.mark.parametrize("case_id", list(BY_ID))
def test_corpus_case(case_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    case = BY_ID[case_id]
    monkeypatch.chdir(tmp_path)  # no config file of the repository's is read
    path = case.build(tmp_path)
    before = _digest(path)
    with collector_paused():
        code = main(["validate", str(path), "-o", str(tmp_path / "out.xlsx"), "--json", *case.args])
        left_open = files_open_on(path)
    captured = capsys.readouterr()
    _check(case, code, captured.out + captured.err, _summary(captured.out))
    assert left_open == [], "the input file was left open (a reader that failed, not closed)"
    assert _digest(path) == before, "the input file was modified"
    if code == 2:  # refused before anything was written
        assert not (tmp_path / "out.xlsx").exists()


SUBPROCESS_CASES = [c.id for t in sorted({c.table for c in CASES}) for c in [c for c in CASES if c.table == t][
    :SUBPROCESS_PER_TABLE]]  # fmt: skip


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_corpus_case_as_a_command(case_id: str, tmp_path: Path) -> None:
    case = BY_ID[case_id]
    path = case.build(tmp_path)
    before = _digest(path)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent)}
    done = forked_cli.run(["validate", str(path), "-o", str(tmp_path / "out.xlsx"), "--json", *case.args],
                          cwd=tmp_path, env=env)  # fmt: skip
    _check(case, done.returncode, done.stdout + done.stderr, _summary(done.stdout))
    assert _digest(path) == before
