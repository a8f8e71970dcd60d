"""The least any client must spend sending a schedule: what the sandbox and the transport allow on this machine.

    python -m benchmarks.bare_client SCHEDULE      (KANTATA_BASE_URL and KANTATA_API_TOKEN from the environment)

The requests are built before the clock starts (the importer's own planner, untimed), then `concurrency`
threads, one requests.Session each, post them with the importer's query and headers and decode each answer;
nothing is journalled, recorded or written. It prints "sending ..." and "sent" on stderr, which the benchmark
times as it times the importer's sending stage. The upload's floor formula (requests x latency / concurrency)
leaves out the sandbox's own work and the time on the wire; this figure shows how much of the importer's
distance to that floor is theirs. It is a lower bound, not a like-for-like run: the importer's sending stage
also builds and encodes the requests, journals each batch and writes the results sheet meanwhile.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import requests

from importer.kantata.client import PER_PAGE
from importer.kantata.keys import build_items
from importer.schedule.loader import load_schedule
from importer.schedule.schema import validate_rows
from importer.settings import DEFAULT_CONCURRENCY, MAX_BATCH


def main(argv: list[str]) -> int:
    items, _ = build_items(validate_rows(load_schedule(Path(argv[0]))).rows)
    payloads = [json.dumps({"billing_milestones": [i.body for i in items[n : n + MAX_BATCH]]}).encode()
                for n in range(0, len(items), MAX_BATCH)]  # fmt: skip
    url = os.environ["KANTATA_BASE_URL"].rstrip("/") + "/billing_milestones"
    headers = {"Authorization": f"Bearer {os.environ['KANTATA_API_TOKEN']}", "Content-Type": "application/json"}
    params: dict[str, str | int] = {"per_page": PER_PAGE, "include": "external_references"}
    created: list[int] = []
    failed: list[BaseException] = []

    def post(mine: list[bytes]) -> None:
        try:
            with requests.Session() as session:
                for payload in mine:
                    response = session.post(url, params=params, data=payload, headers=headers, timeout=(10, 200))
                    response.raise_for_status()
                    created.append(int(response.json()["count"]))
        except Exception as exc:  # noqa: BLE001 - said in main(), and the run counts as failed
            failed.append(exc)

    threads = [threading.Thread(target=post, args=(payloads[k::DEFAULT_CONCURRENCY],))
               for k in range(DEFAULT_CONCURRENCY)]  # fmt: skip
    print(f"sending {len(items)} rows in {len(payloads)} requests", file=sys.stderr, flush=True)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("sent", file=sys.stderr, flush=True)
    if failed or sum(created) != len(items):  # exit 3: bench.measure() stops the benchmark with these lines
        print(f"created {sum(created)} of {len(items)}; failed: {failed[:1]}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
