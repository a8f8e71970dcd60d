"""The performance table of issue 5, measured on this machine in one run.

    .venv/bin/python -m benchmarks.bench            # full: 10k, 100k (xlsx, csv), 1M (csv); about 15 minutes
    .venv/bin/python -m benchmarks.bench --quick    # 10k and 100k only, fewer repeats

Every figure is the median of several fresh processes (wall time, and peak memory from the kernel's rusage of
that process alone). The variants of one measurement are run interleaved (floor, ours, naive, floor, ours, ...)
so that a noisy neighbour slows them alike: compare the ratios, not the seconds (../shared/PERF-NOTES.md).

1. I/O floor   benchmarks/floor.py: python-calamine (xlsx) or the csv module, then xlsxwriter constant-memory
               writing the same cells plus three outcome columns. No checks: the least any tool must spend.
2. dry run     `kantata-import validate FILE`, results workbook included.
3. naive peer  benchmarks/naive_peer.py: pandas.read_excel (openpyxl) + a per-row loop + DataFrame.to_excel.
4. upload      `kantata-import upload` of 100k rows to the sandbox (its own process) with 100 ms latency per
               request, against requests x latency / concurrency; and with no latency, to show the sandbox is
               not the bottleneck.
5. growth      time per row of the dry run at 10k, 100k and 1M rows (csv for 1M: .xlsx stops at 1,048,576).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.generate import ensure
from importer.concurrency import DEFAULT_CONCURRENCY

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLI = [PY, "-m", "importer"]
TOKEN = "sandbox-token"


@dataclass
class Run:
    seconds: float
    peak_mb: float


def measure(cmd: Sequence[str], env: dict[str, str] | None = None) -> Run:
    """One fresh process: wall time and its own peak resident memory (wait4's rusage, not the children's max)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed with {proc.returncode}:\n{err}")
    return Run(seconds, usage.ru_maxrss / 1024)


def interleaved(commands: dict[str, list[str]], repeat: int) -> dict[str, Run]:
    """Median wall time and median peak memory of each command, run round-robin `repeat` times."""
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, cmd in commands.items():
            runs[name].append(measure(cmd))
    return {name: Run(statistics.median(r.seconds for r in rs), statistics.median(r.peak_mb for r in rs))
            for name, rs in runs.items()}  # fmt: skip


def line(label: str, run: Run, rows: int, extra: str = "") -> str:
    return f"| {label} | {rows:,} | {run.seconds:.2f} | {run.seconds / rows * 1e6:.1f} | {run.peak_mb:.0f} | {extra} |"


PerRow = dict[tuple[int, str], float]


def dry_runs(folder: Path, sizes: list[tuple[int, str]], repeat: int, naive_up_to: int) -> tuple[list[str], PerRow]:
    out = ["| measurement | rows | seconds | µs/row | peak MB | ratio |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    per_row: PerRow = {}
    for n, kind in sizes:
        path = ensure(folder, n, kind)
        commands = {
            "floor": [PY, "-m", "benchmarks.floor", str(path), str(folder / f"floor_{n}_{kind}.xlsx")],
            "ours": [*CLI, "validate", str(path), "-q", "-o", str(folder / f"ours_{n}_{kind}.xlsx")],
        }
        if n <= naive_up_to:
            commands["naive"] = [PY, "-m", "benchmarks.naive_peer", str(path), str(folder / f"naive_{n}.xlsx")]
        result = interleaved(commands, repeat if n < 1_000_000 else max(1, repeat // 2))
        floor, ours = result["floor"], result["ours"]
        per_row[(n, kind)] = ours.seconds / n
        out.append(line(f"I/O floor, {kind}", floor, n))
        out.append(line(f"dry run (validate), {kind}", ours, n, f"ours ÷ floor = {ours.seconds / floor.seconds:.2f}"))
        if "naive" in result:
            naive = result["naive"]
            out.append(line(f"naive peer, {kind}", naive, n, f"naive ÷ ours = {naive.seconds / ours.seconds:.2f}"))
        print("\n".join(out[-len(result) :]), flush=True)
    return out, per_row


def upload(folder: Path, n: int, latency: float) -> tuple[Run, dict[str, int]]:
    """One upload of n fresh rows at the default concurrency, in a fresh process, to a sandbox in this one (which
    only waits meanwhile); returns the run and what the sandbox counted."""
    from importer.sandbox import DEFAULT_TOKEN, Sandbox

    path = ensure(folder, n, "csv")
    out = folder / f"upload_{n}_{latency}.xlsx"
    out.unlink(missing_ok=True)
    with Sandbox() as sandbox:
        sandbox.set_faults(latency=latency)
        env = {**os.environ, "KANTATA_API_TOKEN": DEFAULT_TOKEN, "KANTATA_BASE_URL": sandbox.url}
        run = measure([*CLI, "upload", str(path), "-q", "-o", str(out)], env)
        stats = sandbox.stats()
        created = len(sandbox.milestones())
        if created != n:
            raise SystemExit(f"the upload created {created} milestones of {n}")
        made = {"POST": stats.get("POST /billing_milestones", 0), "GET": stats.get("GET /billing_milestones", 0),
                "concurrency": sandbox.most_in_flight}  # fmt: skip
    return run, made


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k and 100k only, 3 repeats, upload of 20k rows")
    parser.add_argument("--repeat", type=int, help="fresh processes per figure (default 5, --quick 3)")
    parser.add_argument("--folder", type=Path, help="where schedules are generated (default: a temp folder)")
    parser.add_argument("--skip-upload", action="store_true")
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 5)
    folder = args.folder or Path(tempfile.gettempdir()) / "kantata-import-bench"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load average at start {os.getloadavg()[0]:.2f}; {repeat} runs per figure, medians")  # fmt: skip
    sizes = [(10_000, "xlsx"), (100_000, "xlsx"), (10_000, "csv"), (100_000, "csv")]
    if not args.quick:
        sizes.append((1_000_000, "csv"))
    table, per_row = dry_runs(folder, sizes, repeat, naive_up_to=100_000)
    growth = []
    if (1_000_000, "csv") in per_row:
        g = per_row[(1_000_000, "csv")] / per_row[(100_000, "csv")]
        growth.append(f"growth: µs/row at 1M ÷ at 100k (csv) = {g:.2f} (target ≤ 1.3)")
    g = per_row[(100_000, "xlsx")] / per_row[(10_000, "xlsx")]
    growth.append(f"growth: µs/row at 100k ÷ at 10k (xlsx) = {g:.2f}")
    print("\n".join(growth), flush=True)
    if not args.skip_upload:
        n = 20_000 if args.quick else 100_000
        rows = [
            "",
            "| upload | rows | seconds | requests | floor (s) | ours ÷ floor |",
            "| --- | ---: | ---: | --- | ---: | ---: |",
        ]
        for latency in (0.1, 0.0):
            run, made = upload(folder, n, latency)
            concurrency = DEFAULT_CONCURRENCY
            floor = made["POST"] * latency / concurrency
            everything = (made["POST"] + made["GET"]) * latency / concurrency
            ratio = f"{run.seconds / floor:.2f} ({run.seconds / everything:.2f} counting look-ups)" if floor else "-"
            rows.append(f"| latency {latency * 1000:.0f} ms, concurrency {concurrency} (seen {made['concurrency']}) | "
                        f"{n:,} | {run.seconds:.1f} | {made['POST']} POST + {made['GET']} GET | {floor:.1f} | "
                        f"{ratio} |")  # fmt: skip
            print(rows[-1], flush=True)
        table += rows
    print("\n" + "\n".join(table + [""] + growth))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
