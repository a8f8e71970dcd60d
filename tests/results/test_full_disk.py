"""A full disk, for real: the results workbook, the upload's journal beside it, or the state folder's ledger on a
disk with no room left. Each answer is an exit code the README gives for it and one sentence, no traceback.

The disk is a real tmpfs of a few KiB, mounted in a mount namespace of the command's own (`unshare`, which an
unprivileged user may run where user namespaces are allowed), so nothing outside the command sees it. An upload
in it reaches the tests' sandbox on loopback (the namespace has its own mounts, not its own network)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from importer.sandbox.server import DEFAULT_TOKEN

ROOT = Path(__file__).resolve().parents[2]
ON_A_FULL_DISK = (
    'disk="$1"; shift; mount -t tmpfs -o size=64k tmpfs "$disk" || exit 99; "$@"; rc=$?; ls -A "$disk"; exit $rc'
)
# `full_disk` below: the disk mounted, filled up first (FILL=1) or not, the command run, then the disk given room
# and the command run again (AGAIN=1); each run's exit code said on a line of its own.
FULL_THEN_ROOM = """disk="$1"; shift
mount -t tmpfs -o size=64k tmpfs "$disk" || exit 99
[ "$FILL" = 1 ] && head -c 65536 /dev/zero > "$disk/filler" 2>/dev/null
"$@"; echo "exit $?"
[ "$AGAIN" = 1 ] || exit 0
rm -f "$disk/filler"; mount -o remount,size=16m "$disk" || exit 99
"$@"; echo "exit $?"
"""
ROWS = 3000  # their journal is larger than the disk: it fills up during the sending


def _schedule(folder: Path) -> Path:
    schedule = folder / "big.csv"
    schedule.write_text("title,amount_in_cents,workspace_id\n" + "".join(f"Milestone number {i},{100 + i},1001\n"
                                                                          for i in range(ROWS)))  # fmt: skip
    return schedule


def full_disk(disk: Path, argv: list[str], *, fill: bool = False, again: bool = False,
              env: dict[str, str] | None = None) -> tuple[list[tuple[int, str]], str]:  # fmt: skip
    """The exit code and standard output of `argv` run as the command (and run again once the disk has room,
    with `again`), and what the runs said on stderr."""
    disk.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FILL": str(int(fill)), "AGAIN": str(int(again)), **(env or {})}
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", FULL_THEN_ROOM, "sh",
                           str(disk), sys.executable, "-m", "importer", *argv], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs: list[tuple[int, str]] = []
    out: list[str] = []
    for line in done.stdout.splitlines():
        if line.startswith("exit "):
            runs.append((int(line.split()[1]), "\n".join(out)))
            out = []
        else:
            out.append(line)
    return runs, done.stderr


def test_a_full_disk_under_the_results_is_exit_5_without_a_zipfile_traceback(tmp_path: Path) -> None:
    schedule = _schedule(tmp_path)
    disk = tmp_path / "disk"
    disk.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", ON_A_FULL_DISK, "sh",
                           str(disk), sys.executable, "-m", "importer", "validate", str(schedule), "-o",
                           str(disk / "r.xlsx")], capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert done.returncode == 5, done.stderr
    assert "could not be written (No space left on device); nothing was sent" in done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert done.stdout.strip() == "", "a temporary file was left on the disk: " + done.stdout


def _upload(schedule: Path, output: Path, sandbox: Any) -> list[str]:
    return ["upload", str(schedule), "-o", str(output), "--base-url", sandbox.url, "--non-interactive"]


def _token(state: Path) -> dict[str, str]:
    return {"KANTATA_API_TOKEN": DEFAULT_TOKEN, "KANTATA_IMPORT_STATE": str(state)}


def _each_once(sandbox: Any) -> None:
    titles = Counter(str(m["title"]) for m in sandbox.milestones())
    assert len(titles) == ROWS and set(titles.values()) == {1}


def test_a_disk_that_fills_up_under_the_results_during_an_upload_is_exit_5_and_a_rerun_creates_nothing_twice(
    tmp_path: Path, sandbox: Any
) -> None:
    """The journal beside the results workbook stops the sending when its disk fills up; the workbook cannot be
    written either: exit 5 (README), saying what was created. With room again, the same command ends it."""
    disk = tmp_path / "disk"
    runs, said = full_disk(disk, _upload(_schedule(tmp_path), disk / "r.xlsx", sandbox), again=True,
                           env=_token(tmp_path / "state"))  # fmt: skip
    assert [code for code, _ in runs] == [5, 0], said
    assert "the results workbook" in said and "could not be written (No space left on device)" in said, said
    assert "rows were created in Kantata before the journal beside it could not be written either" in said, said
    assert "Traceback" not in said and "Exception ignored" not in said, said
    _each_once(sandbox)


def test_a_disk_full_under_the_results_before_the_upload_is_exit_4_and_nothing_is_sent(
    tmp_path: Path, sandbox: Any
) -> None:
    """The journal's first line cannot be written: nothing is sent, exit 4 (README). With room again, the same
    command sends every row once."""
    disk = tmp_path / "disk"
    runs, said = full_disk(disk, _upload(_schedule(tmp_path), disk / "r.xlsx", sandbox), fill=True, again=True,
                           env=_token(tmp_path / "state"))  # fmt: skip
    assert [code for code, _ in runs] == [4, 0], said
    assert "journal" in said and "could not be written (No space left on device): nothing was sent" in said, said
    assert "Traceback" not in said, said
    _each_once(sandbox)


def test_a_full_disk_under_the_state_folder_is_exit_4_with_the_workbook_written(tmp_path: Path, sandbox: Any) -> None:
    """The ledger of requests in flight fills up: the sending stops, the results workbook (on another disk) is
    written with the rest not_sent, exit 4 (README). With room again, the same command sends the rest."""
    disk = tmp_path / "disk"
    out = tmp_path / "r.xlsx"
    runs, said = full_disk(disk, _upload(_schedule(tmp_path), out, sandbox), again=True,
                           env=_token(disk / "state"))  # fmt: skip
    assert [code for code, _ in runs] == [4, 0], said
    assert "the ledger of requests in flight" in said and "No space left on device" in said, said
    assert "Traceback" not in said, said
    first = runs[0][1]
    assert f"results: {out}" in first and " not_sent" in first, first  # the workbook written, the rest not sent
    _each_once(sandbox)
