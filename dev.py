#!/usr/bin/env python3
"""Bootstrap and run the project's two everyday jobs with nothing but Python 3.11+.

    python3 dev.py demo   # upload the bundled sample schedule to the built-in sandbox
    python3 dev.py test   # ruff, mypy, pytest: exactly what CI runs
    python3 dev.py serve  # the web page against the built-in sandbox (kantata-import serve --sandbox)

Both create a virtual environment in .venv on first use and reuse it while pyproject.toml is unchanged.
A script, not a Makefile, because a fresh machine (or Windows) may have Python but no make.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".installed-from"


def _venv_python() -> Path:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return VENV / sub


def _ensure_venv() -> Path:
    """Create .venv and install the project with its test extras; skip when already current."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may well be run by an older python3
        sys.exit(f"kantata-import needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    python = _venv_python()
    if python.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return python
    if not python.exists():
        print("creating .venv ...", file=sys.stderr, flush=True)
        venv.create(VENV, with_pip=True)
    print("installing kantata-import and its test tools into .venv ...", file=sys.stderr, flush=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[test,web]"], check=True)
    STAMP.write_text(wanted)
    return python


CHROMIUM = Path("/usr/bin/chromium")


def _ensure_chromium() -> None:
    """The browser tests drive the operating system's Chromium (Playwright's own download needs the internet).
    Installed with apt-get when missing; when it cannot be, the tests fail rather than skip."""
    if CHROMIUM.exists() or not shutil.which("apt-get"):
        return
    print("installing chromium for the browser tests (apt-get) ...", file=sys.stderr, flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=False, **quiet)  # type: ignore[call-overload]
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "chromium"], check=False, **quiet)  # type: ignore[call-overload]


def _run(cmd: list[str], env: dict[str, str] | None = None) -> int:
    shown = cmd[1:] if cmd[0].endswith(("python", "python.exe")) else cmd
    print("+ " + " ".join("..." if "\n" in word else word for word in shown), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


# Month two, as a finance user does it: in a copy of last month's results workbook, one amount, one date and one
# title retyped. Run by the venv's Python, which has openpyxl; the sheet's header row is found by its
# billing_milestone_id column, so the sample's title block above it does not matter.
_EDIT_THREE_ROWS = """
import datetime as dt, sys, openpyxl
wb = openpyxl.load_workbook(sys.argv[1])
ws = wb.worksheets[0]
at = next(r for r in ws.iter_rows() if any(c.value == "billing_milestone_id" for c in r))
col = {c.value: c.column for c in at}
first = at[0].row + 1
amount = ws.cell(first, col["Amount (cents)"])
amount.value = int(amount.value) + 50000
when = ws.cell(first + 1, col["Date to invoice"])
when.value = when.value + dt.timedelta(days=14)
title = ws.cell(first + 2, col["Title"])
title.value = title.value + " (revised)"
wb.save(sys.argv[2])
"""


def demo(python: Path) -> int:
    """Month one loads the sample schedule into a sandbox; month two feeds its results workbook back in with three
    rows edited: three milestones are updated in place and nothing is created twice. One sandbox serves both runs
    (`--sandbox` would give each run its own), with a state folder of its own so the demo leaves no trace."""
    import re
    import shutil
    import tempfile

    month1 = Path("samples", "billing_schedule.results.xlsx")  # relative to ROOT, where every command runs
    month2 = Path("samples", "billing_schedule.month2.results.xlsx")
    with tempfile.TemporaryDirectory(prefix="kantata-import-demo-") as tmp:
        sandbox = subprocess.Popen([str(python), "-m", "importer", "sandbox", "--port", "0"], cwd=ROOT,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert sandbox.stderr is not None
            started = re.search(r"at (\S+), token '([^']+)'", sandbox.stderr.readline())
            if started is None:
                print("the sandbox did not start", file=sys.stderr)
                return 1
            env = {**os.environ, "KANTATA_BASE_URL": started[1], "KANTATA_API_TOKEN": started[2],
                   "KANTATA_IMPORT_STATE": str(Path(tmp) / "state")}  # fmt: skip
            upload = [str(python), "-m", "importer", "upload", "--non-interactive"]
            print("month one: the sample schedule, loaded for the first time", flush=True)
            code = _run([*upload, "samples/billing_schedule.xlsx", "-o", str(month1)], env)
            if code != 0:
                return code
            print(f"\nmonth two: {month1.name} fed back in, with 3 rows edited (amount, date, title)", flush=True)
            schedule = Path(tmp) / "billing_schedule.month2.xlsx"
            shutil.copyfile(ROOT / month1, schedule)  # edited as a copy: the sample and its results stay as they are
            code = _run([str(python), "-c", _EDIT_THREE_ROWS, str(schedule), str(schedule)], env)
            if code != 0:
                return code
            return _run([*upload, str(schedule), "-o", str(month2)], env)
        finally:
            sandbox.terminate()  # the sandbox holds its data in memory: nothing to save
            sandbox.wait()
            if sandbox.stderr is not None:
                sandbox.stderr.close()


# Two test workers per core: many tests spend much of their time waiting on a subprocess, the sandbox's latency
# or the browser, and a second worker on the same core runs meanwhile.
WORKERS = str(2 * (os.cpu_count() or 1))


def test(python: Path, extra: list[str]) -> int:
    _ensure_chromium()
    for step in (
        [str(python), "-m", "ruff", "check", "."],
        [str(python), "-m", "ruff", "format", "--check", "."],
        [str(python), "-m", "mypy"],
        [str(python), "-m", "pytest", "-q", "-n", WORKERS, *extra],
        # The container image built and run where docker works; where not, the skip's reason is printed (-rs).
        *([[str(python), "-m", "pytest", "-q", "-rs", "-m", "container", "tests/test_docker.py"]] if not extra else []),
    ):
        code = _run(step)
        if code != 0:
            return code
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "serve", "venv"}:
        print(__doc__, file=sys.stderr)
        return 2
    python = _ensure_venv()
    if argv[0] == "demo":
        return demo(python)
    if argv[0] == "test":
        return test(python, argv[1:])
    if argv[0] == "serve":
        return _run([str(python), "-m", "importer", "serve", "--sandbox", *argv[1:]])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
