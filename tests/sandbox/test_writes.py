"""The sandbox's PUT and DELETE over real HTTP: Kantata's rules for changing a milestone, invoiced ones refused."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from importer.sandbox import DEFAULT_TOKEN, Faults, Sandbox, add_arguments, faults_from_args

INVOICED_ERROR = {"errors": [{"type": "validation", "field": "base",
                              "message": "Billing milestone 700001 has been invoiced and can no longer be changed "
                                         "or deleted"}]}  # fmt: skip


class Api:
    """A requests.Session with the sandbox's token and nothing else of the importer's client."""

    def __init__(self, session: requests.Session, url: str) -> None:
        self.session, self.url = session, url

    def create(self, *items: dict[str, Any]) -> list[str]:
        response = self.session.post(f"{self.url}/billing_milestones", json={"billing_milestones": list(items)},
                                     params={"per_page": 200}, timeout=5)  # fmt: skip
        assert response.status_code == 200, response.text
        return sorted(entry["id"] for entry in response.json()["results"])

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(f"{self.url}/{path}", params=params, timeout=5)

    def put(self, ident: str, changes: Any, path: str = "billing_milestones/{}", **params: Any) -> requests.Response:
        body = {"billing_milestone": changes}
        return self.session.put(f"{self.url}/{path.format(ident)}", json=body, params=params, timeout=5)

    def delete(self, ident: str, path: str = "billing_milestones/{}") -> requests.Response:
        return self.session.delete(f"{self.url}/{path.format(ident)}", timeout=5)


def item(n: int, **changes: Any) -> dict[str, Any]:
    reference = {"service_name": "kantata-import", "service_model": "schedule-row", "service_model_ref": f"key-{n}"}
    return {"title": f"Milestone {n}", "amount_in_cents": 10000 + n, "workspace_id": 1001,
            "date_to_invoice": "2026-03-31", "external_reference": reference} | changes  # fmt: skip


def by_key(api: Api, key: str) -> list[str]:
    found = api.get("billing_milestones", external_reference_service_model_refs=key).json()
    return [entry["id"] for entry in found["results"]]


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[Api]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {DEFAULT_TOKEN}"
        yield Api(session, sandbox.url)


# --- PUT ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["billing_milestones/{}", "billing_milestones/{}.json"])
def test_put_changes_the_given_fields_and_answers_in_the_standard_format(sandbox: Sandbox, api: Api, path: str) -> None:
    [ident] = api.create(item(1))
    before = api.get(f"billing_milestones/{ident}").json()["billing_milestones"][ident]
    changes = {"title": "Renamed", "amount_in_cents": -250, "date_to_invoice": "2026-05-01",
               "billing_type": "upon_completion", "story_id": 5002}  # fmt: skip
    response = api.put(ident, changes, path, include="external_references")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["count"], body["meta"], body["results"]) == (
        1, {"count": 1, "page_count": 1, "page_number": 1, "page_size": 20},
        [{"key": "billing_milestones", "id": ident}])  # fmt: skip
    after = body["billing_milestones"][ident]
    assert after == before | changes | {"story_id": "5002", "updated_at": after["updated_at"],
                                        "external_reference_ids": ["900001"]}  # fmt: skip
    assert after["updated_at"] > before["updated_at"]
    assert list(body["external_references"]) == ["900001"]
    assert body["external_references"]["900001"]["service_model_ref"] == "key-1"
    shown = api.get(f"billing_milestones/{ident}", include="external_references").json()
    assert shown["billing_milestones"][ident] == after
    assert "external_references" not in api.put(ident, {"title": "Again"}).json()


@pytest.mark.parametrize(("changes", "error"), [
    ({"title": ""}, ("title", "Title can't be blank")),
    ({"title": None}, ("title", "Title can't be blank")),
    ({"amount_in_cents": "12"}, ("amount_in_cents", "Amount in cents is not a number")),
    ({"amount_in_cents": 12.0}, ("amount_in_cents", "Amount in cents must be an integer")),
    ({"amount_in_cents": None}, ("amount_in_cents", "Amount in cents can't be blank")),
    ({"date_to_invoice": "2026-02-30"}, ("date_to_invoice", "Date to invoice is not a valid date")),
    ({"billing_type": "monthly"}, ("billing_type", "Billing type is not included in the list")),
    ({"billing_type": "upon_completion"}, ("story_id", "Story can't be blank")),
    ({"story_id": 5004}, ("story_id", "Story must belong to the billing milestone's workspace")),
    ({"story_id": 5099}, ("story_id", "Story not found")),
    ({"workspace_id": 1002}, ("workspace_id", "Workspace cannot be changed")),
    ({"workspace_id": "1001"}, ("workspace_id", "Workspace cannot be changed")),
    ({"workspace_id": None}, ("workspace_id", "Workspace cannot be changed")),
])  # fmt: skip
def test_put_refuses_what_a_create_would_and_changes_nothing(
    sandbox: Sandbox, api: Api, changes: dict[str, Any], error: tuple[str, str]
) -> None:
    [ident] = api.create(item(1))
    before = sandbox.milestones()
    response = api.put(ident, {"title": "Would be renamed", **changes})
    field, message = error
    assert (response.status_code, response.json()) == (
        422, {"errors": [{"type": "validation", "message": message, "field": field}]})  # fmt: skip
    assert sandbox.milestones() == before


def test_put_accepts_the_milestones_own_workspace_and_ignores_external_reference_and_unknown_fields(
    sandbox: Sandbox, api: Api
) -> None:
    [ident] = api.create(item(1))
    changed = {
        "workspace_id": 1001,
        "title": "Renamed",
        "currency": "EUR",
        "invoice_id": 5,
        "colour": "red",
        "external_reference": {"service_name": "x", "service_model": "y", "service_model_ref": "other"},
    }
    response = api.put(ident, changed)
    assert response.status_code == 200, response.text
    [stored] = sandbox.milestones()
    assert (stored["title"], stored["currency"], stored["invoice_id"], stored["workspace_id"]) == (
        "Renamed", "USD", None, 1001)  # fmt: skip
    assert (by_key(api, "key-1"), by_key(api, "other")) == ([ident], [])


def test_put_can_clear_the_date_and_the_story_of_a_fixed_date_milestone(sandbox: Sandbox, api: Api) -> None:
    [ident] = api.create(item(1, story_id=5001))
    response = api.put(ident, {"date_to_invoice": None, "story_id": None})
    assert response.status_code == 200, response.text
    shown = response.json()["billing_milestones"][ident]
    assert (shown["date_to_invoice"], shown["story_id"], shown["title"]) == (None, None, "Milestone 1")


def test_put_that_changes_nothing_leaves_updated_at_and_a_change_moves_it_within_the_second(
    sandbox: Sandbox, api: Api
) -> None:
    """As a Rails model saves: no change, no new timestamp; a change shows in updated_at even within a second."""
    [ident] = api.create(item(1))
    [created] = sandbox.milestones()
    same = api.put(ident, {"title": "Milestone 1", "amount_in_cents": 10001})
    assert (same.status_code, sandbox.milestones()) == (200, [created])
    for title in ("Once", "Twice"):
        previous = sandbox.milestones()[0]["updated_at"]
        assert api.put(ident, {"title": title}).status_code == 200
        now = sandbox.milestones()[0]["updated_at"]
        assert isinstance(now, str) and isinstance(previous, str)
        assert dt.datetime.fromisoformat(now) > dt.datetime.fromisoformat(previous)


@pytest.mark.parametrize("data", [b"{not json", b"[]", b'{"billing_milestones": [{"title": "x"}]}',
                                  b'{"billing_milestone": "x"}'])  # fmt: skip
def test_put_answers_a_malformed_body_with_400(sandbox: Sandbox, api: Api, data: bytes) -> None:
    [ident] = api.create(item(1))
    before = sandbox.milestones()
    response = api.session.put(f"{sandbox.url}/billing_milestones/{ident}", data=data, timeout=5,
                               headers={"Content-Type": "application/json"})  # fmt: skip
    assert (response.status_code, response.json()["errors"][0]["type"]) == (400, "system")
    assert sandbox.milestones() == before


@pytest.mark.parametrize("method", ["PUT", "DELETE", "GET"])
def test_a_milestone_that_does_not_exist_is_404_in_kantatas_format(sandbox: Sandbox, api: Api, method: str) -> None:
    api.create(item(1))
    response = api.session.request(method, f"{sandbox.url}/billing_milestones/700002",
                                   json={"billing_milestone": {"title": "x"}}, timeout=5)  # fmt: skip
    assert (response.status_code, response.json()) == (
        404, {"errors": [{"type": "system", "message": "Billing milestone 700002 not found"}]})  # fmt: skip
    assert [m["title"] for m in sandbox.milestones()] == ["Milestone 1"]


# --- DELETE -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["billing_milestones/{}", "billing_milestones/{}.json"])
def test_delete_answers_204_and_takes_the_external_reference_with_it(sandbox: Sandbox, api: Api, path: str) -> None:
    first, second = api.create(item(1), item(2))
    response = api.delete(first, path)
    assert (response.status_code, response.content, "Content-Length" in response.headers) == (204, b"", False)
    assert (by_key(api, "key-1"), by_key(api, "key-2")) == ([], [second])
    assert api.get("billing_milestones", only=f"{first},{second}").json()["results"] == [
        {"key": "billing_milestones", "id": second}]  # fmt: skip
    assert [(m["id"], m["external_reference.service_model_ref"]) for m in sandbox.milestones()] == [
        (int(second), "key-2")]  # fmt: skip
    assert api.delete(first, path).status_code == 404


# --- invoiced milestones ------------------------------------------------------------------------------------------


def test_an_invoiced_milestone_shows_its_invoice_and_refuses_put_and_delete_untouched(
    sandbox: Sandbox, api: Api
) -> None:
    first, second = api.create(item(1), item(2))
    sandbox.invoice([int(first)], invoice_id=812345)
    shown = api.get("billing_milestones", only=f"{first},{second}").json()["billing_milestones"]
    assert (shown[first]["invoice_id"], shown[second]["invoice_id"]) == ("812345", None)
    before = sandbox.milestones()
    for response in (api.put(first, {"title": "Renamed", "amount_in_cents": 1}),
                     api.put(first, {"title": ""}),  # invoiced comes before any field is looked at
                     api.delete(first)):  # fmt: skip
        assert (response.status_code, response.json()) == (422, INVOICED_ERROR)
    assert sandbox.milestones() == before
    assert by_key(api, "key-1") == [first]
    assert api.put(second, {"title": "Renamed"}).status_code == 200  # the one not invoiced still changes
    assert api.delete(second).status_code == 204


def test_invoice_marks_all_or_none(sandbox: Sandbox, api: Api) -> None:
    [ident] = api.create(item(1))
    with pytest.raises(KeyError, match="700002"):
        sandbox.invoice([int(ident), 700002])
    assert sandbox.milestones()[0]["invoice_id"] is None
    sandbox.invoice([int(ident)])
    assert sandbox.milestones()[0]["invoice_id"] == 800001


def test_milestones_named_invoiced_at_start_are_invoiced_once_they_exist(tmp_path: Path) -> None:
    db = str(tmp_path / "sandbox.sqlite")
    with Sandbox(db=db) as first, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {DEFAULT_TOKEN}"
        assert Api(session, first.url).create(item(1), item(2)) == ["700001", "700002"]
    with Sandbox(db=db, invoiced=[700001, 700004]) as second, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {DEFAULT_TOKEN}"
        api = Api(session, second.url)
        assert api.put("700001", {"title": "x"}).json() == INVOICED_ERROR  # in the file at start
        created = session.post(f"{second.url}/billing_milestones", timeout=5,
                               json={"billing_milestones": [item(3), item(4)]}).json()  # fmt: skip
        assert {m["invoice_id"] for m in created["billing_milestones"].values()} == {None}  # as created
        assert [m["invoice_id"] for m in second.milestones()] == [800001, None, None, 800001]
        assert api.delete("700004").status_code == 422
        assert api.delete("700003").status_code == 204
        second.reset()  # the ids still name invoiced milestones when a create makes them again
        api.create(*(item(n) for n in range(4)))
        assert [m["invoice_id"] for m in second.milestones()] == [800001, None, None, 800001]


def test_the_sandbox_command_takes_invoiced_ids(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="sandbox")
    add_arguments(parser)
    assert parser.parse_args([]).invoiced == ()
    assert parser.parse_args(["--invoiced", "700001, 700003"]).invoiced == (700001, 700003)
    with pytest.raises(SystemExit):
        parser.parse_args(["--invoiced", "700001,x"])
    assert "argument --invoiced: '700001,x' is not a comma list of milestone ids" in capsys.readouterr().err
    assert "--invoiced IDS" in parser.format_help()


# --- faults -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 504])
def test_fail_put_every_answers_every_nth_put_without_changing_anything(
    sandbox: Sandbox, api: Api, status: int
) -> None:
    [ident] = api.create(item(1))
    sandbox.set_faults(fail_put_every=2, fail_status=status)
    assert api.put(ident, {"title": "One"}).status_code == 200
    before = sandbox.milestones()
    failed = api.put(ident, {"title": "Two"})
    assert (failed.status_code, failed.json()["errors"][0]["type"]) == (status, "system")
    assert sandbox.milestones() == before
    assert api.put(ident, {"title": "Three"}).status_code == 200
    assert api.create(item(2)) == ["700002"]  # creates and deletes are not counted
    assert api.delete("700002").status_code == 204
    assert sandbox.stats()[str(status)] == 1


def test_fail_delete_every_answers_every_nth_delete_without_deleting(sandbox: Sandbox, api: Api) -> None:
    first, second = api.create(item(1), item(2))
    sandbox.set_faults(fail_delete_every=2, fail_status=502)
    assert api.delete(first).status_code == 204
    assert api.delete(second).status_code == 502
    assert [m["id"] for m in sandbox.milestones()] == [int(second)]
    assert api.put(second, {"title": "Still here"}).status_code == 200


def test_fail_every_still_fails_only_posts(sandbox: Sandbox, api: Api) -> None:
    sandbox.set_faults(fail_every=1)
    assert sandbox.milestones() == []
    assert api.session.post(f"{sandbox.url}/billing_milestones", json={"billing_milestone": item(1)},
                            timeout=5).status_code == 503  # fmt: skip
    sandbox.set_faults(fail_every=0)
    [ident] = api.create(item(1))
    sandbox.set_faults(fail_every=1)
    assert api.put(ident, {"title": "Renamed"}).status_code == 200
    assert api.delete(ident).status_code == 204


def test_a_rate_limited_put_is_429_with_retry_after_and_changes_nothing(sandbox: Sandbox, api: Api) -> None:
    [ident] = api.create(item(1))
    sandbox.set_faults(rate_limit_every=1, retry_after=2)
    before = sandbox.milestones()
    for response in (api.put(ident, {"title": "Renamed"}), api.delete(ident)):
        assert (response.status_code, response.headers["Retry-After"]) == (429, "2")
    assert sandbox.milestones() == before


def test_drop_after_put_changes_the_milestone_then_closes_the_connection(sandbox: Sandbox, api: Api) -> None:
    [ident] = api.create(item(1))
    sandbox.set_faults(drop_after_put_every=2)
    assert api.put(ident, {"title": "One"}).status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        api.put(ident, {"title": "Two", "amount_in_cents": 2})
    assert [(m["title"], m["amount_in_cents"]) for m in sandbox.milestones()] == [("Two", 2)]
    assert api.put(ident, {"title": ""}).status_code == 422  # a refused PUT changed nothing: not counted
    assert api.put(ident, {"title": "Three"}).status_code == 200
    assert sandbox.stats()["drop_after_put"] == 1


def test_drop_after_delete_deletes_then_closes_the_connection(sandbox: Sandbox, api: Api) -> None:
    first, second = api.create(item(1), item(2))
    sandbox.set_faults(drop_after_delete_every=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        api.delete(first)
    assert ([m["id"] for m in sandbox.milestones()], by_key(api, "key-1")) == ([int(second)], [])
    assert api.delete(first).status_code == 404  # a miss is answered: nothing was deleted
    assert sandbox.stats()["drop_after_delete"] == 1


def test_latency_delays_a_put(sandbox: Sandbox, api: Api) -> None:
    [ident] = api.create(item(1))
    sandbox.set_faults(latency=0.3)
    started = time.monotonic()
    assert api.put(ident, {"title": "Slow"}).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_write_fault_flags_become_faults() -> None:
    parser = argparse.ArgumentParser(prog="sandbox")
    add_arguments(parser)
    args = parser.parse_args(["--fail-put-every", "2", "--drop-after-put-every", "3", "--fail-delete-every", "4",
                              "--drop-after-delete-every", "5"])  # fmt: skip
    assert faults_from_args(args) == Faults(fail_put_every=2, drop_after_put_every=3, fail_delete_every=4,
                                            drop_after_delete_every=5)  # fmt: skip
    with pytest.raises(ValueError, match="drop_after_put_every"):
        Faults(drop_after_put_every=-1)


def test_delete_leaves_no_external_reference_behind_in_the_database(tmp_path: Path) -> None:
    """Over HTTP an orphaned reference is invisible (ids are never reused), so read the file the sandbox keeps."""
    import contextlib
    import sqlite3

    db = tmp_path / "sandbox.sqlite"
    with Sandbox(db=str(db)) as running, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {DEFAULT_TOKEN}"
        api = Api(session, running.url)
        first, _ = api.create(item(1), item(2))
        assert api.delete(first).status_code == 204
    with contextlib.closing(sqlite3.connect(db)) as plain:
        refs = plain.execute("SELECT subject_id, service_model_ref FROM external_references").fetchall()
    assert refs == [(700002, "key-2")]
