"""Everything that speaks Kantata's API: the account, the client, each row's identity (import keys), the online
checks."""

from typing import TYPE_CHECKING

from importer._face import lazy

if TYPE_CHECKING:
    from importer.kantata.account import Account as Account
    from importer.kantata.account import key_of as key_of
    from importer.kantata.checks import OnlineCheck as OnlineCheck
    from importer.kantata.checks import amount_issues as amount_issues
    from importer.kantata.checks import check_online as check_online
    from importer.kantata.checks import duplicate_rows as duplicate_rows
    from importer.kantata.checks import withheld_currencies as withheld_currencies
    from importer.kantata.client import LOOKUP_CHUNK as LOOKUP_CHUNK
    from importer.kantata.client import ChangeAnswer as ChangeAnswer
    from importer.kantata.client import KantataClient as KantataClient
    from importer.kantata.client import OutcomeUnknown as OutcomeUnknown
    from importer.kantata.client import StoryInfo as StoryInfo
    from importer.kantata.client import WorkspaceInfo as WorkspaceInfo
    from importer.kantata.client import counted_total as counted_total
    from importer.kantata.concurrency import Cancelled as Cancelled
    from importer.kantata.currencies import Currencies as Currencies
    from importer.kantata.keys import ImportKey as ImportKey
    from importer.kantata.keys import Item as Item
    from importer.kantata.keys import build_items as build_items
    from importer.kantata.keys import has_user_keys as has_user_keys
    from importer.kantata.keys import items_as_built as items_as_built
    from importer.kantata.keys import reference_issues as reference_issues
    from importer.kantata.milestones import Milestone as Milestone
    from importer.kantata.milestones import changes as changes
    from importer.kantata.milestones import marked as marked

_HOMES = {
    "Account": "account",
    "key_of": "account",
    "changes": "milestones",
    "marked": "milestones",
    "Milestone": "milestones",
    "ChangeAnswer": "client",
    "amount_issues": "checks",
    "build_items": "keys",
    "Cancelled": "concurrency",
    "check_online": "checks",
    "Currencies": "currencies",
    "duplicate_rows": "checks",
    "has_user_keys": "keys",
    "ImportKey": "keys",
    "Item": "keys",
    "items_as_built": "keys",
    "KantataClient": "client",
    "counted_total": "client",
    "LOOKUP_CHUNK": "client",
    "OnlineCheck": "checks",
    "OutcomeUnknown": "client",
    "reference_issues": "keys",
    "withheld_currencies": "checks",
    "StoryInfo": "client",
    "WorkspaceInfo": "client",
}

__getattr__, __dir__ = lazy(__name__, _HOMES)

__all__ = sorted(_HOMES)
