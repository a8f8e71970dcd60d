"""The blank schedule: generated from the column table, committed, and the committed file still matches."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from openpyxl.utils import get_column_letter

from importer.cli.main import main
from importer.errors import AuthError, ConfigError
from importer.pipeline import run_template, run_validate
from importer.results.template import COLUMNS, write_template
from importer.sandbox.server import DEFAULT_TOKEN
from importer.schedule.loader import load_schedule
from importer.settings import Secret, Settings

COMMITTED = Path(__file__).resolve().parents[2] / "templates" / "billing_schedule.xlsx"


def _content(path: Path) -> dict[str, Any]:
    """Everything a user sees: cell values per sheet, and each data validation's range, type and list."""
    wb = openpyxl.load_workbook(path)
    return {
        ws.title: {
            "cells": [[c.value for c in row] for row in ws.iter_rows()],
            "validations": sorted(
                (str(dv.sqref), dv.type, dv.formula1, dv.promptTitle, dv.prompt)
                for dv in ws.data_validations.dataValidation
            ),
            "freeze": ws.freeze_panes,
        }
        for ws in wb.worksheets
    }


def test_committed_template_matches_what_the_code_writes(tmp_path: Path) -> None:
    fresh = write_template(tmp_path / "fresh.xlsx")
    assert _content(COMMITTED) == _content(fresh), "run: kantata-import template -o templates/billing_schedule.xlsx"


def test_template_headers_dropdown_formats_and_instructions(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    assert main(["template", "-o", str(path)]) == 0
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Billing", "Example", "Instructions"]
    ws = wb["Billing"]
    assert [c.value for c in ws[1]] == [f.label for f in COLUMNS]
    validations = {str(dv.sqref): dv for dv in ws.data_validations.dataValidation}
    billing = next(i for i, f in enumerate(COLUMNS) if f.name == "billing_type")
    letter = get_column_letter(billing + 1)
    dropdown = validations[f"{letter}2:{letter}1001"]
    assert dropdown.type == "list" and dropdown.formula1 == '"fixed_date,upon_completion"'
    assert [c.value for c in ws[1]] == ["Title", "Amount", "Project ID", "Date to invoice", "Billing type", "Task ID",
                                        "Reference"]  # what a finance user fills, and nothing else  # fmt: skip
    amount = validations["B2:B1001"]  # in currency units, shown with separators
    assert amount.type == "decimal" and ws["B2"].number_format == "#,##0.00" or ws.column_dimensions["B"].width > 0
    assert ws.freeze_panes == "A2"
    help_lines = [r[0].value for r in wb["Instructions"].iter_rows() if r[0].value]
    assert {f.label for f in COLUMNS} <= set(help_lines)


def test_template_is_a_schedule_the_loader_accepts(tmp_path: Path) -> None:
    raw = load_schedule(write_template(tmp_path / "t.xlsx"))
    assert raw.sheet == "Billing" and raw.header_row == 1 and len(raw.frame) == 0
    assert set(raw.fields) == {f.name for f in COLUMNS if f.name != "Reference"}  # Reference: the user's own, kept
    assert raw.headers[-1] == "Reference"


def test_template_never_overwrites_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.xlsx"
    path.write_bytes(b"my work")
    with pytest.raises(ConfigError, match="already exists"):
        write_template(path)
    assert path.read_bytes() == b"my work"
    assert main(["template", "-o", str(path)]) == 2
    assert "add --force to replace it" in capsys.readouterr().err
    assert main(["template", "-o", str(path), "--force", "--external-reference"]) == 0
    header = _sheet(path, "Billing")[0]
    assert header[:7] == tuple(f.label for f in COLUMNS) and "External ID" in header


def _sheet(path: Path, name: str) -> list[tuple[Any, ...]]:
    wb = openpyxl.load_workbook(path)
    return [tuple(row) for row in wb[name].iter_rows(values_only=True)]


def test_example_sheet_has_a_fixed_date_and_an_upon_completion_row(tmp_path: Path) -> None:
    path = write_template(tmp_path / "t.xlsx")
    header, fixed, completion = _sheet(path, "Example")
    labels = [f.label for f in COLUMNS]
    assert list(header) == [*labels, "Notes"]
    as_read = [dict(zip(labels, row, strict=False)) for row in (fixed, completion)]
    assert [(r["Title"], r["Amount"], r["Project ID"], r["Date to invoice"], r["Task ID"], r["Billing type"])
            for r in as_read] == [
        ("Design phase - sign-off", 12500, 1001, dt.datetime(2026, 3, 31), None, "fixed_date"),
        ("Launch - on completion", 25000, 1001, None, 5003, "upon_completion"),
    ]  # fmt: skip
    assert fixed[-1].startswith("fixed_date: invoiceable on 2026-03-31") and completion[-1].startswith(
        "upon_completion: invoiceable when task 5003"
    )
    assert "Workspaces" not in openpyxl.load_workbook(COMMITTED).sheetnames  # the committed one has no token


def test_example_rows_pass_every_check_including_the_online_ones(sandbox: Any, tmp_path: Path) -> None:
    path = write_template(tmp_path / "t.xlsx")
    assert load_schedule(path).sheet == "Billing"  # the loader still picks the sheet to fill in
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    checked = run_validate(path, sheet="Example", settings=settings)
    assert checked.issues == [] and checked.counts["valid"] == 2


def test_template_sandbox_adds_the_projects_the_token_can_see(
    sandbox: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.xlsx"
    assert main(["template", "-o", str(path), "--sandbox"]) == 0
    assert "(Workspaces sheet: 5 projects, Tasks sheet: " in capsys.readouterr().out
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Billing", "Example", "Workspaces", "Tasks", "Instructions"]
    tasks = _sheet(path, "Tasks")
    assert tasks[0] == ("Project ID", "Task ID", "Task", "Project") and (1001, 5003) in {r[:2] for r in tasks[1:]}
    lists = {str(dv.sqref): dv.formula1 for dv in wb["Billing"].data_validations.dataValidation}
    assert lists["C2:C1001"] == f"Workspaces!$A$2:$A${len(_sheet(path, 'Workspaces'))}"  # the dropdowns
    assert lists["F2:F1001"] == f"Tasks!$B$2:$B${len(tasks)}"
    assert _sheet(path, "Workspaces") == [
        ("Project ID", "Title", "Currency", "Amount (cents) would count"),
        (1001, "Acme Website Redesign", "USD", "1/100 of a USD"),
        (1002, "Borealis ERP Rollout", "EUR", "1/100 of a EUR"),
        (1003, "Cobalt Data Migration", "GBP", "1/100 of a GBP"),
        (1004, "Daikoku Mobile App", "JPY", "whole JPY"),
        (1005, "Gulf Logistics Portal", "KWD", "1/1000 of a KWD"),
    ]  # 1099 exists but the token cannot see it
    assert load_schedule(path).sheet == "Billing"


def test_template_online_uses_the_environment_and_shows_a_withheld_currency(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    sandbox.set_faults(no_financial_access=True)
    assert main(["template", "-o", str(tmp_path / "t.xlsx"), "--online"]) == 0
    rows = _sheet(tmp_path / "t.xlsx", "Workspaces")
    assert rows[4] == (1004, "Daikoku Mobile App", None,
                       "(Kantata shows the currency only to users with financial access)")  # fmt: skip
    assert sandbox.stats() == {"GET /workspaces": 1, "GET /stories": 1}


def test_template_online_refuses_before_asking_kantata(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    path = tmp_path / "t.xlsx"
    assert main(["template", "-o", str(path), "--online", "--non-interactive"]) == 3
    assert "no API token" in capsys.readouterr().err and not path.exists()
    path.write_bytes(b"mine")
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    assert main(["template", "-o", str(path), "--online"]) == 2
    assert "already exists" in capsys.readouterr().err and path.read_bytes() == b"mine"
    assert sandbox.stats() == {}
    settings = Settings(base_url=sandbox.url, token=Secret("wrong"))
    with pytest.raises(AuthError):
        run_template(tmp_path / "other.xlsx", settings)
    assert not (tmp_path / "other.xlsx").exists()
