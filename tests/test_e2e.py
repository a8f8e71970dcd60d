"""The CLI end to end against the real sandbox over real HTTP, results read back with openpyxl."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import openpyxl
import pytest

import importer.pipeline
from importer.cli.main import main
from importer.errors import ExitCode
from importer.pipeline import run_upload
from importer.sandbox.server import DEFAULT_TOKEN
from importer.schedule import OUTCOME_COLUMNS, load_schedule, validate_rows
from importer.settings import Secret, Settings
from tests.conftest import MakeSchedule, good_row, milestone_id, read_results

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    return {**os.environ}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _by_title(sandbox: Any) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for m in sandbox.milestones():
        out.setdefault(str(m["title"]), []).append(m)
    return out


def test_upload_creates_each_row_once_and_the_workbook_holds_the_sandbox_ids(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [good_row(n) for n in range(250)]
    path = make_schedule(rows)
    before = _digest(path)

    assert main(["upload", str(path)]) == 0

    out = capsys.readouterr().out
    assert "250 rows read" in out and "250 created" in out
    assert sandbox.stats()["POST /billing_milestones"] == 3  # 100 + 100 + 50
    results = read_results(path.with_name("schedule.results.xlsx"))
    assert [r["status"] for r in results] == ["created"] * 250
    assert [r["_row"] for r in results] == list(range(2, 252))
    in_sandbox = {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}
    assert len(in_sandbox) == 250
    assert {r["title"]: milestone_id(r) for r in results} == in_sandbox
    amounts = {str(m["title"]): m["amount_in_cents"] for m in sandbox.milestones()}
    assert all(amounts[f"Milestone {n}"] == 10000 + n for n in range(250))
    assert _digest(path) == before  # the input is never modified


def test_second_run_creates_nothing_and_reports_exists_with_the_first_ids(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule
) -> None:
    path = make_schedule([good_row(n) for n in range(30)])
    assert main(["upload", str(path), "-o", str(path.with_name("first.xlsx"))]) == 0
    first = {r["title"]: milestone_id(r) for r in read_results(path.with_name("first.xlsx"))}
    posts = sandbox.stats()["POST /billing_milestones"]

    assert main(["upload", str(path), "-o", str(path.with_name("second.xlsx"))]) == 0

    second = read_results(path.with_name("second.xlsx"))
    assert {r["status"] for r in second} == {"unchanged"}
    assert {r["title"]: milestone_id(r) for r in second} == first
    assert sandbox.stats()["POST /billing_milestones"] == posts
    assert len(sandbox.milestones()) == 30


def test_invalid_rows_are_never_sent_and_exit_code_is_1(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule
) -> None:
    rows = [good_row(1), ["Bad amount", "12.50", 1001, None, None, "fixed_date"], good_row(2),
            ["Needs task", 500, 1001, None, None, "upon_completion"]]  # fmt: skip
    path = make_schedule(rows)
    assert main(["upload", str(path)]) == 1
    assert sorted(_by_title(sandbox)) == ["Milestone 1", "Milestone 2"]
    results = {r["_row"]: r for r in read_results(path.with_name("schedule.results.xlsx"))}
    # On the row itself, each message names its column by its header.
    assert results[3]["status"] == "invalid" and results[3]["errors"].startswith('amount_in_cents: "12.50"')
    assert results[5]["status"] == "invalid" and "story_id" in results[5]["errors"]
    assert milestone_id(results[3]) is None


@pytest.mark.parametrize("online", [False, True])
def test_a_schedule_with_no_valid_row_still_gets_its_workbook(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, online: bool
) -> None:
    path = make_schedule([["Bad amount", "12.50", 1001, None, None, "fixed_date"], ["", 5, 1001, None, None, None]])
    command = ["validate", str(path), "--online"] if online else ["upload", str(path)]
    assert main(command) == 1
    results = read_results(path.with_name("schedule.results.xlsx"))
    assert [r["status"] for r in results] == ["invalid", "invalid"]
    assert sandbox.stats().get("POST /billing_milestones", 0) == 0


@pytest.mark.parametrize("error_index", [False, True])
@pytest.mark.parametrize("partial_create", [False, True])
def test_rejected_rows_get_kantatas_message_and_the_rest_are_created_once(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, partial_create: bool, error_index: bool
) -> None:
    sandbox.set_faults(partial_create=partial_create, error_index=error_index)
    rows = [good_row(n) for n in range(40)]
    rows[7] = ["Other project's task", 100, 1001, None, 5004, "upon_completion"]  # 5004 is in 1002
    rows[31] = ["Hidden project", 100, 1099, None, None, "fixed_date"]
    path = make_schedule(rows)

    assert main(["upload", str(path)]) == 1

    titles = _by_title(sandbox)
    assert all(len(v) == 1 for v in titles.values())  # nothing twice
    assert len(titles) == 38 and "Hidden project" not in titles
    results = {r["_row"]: r for r in read_results(path.with_name("schedule.results.xlsx"))}
    assert results[9]["status"] == "rejected" and "workspace" in results[9]["errors"].lower()
    assert results[33]["status"] == "rejected" and "Workspace not found" in results[33]["errors"]
    ids = {str(m["title"]): str(m["id"]) for m in sandbox.milestones()}
    created = {r["title"]: milestone_id(r) for r in results.values() if r["status"] == "created"}
    assert created == ids


def test_token_refused_exits_3_and_sends_nothing(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("KANTATA_API_TOKEN", "wrong-token-123")
    path = make_schedule([good_row(1)])
    assert main(["upload", str(path)]) == 3
    err = capsys.readouterr().err
    assert "refused the API token" in err and "wrong-token-123" not in err
    assert sandbox.milestones() == []


def test_missing_token_non_interactive_exits_3(
    sandbox: Any, make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_schedule([good_row(1)])
    assert main(["upload", str(path), "--base-url", sandbox.url, "--non-interactive"]) == 3
    assert "KANTATA_API_TOKEN" in capsys.readouterr().err
    assert sandbox.milestones() == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("amounts", ["cents", "currency units"])
def test_unreachable_kantata_exits_4_and_marks_rows_not_sent(make_schedule: MakeSchedule, amounts: str) -> None:
    """Also when the first request is for the projects' currencies (an Amount column): a results workbook with
    every row not_sent, not an error without one."""
    if amounts == "cents":
        path = make_schedule([good_row(n) for n in range(3)])
    else:
        path = make_schedule([[f"T{n}", "1.50", 1001] for n in range(3)], headers=["title", "amount", "workspace_id"])
    settings = Settings(base_url=f"http://127.0.0.1:{_closed_port()}/api/v1", token=Secret("t"), max_attempts=2,
                        backoff_base=0.01)  # fmt: skip
    result = run_upload(path, settings)
    assert int(result.exit_code) == 4
    rows = read_results(result.output)
    assert [r["status"] for r in rows] == ["not_sent"] * 3
    assert all("not sent" in r["errors"] for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "missing.xlsx"], "file not found"),
        (["validate", "."], ".: is a folder, not a file"),  # "." has no name to make the results' name from
        (["upload", "."], ".: is a folder, not a file"),
        (["validate", ".."], "..: is a folder, not a file"),
        (["validate", "{schedule}", "--sheet", "Nope"], 'has no sheet "Nope"'),
        (["validate", "{schedule}", "-o", "{schedule}"], "never written over the input"),
        (["upload", "{schedule}", "--base-url", "http://kantata.example.com/api/v1"], "plain http"),
        (["upload", "{schedule}", "--batch-size", "101"], "--batch-size must be between 1 and 100"),
    ],
)
def test_unusable_input_or_arguments_exit_2(
    args: list[str], message: str, make_schedule: MakeSchedule, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KANTATA_API_TOKEN", "x")
    path = make_schedule([good_row(1)])
    before = _digest(path)
    assert main([a.format(schedule=path) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert _digest(path) == before


def test_validate_exit_codes_and_summary(make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]) -> None:
    good = make_schedule([good_row(1), good_row(2)], name="good")
    assert main(["validate", str(good)]) == 0
    assert "2 valid" in capsys.readouterr().out
    bad = make_schedule([good_row(1), ["x", 1.5, 1001, None, None, None]], name="bad")
    assert main(["validate", str(bad)]) == 1
    captured = capsys.readouterr()
    assert "1 valid, 1 invalid" in captured.out
    assert "B3" not in captured.out and "     3  B " in captured.err


def test_text_that_looks_like_a_formula_is_written_as_text(tmp_path: Path) -> None:
    path = tmp_path / "schedule.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Billing"
    ws.append(["title", "amount_in_cents", "workspace_id", "Note", "Other", "Tab", "CR", "Minus"])
    texts = [
        '=HYPERLINK("http://evil","x")',
        "100",
        "1001",
        "+cmd|' /C calc'!A0",
        "@SUM(1)",
        "\t=1+1",
        "\r=1+1",
        "-2+3",
    ]
    for col, text in enumerate(texts, 1):
        cell = ws.cell(row=2, column=col)
        cell.value = text
        cell.data_type = "s"  # text in the input, as Excel stores a cell typed with a leading apostrophe
    wb.save(path)
    assert main(["validate", str(path)]) == 0
    results = openpyxl.load_workbook(path.with_name("schedule.results.xlsx"))
    for sheet in results.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f", f"{sheet.title}!{cell.coordinate} is a formula"
    ws = results["Billing"]  # the user's columns follow the six outcome columns
    assert ws["G2"].value == '=HYPERLINK("http://evil","x")' and ws["G2"].data_type == "s"
    assert ws["J2"].value == "+cmd|' /C calc'!A0" and ws["J2"].data_type == "s"
    assert ws["K2"].value == "@SUM(1)" and ws["K2"].data_type == "s"
    given = openpyxl.load_workbook(path)["Billing"]  # a raw CR reads back as LF (XML line-end normalisation)
    for coord, shown in (("F2", "L2"), ("G2", "M2"), ("H2", "N2")):
        assert ws[shown].value == given[coord].value and ws[shown].data_type == "s", coord
    assert ws["L2"].quotePrefix and ws["N2"].quotePrefix


def test_token_never_appears_in_any_output(sandbox: Any, make_schedule: MakeSchedule, tmp_path: Path) -> None:
    """A real subprocess with a known token: stdout, stderr, results and journal never contain it."""
    secret = "tok-" + "9f3a" * 8
    sandbox_token_env = {**os.environ, "KANTATA_BASE_URL": sandbox.url, "KANTATA_API_TOKEN": secret}
    path = make_schedule([good_row(1)])
    proc = subprocess.run([sys.executable, "-m", "importer", "upload", str(path)], env=sandbox_token_env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 3  # the sandbox knows only its own token
    assert secret not in proc.stdout + proc.stderr
    for produced in tmp_path.rglob("*"):
        if produced.is_file() and produced != path:
            assert secret.encode() not in produced.read_bytes()


@pytest.mark.parametrize(
    ("given", "said"),
    [("tok-SECRET-9f8e7d\r\nmore", "a line break"), ("tok-SECRET 9f8e7d", "a space or tab"),
     ("tok-SECRET-9f8e7d\u20ac", "a character outside ASCII")],
)  # fmt: skip
def test_a_token_that_cannot_be_one_is_refused_without_showing_it(
    sandbox: Any, make_schedule: MakeSchedule, tmp_path: Path, given: str, said: str
) -> None:
    """A token that cannot be one (a line break, a space, a character outside ASCII) would make requests refuse
    the header, and its message quote the token. It is refused first, exit 3, naming what is wrong and not the
    token, and nothing is sent."""
    env = {**os.environ, "KANTATA_BASE_URL": sandbox.url, "KANTATA_API_TOKEN": given}
    path = make_schedule([good_row(1)])
    proc = subprocess.run([sys.executable, "-m", "importer", "upload", str(path), "--non-interactive", "--json"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert f"the API token in KANTATA_API_TOKEN has {said} inside it" in proc.stderr
    assert "SECRET" not in proc.stdout + proc.stderr and json.loads(proc.stdout)["error"]["kind"]
    assert sandbox.milestones() == [] and sandbox.stats().get("POST /billing_milestones", 0) == 0


def test_a_token_copied_with_a_line_break_after_it_works(sandbox: Any, make_schedule: MakeSchedule) -> None:
    """As from a file saved on Windows: the spaces and line break around the token are not part of it."""
    env = {**os.environ, "KANTATA_BASE_URL": sandbox.url, "KANTATA_API_TOKEN": f" {DEFAULT_TOKEN}\r\n"}
    argv = [sys.executable, "-m", "importer", "upload", str(make_schedule([good_row(1)])), "--non-interactive"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert len(sandbox.milestones()) == 1


def test_an_internal_error_quoting_the_token_shows_stars(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], make_schedule: MakeSchedule
) -> None:
    """Whatever a library puts in its error message, the CLI prints no token, in text or JSON, with --debug too."""
    secret = "tok-" + "5e" * 10
    monkeypatch.setenv("KANTATA_API_TOKEN", secret)
    monkeypatch.setenv("KANTATA_BASE_URL", "http://127.0.0.1:9/api/v1")

    def leaky(*args: Any, **kwargs: Any) -> None:
        raise ValueError(f"Invalid header value b'Bearer {secret}'")

    monkeypatch.setattr(importer.pipeline, "run_upload", leaky)
    path = str(make_schedule([good_row(1)]))
    for argv in (["upload", path, "--non-interactive", "--json"], ["--debug", "upload", path, "--non-interactive"]):
        assert main(argv) == ExitCode.BUG
        out = capsys.readouterr()
        assert secret not in out.out + out.err and "Bearer ***" in out.out + out.err


def test_console_script_and_module_entry_points_run(sandbox: Any, make_schedule: MakeSchedule) -> None:
    path = make_schedule([good_row(n) for n in range(5)])
    env = {**os.environ, "KANTATA_BASE_URL": sandbox.url, "KANTATA_API_TOKEN": DEFAULT_TOKEN}
    script = Path(sys.executable).with_name("kantata-import")
    proc = subprocess.run([str(script), "upload", str(path), "--non-interactive"], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "5 created" in proc.stdout
    assert len(sandbox.milestones()) == 5
    proc = subprocess.run([sys.executable, "-m", "importer", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "exit codes:" in proc.stdout and "130" in proc.stdout


def test_upload_sandbox_flag_runs_the_samples_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results.xlsx"
    proc = subprocess.run(
        [sys.executable, "-m", "importer", "upload", "samples/billing_schedule.xlsx", "--sandbox", "-o", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "KANTATA_API_TOKEN": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = read_results(out)
    assert len(rows) == 48 and {r["status"] for r in rows} == {"created"}
    assert len({milestone_id(r) for r in rows}) == 48
    assert f"results: {out}" in proc.stdout


def test_cli_summary_equals_library_result(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_schedule([good_row(1), ["x", "abc", 1001, None, None, None]])
    code = main(["validate", str(path), "-o", str(path.with_name("cli.xlsx"))])
    from importer.pipeline import run_validate

    result = run_validate(path, output=path.with_name("lib.xlsx"))
    assert code == int(result.exit_code) == 1
    out = capsys.readouterr().out
    assert ", ".join(f"{n} {s}" for s, n in result.counts.items() if n) in out
    assert read_results(path.with_name("cli.xlsx")) == read_results(path.with_name("lib.xlsx"))


def test_unwritable_results_folder_is_refused_before_anything_is_sent(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: make the folder a file instead
            locked.chmod(0o700)
            locked.rmdir()
            locked.write_text("not a folder")
            expected = "does not exist"
        else:
            expected = "permission denied"
        path = make_schedule([good_row(1)])
        assert main(["upload", str(path), "-o", str(locked / "results.xlsx")]) == 2
        assert expected in capsys.readouterr().err
        assert sandbox.stats().get("POST /billing_milestones", 0) == 0 and sandbox.milestones() == []
    finally:
        if locked.is_dir():
            locked.chmod(0o700)


@pytest.mark.parametrize("command", ["validate", "upload"])
def test_a_folder_named_as_the_results_workbook_is_refused_before_anything_is_sent(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:  # fmt: skip
    """A folder where the results workbook goes is refused before anything is sent, exit 2: found only when the
    workbook is renamed into place, it would be an internal error (exit 70) after an upload created the rows."""
    (tmp_path / "out.xlsx").mkdir()
    path = make_schedule([good_row(1)])
    assert main([command, str(path), "-o", str(tmp_path / "out.xlsx")]) == 2
    assert "it is a folder" in capsys.readouterr().err
    assert sandbox.stats().get("POST /billing_milestones", 0) == 0 and sandbox.milestones() == []


def test_wrong_base_url_path_says_to_check_it(
    sandbox: Any, make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    path = make_schedule([good_row(1)])
    assert main(["upload", str(path), "--base-url", sandbox.url.replace("/api/v1", "/api/v9/nothing")]) == 4
    captured = capsys.readouterr()
    assert "check --base-url" in captured.err
    assert "next: check the base URL" in captured.out  # not "run again when Kantata is reachable": it would not help


def test_a_host_name_that_does_not_resolve_is_said_in_words() -> None:
    import requests
    import urllib3

    from importer.kantata.client import transport_error

    connection = urllib3.connection.HTTPConnection("kantata.invalid")  # not connected: only named in the error
    pool = urllib3.HTTPConnectionPool("kantata.invalid")
    failed = urllib3.exceptions.NameResolutionError("kantata.invalid", connection, socket.gaierror(-2, "unknown"))
    exc = requests.ConnectionError(urllib3.exceptions.MaxRetryError(pool, "/x", failed))  # as requests raises it
    assert transport_error(exc) == "the host name did not resolve: check --base-url"
    refused = urllib3.exceptions.NewConnectionError(connection, "[Errno 111] Connection refused")
    assert "refused" in transport_error(requests.ConnectionError(urllib3.exceptions.MaxRetryError(pool, "/", refused)))


def test_summary_totals_per_project_are_exact_sums_by_status(sandbox: Any, make_schedule: MakeSchedule) -> None:
    rows = [good_row(n, workspace=1001 + n % 3) for n in range(30)]
    rows[4][1] = -123_456_789_012  # large and negative amounts add up exactly
    rows[7][1] = "12.5"  # invalid: not counted
    first = make_schedule(rows[:10], name="first")
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    run_upload(first, settings)  # rows 0-9 are then `unchanged` in the second run
    path = make_schedule(rows, name="all")
    result = run_upload(path, settings)
    assert result.counts["unchanged"] == 9 and result.counts["created"] == 20 and result.counts["invalid"] == 1
    expected: dict[int, dict[str, int]] = {}
    for n, row in enumerate(rows):
        if n == 7:
            continue
        status = "unchanged" if n < 10 else "created"
        by_status = expected.setdefault(row[2], {})
        by_status[status] = by_status.get(status, 0) + int(row[1])
    wb = openpyxl.load_workbook(result.output, read_only=True)
    try:
        summary = list(wb["Summary"].iter_rows(values_only=True))
    finally:
        wb.close()  # a read-only workbook holds its file open until closed
    top = next(i for i, r in enumerate(summary) if r[0] == "Project ID")
    header = list(summary[top])
    assert header == ["Project ID", "Currency", "Rows", "created", "unchanged", "Total", "Total (cents)"]
    assert [r[1] for r in summary[top + 1 : top + 4]] == ["USD", "EUR", "GBP"]  # the projects' currencies
    # In currency units (these three have two decimals); the cents in the last column, exact.
    got = {r[0]: {"created": round(float(str(r[3])) * 100), "unchanged": round(float(str(r[4])) * 100),
                  "rows": r[2], "total": r[6]} for r in summary[top + 1 : top + 4]}  # fmt: skip
    for workspace, by_status in expected.items():
        assert got[workspace]["created"] == by_status.get("created", 0)
        assert got[workspace]["unchanged"] == by_status.get("unchanged", 0)
        assert got[workspace]["total"] == sum(by_status.values())
    assert sum(int(str(g["rows"])) for g in got.values()) == 29


def test_each_error_links_to_its_cell_in_the_results_sheet(make_schedule: MakeSchedule, tmp_path: Path) -> None:
    rows = [good_row(1), good_row(2), good_row(3)]
    rows[1][1] = "12.5"  # row 3, column B
    rows[2][3] = "31/03/2026"  # row 4, column D
    path = make_schedule(rows, name="links")
    assert main(["validate", str(path), "-q"]) == 1
    wb = openpyxl.load_workbook(tmp_path / "links.results.xlsx")
    errors = wb["Errors"]
    header = [c.value for c in errors[1]]
    links = {}
    for line in errors.iter_rows(min_row=2):
        cells = dict(zip(header, line, strict=True))
        assert cells["Go to"].hyperlink is not None
        links[(cells["Row"].value, cells["Column"].value)] = cells["Go to"].hyperlink.location
    sheet = wb.sheetnames[0]  # the schedule's B and D are the results sheet's H and J
    assert links == {(3, "B"): f"'{sheet}'!H3", (4, "D"): f"'{sheet}'!J4"}


def _sheet_rows(path: Path) -> list[tuple[Any, ...]]:
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        return list(wb["Billing"].iter_rows(values_only=True))
    finally:
        wb.close()


@pytest.mark.parametrize("names", [("Status", "Errors", "Billing milestone ID"),
                                   ("status", "errors", "billing_milestone_id")])  # fmt: skip
def test_the_users_own_status_errors_and_id_columns_are_kept(
    make_schedule: MakeSchedule, tmp_path: Path, names: tuple[str, str, str]
) -> None:
    """Columns of the user's that merely share the outcome columns' names (an approval, a remark, another
    system's id) are theirs: kept as they were, not written over, the outcome columns before them."""
    headers = ["title", "amount_in_cents", "workspace_id", *names]
    path = make_schedule([["Retainer", 5000, 1001, "Approved by CFO", "none", "ext-77"]], headers=headers)
    out = tmp_path / "results.xlsx"
    assert main(["validate", str(path), "-o", str(out)]) == 0
    head, row = _sheet_rows(out)
    assert head == (*OUTCOME_COLUMNS, *headers)
    assert row == ("valid", None, 50.0, 5000, None, None, "Retainer", 5000, 1001, "Approved by CFO", "none", "ext-77")


def test_a_results_workbook_fed_back_in_has_its_outcome_columns_replaced(
    make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    """The README's round trip: fix a row in the results workbook, run it again; its outcome columns are written
    over, not added a second time, and the user's own columns stay."""
    headers = ["title", "amount_in_cents", "workspace_id", "Status"]
    path = make_schedule([["Retainer", 5000, 1001, "Approved"], ["Broken", "12.5", 1001, "Draft"]], headers=headers)
    first = tmp_path / "first.xlsx"
    assert main(["validate", str(path), "-o", str(first)]) == 1
    assert [r[0] for r in _sheet_rows(first)[1:]] == ["valid", "invalid"]
    fixed = openpyxl.load_workbook(first)
    fixed["Billing"]["H3"] = 1250  # the fix, made in the results workbook (the schedule's B)
    fixed.save(first)
    second = tmp_path / "second.xlsx"
    assert main(["validate", str(first), "-o", str(second)]) == 0
    rows = _sheet_rows(second)
    assert rows[0] == (*OUTCOME_COLUMNS, *headers)  # in place: not a second set
    assert rows[1:] == [("valid", None, 50.0, 5000, None, None, "Retainer", 5000, 1001, "Approved"),
                        ("valid", None, 12.5, 1250, None, None, "Broken", 1250, 1001, "Draft")]  # fmt: skip


def test_a_totals_line_under_the_rows_is_kept_in_the_results_and_not_sent(
    sandbox: Any, make_schedule: MakeSchedule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A finance sheet's "Total" line (no project) does not fail every run as a row without a Project ID: it is
    set aside with a note and written back as it was; a titled "Subtotal" row with a project is sent when
    --allow-totals says so, with a warning, as only the user knows what it is."""
    headers = ["title", "amount_in_cents", "workspace_id"]
    rows = [["Retainer", 5000, 1001], ["Subtotal", 5000, 1001], ["Licence", 7000, 1002], ["Total", 17000, None],
            ["Grand total:", 17000, None]]  # fmt: skip
    path = make_schedule(rows, headers=headers)
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    out = tmp_path / "results.xlsx"
    assert main(["upload", str(path), "-o", str(out), "--allow-totals"]) == 0
    err = capsys.readouterr().err
    assert "note: rows 5, 6 look like a totals line (no Project ID): not imported, kept in the results" in err
    assert "title-looks-like-a-total" in err
    assert sorted(str(m["title"]) for m in sandbox.milestones()) == ["Licence", "Retainer", "Subtotal"]
    assert _sheet_rows(out)[1:] == [
        ("created", 700001, 50.0, 5000, None, None, "Retainer", 5000, 1001),
        (
            "created",
            700002,
            50.0,
            5000,
            None,
            "warning: this row reads like a totals line, not a milestone (it would bill the rows above it a second "
            "time) (sent: --allow-totals)",
            "Subtotal",
            5000,
            1001,
        ),
        ("created", 700003, 70.0, 7000, None, None, "Licence", 7000, 1002),
        (None, None, None, None, None, None, "Total", 17000, None),
        (None, None, None, None, None, None, "Grand total:", 17000, None),
    ]


def test_the_new_ids_are_numbers_that_excel_does_not_flag(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule
) -> None:
    """Kantata's ids are numbers in the results (exact: far below 2**53), so Excel has nothing to flag as
    "Number Stored as Text" (a green triangle); fed back in, each still names its milestone."""
    path = make_schedule([good_row(n) for n in range(3)])
    assert main(["upload", str(path)]) == 0
    out = path.with_name("schedule.results.xlsx")
    ws = openpyxl.load_workbook(out)["Billing"]
    assert [ws[f"B{r}"].data_type for r in (2, 3, 4)] == ["n"] * 3
    assert [ws[f"B{r}"].number_format for r in (2, 3, 4)] == ["0"] * 3
    again = load_schedule(out)
    assert again.fields["milestone_id"] == "B"
    assert validate_rows(again).rows["milestone_id"].tolist() == [ws[f"B{r}"].value for r in (2, 3, 4)]


def test_a_journal_that_cannot_be_opened_is_exit_4_and_nothing_is_sent(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unwritable journal stops the run before anything is sent, exit 4 with a sentence, not an internal
    error (exit 70) with a traceback. (A folder in the journal's place stands for any open that fails: a full
    disk, a read-only folder.)"""
    path = make_schedule([good_row(n) for n in range(3)])
    path.with_name(".schedule.results.xlsx.journal.jsonl").mkdir()
    assert main(["upload", str(path), "--json"]) == 4
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert error["kind"] == "journal-not-written" and "nothing was sent" in error["message"]
    assert ".schedule.results.xlsx.journal.jsonl could not be written" in captured.err
    assert "Traceback" not in captured.err and sandbox.milestones() == []
    assert "POST /billing_milestones" not in sandbox.stats()


def test_a_results_workbook_that_cannot_be_written_is_exit_5_and_a_rerun_writes_it(
    sandbox: Any, env: dict[str, str], make_schedule: MakeSchedule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A disk filling up (or a folder made read-only) after the rows were created is exit 5, not an internal
    error (exit 70, counts null): it says what was created and what to do; the journal keeps the outcomes, and
    the same command writes the workbook without sending anything again."""
    import errno

    import importer.results.streaming

    def full(done: Path, target: Path, **_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    path = make_schedule([good_row(n) for n in range(30)])
    with monkeypatch.context() as patched:
        patched.setattr(importer.results.streaming, "move_into_place", full)
        assert main(["upload", str(path), "--json"]) == 5
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert error["kind"] == "results-not-written" and "No space left on device" in error["message"]
    assert "30 rows were created in Kantata and are kept in the journal" in captured.err
    assert "Traceback" not in captured.err and len(sandbox.milestones()) == 30
    assert not path.with_name("schedule.results.xlsx").exists()

    assert main(["upload", str(path)]) == 0
    assert [r["status"] for r in read_results(path.with_name("schedule.results.xlsx"))] == ["created"] * 30
    assert len(sandbox.milestones()) == 30 and sandbox.stats()["POST /billing_milestones"] == 1
