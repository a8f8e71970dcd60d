"""A living schedule, through the real CLI against the sandbox on loopback: each row keeps its milestone across
runs, edits are updates in place, and what cannot be applied is a conflict that touches nothing.

Every command is a real `kantata-import` subprocess; what Kantata holds is read from the sandbox itself."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import requests
from openpyxl.utils.cell import column_index_from_string, coordinate_from_string

from importer.errors import ExitCode
from importer.sandbox.server import DEFAULT_TOKEN
from importer.schedule import OUTCOME_COLUMNS
from tests import forked_cli
from tests.conftest import HEADERS, MakeSchedule, good_row, read_results

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ["External service", "External type", "External ID"]
MILESTONE_FIELDS = ("title", "amount_in_cents", "date_to_invoice", "billing_type", "story_id", "workspace_id")


@pytest.fixture
def env(sandbox: Any) -> dict[str, str]:
    """This test's environment (its own HOME, so its own state folder) pointed at the sandbox."""
    return {**os.environ, "KANTATA_BASE_URL": sandbox.url, "KANTATA_API_TOKEN": DEFAULT_TOKEN}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return forked_cli.run([*args, "--non-interactive"], env=env)


def cli_json(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    proc = cli(env, *args, "--json")
    return proc.returncode, json.loads(proc.stdout)


def held(sandbox: Any) -> dict[int, dict[str, Any]]:
    """The sandbox's milestones by id, everything it stores about each."""
    return {int(m["id"]): m for m in sandbox.milestones()}


def statuses(path: Path) -> dict[int, tuple[str, str | None]]:
    """Results workbook: row number -> (status, billing_milestone_id)."""
    return {r["_row"]: (r["status"], r["billing_milestone_id"]) for r in read_results(path)}


def edit(path: Path, out: Path, cells: dict[str, Any], *, append: Sequence[Sequence[Any]] = ()) -> Path:
    """A copy of a workbook with some cells retyped and rows added, as a finance user edits last month's results.
    Cells and rows are given as in the schedule (A: title, B: amount, ...); the results workbook has its outcome
    columns first, and the user's own follow them."""
    wb = openpyxl.load_workbook(path)
    ws = wb["Billing"]
    offset = sum(1 for cell in ws[1] if cell.value in OUTCOME_COLUMNS)
    for cell, value in cells.items():
        letter, row = coordinate_from_string(cell)
        ws.cell(row, column_index_from_string(letter) + offset).value = value  # (cell(r, c, None) blanks nothing)
    for line in append:
        ws.append([None] * offset + list(line))
    wb.save(out)
    wb.close()
    return out


def month_one(env: dict[str, str], make_schedule: MakeSchedule, rows: Sequence[Sequence[Any]], **kw: Any) -> Path:
    """Load a schedule; its results workbook (every row created)."""
    path = make_schedule(rows, **kw)
    proc = cli(env, "upload", str(path))
    assert proc.returncode == 0, proc.stderr
    results = path.with_name(f"{path.stem}.results.xlsx")
    assert {s for s, _ in statuses(results).values()} == {"created"}
    return results


def five_rows() -> list[list[Any]]:
    """Five rows, two of them on completion of a task of project 1001 (tasks 5001-5003)."""
    rows = [good_row(n) for n in range(5)]
    rows[3][4:6] = [5001, "upon_completion"]
    rows[4][4:6] = [5002, "upon_completion"]
    return rows


# Each field a PUT may change, edited in one row each: (column letter, new value, the sandbox's new value).
EDITS: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {
    2: ({"B": 12345}, {"amount_in_cents": 12345}),
    3: ({"D": dt.date(2026, 7, 31)}, {"date_to_invoice": "2026-07-31"}),
    4: ({"A": "Milestone 2 (phase two)"}, {"title": "Milestone 2 (phase two)"}),
    5: ({"F": "fixed_date", "E": None}, {"billing_type": "fixed_date"}),  # a blank task is "not given"
    6: ({"E": 5003}, {"story_id": 5003}),
}


def _edited_cells() -> dict[str, Any]:
    return {f"{col}{row}": value for row, (cells, _) in EDITS.items() for col, value in cells.items()}


def _assert_updated_in_place(before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]],
                             ids: dict[int, str]) -> None:  # fmt: skip
    """The same milestones, the edited fields changed and nothing else; untouched rows not even rewritten."""
    assert after.keys() == before.keys()  # no new milestone, none gone
    for row, mid in ids.items():
        old, new = before[int(mid)], after[int(mid)]
        wanted = {**{f: old[f] for f in MILESTONE_FIELDS}, **(EDITS[row][1] if row in EDITS else {})}
        assert {f: new[f] for f in MILESTONE_FIELDS} == wanted, row
        if row in EDITS:
            assert new["updated_at"] > old["updated_at"]
        else:
            assert new == old


@pytest.mark.parametrize("identity", ["external reference", "milestone id column"])
def test_each_edited_field_updates_the_same_milestone_in_place(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, identity: str
) -> None:
    """The schedule itself edited, one field per row (amount, date, title, billing type, task), with the row's
    identity in the schedule: the user's own reference, or a Milestone ID column filled in."""
    rows = five_rows() + [good_row(n) for n in range(5, 7)]
    if identity == "external reference":
        first = [[*r, "finance-sheet", "row", f"FIN-{n}"] for n, r in enumerate(rows)]
        month_one(env, make_schedule, first, headers=[*HEADERS, *REFERENCE])
        second = make_schedule(first, headers=[*HEADERS, *REFERENCE], name="next")
    else:
        results = month_one(env, make_schedule, rows)
        ids = [r["billing_milestone_id"] for r in read_results(results)]
        with_ids = [[*r, mid] for r, mid in zip(rows, ids, strict=True)]
        second = make_schedule(with_ids, headers=[*HEADERS, "Milestone ID"], name="next")
    before = held(sandbox)
    assert len(before) == 7
    edit(second, second, _edited_cells())
    posts = sandbox.stats().get("POST /billing_milestones", 0)

    proc = cli(env, "upload", str(second))

    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "2 unchanged, 5 updated" in proc.stdout
    got = statuses(second.with_name("next.results.xlsx"))
    assert {row: s for row, (s, _) in got.items()} == {r: "updated" if r in EDITS else "unchanged" for r in range(2, 9)}
    _assert_updated_in_place(before, held(sandbox), {row: str(mid) for row, (_, mid) in got.items()})
    assert sandbox.stats().get("POST /billing_milestones", 0) == posts  # nothing created
    assert sandbox.stats()["PUT /billing_milestones/{id}"] == 5


def test_the_results_workbook_fed_back_in_with_edits_updates_in_place(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """Last month's results workbook is next month's schedule: rows found by billing_milestone_id, each edit an
    update, the old and new value of each change in the row's results, and a second run has nothing left to do."""
    results = month_one(env, make_schedule, five_rows() + [good_row(n) for n in range(5, 7)])
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    before = held(sandbox)
    again = edit(results, tmp_path / "march.xlsx", _edited_cells())
    untouched = again.read_bytes()

    proc = cli(env, "upload", str(again))

    assert proc.returncode == ExitCode.OK, proc.stderr
    out = read_results(tmp_path / "march.results.xlsx")
    assert {r["_row"]: (r["status"], r["billing_milestone_id"]) for r in out} == {
        row: ("updated" if row in EDITS else "unchanged", mid) for row, mid in ids.items()
    }
    _assert_updated_in_place(before, held(sandbox), ids)
    shown = {r["_row"]: r["changes"] for r in out}
    assert shown[2] == "amount_in_cents: 10000 -> 12345"
    assert shown[3] == "date_to_invoice: 2026-01-02 -> 2026-07-31"
    assert shown[4] == "title: Milestone 2 -> Milestone 2 (phase two)"
    assert shown[5] == "billing_type: upon_completion -> fixed_date"
    assert shown[6] == "story_id: 5002 -> 5003"
    assert all(shown[row] is None for row in (7, 8))
    assert again.read_bytes() == untouched  # the schedule is never modified

    rerun = cli(env, "upload", str(again), "-o", str(tmp_path / "rerun.xlsx"))
    assert rerun.returncode == ExitCode.OK, rerun.stderr
    assert {s for s, _ in statuses(tmp_path / "rerun.xlsx").values()} == {"unchanged"}
    assert len(held(sandbox)) == 7


def test_an_invoiced_milestones_edited_row_is_a_conflict_and_the_milestone_is_untouched(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    results = month_one(env, make_schedule, [good_row(n) for n in range(4)])
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    sandbox.invoice([int(ids[2]), int(ids[3])])  # row 3 invoiced but not edited: simply unchanged
    before = held(sandbox)
    again = edit(results, tmp_path / "march.xlsx", {"B2": 55555, "A4": "Renamed"})

    code, summary = cli_json(env, "upload", str(again))

    assert code == ExitCode.ROWS_FAILED  # a conflict is a row that failed: documented as exit 1
    assert summary["counts"] | {} == {**dict.fromkeys(summary["counts"], 0), "conflict": 1, "updated": 1,
                                      "unchanged": 2}  # fmt: skip
    out = {r["_row"]: r for r in read_results(tmp_path / "march.results.xlsx")}
    assert (out[2]["status"], out[2]["billing_milestone_id"]) == ("conflict", ids[2])
    assert "invoice" in out[2]["errors"] and "amount_in_cents: 10000 -> 55555" in out[2]["changes"]
    assert [i["code"] for i in summary["issues"]] == ["conflict"]
    assert summary["issues"][0]["row"] == 2 and "invoice" in summary["issues"][0]["message"]
    after = held(sandbox)
    assert after[int(ids[2])] == before[int(ids[2])]  # values and updated_at alike
    assert after[int(ids[3])] == before[int(ids[3])]
    assert after[int(ids[4])]["title"] == "Renamed"
    assert len(after) == 4
    assert "PUT /billing_milestones/{id}" in sandbox.stats() and sandbox.stats()["PUT /billing_milestones/{id}"] == 1


def test_an_id_deleted_in_kantata_is_a_conflict_and_nothing_is_created(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    results = month_one(env, make_schedule, [good_row(n) for n in range(3)])
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    gone = requests.delete(f"{sandbox.url}/billing_milestones/{ids[3]}", timeout=10,
                           headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"})  # fmt: skip
    assert gone.status_code == 204
    posts = sandbox.stats()["POST /billing_milestones"]
    again = edit(results, tmp_path / "march.xlsx", {"B3": 20000})  # edited or not, its milestone is gone

    code, summary = cli_json(env, "upload", str(again))

    assert code == ExitCode.ROWS_FAILED
    out = statuses(tmp_path / "march.results.xlsx")
    assert out == {2: ("unchanged", ids[2]), 3: ("conflict", ids[3]), 4: ("unchanged", ids[4])}
    assert str(ids[3]) in summary["issues"][0]["message"] and "not in Kantata" in summary["issues"][0]["message"]
    assert set(held(sandbox)) == {int(ids[2]), int(ids[4])}  # not created again behind the user's back
    assert sandbox.stats()["POST /billing_milestones"] == posts


def test_the_dry_runs_plan_is_what_the_upload_then_does_row_by_row(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """Creates, updates, unchanged rows and both kinds of conflict in one schedule: `validate --online` (its
    results workbook and --json) foretells `upload` row by row, and sends nothing itself."""
    results = month_one(env, make_schedule, [good_row(n) for n in range(8)])
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    sandbox.invoice([int(ids[4])])
    requests.delete(f"{sandbox.url}/billing_milestones/{ids[5]}", timeout=10,
                    headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}).raise_for_status()  # fmt: skip
    new_rows = [good_row(n) for n in (20, 21)]  # outcome columns left blank: new rows
    schedule = edit(results, tmp_path / "march.xlsx", {"B2": 1, "D3": dt.date(2026, 12, 1), "A4": "Edited"},
                    append=new_rows)  # fmt: skip
    writes_before = {k: v for k, v in sandbox.stats().items() if not k.startswith("GET")}

    plan_code, plan = cli_json(env, "validate", str(schedule), "--online", "-o", str(tmp_path / "plan.xlsx"))

    assert {k: v for k, v in sandbox.stats().items() if not k.startswith("GET")} == writes_before  # nothing sent
    planned = statuses(tmp_path / "plan.xlsx")
    assert planned == {2: ("update", ids[2]), 3: ("update", ids[3]), 4: ("conflict", ids[4]), 5: ("conflict", ids[5]),
                       6: ("unchanged", ids[6]), 7: ("unchanged", ids[7]), 8: ("unchanged", ids[8]),
                       9: ("unchanged", ids[9]), 10: ("valid", None), 11: ("valid", None)}  # fmt: skip
    planned_changes = {r["_row"]: r["errors"] for r in read_results(tmp_path / "plan.xlsx")}
    # The cells that change are framed, each with its old value in a note; the others are as they were.
    sheet = openpyxl.load_workbook(tmp_path / "plan.xlsx")["Billing"]
    column = {cell.value: cell.column for cell in sheet[1] if cell.column is not None}
    amount, date = sheet.cell(2, column["amount_in_cents"]), sheet.cell(3, column["date_to_invoice"])
    assert amount.value == 1 and amount.font.b and amount.comment is not None
    assert amount.comment.text == "amount_in_cents: 10000 -> 1"
    assert date.value == dt.datetime(2026, 12, 1) and date.number_format == "yyyy-mm-dd" and date.font.b
    assert date.comment is not None and date.comment.text == "date_to_invoice: 2026-01-02 -> 2026-12-01"
    assert sheet.cell(4, column["title"]).comment is not None  # the invoiced row's edit: a conflict, shown too
    untouched = [sheet.cell(r, c) for r in (2, 3, 6, 7) for c in column.values()
                 if (r, c) not in ((2, column["amount_in_cents"]), (3, column["date_to_invoice"]))]  # fmt: skip
    assert not any(cell.comment or cell.font.b for cell in untouched)
    # Per project, the schedule's milestones in Kantata now and after the upload: here, every milestone there.
    (project,) = plan["totals"]
    assert project["kantata_before_cents"] == sum(int(m["amount_in_cents"]) for m in held(sandbox).values())
    shown = cli(env, "validate", str(schedule), "--online", "-o", str(tmp_path / "plan2.xlsx")).stdout
    before, after = project["kantata_before_cents"], project["kantata_after_cents"]
    units = [f"{c // 100:,}.{c % 100:02d} USD" for c in (before, after, after - before)]
    assert re.search(rf"project 1001 +{units[0]} +{units[1]} +\+{units[2]}\n", shown), shown

    done_code, done = cli_json(env, "upload", str(schedule), "-o", str(tmp_path / "done.xlsx"))

    carried = statuses(tmp_path / "done.xlsx")
    as_done = {"update": "updated", "valid": "created", "unchanged": "unchanged", "conflict": "conflict"}
    assert {row: as_done[s] for row, (s, _) in planned.items()} == {row: s for row, (s, _) in carried.items()}
    assert all(carried[row][1] == mid for row, (_, mid) in planned.items() if mid is not None)
    assert {r["_row"]: r["errors"] for r in read_results(tmp_path / "done.xlsx")} == planned_changes
    assert plan_code == done_code == ExitCode.ROWS_FAILED  # the conflicts, foretold and then met
    assert {as_done.get(s, s): n for s, n in plan["counts"].items() if n} == {s: n for s, n in done["counts"].items()
                                                                              if n}  # fmt: skip
    assert [(i["row"], i["code"]) for i in plan["issues"]] == [(i["row"], i["code"]) for i in done["issues"]]
    assert len(held(sandbox)) == 7 + 2  # eight loaded, one deleted, two new
    assert sum(int(m["amount_in_cents"]) for m in held(sandbox).values()) == project["kantata_after_cents"]


def test_an_invalid_row_keeps_its_id_in_the_results_so_fixed_and_loaded_again_it_updates(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """A row fed back in with a mistake is `invalid`, and the results it writes keep its billing_milestone_id: the
    user fixes the row there and loads that workbook, and the row updates its milestone. Without its id, the fixed
    (and edited) row would be a new milestone beside its own."""
    results = month_one(env, make_schedule, [good_row(n) for n in range(2)])
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    broken = edit(results, tmp_path / "march.xlsx", {"B2": 23456, "D2": "31/02/2026"})

    code, _ = cli_json(env, "upload", str(broken))

    assert code == ExitCode.ROWS_FAILED
    assert statuses(tmp_path / "march.results.xlsx") == {2: ("invalid", ids[2]), 3: ("unchanged", ids[3])}
    fixed = edit(tmp_path / "march.results.xlsx", tmp_path / "april.xlsx", {"D2": dt.date(2026, 2, 27)})
    code, summary = cli_json(env, "upload", str(fixed))

    assert code == ExitCode.OK, summary
    assert statuses(tmp_path / "april.results.xlsx") == {2: ("updated", ids[2]), 3: ("unchanged", ids[3])}
    assert len(held(sandbox)) == 2 and held(sandbox)[int(ids[2])]["amount_in_cents"] == 23456


def test_a_row_copied_with_its_id_is_an_error_and_its_milestone_is_left_as_it_is(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """One milestone is one row: a copy that keeps the id would change the same milestone as the original (the
    last PUT winning) and never be created itself. Which row is the copy is the user's to say (Excel inserts a copy
    above its original), so both are errors at their id cell and the milestone is not touched."""
    results = month_one(env, make_schedule, [good_row(n) for n in range(2)])
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    before = held(sandbox)
    wb = openpyxl.load_workbook(results)
    ws = wb["Billing"]
    ws.append([cell.value for cell in ws[2]])  # row 2 copied below, its id with it
    wb.save(tmp_path / "copied.xlsx")
    copied = edit(tmp_path / "copied.xlsx", tmp_path / "march.xlsx", {"B2": 11111, "B4": 22222})

    code, summary = cli_json(env, "upload", str(copied))

    assert code == ExitCode.ROWS_FAILED
    assert [(i["row"], i["code"], i["value"]) for i in summary["issues"]] == [
        (2, "duplicate-milestone-id", str(ids[2])), (4, "duplicate-milestone-id", str(ids[2]))]  # fmt: skip
    assert (
        "also on row 4" in summary["issues"][0]["message"] and "clear it on the copy" in summary["issues"][0]["message"]
    )
    assert statuses(tmp_path / "march.results.xlsx") == {2: ("invalid", ids[2]), 3: ("unchanged", ids[3]),
                                                         4: ("invalid", ids[2])}  # fmt: skip
    assert held(sandbox) == before  # nothing changed, nothing created


def test_a_put_whose_answer_never_came_ends_updated_once(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """Kantata wrote the change but the answer was lost: the same values are sent again and the row is updated,
    once, with no second milestone and no error."""
    results = month_one(env, make_schedule, [good_row(n) for n in range(6)])
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    again = edit(results, tmp_path / "march.xlsx", {f"B{row}": 70000 + row for row in range(2, 8)})
    sandbox.set_faults(drop_after_put_every=2)

    code, summary = cli_json(env, "upload", str(again))

    assert code == ExitCode.OK, summary
    assert sandbox.stats()["drop_after_put"] >= 3
    # Each lost answer was looked up and found done: no PUT sent twice.
    assert sandbox.stats()["PUT /billing_milestones/{id}"] == 6
    assert summary["counts"]["updated"] == 6 and summary["issues"] == []
    out = statuses(tmp_path / "march.results.xlsx")
    assert out == {row: ("updated", mid) for row, mid in ids.items()}
    after = held(sandbox)
    assert len(after) == 6
    assert {row: after[int(mid)]["amount_in_cents"] for row, mid in ids.items()} == {r: 70000 + r for r in range(2, 8)}


def test_a_put_that_landed_before_the_milestone_was_invoiced_is_updated_though_its_answer_was_lost(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change is made, the milestone is then put on an invoice, and the answer never comes. Sent again, the
    PUT would be refused (on an invoice) and the row reported `rejected`, though its change is in Kantata: the
    milestone is looked up first, and holds the new values."""
    results = month_one(env, make_schedule, [good_row(n) for n in range(2)])
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    again = edit(results, tmp_path / "march.xlsx", {"B2": 77777})
    put = sandbox._routes["PUT /billing_milestones/{id}"]

    def then_invoiced(ident: Any, query: Any, body: bytes, faults: Any) -> Any:
        reply = put(ident, query, body, faults)
        sandbox.invoice([ident])
        return reply

    monkeypatch.setitem(sandbox._routes, "PUT /billing_milestones/{id}", then_invoiced)
    sandbox.set_faults(drop_after_put_every=1)  # and the answer is lost

    code, summary = cli_json(env, "upload", str(again))

    assert code == ExitCode.OK, summary
    assert sandbox.stats()["PUT /billing_milestones/{id}"] == 1 and sandbox.stats()["drop_after_put"] == 1
    assert statuses(tmp_path / "march.results.xlsx") == {2: ("updated", ids[2]), 3: ("unchanged", ids[3])}
    assert held(sandbox)[int(ids[2])]["amount_in_cents"] == 77777


def test_an_update_kantata_refuses_is_rejected_with_its_message(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """A task of another project cannot be checked offline: Kantata refuses the PUT, the row is `rejected` with
    Kantata's words, the milestone keeps its values, and the other rows are updated all the same."""
    results = month_one(env, make_schedule, five_rows())
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    before = held(sandbox)
    again = edit(results, tmp_path / "march.xlsx", {"E5": 5007, "B2": 31000})  # 5007 is a task of project 1004

    code, summary = cli_json(env, "upload", str(again))

    assert code == ExitCode.ROWS_FAILED
    out = {r["_row"]: r for r in read_results(tmp_path / "march.results.xlsx")}
    assert (out[5]["status"], out[5]["billing_milestone_id"]) == ("rejected", ids[5])
    assert [(i["row"], i["code"]) for i in summary["issues"]] == [(5, "rejected-by-kantata")]
    message = summary["issues"][0]["message"]
    assert "5007" in message or "story" in message.lower() or "task" in message.lower(), message
    assert message in out[5]["errors"]
    assert out[2]["status"] == "updated"
    after = held(sandbox)
    assert after[int(ids[5])] == before[int(ids[5])]
    assert after[int(ids[2])]["amount_in_cents"] == 31000


def _copy_in_kantata(sandbox: Any, milestone: dict[str, Any]) -> int:
    """A second milestone with the same values and external reference, POSTed straight to Kantata as another tool
    (or a person) would; its id."""
    body = {f: milestone[f] for f in MILESTONE_FIELDS if milestone[f] is not None}
    body["external_reference"] = {name: milestone[f"external_reference.{name}"]
                                  for name in ("service_name", "service_model", "service_model_ref")}  # fmt: skip
    answer = requests.post(f"{sandbox.url}/billing_milestones", json={"billing_milestones": [body]}, timeout=10,
                           headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"})  # fmt: skip
    answer.raise_for_status()
    return int(answer.json()["results"][0]["id"])


@pytest.mark.parametrize("identity", ["derived key", "external reference"])
def test_a_key_held_by_two_milestones_is_a_conflict_naming_both_and_touches_neither(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path, identity: str
) -> None:
    """A row's key held by two milestones: `validate --online` and `upload` both make the row a conflict whose
    message names both ids and the one to delete; nothing is created, neither milestone is changed (not even when
    the row, keyed by the user's own reference, was edited), and the conflict carries no id, so that the results
    fed back in are the same conflict again."""
    rows = [good_row(n) for n in range(3)]
    headers = HEADERS
    if identity == "external reference":
        rows = [[*r, "finance-sheet", "row", f"FIN-{n}"] for n, r in enumerate(rows)]
        headers = [*HEADERS, *REFERENCE]
    results = month_one(env, make_schedule, rows, headers=headers)
    ids = {row: int(mid) for row, (_, mid) in statuses(results).items() if mid is not None}
    first = held(sandbox)[ids[3]]
    copy = _copy_in_kantata(sandbox, first)
    assert copy > ids[3]
    schedule = make_schedule(rows, headers=headers, name="march")  # the schedule, not the results: no ids
    if identity == "external reference":
        edit(schedule, schedule, {"B3": 77777})  # a changed amount would be an update, were the key held once
    before = held(sandbox)
    writes = {k: v for k, v in sandbox.stats().items() if not k.startswith("GET")}

    plan_code, plan = cli_json(env, "validate", str(schedule), "--online", "-o", str(tmp_path / "plan.xlsx"))
    code, done = cli_json(env, "upload", str(schedule))

    assert plan_code == code == ExitCode.ROWS_FAILED
    assert {k: v for k, v in sandbox.stats().items() if not k.startswith("GET")} == writes  # no POST, PUT, DELETE
    assert held(sandbox) == before
    for path, summary in ((tmp_path / "plan.xlsx", plan), (schedule.with_name("march.results.xlsx"), done)):
        out = {r["_row"]: r for r in read_results(path)}
        assert {row: (r["status"], r["billing_milestone_id"]) for row, r in out.items()} == {
            2: ("unchanged", ids[2]), 3: ("conflict", None), 4: ("unchanged", ids[4])}  # fmt: skip
        message = out[3]["errors"]
        assert f"held by 2 milestones ({ids[3]}, {copy}): delete {copy} in Kantata to keep the oldest" in message
        assert [(i["row"], i["code"], i["message"]) for i in summary["issues"]] == [(3, "conflict", message)]


# --- amount_in_units: an outcome column, never read; an edit there alone is refused, not silently dropped ----


def edit_outcomes(path: Path, out: Path, cells: dict[tuple[int, str], Any]) -> Path:
    """A copy of a results workbook with outcome cells retyped: (row, outcome column's header) -> value."""
    wb = openpyxl.load_workbook(path)
    ws = wb["Billing"]
    column = {cell.value: cell.column for cell in ws[1] if cell.column is not None}
    for (row, header), value in cells.items():
        ws.cell(row, column[header]).value = value  # ws.cell(row, column, None) would leave the cell as it was
    wb.save(out)
    wb.close()
    return out


def outcome_letter(path: Path, header: str) -> str:
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        return next(cell.column_letter for cell in next(wb["Billing"].iter_rows(max_row=1)) if cell.value == header)
    finally:
        wb.close()


def three_currencies() -> list[list[Any]]:
    """Rows 2-4 in USD, JPY and KWD (the sandbox's projects 1001, 1004, 1005): 10000 cents each is 100.00 USD,
    10,000 JPY and 10.000 KWD, as amount_in_units shows them; row 5 in USD is never edited."""
    return [good_row(0), good_row(1, workspace=1004), good_row(2, workspace=1005), good_row(3)]


def writes(sandbox: Any) -> dict[str, int]:
    return {k: v for k, v in sandbox.stats().items() if not k.startswith("GET")}


def test_an_amount_in_units_edited_alone_is_an_error_at_its_cell_and_nothing_is_sent(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """The finance user's trap: 100.00 retyped as 444.44 in amount_in_units, which no run reads. Planned
    `unchanged` and uploaded as nothing, it would look done; it is an error on that cell, in each currency, all
    at once, and the upload sends nothing for those rows."""
    results = month_one(env, make_schedule, three_currencies())
    units = outcome_letter(results, "amount_in_units")
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    assert [r["amount_in_units"] for r in read_results(results)] == [100, 10001, 10.002, 100.03]
    edited = {(2, "amount_in_units"): 444.44, (3, "amount_in_units"): 12000, (4, "amount_in_units"): 11.5}
    schedule = edit_outcomes(results, tmp_path / "march.xlsx", edited)
    before, sent = held(sandbox), writes(sandbox)

    plan_code, plan = cli_json(env, "validate", str(schedule), "--online", "-o", str(tmp_path / "plan.xlsx"))
    offline_code, offline = cli_json(env, "validate", str(schedule), "-o", str(tmp_path / "offline.xlsx"))
    code, done = cli_json(env, "upload", str(schedule))

    assert plan_code == offline_code == code == ExitCode.ROWS_FAILED
    for summary in (plan, offline, done):
        found = [(i["row"], i["column"], i["header"], i["value"], i["code"], i["severity"]) for i in summary["issues"]]
        assert found == [
            (2, units, "amount_in_units", "444.44", "amount-in-units-not-read", "error"),
            (3, units, "amount_in_units", "12000", "amount-in-units-not-read", "error"),
            (4, units, "amount_in_units", "11.5", "amount-in-units-not-read", "error"),
        ]  # fmt: skip
        assert summary["issues"][0]["message"] == (
            "amount_in_units was changed to 444.44 but is not read (each run writes it anew from the amount it "
            "sends): put the new amount in amount_in_cents, or put amount_in_units back"
        )
    # Each invalid row keeps its id, so that fixed in these results and loaded again it updates its milestone.
    assert statuses(tmp_path / "plan.xlsx") == {2: ("invalid", ids[2]), 3: ("invalid", ids[3]),
                                                4: ("invalid", ids[4]), 5: ("unchanged", ids[5])}  # fmt: skip
    out = {r["_row"]: r for r in read_results(schedule.with_name("march.results.xlsx"))}
    assert [out[row]["status"] for row in (2, 3, 4, 5)] == ["invalid", "invalid", "invalid", "unchanged"]
    assert "amount_in_units was changed to 12000 but is not read" in out[3]["errors"]
    assert writes(sandbox) == sent and held(sandbox) == before  # no POST, no PUT: nothing changed


def test_an_edited_amount_with_a_stale_amount_in_units_is_an_update_not_an_error(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """The amount edited where it belongs, amount_in_units left as last month wrote it (stale), or retyped to
    match (in each currency's units), or cleared; an amount_in_units edited where api_amount_in_cents is blank:
    none is an error. The edited rows are updates to the amount typed; the others unchanged."""
    results = month_one(env, make_schedule, [*three_currencies(), *(good_row(n) for n in range(4, 10))])
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    schedule = edit(results, tmp_path / "march.xlsx", {"B2": 12345, "B3": 12000, "B4": 11500, "B6": 44444,
                                                       "B7": 20000, "B8": 30000})  # fmt: skip
    edit_outcomes(schedule, schedule, {
        (3, "amount_in_units"): 12000, (4, "amount_in_units"): 11.5, (6, "amount_in_units"): 444.44,  # consistent
        (7, "amount_in_units"): None,  # cleared, with the amount edited
        (9, "amount_in_units"): None,  # cleared, nothing else
        (10, "api_amount_in_cents"): None, (10, "amount_in_units"): 999.99,  # nothing to compare with
        (11, "amount_in_units"): "100.090",  # retyped as text, the same amount
    })  # fmt: skip
    sent = writes(sandbox)

    plan_code, plan = cli_json(env, "validate", str(schedule), "--online", "-o", str(tmp_path / "plan.xlsx"))

    assert plan_code == ExitCode.OK and plan["issues"] == [], plan["issues"]
    assert writes(sandbox) == sent
    updated = (2, 3, 4, 6, 7, 8)
    assert statuses(tmp_path / "plan.xlsx") == {row: ("update" if row in updated else "unchanged", mid)
                                                for row, mid in ids.items()}  # fmt: skip

    code, done = cli_json(env, "upload", str(schedule))

    assert code == ExitCode.OK and done["issues"] == [], done["issues"]
    after = held(sandbox)
    assert {row: after[int(ids[row])]["amount_in_cents"] for row in updated} == {
        2: 12345, 3: 12000, 4: 11500, 6: 44444, 7: 20000, 8: 30000}  # fmt: skip
    assert sandbox.stats()["PUT /billing_milestones/{id}"] == len(updated)


@pytest.mark.parametrize(("project", "decimals", "typed", "shown", "retyped"), [
    (1001, None, "100.00", 100, "444.44"),
    (1004, "0", "10000", 10000, "12000"),
    (1005, "3", "10.000", 10, "11.5"),
])  # fmt: skip
def test_with_an_amount_in_units_column_only_amount_in_units_edited_alone_is_an_error(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path, project: int,
    decimals: str | None, typed: str, shown: float, retyped: str,
) -> None:  # fmt: skip
    """A schedule with Amount in currency units (and --currency-decimals for yen and dinars): amount_in_units
    retyped alone is an error; the Amount retyped (amount_in_units stale) is an update to it."""
    flags = ["--currency-decimals", decimals] if decimals else []
    headers = ["title", "Amount", "workspace_id", "date_to_invoice", "story_id", "billing_type"]
    rows = [[f"Milestone {n}", typed, project, dt.date(2026, 1, 1), None, "fixed_date"] for n in range(2)]
    path = make_schedule(rows, headers=headers)
    assert cli(env, "upload", str(path), *flags).returncode == ExitCode.OK
    results = path.with_name("schedule.results.xlsx")
    assert [r["amount_in_units"] for r in read_results(results)] == [shown, shown]
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    units_only = edit_outcomes(results, tmp_path / "units.xlsx", {(2, "amount_in_units"): float(retyped)})
    amount_only = edit(results, tmp_path / "amount.xlsx", {"B2": retyped})

    code, summary = cli_json(env, "validate", str(units_only), "--online", *flags)
    assert code == ExitCode.ROWS_FAILED
    assert [(i["row"], i["code"]) for i in summary["issues"]] == [(2, "amount-in-units-not-read")]
    assert summary["issues"][0]["message"].endswith("put the new amount in Amount, or put amount_in_units back")

    code, summary = cli_json(env, "upload", str(amount_only), *flags)
    assert code == ExitCode.OK and summary["issues"] == [], summary["issues"]
    assert statuses(tmp_path / "amount.results.xlsx") == {2: ("updated", ids[2]), 3: ("unchanged", ids[3])}


@pytest.mark.parametrize("command", [("validate", "--online"), ("upload",)])
def test_the_changed_cell_is_the_one_the_row_filled_and_formula_like_text_keeps_its_frame(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """With both an Amount (units) and an Amount (cents) column, a changed amount is marked on the cell the row
    filled, its note in that cell's units (each project's decimals); a title edited to text that looks like a
    formula stays text and is framed like any other change."""
    headers = ["title", "Amount", "Amount (cents)", "workspace_id", "date_to_invoice", "story_id", "billing_type"]
    rows = [["Milestone 0", "10.00", None, 1001, dt.date(2026, 1, 1), None, "fixed_date"],  # in units only
            ["Milestone 1", "1,000", None, 1001, dt.date(2026, 1, 2), None, "fixed_date"],
            ["Milestone 2", None, 10002, 1001, dt.date(2026, 1, 3), None, "fixed_date"],  # in cents only
            ["Milestone 3", None, 10003, 1001, dt.date(2026, 1, 4), None, "fixed_date"]]  # fmt: skip
    results = month_one(env, make_schedule, rows, headers=headers)
    schedule = edit(results, tmp_path / "march.xlsx", {"B2": "12.50", "B3": "(1,234.5)", "C4": 20000,
                                                       "A5": "+EUR three new"})  # fmt: skip

    code, _ = cli_json(env, *command, str(schedule), "-o", str(tmp_path / "out.xlsx"))

    assert code == ExitCode.OK
    sheet = openpyxl.load_workbook(tmp_path / "out.xlsx")["Billing"]
    column = {cell.value: cell.column for cell in sheet[1] if cell.column is not None}
    marked = {(r, name): sheet.cell(r, column[name]) for r in range(2, 6) for name in ("Amount", "Amount (cents)",
                                                                                      "title")}  # fmt: skip
    notes = {(r, name): (cell.value, bool(cell.font.b), cell.comment.text if cell.comment else None)
             for (r, name), cell in marked.items() if cell.font.b or cell.comment}  # fmt: skip
    assert notes == {
        (2, "Amount"): ("12.50", True, "amount: 10.00 -> 12.50"),
        (3, "Amount"): ("(1,234.5)", True, "amount: 1,000.00 -> -1,234.50"),
        (4, "Amount (cents)"): (20000, True, "amount_in_cents: 10002 -> 20000"),
        (5, "title"): ("+EUR three new", True, "title: Milestone 3 -> +EUR three new"),
    }
    title = marked[5, "title"]
    assert title.quotePrefix and title.border.left.style == "medium"  # stays text, in the changed cell's frame


def test_an_amount_in_units_edited_by_a_power_of_ten_is_an_error_where_its_project_shows_the_decimals(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """1000.50 retyped as 100.05, 2000.00 as 200000, 300.00 as 30 are last month's cents with 3, 0 and 3 decimals:
    each some currency's, but not the EUR project's, whose other rows show 2. They are errors at their cells. The
    yen and dinar projects' rows, shown with 0 and 3 decimals, are no error; nor is a one-row project's 100.00
    retyped as 10 (10000 cents with 3 decimals), where nothing tells which decimals it was shown with."""
    euro = [[f"Euro {n}", cents, 1002, dt.date(2026, 2, 1 + n), None, "fixed_date"]
            for n, cents in enumerate([100050, 200000, 30000, 10003, 10004, 10005])]  # fmt: skip
    others = [good_row(10, workspace=1004), good_row(11, workspace=1004), good_row(12, workspace=1005),
              good_row(13, workspace=1005), [*good_row(14)[:1], 10000, *good_row(14)[2:]]]  # fmt: skip
    results = month_one(env, make_schedule, [*euro, *others])
    units = outcome_letter(results, "amount_in_units")
    assert [r["amount_in_units"] for r in read_results(results)] == [
        1000.5,
        2000,
        300,
        100.03,
        100.04,
        100.05,
        10010,
        10011,
        10.012,
        10.013,
        100,
    ]
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    edited = {(2, "amount_in_units"): 100.05, (3, "amount_in_units"): 200000, (4, "amount_in_units"): 30,
              (12, "amount_in_units"): 10}  # fmt: skip
    schedule = edit_outcomes(results, tmp_path / "march.xlsx", edited)

    code, plan = cli_json(env, "validate", str(schedule), "--online", "-o", str(tmp_path / "plan.xlsx"))

    assert code == ExitCode.ROWS_FAILED
    assert [(i["row"], i["column"], i["value"], i["code"]) for i in plan["issues"]] == [
        (2, units, "100.05", "amount-in-units-not-read"),
        (3, units, "200000", "amount-in-units-not-read"),
        (4, units, "30", "amount-in-units-not-read"),
    ]
    assert statuses(tmp_path / "plan.xlsx") == {row: ("invalid" if row in (2, 3, 4) else "unchanged", mid)
                                                for row, mid in ids.items()}  # fmt: skip


def _european_csv(results: Path, out: Path, units: dict[int, str]) -> Path:
    """A results workbook as a European Excel saves it as CSV: semicolons, amount_in_units with a decimal comma
    (`units`: row -> its text), whole numbers as digits and dates as the cells show them (ISO)."""
    wb = openpyxl.load_workbook(results, read_only=True)
    try:
        rows = [list(r) for r in wb["Billing"].iter_rows(values_only=True)]
    finally:
        wb.close()
    at = rows[0].index("amount_in_units")
    lines = []
    for number, row in enumerate(rows, start=1):
        if number in units:
            row[at] = units[number]
        cells = [_as_shown(v) for v in row]
        assert not any(";" in c or '"' in c for c in cells)  # nothing that needs quoting
        lines.append(";".join(cells))
    out.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return out


def _as_shown(value: object) -> str:
    """A cell as a European Excel writes it to CSV: a date as shown (ISO here), a whole number as digits (openpyxl
    reads 100050 back as 100050.0), any other number with a decimal comma."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value).replace(".", ",")
    return str(value)


@pytest.mark.parametrize("flags", [["--decimal-comma"], []])
def test_a_results_workbook_saved_as_a_semicolon_csv_with_a_decimal_comma_reads_its_amount_in_units(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path, flags: list[str]
) -> None:
    """amount_in_units "1000,5" and "2.000,00" are last month's 100050 and 200000 cents, not edits, with
    --decimal-comma or, where no Amount column tells, when the whole column is written so; under the flag a KWD
    "10,012" is its 10012 fils (without it, a thousands comma as much). One retyped ("444,44") is the one error."""
    rows = [[f"Euro {n}", cents, 1002, dt.date(2026, 2, 1 + n), None, "fixed_date"]
            for n, cents in enumerate([100050, 200000, 30000])]  # fmt: skip
    dinars = [good_row(12, workspace=1005)] if flags else []
    results = month_one(env, make_schedule, [*rows, *dinars])
    ids = {r["_row"]: r["billing_milestone_id"] for r in read_results(results)}
    units = {2: "1000,5", 3: "2.000,00", 4: "444,44", **({5: "10,012"} if flags else {})}
    schedule = _european_csv(results, tmp_path / "march.csv", units)

    code, plan = cli_json(env, "validate", str(schedule), *flags, "--online", "-o", str(tmp_path / "plan.xlsx"))

    assert code == ExitCode.ROWS_FAILED
    assert [(i["row"], i["value"], i["code"]) for i in plan["issues"]] == [(4, "444,44", "amount-in-units-not-read")]
    planned = {r["_row"]: (r["status"], r["billing_milestone_id"]) for r in read_results(tmp_path / "plan.xlsx",
                                                                                          "Schedule")}  # fmt: skip
    assert planned == {row: ("invalid" if row == 4 else "unchanged", mid) for row, mid in ids.items()}


W2 = (
    (
        "status;billing_milestone_id;amount_in_units;api_amount_in_cents;changes;errors;Title;Amount;Project ID;"
        "Date to invoice;Billing type\n"
    )
    + """created;700276;1.000,00;100000;;;W1;1000;1002;2026-01-28;fixed_date
created;700277;2.500,00;250000;;;W2;2500;1002;2026-02-28;fixed_date
"""
)


def test_a_european_csv_of_results_with_round_amounts_reads_its_amount_in_units_with_a_decimal_comma(
    tmp_path: Path,
) -> None:
    """Round amounts ("1000") say nothing of how the file writes decimals; amount_in_units ("1.000,00") does, and
    an unedited row is no error."""
    path = tmp_path / "march.csv"
    path.write_text(W2)
    done = forked_cli.run(["validate", str(path), "--json"], env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert json.loads(done.stdout)["counts"]["valid"] == 2
