"""Two uploads of one schedule at once, sharing nothing but Kantata (two machines): one milestone per row, and
both results name it."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from importer.delivery.converge import converge
from importer.kantata.client import KantataClient
from importer.kantata.keys import build_items
from importer.outcomes import Status
from importer.pipeline import RunResult, run_upload
from importer.sandbox.server import DEFAULT_TOKEN
from importer.schedule.cells import DEFAULT_OPTIONS
from importer.schedule.loader import load_schedule
from importer.schedule.schema import validate_rows
from importer.settings import Secret, Settings


def _schedule(path: Path, rows: int) -> Path:
    path.write_text(
        "title,amount_in_cents,workspace_id\n" + "".join(f"R{n},{n + 1},{1001 + n % 3}\n" for n in range(rows))
    )
    return path


def _settings(sandbox: Any, state: Path, **changes: Any) -> Settings:
    return Settings(**{"base_url": sandbox.url, "token": Secret(DEFAULT_TOKEN), "state_dir": state, **changes})


def _one_per_row(sandbox: Any, rows: int) -> dict[str, str]:
    """title -> id of the one milestone Kantata holds for it (fails on a copy or a missing row)."""
    held = Counter(str(m["title"]) for m in sandbox.milestones())
    assert sorted(held.values()) == [1] * rows, [t for t, n in held.items() if n > 1][:5]
    return {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}


def _ids(result: RunResult) -> dict[str, str]:
    """title -> the id the result names, for every row (the schedule's row n is Excel row n + 2)."""
    assert result.stopped is None and len(result.outcomes) == result.rows
    assert {o.status for o in result.outcomes.values()} <= {Status.CREATED, Status.UNCHANGED}
    return {f"R{row - 2}": str(o.milestone_id) for row, o in result.outcomes.items()}


def test_an_upload_that_finishes_while_another_is_sending_ends_with_one_milestone_per_row(
    sandbox: Any, tmp_path: Path
) -> None:
    """Run B is sending when run A, on another machine, uploads the whole schedule: A finds B's first batches and
    creates the rest. B looks each of its later batches up right before it leaves, finds A's rows and does not
    send them; a batch that was already on its way when A wrote is a copy, found after creating and deleted."""
    rows = 1000
    path = _schedule(tmp_path / "s.csv", rows)
    other: list[RunResult] = []

    def the_other_machine(_: object) -> None:
        if not other:
            other.append(run_upload(path, _settings(sandbox, tmp_path / "a"), output=tmp_path / "a.xlsx"))

    mine = run_upload(
        path, _settings(sandbox, tmp_path / "b"), output=tmp_path / "b.xlsx", on_outcomes=the_other_machine
    )
    kept = _one_per_row(sandbox, rows)
    assert _ids(other[0]) == kept and _ids(mine) == kept
    found = [o for o in mine.outcomes.values() if o.errors and "while this one was sending" in o.errors[0]]
    assert found, "the other upload created rows before this one sent them: they were looked up, not sent"
    assert all(o.status is Status.UNCHANGED and o.milestone_id == kept[f"R{o.row - 2}"] for o in found)
    deleted = [o for r in (mine, other[0]) for o in r.outcomes.values() if o.errors and "was deleted" in o.errors[0]]
    assert sandbox.stats().get("DELETE /billing_milestones/{id}", 0) == len(deleted)


@pytest.mark.parametrize(("attempt", "lost_every"), [(0, 0), (1, 0), (2, 0), (0, 3)])
def test_two_uploads_started_together_agree_on_one_milestone_per_row(
    sandbox: Any, tmp_path: Path, attempt: int, lost_every: int
) -> None:
    """Free-running threads, a small latency so their batches interleave, separate state folders and two spellings
    of the URL (two machines): whichever way they race, each row is held once and both results name the one kept,
    also when answers to creates are lost (`lost_every`). `python -m benchmarks.race` runs the same race many times
    on 3,000 rows."""
    rows = 600
    sandbox.set_faults(latency=0.002 * (attempt + 1), drop_after_write_every=lost_every)
    path = _schedule(tmp_path / "s.csv", rows)
    start = threading.Barrier(2)
    results: dict[str, RunResult] = {}
    failures: list[BaseException] = []

    def upload(name: str) -> None:
        try:
            start.wait()
            if name == "b":  # in part or whole: the second starts 0, 0.1 or 0.2 s after the first
                time.sleep(0.1 * attempt)
            url = sandbox.url if name == "a" else sandbox.url.replace("127.0.0.1", "localhost") + "/"
            settings = _settings(sandbox, tmp_path / name, concurrency=2 + attempt, base_url=url)
            results[name] = run_upload(path, settings, output=tmp_path / f"{name}.xlsx")
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=upload, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    kept = _one_per_row(sandbox, rows)
    assert _ids(results["a"]) == kept and _ids(results["b"]) == kept


class _DeletesBetweenPages(KantataClient):
    """A client whose first read of a look-up is followed, before its next request, by `then` (the other upload
    deleting its copies while this one reads)."""

    then: Callable[[], None] | None = None

    def get(self, path: str, params: Mapping[str, str | int], *, stop: threading.Event | None = None) -> dict[str, Any]:
        data = super().get(path, params, stop=stop)
        if self.then is not None and "external_reference_service_model_refs" in params:
            then, self.then = self.then, None
            then()
        return data


def test_copies_deleted_while_the_keys_are_read_hide_no_milestone_from_the_look_up(
    sandbox: Any, tmp_path: Path
) -> None:
    """B created 100 rows, then A all 200, then B the other 100 (two copies a key: more than a page). A's look-up of
    its 200 keys reads its first page, newest first; B then deletes its 100 newer copies, as its own look-up says.
    Read by offset, A's second page would now skip 100 milestones (A's own copies of B's older rows): A would see one
    milestone on those keys and keep its copy beside B's."""
    path = _schedule(tmp_path / "s.csv", 200)
    items, _ = build_items(validate_rows(load_schedule(path), DEFAULT_OPTIONS).rows)
    b = KantataClient(_settings(sandbox, tmp_path / "b"), Secret(DEFAULT_TOKEN))
    a = _DeletesBetweenPages(_settings(sandbox, tmp_path / "a"), Secret(DEFAULT_TOKEN))
    b.create([i.body for i in items[:100]])
    mine = {**a.create([i.body for i in items[:100]]).ids, **a.create([i.body for i in items[100:]]).ids}
    newer = b.create([i.body for i in items[100:]]).ids
    assert min(map(int, newer.values())) > max(map(int, mine.values()))

    def b_deletes_its_newer_copies() -> None:
        for mid in newer.values():
            assert b.remove(mid).done

    a.then = b_deletes_its_newer_copies
    found = converge(a, {i.row: (i, mine[i.key]) for i in items}, every_key=True)
    assert len(found.removed) == 100
    _one_per_row(sandbox, 200)


def test_a_lost_answer_during_a_race_leaves_no_copy_of_this_uploads_own(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another machine creates the rows just before this upload's batch lands, and this batch's answer is lost.
    The look-up that settles it finds two milestones for each key: the other's, older, and this upload's own. Only
    the mark each upload puts in its milestones' external reference tells which is its own; taking the lowest id
    for its own, this upload would keep the other's, delete nothing, and leave its own copy beside it."""
    rows = 5
    path = _schedule(tmp_path / "s.csv", rows)
    create = sandbox._routes["POST /billing_milestones"]
    landed = itertools.count()

    def the_other_machine_first_then_no_answer(ident: Any, query: Any, body: bytes, faults: Any) -> Any:
        if next(landed) > 0:
            return create(ident, query, body, faults)
        theirs = json.loads(body)
        for item in theirs["billing_milestones"]:
            item["external_reference"]["external_message"] = "kantata-import run 0000othermachine"
        create(ident, query, json.dumps(theirs).encode(), faults)
        return create(ident, query, body, dataclasses.replace(faults, drop_after_write_every=1))

    monkeypatch.setitem(sandbox._routes, "POST /billing_milestones", the_other_machine_first_then_no_answer)
    result = run_upload(path, _settings(sandbox, tmp_path / "a"), output=tmp_path / "a.xlsx")

    kept = _one_per_row(sandbox, rows)
    assert _ids(result) == kept
    assert sorted(map(int, kept.values())) == list(
        range(min(map(int, kept.values())), min(map(int, kept.values())) + rows)
    )
    assert sandbox.stats().get("DELETE /billing_milestones/{id}", 0) == rows


def test_a_lost_answer_during_a_race_on_rows_that_give_their_own_message_is_a_conflict_naming_both(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such rows carry no mark, so after a lost answer this upload cannot tell its copy from the other's: it says
    so, naming both, rather than take the other's for its own and leave its copy unnamed."""
    path = tmp_path / "s.csv"
    path.write_text("title,amount_in_cents,workspace_id,external_reference.service_name,"
                    "external_reference.service_model,external_reference.service_model_ref,"
                    "external_reference.external_message\n"
                    + "".join(f"R{n},{n + 1},1001,erp,Invoice,INV-{n},from the ERP\n" for n in range(3)))  # fmt: skip
    create = sandbox._routes["POST /billing_milestones"]
    landed = itertools.count()

    def the_other_machine_first_then_no_answer(ident: Any, query: Any, body: bytes, faults: Any) -> Any:
        if next(landed) > 0:
            return create(ident, query, body, faults)
        create(ident, query, body, faults)
        return create(ident, query, body, dataclasses.replace(faults, drop_after_write_every=1))

    monkeypatch.setitem(sandbox._routes, "POST /billing_milestones", the_other_machine_first_then_no_answer)
    result = run_upload(path, _settings(sandbox, tmp_path / "a"), output=tmp_path / "a.xlsx")

    held: dict[str, list[str]] = {}
    for m in sandbox.milestones():
        held.setdefault(str(m["title"]), []).append(str(m["id"]))
    assert sorted(len(ids) for ids in held.values()) == [2, 2, 2]
    for row, outcome in result.outcomes.items():
        assert outcome.status is Status.CONFLICT and outcome.milestone_id is None
        assert ", ".join(held[f"R{row - 2}"]) in outcome.errors[0]


def test_rows_another_machine_sent_after_the_look_up_are_found_as_their_batch_leaves(
    sandbox: Any, tmp_path: Path
) -> None:
    """Between this upload's look-up and its sending, another machine uploads the second half of the schedule,
    a few of those rows with another amount, and someone copies one of its milestones by hand. Each batch's keys
    are looked up right before it leaves: the other's rows are not sent again; those with this schedule's values
    are `unchanged`, the others are updated in place to this schedule's values, and the key held twice is a
    conflict naming both (neither is this upload's to change). No copy is made, so nothing needs deleting."""
    header = "title,amount_in_cents,workspace_id,External service,External type,External ID\n"

    def schedule(path: Path, rows: range, edited: set[int]) -> Path:
        path.write_text(header + "".join(f"R{n},{n + 1 + 1000 * (n in edited)},1001,NetSuite,line,L-{n}\n"
                                         for n in rows))  # fmt: skip
        return path

    mine = schedule(tmp_path / "mine.csv", range(300), set())
    theirs = schedule(tmp_path / "theirs.csv", range(150, 300), {160, 170, 290})
    other: list[RunResult] = []

    def the_other_machine(text: str) -> None:
        if text.startswith("sending") and not other:  # this upload has looked its keys up: all absent
            other.append(run_upload(theirs, _settings(sandbox, tmp_path / "a"), output=tmp_path / "a.xlsx"))
            reference = {"service_name": "NetSuite", "service_model": "line", "service_model_ref": "L-200",
                         "external_message": "copied by hand"}  # fmt: skip
            body = {"title": "R200", "amount_in_cents": 201, "workspace_id": 1001, "external_reference": reference}
            answer = requests.post(f"{sandbox.url}/billing_milestones", json={"billing_milestone": body},
                                   headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}, timeout=5)  # fmt: skip
            assert answer.ok, answer.text

    settings = _settings(sandbox, tmp_path / "b", batch_size=50, concurrency=2)
    result = run_upload(mine, settings, output=tmp_path / "b.xlsx", on_stage=the_other_machine)
    assert other and other[0].counts["created"] == 150
    original, copy = sorted(int(str(m["id"])) for m in sandbox.milestones() if m["title"] == "R200")
    conflict = result.outcomes[202]
    assert conflict.status is Status.CONFLICT and conflict.milestone_id is None
    assert f"is held by 2 milestones ({original}, {copy})" in conflict.errors[0]
    sandbox._store.delete(copy)
    kept = _one_per_row(sandbox, 300)
    assert result.stopped is None
    assert {f"R{row - 2}": o.milestone_id for row, o in result.outcomes.items() if row != 202} == {
        title: mid for title, mid in kept.items() if title != "R200"
    }
    statuses = {row - 2: o.status for row, o in result.outcomes.items()}
    assert statuses == {n: Status.CREATED if n < 150 else Status.UPDATED if n in (160, 170, 290)
                        else Status.CONFLICT if n == 200 else Status.UNCHANGED for n in range(300)}  # fmt: skip
    found = [o for o in result.outcomes.values() if o.status in (Status.UNCHANGED, Status.UPDATED)]
    assert all(o.errors and "another upload created this row while this one was sending" in o.errors[0]
               for o in found)  # fmt: skip
    assert {str(m["title"]): int(str(m["amount_in_cents"])) for m in sandbox.milestones()} == {
        f"R{n}": n + 1 for n in range(300)
    }
    stats = sandbox.stats()
    # The other machine's two POSTs (150 rows), the copy, and this upload's three (rows 0-149): none for the
    # other half; nothing deleted (the test removed the copy from the sandbox's store itself).
    assert stats["POST /billing_milestones"] == 2 + 1 + 3 and stats.get("DELETE /billing_milestones/{id}", 0) == 0
    assert stats["PUT /billing_milestones/{id}"] == 3
