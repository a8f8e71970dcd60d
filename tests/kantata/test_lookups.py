"""Looking before sending, cheaply: a project where this importer has never created anything needs no look-up."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from importer.kantata.keys import SERVICE_MODEL, SERVICE_NAME
from importer.kantata.milestones import marked, milestones_in
from importer.pipeline import run_upload, run_validate
from importer.sandbox.server import DEFAULT_TOKEN
from importer.settings import Secret, Settings


def _schedule(path: Path, rows: list[tuple[str, int, int]]) -> Path:
    path.write_text("title,amount_in_cents,workspace_id\n" + "".join(f"{t},{a},{w}\n" for t, a, w in rows))
    return path


def _gets(sandbox: Any) -> int:
    return int(sandbox.stats().get("GET /billing_milestones", 0))


def test_a_first_import_costs_a_count_and_a_look_up_per_batch_as_it_leaves(sandbox: Any, tmp_path: Path) -> None:
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    rows = [(f"R{n}", n, 1001 + n % 3) for n in range(450)]
    first = run_upload(_schedule(tmp_path / "a.csv", rows), settings)
    assert first.counts["created"] == 450
    # One count for the three projects before and one after, and each of the five batches' keys right before it
    # left (another machine may have sent it meanwhile); no look-up of all 450 keys at the start.
    assert _gets(sandbox) == 2 + 5

    again = run_upload(_schedule(tmp_path / "a.csv", rows), settings, output=tmp_path / "again.xlsx")
    assert again.counts["unchanged"] == 450 and len(sandbox.milestones()) == 450  # nothing twice
    # the count is not zero now: one listing of this importer's milestones in the three projects, every page of
    # the 450 it holds there, finds every row's key (no look-up by key) and those no row matches (delivery/missing.py)
    assert _gets(sandbox) == 2 + 5 + 1 + 3


def test_rows_of_a_new_project_skip_the_look_up_and_an_old_project_keeps_it(sandbox: Any, tmp_path: Path) -> None:
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    old = [(f"Old {n}", n, 1001) for n in range(10)]
    run_upload(_schedule(tmp_path / "old.csv", old), settings)
    gets = _gets(sandbox)
    new = [(f"New {n}", n, 1002) for n in range(250)]
    result = run_upload(_schedule(tmp_path / "new.csv", new), settings)
    assert result.counts["created"] == 250
    # Project 1002 has nothing of ours: the counts settle it at the start; the three batches are looked up
    # as they leave.
    assert _gets(sandbox) == gets + 2 + 3
    both = run_upload(_schedule(tmp_path / "both.csv", old + new), settings)
    assert both.counts["unchanged"] == 260 and len(sandbox.milestones()) == 260


def test_a_small_schedule_is_looked_up_without_a_count(sandbox: Any, tmp_path: Path) -> None:
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    rows = [(f"R{n}", n, 1001) for n in range(200)]
    run_upload(_schedule(tmp_path / "a.csv", rows), settings)
    # one listing of this importer's milestones in the project before sending (it holds none: every key is
    # settled, and none is there that no row matches), each batch's keys right before it leaves, and one
    # look-up of the 200 keys after it (another upload may have sent them too): counts would cost more
    assert _gets(sandbox) == 1 + 2 + 1


def test_a_users_own_reference_is_always_looked_up(sandbox: Any, tmp_path: Path) -> None:
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    path = tmp_path / "own.csv"
    path.write_text("title,amount_in_cents,workspace_id,External service,External type,External ID\n"
                    "A,1,1003,NetSuite,line,L-1\n")  # fmt: skip
    run_upload(path, settings)
    # its key carries no project: looked up by reference before, as its batch leaves and after, no count; one
    # listing of ours (for the milestones no row matches)
    assert _gets(sandbox) == 4
    again = run_upload(path, settings, output=tmp_path / "again.xlsx")
    assert again.counts["unchanged"] == 1 and len(sandbox.milestones()) == 1


class Recording(requests.Session):
    """A real session that keeps each request's method, path and query (the client sends from several threads)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        params = kwargs.get("params") or {}
        with self._lock:
            self.sent.append((str(method), urlsplit(str(url)).path, {k: str(v) for k, v in dict(params).items()}))
        return super().request(method, url, *args, **kwargs)

    def by_id(self) -> list[set[str]]:
        """The ids of each look-up of milestones by id (`only=`)."""
        return [set(q["only"].split(",")) for m, path, q in self.sent if path.endswith("/billing_milestones")
                and m == "GET" and "only" in q]  # fmt: skip


def test_month_two_with_ids_takes_each_row_from_the_listing_and_looks_up_by_id_only_what_it_lacks(
    sandbox: Any, tmp_path: Path
) -> None:
    """Last month's 300 rows fed back in with their ids: the one listing of this importer's milestones in the
    schedule's projects holds their milestones, so none is looked up by id. Only the ids it lacks are: a milestone
    since deleted, one this importer made in a project the schedule does not name, and one made by hand; the first
    two are conflicts as before, and nothing is created."""
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    rows = [(f"R{n}", 100 + n, 1001 + n % 2) for n in range(300)]
    first = run_upload(_schedule(tmp_path / "one.csv", [*rows, ("Elsewhere", 7, 1003)]), settings)
    assert first.counts["created"] == 301
    ids = {row: o.milestone_id for row, o in first.outcomes.items()}  # rows 2..301, then 302 in project 1003
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    requests.delete(f"{sandbox.url}/billing_milestones/{ids[9]}", headers=headers, timeout=10).raise_for_status()
    by_hand = requests.post(f"{sandbox.url}/billing_milestones", headers=headers, timeout=10, json={
        "billing_milestones": [{"title": "By hand", "amount_in_cents": 5, "workspace_id": 1001}]})  # fmt: skip
    by_hand.raise_for_status()
    hand_id = str(by_hand.json()["results"][0]["id"])
    lines = [f"{t},{a + (1 if n % 50 == 0 else 0)},{w},{ids[n + 2]}\n" for n, (t, a, w) in enumerate(rows)]
    lines += [f"Elsewhere,7,1001,{ids[302]}\n", f"By hand,5,1001,{hand_id}\n"]  # rows 302 and 303
    month_two = tmp_path / "two.csv"
    month_two.write_text("title,amount_in_cents,workspace_id,milestone_id\n" + "".join(lines))
    posts, held = sandbox.stats()["POST /billing_milestones"], len(sandbox.milestones())
    lacking = {ids[9], ids[302], hand_id}

    for dry_run in (True, False):
        session = Recording()
        before = _gets(sandbox)
        if dry_run:
            result = run_validate(month_two, settings=settings, session=session, output=tmp_path / "plan.xlsx")
        else:
            result = run_upload(month_two, settings, session=session, output=tmp_path / "two.xlsx")
        # two pages of the 299 milestones of ours left in projects 1001 and 1002, and one look-up of the three ids
        # the listing does not hold: the 299 rows whose milestone it holds are not looked up again
        assert session.by_id() == [lacking]
        assert _gets(sandbox) - before == 3
        statuses = {row: o.status.value for row, o in result.outcomes.items()}
        assert statuses.pop(9) == statuses.pop(302) == "conflict"
        assert statuses.pop(303) == "unchanged"
        edited = {n + 2 for n in range(0, 300, 50)}
        assert {row for row, status in statuses.items() if status in ("update", "updated")} == edited
        assert set(statuses.values()) == {"unchanged", "update" if dry_run else "updated"}
        assert "not in Kantata" in result.outcomes[9].errors[0]
        assert "belongs to project 1003, not 1001" in result.outcomes[302].errors[0]
    assert sandbox.stats()["POST /billing_milestones"] == posts and len(sandbox.milestones()) == held


class WritingMeanwhile(Recording):
    """As another upload would: a milestone of this importer created in project 1001 just before the listing's
    second page is asked for."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        params = kwargs.get("params") or {}
        if params.get("page") == 2 and "workspace_ids" in params and not self.sent_meanwhile():
            reference = {"service_name": SERVICE_NAME, "service_model": SERVICE_MODEL, "service_model_ref": "ki1-other"}
            body = {"title": "Meanwhile", "amount_in_cents": 1, "workspace_id": 1001, "external_reference": reference}
            listing = urlsplit(str(url))._replace(query="").geturl()
            headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
            requests.post(listing, json={"billing_milestones": [body]}, headers=headers, timeout=10).raise_for_status()
            with self._lock:
                self.sent.append(("POST", "meanwhile", {}))
        return super().request(method, url, *args, **kwargs)

    def sent_meanwhile(self) -> bool:
        with self._lock:
            return any(path == "meanwhile" for _, path, _ in self.sent)


def test_a_listing_that_changed_while_its_pages_were_read_is_not_trusted_to_say_a_key_is_absent(
    sandbox: Any, tmp_path: Path
) -> None:
    """A page whose count is not the first page's means the pages shifted under the listing (a milestone was
    created or deleted meanwhile), so one may have been missed: the rows' keys are then looked up by key, and
    nothing is created twice."""
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    rows = [(f"R{n}", n, 1001) for n in range(450)]
    assert run_upload(_schedule(tmp_path / "a.csv", rows), settings).counts["created"] == 450
    session = WritingMeanwhile()
    again = run_upload(_schedule(tmp_path / "a.csv", rows), settings, output=tmp_path / "again.xlsx", session=session)
    assert session.sent_meanwhile()
    assert again.counts["unchanged"] == 450 and len(sandbox.milestones()) == 451
    by_key = [q for _, _, q in session.sent if "external_reference_service_model_refs" in q]
    assert len(by_key) == 3  # the 450 keys, 200 a look-up


def test_an_upload_marks_what_it_creates_unless_the_row_gives_its_own_message() -> None:
    derived = {"title": "A", "external_reference": {"service_name": "kantata-import", "service_model_ref": "ki1-x"}}
    own = {"title": "B", "external_reference": {"service_name": "erp", "external_message": "from the ERP"}}
    assert marked(derived, "abc")["external_reference"]["external_message"] == "kantata-import run abc"
    assert "external_message" not in derived["external_reference"]  # the row's body is not changed in place
    assert marked(own, "abc") == own
    answer = {
        "results": [{"key": "billing_milestones", "id": "7"}],
        "billing_milestones": {"7": {"id": "7", "workspace_id": 1, "external_reference_ids": ["9"]}},
        "external_references": {"9": {"service_name": "kantata-import", "service_model": "BillingMilestone",
                                      "service_model_ref": "ki1-x", "external_message": "kantata-import run abc"}},
    }  # fmt: skip
    assert [m.runs for m in milestones_in(answer)] == [frozenset({"abc"})]
