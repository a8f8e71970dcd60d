"""The ring of batches (importer/delivery/order.py): where an upload starts, each batch handed out once, and the
one turn back when another upload's rows are found."""

from __future__ import annotations

import secrets
import threading

from importer.delivery.order import Ring, start


def _all(ring: Ring) -> list[int]:
    taken = []
    while (index := ring.take()) is not None:
        taken.append(index)
    return taken


def test_an_upload_starts_where_its_mark_says_and_a_resumed_run_at_the_same_place() -> None:
    marks = [secrets.token_hex(8) for _ in range(200)]
    starts = [start(10, mark) for mark in marks]
    assert starts == [start(10, mark) for mark in marks]  # the same mark, the same start (a resumed run)
    assert all(0 <= s < 10 for s in starts)
    assert len(set(starts)) == 10, "two hundred uploads start all over the ring, not at one place"
    assert start(10, "") == 0 and start(0, "abc") == 0


def test_the_ring_hands_each_batch_out_once_going_round_from_the_start() -> None:
    mark = next(m for m in (secrets.token_hex(8) for _ in range(1000)) if start(7, m) == 4)
    assert _all(Ring(7, mark)) == [4, 5, 6, 0, 1, 2, 3]
    assert _all(Ring(1, mark)) == [0] and _all(Ring(0, mark)) == []


def test_finding_another_uploads_rows_turns_the_ring_back_once() -> None:
    mark = next(m for m in (secrets.token_hex(8) for _ in range(1000)) if start(10, m) == 3)
    ring = Ring(10, mark)
    assert [ring.take(), ring.take(), ring.take()] == [3, 4, 5]
    ring.turn(4)  # batch 4 held rows another upload had sent: it is coming from above, so go down from 4
    assert [ring.take(), ring.take()] == [2, 1]
    ring.turn(1)  # only once: after the turn the two are heading for each other
    assert _all(ring) == [0, 9, 8, 7, 6]


def test_sending_threads_taking_at_once_get_every_batch_exactly_once() -> None:
    ring = Ring(5000, secrets.token_hex(8))
    taken: list[list[int]] = [[] for _ in range(8)]
    go = threading.Barrier(8)

    def take(into: list[int]) -> None:
        go.wait()
        while (index := ring.take()) is not None:
            into.append(index)
            if index % 97 == 0:
                ring.turn(index)

    threads = [threading.Thread(target=take, args=(t,)) for t in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for t in taken for i in t]
    assert sorted(every) == list(range(5000))
