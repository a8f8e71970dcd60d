"""--json: one JSON object on stdout, valid against docs/summary.schema.json, for every way a run can end;
and the closing summary a person reads, which must agree with the results workbook to the cent."""

from __future__ import annotations

import json
import socket
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import openpyxl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer import __version__
from importer.cli.main import main
from importer.pipeline import run_upload, run_validate
from importer.results.totals import format_units
from importer.sandbox.server import DEFAULT_TOKEN
from importer.settings import Secret, Settings, sanitize_url
from importer.summary import run_summary
from tests.conftest import MakeSchedule, good_row

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
SCHEMA = json.loads((ROOT / "docs" / "summary.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


def _summary(out: str) -> dict[str, Any]:
    """stdout must be exactly one JSON object, valid against the schema."""
    summary = json.loads(out)  # fails on anything else printed to stdout
    errors = sorted(VALIDATOR.iter_errors(summary), key=str)
    assert not errors, "\n".join(str(e) for e in errors)
    assert isinstance(summary, dict)
    return summary


def test_the_schema_itself_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_validate_ok(make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_schedule([good_row(1), good_row(2, workspace=1002)])
    assert main(["validate", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    summary = _summary(captured.out)
    assert summary["command"] == "validate" and summary["dry_run"] is True and summary["base_url"] is None
    assert summary["version"] == __version__ and summary["file"] == str(path) and summary["sheet"] == "Billing"
    assert summary["exit_code"] == 0 and summary["rows"] == 2 and summary["error"] is None
    assert summary["counts"] == {
        "valid": 2,
        "created": 0,
        "unchanged": 0,
        "update": 0,
        "updated": 0,
        "conflict": 0,
        "invalid": 0,
        "rejected": 0,
        "not_sent": 0,
    }
    assert [(t["workspace_id"], t["landed_cents"], t["currency"]) for t in summary["totals"]] == [
        (1001, 10001, None),
        (1002, 10002, None),
    ]
    assert summary["output"] == str(path.with_name("schedule.results.xlsx")) and summary["issues"] == []
    assert "2 rows read" in captured.err  # with --json, the human summary goes to stderr


def test_validate_with_invalid_rows_lists_every_issue(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    assert main(["validate", str(SAMPLES / "schedule_with_mistakes.xlsx"), "--json", "-o", str(out)]) == 1
    summary = _summary(capsys.readouterr().out)
    expected = run_validate(SAMPLES / "schedule_with_mistakes.xlsx", output=tmp_path / "lib.xlsx")
    assert summary["counts"]["valid"] == 4 and summary["counts"]["invalid"] == 7 and summary["exit_code"] == 1
    assert [(i["row"], i["column"], i["code"], i["message"]) for i in summary["issues"]] == [
        (i.row, i.column, i.code, i.message) for i in expected.issues
    ]
    assert summary["issues"][0] == {
        "row": 3,
        "column": "B",
        "header": "Amount (cents)",
        "value": "12.50",
        "code": "amount-not-whole",
        "message": expected.issues[0].message,
        "severity": "error",
    }
    assert {**summary, "output": None} == {**run_summary(expected, command="validate"), "output": None}


def test_upload_to_the_sandbox(sandbox: Any, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    rows = [good_row(n) for n in range(12)] + [["Hidden project", 100, 1099, None, None, "fixed_date"]]
    path = make_schedule(rows)
    assert main(["upload", str(path), "--json", "--base-url", sandbox.url, "--batch-size", "5"]) == 1
    out = capsys.readouterr().out
    summary = _summary(out)
    assert DEFAULT_TOKEN not in out
    assert summary["dry_run"] is False and summary["base_url"] == sanitize_url(sandbox.url)
    assert summary["counts"]["created"] == 12 and summary["counts"]["rejected"] == 1
    assert summary["requests"]["POST"] >= 3 and summary["requests"]["GET"] >= 1
    sent = sum(int(m["amount_in_cents"]) for m in sandbox.milestones())
    assert sum(t["landed_cents"] for t in summary["totals"]) == sent
    assert [i["code"] for i in summary["issues"]] == ["rejected-by-kantata"]
    assert summary["issues"][0]["row"] == 14 and "Workspace not found" in summary["issues"][0]["message"]


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (["validate", "{dir}/missing.xlsx", "--json"], "schedule-error"),
        (["validate", "{dir}/not-a-workbook.xlsx", "--json"], "schedule-error"),
        (["validate", "{dir}/ok.xlsx", "--json", "-o", "{dir}/ok.xlsx"], "config-error"),
    ],
)
def test_an_unusable_file_still_prints_one_json_object(
    args: list[str], kind: str, tmp_path: Path, make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    make_schedule([good_row(1)], name="ok")
    (tmp_path / "not-a-workbook.xlsx").write_text("title,amount\n")
    assert main([a.format(dir=tmp_path) for a in args]) == 2
    captured = capsys.readouterr()
    summary = _summary(captured.out)
    assert summary["exit_code"] == 2 and summary["error"]["kind"] == kind
    assert summary["counts"] is None and summary["rows"] is None and summary["output"] is None
    assert summary["error"]["message"] in captured.err  # the same sentence a person sees


def test_a_usage_error_still_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["upload", "x.xlsx", "--json", "--batch-size", "many"])
    assert info.value.code == 2
    summary = _summary(capsys.readouterr().out)
    assert summary["error"]["kind"] == "usage-error" and summary["command"] == "upload"
    assert "--batch-size" in summary["error"]["message"]


def test_a_refused_token_is_exit_3_in_json(
    sandbox: Any, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KANTATA_API_TOKEN", "wrong-token-4242")
    path = make_schedule([good_row(1)])
    assert main(["upload", str(path), "--json", "--base-url", sandbox.url]) == 3
    out = capsys.readouterr().out
    summary = _summary(out)
    assert summary["error"]["kind"] == "token-rejected" and "wrong-token-4242" not in out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_stopped_upload_has_its_reason(make_schedule: MakeSchedule) -> None:
    path = make_schedule([good_row(n) for n in range(3)])
    settings = Settings(base_url=f"http://127.0.0.1:{_closed_port()}/api/v1", token=Secret("t"), max_attempts=2,
                        backoff_base=0.01)  # fmt: skip
    summary = _summary(json.dumps(run_summary(run_upload(path, settings), command="upload")))
    assert summary["exit_code"] == 4 and summary["stopped"]["kind"] == "api-unavailable"
    assert summary["counts"]["not_sent"] == 3 and {i["code"] for i in summary["issues"]} == {"not-sent"}


def test_quiet_json_prints_the_json_only(make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_schedule([good_row(1)])
    assert main(["validate", str(path), "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert _summary(captured.out)["counts"]["valid"] == 1


# --- the closing summary a person reads ------------------------------------------------------------------


def _summary_sheet_totals(path: Path) -> dict[int, dict[str, Decimal]]:
    """Project -> {"<status>": amount in currency units, "Total (cents)": cents} from the Summary sheet."""
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        rows = list(wb["Summary"].iter_rows(values_only=True))
    finally:
        wb.close()
    top = next(i for i, r in enumerate(rows) if r[0] == "Project ID")
    header = [str(h) for h in rows[top] if h is not None]
    skip = {"Project ID", "Currency", "Rows"}
    return {int(str(r[0])): {h: Decimal(str(v)) for h, v in zip(header, r, strict=False) if h not in skip}
            for r in rows[top + 1 :] if r[0] is not None}  # fmt: skip


def _terminal_totals(out: str) -> dict[int, tuple[int, str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("amount"))
    table = {}
    for line in lines[start + 1 :]:
        if not line.startswith("  project "):
            break
        _, workspace, rows, amount, *currency = line.split()  # the currency when Kantata told it
        table[int(workspace)] = (int(rows), amount)
    return table


def test_terminal_and_workbook_agree_on_amounts_per_project_for_a_dry_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "r.xlsx"
    assert main(["validate", str(SAMPLES / "billing_schedule.xlsx"), "-o", str(out)]) == 0
    terminal = _terminal_totals(capsys.readouterr().out)
    workbook = _summary_sheet_totals(out)
    assert sorted(terminal) == sorted(workbook) == [1001, 1002, 1003, 1004, 1005]
    for workspace, (_, amount) in terminal.items():
        assert Decimal(amount.replace(",", "")) == workbook[workspace]["valid"]  # both in currency units


def test_terminal_and_workbook_agree_after_an_upload(
    sandbox: Any, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    first = [good_row(n, workspace=1001 + n % 3) for n in range(9)]
    path = make_schedule(first)
    assert main(["upload", str(path), "-o", str(path.with_name("first.xlsx"))]) == 0
    capsys.readouterr()
    rows = [*first, ["Big", 123456789012, 1002, None, None, None], ["Bad", "x", 1003, None, None, None],
            ["Nope", 5, 1099, None, None, None]]  # fmt: skip
    path = make_schedule(rows, name="second")

    assert main(["upload", str(path)]) == 1

    out = capsys.readouterr().out
    terminal = _terminal_totals(out)
    workbook = _summary_sheet_totals(path.with_name("second.results.xlsx"))
    # project 1002: rows 1, 4 and 7 exist (10001 + 10004 + 10007 cents), "Big" is created: 123456789012 cents
    assert terminal[1002] == (4, "1,234,568,190.24")
    for workspace, (_rows, amount) in terminal.items():
        cents = workbook[workspace]
        assert Decimal(amount.replace(",", "")) == cents.get("created", 0) + cents.get("unchanged", 0)
    assert 1099 not in terminal  # rejected: nothing of it is in Kantata
    assert "next: fix the 1 invalid and 1 rejected rows (see the Errors sheet) and run the same command again" in out


def test_the_next_command_after_a_clean_dry_run_repeats_the_flags_typed(
    make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_schedule([good_row(1)], sheet="Sheet A")
    assert main(["validate", str(path), "--sheet", "Sheet A", "--currency-decimals", "3"]) == 0
    out = capsys.readouterr().out
    assert f"next: kantata-import upload {path} --sheet 'Sheet A' --currency-decimals 3; " in out
    assert "--online can tell" in out  # an offline check says what it could not check, and how
    assert "amounts with 3 decimals (--currency-decimals)" in out and "10.001" in out


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(min_value=0, max_value=4))
def test_amounts_are_shown_exactly(cents: int, decimals: int) -> None:
    shown = format_units(cents, decimals)
    assert Decimal(shown.replace(",", "")) == Decimal(cents).scaleb(-decimals)
    assert ("." in shown) == (decimals > 0) and shown.count(".") <= 1


def test_format_units_examples() -> None:
    assert format_units(123456, 2) == "1,234.56"
    assert format_units(-5, 2) == "-0.05"
    assert format_units(1500, 0) == "1,500"
    assert format_units(1234, 3) == "1.234"


def test_totals_past_int64_and_ids_past_2_53_are_exact_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two rows of 5e18 cents sum to 10**19, not to what pandas' int64 wraps to (-8,446,744,073,709,551,616), and
    the Summary sheet keeps project 9007199254740993 whole, not as the number 9007199254740992."""
    path = tmp_path / "big.csv"
    path.write_text("title,amount_in_cents,workspace_id\nA,5000000000000000000,1001\nB,5000000000000000000,1001\n"
                    "C,7,9007199254740993\n")  # fmt: skip
    assert main(["validate", str(path), "--json"]) == 0
    totals = {t["workspace_id"]: t["cents"]["valid"] for t in _summary(capsys.readouterr().out)["totals"]}
    assert totals == {1001: 10**19, 9007199254740993: 7}
    wb = openpyxl.load_workbook(tmp_path / "big.results.xlsx", read_only=True)
    try:
        rows = [r for r in wb["Summary"].iter_rows(values_only=True) if r and r[0] is not None]
    finally:
        wb.close()  # a read-only workbook holds its file open until closed
    at = next(i for i, r in enumerate(rows) if r[0] == "Project ID")
    # In currency units (two decimals), as exact text past what a number cell shows; the cents in the last column.
    assert [(str(r[0]), str(r[3]), str(r[-1])) for r in rows[at + 1 :]] == [
        ("1001", "100,000,000,000,000,000.00", str(10**19)), ("9007199254740993", "0.07", "7")]  # fmt: skip


def test_a_token_refused_midway_gives_exit_3_with_the_runs_counts_in_the_schema(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token revoked midway: exit 3 with the run's counts and `stopped` set, which the schema must allow
    (not only exit 3 with `error` set)."""
    import threading
    import time

    sandbox.reset()
    sandbox.set_faults(latency=0.2)
    path = tmp_path / "s.csv"
    path.write_text("title,amount_in_cents,workspace_id\n" + "".join(f"T{n},{n},1001\n" for n in range(300)))
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)

    def revoke() -> None:
        while sandbox.stats().get("POST /billing_milestones", 0) < 2:
            time.sleep(0.002)
        sandbox.set_token("revoked")

    watcher = threading.Thread(target=revoke, daemon=True)
    watcher.start()
    assert main(["upload", str(path), "--json", "--batch-size", "10", "--concurrency", "1"]) == 3
    summary = _summary(capsys.readouterr().out)  # valid against the schema
    assert summary["error"] is None and summary["stopped"]["kind"] == "token-rejected"
    assert summary["counts"]["created"] == len(sandbox.milestones()) > 0
    assert summary["counts"]["created"] + summary["counts"]["not_sent"] == 300
