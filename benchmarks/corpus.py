"""The corpus of messy and hostile files (tests/corpus/cases/*.toml), each case in a fresh process: the slowest
case's wall time and the largest peak resident memory, against the goals of 5 s and 300 MB per file.

    .venv/bin/python -m benchmarks.corpus            # every case, one process each
    .venv/bin/python -m benchmarks.corpus --table finance

Each figure is of one `kantata-import validate FILE` process alone (os.wait4), imports included, so it is what a
user waits for. Exits 1 when a case misses a goal or its expected exit code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 5.0
GOAL_MB = 300.0


@dataclass(frozen=True, slots=True)
class Measured:
    case: str
    seconds: float
    peak_mb: float
    exit_code: int
    expected: int


def measure(case_id: str, path: Path, args: tuple[str, ...], expected: int, folder: Path) -> Measured:
    """One case in its own process: wall time and that process's own peak memory (ru_maxrss, in KiB on Linux)."""
    command = [sys.executable, "-m", "importer", "validate", str(path), "-o", str(folder / "out.xlsx"), "-q", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    return Measured(case_id, seconds, usage.ru_maxrss / 1024, child.returncode, expected)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", help="only the cases of this table (its file name without .toml)")
    options = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.corpus.test_corpus import CASES

    results: list[Measured] = []
    for case in CASES:
        if options.table and case.table != options.table:
            continue
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            results.append(measure(case.id, case.build(folder), case.args, case.exit, folder))
    if not results:
        print("no cases", file=sys.stderr)
        return 1
    slowest = max(results, key=lambda m: m.seconds)
    largest = max(results, key=lambda m: m.peak_mb)
    wrong = [m for m in results if m.exit_code != m.expected]
    print(f"corpus: {len(results)} cases, each in its own process")
    print(f"slowest case: {slowest.seconds:.2f} s ({slowest.case}); goal {GOAL_SECONDS:.0f} s")
    print(f"largest peak memory: {largest.peak_mb:.0f} MB ({largest.case}); goal {GOAL_MB:.0f} MB")
    for m in wrong:
        print(f"unexpected exit {m.exit_code} (expected {m.expected}): {m.case}")
    missed = slowest.seconds > GOAL_SECONDS or largest.peak_mb > GOAL_MB
    return 1 if missed or wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
