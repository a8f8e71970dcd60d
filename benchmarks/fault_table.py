"""Print the exactly-once table: fault kind x rows sent x duplicates x lost ids x extra requests.

    .venv/bin/python -m benchmarks.fault_table

Runs the same scenarios as tests/delivery/test_faults.py (which asserts them) against the real sandbox over HTTP.
"Extra requests" counts every GET and POST beyond what the fault-free run of the same schedule needs at the same
concurrency; the fault-free run itself already isolates the 6 rows Kantata refuses, and that cost is shown on its
own line. "Runs" is how many times the command had to be run: with several batches in flight, a fault on every
Nth request can starve one batch of its tries; the run then stops (exit 4) and the next run resumes it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from importer.sandbox.server import Sandbox
from tests.delivery.test_faults import SCENARIOS, run_scenario


def main() -> None:
    with Sandbox() as sandbox, tempfile.TemporaryDirectory() as tmp:
        print(f"{'fault':<40} {'conc':>4} {'rows sent':>9} {'duplicates':>10} {'lost ids':>8} {'requests':>8} "
              f"{'extra':>6} {'runs':>4}")  # fmt: skip
        for concurrency in (1, 4):
            baseline = None
            for name, faults in SCENARIOS.items():
                folder = Path(tmp) / f"{concurrency}-{name.replace(' ', '_').replace('/', '-')}"
                folder.mkdir()
                f = run_scenario(sandbox, folder, faults, concurrency=concurrency)
                baseline = f.requests if baseline is None else baseline
                print(f"{name:<40} {concurrency:>4} {f.rows_sent:>9} {f.duplicates:>10} {f.lost_ids:>8} "
                      f"{f.requests:>8} {f.requests - baseline:>6} {f.runs:>4}")  # fmt: skip


if __name__ == "__main__":
    main()
