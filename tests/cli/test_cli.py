"""The CLI's own duties: exit codes for bugs, --debug, flag checks, notes on stderr."""

from __future__ import annotations

import pytest

import importer.pipeline
from importer.cli.main import main
from tests.conftest import MakeSchedule, good_row


def test_an_internal_error_is_exit_70_with_a_hint_and_debug_shows_the_traceback(
    make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(importer.pipeline, "run_validate", broken)
    path = make_schedule([good_row(1)])
    assert main(["validate", str(path)]) == 70
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom (run again with --debug" in err and "Traceback" not in err
    assert main(["--debug", "validate", str(path)]) == 70
    assert "Traceback" in capsys.readouterr().err


def test_date_format_without_codes_is_refused(make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_schedule([good_row(1)])
    assert main(["validate", str(path), "--date-format", "dd/mm/yyyy"]) == 2
    assert "has no % codes" in capsys.readouterr().err


def test_argparse_errors_are_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["upload"])
    assert info.value.code == 2


def test_notes_and_warnings_go_to_stderr_and_quiet_silences_them(
    make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_schedule([good_row(1)], fmt="csv")
    path.write_bytes(path.read_text().replace("Milestone", "Résumé").encode("cp1252"))
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert "note: " in captured.err and "Windows-1252" in captured.err and "1 valid" in captured.out
    assert main(["validate", str(path), "-q", "-o", str(path.with_name("q.xlsx"))]) == 0
    assert capsys.readouterr().err == ""


def test_the_command_entry_freezes_the_collector_for_the_exit_and_returns_mains_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    import importer.cli.main

    monkeypatch.setattr(importer.cli.main, "main", lambda: 3)
    try:
        assert importer.cli.main.run() == 3
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_command_does_not_import_what_pandera_offers_only_for_data_synthesis(make_schedule: MakeSchedule) -> None:
    """hypothesis is installed here (the tests use it); the command's own process still leaves it unimported, and
    validates just the same. A script calling main() in its own process is left alone."""
    import subprocess
    import sys

    bad = good_row(2)
    bad[3] = "2026-02-30"
    path = make_schedule([good_row(1), bad], fmt="csv")
    script = ("import sys; import importer.cli.main as cli; "
              "sys.argv = ['kantata-import', 'validate', sys.argv[1], '-q']; "
              "code = cli.run(); print(code, sorted(n for n, m in sys.modules.items() "
              "if n.split('.')[0] == 'hypothesis' and m is not None))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines()[-1].split() == ["1", "[]"], done.stderr  # exit 1: the bad date, found all the same
    assert "hypothesis" in sys.modules and sys.modules["hypothesis"] is not None  # this process: untouched


def test_a_ctrl_c_while_the_command_starts_is_exit_130_and_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console script's entry (importer.cli.run) imports the command only inside its own try, so a Ctrl-C
    while the modules load is one line, not a traceback."""
    import importlib.abc
    import sys

    from importer import cli

    class Interrupted(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name == "importer.cli.main":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "importer.cli.main")
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    assert cli.run() == 130
    assert capsys.readouterr().err == "interrupted (Ctrl-C) while starting; nothing was read or sent\n"
