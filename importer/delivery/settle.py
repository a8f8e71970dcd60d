"""Requests an interrupted run left without an answer: wait for them to land at Kantata rather than send twice."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from importer.delivery.journal import Journal
from importer.delivery.ledger import Ledger
from importer.kantata import ImportKey, Item, KantataClient
from importer.settings import Settings


def settle_in_flight(
    client: KantataClient,
    journal: Journal,
    ledger: Ledger | None,
    items: Sequence[Item],
    existing: dict[ImportKey, str],
    settings: Settings,
    say: Callable[[str], None],
) -> None:
    """Rows an interrupted run sent without seeing the answer may still be being written at Kantata (a request
    can write for Settings.writes_until seconds after it left): wait for them rather than send them again and
    create them twice. They are looked up (at first 0.1 s apart, then doubling up to Settings.settle_poll, as
    while sending) until they are all there or that much time has passed since the last request can have left
    (Settings.sending_ahead after the last "sending" line); what is still missing then was never written, and is
    sent. What it finds goes into `existing` as it comes, so that a stop meanwhile (Ctrl-C) still reports those
    rows.

    The same holds for keys the ledger shows sent by any run without an answer (this schedule since edited,
    another results workbook, another upload): each is waited for until its own request can no longer write."""
    clock = settings.clock
    now = clock.monotonic()  # from here on, no clock change moves a deadline
    until: dict[ImportKey, float] = {}  # key -> when Kantata can no longer be writing it
    wait = settings.sending_ahead + settings.writes_until - journal.since_last_sent()
    if wait > 0:
        until.update((i.key, now + wait) for i in items if i.row in journal.in_flight)
    for key, left in (ledger.waits_for(items) if ledger is not None else {}).items():
        until[key] = max(until.get(key, 0.0), now + left)
    pending = [i for i in items if i.key in until and i.key not in existing]
    if pending:
        longest = max(until[i.key] for i in pending) - now
        say(f"{len(pending)} rows an interrupted run sent are not in Kantata yet, and its requests may still be "
            f"running: waiting up to {longest:.0f} s for them, so that nothing is created twice")  # fmt: skip
    pause = min(0.1, settings.settle_poll)  # a request that was about to finish is found at once
    while pending:
        clock.sleep(min(pause, max(0.0, max(until[i.key] for i in pending) - clock.monotonic())))
        began = clock.monotonic()
        more = client.find_existing(i.key for i in pending)
        existing.update(more)
        # A key is given up only after a look-up that began once its request could no longer write
        # (dropped by the time the look-up ended, a row written just before it ended could be sent again).
        pending = [i for i in pending if i.key not in more and until[i.key] >= began]
        pause = min(pause * 2, settings.settle_poll)
