"""Importing and running the library changes nothing process-wide, and no library module reads the environment.

A web page, a notebook or a scheduler that imports `importer` keeps its own collector, switch interval, modules and
xlsxwriter; only the command (importer/cli/) tunes its own process, around its one library call, and puts it back.
"""

from __future__ import annotations

import ast
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import importer.pipeline
from importer.cli.main import main
from tests.conftest import MakeSchedule, good_row

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "importer"

# Runs in a fresh interpreter: what the process looks like before importing the package, all the while it runs
# (a thread samples it every half millisecond, and each progress callback looks too), and after.
SCRIPT = r"""
import gc, importlib, json, pkgutil, sys, threading, time
from pathlib import Path
import xlsxwriter.workbook

def state():
    return {"gc": gc.isenabled(), "frozen": gc.get_freeze_count(), "switch": sys.getswitchinterval(),
            "none_modules": sorted(k for k, v in sys.modules.items() if v is None),
            "zipfile": repr(xlsxwriter.workbook.ZipFile)}

before = state()
import importer
for module in pkgutil.walk_packages(importer.__path__, "importer."):
    if module.name != "importer.__main__":
        importlib.import_module(module.name)
from importer.pipeline import run_upload, run_validate
from importer.settings import Secret, Settings

imported = state()
seen = []
stop = threading.Event()

def sample():
    while not stop.is_set():
        now = state()
        if now != before:
            seen.append(now)
        time.sleep(0.0005)

def look(*_args):
    now = state()
    if now != before:
        seen.append(now)

url, token, xlsx, csv, folder = sys.argv[1:]
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
checked = run_validate(xlsx, output=Path(folder) / "dry.xlsx", on_progress=look)
settings = Settings(base_url=url, token=Secret(token), state_dir=Path(folder) / "state")
sent = run_upload(csv, settings, output=Path(folder) / "sent.xlsx", on_progress=look, on_stage=look,
                  on_outcomes=look)
stop.set()
sampler.join()
print(json.dumps({"before": before, "imported": imported, "after": state(), "seen": seen[:3],
                  "valid": checked.counts["valid"], "created": sent.counts["created"]}))
"""


def test_importing_and_running_the_library_changes_nothing_process_wide(
    sandbox: Any, make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    from importer.sandbox import DEFAULT_TOKEN

    rows = [good_row(n) for n in range(2500)]  # deferred building (over LOOKUP_CHUNK rows) and streamed results
    xlsx, csv = make_schedule(rows), make_schedule(rows, fmt="csv")
    done = subprocess.run([sys.executable, "-c", SCRIPT, sandbox.url, DEFAULT_TOKEN, str(xlsx), str(csv),
                           str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] == 2500 and report["created"] == 2500
    assert report["before"]["gc"] is True and report["before"]["frozen"] == 0
    assert report["imported"] == report["before"]
    assert report["seen"] == []
    assert report["after"] == report["before"]


READERS = {"environ", "environb", "getenv", "getenvb"}


def _environment_reads(path: Path) -> list[tuple[str, int]]:
    """Where a module reads os.environ or os.getenv (or imports them from os): (enclosing def, line)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = f"{where}.{child.name}" if where else child.name
            if isinstance(child, ast.Attribute) and child.attr in READERS:
                found.append((where, child.lineno))
            if isinstance(child, ast.ImportFrom) and child.module == "os" and {a.name for a in child.names} & READERS:
                found.append((where, child.lineno))
            visit(child, inner)

    visit(tree, "")
    return found


EDGE = {("settings.py", "Settings.from_env")}  # the edge constructor; importer/cli/ is the edge too


def test_no_library_module_reads_the_environment() -> None:
    reads = {
        (str(path.relative_to(PACKAGE)), where, line)
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] != "cli"
        for where, line in _environment_reads(path)
    }
    assert {(p, w) for p, w, _ in reads} == EDGE, sorted(reads)


def test_the_scan_finds_a_read(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom os import getenv\n\ndef f():\n    return os.environ.get('X')\n")
    assert _environment_reads(sample) == [("", 2), ("f", 5)]


def test_the_command_tunes_its_process_only_around_its_library_call(
    make_schedule: MakeSchedule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_schedule([good_row(n) for n in range(20)])
    during: list[bool] = []
    real = importer.pipeline.run_validate

    def watched(*args: Any, **kwargs: Any) -> Any:
        during.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(importer.pipeline, "run_validate", watched)
    gc.enable()
    interval = sys.getswitchinterval()
    assert main(["validate", str(path), "-q", "-o", str(tmp_path / "out.xlsx")]) == 0
    assert during == [False]  # paused for the run
    assert gc.isenabled() and gc.get_freeze_count() == 0 and sys.getswitchinterval() == interval
