"""Billing milestones as Kantata holds them, and how a schedule row differs from one.

A row keeps its identity across months when it carries the milestone's id (a results workbook fed back in) or the
user's own external reference; `changes` then says which of the fields a PUT may change differ, old and new. The
project is not among them: Kantata cannot move a milestone to another workspace, so a row that names another
project than its milestone is a conflict, never an update.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from importer.kantata.keys import ImportKey

# What a PUT /billing_milestones/{id} may change, in the order a person reads a milestone.
UPDATABLE = ("title", "amount_in_cents", "date_to_invoice", "billing_type", "story_id")
# Each upload writes its run's mark into the external reference's message of what it creates: when an answer is
# lost while another upload sends the same rows, a key is found on two milestones, and the mark alone tells which
# one this upload made (its ids came in the answer that was lost).
RUN_MARK = "kantata-import run "


@dataclass(frozen=True, slots=True)
class Milestone:
    """One milestone as Kantata answered it; `keys` are the external references it carries."""

    id: str
    workspace_id: int | None
    fields: Mapping[str, Any]  # the UPDATABLE fields, normalised as a request body writes them
    invoiced: bool
    keys: tuple[ImportKey, ...] = ()
    runs: frozenset[str] = frozenset()  # the marks of the uploads that created it (RUN_MARK), where they wrote one

    def made_by(self, run: str) -> bool:
        """Whether the upload that writes the mark `run` created it (an empty mark names no upload)."""
        return bool(run) and run in self.runs

    @property
    def sort_id(self) -> tuple[int, str]:
        """Kantata's ids are numbers sent as strings: the lowest is the oldest, whatever their lengths."""
        return (int(self.id), self.id) if self.id.isdigit() else (1 << 63, self.id)


def milestones_in(data: Mapping[str, Any]) -> Iterator[Milestone]:
    """The primary milestones of one answer, in `results` order, with their side-loaded external references."""
    objects = data.get("billing_milestones") or {}
    references = data.get("external_references") or {}
    for entry in data.get("results") or []:
        if entry.get("key") != "billing_milestones":
            continue
        obj = objects.get(str(entry.get("id")))
        if not isinstance(obj, Mapping):
            continue
        keys = []
        runs = set()
        for ref_id in obj.get("external_reference_ids") or []:
            ref = references.get(str(ref_id)) or {}
            if ref.get("service_name") and ref.get("service_model_ref") is not None:
                keys.append(ImportKey(str(ref["service_name"]), str(ref.get("service_model")),
                                      str(ref["service_model_ref"])))  # fmt: skip
            message = ref.get("external_message")
            if isinstance(message, str) and message.startswith(RUN_MARK):
                runs.add(message[len(RUN_MARK) :])
        yield Milestone(
            id=str(entry["id"]),
            workspace_id=_int(obj.get("workspace_id")),
            fields={name: _normalised(name, obj.get(name)) for name in UPDATABLE},
            invoiced=obj.get("invoice_id") not in (None, "", 0, "0"),
            keys=tuple(keys),
            runs=frozenset(runs),
        )


def marked(body: dict[str, Any], run: str) -> dict[str, Any]:
    """A create's body with `run`'s mark in its external reference, unless the row gives a message of its own."""
    reference = body.get("external_reference")
    if not isinstance(reference, Mapping) or reference.get("external_message") is not None:
        return body
    return {**body, "external_reference": {**reference, "external_message": RUN_MARK + run}}


def changes(milestone: Milestone, body: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The fields a row's request body would change, as (old, new). A field the row leaves blank is not a
    change: a blank cell in a schedule means "not given", and PUT leaves what it is not given alone."""
    found: dict[str, tuple[Any, Any]] = {}
    for name in UPDATABLE:
        if name not in body:
            continue
        new = _normalised(name, body[name])
        old = milestone.fields.get(name)
        if old != new:
            found[name] = (old, new)
    return found


def _normalised(name: str, value: Any) -> Any:
    """Ids and cents as int, dates as ISO text, everything else as text: how both sides compare equal."""
    if value is None or value == "":
        return None
    if name in ("amount_in_cents", "story_id"):
        return _int(value)
    return str(value)


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):  # numpy's integers too
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None
