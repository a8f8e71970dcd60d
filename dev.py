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


def _run(cmd: list[str]) -> int:
    print("+ " + " ".join(cmd[1:] if cmd[0].endswith(("python", "python.exe")) else cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def demo(python: Path) -> int:
    return _run([str(python), "-m", "importer", "upload", "samples/billing_schedule.xlsx", "--sandbox"])


def test(python: Path, extra: list[str]) -> int:
    _ensure_chromium()
    for step in (
        [str(python), "-m", "ruff", "check", "."],
        [str(python), "-m", "ruff", "format", "--check", "."],
        [str(python), "-m", "mypy"],
        [str(python), "-m", "pytest", "-q", "-n", "auto", *extra],
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
