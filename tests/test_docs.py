"""The docs say what the code does: sub-commands, exit codes, the test command, the public API, and their links
lead somewhere."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

import importer
from importer.cli.config import KEYS
from importer.cli.main import build_parser, main
from importer.errors import EXIT_CODE_HELP, ExitCode
from importer.outcomes import Status
from importer.sandbox import DEFAULT_TOKEN
from importer.schedule import OUTCOME_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"
README_MAX_LINES = 150  # a newcomer's page: the reference lives in docs/


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _markdown_files() -> list[Path]:
    """The repository's own Markdown: not the virtualenv's, nor a tool's cache, nor git's."""
    return [
        path
        for path in ROOT.rglob("*.md")
        if not any(
            part.startswith(".") or part in {"node_modules", "build", "dist"} for part in path.relative_to(ROOT).parts
        )
    ]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    assert isinstance(action.choices, dict)
    return dict(action.choices)


def test_every_subcommand_has_help_and_is_in_the_readme() -> None:
    subs = _subparsers()
    assert sorted(subs) == ["sandbox", "serve", "template", "upload", "validate"]
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


def test_online_capture_in_docs_is_what_the_command_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    command = (
        "$ KANTATA_API_TOKEN= .venv/bin/kantata-import validate samples/schedule_with_mistakes.xlsx --online --sandbox"
    )
    block = _page("files.md").split(command + "\n", 1)[1].split("```", 1)[0].splitlines()
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


def _section(page: str, title: str) -> str:
    """The text under a `## title` heading of a page, up to the next `## ` heading (its `###` parts included)."""
    after = page.split(f"\n## {title}\n", 1)
    assert len(after) == 2, f"no section {title!r}"
    return after[1].split("\n## ", 1)[0]


def test_the_results_workbook_section_explains_every_status_and_outcome_column() -> None:
    """A status or an outcome column added to the code without a line for the finance user fails here."""
    section = _section(_page("files.md"), "The results workbook")
    statuses = _section(section.replace("\n### ", "\n## "), "Every status, and what to do")
    documented = re.findall(r"^\| `([a-z_]+)` \|", statuses, re.M)
    assert documented == [s.value for s in Status]  # one row each, in the code's order
    columns = _section(section.replace("\n### ", "\n## "), "The results sheet")
    assert re.findall(r"^\| `([a-z_]+)` \|", columns, re.M) == list(OUTCOME_COLUMNS)
    for part in ("Summary and Errors", "The results before", "Load it again next month"):
        assert f"\n### {part}\n" in section, part


def test_config_page_documents_every_config_key() -> None:
    page = _page("config.md")
    for key in KEYS:
        assert f"`{key}`" in page and f"{key} = " in page, key


def _schema_fields(node: object) -> set[str]:
    """Every property name the schema defines, at any depth (counts, totals, issues, error)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                found |= set(value)
            found |= _schema_fields(value)
    elif isinstance(node, list):
        for item in node:
            found |= _schema_fields(item)
    return found


def test_json_page_documents_every_summary_field() -> None:
    page = _page("json.md")
    schema = json.loads((DOCS / "summary.schema.json").read_text(encoding="utf-8"))
    fields = _schema_fields(schema)
    assert set(schema["required"]) <= fields and {"landed_cents", "severity", "kind", "not_sent"} <= fields
    for name in sorted(fields):
        assert f"`{name}`" in page, name


def test_readme_is_short() -> None:
    assert len(README.splitlines()) <= README_MAX_LINES


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_every_relative_link_in_readme_and_docs_leads_to_a_file() -> None:
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    assert len(pages) >= 7  # the README and docs/'s pages: an empty glob would check nothing
    checked = 0
    for page in pages:
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or a place on the same page
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{page.name}: {target}"
            checked += 1
    assert checked >= 10


def test_no_markdown_links_outside_the_repository() -> None:
    files = _markdown_files()
    assert ROOT / "README.md" in files and ROOT / "benchmarks" / "README.md" in files
    for path in files:
        assert "../shared" not in path.read_text(encoding="utf-8"), path.relative_to(ROOT)


def test_benchmark_table_is_the_same_in_both_places() -> None:
    def table(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("| ")]

    ours = table((ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8"))
    assert len(ours) > 10
    docs = table(_page("benchmarks.md"))
    assert docs[: len(ours)] == ours


_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def _python_blocks(page: str) -> list[tuple[int, str]]:
    """Each ```python block of `page` with the line it starts on, so that a failure names the line to fix."""
    return [(page.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _PYTHON_BLOCK.finditer(page)]


def _run_library_page(page: str, folder: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run the page's blocks in order, in one namespace, as a reader would in a notebook: in `folder`, beside a
    copy of the sample schedule, with the token and base URL of the sandbox in the environment. Returns how many
    blocks ran."""
    shutil.copy(ROOT / "samples" / "billing_schedule.xlsx", folder / "schedule.xlsx")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    namespace: dict[str, Any] = {"__name__": "library_md"}
    blocks = _python_blocks(page)
    for line, code in blocks:
        exec(compile(code, f"docs/library.md, the block at line {line}", "exec"), namespace)
    return len(blocks)


def test_every_python_block_of_the_library_page_runs(
    tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _run_library_page(_page("library.md"), tmp_path, sandbox, monkeypatch) >= 6
    assert len(sandbox.milestones()) == 48  # the page's upload ran, once: its second run created nothing


def test_a_library_block_that_no_longer_matches_the_code_fails(
    tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = _page("library.md")
    assert "run_upload(" in page and "import run_upload\n" in page
    renamed = page.replace("import run_upload\n", "import run_upload as upload_all\n", 1)  # as a rename would
    with pytest.raises(NameError, match="run_upload"):
        _run_library_page(renamed, tmp_path, sandbox, monkeypatch)


def _bare_signature(function: Any) -> str:
    """`name(a, b, *, c=None)`: the signature as the page writes it, without the annotations."""
    shown: list[str] = []
    for param in inspect.signature(function).parameters.values():
        if param.kind is param.KEYWORD_ONLY and "*" not in shown:
            shown.append("*")
        shown.append(param.name if param.default is param.empty else f"{param.name}={param.default!r}")
    return f"{function.__name__}({', '.join(shown)})"


def test_the_library_page_gives_the_signatures_and_settings_as_the_code_has_them() -> None:
    page = " ".join(_page("library.md").split())  # a signature may be wrapped over two lines
    for function in (importer.run_validate, importer.run_upload):
        assert f"`{_bare_signature(function)}`" in page, _bare_signature(function)
    for field in [*dataclasses.fields(importer.Settings), *dataclasses.fields(importer.RunResult)]:
        assert f"`{field.name}`" in page, field.name
