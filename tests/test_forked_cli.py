"""The forked command (tests/forked_cli.py) behaves as `python -m importer` started afresh: same output, same exit
code, same end on a signal. Most CLI tests run it forked; this is what lets them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import forked_cli
from tests.conftest import MakeSchedule, good_row

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["upload", "--no-such-option"],
        ["validate", "{tmp}/absent.xlsx"],
        ["validate", "{schedule}", "--json", "-o", "{tmp}/out.xlsx"],
        ["validate", "{schedule}", "--online", "--non-interactive"],
    ],
)
def test_forked_and_started_afresh_say_the_same(args: list[str], make_schedule: MakeSchedule, tmp_path: Path) -> None:
    schedule = make_schedule([good_row(1), good_row(2), [*good_row(3)[:1], "", *good_row(3)[2:]]])
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANTATA_")} | {"HOME": str(tmp_path)}
    argv = [a.format(tmp=tmp_path, schedule=schedule) for a in args]
    before = set(tmp_path.iterdir())

    forked = forked_cli.run(argv, env=env, cwd=tmp_path)
    for written in set(tmp_path.iterdir()) - before:  # so that the second run finds the folder as the first did
        shutil.rmtree(written) if written.is_dir() else written.unlink()
    fresh = subprocess.run([sys.executable, "-m", "importer", *argv], env=env | {"PYTHONPATH": str(ROOT)},
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip

    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.stdout + forked.stderr  # each case says something


def test_a_forked_run_has_its_own_pid_directory_and_input(tmp_path: Path) -> None:
    done = forked_cli.run(["--version"], env={"PATH": os.environ["PATH"]}, cwd=tmp_path, input="ignored\n")
    assert done.returncode == 0 and done.stdout.strip()
    child = forked_cli.popen(["validate", "absent.csv"], env={"PATH": os.environ["PATH"]}, cwd=tmp_path)
    assert child.pid not in (os.getpid(), os.getppid())
    out, err = child.communicate(timeout=120)
    assert child.returncode == 2 and "absent.csv" in err


def test_a_killed_forked_run_ends_by_the_signal(tmp_path: Path) -> None:
    """As Popen reports it: the negative signal number."""
    reader, writer = os.pipe()
    child = forked_cli.popen(["upload", "-"], env={"PATH": os.environ["PATH"]}, cwd=tmp_path, stdin=reader)
    os.close(reader)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=120)
    os.close(writer)
    assert child.returncode == -signal.SIGKILL


def test_output_that_cannot_be_written_at_exit_ends_as_cpython_ends_it(tmp_path: Path) -> None:
    """A full disk under stdout: the flush at exit fails, and CPython exits 120 saying so on stderr."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    ends = []
    for start in ("forked", "fresh"):
        with open("/dev/full", "w") as full, open(tmp_path / start, "w+") as err:
            if start == "forked":
                code = forked_cli.popen(["--help"], env=env, stdout=full.fileno(), stderr=err.fileno()).wait(120)
            else:
                code = subprocess.run([sys.executable, "-m", "importer", "--help"], env=env, stdout=full, stderr=err,
                                      timeout=120).returncode  # fmt: skip
            err.seek(0)
            ends.append((code, "Exception ignored" in err.read()))
    assert ends == [(120, True), (120, True)]


def test_a_folder_that_is_not_there_is_the_callers_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        forked_cli.run(["--version"], env={"PATH": os.environ["PATH"]}, cwd=tmp_path / "absent")
