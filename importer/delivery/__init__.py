"""Carrying out a plan: batches sent exactly once, the journal and ledger that make a crash cheap."""

from typing import TYPE_CHECKING

from importer._face import lazy

if TYPE_CHECKING:
    from importer.delivery.journal import SENDING_AHEAD as SENDING_AHEAD
    from importer.delivery.journal import Journal as Journal
    from importer.delivery.journal import journal_path as journal_path
    from importer.delivery.journal import schedule_digest as schedule_digest
    from importer.delivery.ledger import Ledger as Ledger
    from importer.delivery.ledger import one_upload_to as one_upload_to
    from importer.delivery.planner import Plan as Plan
    from importer.delivery.planner import plan as plan
    from importer.delivery.recorder import OnOutcomes as OnOutcomes
    from importer.delivery.recorder import OnSending as OnSending
    from importer.delivery.recorder import Recorder as Recorder
    from importer.delivery.session import Delivery as Delivery
    from importer.delivery.session import ToSend as ToSend
    from importer.delivery.settle import settle_in_flight as settle_in_flight
    from importer.delivery.signals import patient_interrupts as patient_interrupts
    from importer.delivery.upload import SETTLE_POLL as SETTLE_POLL
    from importer.delivery.upload import Uploader as Uploader

_HOMES = {
    "Recorder": "recorder",
    "ToSend": "session",
    "Delivery": "session",
    "patient_interrupts": "signals",
    "settle_in_flight": "settle",
    "Journal": "journal",
    "Ledger": "ledger",
    "OnOutcomes": "recorder",
    "OnSending": "recorder",
    "Plan": "planner",
    "SENDING_AHEAD": "journal",
    "SETTLE_POLL": "upload",
    "Uploader": "upload",
    "journal_path": "journal",
    "one_upload_to": "ledger",
    "plan": "planner",
    "schedule_digest": "journal",
}

__getattr__, __dir__ = lazy(__name__, _HOMES)

__all__ = [
    "Recorder",
    "ToSend",
    "Delivery",
    "patient_interrupts",
    "settle_in_flight",
    "Journal",
    "Ledger",
    "OnOutcomes",
    "OnSending",
    "Plan",
    "SENDING_AHEAD",
    "SETTLE_POLL",
    "Uploader",
    "journal_path",
    "one_upload_to",
    "plan",
    "schedule_digest",
]
