"""What a create or an update must be, as Kantata's documentation for POST /billing_milestones states it, and
the error bodies that refuse one (Rails-style messages, every error of an item rather than the first).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import orjson

from importer.sandbox.faults import Faults
from importer.sandbox.store import REFERENCE_FIELDS, UPDATABLE, NewMilestone, Reference, Story, Workspace

MAX_BATCH: Final = 100
BILLING_TYPES: Final = ("fixed_date", "upon_completion")
REFERENCE_STATUSES: Final = ("successful", "pending", "failed")
DATE: Final = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_REFERENCE_TEXT: Final = REFERENCE_FIELDS[:-1]  # all but "locked"
_REFERENCE_CHECKS: Final = tuple((name, "External reference " + name.replace("_", " "), f"external_reference.{name}",
                                  name in ("service_name", "service_model", "service_model_ref"))
                                 for name in _REFERENCE_TEXT)  # fmt: skip
_BIGINT: Final = 2**63

Error = dict[str, Any]  # one entry of an answer's "errors"


@dataclass
class Reply:
    """What a route answers; ``drop`` closes the socket instead of answering."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    _data: bytes | None = None
    content_type: str = "application/json; charset=utf-8"

    def data(self) -> bytes:
        """The body as sent, encoded once (the server encodes it before a latency that covers the work).

        orjson, not json: the answer to a create of many is large, and the standard encoder would be a sizeable
        part of the sandbox's work on it. Everything encoded here is the sandbox's own: string keys, integers it
        checked to fit in 64 bits."""
        if self._data is None:
            self._data = b"" if self.body is None else orjson.dumps(self.body)
        return self._data


def error(status: int, kind: str, message: str) -> Reply:
    """A refusal of the whole request, in Kantata's error format."""
    return Reply(status, {"errors": [{"type": kind, "message": message}]})


def proxy_page(status: int, phrase: str, authorization: str | None) -> Reply:
    """What a proxy or load balancer in front of Kantata answers when Kantata does not: an HTML page, many lines
    long, not Kantata's JSON. Like some proxies' debug pages, it echoes the request's Authorization header, so
    the client is seen to keep the token out of what it shows of the page."""
    lines = "".join(f"<p>upstream detail line {n}: the server did not answer in time</p>\n" for n in range(1, 41))
    page = (f"<html>\n<head><title>{status} {phrase}</title></head>\n<body>\n<h1>{status} {phrase}</h1>\n{lines}"
            f"<pre>Authorization: {authorization}</pre>\n<hr><center>nginx</center>\n</body>\n</html>\n")  # fmt: skip
    return Reply(status, None, _data=page.encode(), content_type="text/html; charset=utf-8")


def invalid(message: str, field_name: str | None) -> Error:
    """One validation error of an item, naming its field when there is one."""
    found: Error = {"type": "validation", "message": message}
    if field_name is not None:
        found["field"] = field_name
    return found


def parse_create(body: bytes) -> tuple[list[Any], bool] | Reply:
    """The items to create and whether they came as a list, or the 400/422 that refuses the request."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return error(400, "system", "The request body is not valid JSON")
    if not isinstance(payload, dict) or ("billing_milestone" in payload) == ("billing_milestones" in payload):
        return error(400, "system", "Send a JSON object with either billing_milestone or billing_milestones")
    if "billing_milestone" in payload:
        return [payload["billing_milestone"]], False
    items = payload["billing_milestones"]
    if not isinstance(items, list):
        return error(400, "system", "billing_milestones must be an array")
    if not 1 <= len(items) <= MAX_BATCH:
        message = f"You can create at most {MAX_BATCH} billing milestones per request" if items else (
            "billing_milestones must not be empty")  # fmt: skip
        return error(422, "validation", message)
    return items, True


def parse_update(body: bytes) -> dict[str, Any] | Reply:
    """The fields a PUT sends under ``billing_milestone``, or the 400 that refuses the request."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return error(400, "system", "The request body is not valid JSON")
    if not isinstance(payload, dict) or not isinstance(payload.get("billing_milestone"), dict):
        return error(400, "system", "Send a JSON object with a billing_milestone object")
    return cast(dict[str, Any], payload["billing_milestone"])


def invoiced(milestone_id: int | None) -> Reply:
    """The refusal of a change to an invoiced milestone: Kantata updates and deletes only those not yet invoiced."""
    message = f"Billing milestone {milestone_id} has been invoiced and can no longer be changed or deleted"
    return Reply(422, {"errors": [invalid(message, "base")]})


def check_update(
    given: Mapping[str, Any], current: Mapping[str, Any], workspaces: Mapping[int, Workspace],
    stories: Mapping[int, Story],
) -> tuple[list[Error], dict[str, Any]]:  # fmt: skip
    """Every error of the milestone as the update would leave it, checked by the create's rules, or the new values
    of the UPDATABLE columns. Other fields are ignored (the documentation gives no external reference to a PUT),
    except a ``workspace_id``: Kantata cannot move a milestone to another workspace, so only its own is accepted."""
    errors: list[Error] = []
    if "workspace_id" in given and not (
        _is_int(given["workspace_id"]) and given["workspace_id"] == current["workspace_id"]
    ):
        errors.append(invalid("Workspace cannot be changed", "workspace_id"))
    merged = {name: current[name] for name in (*UPDATABLE, "workspace_id")}
    merged |= {name: given[name] for name in UPDATABLE if name in given}
    found, milestone = check_milestone(merged, workspaces, stories)
    errors += found
    if errors or milestone is None:
        return errors, {}
    return [], {name: getattr(milestone, name) for name in UPDATABLE}


def check_batch(
    items: list[Any],
    is_list: bool,
    workspaces: Mapping[int, Workspace],
    stories: Mapping[int, Story],
    faults: Faults,
    on_reserved: Callable[[], object],
) -> tuple[list[Error], list[NewMilestone]]:
    """Every error of every item, and the items without any, ready to insert.

    The faults that change validation apply here: a reserved title is one more error (`on_reserved` counts it),
    and with ``error_index`` each error of a list names its item."""
    errors: list[Error] = []
    valid: list[NewMilestone] = []
    for index, item in enumerate(items):
        item_errors, milestone = check_milestone(item, workspaces, stories)
        if faults.reject_title is not None and isinstance(item, dict) and item.get("title") == faults.reject_title:
            on_reserved()
            item_errors.append(invalid("Title is reserved", "title"))
        if is_list and faults.error_index:
            item_errors = [{**found, "index": index} for found in item_errors]
        errors += item_errors
        if milestone is not None and not item_errors:
            valid.append(milestone)
    return errors, valid


def check_milestone(
    item: object, workspaces: Mapping[int, Workspace], stories: Mapping[int, Story]
) -> tuple[list[Error], NewMilestone | None]:
    """All errors of one item (never just the first), in field order, or the item ready to insert."""
    if not isinstance(item, dict):
        return [invalid("Billing milestone is invalid", None)], None
    errors: list[Error] = []
    title, amount = item.get("title"), item.get("amount_in_cents")
    _check_title(title, errors)
    _check_amount(amount, errors)
    workspace = _check_workspace(item, workspaces, errors)
    date = item.get("date_to_invoice")
    if date is not None and not _valid_date(date):
        errors.append(invalid("Date to invoice is not a valid date", "date_to_invoice"))
    billing_type = item.get("billing_type") or "fixed_date"
    if billing_type not in BILLING_TYPES:
        errors.append(invalid("Billing type is not included in the list", "billing_type"))
    story_id = _check_story(item, billing_type, workspace, workspaces, stories, errors)
    ref, reference = item.get("external_reference"), None
    if ref is not None:
        ref_errors, reference = _check_reference(ref)
        errors += ref_errors
    if errors or workspace is None:
        return errors, None
    return [], NewMilestone(cast(str, title), cast(int, amount), workspace.currency, date, billing_type, story_id,
                            workspace.id, reference)  # fmt: skip


def _check_title(title: object, errors: list[Error]) -> None:
    if _blank(title):
        errors.append(invalid("Title can't be blank", "title"))
    elif not isinstance(title, str):
        errors.append(invalid("Title is invalid", "title"))


def _check_amount(amount: object, errors: list[Error]) -> None:
    """An integer that fits Kantata's 64-bit column; a float is refused even when it is whole."""
    if amount is None:
        errors.append(invalid("Amount in cents can't be blank", "amount_in_cents"))
    elif isinstance(amount, float):
        errors.append(invalid("Amount in cents must be an integer", "amount_in_cents"))
    elif not _is_int(amount):
        errors.append(invalid("Amount in cents is not a number", "amount_in_cents"))
    elif not -_BIGINT <= cast(int, amount) < _BIGINT:
        errors.append(invalid("Amount in cents is out of range", "amount_in_cents"))


def _check_workspace(item: Mapping[str, Any], workspaces: Mapping[int, Workspace],
                     errors: list[Error]) -> Workspace | None:  # fmt: skip
    """The item's workspace when the token can see it; a hidden one is "not found", as a missing one is."""
    if "workspace_id" not in item or item["workspace_id"] is None:
        errors.append(invalid("Workspace can't be blank", "workspace_id"))
        return None
    workspace_id = _check_id(item, "workspace_id", "Workspace", errors)
    if workspace_id is None:
        return None
    workspace = workspaces.get(workspace_id)
    if workspace is None or not workspace.visible:
        errors.append(invalid("Workspace not found", "workspace_id"))
        return None
    return workspace


def _check_story(item: Mapping[str, Any], billing_type: object, workspace: Workspace | None,
                 workspaces: Mapping[int, Workspace], stories: Mapping[int, Story],
                 errors: list[Error]) -> int | None:  # fmt: skip
    """The story id, when given: a visible task of the item's workspace; required for "upon_completion"."""
    story_id = _check_id(item, "story_id", "Story", errors)
    if story_id is not None:
        story = stories.get(story_id)
        if story is None or not workspaces[story.workspace_id].visible:
            errors.append(invalid("Story not found", "story_id"))
        elif workspace is not None and story.workspace_id != workspace.id:
            errors.append(invalid("Story must belong to the billing milestone's workspace", "story_id"))
    elif item.get("story_id") is None and billing_type == "upon_completion":
        errors.append(invalid("Story can't be blank", "story_id"))
    return story_id


def _check_reference(ref: object) -> tuple[list[Error], Reference | None]:
    """All errors of an external reference, or its values in column order (text fields, then locked)."""
    if not isinstance(ref, dict):
        return [invalid("External reference is invalid", "external_reference")], None
    values = [ref.get(name) for name in _REFERENCE_TEXT]
    errors = []
    for value, (name, label, where, required) in zip(values, _REFERENCE_CHECKS, strict=True):
        if type(value) is str and (not required or value.strip()) and (name != "status" or value in REFERENCE_STATUSES):
            continue  # the usual case, decided in one test
        if required and _blank(value):
            errors.append(invalid(f"{label} can't be blank", where))
        elif value is not None and not isinstance(value, str):
            errors.append(invalid(f"{label} is invalid", where))
        elif name == "status" and value is not None and value not in REFERENCE_STATUSES:
            errors.append(invalid(f"{label} is not included in the list", where))
    locked = ref.get("locked")
    if locked is not None and not isinstance(locked, bool):
        errors.append(invalid("External reference locked is not a boolean", "external_reference.locked"))
    return errors, None if errors else (*values, bool(locked))


def _check_id(item: Mapping[str, Any], key: str, label: str, errors: list[Error]) -> int | None:
    """The id under key when it is an integer; otherwise None, with an error unless it is simply absent."""
    value = item.get(key)
    if value is None:
        return None
    if not _is_int(value):
        errors.append(invalid(f"{label} id is not a number", key))
        return None
    return cast(int, value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _valid_date(value: object) -> bool:
    return isinstance(value, str) and len(value) == 10 and _iso_date(value)  # (the cache keeps no long text)


@functools.lru_cache(maxsize=4096)
def _iso_date(text: str) -> bool:
    """Cached: a schedule's rows share a few dates, and a create checks every item's."""
    if not re.fullmatch(DATE, text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True
