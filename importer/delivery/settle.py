"""Requests an interrupted run left without an answer: wait for them to land at Kantata rather than send twice."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from importer.delivery.journal import Journal, Previous, seconds_since
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
    another results workbook, another upload): each is waited for until its own request can no longer write.
    And for the keys an interrupted run of an edited version of this schedule sent without an answer
    (`Journal.earlier`), even those no row carries any more: the milestone it may yet create is the one an
    edited row updates (`hand_over`), and must be there to be found."""
    clock = settings.clock
    now = clock.monotonic()  # from here on, no clock change moves a deadline
    window = settings.sending_ahead + settings.writes_until
    until: dict[ImportKey, float] = {}  # key -> when Kantata can no longer be writing it
    wait = window - journal.since_last_sent()
    if wait > 0:
        until.update((i.key, now + wait) for i in items if i.row in journal.in_flight)
    mine = {i.key for i in items}
    others: set[ImportKey] = set()  # keys of rows edited since an interrupted run sent them (journal.Earlier)
    for earlier in journal.earlier:
        others.update(k for k in earlier.in_flight if k not in mine)
        if (left := window - seconds_since(earlier.last_sent, clock)) > 0:
            for key in earlier.in_flight:
                until[key] = max(until.get(key, 0.0), now + left)
    for key, left in (ledger.keys_waiting(mine | others) if ledger is not None else {}).items():
        until[key] = max(until.get(key, 0.0), now + left)
    pending = [k for k in until if k not in existing]
    if pending:
        longest = max(until[k] for k in pending) - now
        say(f"{len(pending)} rows an interrupted run sent are not in Kantata yet, and its requests may still be "
            f"running: waiting up to {longest:.0f} s for them, so that nothing is created twice")  # fmt: skip
    pause = min(0.1, settings.settle_poll)  # a request that was about to finish is found at once
    while pending:
        clock.sleep(min(pause, max(0.0, max(until[k] for k in pending) - clock.monotonic())))
        began = clock.monotonic()
        more = client.find_existing(pending)
        existing.update(more)
        # A key is given up only after a look-up that began once its request could no longer write
        # (dropped by the time the look-up ended, a row written just before it ended could be sent again).
        pending = [k for k in pending if k not in more and until[k] >= began]
        pause = min(pause * 2, settings.settle_poll)


def still_writing(
    previous: Previous, ledger: Ledger, items: Sequence[Item], found: Collection[ImportKey], settings: Settings
) -> float:
    """Seconds for which requests left unanswered may still be written at Kantata, as settle_in_flight reckons
    them: an interrupted run's (`previous`, read_previous) and any other run's the ledger knows (Ledger.read_only),
    counting only those whose keys are not `found`; 0 when none can be. A dry run does not wait for them, so it
    says for how long an upload would."""
    window = settings.sending_ahead + settings.writes_until
    keys = {i.row: i.key for i in items}
    waits: list[float] = []
    if any(r in keys and keys[r] not in found for r in previous.in_flight):
        waits.append(window - seconds_since(previous.last_sent, settings.clock))
    waits += [window - seconds_since(e.last_sent, settings.clock)
              for e in previous.earlier if any(k not in found for k in e.in_flight)]  # fmt: skip
    asked = {*keys.values(), *(k for e in previous.earlier for k in e.in_flight)}
    waits += [left for key, left in ledger.keys_waiting(asked).items() if key not in found]
    return max([0.0, *waits])
