"""Workbooks the user keeps get the permissions any file they save gets, and appear whole or not at all."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from importer.cli.main import main
from importer.results import atomic
from importer.sandbox.server import DEFAULT_TOKEN
from tests.conftest import MakeSchedule, good_row

posix_modes = pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX")


@pytest.fixture(params=[0o022, 0o027], ids=["umask-022", "umask-027"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process's umask for the test (set in this worker only, put back after)."""
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp*"))


@posix_modes
def test_the_dry_run_results_and_the_template_are_as_readable_as_the_umask_allows(
    umask: int, make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    path = make_schedule([good_row(n) for n in range(3)])
    assert main(["validate", str(path), "-o", str(tmp_path / "checked.xlsx")]) == 0
    assert main(["template", "-o", str(tmp_path / "blank.xlsx")]) == 0
    assert _mode(tmp_path / "checked.xlsx") == 0o666 & ~umask  # 0o644 / 0o640, not mkstemp's 0o600
    assert _mode(tmp_path / "blank.xlsx") == 0o666 & ~umask
    assert _leftovers(tmp_path) == []


@posix_modes
def test_an_uploads_results_written_while_sending_get_the_same_permissions(
    umask: int, sandbox: Any, make_schedule: MakeSchedule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    path = make_schedule([good_row(n) for n in range(3)])
    assert main(["upload", str(path), "-o", str(tmp_path / "uploaded.xlsx"), "--non-interactive"]) == 0
    assert _mode(tmp_path / "uploaded.xlsx") == 0o666 & ~umask
    assert _leftovers(tmp_path) == []


@posix_modes
def test_across_file_systems_the_file_is_copied_beside_the_target_then_renamed(
    umask: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch, shared = tmp_path / "scratch", tmp_path / "shared"
    scratch.mkdir()
    shared.mkdir()
    done = scratch / "results.xlsx"
    done.write_bytes(b"the workbook")
    done.chmod(0o600)  # the copy takes the umask's mode, not the scratch file's
    real_replace = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(src) == done:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)  # os.replace itself: importer.results.atomic calls it
    atomic.move_into_place(done, shared / "results.xlsx")
    assert (shared / "results.xlsx").read_bytes() == b"the workbook"
    assert _mode(shared / "results.xlsx") == 0o666 & ~umask
    assert _leftovers(shared) == []


def test_a_write_that_fails_leaves_the_target_as_it_was_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "results.xlsx"
    target.write_bytes(b"last month's")

    def write(temp: Path) -> None:
        temp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.write_then_rename(target, write)
    assert target.read_bytes() == b"last month's"
    assert _leftovers(tmp_path) == []


def test_temporary_names_never_reuse_an_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "results.xlsx"
    taken = tmp_path / ".results.00000000.tmp.xlsx"
    taken.write_bytes(b"someone else's")
    names = iter(["00000000", "00000000", "11111111"])
    monkeypatch.setattr(secrets, "token_hex", lambda _n: next(names))
    assert atomic.temp_beside(target) == tmp_path / ".results.11111111.tmp.xlsx"
    assert taken.read_bytes() == b"someone else's"


@posix_modes
def test_a_workbook_written_over_keeps_the_mode_the_user_gave_it(
    umask: int, make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """Like an editor saving over a file: results made private (or shared with a group) stay so on a re-run."""
    path = make_schedule([good_row(n) for n in range(3)])
    out = tmp_path / "checked.xlsx"
    assert main(["validate", str(path), "-o", str(out)]) == 0
    out.chmod(0o600)
    assert main(["validate", str(path), "-o", str(out)]) == 0
    assert _mode(out) == 0o600
    done = tmp_path / "done.xlsx"
    done.write_bytes(b"new")
    out.chmod(0o660)
    atomic.move_into_place(done, out)
    assert (out.read_bytes(), _mode(out)) == (b"new", 0o660)


def test_only_another_file_system_makes_a_move_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename refused for another reason (no permission, the target open in Excel on Windows) would be refused
    again after a copy of the whole workbook: it is raised at once, and nothing is left beside the target."""
    done = tmp_path / "done.xlsx"
    done.write_bytes(b"new")

    tried: list[Path] = []

    def refused(src: Any, dst: Any, **kwargs: Any) -> None:
        tried.append(Path(src))
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(PermissionError):
        atomic.move_into_place(done, tmp_path / "results.xlsx")
    assert tried == [done]  # no second rename, of a copy
    assert _leftovers(tmp_path) == [] and not (tmp_path / "results.xlsx").exists()
