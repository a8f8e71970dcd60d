"""A results workbook written to a full disk: exit 5 and one sentence, no traceback of a half-written zip.

The disk is a real 64 KiB tmpfs, mounted in a mount namespace of the command's own (`unshare`, which an
unprivileged user may run where user namespaces are allowed), so nothing outside the command sees it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ON_A_FULL_DISK = (
    'disk="$1"; shift; mount -t tmpfs -o size=64k tmpfs "$disk" || exit 99; "$@"; rc=$?; ls -A "$disk"; exit $rc'
)


def test_a_full_disk_under_the_results_is_exit_5_without_a_zipfile_traceback(tmp_path: Path) -> None:
    schedule = tmp_path / "big.csv"
    schedule.write_text("title,amount_in_cents,workspace_id\n" + "".join(f"Milestone number {i},{100 + i},1001\n"
                                                                          for i in range(3000)))  # fmt: skip
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
