"""The docs say what the code does: sub-commands, exit codes, the test command, the public API."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import pytest

import importer
from importer.cli.config import KEYS
from importer.cli.main import build_parser, main
from importer.errors import EXIT_CODE_HELP, ExitCode

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    assert isinstance(action.choices, dict)
    return dict(action.choices)


def test_every_subcommand_has_help_and_is_in_the_readme() -> None:
    subs = _subparsers()
    assert sorted(subs) == ["sandbox", "template", "upload", "validate"]
    for name, sub in subs.items():
        assert f"kantata-import {name}" in README, name
        assert sub.description and len(sub.description) > 20, name
        assert f"  {name} " in build_parser().format_help(), name


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second() -> None:
    first_block = README.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["python3 dev.py demo", "python3 dev.py test"]
    assert "exec python3 dev.py test" in (ROOT / ".ci" / "run").read_text()


def test_every_exit_code_is_documented_in_help_and_readme() -> None:
    for code in ExitCode:
        assert re.search(rf"^\s+{int(code)}\s", EXIT_CODE_HELP, re.M), code
        assert f"| {int(code)} |" in README, code


def test_public_api_is_exactly_all() -> None:
    assert importer.__all__ == sorted(importer.__all__)
    for name in importer.__all__:  # each resolves (lazily: importer/__init__.py) to the object of its module
        value = getattr(importer, name)
        assert name == "__version__" or getattr(value, "__name__", name) == name
    assert set(importer.__all__) <= set(dir(importer))
    with pytest.raises(AttributeError):
        importer.no_such_name  # noqa: B018


def test_readme_online_capture_is_what_the_command_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    command = (
        "$ KANTATA_API_TOKEN= .venv/bin/kantata-import validate samples/schedule_with_mistakes.xlsx --online --sandbox"
    )
    block = README.split(command + "\n", 1)[1].split("```", 1)[0].splitlines()
    sample = tmp_path / "samples" / "schedule_with_mistakes.xlsx"
    sample.parent.mkdir()
    shutil.copy(ROOT / "samples" / sample.name, sample)
    assert main(["validate", str(sample), "--online", "--sandbox"]) == 1
    captured = capsys.readouterr()
    printed = (captured.err + captured.out).replace(str(tmp_path) + "/", "").splitlines()
    port = re.compile(r"127\.0\.0\.1:\d+")
    assert [port.sub("127.0.0.1:PORT", line) for line in printed] == [
        port.sub("127.0.0.1:PORT", line) for line in block
    ]


def test_readme_documents_every_config_key_and_summary_field() -> None:
    for key in KEYS:
        assert f"`{key}`" in README and f"{key} = " in README, key
    schema = json.loads((ROOT / "docs" / "summary.schema.json").read_text(encoding="utf-8"))
    for name in schema["required"]:
        assert f'"{name}"' in README or f"`{name}`" in README, name
