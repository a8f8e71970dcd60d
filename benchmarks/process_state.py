"""Whether each process-wide speed setting earns its place: the collector paused and frozen around a run, the
GIL switch interval shortened while the results writer runs, and the results packed at zlib level 1.

    .venv/bin/python -m benchmarks.process_state [--rows 100000] [--upload-rows 50000] [--repeat 3]

Each variant is the real command in a fresh process (`importer.cli.main.run`) with one setting taken away by the
driver below; the variants run interleaved, so read the ratios to "all on". A dry run (validate, csv) shows the
collector and the packing; an upload to the sandbox (100 ms added to each request) shows all three.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.bench import PY, measure
from benchmarks.generate import ensure

# The driver takes away one setting, then runs the command as the console script does. Every variant imports
# the same modules before the command starts, so the imports cost them alike.
DRIVER = """
import sys, gc
variant = sys.argv[1]
sys.argv = ["kantata-import", *sys.argv[2:]]
import importer.cli.main as cli, importer.results.packing as packing, importer.results.streaming as streaming
import importer.pipeline
if variant == "zip":
    packing.PACK_LEVEL = 6
elif hasattr(cli, "TUNING"):  # the command tunes its own process: take one part away there
    cli.TUNING = cli.TUNING.without(variant)
else:  # the library tuned the process (before the command took it over)
    if variant == "gc":
        import types
        importer.pipeline.gc = types.SimpleNamespace(isenabled=gc.isenabled, disable=lambda: None,
            enable=gc.enable, freeze=lambda: None, unfreeze=gc.unfreeze)
    elif variant == "switch":
        streaming.SWITCH_INTERVAL = sys.getswitchinterval()
sys.exit(cli.run())
"""

VARIANTS = ("all", "gc", "switch", "zip")  # "gc": without the collector's handling, and so on


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the dry run (csv)")
    parser.add_argument("--upload-rows", type=int, default=50_000, help="rows of the upload (csv)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "kantata-import-bench")
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    print(f"load average at start {os.getloadavg()[0]:.2f}; {args.repeat} interleaved runs per variant, medians")
    _dry_runs(args.folder, args.rows, args.repeat)
    _uploads(args.folder, args.upload_rows, args.repeat)
    return 0


def _dry_runs(folder: Path, n: int, repeat: int) -> None:
    path = ensure(folder, n, "csv")
    variants = ("all", "gc", "zip")
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeat):
        for v in variants:
            cmd = [PY, "-c", DRIVER, v, "validate", str(path), "-q", "-o", str(folder / f"state_{v}.xlsx")]
            seconds[v].append(measure(cmd).seconds)
    base = statistics.median(seconds["all"])
    for v in variants:
        m = statistics.median(seconds[v])
        print(f"validate {n:,} csv, without {v:<6}: {m:6.2f} s  ÷ all on = {m / base:.3f}  runs {_runs(seconds[v])}")


def _uploads(folder: Path, n: int, repeat: int) -> None:
    from importer.sandbox.server import DEFAULT_TOKEN, Sandbox

    path = ensure(folder, n, "csv")
    whole: dict[str, list[float]] = {v: [] for v in VARIANTS}
    sending: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(repeat):
        for v in VARIANTS:
            out = folder / f"state_upload_{v}.xlsx"
            out.unlink(missing_ok=True)
            marks: list[tuple[float, str]] = []
            with Sandbox() as sandbox, tempfile.TemporaryDirectory() as state:
                sandbox.set_faults(latency=0.1)
                env = {**os.environ, "KANTATA_API_TOKEN": DEFAULT_TOKEN, "KANTATA_BASE_URL": sandbox.url,
                       "KANTATA_IMPORT_STATE": state}  # fmt: skip
                run = measure([PY, "-c", DRIVER, v, "upload", str(path), "-o", str(out)], env, marks)
                if len(sandbox.milestones()) != n:
                    raise SystemExit(f"upload without {v} created {len(sandbox.milestones())} of {n}")
            at = {text.split(" ")[0]: t for t, text in marks}
            whole[v].append(run.seconds)
            sending[v].append(at["writing"] - at["sending"])
    base, base_send = statistics.median(whole["all"]), statistics.median(sending["all"])
    for v in VARIANTS:
        m, s = statistics.median(whole[v]), statistics.median(sending[v])
        print(f"upload {n:,} csv, 100 ms, without {v:<6}: all {m:6.2f} s ÷ all on = {m / base:.3f}; sending "
              f"{s:6.2f} s ÷ = {s / base_send:.3f}  runs {_runs(whole[v])}")  # fmt: skip


def _runs(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
