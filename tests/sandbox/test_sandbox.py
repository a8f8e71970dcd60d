"""The sandbox over real HTTP: it must answer as the Kantata documentation says, faults included."""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from importer.sandbox import (
    DEFAULT_TOKEN,
    SEED_STORIES,
    SEED_WORKSPACES,
    Faults,
    Sandbox,
    add_arguments,
    faults_from_args,
)

MISSING = object()  # a key left out of the item


class Api:
    """A requests.Session with the sandbox's token, like the importer's client but with no rules of its own."""

    def __init__(self, session: requests.Session, url: str) -> None:
        self.session, self.url = session, url

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(f"{self.url}/{path}", params=params, timeout=5)

    def post(self, body: Any, **params: Any) -> requests.Response:
        return self.session.post(f"{self.url}/billing_milestones", json=body, params=params, timeout=5)

    def create(self, *items: dict[str, Any], **params: Any) -> requests.Response:
        return self.post({"billing_milestones": list(items)}, **params)


def item(n: int, **changes: Any) -> dict[str, Any]:
    body = {
        "title": f"Milestone {n}",
        "amount_in_cents": 10000 + n,
        "workspace_id": 1001,
        "date_to_invoice": "2026-03-31",
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not MISSING}


def ref(key: str, **changes: Any) -> dict[str, Any]:
    return {"service_name": "kantata-import", "service_model": "schedule-row", "service_model_ref": key, **changes}


def result_ids(response: requests.Response) -> list[str]:
    return [entry["id"] for entry in response.json()["results"]]


def without_times(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key not in ("created_at", "updated_at")}


@pytest.fixture(scope="module")
def server() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture
def sandbox(server: Sandbox) -> Sandbox:
    server.reset()
    return server


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[Api]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {DEFAULT_TOKEN}"
        yield Api(session, sandbox.url)


# --- auth and transport -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", DEFAULT_TOKEN, f"Basic {DEFAULT_TOKEN}"])
def test_refuses_a_request_without_the_token(sandbox: Sandbox, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = requests.post(f"{sandbox.url}/billing_milestones", json={"billing_milestone": item(1)}, headers=headers,
                             timeout=5)  # fmt: skip
    assert response.status_code == 401
    assert response.json() == {"errors": [{"type": "oauth", "message": "Invalid OAuth 2 Request"}]}
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert sandbox.milestones() == []


def test_keeps_the_connection_alive_and_answers_without_the_nagle_delay(sandbox: Sandbox, api: Api) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=5)
    try:
        sockets = []
        for _ in range(2):
            connection.request("GET", "/api/v1/workspaces", headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"})
            response = connection.getresponse()
            assert (response.status, response.getheader("Content-Length")) == (200, str(len(response.read())))
            sockets.append(connection.sock)
        assert sockets[0] is sockets[1] is not None
    finally:
        connection.close()
    took = []
    for _ in range(50):
        started = time.perf_counter()
        api.get("workspaces").raise_for_status()
        took.append(time.perf_counter() - started)
    # With Nagle on, every request but the first waits for the client's delayed ACK (tens of ms); the lower
    # quartile, not the sum or the median, so a loaded machine's stalls do not fail it.
    assert sorted(took)[len(took) // 4] < 0.03


def test_accepts_paths_with_and_without_prefix_and_json_suffix(sandbox: Sandbox, api: Api) -> None:
    root = sandbox.url.removesuffix("/api/v1")
    created = api.session.post(f"{sandbox.url}/billing_milestones.json", json={"billing_milestone": item(1)}, timeout=5)
    assert (created.status_code, result_ids(created)) == (200, ["700001"])
    assert result_ids(api.session.get(f"{root}/billing_milestones.json", timeout=5)) == ["700001"]
    assert result_ids(api.session.get(f"{root}/billing_milestones/700001", timeout=5)) == ["700001"]
    assert result_ids(api.get("billing_milestones/700001.json")) == ["700001"]
    assert sandbox.stats() == {"POST /billing_milestones": 1, "GET /billing_milestones": 1,
                               "GET /billing_milestones/{id}": 2}  # fmt: skip


@pytest.mark.parametrize(("method", "path"), [("GET", "invoices"), ("PATCH", "billing_milestones/700001"),
                                              ("GET", "billing_milestones/abc"), ("POST", "workspaces")])  # fmt: skip
def test_answers_an_unknown_route_with_a_json_404(sandbox: Sandbox, api: Api, method: str, path: str) -> None:
    response = api.session.request(method, f"{sandbox.url}/{path}", json={}, timeout=5)
    assert (response.status_code, response.json()) == (
        404, {"errors": [{"type": "system", "message": f"No route matches {method} /api/v1/{path}"}]})  # fmt: skip
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"


# --- creating -----------------------------------------------------------------------------------------------------


def test_creates_one_milestone_and_answers_in_the_standard_format(sandbox: Sandbox, api: Api) -> None:
    response = api.post({"billing_milestone": item(1, external_reference=ref("row-2"))})
    assert response.status_code == 200
    body = response.json()
    milestone = body["billing_milestones"]["700001"]
    assert milestone["created_at"] == milestone["updated_at"]
    assert dt.datetime.fromisoformat(milestone["created_at"]).tzinfo is not None
    assert {**body, "billing_milestones": {"700001": without_times(milestone)}} == {
        "count": 1,
        "meta": {"count": 1, "page_count": 1, "page_number": 1, "page_size": 20},
        "results": [{"key": "billing_milestones", "id": "700001"}],
        "billing_milestones": {"700001": {"id": "700001", "title": "Milestone 1", "amount_in_cents": 10001,
                                          "currency": "USD", "date_to_invoice": "2026-03-31",
                                          "billing_type": "fixed_date", "story_id": None, "workspace_id": "1001",
                                          "invoice_id": None}},
    }  # fmt: skip
    [stored] = sandbox.milestones()
    assert without_times(stored) == {
        "id": 700001, "title": "Milestone 1", "amount_in_cents": 10001, "currency": "USD",
        "date_to_invoice": "2026-03-31", "billing_type": "fixed_date", "story_id": None, "workspace_id": 1001,
        "invoice_id": None, "external_reference.id": 900001, "external_reference.service_name": "kantata-import",
        "external_reference.service_model": "schedule-row", "external_reference.service_model_ref": "row-2",
        "external_reference.status": None, "external_reference.external_message": None,
        "external_reference.external_link": None, "external_reference.external_status": None,
        "external_reference.locked": False,
    }  # fmt: skip


def test_creates_100_in_one_request_and_answers_one_page_newest_first(sandbox: Sandbox, api: Api) -> None:
    first = api.create(*(item(n) for n in range(100)))
    assert first.status_code == 200
    body = first.json()
    assert (body["count"], body["meta"]) == (100, {"count": 100, "page_count": 5, "page_number": 1, "page_size": 20})
    assert result_ids(first) == [str(i) for i in range(700100, 700080, -1)]
    assert sorted(body["billing_milestones"]) == sorted(result_ids(first))
    second = api.create(*(item(n) for n in range(100, 200)), per_page=200)
    assert second.json()["meta"] == {"count": 100, "page_count": 1, "page_number": 1, "page_size": 200}
    assert result_ids(second) == [str(i) for i in range(700200, 700100, -1)]
    stored = sandbox.milestones()
    assert [m["id"] for m in stored] == list(range(700001, 700201))
    assert [m["title"] for m in stored] == [f"Milestone {n}" for n in range(200)]
    assert sandbox.stats() == {"POST /billing_milestones": 2}


def test_refuses_more_than_100_milestones(sandbox: Sandbox, api: Api) -> None:
    response = api.create(*(item(n) for n in range(101)))
    assert response.status_code == 422
    assert response.json() == {
        "errors": [{"type": "validation", "message": "You can create at most 100 billing milestones per request"}]
    }
    assert sandbox.milestones() == []


@pytest.mark.parametrize(("data", "message"), [
    (b"{not json", "The request body is not valid JSON"),
    (b'{"milestone": {}}', "Send a JSON object with either billing_milestone or billing_milestones"),
    (b'[{"title": "x"}]', "Send a JSON object with either billing_milestone or billing_milestones"),
    (b'{"billing_milestones": {"title": "x"}}', "billing_milestones must be an array"),
])  # fmt: skip
def test_answers_a_malformed_body_with_400(sandbox: Sandbox, api: Api, data: bytes, message: str) -> None:
    response = api.session.post(f"{sandbox.url}/billing_milestones", data=data, timeout=5,
                                headers={"Content-Type": "application/json"})  # fmt: skip
    assert (response.status_code, response.json()) == (400, {"errors": [{"type": "system", "message": message}]})


BAD_ITEMS = [item(0), item(1, title=""), item(2, amount_in_cents=12.5), item(3)]
BAD_ITEM_ERRORS = [
    {"type": "validation", "message": "Title can't be blank", "field": "title"},
    {"type": "validation", "message": "Amount in cents must be an integer", "field": "amount_in_cents"},
]


def test_refuses_the_whole_batch_when_one_item_is_invalid(sandbox: Sandbox, api: Api) -> None:
    response = api.create(*BAD_ITEMS)
    assert (response.status_code, response.json()) == (422, {"errors": BAD_ITEM_ERRORS})
    assert sandbox.milestones() == []


def test_partial_create_creates_the_valid_items_and_still_answers_422(sandbox: Sandbox, api: Api) -> None:
    sandbox.set_faults(partial_create=True)
    response = api.create(*BAD_ITEMS)
    assert (response.status_code, response.json()) == (422, {"errors": BAD_ITEM_ERRORS})
    assert [m["title"] for m in sandbox.milestones()] == ["Milestone 0", "Milestone 3"]


def test_error_index_names_the_failing_item_of_a_list_only(sandbox: Sandbox, api: Api) -> None:
    sandbox.set_faults(error_index=True)
    response = api.create(*BAD_ITEMS)
    assert response.json() == {"errors": [{**BAD_ITEM_ERRORS[0], "index": 1}, {**BAD_ITEM_ERRORS[1], "index": 2}]}
    single = api.post({"billing_milestone": BAD_ITEMS[1]})
    assert single.json() == {"errors": [BAD_ITEM_ERRORS[0]]}
    assert sandbox.milestones() == []


@pytest.mark.parametrize(("changes", "message", "field"), [
    ({"title": MISSING}, "Title can't be blank", "title"),
    ({"title": "   "}, "Title can't be blank", "title"),
    ({"title": 42}, "Title is invalid", "title"),
    ({"amount_in_cents": MISSING}, "Amount in cents can't be blank", "amount_in_cents"),
    ({"amount_in_cents": 12.5}, "Amount in cents must be an integer", "amount_in_cents"),
    ({"amount_in_cents": 1250.0}, "Amount in cents must be an integer", "amount_in_cents"),
    ({"amount_in_cents": True}, "Amount in cents is not a number", "amount_in_cents"),
    ({"amount_in_cents": "1250"}, "Amount in cents is not a number", "amount_in_cents"),
    ({"workspace_id": MISSING}, "Workspace can't be blank", "workspace_id"),
    ({"workspace_id": "1001"}, "Workspace id is not a number", "workspace_id"),
    ({"workspace_id": 1099}, "Workspace not found", "workspace_id"),
    ({"workspace_id": 4242}, "Workspace not found", "workspace_id"),
    ({"date_to_invoice": "31/03/2026"}, "Date to invoice is not a valid date", "date_to_invoice"),
    ({"date_to_invoice": "2026-02-30"}, "Date to invoice is not a valid date", "date_to_invoice"),
    ({"billing_type": "weekly"}, "Billing type is not included in the list", "billing_type"),
    ({"billing_type": "upon_completion"}, "Story can't be blank", "story_id"),
    ({"story_id": 5004}, "Story must belong to the billing milestone's workspace", "story_id"),
    ({"story_id": 5099}, "Story not found", "story_id"),
    ({"story_id": 5001.0}, "Story id is not a number", "story_id"),
    ({"external_reference": "row-2"}, "External reference is invalid", "external_reference"),
    ({"external_reference": ref("")}, "External reference service model ref can't be blank",
     "external_reference.service_model_ref"),
    ({"external_reference": ref("r", status="done")}, "External reference status is not included in the list",
     "external_reference.status"),
    ({"external_reference": ref("r", locked="yes")}, "External reference locked is not a boolean",
     "external_reference.locked"),
])  # fmt: skip
def test_validates_each_documented_rule(
    sandbox: Sandbox, api: Api, changes: dict[str, Any], message: str, field: str
) -> None:
    response = api.create(item(1, **changes))
    assert response.status_code == 422
    assert response.json() == {"errors": [{"type": "validation", "message": message, "field": field}]}
    assert sandbox.milestones() == []


def test_accepts_documented_edge_values_and_ignores_unknown_fields(sandbox: Sandbox, api: Api) -> None:
    full_ref = ref("r-9", status="pending", external_message="m", external_link="https://x.test/9",
                   external_status="open", locked=True)  # fmt: skip
    response = api.create(
        item(1, amount_in_cents=-10000, date_to_invoice=None, colour="blue"),
        item(2, workspace_id=1004, billing_type="upon_completion", story_id=5007, date_to_invoice=MISSING),
        item(3, story_id=5002, external_reference=full_ref),
    )
    assert response.status_code == 200
    rows = [without_times(m) for m in sandbox.milestones()]
    assert [(r["amount_in_cents"], r["currency"], r["date_to_invoice"], r["billing_type"], r["story_id"])
            for r in rows] == [(-10000, "USD", None, "fixed_date", None), (10002, "JPY", None, "upon_completion", 5007),
                               (10003, "USD", "2026-03-31", "fixed_date", 5002)]  # fmt: skip
    assert {k: v for k, v in rows[2].items() if k.startswith("external_reference.")} == {
        "external_reference.id": 900001, "external_reference.service_name": "kantata-import",
        "external_reference.service_model": "schedule-row", "external_reference.service_model_ref": "r-9",
        "external_reference.status": "pending", "external_reference.external_message": "m",
        "external_reference.external_link": "https://x.test/9", "external_reference.external_status": "open",
        "external_reference.locked": True,
    }  # fmt: skip


def test_include_external_references_side_loads_them(sandbox: Sandbox, api: Api) -> None:
    response = api.create(item(1, external_reference=ref("row-2", status="successful")), item(2),
                          include="external_references")  # fmt: skip
    body = response.json()
    assert body["billing_milestones"]["700001"]["external_reference_ids"] == ["900001"]
    assert body["billing_milestones"]["700002"]["external_reference_ids"] == []
    reference = body["external_references"]["900001"]
    assert reference.pop("created_at") == body["billing_milestones"]["700001"]["created_at"]
    assert body["external_references"] == {"900001": {
        "id": "900001", "subject_type": "BillingMilestone", "subject_id": "700001", "service_name": "kantata-import",
        "service_model": "schedule-row", "service_model_ref": "row-2", "status": "successful",
        "external_message": None, "external_link": None, "external_status": None, "locked": False,
    }}  # fmt: skip
    assert "external_references" not in api.get("billing_milestones").json()


def test_a_create_answers_exactly_what_a_listing_of_the_same_milestones_shows(sandbox: Sandbox, api: Api) -> None:
    """The create answer is rendered from what was written, not read back: it must match the stored rows."""
    items = [item(n, external_reference=ref(f"r-{n}", status="pending", locked=n % 2 == 0, external_link="x"))
             if n % 3 else item(n, story_id=5001, billing_type="upon_completion", date_to_invoice=None)
             for n in range(40)]  # fmt: skip
    answer = api.create(*items, per_page=15, page=2, include="external_references")
    listing = api.get("billing_milestones", per_page=15, page=2, include="external_references")
    assert answer.content == listing.content  # byte for byte: the same objects, keys and order
    created = answer.json()
    assert created["meta"] == {"count": 40, "page_count": 3, "page_number": 2, "page_size": 15}


def test_ids_go_on_after_the_newest_is_deleted_as_autoincrement_would(sandbox: Sandbox, api: Api) -> None:
    api.create(item(1, external_reference=ref("a")), item(2, external_reference=ref("b")))
    assert api.session.delete(f"{sandbox.url}/billing_milestones/700002", timeout=5).status_code == 204
    again = api.create(item(3, external_reference=ref("c")), include="external_references").json()
    assert result_ids_of(again) == ["700003"]
    assert list(again["external_references"]) == ["900003"]
    assert [m["id"] for m in sandbox.milestones()] == [700001, 700003]


# --- reading ------------------------------------------------------------------------------------------------------


@pytest.fixture
def six(api: Api) -> list[str]:
    """Six milestones over two workspaces, in two requests; the last has no external reference."""
    api.create(item(0, external_reference=ref("r-0")), item(1, external_reference=ref("r-1", status="failed")),
               item(2, story_id=5001, date_to_invoice="2026-01-15", external_reference=ref("r-2")))  # fmt: skip
    api.create(item(3, workspace_id=1002, external_reference=ref("r-3")),
               item(4, workspace_id=1002, story_id=5004, external_reference=ref("r-4", service_name="other")),
               item(5, date_to_invoice="2026-12-31"))  # fmt: skip
    return [str(700001 + n) for n in range(6)]


@pytest.mark.parametrize(("params", "expected"), [
    ({}, [5, 4, 3, 2, 1, 0]),
    ({"order": "created_at:asc"}, [0, 1, 2, 3, 4, 5]),
    ({"external_reference_service_model_refs": "r-4,r-1,nope"}, [4, 1]),
    ({"external_reference_service_model_ref": "r-3"}, [3]),
    ({"external_reference_service_name": "other"}, [4]),
    ({"external_reference_status": "failed"}, [1]),
    ({"without_external_reference_service_name": "kantata-import"}, [5, 4]),
    ({"has_external_references": "false"}, [5]),
    ({"has_external_references": "true"}, [4, 3, 2, 1, 0]),
    ({"workspace_ids": "1002,4242"}, [4, 3]),
    ({"story_ids": "5001,5004"}, [4, 2]),
    ({"only": "700002,700006,999"}, [5, 1]),
    ({"date_between": "2026-01-01:2026-06-30"}, [4, 3, 2, 1, 0]),
    ({"date_between": "2026-01-15:2026-01-15"}, [2]),
    ({"workspace_ids": "1001", "has_external_references": "true"}, [2, 1, 0]),
    ({"no_such_filter": "x"}, [5, 4, 3, 2, 1, 0]),
])  # fmt: skip
def test_filters_billing_milestones(api: Api, six: list[str], params: dict[str, str], expected: list[int]) -> None:
    response = api.get("billing_milestones", **params)
    assert response.status_code == 200
    assert result_ids(response) == [six[n] for n in expected]
    assert response.json()["count"] == len(expected)


def test_pages_with_exact_meta_and_caps_per_page(api: Api, six: list[str]) -> None:
    last = api.get("billing_milestones", per_page=4, page=2)
    assert (last.json()["meta"], result_ids(last)) == (
        {"count": 6, "page_count": 2, "page_number": 2, "page_size": 4},
        [six[1], six[0]],
    )
    assert api.get("billing_milestones", per_page=5000).json()["meta"]["page_size"] == 200
    assert api.get("billing_milestones", per_page="lots").json()["meta"]["page_size"] == 20
    assert api.get("billing_milestones", page=9).json()["results"] == []


def test_shows_and_deletes_one_milestone(sandbox: Sandbox, api: Api, six: list[str]) -> None:
    shown = api.get(f"billing_milestones/{six[0]}", include="external_references")
    assert (shown.status_code, result_ids(shown), shown.json()["billing_milestones"][six[0]]["external_reference_ids"]
            ) == (200, [six[0]], ["900001"])  # fmt: skip
    deleted = api.session.delete(f"{sandbox.url}/billing_milestones/{six[0]}", timeout=5)
    assert (deleted.status_code, deleted.content) == (204, b"")
    for response in (api.get(f"billing_milestones/{six[0]}"),
                     api.session.delete(f"{sandbox.url}/billing_milestones/{six[0]}", timeout=5)):  # fmt: skip
        assert (response.status_code, response.json()) == (
            404,
            {"errors": [{"type": "system", "message": f"Billing milestone {six[0]} not found"}]},
        )
    assert result_ids(api.get("billing_milestones", external_reference_service_model_ref="r-0")) == []
    assert len(sandbox.milestones()) == 5


def test_lists_only_visible_workspaces(api: Api) -> None:
    body = api.get("workspaces").json()
    assert result_ids_of(body) == ["1001", "1002", "1003", "1004", "1005"]
    assert body["workspaces"]["1005"] == {"id": "1005", "title": "Gulf Logistics Portal", "currency": "KWD",
                                          "currency_base_unit": 1000, "currency_symbol": "KD"}  # fmt: skip
    assert result_ids(api.get("workspaces", only="1004,1099,4242")) == ["1004"]
    assert [w.id for w in SEED_WORKSPACES if not w.visible] == [1099]


def test_without_financial_access_workspaces_come_without_currency(sandbox: Sandbox, api: Api) -> None:
    sandbox.set_faults(no_financial_access=True)
    assert api.get("workspaces", only="1004").json()["workspaces"]["1004"] == {
        "id": "1004", "title": "Daikoku Mobile App", "currency_base_unit": 1, "currency_symbol": "¥"}  # fmt: skip
    side_loaded = api.get("stories", only="5007", include="workspace").json()["workspaces"]["1004"]
    assert "currency" not in side_loaded and side_loaded["title"] == "Daikoku Mobile App"
    sandbox.reset()
    assert api.get("workspaces", only="1004").json()["workspaces"]["1004"]["currency"] == "JPY"


def test_lists_stories_with_workspace_only_when_included(api: Api) -> None:
    plain = api.get("stories", workspace_ids="1001").json()
    assert result_ids_of(plain) == ["5001", "5002", "5003"]
    assert plain["stories"]["5001"] == {"id": "5001", "title": "Design sign-off", "state": "completed"}
    assert "workspaces" not in plain
    included = api.get("stories", only="5004,5099", include="workspace").json()
    assert result_ids_of(included) == ["5004"]
    assert included["stories"]["5004"]["workspace_id"] == "1002"
    assert list(included["workspaces"]) == ["1002"]
    assert api.get("stories", per_page=200).json()["count"] == len(SEED_STORIES) - 1  # 5099 is hidden


def result_ids_of(body: dict[str, Any]) -> list[str]:
    return [entry["id"] for entry in body["results"]]


# --- faults -------------------------------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_before_any_write(sandbox: Sandbox, api: Api) -> None:
    sandbox.set_faults(rate_limit_every=2, retry_after=0.5)
    responses = [api.get("workspaces"), api.create(item(1)), api.create(item(2)), api.get("workspaces")]
    assert [r.status_code for r in responses] == [200, 429, 200, 429]
    assert responses[1].json() == {"errors": [{"type": "system", "message": "Rate limit exceeded"}]}
    assert responses[1].headers["Retry-After"] == "0.5"
    assert [m["title"] for m in sandbox.milestones()] == ["Milestone 2"]
    sandbox.set_faults(retry_after=2)
    assert [api.get("workspaces").headers.get("Retry-After") for _ in range(2)] == [None, "2"]
    assert sandbox.stats()["429"] == 3


@pytest.mark.parametrize(("status", "message"), [(503, "Service Unavailable"), (500, "Internal Server Error")])
def test_fail_every_answers_every_nth_post_without_writing(
    sandbox: Sandbox, api: Api, status: int, message: str
) -> None:
    sandbox.set_faults(fail_every=2, fail_status=status)
    codes = [api.get("workspaces").status_code, *(api.create(item(n)).status_code for n in range(4))]
    assert codes == [200, 200, status, 200, status]
    assert [m["title"] for m in sandbox.milestones()] == ["Milestone 0", "Milestone 2"]
    assert api.create(item(9)).status_code == 200
    failed = api.create(item(10))
    assert failed.json() == {"errors": [{"type": "system", "message": f"{message} (injected by the sandbox)"}]}
    assert sandbox.stats()[str(status)] == 3


def test_latency_delays_every_answer(sandbox: Sandbox, api: Api) -> None:
    sandbox.set_faults(latency=0.05)
    started = time.perf_counter()
    assert api.get("workspaces").status_code == 200
    assert api.create(item(1)).status_code == 200
    assert time.perf_counter() - started >= 0.1


class _HeldSleeps:
    """The sandbox's `time`, whose sleeps (its latency) last until the test lets them end, each one on record."""

    monotonic = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.over = threading.Event()

    def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        self.over.wait(30)


def test_latency_can_cover_the_work_the_write_happens_at_arrival_and_the_answer_at_latency(
    sandbox: Sandbox, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--latency-covers-work: a server whose response time is the latency, work included (the benchmark's floor
    assumes that); by default the latency comes first and the work after it. The latency's sleep is held until
    the test has looked, so no window of time can be missed on a loaded machine."""
    import importer.sandbox.server

    def asked_to_sleep(held: _HeldSleeps, n: int) -> None:
        deadline = time.monotonic() + 30
        while len(held.asked) < n:
            assert time.monotonic() < deadline, "the sandbox never slept"
            time.sleep(0.005)

    held = _HeldSleeps()
    monkeypatch.setattr(importer.sandbox.server, "time", held)
    sandbox.set_faults(latency=2.0, latency_covers_work=True)
    answer: list[requests.Response] = []
    sender = threading.Thread(target=lambda: answer.append(api.create(item(1))))
    sender.start()
    try:
        asked_to_sleep(held, 1)
        assert sandbox.milestones() and not answer  # written, not answered yet
        assert 1.0 < held.asked[0] < 2.0  # the rest of the latency once the work is done: the answer at latency
    finally:
        held.over.set()
    sender.join()
    assert answer[0].status_code == 200

    held = _HeldSleeps()
    monkeypatch.setattr(importer.sandbox.server, "time", held)
    sandbox.set_faults(latency=2.0, latency_covers_work=False)
    sender = threading.Thread(target=lambda: answer.append(api.create(item(2))))
    sender.start()
    try:
        asked_to_sleep(held, 1)
        assert len(sandbox.milestones()) == 1  # sleeping first: nothing written yet
        assert held.asked == [2.0]
    finally:
        held.over.set()
    sender.join()
    assert answer[1].status_code == 200 and len(sandbox.milestones()) == 2


def test_drop_after_write_commits_then_closes_the_connection(sandbox: Sandbox, api: Api) -> None:
    sandbox.set_faults(drop_after_write_every=2)
    assert api.create(item(1)).status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        api.create(item(2), item(3))
    assert [m["title"] for m in sandbox.milestones()] == ["Milestone 1", "Milestone 2", "Milestone 3"]
    assert api.create(item(4)).status_code == 200  # the session reconnects
    assert sandbox.stats() == {"POST /billing_milestones": 3, "drop_after_write": 1}


def test_drop_then_write_closes_the_connection_and_commits_later(sandbox: Sandbox, api: Api) -> None:
    sandbox.set_faults(drop_then_write_every=2, late_write_after=1.0)
    assert api.create(item(1)).status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        api.create(item(2), item(3))
    assert [m["title"] for m in sandbox.milestones()] == ["Milestone 1"]  # not yet: still "working" on it
    time.sleep(1.5)
    assert [m["title"] for m in sandbox.milestones()] == ["Milestone 1", "Milestone 2", "Milestone 3"]
    assert sandbox.stats() == {"POST /billing_milestones": 2, "drop_then_write": 1}


def test_reset_drops_a_late_write_so_none_lands_in_the_next_tests_data(sandbox: Sandbox, api: Api) -> None:
    sandbox.set_faults(drop_then_write_every=1, late_write_after=0.3)
    with pytest.raises(requests.exceptions.ConnectionError):
        api.create(item(1))
    sandbox.reset()
    time.sleep(0.5)
    assert sandbox.milestones() == []


def test_reject_title_is_a_validation_error_of_that_item(sandbox: Sandbox, api: Api) -> None:
    sandbox.set_faults(reject_title="Reserved")
    response = api.create(item(1), item(2, title="Reserved"))
    assert (response.status_code, response.json()) == (
        422,
        {"errors": [{"type": "validation", "message": "Title is reserved", "field": "title"}]},
    )
    assert sandbox.milestones() == []
    sandbox.set_faults(partial_create=True, error_index=True)
    response = api.create(item(1), item(2, title="Reserved"))
    assert response.json()["errors"] == [
        {"type": "validation", "message": "Title is reserved", "field": "title", "index": 1}
    ]
    assert [m["title"] for m in sandbox.milestones()] == ["Milestone 1"]


def test_paginate_create_off_answers_every_created_milestone(sandbox: Sandbox, api: Api) -> None:
    sandbox.set_faults(paginate_create=False)
    response = api.create(*(item(n) for n in range(30)))
    assert response.json()["meta"] == {"count": 30, "page_count": 1, "page_number": 1, "page_size": 30}
    assert result_ids(response) == [str(i) for i in range(700030, 700000, -1)]


def test_faults_refuse_unknown_switches_and_bad_values(sandbox: Sandbox) -> None:
    with pytest.raises(TypeError):
        sandbox.set_faults(rate_limit=3)
    with pytest.raises(ValueError, match="fail_status"):
        sandbox.set_faults(fail_status=200)
    with pytest.raises(ValueError, match="fail_every"):
        Faults(fail_every=-1)


def test_reset_empties_data_counters_and_faults(sandbox: Sandbox, api: Api) -> None:
    sandbox.set_faults(fail_every=1)
    assert api.create(item(1)).status_code == 503
    sandbox.reset()
    assert (sandbox.milestones(), sandbox.stats()) == ([], {})
    assert result_ids(api.create(item(1))) == ["700001"]


def test_concurrent_creates_get_distinct_ids(sandbox: Sandbox) -> None:
    def worker(n: int) -> None:
        with requests.Session() as session:
            for batch in range(5):
                body = {"billing_milestones": [item(n * 100 + batch * 10 + i) for i in range(10)]}
                session.post(f"{sandbox.url}/billing_milestones", json=body, timeout=5,
                             headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}).raise_for_status()  # fmt: skip

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = sandbox.milestones()
    assert [m["id"] for m in stored] == list(range(700001, 700301))
    assert len({m["title"] for m in stored}) == 300
    assert sandbox.stats() == {"POST /billing_milestones": 30}


# --- persistence and command line ---------------------------------------------------------------------------------


def test_a_file_database_survives_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "sandbox.sqlite")
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    with Sandbox(db=db) as first:
        created = requests.post(f"{first.url}/billing_milestones", json={"billing_milestone": item(1)},
                                headers=headers, timeout=5)  # fmt: skip
        assert result_ids(created) == ["700001"]
    with Sandbox(db=db) as second:
        assert result_ids(requests.get(f"{second.url}/billing_milestones", headers=headers, timeout=5)) == ["700001"]
        assert requests.get(f"{second.url}/workspaces", headers=headers, timeout=5).json()["count"] == 5
        again = requests.post(f"{second.url}/billing_milestones", json={"billing_milestone": item(2)},
                              headers=headers, timeout=5)  # fmt: skip
        assert result_ids(again) == ["700002"]
        assert [m["title"] for m in second.milestones()] == ["Milestone 1", "Milestone 2"]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_refuses_a_host_that_is_not_loopback(capsys: pytest.CaptureFixture[str], host: str) -> None:
    parser = argparse.ArgumentParser(prog="sandbox")
    add_arguments(parser)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--host", host])
    assert exit_info.value.code == 2
    assert f"argument --host: {host!r} is not a loopback address" in capsys.readouterr().err
    with pytest.raises(ValueError, match="loopback only"):
        Sandbox(host=host)


def test_flags_become_faults() -> None:
    parser = argparse.ArgumentParser(prog="sandbox")
    add_arguments(parser)
    assert faults_from_args(parser.parse_args([])) == Faults()
    args = parser.parse_args(["--host", "::1", "--port", "0", "--db", "x.sqlite", "--rate-limit-every", "5",
                              "--retry-after", "0.25", "--fail-every", "7", "--fail-status", "502", "--latency", "0.1",
                              "--latency-covers-work",
                              "--drop-after-write-every", "3", "--drop-then-write-every", "4",
                              "--late-write-after", "0.25", "--reject-title", "Nope", "--partial-create",
                              "--error-index", "--no-paginate-create", "--no-financial-access"])  # fmt: skip
    assert (args.host, args.port, args.db) == ("::1", 0, "x.sqlite")
    assert faults_from_args(args) == Faults(rate_limit_every=5, retry_after=0.25, fail_every=7, fail_status=502,
                                            latency=0.1, latency_covers_work=True, drop_after_write_every=3,
                                            drop_then_write_every=4, late_write_after=0.25,
                                            reject_title="Nope",
                                            partial_create=True, error_index=True, paginate_create=False,
                                            no_financial_access=True)  # fmt: skip


def test_serve_prints_its_url_answers_and_stops_on_ctrl_c() -> None:
    code = "from importer.sandbox.server import serve; serve(port=0)"
    with subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            found = re.fullmatch(r"sandbox: Kantata OX look-alike at (http://127\.0\.0\.1:\d+/api/v1), token "
                                 r"'sandbox-token' \(Ctrl-C stops it\)\n", line)  # fmt: skip
            assert found is not None, line
            answer = requests.get(f"{found[1]}/workspaces", headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
                                  timeout=5)  # fmt: skip
            assert answer.json()["count"] == 5
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=5) == 0
            assert process.stderr.read() == "sandbox: stopped\n"
        finally:
            process.kill()


def test_the_sandbox_command_on_a_port_in_use_or_an_unusable_db_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port in use or a --db that cannot be opened is the user's to fix: exit 2 and a message, not exit 70
    with an internal error's traceback."""
    import socket

    from importer.cli.main import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["sandbox", "--port", str(port)]) == 2
    assert "the sandbox cannot listen on 127.0.0.1:" in capsys.readouterr().err
    assert main(["sandbox", "--port", "0", "--db", str(tmp_path / "no" / "such" / "folder.db")]) == 2
    assert "the sandbox cannot use --db" in capsys.readouterr().err


def test_the_face_gives_each_name_from_its_module_without_importing_the_server_first() -> None:
    """Importing the package must stay cheap (the face is lazy), and each name it lists must resolve, to the
    object of the module that now holds it."""
    code = (
        "import importlib, sys, importer.sandbox as face\n"
        "assert 'importer.sandbox.server' not in sys.modules, 'the face imported the server eagerly'\n"
        "homes = {'faults': ['Faults', 'faults_from_args'],\n"
        "         'server': ['DEFAULT_TOKEN', 'Sandbox', 'add_arguments', 'serve'],\n"
        "         'store': ['SEED_STORIES', 'SEED_WORKSPACES', 'Story', 'Workspace']}\n"
        "for home, names in homes.items():\n"
        "    module = importlib.import_module('importer.sandbox.' + home)\n"
        "    for name in names:\n"
        "        value = getattr(face, name)\n"
        "        assert value is getattr(module, name), name\n"
        "assert sorted(face.__all__) == sorted(n for names in homes.values() for n in names)\n"
        "assert set(face.__all__) <= set(dir(face))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
