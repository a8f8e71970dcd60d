"""Each project's currency, asked on a side thread while an upload looks keys up and sends its batches."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from importer.kantata.client import KantataClient

JOIN_STEP = 0.05  # seconds: how late a Ctrl-C during the wait for the currencies may be seen at most


class Currencies:
    """Each project's currency, so that totals show 120,001 JPY, not 1,200.01: one batched request for up to
    200 projects. Only a nicety: if Kantata withholds it (no financial access) or fails, totals stay in cents.

    Asked on a side thread while the keys are looked up and the batches sent (it was one more round trip after
    the last answer). `result` waits for it; a Ctrl-C during that wait costs only the currencies (every row is
    settled by then). `cancel` (a run that stopped) sends no further try. A daemon thread: nothing waits for
    it at exit."""

    def __init__(self, client: KantataClient, projects: Sequence[int]) -> None:
        self._found: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ask, args=(client, projects), name="kantata-currencies",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _ask(self, client: KantataClient, projects: Sequence[int]) -> None:
        try:
            answer = client.workspaces(projects, stop=self._stop)
        except Exception:  # noqa: BLE001 - a nicety: whatever went wrong (Cancelled included), totals stay in cents
            return
        self._found.update({w: info.currency for w, info in answer.items() if info.currency})

    def result(self) -> dict[int, str]:
        try:
            # A join in short steps: the operating system may hand a Ctrl-C to another thread, and then only the
            # main thread's next step of Python code raises it, which an untimed join would hold back until the
            # answer came.
            while self._thread.is_alive():
                self._thread.join(JOIN_STEP)
        except KeyboardInterrupt:
            self.cancel()
            return {}
        return dict(self._found)

    def cancel(self) -> None:
        self._stop.set()
