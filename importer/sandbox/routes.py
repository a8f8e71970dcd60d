"""What each route answers, in Kantata's response format: totals, one page of sorted results, objects keyed by id.

The reads (milestones with their filters, one milestone, workspaces, stories), the update and the delete (both
refused for an invoiced milestone), and the page a create answers with, rendered from what it wrote. Unknown query
parameters are ignored and nonsense paging falls back to the defaults, as Kantata's documentation describes.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from importer.sandbox.faults import Faults
from importer.sandbox.rules import DATE, Reply, check_update, error, invoiced, parse_update
from importer.sandbox.store import REFERENCE_FIELDS, Inserted, NewMilestone, Reference, Store, Workspace

DEFAULT_PER_PAGE: Final = 20
MAX_PER_PAGE: Final = 200
MAX_LOOKUP_REFS: Final = 200

Route = Callable[[Store, int | None, Mapping[str, str], Faults], Reply]  # every route but the create and update
BodyRoute = Callable[[Store, int | None, Mapping[str, str], bytes], Reply]  # a route that reads the request body


# --- rendering --------------------------------------------------------------------------------------------------------


def _milestone_json(row: sqlite3.Row) -> dict[str, Any]:
    story, invoice = row["story_id"], row["invoice_id"]
    return {"id": str(row["id"]), "title": row["title"], "amount_in_cents": row["amount_in_cents"],
            "currency": row["currency"], "date_to_invoice": row["date_to_invoice"],
            "billing_type": row["billing_type"], "story_id": None if story is None else str(story),
            "workspace_id": str(row["workspace_id"]), "invoice_id": None if invoice is None else str(invoice),
            "created_at": row["created_at"], "updated_at": row["updated_at"]}  # fmt: skip


def _reference_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": str(row["id"]), "subject_type": row["subject_type"], "subject_id": str(row["subject_id"]),
            **{name: row[name] for name in REFERENCE_FIELDS}, "locked": bool(row["locked"]),
            "created_at": row["created_at"]}  # fmt: skip


def _written_milestone_json(milestone_id: int, item: NewMilestone, at: str) -> dict[str, Any]:
    """What `_milestone_json` gives for the row `Store.insert` wrote for `item`, without reading it back."""
    story = item.story_id
    return {"id": str(milestone_id), "title": item.title, "amount_in_cents": item.amount_in_cents,
            "currency": item.currency, "date_to_invoice": item.date_to_invoice, "billing_type": item.billing_type,
            "story_id": None if story is None else str(story), "workspace_id": str(item.workspace_id),
            "invoice_id": None, "created_at": at, "updated_at": at}  # fmt: skip


def _written_reference_json(reference_id: int, milestone_id: int, ref: Reference, at: str) -> dict[str, Any]:
    """What `_reference_json` gives for the reference row `Store.insert` wrote."""
    return {"id": str(reference_id), "subject_type": "BillingMilestone", "subject_id": str(milestone_id),
            **dict(zip(REFERENCE_FIELDS, ref, strict=True)), "created_at": at}  # fmt: skip


def _workspace_json(workspace: Workspace, faults: Faults) -> dict[str, Any]:
    shown = workspace._asdict()
    del shown["visible"]
    if faults.no_financial_access:
        del shown["currency"]  # Kantata shows `currency` only to users with financial access to the project
    return shown | {"id": str(workspace.id)}


def _envelope(key: str, objects: list[dict[str, Any]], total: int, page: int, per_page: int) -> dict[str, Any]:
    """The response format every endpoint shares: totals, one page of sorted results, objects keyed by id."""
    return {
        "count": total,
        "meta": {"count": total, "page_count": math.ceil(total / per_page), "page_number": page, "page_size": per_page},
        "results": [{"key": key, "id": obj["id"]} for obj in objects],
        key: {obj["id"]: obj for obj in objects},
    }


def _render_page(objects: list[dict[str, Any]], references: list[dict[str, Any]], total: int, page: int,
                 per_page: int, include: set[str]) -> dict[str, Any]:  # fmt: skip
    """One page of milestones as JSON objects, with their references (in id order) when asked to include them."""
    if "external_references" not in include:
        return _envelope("billing_milestones", objects, total, page, per_page)
    by_subject: dict[str, list[str]] = {}
    for r in references:  # one pass, not one scan per milestone: pages hold up to 200 of each
        by_subject.setdefault(r["subject_id"], []).append(r["id"])
    for obj in objects:
        obj["external_reference_ids"] = by_subject.get(obj["id"], [])
    body = _envelope("billing_milestones", objects, total, page, per_page)
    body["external_references"] = {r["id"]: r for r in references}
    return body


def _milestone_page(store: Store, rows: list[sqlite3.Row], total: int, page: int, per_page: int,
                    include: set[str]) -> dict[str, Any]:  # fmt: skip
    references = store.references([row["id"] for row in rows]) if "external_references" in include else []
    return _render_page([_milestone_json(row) for row in rows], [_reference_json(r) for r in references],
                        total, page, per_page, include)  # fmt: skip


def created_page(written: Inserted, valid: list[NewMilestone], query: Mapping[str, str],
                 faults: Faults) -> dict[str, Any]:  # fmt: skip
    """The answer to a create: one page of what it wrote (all of it with ``paginate_create`` off), as a listing
    would show it."""
    ids = written.ids
    page, per_page = _paging(query) if faults.paginate_create else (1, len(ids))
    # Newest first, as a listing orders them (one created_at, so by id): ids grow in item order.
    shown = list(reversed(range(len(ids))))[(page - 1) * per_page : page * per_page]
    include = _includes(query)
    objects = [_written_milestone_json(ids[i], valid[i], written.at) for i in shown]
    # In id order, as a listing gives them: ids grow in item order, and `shown` runs newest first.
    references = [_written_reference_json(written.reference_ids[ids[i]], ids[i], ref, written.at)
                  for i in reversed(shown) if (ref := valid[i].reference) is not None
                  ] if "external_references" in include else []  # fmt: skip
    return _render_page(objects, references, len(ids), page, per_page, include)


# --- query parameters -------------------------------------------------------------------------------------------------


def _number(text: str) -> int | None:
    """A plain decimal id or count that fits SQLite's integers; None for anything else."""
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text.strip()) else None


def _paging(query: Mapping[str, str]) -> tuple[int, int]:
    """page and per_page; nonsense falls back to the default and an over-large per_page is capped, not refused."""
    page = _number(query.get("page", "")) or 1
    per_page = _number(query.get("per_page", "")) or DEFAULT_PER_PAGE
    return page, min(per_page, MAX_PER_PAGE)


def _ids(text: str) -> list[int]:
    """A comma list of ids; tokens that are not ids match nothing, as a miss is simply absent."""
    return [n for n in map(_number, text.split(",")) if n is not None]


def _includes(query: Mapping[str, str]) -> set[str]:
    return {part.strip() for part in query.get("include", "").split(",")}


def _milestone_filters(query: Mapping[str, str]) -> tuple[list[str], list[Any]]:
    """SQL clauses for the documented GET /billing_milestones filters; unknown parameters are ignored."""
    where: list[str] = []
    params: list[Any] = []
    for name, column in (("workspace_ids", "m.workspace_id"), ("story_ids", "m.story_id"), ("only", "m.id")):
        if name in query:
            where.append(f"{column} IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(_ids(query[name])))
    if span := re.fullmatch(rf"({DATE}):({DATE})", query.get("date_between", "")):
        where.append("m.date_to_invoice BETWEEN ? AND ?")
        params += [span[1], span[2]]
    has_ref = "EXISTS (SELECT 1 FROM external_references r WHERE r.subject_type = 'BillingMilestone'" \
              " AND r.subject_id = m.id"  # fmt: skip
    if query.get("has_external_references") in ("true", "false"):
        where.append(("" if query["has_external_references"] == "true" else "NOT ") + has_ref + ")")
    conditions = []
    for column in ("service_name", "service_model", "service_model_ref", "status"):
        if f"external_reference_{column}" in query:
            conditions.append(f" AND r.{column} = ?")
            params.append(query[f"external_reference_{column}"])
    if "external_reference_service_model_refs" in query:
        refs = [ref for ref in query["external_reference_service_model_refs"].split(",") if ref]
        conditions.append(" AND r.service_model_ref IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(refs[:MAX_LOOKUP_REFS]))
    if conditions:
        where.append(has_ref + "".join(conditions) + ")")
    if "without_external_reference_service_name" in query:
        where.append("NOT " + has_ref + " AND r.service_name = ?)")
        params.append(query["without_external_reference_service_name"])
    return where, params


# --- every route but the create, which needs the server's fault state -------------------------------------------------


def _list(store: Store, _ident: int | None, query: Mapping[str, str], _faults: Faults) -> Reply:
    where, params = _milestone_filters(query)
    page, per_page = _paging(query)
    order = "ASC" if query.get("order") == "created_at:asc" else "DESC"
    total, rows = store.select(where, params, order=order, limit=per_page, offset=(page - 1) * per_page)
    return Reply(200, _milestone_page(store, rows, total, page, per_page, _includes(query)))


def _not_found(ident: int | None) -> Reply:
    return error(404, "system", f"Billing milestone {ident} not found")


def _show(store: Store, ident: int | None, query: Mapping[str, str], _faults: Faults) -> Reply:
    total, rows = store.select(["m.id = ?"], [ident])
    if not total:
        return _not_found(ident)
    return Reply(200, _milestone_page(store, rows, 1, 1, DEFAULT_PER_PAGE, _includes(query)))


def _update(store: Store, ident: int | None, query: Mapping[str, str], body: bytes) -> Reply:
    """PUT: 400 for a malformed body, 404 for a milestone the token cannot see, 422 for an invoiced one (before
    any field is looked at) or one the change would make invalid, else 200 and the milestone as now stored."""
    given = parse_update(body)
    if isinstance(given, Reply):
        return given
    total, rows = store.select(["m.id = ?"], [ident])
    if not total:
        return _not_found(ident)
    if rows[0]["invoice_id"] is not None:
        return invoiced(ident)
    errors, changes = check_update(given, dict(rows[0]), store.workspaces, store.stories)
    if errors:
        return Reply(422, {"errors": errors})
    row = store.update(cast(int, ident), changes)
    if isinstance(row, str):  # deleted or invoiced since the look-up above
        return _not_found(ident) if row == "missing" else invoiced(ident)
    return Reply(200, _milestone_page(store, [row], 1, 1, DEFAULT_PER_PAGE, _includes(query)))


def _delete(store: Store, ident: int | None, _query: Mapping[str, str], faults: Faults) -> Reply:
    """204 with no body, its external references gone with it; 404 if the token cannot see it; 422 if invoiced."""
    found = _show(store, ident, {}, faults)
    if found.status != 200:
        return found
    outcome = store.delete(cast(int, ident))
    if outcome == "invoiced":
        return invoiced(ident)
    return Reply(204) if outcome == "deleted" else _not_found(ident)


def _workspaces(store: Store, _ident: int | None, query: Mapping[str, str], faults: Faults) -> Reply:
    chosen = [w for w in store.workspaces.values() if w.visible]
    if "only" in query:
        chosen = [w for w in chosen if w.id in _ids(query["only"])]
    shown = [_workspace_json(w, faults) for w in sorted(chosen)]
    return _paged("workspaces", shown, query)


def _stories(store: Store, _ident: int | None, query: Mapping[str, str], faults: Faults) -> Reply:
    workspaces = store.workspaces
    chosen = [s for s in store.stories.values() if workspaces[s.workspace_id].visible]
    for name, attribute in (("only", "id"), ("workspace_ids", "workspace_id")):
        if name in query:
            chosen = [s for s in chosen if getattr(s, attribute) in _ids(query[name])]
    with_workspace = "workspace" in _includes(query)
    objects = [{"id": str(s.id), "title": s.title, "state": s.state}
               | ({"workspace_id": str(s.workspace_id)} if with_workspace else {})
               for s in sorted(chosen)]  # fmt: skip
    reply = _paged("stories", objects, query)
    if with_workspace and reply.body is not None:
        shown = sorted({store.stories[int(story_id)].workspace_id for story_id in reply.body["stories"]})
        reply.body["workspaces"] = {str(w): _workspace_json(workspaces[w], faults) for w in shown}
    return reply


def _paged(key: str, objects: list[dict[str, Any]], query: Mapping[str, str]) -> Reply:
    page, per_page = _paging(query)
    return Reply(200, _envelope(key, objects[(page - 1) * per_page : page * per_page], len(objects), page,
                                per_page))  # fmt: skip


ROUTES: Final[Mapping[str, Route]] = {
    "GET /billing_milestones": _list,
    "GET /billing_milestones/{id}": _show,
    "DELETE /billing_milestones/{id}": _delete,
    "GET /workspaces": _workspaces,
    "GET /stories": _stories,
}
BODY_ROUTES: Final[Mapping[str, BodyRoute]] = {"PUT /billing_milestones/{id}": _update}
