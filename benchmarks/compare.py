"""This tree against an earlier revision of it, in one run: the same workloads, each in a fresh process,
interleaved (new, old, new, old, ...) so that a noisy neighbour slows both alike.

    .venv/bin/python -m benchmarks.compare --against f530026            # 20k rows, 5 runs each; about 5 minutes
    .venv/bin/python -m benchmarks.compare --against f530026 --rows 5000 --repeat 3

The revision is checked out into a temporary git worktree (`git worktree add --detach`), removed at the end.
Each process runs `python -m importer` with PYTHONPATH and the working folder set to its tree, so it imports that
tree's package, not the installed one; both use this interpreter and its libraries. The workloads:

- validate   `validate SCHEDULE.xlsx -q` of a generated workbook (benchmarks/generate.py), results included;
- upload     `upload SCHEDULE.xlsx -q` of the same rows to a fresh sandbox (this tree's, in this process, the
             same server for both) that waits `--latency` before each answer, with a fresh state folder.

Printed: the median wall time and the median peak resident memory of each (os.wait4's rusage of that process
alone), the ratio new ÷ old, and the range of the time ratio over the rounds. A median ratio near 1, inside
that range, means the change between the two revisions costs nothing measurable.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.generate import ensure

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mb: float


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """`revision` checked out, detached, in a temporary folder that is removed (with its worktree entry) after."""
    parent = Path(tempfile.mkdtemp(prefix="kantata-import-compare-"))
    tree = parent / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), revision], check=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(parent, ignore_errors=True)


def measure(tree: Path, args: Sequence[str], env: dict[str, str]) -> Run:
    """`python -m importer ARGS` run from `tree`, with only that tree on PYTHONPATH; exit 0 or 1 is a finished
    run, anything else stops the comparison with what the process wrote."""
    started = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "importer", *args], cwd=tree, env={**env, "PYTHONPATH": str(tree)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    with proc.stderr:
        errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{tree}: importer {' '.join(args)} exited {code}:\n{errors}")
    return Run(seconds, usage.ru_maxrss / 1024)


def check_imports(tree: Path) -> None:
    """A process started as `measure` starts them imports `importer` from `tree`: were it the installed package,
    both columns would time the same code."""
    found = subprocess.run([PY, "-c", "import importer; print(importer.__file__)"], cwd=tree, check=True,
                           env={**_env(tree), "PYTHONPATH": str(tree)}, capture_output=True, text=True)  # fmt: skip
    if not Path(found.stdout.strip()).is_relative_to(tree):
        raise SystemExit(f"a process meant to run {tree} imports {found.stdout.strip()}")


def validate(tree: Path, schedule: Path, folder: Path) -> Run:
    return measure(tree, ["validate", str(schedule), "-q", "-o", str(folder / "validate.results.xlsx")], _env(folder))


def upload(tree: Path, schedule: Path, folder: Path, rows: int, latency: float) -> Run:
    """An upload of every row to an empty sandbox; it must have created each of them, once."""
    from importer.sandbox.server import DEFAULT_TOKEN, Sandbox

    state = Path(tempfile.mkdtemp(dir=folder, prefix="state-"))
    out = state / "upload.results.xlsx"
    with Sandbox() as sandbox:
        sandbox.set_faults(latency=latency)
        env = {**_env(folder), "KANTATA_API_TOKEN": DEFAULT_TOKEN, "KANTATA_BASE_URL": sandbox.url,
               "KANTATA_IMPORT_STATE": str(state)}  # fmt: skip
        run = measure(tree, ["upload", str(schedule), "-q", "-o", str(out)], env)
        created = len(sandbox.milestones())
    shutil.rmtree(state, ignore_errors=True)
    if created != rows:
        raise SystemExit(f"{tree}: the upload created {created} milestones of {rows}")
    return run


def _env(folder: Path) -> dict[str, str]:
    """This environment without the settings that would change what a run does (a token, another sandbox)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANTATA_")}
    return {**env, "XDG_STATE_HOME": str(folder / "xdg-state")}


def median(runs: list[Run]) -> Run:
    return Run(statistics.median(r.seconds for r in runs), statistics.median(r.peak_mb for r in runs))


def table(results: dict[str, dict[str, list[Run]]], rows: int, against: str) -> list[str]:
    """Medians, and the spread of the time ratio over the rounds: a round's two runs came one after the other,
    so their ratio is the least disturbed by the load of the moment, and its range shows what noise is."""
    out = [f"| workload ({rows:,} rows) | new s | old ({against}) s | new ÷ old | by round, min–max | new MB "
           "| old MB | new ÷ old |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for workload, by_tree in results.items():
        new, old = median(by_tree["new"]), median(by_tree["old"])
        rounds = [n.seconds / o.seconds for n, o in zip(by_tree["new"], by_tree["old"], strict=True)]
        out.append(f"| {workload} | {new.seconds:.2f} | {old.seconds:.2f} | {new.seconds / old.seconds:.2f} | "
                   f"{min(rounds):.2f}–{max(rounds):.2f} | {new.peak_mb:.0f} | {old.peak_mb:.0f} | "
                   f"{new.peak_mb / old.peak_mb:.2f} |")  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the git revision to compare this tree with")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the generated schedule (default 20000)")
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per workload and tree (default 5)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the sandbox waits per request")
    parser.add_argument("--folder", type=Path, help="where the schedule is generated and kept (default: temp)")
    args = parser.parse_args(argv)
    folder = args.folder or Path(tempfile.gettempdir()) / "kantata-import-bench"
    folder.mkdir(parents=True, exist_ok=True)
    schedule = ensure(folder, args.rows, "xlsx")
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; load "
          f"average at start {os.getloadavg()[0]:.2f}; {args.repeat} runs per figure, interleaved; medians; "
          f"sandbox latency {args.latency * 1000:.0f} ms", flush=True)  # fmt: skip
    results: dict[str, dict[str, list[Run]]] = {
        "validate (dry run, xlsx)": {"new": [], "old": []},
        "upload to the sandbox (xlsx)": {"new": [], "old": []},
    }
    with worktree(args.against) as old_tree:
        trees = {"new": ROOT, "old": old_tree}
        for tree in trees.values():
            check_imports(tree)
        for i in range(args.repeat):
            for name, tree in trees.items():
                results["validate (dry run, xlsx)"][name].append(validate(tree, schedule, folder))
            for name, tree in trees.items():
                results["upload to the sandbox (xlsx)"][name].append(
                    upload(tree, schedule, folder, args.rows, args.latency)
                )
            print(f"round {i + 1} of {args.repeat} done", flush=True)
    print("\n" + "\n".join(table(results, args.rows, args.against)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
