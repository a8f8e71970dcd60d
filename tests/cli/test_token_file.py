"""The token from a file (--token-file, KANTATA_API_TOKEN_FILE): private or refused, as ssh treats a key; and no
file a run writes, nor its output, ever holds the token."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from importer.cli.main import main
from importer.errors import BadToken, ConfigError, MissingToken
from importer.sandbox.server import DEFAULT_TOKEN, Sandbox
from importer.settings import Secret, Settings, token_from_file
from tests import forked_cli
from tests.conftest import MakeSchedule, good_row

ROOT = Path(__file__).resolve().parents[2]
POSIX_ONLY = pytest.mark.skipif(os.name == "nt", reason="Windows keeps who may read a file in its ACL, not its mode")


def _token_file(folder: Path, text: str, mode: int = 0o600, name: str = "token") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8", newline="")
    path.chmod(mode)
    return path


@POSIX_ONLY
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o620, 0o604, 0o602, 0o660])
def test_a_file_others_may_read_or_write_is_refused_naming_it_and_the_fix(
    mode: int, tmp_path: Path, make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = _token_file(tmp_path, "refused-token-value-1\n", mode)
    path = make_schedule([good_row(1)])
    assert main(["upload", str(path), "--token-file", str(secret), "--non-interactive"]) == 2
    captured = capsys.readouterr()
    assert f"the token file {secret} (--token-file) can be read or written by other users (mode {mode:04o})" in (
        captured.err
    )
    assert f"chmod 600 {secret}" in captured.err and "refused-token" not in captured.err + captured.out
    assert not path.with_name("schedule.results.xlsx").exists()


@POSIX_ONLY
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_file_is_read_without_its_one_trailing_line_break(mode: int, tmp_path: Path) -> None:
    assert token_from_file(_token_file(tmp_path, "abc-123-token\n", mode), "test") == Secret("abc-123-token")
    assert token_from_file(_token_file(tmp_path, "abc-123-token\r\n", name="crlf"), "t") == Secret("abc-123-token")
    assert token_from_file(_token_file(tmp_path, "abc-123-token", name="bare"), "t") == Secret("abc-123-token")


def test_a_file_that_cannot_hold_a_token_says_so_without_showing_it(tmp_path: Path) -> None:
    with pytest.raises(BadToken, match="line break") as two_lines:
        token_from_file(_token_file(tmp_path, "first-line-token\nsecond-line\n"), "test")
    assert "first-line" not in str(two_lines.value)
    with pytest.raises(MissingToken, match="is empty"):
        token_from_file(_token_file(tmp_path, "\n", name="empty"), "test")
    with pytest.raises(ConfigError, match="does not exist"):
        token_from_file(tmp_path / "absent", "test")
    with pytest.raises(ConfigError, match="not a regular file"):
        token_from_file(tmp_path, "test")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 70_000)
    big.chmod(0o600)
    with pytest.raises(ConfigError, match="larger than"):
        token_from_file(big, "test")


def test_which_token_is_used_flag_file_then_variables_never_both(tmp_path: Path) -> None:
    flag = _token_file(tmp_path, "from-the-flag-file\n", name="flag")
    named = _token_file(tmp_path, "from-the-env-file\n", name="named")
    env = {"KANTATA_API_TOKEN": "from-the-variable"}
    assert Settings.from_env(env).token == Secret("from-the-variable")
    assert Settings.from_env(env).token_source == "KANTATA_API_TOKEN"
    chosen = Settings.from_env({**env, "KANTATA_API_TOKEN_FILE": str(named)}, token_file=flag)
    assert chosen.token == Secret("from-the-flag-file") and chosen.token_source == f"the token file {flag}"
    assert Settings.from_env({"KANTATA_API_TOKEN_FILE": str(named)}).token == Secret("from-the-env-file")
    with pytest.raises(ConfigError, match="both KANTATA_API_TOKEN and KANTATA_API_TOKEN_FILE are set"):
        Settings.from_env({**env, "KANTATA_API_TOKEN_FILE": str(named)})


def test_an_upload_takes_its_token_from_the_file_and_says_whence(
    sandbox: Any,
    make_schedule: MakeSchedule,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = _token_file(tmp_path, DEFAULT_TOKEN + "\n")
    monkeypatch.setenv("KANTATA_API_TOKEN_FILE", str(secret))
    path = make_schedule([good_row(1)])
    assert main(["upload", str(path), "--base-url", sandbox.url, "--non-interactive"]) == 0
    assert f"(token from the token file {secret})" in capsys.readouterr().err


@POSIX_ONLY
def test_a_dry_run_offline_reads_no_token_file(
    make_schedule: MakeSchedule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It sends nothing, so a token file it would refuse is no reason to stop it."""
    monkeypatch.setenv("KANTATA_API_TOKEN_FILE", str(_token_file(tmp_path, "shared-token\n", 0o644)))
    assert main(["validate", str(make_schedule([good_row(1)])), "-q"]) == 0


SECRET = "s3cr3t-T0KEN-for-the-scan-0f-every-file"


def test_no_file_the_run_writes_and_no_output_holds_the_token(make_schedule: MakeSchedule, tmp_path: Path) -> None:
    """A real command (a subprocess) against a Kantata that accepts only this token, with a log, a refused row and
    a throttled request: the token and the token file's contents are in none of the files written under the
    run's folder (the log, the results workbook unzipped, the journal, the state folder) nor in stdout/stderr."""
    work = tmp_path / "work"
    work.mkdir()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    token_file = _token_file(secrets, SECRET + "\n")
    path = make_schedule([good_row(n) for n in range(1, 5)])
    schedule = work / path.name
    path.rename(schedule)
    with Sandbox(token=SECRET) as server:
        server.set_faults(rate_limit_every=3, retry_after=0, reject_title="Milestone 2")
        env = {**os.environ, "HOME": str(tmp_path / "home"), "KANTATA_IMPORT_STATE": str(work / "state"),
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        env = {k: v for k, v in env.items() if k not in ("KANTATA_API_TOKEN", "KANTATA_API_TOKEN_FILE")}
        runs = [
            forked_cli.run(args, cwd=work, env=env)
            for args in (
                [
                    "upload",
                    schedule.name,
                    "--base-url",
                    server.url,
                    "--token-file",
                    str(token_file),
                    "--non-interactive",
                    "--log-file",
                    "run.log",
                    "--json",
                    "-v",
                ],  # fmt: skip
                [
                    "validate",
                    schedule.name,
                    "--online",
                    "--base-url",
                    server.url,
                    "--token-file",
                    str(token_file),
                    "--log-file",
                    "run.json",
                    "--log-format",
                    "json",
                    "-o",
                    "online.xlsx",
                ],  # fmt: skip
            )
        ]
    assert [r.returncode for r in runs] == [1, 0], [r.stderr for r in runs]  # (a reserved title: upload only)
    assert "POST /billing_milestones" in runs[0].stderr  # -v showed the events: they went through the filter too
    written = [p for p in work.rglob("*") if p.is_file() and p != schedule]
    names = {p.relative_to(work).as_posix() for p in written}
    assert {"run.log", "run.json", "schedule.results.xlsx", "online.xlsx"} <= names
    assert any(n.startswith("state/") for n in names), names  # the ledger
    texts = [r.stdout + r.stderr for r in runs]
    for file in written:
        texts.append(file.read_bytes().decode("utf-8", "replace"))
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as book:
                texts += [book.read(member).decode("utf-8", "replace") for member in book.namelist()]
    for text in texts:
        assert SECRET not in text and token_file.read_text() not in text
    log = (work / "run.log").read_text()
    assert "status=429" in log and "status=rejected" in log  # the scan covered the throttled and refused paths
