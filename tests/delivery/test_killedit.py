"""kill -9 mid-upload, then a row it had sent edited, then the same command: one milestone for that row, updated.

A derived key hashes the row's values, so the edited row has another key than the milestone the killed run made
for it; the re-run finds that milestone through the killed run's journal (delivery/handover.py) and updates it,
and a run after that finds it by its values (planner.already_there). The truth is the sandbox's own database.
Real CLI processes, killed with SIGKILL, against the sandbox on loopback.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from importer.delivery.journal import Earlier, Journal, read_previous
from importer.delivery.ledger import Ledger
from importer.delivery.settle import still_writing
from importer.kantata import Account, ImportKey, build_items
from importer.pipeline import run_upload
from importer.sandbox.server import DEFAULT_TOKEN
from importer.schedule.cells import DEFAULT_OPTIONS
from importer.schedule.loader import load_schedule
from importer.schedule.schema import validate_rows
from importer.settings import Secret, Settings
from tests import forked_cli
from tests.conftest import milestone_id, read_results
from tests.delivery.test_faults import _cli, _schedule

ROWS = 30  # three requests of 10


def _held_after(sandbox: Any, monkeypatch: pytest.MonkeyPatch, free: int) -> threading.Event:
    """The sandbox writes the first `free` creates at once; the rest wait (at most a minute) for the event."""
    released = threading.Event()
    create = sandbox._routes["POST /billing_milestones"]
    seen = Counter[str]()

    def held(*args: Any) -> Any:
        seen["n"] += 1
        if seen["n"] > free:
            released.wait(60)
        return create(*args)

    monkeypatch.setitem(sandbox._routes, "POST /billing_milestones", held)
    return released


def _journal(tmp_path: Path) -> Path:
    return tmp_path / ".schedule.results.xlsx.journal.jsonl"


def _entries(tmp_path: Path) -> list[dict[str, Any]]:
    text = _journal(tmp_path).read_text() if _journal(tmp_path).exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def _kill_when(sandbox: Any, tmp_path: Path, ready: Any) -> None:
    """Start the upload of schedule.csv, one request at a time, and kill -9 it once `ready(journal entries)`
    holds with a request at Kantata."""
    proc = _cli(tmp_path / "schedule.csv", sandbox.url, "--concurrency", "1")
    deadline = time.monotonic() + 60
    while not (ready(_entries(tmp_path)) and sandbox.in_flight >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.kill()
    proc.communicate(timeout=60)


def _edit(tmp_path: Path, row: int) -> str:
    """The spreadsheet row `row` retitled and repriced, so that its derived key changes; its old title."""
    path, n = tmp_path / "schedule.csv", row - 2
    path.write_text(path.read_text().replace(f"Row {n},{100 + n},", f"Row {n} edited,555,", 1))
    return f"Row {n}"


def _first(lines: list[dict[str, Any]], kind: str) -> int | None:
    """The first row of the first line of `kind` (which batch goes first is up to the sending threads)."""
    found = next((e for e in lines if e.get("kind") == kind), None)
    return None if found is None else int(found["row"] if kind == "outcome" else found["rows"][0])


def _by_title(sandbox: Any) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for m in sandbox.milestones():
        found.setdefault(str(m["title"]), []).append(m)
    return found


def _rerun(sandbox: Any, tmp_path: Path, on_line: Any = None) -> str:
    proc = _cli(tmp_path / "schedule.csv", sandbox.url, "--concurrency", "1")
    said: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        said.append(line)
        if on_line is not None:
            on_line(line)
    proc.communicate(timeout=60)
    err = "".join(said)
    assert proc.returncode == 0, err
    return err


def _validate(sandbox: Any, tmp_path: Path) -> Any:
    """`validate --online --json` of schedule.csv, as its own process, with the killed run's settings."""
    env = {**os.environ, "KANTATA_BASE_URL": sandbox.url, "KANTATA_API_TOKEN": DEFAULT_TOKEN}
    config = tmp_path / "test-config.toml"  # written by _cli
    done = forked_cli.run(["validate", str(tmp_path / "schedule.csv"), "--online", "--json", "--config", str(config)],
                          env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def _result(tmp_path: Path, row: int) -> dict[str, Any]:
    results = read_results(tmp_path / "schedule.results.xlsx", sheet="Schedule")
    assert len(results) == ROWS
    return next(r for r in results if r["_row"] == row)


def _killed_after_a_batch_then_edited(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, dict[str, Any]]:
    """An upload of schedule.csv killed -9 once its first batch is written and its second is on the wire (which
    then lands), and a row of that first batch edited: the row, its old title and the milestone made for it."""
    _schedule(tmp_path, ROWS)
    released = _held_after(sandbox, monkeypatch, free=1)  # the first batch is written; the second waits
    _kill_when(sandbox, tmp_path, lambda lines: _first(lines, "outcome") is not None)
    released.set()  # the second batch, on the wire at the kill, lands now
    while sandbox.in_flight:
        time.sleep(0.01)
    row = _first(_entries(tmp_path), "outcome")
    assert row is not None
    title = _edit(tmp_path, row)
    (original,) = _by_title(sandbox)[title]
    return row, title, original


def test_a_row_created_before_the_kill_then_edited_is_updated_not_created_again(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row, title, original = _killed_after_a_batch_then_edited(sandbox, tmp_path, monkeypatch)
    assert 10 <= len(sandbox.milestones()) < ROWS

    err = _rerun(sandbox, tmp_path)
    assert "created 1 milestones for rows that read otherwise now: 1 rows edited since are updates of them" in err
    titles = _by_title(sandbox)
    assert title not in titles and len(titles[f"{title} edited"]) == 1
    (edited,) = titles[f"{title} edited"]
    assert (edited["id"], edited["amount_in_cents"]) == (original["id"], 555)
    assert len(sandbox.milestones()) == ROWS and {len(m) for m in titles.values()} == {1}
    result = _result(tmp_path, row)
    assert (result["status"], str(result["billing_milestone_id"])) == ("updated", str(original["id"]))
    assert not _journal(tmp_path).exists()

    posts = sandbox.stats().get("POST /billing_milestones", 0)
    puts = sandbox.stats().get("PUT /billing_milestones/{id}", 0)
    _rerun(sandbox, tmp_path)  # the same edited file again: the milestone still carries the old key
    assert len(sandbox.milestones()) == ROWS
    assert sandbox.stats().get("POST /billing_milestones", 0) == posts
    assert sandbox.stats().get("PUT /billing_milestones/{id}", 0) == puts
    result = _result(tmp_path, row)
    assert (result["status"], str(result["billing_milestone_id"])) == ("unchanged", str(original["id"]))


def test_a_row_whose_answer_never_came_then_edited_is_waited_for_and_updated(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed with the edited row's request still at Kantata: the re-run must wait for the killed run's request
    (its key no row carries now), find what it made and update it, not create the edited row beside it."""
    _schedule(tmp_path, ROWS)
    released = _held_after(sandbox, monkeypatch, free=0)
    _kill_when(sandbox, tmp_path, lambda lines: _first(lines, "left") is not None)
    assert sandbox.milestones() == []
    row = _first(_entries(tmp_path), "left")
    assert row is not None
    title = _edit(tmp_path, row)
    # The dry run does not wait for the killed run's request: it says the upload will, and shows a create.
    dry = _validate(sandbox, tmp_path)
    assert "requests may still be written at Kantata for up to" in dry.stderr, dry.stderr
    assert _result(tmp_path, row)["status"] == "valid" and sandbox.milestones() == []

    def release_once_waiting(line: str) -> None:  # the killed run's request is written once the re-run waits
        if "waiting up to" in line:
            released.set()

    try:
        err = _rerun(sandbox, tmp_path, release_once_waiting)
    finally:
        released.set()
    while sandbox.in_flight:
        time.sleep(0.01)
    assert "1 rows edited since are updates of them" in err, err
    titles = _by_title(sandbox)
    assert title not in titles and len(titles[f"{title} edited"]) == 1, sorted(titles)
    (edited,) = titles[f"{title} edited"]
    assert edited["amount_in_cents"] == 555 and len(sandbox.milestones()) == ROWS
    result = _result(tmp_path, row)
    assert (result["status"], str(result["billing_milestone_id"])) == ("updated", str(edited["id"]))


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by its path there, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _statuses(tmp_path: Path) -> dict[int, tuple[str, str | None]]:
    """Each row's status and milestone id in the results workbook."""
    results = read_results(tmp_path / "schedule.results.xlsx", sheet="Schedule")
    assert len(results) == ROWS
    return {r["_row"]: (r["status"], None if r["billing_milestone_id"] is None else str(r["billing_milestone_id"]))
            for r in results}  # fmt: skip


def test_the_dry_run_after_a_kill_and_an_edit_shows_the_plan_the_upload_then_carries_out(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`validate --online` reads the killed run's journal as the upload does, without changing it: the row
    edited since is an update of the milestone the killed run made for it, with that milestone's id, in the plan
    as in the upload; the rows it sent unedited are unchanged in both; the rest are created."""
    row, title, original = _killed_after_a_batch_then_edited(sandbox, tmp_path, monkeypatch)
    sent = {str(m["id"]) for m in sandbox.milestones()} - {str(original["id"])}
    assert len(sent) >= 9  # the rest of the first batch, and the second if it landed

    state = _files(tmp_path / "home")
    journal = _journal(tmp_path).read_bytes()
    writes = {k: n for k, n in sandbox.stats().items() if not k.startswith("GET ")}
    dry = _validate(sandbox, tmp_path)
    assert "1 rows edited since are updates of them" in dry.stderr, dry.stderr
    assert _journal(tmp_path).read_bytes() == journal
    assert _files(tmp_path / "home") == state  # the ledger, the lock and its note
    assert {k: n for k, n in sandbox.stats().items() if not k.startswith("GET ")} == writes
    planned = _statuses(tmp_path)
    assert planned[row] == ("update", str(original["id"]))
    assert {mid for status, mid in planned.values() if status == "unchanged"} == sent
    assert {status for status, _ in planned.values()} == {"update", "unchanged", "valid"}
    dry_counts = json.loads(dry.stdout)["counts"]

    upload = _cli(tmp_path / "schedule.csv", sandbox.url, "--concurrency", "1", "--json")
    out, err = upload.communicate(timeout=60)
    assert upload.returncode == 0 and "1 rows edited since are updates of them" in err, err
    done = _statuses(tmp_path)
    carried = {"update": "updated", "unchanged": "unchanged", "valid": "created"}
    assert {r: (carried[s], mid) for r, (s, mid) in planned.items() if s != "valid"} == {
        r: (s, mid) for r, (s, mid) in done.items() if planned[r][0] != "valid"
    }
    assert {done[r][0] for r, (s, _) in planned.items() if s == "valid"} == {"created"}
    assert done[row] == ("updated", str(original["id"]))
    assert len(sandbox.milestones()) == ROWS
    counts = json.loads(out)["counts"]
    assert (dry_counts["update"], dry_counts["unchanged"], dry_counts["valid"]) == (1, len(sent), ROWS - 1 - len(sent))
    assert (counts["updated"], counts["unchanged"], counts["created"]) == (1, len(sent), ROWS - 1 - len(sent))


def _key(n: int) -> ImportKey:
    return ImportKey.derived_from(f"ki1-{n:024x}")


def test_what_a_journal_of_another_digest_sent_is_carried_to_the_next_until_a_run_finishes(tmp_path: Path) -> None:
    """An edited schedule's run reads the killed run's rows, keys and ids, and writes them into its own journal,
    so a second kill before the handover loses nothing; a journal of the same digest keeps them as well."""
    path = tmp_path / ".r.xlsx.journal.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in [
        {"kind": "start", "v": 3, "digest": "a"},
        {"kind": "sending", "rows": [2, 3], "keys": [_key(2).ref, ["crm", "deal", "7"]], "at": time.time()},
        {"kind": "outcome", "row": 2, "status": "created", "id": "501"},
    ]))  # fmt: skip
    written = path.read_bytes()
    read = read_previous(path, "b")  # what the dry run reads: the same, and the journal left as it was
    assert path.read_bytes() == written and read.sent_before == set()
    crm = ImportKey("crm", "deal", "7")
    nothing = Ledger.read_only(Account.parse("http://127.0.0.1:9/api/v1"), 1.0, tmp_path / "state")
    assert still_writing(read, nothing, [], set(), Settings()) > 0  # the request of row 3, sent just now, unanswered
    assert still_writing(read, nothing, [], {crm}, Settings()) == 0  # found in Kantata: nothing to wait for
    first = Journal.open(path, "b")
    first.close(finished=False)
    assert first.sent_before == set()
    expected = Earlier(((2, _key(2), "501"), (3, ImportKey("crm", "deal", "7"), None)),
                       frozenset({ImportKey("crm", "deal", "7")}), first.earlier[0].last_sent)  # fmt: skip
    assert first.earlier == read.earlier == [expected]
    same = Journal.open(path, "b")  # a resume of the edited run
    same.close(finished=False)
    assert same.earlier == [expected]
    again = Journal.open(path, "c")  # edited once more
    again.close(finished=False)
    assert again.earlier == [expected]
    path.write_text("".join(json.dumps(e) + "\n" for e in [
        {"kind": "start", "v": 2, "digest": "a"},  # a journal of the version before keys: its ids are looked up
        {"kind": "sending", "rows": [2], "at": time.time()},
        {"kind": "outcome", "row": 2, "status": "created", "id": "501"},
    ]))  # fmt: skip
    old = Journal.open(path, "b")
    old.close(finished=True)
    assert [e.sent for e in old.earlier] == [((2, None, "501"),)] and not path.exists()


def test_a_milestone_updated_through_its_id_is_not_created_again_from_the_schedule_without_ids(
    sandbox: Any, tmp_path: Path
) -> None:
    """The results fed back in with an edit update the milestone, whose key stays the one of its old values; the
    schedule edited the same way, without ids, then finds it by its values: unchanged, not a second one."""
    path = _schedule(tmp_path, 3)
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    first = run_upload(path, settings)
    assert first.counts["created"] == 3
    results = tmp_path / "schedule.results.xlsx"
    fed = tmp_path / "fed.csv"
    fed.write_text("title,amount_in_cents,workspace_id,milestone_id\n" + "".join(
        f"{r['title']},{999 if r['_row'] == 2 else r['amount_in_cents']},1001,{r['billing_milestone_id']}\n"
        for r in read_results(results, sheet="Schedule")))  # fmt: skip
    assert run_upload(fed, settings).counts["updated"] == 1
    path.write_text(path.read_text().replace("Row 0,100,", "Row 0,999,"))
    again = run_upload(path, settings)
    assert (again.counts["unchanged"], again.counts["created"]) == (3, 0)
    assert again.not_in_schedule == [] and len(sandbox.milestones()) == 3


def test_a_copy_the_killed_run_made_beside_another_uploads_milestone_is_deleted_by_the_rerun(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed with a batch at Kantata; meanwhile another machine loads the same schedule; then the killed run's
    batch lands beside the other's milestones, and its keys are held twice. The copies carry the mark the killed
    run wrote in its journal, so the re-run knows them for its own: it deletes them and keeps the other's (as
    converge.py would have), rather than report each of those rows a conflict for a person to sort out. The dry
    run before it shows the same."""
    path = _schedule(tmp_path, ROWS)
    create = sandbox._routes["POST /billing_milestones"]
    released = _held_after(sandbox, monkeypatch, free=0)
    _kill_when(sandbox, tmp_path, lambda lines: _first(lines, "left") is not None)
    mark = _entries(tmp_path)[0]["mark"]
    items, _ = build_items(validate_rows(load_schedule(path), DEFAULT_OPTIONS).rows)
    other = create(None, {}, json.dumps({"billing_milestones": [i.body for i in items]}).encode(), sandbox._faults)
    assert other.status == 200 and len(sandbox.milestones()) == ROWS
    theirs = {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}
    released.set()  # the killed run's batch lands now, after the other's
    while sandbox.in_flight:
        time.sleep(0.01)
    copies = {str(m["id"]) for m in sandbox.milestones()} - set(theirs.values())
    assert len(copies) == 10
    assert {m["external_reference.external_message"] for m in sandbox.milestones() if str(m["id"]) in copies} == {
        f"kantata-import run {mark}"}  # fmt: skip

    dry = json.loads(_validate(sandbox, tmp_path).stdout)
    err = _rerun(sandbox, tmp_path)

    assert {str(m["title"]): str(m["id"]) for m in sandbox.milestones()} == theirs, err
    results = read_results(tmp_path / "schedule.results.xlsx", sheet="Schedule")
    deleted = [r for r in results if "this upload's copy" in str(r["errors"])]
    assert len(deleted) == 10 and all("was deleted" in str(r["errors"]) for r in deleted)
    assert {r["status"] for r in deleted} == {"created"} and {r["status"] for r in results} == {"created", "unchanged"}
    assert {r["title"]: milestone_id(r) for r in results} == theirs
    assert dry["counts"]["conflict"] == 0
