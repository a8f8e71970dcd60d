"""The run's log (--log-file): one parseable line per event, in text or JSON, whatever the terminal shows."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from importer.cli.main import main
from importer.sandbox.server import DEFAULT_TOKEN
from tests.conftest import MakeSchedule, good_row

ROOT = Path(__file__).resolve().parents[2]
_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00) (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<event>[a-z-]+)(?P<pairs>(?: [\w.]+=(?:\"(?:[^\"\\]|\\.)*\"|[^\s\"=]+))*)"
)
_PAIR = re.compile(r"([\w.]+)=(\"(?:[^\"\\]|\\.)*\"|[^\s\"=]+)")


def parse_text_line(line: str) -> dict[str, Any]:
    """A text line back as the JSON line would have it: dotted keys nested again, values typed as documented."""
    match = _LINE.fullmatch(line)
    assert match is not None, line
    event: dict[str, Any] = {"time": match["time"], "level": match["level"], "event": match["event"]}
    for key, raw in _PAIR.findall(match["pairs"]):
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # bare text
        *parents, last = ("message" if key == "msg" else key).split(".")
        place = event
        for parent in parents:
            place = place.setdefault(parent, {})
        place[last] = value
    return event


def read_log(path: Path, fmt: str) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) if fmt == "json" else parse_text_line(line) for line in lines]


@pytest.fixture
def connected(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    return sandbox


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_upload_logs_its_start_each_request_each_rows_fate_and_its_end(
    fmt: str, connected: Any, make_schedule: MakeSchedule, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_schedule([good_row(n) for n in range(1, 6)])
    log = tmp_path / f"run.{fmt}.log"
    args = ["upload", str(path), "--non-interactive", "--batch-size", "2", "--log-file", str(log), "--log-format", fmt]
    assert main(args) == 0
    assert main(args) == 0  # the second run finds every row: skipped as unchanged, and appended to the same log
    capsys.readouterr()
    events = read_log(log, fmt)
    assert all(e["level"] in {"INFO", "WARNING"} and e["time"].endswith("+00:00") for e in events)
    starts = [e for e in events if e["event"] == "run-start"]
    assert len(starts) == 2 and events[0] is starts[0]
    start = starts[0]
    assert start["command"] == "upload" and start["file"] == str(path) and start["host"] == "127.0.0.1"
    assert start["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and start["version"]
    assert start["options"]["batch_size"] == 2 and start["options"]["token_from"] == "KANTATA_API_TOKEN"
    first_run = events[: events.index(starts[1])]
    posts = [e for e in first_run if e["event"] == "request" and e["method"] == "POST"]
    assert sorted(p["rows"] for p in posts) == [1, 2, 2]  # (sent concurrently)
    assert all(p["path"] == "/billing_milestones" and p["status"] == 200 and p["retries"] == 0 for p in posts)
    assert all(isinstance(p["seconds"], float | int) and p["seconds"] >= 0 for p in posts)
    assert any(e["event"] == "request" and e["method"] == "GET" for e in first_run)
    decisions = [e for e in first_run if e["event"] == "decision"]
    assert sorted((d["row"], d["status"]) for d in decisions) == [(r, "created") for r in range(2, 7)]
    assert all(d["milestone_id"] for d in decisions)
    again = [e for e in events[events.index(starts[1]) :] if e["event"] == "decision"]
    assert sorted((d["row"], d["status"]) for d in again) == [(r, "unchanged") for r in range(2, 7)]
    ends = [e for e in events if e["event"] == "run-end"]
    assert [e["exit_code"] for e in ends] == [0, 0] and events[-1] is ends[1]
    assert ends[0]["counts"]["created"] == 5 and ends[1]["counts"]["unchanged"] == 5
    requests = [e for e in events if e["event"] == "request"]
    assert not any("Milestone" in json.dumps(e) for e in requests)  # no row's contents, no query
    assert not any(DEFAULT_TOKEN in line for line in log.read_text(encoding="utf-8").splitlines())


def test_a_throttled_request_and_a_refused_row_are_warnings_with_their_retry_and_reason(
    connected: Any, make_schedule: MakeSchedule, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    connected.set_faults(rate_limit_every=2, retry_after=0, reject_title="Milestone 2")
    path = make_schedule([good_row(n) for n in range(1, 4)])
    log = tmp_path / "run.log"
    assert main(["upload", str(path), "--non-interactive", "-q", "--log-file", str(log), "--log-format", "json"]) == 1
    capsys.readouterr()
    events = read_log(log, "json")
    throttled = [e for e in events if e["event"] == "request" and e["status"] == 429]
    assert throttled and all(e["level"] == "WARNING" for e in throttled)
    assert any(e["event"] == "request" and e["status"] == 200 and e["retries"] >= 1 for e in events)
    refused = [e for e in events if e["event"] == "decision" and e["status"] == "rejected"]
    assert [(e["row"], e["level"]) for e in refused] == [(3, "WARNING")] and "reserved" in refused[0]["reason"]
    end = events[-1]
    assert end["event"] == "run-end" and end["exit_code"] == 1 and end["counts"]["rejected"] == 1


def test_quiet_and_verbose_change_the_terminal_not_the_log(
    connected: Any, make_schedule: MakeSchedule, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_schedule([good_row(1), good_row(2)])
    quiet, verbose = tmp_path / "quiet.log", tmp_path / "verbose.log"
    assert main(["upload", str(path), "--non-interactive", "-q", "--log-file", str(quiet)]) == 0
    assert capsys.readouterr().err == ""
    connected.reset()
    assert main(["upload", str(path), "--non-interactive", "-v", "--log-file", str(verbose), "-o",
                 str(tmp_path / "v.xlsx")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "POST /billing_milestones (2 rows): HTTP 200" in err and "row 2: created" in err
    kinds = [[e["event"] for e in read_log(p, "text")] for p in (quiet, verbose)]
    assert kinds[0] == kinds[1] and kinds[0].count("decision") == 2


def test_verbose_alone_writes_no_file_and_shows_the_events(
    make_schedule: MakeSchedule, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_schedule([good_row(1)])
    assert main(["validate", str(path), "-v"]) == 0
    err = capsys.readouterr().err
    assert f"kantata-import {_version()} validate {path}" in err and "exit 0 (1 valid)" in err


def _version() -> str:
    from importer.cli.logs import tool_version

    return tool_version()


def test_the_config_file_names_the_log_and_its_format(
    make_schedule: MakeSchedule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kantata-import.toml").write_text('log_file = "logs/run.log"\nlog_format = "json"\n')
    (tmp_path / "logs").mkdir()
    path = make_schedule([good_row(1), ["", 5, 1001, "2026-01-01", None, "fixed_date"]])
    assert main(["validate", str(path)]) == 1
    events = read_log(tmp_path / "logs" / "run.log", "json")
    assert [e["event"] for e in events] == ["run-start", "run-end"]
    assert events[-1]["counts"]["invalid"] == 1 and events[-1]["exit_code"] == 1
    assert main(["validate", str(path), "--log-format", "text"]) == 1  # the flag beats the file
    assert parse_text_line((tmp_path / "logs" / "run.log").read_text().splitlines()[-1])["event"] == "run-end"
    capsys.readouterr()
    (tmp_path / "kantata-import.toml").write_text('log_format = "xml"\n')
    assert main(["validate", str(path)]) == 2
    assert "log_format must be one of text, json" in capsys.readouterr().err


def test_a_log_that_cannot_be_opened_is_exit_2_naming_it(
    make_schedule: MakeSchedule, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_schedule([good_row(1)])
    log = tmp_path / "missing" / "run.log"
    assert main(["validate", str(path), "--log-file", str(log)]) == 2
    err = capsys.readouterr().err
    assert f"cannot open the log file {log}" in err and "Traceback" not in err
    assert not path.with_name("schedule.results.xlsx").exists()


def test_an_error_that_stops_the_run_is_its_last_line(
    make_schedule: MakeSchedule, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_schedule([good_row(1)])
    log = tmp_path / "run.log"
    assert main(["upload", str(path), "--non-interactive", "--log-file", str(log)]) == 3  # no token
    end = parse_text_line(log.read_text().splitlines()[-1])
    assert (end["event"], end["level"], end["exit_code"], end["error"]) == ("run-end", "ERROR", 3, "missing-token")
    assert "no API token" in end["reason"]


def test_the_command_puts_logging_back_as_it_was(make_schedule: MakeSchedule, tmp_path: Path) -> None:
    library = logging.getLogger("importer")
    before = (library.level, list(library.handlers), library.propagate, list(logging.getLogger().handlers))
    path = make_schedule([good_row(1)])
    assert main(["validate", str(path), "--log-file", str(tmp_path / "run.log")]) == 0
    assert (library.level, list(library.handlers), library.propagate, list(logging.getLogger().handlers)) == before
    assert [type(h) for h in library.handlers] == [logging.NullHandler]


def test_the_library_prints_nothing_when_no_logging_is_configured(sandbox: Any, tmp_path: Path) -> None:
    """Warnings (a 429) reach no last-resort handler on stderr in a program that configured no logging."""
    sandbox.set_faults(rate_limit_every=1, retry_after=0)
    script = (
        "import sys\nfrom importer.kantata import KantataClient\nfrom importer.errors import ApiUnavailable\n"
        "from importer.settings import Secret, Settings\n"
        "s = Settings(base_url=sys.argv[1], token=Secret('sandbox-token'), max_attempts=2, backoff_cap=0)\n"
        "try:\n    KantataClient(s, s.token).workspaces([1001])\nexcept ApiUnavailable:\n    print('stopped')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, sandbox.url], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)  # fmt: skip
    assert (done.stdout, done.stderr) == ("stopped\n", "")
