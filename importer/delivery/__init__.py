"""Carrying out a plan: batches sent exactly once, the journal and ledger that make a crash cheap."""

from typing import TYPE_CHECKING

from importer._face import lazy

if TYPE_CHECKING:
    from importer.delivery.journal import SENDING_AHEAD as SENDING_AHEAD
    from importer.delivery.journal import Journal as Journal
    from importer.delivery.journal import Previous as Previous
    from importer.delivery.journal import journal_path as journal_path
    from importer.delivery.journal import read_previous as read_previous
    from importer.delivery.journal import schedule_digest as schedule_digest
    from importer.delivery.ledger import Ledger as Ledger
    from importer.delivery.lock import AccountLockHolder as AccountLockHolder
    from importer.delivery.lock import one_upload_to as one_upload_to
    from importer.delivery.missing import DeleteMissing as DeleteMissing
    from importer.delivery.missing import find_missing as find_missing
    from importer.delivery.planner import Action as Action
    from importer.delivery.planner import Plan as Plan
    from importer.delivery.planner import Step as Step
    from importer.delivery.planner import in_kantata as in_kantata
    from importer.delivery.planner import plan as plan
    from importer.delivery.recorder import OnOutcomes as OnOutcomes
    from importer.delivery.recorder import OnSending as OnSending
    from importer.delivery.recorder import Recorder as Recorder
    from importer.delivery.session import Delivery as Delivery
    from importer.delivery.session import ToSend as ToSend
    from importer.delivery.session import look_up as look_up
    from importer.delivery.session import plan_steps as plan_steps
    from importer.delivery.settle import settle_in_flight as settle_in_flight
    from importer.delivery.settle import still_writing as still_writing
    from importer.delivery.signals import StopSwitch as StopSwitch
    from importer.delivery.signals import patient_interrupts as patient_interrupts
    from importer.delivery.updates import describe as describe
    from importer.delivery.upload import SETTLE_POLL as SETTLE_POLL
    from importer.delivery.upload import Uploader as Uploader

_HOMES = {
    "look_up": "session",
    "plan_steps": "session",
    "describe": "updates",
    "Step": "planner",
    "Action": "planner",
    "Delivery": "session",
    "DeleteMissing": "missing",
    "find_missing": "missing",
    "Previous": "journal",
    "Journal": "journal",
    "journal_path": "journal",
    "read_previous": "journal",
    "Ledger": "ledger",
    "AccountLockHolder": "lock",
    "one_upload_to": "lock",
    "OnOutcomes": "recorder",
    "OnSending": "recorder",
    "patient_interrupts": "signals",
    "Plan": "planner",
    "plan": "planner",
    "in_kantata": "planner",
    "Recorder": "recorder",
    "schedule_digest": "journal",
    "SENDING_AHEAD": "journal",
    "settle_in_flight": "settle",
    "still_writing": "settle",
    "SETTLE_POLL": "upload",
    "StopSwitch": "signals",
    "ToSend": "session",
    "Uploader": "upload",
}

__getattr__, __dir__ = lazy(__name__, _HOMES)

__all__ = sorted(_HOMES)
