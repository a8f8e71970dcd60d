"""Workbooks the user keeps get the permissions any file they save gets, and appear whole or not at all."""

from __future__ import annotations

import errno
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from importer.cli.main import main
from importer.results import atomic
from importer.sandbox.server import DEFAULT_TOKEN
from tests.conftest import MakeSchedule, good_row

ROOT = Path(__file__).resolve().parents[2]
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
    taken = tmp_path / f".results.00000000-p{os.getpid()}.tmp.xlsx"
    taken.write_bytes(b"someone else's")
    names = iter(["00000000", "00000000", "11111111"])
    monkeypatch.setattr(secrets, "token_hex", lambda _n: next(names))
    assert atomic.temp_beside(target) == tmp_path / f".results.11111111-p{os.getpid()}.tmp.xlsx"
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


def _gone_pid() -> int:
    """The process id of a process that has ended (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _aged(path: Path, seconds: float) -> Path:
    path.touch()
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


@pytest.mark.skipif(os.name != "posix", reason="whether a writer is running is asked only on POSIX")
def test_a_killed_writers_leftover_is_removed_by_the_next_write_and_a_running_writers_is_not(
    make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    schedule = make_schedule([good_row(1)])
    gone, running = _gone_pid(), os.getppid()
    killed = _aged(tmp_path / f".schedule.results.0a1b2c3d-p{gone}.tmp.xlsx", 120)
    older_version = _aged(tmp_path / ".schedule.results.0a1b2c3e.tmp.xlsx", 7200)
    kept = [
        _aged(tmp_path / f".schedule.results.0a1b2c3f-p{running}.tmp.xlsx", 7200),  # a writer still at it
        _aged(tmp_path / f".schedule.results.0a1b2c40-p{gone}.tmp.xlsx", 5),  # a writer may have just made it
        _aged(tmp_path / ".schedule.results.0a1b2c41.tmp.xlsx", 600),  # an older version's, maybe still writing
        _aged(tmp_path / f".other.results.0a1b2c42-p{gone}.tmp.xlsx", 7200),  # another target's
        _aged(tmp_path / f".schedule.0a1b2c43-p{gone}.tmp.xlsx", 7200),  # the schedule's name, not the results'
        _aged(tmp_path / ".schedule.results.mine.tmp.xlsx", 7200),  # not a name we make
    ]
    assert main(["validate", str(schedule)]) == 0
    assert not killed.exists() and not older_version.exists()
    assert all(p.exists() for p in kept)
    assert [p for p in _leftovers(tmp_path) if p not in kept] == []


def test_where_no_process_can_be_asked_about_a_writers_file_goes_by_its_age_alone(
    make_schedule: MakeSchedule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows' os.kill(pid, 0) ends the process it names: there no writer is asked about, and its file is a
    leftover once untouched for as long as a file whose name names no writer."""

    def kills(pid: int, signal: int) -> None:
        raise AssertionError(f"os.kill({pid}, {signal}) was called")

    schedule = make_schedule([good_row(1)])
    monkeypatch.setattr(atomic, "CAN_ASK_WHETHER_RUNNING", False)
    monkeypatch.setattr(os, "kill", kills)
    running = os.getppid()
    old = _aged(tmp_path / f".schedule.results.0a1b2c3d-p{running}.tmp.xlsx", atomic.UNNAMED_LEFTOVER_AGE + 60)
    recent = _aged(tmp_path / f".schedule.results.0a1b2c3e-p{running}.tmp.xlsx", 600)  # 10 min: maybe writing
    assert main(["validate", str(schedule)]) == 0
    assert not old.exists() and recent.exists()


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and asking whether a writer runs are POSIX")
def test_a_writer_killed_with_sigkill_mid_write_leaves_a_file_the_next_run_removes(
    make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """A real process makes its temporary file beside the results and is killed with SIGKILL before it renames
    it: the zero-byte file it leaves carries its process id, and the next run that writes those results (a minute
    later) removes it."""
    schedule = make_schedule([good_row(1)])
    target = tmp_path / "schedule.results.xlsx"
    code = ("import sys, time; from pathlib import Path; from importer.results.atomic import temp_beside; "
            f"print(temp_beside(Path({str(target)!r})), flush=True); time.sleep(60)")  # fmt: skip
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert writer.stdout is not None
    left = Path(writer.stdout.readline().strip())
    assert main(["validate", str(schedule)]) == 0  # the writer is running: its file is not touched
    assert left.exists()
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    writer.stdout.close()
    assert left.exists() and left.stat().st_size == 0 and f"-p{writer.pid}.tmp" in left.name
    assert main(["validate", str(schedule)]) == 0  # gone, but untouched for less than a minute: kept
    assert left.exists()
    _aged(left, 61)
    assert main(["validate", str(schedule)]) == 0
    assert not left.exists() and _leftovers(tmp_path) == []
