"""The plan of an upload: which rows Kantata already has, and the rest in batches of at most `batch_size`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from importer.kantata import ImportKey, Item


@dataclass(slots=True)
class Plan:
    rows: list[int]  # the rows to send (not found in Kantata), in file order
    items: Iterable[Item]  # their items, in the same order: a list, or built while the first batches are sent
    existing: dict[int, str]  # row -> milestone id, for rows an earlier run created
    batch_size: int

    def batches(self) -> Iterator[list[Item]]:
        batch: list[Item] = []
        for item in self.items:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def plan(items: Sequence[Item], existing: Mapping[ImportKey, str], *, batch_size: int) -> Plan:
    """Drop the rows Kantata already has; the rest go out in file order, `batch_size` at a time."""
    found = {item.row: existing[item.key] for item in items if item.key in existing}
    to_send = [item for item in items if item.row not in found]
    return Plan(rows=[i.row for i in to_send], items=to_send, existing=found, batch_size=batch_size)
