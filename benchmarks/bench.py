"""The performance table of benchmarks/README.md, measured on this machine in one run.

    .venv/bin/python -m benchmarks.bench            # full: 10k, 100k (xlsx, csv), 1M (csv), uploads of 100k
    .venv/bin/python -m benchmarks.bench --quick    # 10k and 100k only, fewer repeats, an upload of 20k

Every figure is the median of several fresh processes (wall time, and peak memory from the kernel's rusage of
that process alone). The variants of one measurement are run interleaved (floor, ours, naive, floor, ours, ...)
so that a noisy neighbour slows them alike: compare the ratios, not the seconds.

1. I/O floor   benchmarks/floor.py: python-calamine (xlsx) or the csv module, then xlsxwriter constant-memory
               writing the same cells plus three outcome columns, packed as the importer packs (zlib level 1).
               No checks: the least any tool must spend.
2. dry run     `kantata-import validate FILE`, results workbook included.
3. naive peer  benchmarks/naive_peer.py: pandas.read_excel (openpyxl) + a per-row loop + DataFrame.to_excel.
4. upload      `kantata-import upload` of 100k rows to the sandbox (in this process; the CLI in its own) with
               100 ms latency per request, against requests x latency / concurrency (the requests made, and
               the POSTs alone, the least a tool that never looks again would make): the latency added after
               the sandbox's own work (which shares the cores with the client), the same with the results
               workbook written after sending instead of during it, and the latency as the time from arrival
               to answer with the work done meanwhile (what the floor's formula assumes); and with no latency,
               to show what the sandbox and the client cost. With both latencies also the bare client
               (benchmarks/bare_client.py: bodies built before the clock, posted by 4 threads, nothing
               recorded): what the sandbox and the transport leave of the floor. Each 3 times round-robin
               (once with --quick), medians.
5. growth      time per row of the dry run at 10k, 100k and 1M rows (csv for 1M: .xlsx stops at 1,048,576).

benchmarks/compare.py runs a shorter set of workloads against an earlier revision, in the same run.
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
from importer.settings import DEFAULT_CONCURRENCY

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLI = [PY, "-m", "importer"]
TOKEN = "sandbox-token"


@dataclass
class Run:
    seconds: float
    peak_mb: float


def measure(cmd: Sequence[str], env: dict[str, str] | None = None, marks: list[tuple[float, str]] | None = None) -> Run:
    """One fresh process: wall time and its own peak resident memory (wait4's rusage, not the children's max).
    With `marks`, every stderr line is recorded with the time it arrived (seconds from the start)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = [] if marks is None else marks
    assert proc.stderr is not None
    with proc.stderr:
        for line in proc.stderr:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed with {proc.returncode}:\n" + "\n".join(t for _, t in lines))
    return Run(seconds, usage.ru_maxrss / 1024)


NO_PREFETCH = {"KANTATA_IMPORT_NO_PREFETCH": "1"}  # importer/prefetch.py off: the read waits for the imports
NO_STREAM = {"KANTATA_IMPORT_NO_STREAM": "1"}  # importer/streaming.py off: the workbook waits for the last answer


def interleaved(commands: dict[str, list[str]], repeat: int, envs: dict[str, dict[str, str]] | None = None
                ) -> dict[str, Run]:  # fmt: skip
    """Median wall time and median peak memory of each command, run round-robin `repeat` times; `envs` adds
    environment variables to some of them."""
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, cmd in commands.items():
            extra = (envs or {}).get(name)
            runs[name].append(measure(cmd, {**os.environ, **extra} if extra else None))
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
        if kind == "xlsx":
            commands["ours, no read-ahead"] = [*commands["ours"][:-1], str(folder / f"ours_{n}_{kind}_np.xlsx")]
        result = interleaved(commands, repeat if n < 1_000_000 else max(1, repeat // 2),
                             {"ours, no read-ahead": NO_PREFETCH})  # fmt: skip
        floor, ours = result["floor"], result["ours"]
        per_row[(n, kind)] = ours.seconds / n
        out.append(line(f"I/O floor, {kind}", floor, n))
        out.append(line(f"dry run (validate), {kind}", ours, n, f"ours ÷ floor = {ours.seconds / floor.seconds:.2f}"))
        if "ours, no read-ahead" in result:
            plain = result["ours, no read-ahead"]
            out.append(line(f"the same without reading ahead, {kind}", plain, n,
                            f"÷ floor = {plain.seconds / floor.seconds:.2f}"))  # fmt: skip
        if "naive" in result:
            naive = result["naive"]
            out.append(line(f"naive peer, {kind}", naive, n, f"naive ÷ ours = {naive.seconds / ours.seconds:.2f}"))
        print("\n".join(out[-len(result) :]), flush=True)
    return out, per_row


def upload(folder: Path, n: int, latency: float, extra_env: dict[str, str] | None = None, *,
           covers_work: bool = False, bare: bool = False) -> tuple[Run, dict[str, float]]:  # fmt: skip
    """One upload of n fresh rows at the default concurrency, in a fresh process, to a sandbox in this one (which
    only waits meanwhile); returns the run, what the sandbox counted and how long the sending stage took.
    `bare`: the bare client (benchmarks/bare_client.py) sends them instead of the importer."""
    from importer.sandbox.server import DEFAULT_TOKEN, Sandbox

    path = ensure(folder, n, "csv")
    out = folder / f"upload_{n}_{latency}.xlsx"
    out.unlink(missing_ok=True)
    marks: list[tuple[float, str]] = []
    command = [PY, "-m", "benchmarks.bare_client", str(path)] if bare else [*CLI, "upload", str(path), "-o", str(out)]
    with Sandbox() as sandbox:
        sandbox.set_faults(latency=latency, latency_covers_work=covers_work)
        env = {**os.environ, **(extra_env or {}), "KANTATA_API_TOKEN": DEFAULT_TOKEN, "KANTATA_BASE_URL": sandbox.url}
        run = measure(command, env, marks)
        stats = sandbox.stats()
        created = len(sandbox.milestones())
        if created != n:
            raise SystemExit(f"the upload created {created} milestones of {n}")
        made = {"POST": stats.get("POST /billing_milestones", 0), "GET": stats.get("GET /billing_milestones", 0),
                "concurrency": sandbox.most_in_flight}  # fmt: skip
    at = {text.split(" ")[0]: t for t, text in marks}  # "sending ..." and "writing ..." are stage messages
    return run, {**made, "send_seconds": at["sent" if bare else "writing"] - at["sending"]}


def uploads(folder: Path, n: int, repeat: int) -> list[str]:
    """Each variant `repeat` times, round-robin; the medians of the whole command and of its sending stage."""
    rows = ["| upload | rows | seconds (all) | of which sending | requests | floor (s) | sending ÷ floor "
            "| all ÷ floor | sending ÷ floor of the POSTs alone |",
            "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    variants: list[tuple[float, str, dict[str, str] | None, bool, bool]] = [  # latency, label, env, covers, bare
        (0.1, " added after the sandbox's work", None, False, False),
        (0.1, " added, workbook written after sending", NO_STREAM, False, False),
        (0.1, " added, the bare client (nothing recorded)", None, False, True),
        (0.1, " from arrival to answer, work included", None, True, False),
        (0.1, " from arrival to answer, the bare client", None, True, True),
        (0.0, "", None, False, False),
    ]
    runs: list[list[tuple[Run, dict[str, float]]]] = [[] for _ in variants]
    for _ in range(repeat):
        for done, (latency, _label, extra, covers_work, bare) in zip(runs, variants, strict=True):
            done.append(upload(folder, n, latency, extra, covers_work=covers_work, bare=bare))
    for done, (latency, label, _extra, _covers, _bare) in zip(runs, variants, strict=True):
        seconds = statistics.median(run.seconds for run, _ in done)
        send = statistics.median(made["send_seconds"] for _, made in done)
        made = done[0][1]
        # The requests made: the POSTs, and the look-ups of each batch's keys right before it leaves.
        floor = (made["POST"] + made["GET"]) * latency / DEFAULT_CONCURRENCY
        posts = made["POST"] * latency / DEFAULT_CONCURRENCY
        ratios = f"{send / floor:.2f} | {seconds / floor:.2f} | {send / posts:.2f}" if floor else "- | - | -"
        rows.append(f"| {latency * 1000:.0f} ms latency{label}, concurrency {DEFAULT_CONCURRENCY} (sandbox saw "
                    f"{made['concurrency']:.0f} at once) | {n:,} | {seconds:.1f} | {send:.1f} | "
                    f"{made['POST']:.0f} POST + {made['GET']:.0f} GET | {floor:.1f} | {ratios} |")  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k and 100k only, 3 repeats, upload of 20k rows")
    parser.add_argument("--repeat", type=int, help="fresh processes per figure (default 5, --quick 3)")
    parser.add_argument("--folder", type=Path, help="where schedules are generated (default: a temp folder)")
    parser.add_argument("--skip-upload", action="store_true", help="only the dry runs")
    parser.add_argument("--skip-dry-run", action="store_true", help="only the uploads")
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 5)
    folder = args.folder or Path(tempfile.gettempdir()) / "kantata-import-bench"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load average at start {os.getloadavg()[0]:.2f}; {repeat} runs per figure, medians", flush=True)  # fmt: skip
    table: list[str] = []
    growth: list[str] = []
    if not args.skip_dry_run:
        sizes = [(10_000, "xlsx"), (100_000, "xlsx"), (10_000, "csv"), (100_000, "csv")]
        if not args.quick:
            sizes.append((1_000_000, "csv"))
        table, per_row = dry_runs(folder, sizes, repeat, naive_up_to=100_000)
        if (1_000_000, "csv") in per_row:
            g = per_row[(1_000_000, "csv")] / per_row[(100_000, "csv")]
            growth.append(f"growth: µs/row at 1M ÷ at 100k (csv) = {g:.2f} (target ≤ 1.3)")
        g = per_row[(100_000, "xlsx")] / per_row[(10_000, "xlsx")]
        growth.append(f"growth: µs/row at 100k ÷ at 10k (xlsx) = {g:.2f}")
        print("\n".join(growth), flush=True)
    if not args.skip_upload:
        table += ["", *uploads(folder, 20_000 if args.quick else 100_000, 1 if args.quick else 3)]
    print("\n" + "\n".join([*table, "", *growth]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
