"""Two machines upload one schedule at the same moment, many times: does every race end with one milestone per row?

    .venv/bin/python -m benchmarks.race                     # 3,000 rows, 20 races
    .venv/bin/python -m benchmarks.race --rows 600 --times 5
    .venv/bin/python -m benchmarks.race --lost-every 7      # and the answer to every 7th create lost after it wrote

Each race starts two uploads of the same schedule (threads released by one barrier, the second `stagger` seconds
after the first: 0, 0.05, 0.1, 0.15 or 0.2 s in turn (`--stagger`), within the first's sending, so that some races
overlap whole and some in part), with separate state folders (two machines share nothing but Kantata) and two
spellings of the sandbox's URL (`127.0.0.1` and `localhost`, a trailing slash), against a sandbox with a few
milliseconds from each request's arrival to its answer, so that their batches interleave. A race passes when Kantata
holds each row once and both results name that milestone for every row. Printed per race: the copies the uploads
made (created twice, found after creating and deleted), the rows an upload found already sent by the other as
their batch was about to leave (not sent twice), and the time; at the end, the races that passed out of those run
(the script exits 1 if one did not). With `--lost-every`, answers are lost as well: the uploads settle those
batches by looking their keys up while the other may hold them too.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from importer.pipeline import RunResult, run_upload
from importer.sandbox.server import DEFAULT_TOKEN, Sandbox
from importer.settings import Secret, Settings


def _schedule(path: Path, rows: int) -> Path:
    lines = "".join(f"R{n},{n + 1},{1001 + n % 3}\n" for n in range(rows))
    path.write_text("title,amount_in_cents,workspace_id\n" + lines)
    return path


def race(
    sandbox: Sandbox, folder: Path, rows: int, latency: float, stagger: float, lost_every: int = 0
) -> tuple[bool, int, int, float]:
    """One race: (one milestone per row and both results agree, copies made and deleted, rows found already sent
    right before their batch left, seconds)."""
    sandbox.reset()
    sandbox.set_faults(latency=latency, latency_covers_work=True, drop_after_write_every=lost_every)
    path = _schedule(folder / "schedule.csv", rows)
    urls = {"a": sandbox.url, "b": sandbox.url.replace("127.0.0.1", "localhost") + "/"}
    start = threading.Barrier(2)
    results: dict[str, RunResult] = {}

    def upload(name: str) -> None:
        settings = Settings(base_url=urls[name], token=Secret(DEFAULT_TOKEN), state_dir=folder / name)
        start.wait()
        if name == "b":
            time.sleep(stagger)
        results[name] = run_upload(path, settings, output=folder / f"{name}.xlsx")

    began = time.perf_counter()
    threads = [threading.Thread(target=upload, args=(name,)) for name in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    held = Counter(str(m["title"]) for m in sandbox.milestones())
    kept = {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}
    named = [{f"R{row - 2}": str(o.milestone_id) for row, o in r.outcomes.items()} for r in results.values()]
    ok = len(results) == 2 and len(held) == rows and set(held.values()) == {1} and all(n == kept for n in named)
    copies = sandbox.stats().get("DELETE /billing_milestones/{id}", 0)
    found = sum(1 for r in results.values() for o in r.outcomes.values()
                if o.errors and "while this one was sending" in o.errors[0])  # fmt: skip
    return ok, copies, found, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--times", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.005, help="seconds from a request's arrival to its answer")
    parser.add_argument(
        "--stagger",
        type=float,
        default=0.05,
        metavar="S",
        help="the second upload starts 0, 1, 2, 3 or 4 times S seconds after the first, in turn",
    )
    parser.add_argument("--lost-every", type=int, default=0, metavar="N",
                        help="the answer to every Nth create is lost after it wrote (0: none)")  # fmt: skip
    args = parser.parse_args()
    passed = 0
    with Sandbox() as sandbox, tempfile.TemporaryDirectory(prefix="kantata-race-") as tmp:
        for n in range(args.times):
            folder = Path(tmp, str(n))
            folder.mkdir()
            stagger = (n % 5) * args.stagger
            ok, copies, found, took = race(sandbox, folder, args.rows, args.latency, stagger, args.lost_every)
            passed += ok
            verdict = "one milestone per row" if ok else "FAILED"
            print(f"race {n + 1} (second {stagger:.2f} s later): {verdict}; copies made and deleted: {copies}; "
                  f"rows found already sent as their batch left: {found}; {took:.1f} s", flush=True)  # fmt: skip
    print(f"{passed} of {args.times} races of {args.rows:,} rows ended with one milestone per row and agreeing results")
    return 0 if passed == args.times else 1


if __name__ == "__main__":
    raise SystemExit(main())
