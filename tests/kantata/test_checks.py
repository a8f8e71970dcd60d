"""`validate --online`: each check against the real sandbox over loopback HTTP, and what the look-ups cost."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from importer.cli.main import main
from importer.errors import ApiUnavailable, ExitCode, MissingToken
from importer.kantata.client import KantataClient, WorkspaceInfo
from importer.pipeline import RunResult, run_upload, run_validate
from importer.sandbox.server import DEFAULT_TOKEN
from importer.settings import Secret, Settings
from tests import forked_cli
from tests.conftest import MakeSchedule, good_row, milestone_id, read_results

ROOT = Path(__file__).resolve().parents[2]
AMOUNT_HEADERS = ["title", "amount", "workspace_id"]


@pytest.fixture
def settings(sandbox: Any) -> Settings:
    return Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))


def _online(path: Path, settings: Settings, **kwargs: Any) -> RunResult:
    return run_validate(path, settings=settings, **kwargs)


def _found(result: RunResult) -> list[tuple[str, str, str]]:
    return [(i.cell, i.code, i.severity) for i in result.issues]


def _errors_sheet(path: Path) -> list[tuple[Any, ...]]:
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        return [tuple(r[:8]) for r in wb["Errors"].iter_rows(min_row=2, values_only=True)]
    finally:
        wb.close()


@pytest.mark.parametrize("workspace", [1099, 4242], ids=["hidden from the token", "no such project"])
def test_a_project_the_token_cannot_see_is_an_error_in_its_cell(
    settings: Settings, make_schedule: MakeSchedule, workspace: int
) -> None:
    path = make_schedule([good_row(1), good_row(2, workspace=workspace), good_row(3, workspace=1005)])
    result = _online(path, settings)
    assert _found(result) == [("C3", "workspace-not-found", "error")]
    [issue] = result.issues
    assert issue.value == str(workspace) and issue.header == "workspace_id"
    assert f"Kantata has no project {workspace} that this token can see" in issue.message
    assert [r["status"] for r in read_results(result.output)] == ["valid", "invalid", "valid"]
    assert result.exit_code == ExitCode.ROWS_FAILED and result.counts["invalid"] == 1
    [entry] = _errors_sheet(result.output)
    assert entry[:5] == (3, "C", "workspace_id", str(workspace), "workspace-not-found")
    assert entry[7] == "error"


def test_a_task_of_another_project_is_an_error(settings: Settings, make_schedule: MakeSchedule) -> None:
    own, other = good_row(1), good_row(2)
    own[4], own[5] = 5001, "upon_completion"  # 5001 is a task of 1001
    other[4], other[5] = 5004, "upon_completion"  # 5004 is a task of 1002
    result = _online(make_schedule([own, other]), settings)
    assert _found(result) == [("E3", "story-in-other-workspace", "error")]
    assert result.issues[0].message == (
        'story_id: task 5004 ("Finance module go-live") belongs to project 1002, not to project 1001 of this row; '
        "use a task of project 1001, or correct the Project ID"
    )
    assert result.counts["valid"] == 1 and result.counts["invalid"] == 1


@pytest.mark.parametrize("story", [5999, 5099], ids=["no such task", "task of a hidden project"])
def test_a_task_the_token_cannot_see_is_an_error(settings: Settings, make_schedule: MakeSchedule, story: int) -> None:
    row = good_row(1)
    row[4] = story  # a fixed_date row may name a task too; it must still exist
    result = _online(make_schedule([good_row(0), row]), settings)
    assert _found(result) == [("E3", "story-not-found", "error")]
    assert f"Kantata has no task {story} that this token can see" in result.issues[0].message


def test_a_task_is_not_judged_when_the_project_is_already_wrong(
    settings: Settings, make_schedule: MakeSchedule
) -> None:
    row = good_row(1, workspace=4242)
    row[4] = 5004
    assert _found(_online(make_schedule([row]), settings)) == [("C2", "workspace-not-found", "error")]


def test_rows_already_uploaded_show_exists_with_their_id(
    sandbox: Any, settings: Settings, make_schedule: MakeSchedule
) -> None:
    first = make_schedule([good_row(n) for n in range(3)], name="first")
    assert run_upload(first, settings).counts["created"] == 3
    ids = {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}
    later = make_schedule([good_row(n) for n in range(4)], name="later")  # the same three rows and a new one

    result = _online(later, settings)

    assert result.counts == {
        "valid": 1,
        "created": 0,
        "unchanged": 3,
        "update": 0,
        "updated": 0,
        "conflict": 0,
        "invalid": 0,
        "rejected": 0,
        "not_sent": 0,
    }
    assert result.existing_found == 3 and result.exit_code == ExitCode.OK
    rows = read_results(result.output)
    assert [(r["status"], milestone_id(r)) for r in rows] == [
        ("unchanged", ids["Milestone 0"]),
        ("unchanged", ids["Milestone 1"]),
        ("unchanged", ids["Milestone 2"]),
        ("valid", None),
    ]
    assert len(sandbox.milestones()) == 3  # a dry run sends nothing
    assert all(not route.startswith("POST") for route in result.requests)
    again = _online(first, settings, output=first.with_name("again.xlsx"))
    assert again.counts["unchanged"] == 3
    # nothing to send: the one listing of this importer's milestones in the project finds every row's milestone
    # (no look-up by key) and shows none that no row matches; the project's currency, to show the amounts in
    assert again.requests == {"GET /billing_milestones": 1, "GET /workspaces": 1}
    assert [t.currency for t in again.totals] == ["USD"]


def test_rows_that_repeat_another_are_warned_about_but_stay_valid(
    settings: Settings, make_schedule: MakeSchedule
) -> None:
    again = good_row(1)
    credit = good_row(1)
    credit[5] = "upon_completion"  # same project, title, amount and date: a repeat, whatever its billing type
    credit[4] = 5001
    other_amount = good_row(1)
    other_amount[1] += 1
    path = make_schedule([good_row(1), again, other_amount, credit])
    for result in (_online(path, settings), run_validate(path, output=path.with_name("offline.xlsx"))):
        assert _found(result) == [("A3", "duplicate-row", "warning"), ("A5", "duplicate-row", "warning")]
        assert result.issues[0].message.startswith("same project, title, amount and date as row 2")
        assert result.counts["valid"] == 4 and result.exit_code == ExitCode.OK
        assert [e[7] for e in _errors_sheet(result.output)] == ["warning", "warning"]


def test_amounts_in_currency_units_must_fit_the_projects_currency(
    settings: Settings, make_schedule: MakeSchedule
) -> None:
    rows = [
        ["Yen, whole", "1500", 1004],  # read as 150000 subunits with the default 2 decimals: 100 times too much
        ["Yen, with sen", "12.50", 1004],  # JPY has no subunits
        ["Dinar, two decimals", "1.25", 1005],  # KWD has 3: 1.25 KWD is 1250, not 125
        ["Dollar", "19.99", 1001],  # fine
    ]
    result = _online(make_schedule(rows, headers=AMOUNT_HEADERS), settings)
    assert _found(result) == [
        ("B2", "amount-read-with-other-decimals", "error"),
        ("B3", "amount-decimals-for-currency", "error"),
        ("B4", "amount-read-with-other-decimals", "error"),
    ]
    messages = [i.message for i in result.issues]
    assert messages[0] == (
        "amount: 1500 was read as 150000 subunits (--currency-decimals 2), but project 1004 is in JPY, which has no "
        "subunits: it would be billed as 150,000 JPY, not 1500 JPY (1500 subunits); run again with "
        "--currency-decimals 0, or give this project's amounts in an Amount (cents) column when the schedule mixes "
        "currencies"
    )
    assert "12.50 has more decimals than JPY allows: project 1004 is in JPY, which has no subunits" in messages[1]
    assert "project 1005 is in KWD, which has 3 decimals: it would be billed as 0.125 KWD, not 1.25 KWD" in messages[2]
    assert [r["status"] for r in read_results(result.output)] == ["invalid", "invalid", "invalid", "valid"]


def test_an_upload_sends_no_amount_that_does_not_fit_its_projects_currency(
    sandbox: Any, settings: Settings, make_schedule: MakeSchedule
) -> None:
    """What validate --online reports, upload refuses before sending: 5000 in a yen project read with the
    default 2 decimals would be created as 500,000 yen, and exit 0."""
    sandbox.reset()
    rows = [["Yen", "5000", 1004], ["Dinar", "1.5", 1005], ["Yen, with sen", "12.50", 1004], ["Dollar", "19.99", 1001]]
    result = run_upload(make_schedule(rows, headers=AMOUNT_HEADERS), settings)
    assert _found(result) == [
        ("B2", "amount-read-with-other-decimals", "error"),
        ("B3", "amount-read-with-other-decimals", "error"),
        ("B4", "amount-decimals-for-currency", "error"),
    ]
    assert [r["status"] for r in read_results(result.output)] == ["invalid", "invalid", "invalid", "created"]
    assert [(m["title"], m["amount_in_cents"]) for m in sandbox.milestones()] == [("Dollar", 1999)]
    assert result.exit_code == ExitCode.ROWS_FAILED
    yen = make_schedule([["Yen", "5000", 1004]], headers=AMOUNT_HEADERS, name="yen")
    assert run_upload(yen, replace(settings, currency_decimals=0)).counts["created"] == 1
    assert sandbox.milestones()[-1]["amount_in_cents"] == 5000  # 5000 yen, as the cell says


def test_currency_decimals_that_match_the_project_pass_and_others_in_the_same_file_do_not(
    settings: Settings, make_schedule: MakeSchedule
) -> None:
    rows = [["Yen", "1500", 1004], ["Dollar", "15", 1001]]
    result = _online(make_schedule(rows, headers=AMOUNT_HEADERS), replace(settings, currency_decimals=0))
    assert _found(result) == [("B3", "amount-read-with-other-decimals", "error")]  # 15 USD is 1500 cents, not 15
    dinars = make_schedule([["Dinar", "1.234", 1005]], headers=AMOUNT_HEADERS, name="kwd")
    assert _online(dinars, replace(settings, currency_decimals=3)).issues == []


def test_kd_as_kantata_shows_kwd_is_read_in_a_kwd_project_and_refused_in_another(
    settings: Settings, make_schedule: MakeSchedule
) -> None:
    rows = [["Dinar", "KD 7", 1005], ["Dinar, after", "1,234.500 KD", 1005], ["Dollar project", "KD 7", 1001]]
    path = make_schedule(rows, headers=AMOUNT_HEADERS, name="kd")
    result = _online(path, replace(settings, currency_decimals=3, currency_decimals_given=True))
    assert _found(result) == [("B4", "amount-in-other-currency", "error")]
    assert "KD 7 is written in KD, but project 1001 is in USD" in result.issues[0].message
    assert [r["api_amount_in_cents"] for r in read_results(result.output)][:2] == [7000, 1234500]


def test_cents_in_yen_and_dinar_projects_are_explained_in_a_note(
    settings: Settings, make_schedule: MakeSchedule
) -> None:
    rows = [good_row(1), good_row(2, workspace=1004), good_row(3, workspace=1005), good_row(4, workspace=1004)]
    result = _online(make_schedule(rows), settings)
    assert result.issues == [] and result.counts["valid"] == 4
    assert result.notes[:2] == [
        'project 1004 ("Daikoku Mobile App") is in JPY, which has no subunits: its amount_in_cents values count '
        "whole JPY (row 3: 10002 is 10,002 JPY)",
        'project 1005 ("Gulf Logistics Portal") is in KWD, which has 3 decimals: its amount_in_cents values count '
        "1/1000 of a KWD (row 4: 10003 is 10.003 KWD)",
    ]
    wb = openpyxl.load_workbook(result.output, read_only=True)
    try:  # a read-only workbook holds its file open until closed: left to the collector, it warns in another test
        summary = [r[1] for r in wb["Summary"].iter_rows(values_only=True)]
    finally:
        wb.close()
    assert result.notes[0] in summary


def test_without_financial_access_an_amount_is_sent_only_with_decimals_the_user_chose(
    sandbox: Any, settings: Settings, make_schedule: MakeSchedule
) -> None:
    """Kantata withholding the currencies, 5000 in a yen project would go as 500,000 yen (the default 2
    decimals) and "EUR 10.00" in a GBP project as 10.00 GBP. Such an Amount is refused unless the user chose
    --currency-decimals, and one naming a currency always (it cannot be checked); cents need no currency."""
    sandbox.reset()
    sandbox.set_faults(no_financial_access=True)
    rows = [["Yen", "1500", 1004], ["Pounds as EUR", "EUR 10.00", 1003], ["X", "1", 1001]]
    path = make_schedule(rows, headers=AMOUNT_HEADERS)
    result = _online(path, settings)
    assert _found(result) == [("B2", "amount-currency-unknown", "error"), ("B3", "amount-currency-unknown", "error"),
                              ("B4", "amount-currency-unknown", "error")]  # fmt: skip
    assert "pass --currency-decimals with that currency's decimals" in result.issues[0].message
    assert "EUR 10.00 is written in EUR, but Kantata did not give the currency of project 1003" in (
        result.issues[1].message
    )
    note = (
        "Kantata did not give the currency of project 1001, 1003, 1004 (it does only to users with financial access "
        "to a project): amounts there were not checked against their currency"
    )
    assert result.notes[0] == note
    uploaded = run_upload(path, settings)  # the same check before sending
    assert uploaded.counts["invalid"] == 3 and sandbox.milestones() == []
    chosen = run_upload(path, replace(settings, currency_decimals=0, currency_decimals_given=True))
    assert chosen.counts == {**chosen.counts, "created": 2, "invalid": 1}  # the user said: no decimals
    assert sorted((m["title"], m["amount_in_cents"]) for m in sandbox.milestones()) == [("X", 1), ("Yen", 1500)]
    cents = make_schedule([good_row(1, workspace=1004)], name="cents")
    assert run_upload(cents, settings).counts["created"] == 1


def test_look_ups_are_batched_300_rows_over_5_projects_take_3_requests(
    sandbox: Any, settings: Settings, make_schedule: MakeSchedule
) -> None:
    rows = []
    for n in range(300):
        row = good_row(n, workspace=1001 + n % 5)
        if n % 5 == 0:
            row[4], row[5] = 5001 + n % 3, "upon_completion"  # tasks 5001-5003 of project 1001
        rows.append(row)
    result = _online(make_schedule(rows), settings)
    assert result.counts["valid"] == 300 and result.issues == []
    # 300 keys, but the one listing of this importer's milestones in the 5 projects (one page: it holds none)
    # settles every derived key, and shows that none is there that no row matches
    expected = {"GET /billing_milestones": 1, "GET /workspaces": 1, "GET /stories": 1}
    assert result.requests == expected
    assert sandbox.stats() == expected
    assert any(note.startswith("online checks: 3 requests to Kantata") for note in result.notes)


def test_many_projects_are_asked_for_200_at_a_time(
    sandbox: Any, settings: Settings, make_schedule: MakeSchedule
) -> None:
    rows = [good_row(n, workspace=1001 + n) for n in range(450)]  # 450 different ids, 1001-1005 among them
    result = _online(make_schedule(rows), settings)
    assert sandbox.stats()["GET /workspaces"] == 3  # 200 + 200 + 50
    assert result.counts == {
        "valid": 5,
        "created": 0,
        "unchanged": 0,
        "update": 0,
        "updated": 0,
        "conflict": 0,
        "invalid": 445,
        "rejected": 0,
        "not_sent": 0,
    }


def test_the_client_caches_look_ups_and_reads_every_page(
    sandbox: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.token is not None
    client = KantataClient(settings, settings.token)
    assert list(client.workspaces([1001, 1099])) == [1001]
    assert list(client.workspaces([1099, 1001])) == [1001]  # both known now, the miss included
    assert list(client.workspaces([1001, 1002])) == [1001, 1002]
    assert client.stats.routes["GET /workspaces"] == 2
    monkeypatch.setattr("importer.kantata.client.PER_PAGE", 2)
    everything = client.all_workspaces()
    assert [w.id for w in everything] == [1001, 1002, 1003, 1004, 1005]
    assert everything[3] == WorkspaceInfo(1004, "Daikoku Mobile App", "JPY")
    assert client.stats.routes["GET /workspaces"] == 2 + 3  # 5 projects, 2 a page
    stories = client.stories([5004, 5099, 5001])
    assert {s: (i.workspace_id, i.title) for s, i in stories.items()} == {
        5001: (1001, "Design sign-off"),
        5004: (1002, "Finance module go-live"),
    }
    client.close()


def test_a_missing_token_or_an_unreachable_kantata_stops_with_exit_3_or_4(
    make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    path = make_schedule([good_row(1)])
    with pytest.raises(MissingToken):
        run_validate(path, settings=Settings(base_url="http://127.0.0.1:9/api/v1"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    dead = Settings(base_url=f"http://127.0.0.1:{port}/api/v1", token=Secret("t"), max_attempts=2, backoff_base=0.01)
    with pytest.raises(ApiUnavailable, match="did not answer GET billing_milestones after 2 tries") as info:
        run_validate(path, settings=dead)
    assert info.value.exit_code == ExitCode.STOPPED
    assert not path.with_name("schedule.results.xlsx").exists()


def test_cli_a_refused_token_is_exit_3_and_no_token_never_prompts_with_non_interactive(
    sandbox: Any, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_schedule([good_row(1)])
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    assert main(["validate", str(path), "--online", "--non-interactive"]) == 3
    assert "no API token: set KANTATA_API_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("KANTATA_API_TOKEN", "not-the-token")
    assert main(["validate", str(path), "--online"]) == 3
    assert "Kantata refused the API token: HTTP 401" in capsys.readouterr().err
    assert not path.with_name("schedule.results.xlsx").exists()


def test_cli_online_against_the_environments_kantata_prints_notes_and_issues(
    sandbox: Any, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    path = make_schedule([good_row(1), good_row(2, workspace=4242), good_row(1)])
    assert main(["validate", str(path), "--online"]) == 1
    captured = capsys.readouterr()
    assert f"kantata: {sandbox.url} (token from KANTATA_API_TOKEN)" in captured.err
    assert DEFAULT_TOKEN not in captured.err + captured.out
    lines = captured.err.splitlines()
    assert any(line.startswith("note: online checks: 2 requests to Kantata") for line in lines)  # no task: no /stories
    assert any("workspace-not-found" in line and line.split()[:2] == ["3", "C"] for line in lines)
    assert any("duplicate-row" in line and "warning: same project" in line for line in lines)
    assert '3 rows read (sheet "Billing"): 2 valid, 1 invalid' in captured.out


def test_cli_subprocess_validate_online_sandbox_on_the_mistakes_sample(tmp_path: Path) -> None:
    sample = tmp_path / "schedule_with_mistakes.xlsx"
    shutil.copy(ROOT / "samples" / "schedule_with_mistakes.xlsx", sample)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANTATA_")} | {"KANTATA_API_TOKEN": ""}
    done = forked_cli.run(["validate", str(sample), "--online", "--sandbox"], env=env)
    assert done.returncode == 1, done.stderr
    assert "(token from the built-in sandbox)" in done.stderr
    assert "note: online checks: 3 requests to Kantata (GET /billing_milestones 1, GET /stories 1, GET " \
           "/workspaces 1), nothing sent" in done.stderr  # fmt: skip
    table = [line.split()[:3] for line in done.stderr.splitlines() if line[:6].strip().isdigit()]
    assert ["11", "E", "story-in-other-workspace"] in table and ["12", "C", "workspace-not-found"] in table
    assert done.stdout.splitlines()[0] == '11 rows read (sheet "Billing"): 2 valid, 9 invalid'
    statuses = {r["_row"]: r["status"] for r in read_results(tmp_path / "schedule_with_mistakes.results.xlsx")}
    assert statuses[11] == statuses[12] == "invalid" and statuses[2] == statuses[10] == "valid"


def test_issue_order_is_by_row_then_column(settings: Settings, make_schedule: MakeSchedule) -> None:
    row = [*good_row(1, workspace=1004)[:3], dt.date(2026, 1, 1), 5004, "upon_completion"]
    headers = ["title", "amount", "workspace_id", "date_to_invoice", "story_id", "billing_type"]
    row[1] = "1500"
    result = _online(make_schedule([row], headers=headers), settings)
    assert [(i.column, i.code) for i in result.issues] == [
        ("B", "amount-read-with-other-decimals"),
        ("E", "story-in-other-workspace"),
    ]


def test_cli_when_every_row_is_already_in_kantata_there_is_nothing_to_upload(
    sandbox: Any, settings: Settings, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = make_schedule([good_row(n) for n in range(3)])
    run_upload(path, settings, output=path.with_name("up.xlsx"))
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    assert main(["validate", str(path), "--online"]) == 0
    captured = capsys.readouterr()
    assert ("note: online checks: 2 requests to Kantata (GET /billing_milestones 1, GET /workspaces 1), nothing "
            "sent") in captured.err  # fmt: skip
    assert captured.out.splitlines()[0] == '3 rows read (sheet "Billing"): 3 unchanged'
    assert captured.out.splitlines()[-1] == "next: nothing to upload: every row is already in Kantata"


def test_the_issue_table_keeps_a_space_after_the_longest_code(
    make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    """amount-read-with-other-decimals is 31 characters: the code column widens instead of running into the
    message."""
    path = make_schedule([["Yen", "1500", 1004], ["Bad", "x", 1001]], headers=AMOUNT_HEADERS)
    assert main(["validate", str(path), "--sandbox"]) == ExitCode.ROWS_FAILED
    lines = [line for line in capsys.readouterr().err.splitlines() if line.lstrip().startswith(("row", "2 ", "3 "))]
    assert [line.split()[2] for line in lines] == ["code", "amount-read-with-other-decimals", "amount-not-a-number"]
    starts = set()
    for line in lines:
        code = line.split()[2]
        after = line.index(code) + len(code)
        rest = line[after:]
        assert rest.startswith(" "), line
        starts.add(after + len(rest) - len(rest.lstrip(" ")))  # where the message begins
    assert len(starts) == 1, lines


def test_a_ctrl_c_while_the_currencies_are_asked_leaves_every_row_not_sent(
    settings: Settings, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The currency question comes before the look-ups; a Ctrl-C during it ends the run as one during them does:
    every row not_sent, the workbook written, exit 130."""

    def interrupted(self: KantataClient, ids: Any, **kwargs: Any) -> dict[int, WorkspaceInfo]:
        if threading.current_thread() is threading.main_thread():  # Ctrl-C reaches the main thread only
            raise KeyboardInterrupt
        return {}

    monkeypatch.setattr(KantataClient, "workspaces", interrupted)
    result = run_upload(make_schedule([["A", "1.00", 1001], ["B", "2.00", 1002]], headers=AMOUNT_HEADERS), settings)
    assert int(result.exit_code) == 130 and result.stopped is not None
    assert [r["status"] for r in read_results(result.output)] == ["not_sent", "not_sent"]


def test_the_online_dry_runs_summary_counts_only_the_rows_still_to_be_created(
    sandbox: Any, settings: Settings, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """After an upload, `validate --online` counts the rows found in Kantata as unchanged, not under "to be
    created (valid rows)": the totals are only the new row's. What is in Kantata comes next, now and after."""
    sandbox.reset()
    run_upload(make_schedule([good_row(1), good_row(2)], name="first"), settings)
    path = make_schedule([good_row(1), good_row(2), good_row(3)], name="second")  # one new row: 10003 cents
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    assert main(["validate", str(path), "--online"]) == 0
    out = capsys.readouterr().out
    assert "3 rows read" in out and "1 valid, 2 unchanged" in out
    assert [line.split() for line in out.splitlines() if line.startswith("  project")] == [
        ["project", "1001", "1", "100.03", "USD"],
        ["project", "1001", "200.03", "USD", "300.06", "USD", "+100.03", "USD"],
    ]


def test_a_project_whose_rows_are_all_in_kantata_still_shows_its_amounts_in_its_currency(
    sandbox: Any, settings: Settings, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Yen have no decimals: with the project's currency not asked for (nothing left to check in it), 20,001 yen
    would be shown as 200.01."""
    path = make_schedule([good_row(n, workspace=1004) for n in range(2)])
    run_upload(path, settings, output=path.with_name("up.xlsx"))
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    assert main(["validate", str(path), "--online", "-o", str(path.with_name("plan.xlsx"))]) == 0
    shown = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("  project")]
    assert shown == [["project", "1004", "20,001", "JPY", "20,001", "JPY", "0", "JPY"]]
    assert [r["amount_in_units"] for r in read_results(path.with_name("plan.xlsx"))] == [10000, 10001]
