"""Milestones that no row of the schedule matches, through the real CLI against the sandbox on loopback: listed by
the dry run and the upload (a sheet of their own, --json), never deleted by default, deleted with
--delete-missing only when the count is right (or the user says yes), and never one on an invoice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openpyxl
import pytest

from importer.cli.main import main
from importer.errors import ExitCode
from importer.results import MISSING_SHEET
from tests import forked_cli
from tests.conftest import MakeSchedule, good_row, read_results
from tests.test_living import cli_json, env, held, month_one

__all__ = ["env"]  # the fixture, shared with test_living.py


def writes(sandbox: Any) -> dict[str, int]:
    """Every request the sandbox answered that is not a read."""
    return {k: v for k, v in sandbox.stats().items() if not k.startswith("GET") and "/" in k}


def missing_sheet(path: Path) -> list[dict[str, Any]] | None:
    """The "Not in this schedule" sheet as dicts by header; None when the workbook has no such sheet."""
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        if MISSING_SHEET not in wb.sheetnames:
            return None
        rows = list(wb[MISSING_SHEET].iter_rows(values_only=True))
    finally:
        wb.close()
    return [dict(zip(map(str, rows[0]), r, strict=True)) for r in rows[1:]]


def without_rows(results: Path, out: Path, drop: list[int], cells: dict[str, Any]) -> Path:
    """Last month's results workbook with some rows deleted and some cells of the schedule's columns retyped
    (A: title), as a finance user prepares next month."""
    wb = openpyxl.load_workbook(results)
    ws = wb["Billing"]
    offset = [c.value for c in ws[1]].index("title")
    for coordinate, value in cells.items():
        ws.cell(int(coordinate[1:]), ord(coordinate[0]) - ord("A") + 1 + offset, value)
    for row in sorted(drop, reverse=True):
        ws.delete_rows(row)
    wb.save(out)
    wb.close()
    return out


def test_the_dry_run_lists_milestones_no_row_matches_with_the_hint_and_an_upload_keeps_them(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """Next month's schedule typed afresh (no ids): one row removed, one with a new amount (a new key, so a
    create: the hint), one retitled; a removed row's milestone on an invoice; and a project the schedule no longer
    names is not looked at."""
    rows = [good_row(n) for n in range(5)] + [good_row(9, workspace=1002)]
    results = month_one(env, make_schedule, rows)
    assert missing_sheet(results) is None  # only when there are any
    ids = {r["_row"]: str(r["billing_milestone_id"]) for r in read_results(results)}
    sandbox.invoice([int(ids[6])])
    edited = [good_row(0), [*good_row(2)[:1], 77777, *good_row(2)[2:]], ["Milestone 3 renamed", *good_row(3)[1:]]]
    schedule = make_schedule(edited, name="march")
    before = writes(sandbox)

    code, plan = cli_json(env, "validate", str(schedule), "--online")

    assert code == ExitCode.OK, plan
    assert writes(sandbox) == before  # a dry run sends nothing
    listed = {m["billing_milestone_id"]: m for m in plan["not_in_schedule"]}
    assert set(listed) == {ids[3], ids[4], ids[5], ids[6]}  # not project 1002's milestone
    assert listed[ids[4]]["hint"] == (f"probably row 3 edited: put {ids[4]} in its billing_milestone_id to update "
                                      "it instead")  # fmt: skip
    assert [m["hint"] for i, m in listed.items() if i != ids[4]] == [None, None, None]
    assert listed[ids[6]]["invoiced"] and not listed[ids[3]]["invoiced"]
    assert (listed[ids[3]]["title"], listed[ids[3]]["amount_in_cents"]) == ("Milestone 1", 10001)
    assert listed[ids[3]]["date_to_invoice"] == "2026-01-02" and listed[ids[3]]["outcome"] is None
    sheet = missing_sheet(tmp_path / "march.results.xlsx")
    assert sheet is not None
    assert [(str(r["billing_milestone_id"]), r["Amount (cents)"], r["Invoiced"]) for r in sheet] == [
        (ids[3], 10001, "no"), (ids[4], 10002, "no"), (ids[5], 10003, "no"), (ids[6], 10004, "yes")]  # fmt: skip
    assert sheet[0]["Amount"] == pytest.approx(100.01)
    assert "probably row 3 edited" in sheet[1]["Hint"]

    proc = forked_cli.run(["upload", str(schedule), "--non-interactive"], env=env)

    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "not in this schedule: 4 milestones" in proc.stdout and "--delete-missing=3" in proc.stdout
    assert f"{ids[4]}: probably row 3 edited" in proc.stdout
    assert {int(i) for i in ids.values()} <= set(held(sandbox))  # never deleted by default
    kept = missing_sheet(tmp_path / "march.results.xlsx")
    assert kept is not None and {r["Outcome"] for r in kept} == {
        "kept: an upload with --delete-missing deletes it", "kept: on an invoice"}  # fmt: skip


def _month_two(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> tuple[Path, dict[int, str]]:
    """Last month's results fed back in: row 3 removed, row 5 retitled (an update, found by its id), row 6
    removed though on an invoice."""
    results = month_one(env, make_schedule, [good_row(n) for n in range(5)])
    ids = {r["_row"]: str(r["billing_milestone_id"]) for r in read_results(results)}
    sandbox.invoice([int(ids[6])])
    return without_rows(results, tmp_path / "march.xlsx", [3, 6], {"A5": "Milestone 3 renamed"}), ids


def test_delete_missing_with_the_right_count_deletes_exactly_those_not_invoiced(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    schedule, ids = _month_two(sandbox, env, make_schedule, tmp_path)
    before = writes(sandbox)

    wrong, summary = cli_json(env, "upload", str(schedule), "--delete-missing=2")

    assert wrong == ExitCode.UNUSABLE_INPUT
    assert summary["error"]["kind"] == "deletion-not-confirmed" and "--delete-missing=1" in summary["error"]["message"]
    assert writes(sandbox) == before  # nothing sent: not the update either
    assert not (tmp_path / "march.results.xlsx").exists()
    unasked = forked_cli.run(["upload", str(schedule), "--delete-missing", "--non-interactive"], env=env)
    assert unasked.returncode == ExitCode.UNUSABLE_INPUT and "--delete-missing=N" in unasked.stderr
    assert writes(sandbox) == before

    code, done = cli_json(env, "upload", str(schedule), "--delete-missing=1")

    assert code == ExitCode.OK, done
    assert done["counts"]["updated"] == 1 and done["counts"]["unchanged"] == 2
    assert {m["billing_milestone_id"]: m["outcome"] for m in done["not_in_schedule"]} == {
        ids[3]: "deleted", ids[6]: "kept: on an invoice"}  # fmt: skip
    assert set(held(sandbox)) == {int(ids[r]) for r in (2, 4, 5, 6)}
    assert held(sandbox)[int(ids[5])]["title"] == "Milestone 3 renamed"
    assert sandbox.stats()["DELETE /billing_milestones/{id}"] == 1
    sheet = missing_sheet(tmp_path / "march.results.xlsx")
    assert sheet is not None and [(str(r["billing_milestone_id"]), r["Outcome"]) for r in sheet] == [
        (ids[3], "deleted"), (ids[6], "kept: on an invoice")]  # fmt: skip


def test_delete_missing_without_a_count_asks_and_a_no_keeps_them(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    schedule, ids = _month_two(sandbox, env, make_schedule, tmp_path)
    for name in ("KANTATA_BASE_URL", "KANTATA_API_TOKEN", "HOME"):
        monkeypatch.setenv(name, env[name])
    asked: list[str] = []

    def no(question: str) -> str:
        asked.append(question)
        return "n"

    assert main(["upload", str(schedule), "--delete-missing", "-o", str(tmp_path / "no.xlsx")], ask=no) == 0
    assert asked == ["delete the 1 not on an invoice from Kantata? [y/N] "]
    assert ids[3] in capsys.readouterr().err  # the list was shown before the question
    assert int(ids[3]) in held(sandbox)
    sheet = missing_sheet(tmp_path / "no.xlsx")
    assert sheet is not None and sheet[0]["Outcome"] == "kept: deletion not confirmed"

    assert main(["upload", str(schedule), "--delete-missing", "-o", str(tmp_path / "yes.xlsx")],
                ask=lambda _: "y") == 0  # fmt: skip
    assert int(ids[3]) not in held(sandbox) and int(ids[6]) in held(sandbox)
