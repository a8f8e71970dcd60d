"""Two real `kantata-import upload` processes to one sandbox under two spellings of its URL: one account, one
lock. The first is held inside Kantata (the sandbox's store held by the test) while it holds the account's lock."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from importer.cli.main import main
from importer.errors import ExitCode
from importer.sandbox import DEFAULT_TOKEN
from tests import forked_cli
from tests.conftest import MakeSchedule, good_row

PATIENCE = 120  # seconds a subprocess may take on a loaded machine: a guard against a hang, not a timing


def _upload(schedule: Path, url: str, state: Path, *extra: str) -> forked_cli.Forked:
    env = {**os.environ, "KANTATA_API_TOKEN": DEFAULT_TOKEN, "KANTATA_IMPORT_STATE": str(state)}
    return forked_cli.popen(["upload", str(schedule), "--base-url", url, "--non-interactive", *extra], env=env)


@contextmanager
def _kantata_held(sandbox: Any) -> Iterator[None]:
    """Every request to the sandbox waits until the block ends."""
    with sandbox._store._lock:
        yield


def _until_noted(state: Path, first: forked_cli.Forked) -> None:
    """Until the first upload holds the account's lock (its note is there)."""
    deadline = time.monotonic() + PATIENCE
    while not list((state / "running").glob("*.holder.json")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1]
        time.sleep(0.02)


def test_a_second_upload_under_another_spelling_waits_for_the_first(
    sandbox: Any, make_schedule: MakeSchedule, tmp_path: Path
) -> None:
    port = sandbox.url.split(":")[2].split("/")[0]
    shared = [good_row(n) for n in range(1, 4)]
    first_file = make_schedule(shared, name="first")
    second_file = make_schedule([*shared, good_row(4)], name="second")
    state = tmp_path / "state"
    with _kantata_held(sandbox):
        first = _upload(first_file, sandbox.url, state)
        _until_noted(state, first)
        refused = _upload(second_file, f"http://LOCALHOST:{port}/api/v1/.", state, "--no-wait")
        out, err = refused.communicate(timeout=PATIENCE)
        assert refused.returncode == int(ExitCode.BUSY) == 6, err
        assert f"error: another upload to http://localhost:{port}/api/v1 is running (held by pid {first.pid} " in err
        assert str(first_file) in err and "--no-wait was given; nothing was sent" in err
        second = _upload(second_file, f"http://127.0.0.1:{port}/api/v1/", state)
        assert second.stderr is not None
        for line in second.stderr:  # it says whom it waits for, then waits
            if line.startswith("waiting for another upload"):
                assert f"held by pid {first.pid} " in line
                break
    for upload in (first, second):
        out, err = upload.communicate(timeout=PATIENCE)
        assert upload.returncode == 0, err
    titles = Counter(str(m["title"]) for m in sandbox.milestones())
    assert titles == {f"Milestone {n}": 1 for n in range(1, 5)}  # the shared rows once: the second found them


@pytest.mark.parametrize(
    ("flag", "env", "config", "named"),
    [
        ("http://[x", None, None, "--base-url"),
        (None, "http://localhost:99999/api/v1", None, "KANTATA_BASE_URL"),
        (None, None, "http://localhost:port/api/v1", "kantata-import.toml: base_url"),
        ("gopher://example.com/api", None, None, "--base-url"),
        ("https://user:pw@example.com/api/v1", None, None, "--base-url"),
        ("https://example.com/api/v1?x=1", None, None, "--base-url"),
        ("example.com/api/v1", None, None, "--base-url"),
    ],
)
def test_a_malformed_base_url_is_exit_2_naming_the_setting(
    flag: str | None,
    env: str | None,
    config: str | None,
    named: str,
    make_schedule: MakeSchedule,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make_schedule([good_row(1)])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KANTATA_API_TOKEN", "a-token-of-sorts")
    if env is not None:
        monkeypatch.setenv("KANTATA_BASE_URL", env)
    if config is not None:
        (tmp_path / "kantata-import.toml").write_text(f'base_url = "{config}"\n')
    argv = ["upload", str(path), "--non-interactive", *(["--base-url", flag] if flag else [])]
    assert main(argv) == ExitCode.UNUSABLE_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: {named} '") and "Traceback" not in err and "pw@" not in err
