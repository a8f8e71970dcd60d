"""The package checks and the sheet's metadata pass (importer/schedule/xlsx_meta.py) of this tree against those
of an earlier revision, in one process, on one generated workbook:

    .venv/bin/python -m benchmarks.meta_pass --against effb211              # 100k rows, 9 rounds
    .venv/bin/python -m benchmarks.meta_pass --against effb211 --rows 20000 --repeat 5

The revision's xlsx_meta.py is read with `git show` and imported beside this tree's under another name (it
imports only the standard library, defusedxml and importer.schedule.limits, which this tree provides). Each
round times `check_package` and `sheet_meta` of each version in turn, so a noisy neighbour slows both alike.
Printed: the median of each, and the ratio this tree ÷ the revision with its range over the rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from benchmarks.generate import ensure

ROOT = Path(__file__).resolve().parent.parent
SHEET = "Schedule"  # the sheet generate.py writes


def _module(name: str, file: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _timed(call: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the git revision to compare this tree with")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the generated workbook (default 100000)")
    parser.add_argument("--repeat", type=int, default=9, help="rounds (default 9)")
    parser.add_argument("--folder", type=Path, help="where the workbook is generated and kept (default: temp)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kantata-import-meta-") as temp:
        folder = args.folder or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        path = ensure(folder, args.rows, "xlsx")
        old_file = Path(temp) / "xlsx_meta_old.py"
        old_file.write_bytes(subprocess.run(["git", "-C", str(ROOT), "show",
                                             f"{args.against}:importer/schedule/xlsx_meta.py"],
                                            check=True, capture_output=True).stdout)  # fmt: skip
        versions = {"this tree": _module("xlsx_meta_new", ROOT / "importer/schedule/xlsx_meta.py"),
                    args.against: _module("xlsx_meta_old", old_file)}  # fmt: skip
        package: dict[str, list[float]] = {name: [] for name in versions}
        meta: dict[str, list[float]] = {name: [] for name in versions}
        for module in versions.values():  # once untimed: imports, the file in the page cache
            module.check_package(path)
            module.sheet_meta(path, SHEET)
        for _ in range(args.repeat):
            for name, module in versions.items():
                package[name].append(_timed(module.check_package, path))
                meta[name].append(_timed(module.sheet_meta, path, SHEET))
    size = path.stat().st_size / 2**20
    print(f"{args.rows:,} rows ({size:.1f} MiB .xlsx), {args.repeat} rounds, medians:")
    for name in versions:
        print(f"  {name:>12}: check_package {statistics.median(package[name]) * 1000:7.1f} ms, "
              f"sheet_meta {statistics.median(meta[name]) * 1000:7.1f} ms")  # fmt: skip
    new, old = meta["this tree"], meta[args.against]
    ratios = [n / o for n, o in zip(new, old, strict=True)]
    print(f"  sheet_meta, this tree ÷ {args.against}: {statistics.median(new) / statistics.median(old):.2f} "
          f"(rounds {min(ratios):.2f} to {max(ratios):.2f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
