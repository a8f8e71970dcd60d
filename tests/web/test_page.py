"""The page as a person uses it, in a real Chromium: drop, check, connect, plan, upload, stop, resume, download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from importer.sandbox import DEFAULT_TOKEN
from importer.web import Served
from tests import forked_cli
from tests.conftest import MakeSchedule, good_row, read_results

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


def _connect(page: Page, token: str = DEFAULT_TOKEN) -> None:
    page.fill("#token", token)
    page.click("#connect")


def test_mistakes_are_shown_at_their_excel_cells(page: Page, shots: Path) -> None:
    page.set_input_files("#file", SAMPLES / "schedule_with_mistakes.xlsx")
    expect(page.locator("#issues")).to_be_visible()
    cli = _cli("validate", SAMPLES / "schedule_with_mistakes.xlsx", page)
    counts = ", ".join(f"{n} {s}" for s, n in cli["counts"].items() if n)
    expect(page.locator("#counts")).to_have_text(f"{cli['rows']} rows: {counts}")
    rows = page.locator("#issues tbody tr")
    expect(rows).to_have_count(len(cli["issues"]))
    first = cli["issues"][0]
    expect(rows.nth(0).locator("td")).to_have_text([str(first["row"]), first["column"] or "", str(first["value"] or ""),
                                                     first["message"]])  # fmt: skip
    page.screenshot(path=shots / "1-check.png", full_page=True)


def test_a_wrong_token_says_so(page: Page, make_schedule: MakeSchedule, shots: Path) -> None:
    page.set_input_files("#file", make_schedule([good_row(1)]))
    _connect(page, "not-the-sandbox-token")
    expect(page.locator("#error")).to_contain_text("token")
    expect(page.locator("#plan")).to_be_hidden()
    assert "not-the-sandbox-token" not in page.content()
    page.screenshot(path=shots / "2-wrong-token.png", full_page=True)


def test_from_the_file_to_the_results_workbook(page: Page, served: Served, sandbox: Any, shots: Path,
                                                tmp_path: Path) -> None:  # fmt: skip
    schedule = SAMPLES / "billing_schedule.xlsx"
    page.set_input_files("#file", schedule)
    _connect(page)
    expect(page.locator("#plan")).to_be_visible()
    plan = _cli("validate", schedule, page, online=True, sandbox=sandbox)
    expect(page.locator("#plan-counts")).to_contain_text(f"to create: {plan['counts']['valid']}, already in Kantata: 0")
    expect(page.locator("#totals tbody tr")).to_have_count(len(plan["totals"]))
    yen = next(t for t in plan["totals"] if t["currency"] == "JPY")  # whole yen: no decimals shown
    expect(page.locator("#totals tbody tr", has_text="JPY").locator("td").nth(3)).to_have_text(
        f"{yen['cents']['valid']:,}"
    )
    page.screenshot(path=shots / "3-plan.png", full_page=True)
    page.click("#upload")
    expect(page.locator("#done")).to_be_visible()
    expect(page.locator("#done-counts")).to_have_text(f"Finished: {plan['counts']['valid']} created")
    expect(page.locator("#bar")).to_have_attribute("value", str(plan["counts"]["valid"]))
    page.screenshot(path=shots / "4-done.png", full_page=True)
    with page.expect_download() as download:
        page.click("#results")
    saved = tmp_path / "downloaded.xlsx"
    download.value.save_as(saved)
    rows = read_results(saved)
    assert [r["status"] for r in rows] == ["created"] * plan["counts"]["valid"]
    assert {str(r["billing_milestone_id"]) for r in rows} == {str(m["id"]) for m in sandbox.milestones()}
    with page.expect_download() as download:
        page.click("#summary")
    summary = json.loads(Path(download.value.path()).read_text())
    assert summary["counts"]["created"] == plan["counts"]["valid"] and summary["exit_code"] == 0
    # The CLI, run again on the same schedule, finds every row the page created
    again = _cli("upload", schedule, page, sandbox=sandbox)
    assert again["counts"]["unchanged"] == plan["counts"]["valid"] and again["counts"]["created"] == 0


def test_stop_then_resume_sends_nothing_twice(page: Page, sandbox: Any, make_schedule: MakeSchedule,
                                              shots: Path) -> None:  # fmt: skip
    schedule = make_schedule([good_row(n) for n in range(60)])
    page.set_input_files("#file", schedule)
    _connect(page)
    expect(page.locator("#upload")).to_be_visible()
    sandbox.set_faults(latency=0.5)  # 6 batches, 2 at a time: 1.5 s to press Stop in
    page.click("#upload")
    expect(page.locator("#progress-text")).to_contain_text("rows sent")  # a first batch is in
    page.click("#stop")
    expect(page.locator("#done-counts")).to_contain_text("Stopped: ")
    expect(page.locator("#done-counts")).to_contain_text("not_sent")
    page.screenshot(path=shots / "5-stopped.png", full_page=True)
    # Batches that had left when the Stop landed may still be written by Kantata after the answer was given up
    # on: those rows are not_sent ("may have been created"), and the resume finds them instead of sending them.
    assert len(sandbox.milestones()) <= 60
    sandbox.set_faults(latency=0.0)
    page.click("#again")
    # The rows the stopped run created are reported `created` again, as an uninterrupted run would have (the
    # journal knows this session sent them); Kantata holds each once.
    expect(page.locator("#done-counts")).to_have_text("Finished: 60 created")
    page.screenshot(path=shots / "6-resumed.png", full_page=True)
    assert len(sandbox.milestones()) == 60
    assert len({m["title"] for m in sandbox.milestones()}) == 60


def _cli(command: str, schedule: Path, page: Page, *, online: bool = False, sandbox: Any = None) -> Any:
    """The CLI's --json summary of the same schedule (its results beside a copy, so the page's stay apart)."""
    args = [command, str(schedule), "--json", "-q",
            "--output", str(_scratch() / f"{command}.results.xlsx")]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "HOME": str(_scratch()), "PYTHONPATH": str(ROOT)}
    if sandbox is not None:
        env |= {"KANTATA_BASE_URL": sandbox.url, "KANTATA_API_TOKEN": DEFAULT_TOKEN}
        args += ["--online"] if command == "validate" else []
        args += ["--non-interactive", "--batch-size", "10"] if command == "upload" else ["--non-interactive"]
    done = forked_cli.run(args, env=env)
    return json.loads(done.stdout)


_SCRATCH: list[Path] = []


def _scratch() -> Path:
    import tempfile

    if not _SCRATCH:
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="kantata-web-cli-")))
    return _SCRATCH[0]
