"""The config file: found where documented, every value checked, a token refused, flags > env > file > defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from importer.cli.config import FileConfig, find_config, load_config
from importer.cli.main import main
from importer.errors import ConfigError
from importer.sandbox.server import DEFAULT_TOKEN
from importer.settings import DEFAULT_BASE_URL, Settings
from tests.conftest import MakeSchedule, good_row


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh folder, as a user does in the folder holding their schedules."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def _write(folder: Path, text: str, name: str = "kantata-import.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_means_defaults(here: Path) -> None:
    assert load_config() == FileConfig()
    assert Settings.from_env({}, config=load_config().settings()).base_url == DEFAULT_BASE_URL


def test_every_key_is_read(here: Path) -> None:
    _write(here, 'base_url = "https://file.example/api/v1"\nsheet = "2026"\nbatch_size = 50\nconcurrency = 8\n'
                 'date_format = "%d/%m/%Y"\ncurrency_decimals = 3\n')  # fmt: skip
    config = load_config()
    assert config.path is not None and config.path.resolve() == here / "kantata-import.toml"
    settings = Settings.from_env({}, config=config.settings())
    assert (settings.base_url, settings.batch_size, settings.concurrency) == ("https://file.example/api/v1", 50, 8)
    assert (config.get("sheet"), config.get("date_format"), config.get("currency_decimals")) == ("2026", "%d/%m/%Y", 3)


def test_flag_beats_env_beats_file_beats_default(here: Path) -> None:
    _write(here, 'base_url = "https://file.example/api/v1"\nbatch_size = 50\n')
    file = load_config().settings()
    env = {"KANTATA_BASE_URL": "https://env.example/api/v1"}
    assert Settings.from_env({}).base_url == DEFAULT_BASE_URL
    assert Settings.from_env({}, config=file).base_url == "https://file.example/api/v1"
    assert Settings.from_env(env, config=file).base_url == "https://env.example/api/v1"
    flag = Settings.from_env(env, config=file, base_url="https://flag.example/api/v1", batch_size=None)
    assert flag.base_url == "https://flag.example/api/v1" and flag.batch_size == 50  # an unset flag is no flag
    assert Settings.from_env(env, config=file, batch_size=7).batch_size == 7


def test_the_cli_applies_that_order_to_base_url(
    here: Path, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    sandbox: Any,
) -> None:  # fmt: skip
    """Where the upload goes shows on stderr (kantata: URL); only the winner is the live sandbox, the losers are
    closed loopback ports (so that a failure of this test sends nothing anywhere)."""
    import importer.settings

    monkeypatch.setattr(importer.settings, "DEFAULT_BASE_URL", "http://127.0.0.1:9/api/v1")
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    path = make_schedule([good_row(1)])
    _write(here, f'base_url = "{sandbox.url}"\n')
    assert main(["upload", str(path), "-o", str(here / "a.xlsx")]) == 0
    assert f"kantata: {sandbox.url} " in capsys.readouterr().err

    monkeypatch.setenv("KANTATA_BASE_URL", "http://127.0.0.1:10/api/v1")
    _write(here, 'base_url = "http://127.0.0.1:11/api/v1"\n')
    assert main(["upload", str(path), "-o", str(here / "b.xlsx"), "--base-url", sandbox.url]) == 0
    assert f"kantata: {sandbox.url} " in capsys.readouterr().err

    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    assert main(["upload", str(path), "-o", str(here / "c.xlsx")]) == 0
    assert f"kantata: {sandbox.url} " in capsys.readouterr().err


def test_the_cli_takes_batch_size_sheet_and_decimals_from_the_file(
    here: Path, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    sandbox: Any,
) -> None:  # fmt: skip
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    path = make_schedule([["A", "1.234", 1005], ["B", 2, 1005], ["C", 3, 1005]],
                         headers=["title", "amount", "workspace_id"], sheet="KWD")  # fmt: skip
    _write(here, 'sheet = "KWD"\nbatch_size = 1\ncurrency_decimals = 3\n')

    assert main(["upload", str(path)]) == 0

    assert "config: " in capsys.readouterr().err
    assert sandbox.stats()["POST /billing_milestones"] == 3  # batch_size 1
    assert sorted(int(m["amount_in_cents"]) for m in sandbox.milestones()) == [1234, 2000, 3000]  # 3 decimals


def test_a_flag_beats_the_file_for_reading_options(
    here: Path, make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_schedule([["A", "1.234", 1005]], headers=["title", "amount", "workspace_id"])
    _write(here, "currency_decimals = 3\n")
    assert main(["validate", str(path)]) == 0
    assert main(["validate", str(path), "--currency-decimals", "2"]) == 1
    assert "amount-too-many-decimals" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "file", "sent"), [([], "", False), (["--currency-decimals", "2"], "", True),
                                                   ([], "currency_decimals = 2\n", True)])  # fmt: skip
def test_decimals_chosen_by_flag_or_file_let_amounts_go_to_projects_of_unknown_currency(
    here: Path, make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch, sandbox: Any,
    flag: list[str], file: str, sent: bool,
) -> None:  # fmt: skip
    """Kantata withholding the currency, the default 2 decimals are not enough to convert an Amount: the user
    must have chosen them, on the command line or in the config file (checks._unchecked)."""
    sandbox.reset()
    sandbox.set_faults(no_financial_access=True)
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    path = make_schedule([["A", "12.34", 1001]], headers=["title", "amount", "workspace_id"])
    _write(here, file)
    assert main(["upload", str(path), *flag]) == (0 if sent else 1)
    assert [m["amount_in_cents"] for m in sandbox.milestones()] == ([1234] if sent else [])


def test_the_files_sheet_is_not_applied_to_a_csv(here: Path, make_schedule: MakeSchedule) -> None:
    path = make_schedule([good_row(1)], fmt="csv")
    _write(here, 'sheet = "Billing"\n')
    assert main(["validate", str(path)]) == 0


@pytest.mark.parametrize("key", ["token", "api_token", "KANTATA_API_TOKEN"])
def test_a_token_in_the_file_is_refused(
    key: str, here: Path, make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(here, f'{key} = "s3cret-value-1234"\n')
    path = make_schedule([good_row(1)])
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"`{key}` is refused" in err and "KANTATA_API_TOKEN" in err and "s3cret" not in err
    assert not path.with_name("schedule.results.xlsx").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch_sise = 10\n", "unknown setting `batch_sise`; did you mean `batch_size`?"),
        ("colour = 'blue'\n", "unknown setting `colour`; the settings are base_url, sheet, batch_size"),
        ("batch_size = '10'\n", "batch_size must be a whole number"),
        ("batch_size = true\n", "batch_size must be a whole number"),
        ("sheet = 2026\n", "sheet must be text in quotes"),
        ("batch_size = 500\n", "--batch-size must be between 1 and 100"),
        ("concurrency = 0\n", "concurrency must be between 1 and 16"),
        ("currency_decimals = 7\n", "currency_decimals must be 0 to 4"),
        ("date_format = 'dd/mm/yyyy'\n", "date_format 'dd/mm/yyyy' has no % codes"),
        ('base_url = "http://kantata.example.com/api/v1"\n', "plain http"),
        ("base_url = \n", "is not valid TOML"),
    ],
)
def test_a_mistake_in_the_file_is_exit_2_naming_it(
    text: str, message: str, here: Path, make_schedule: MakeSchedule, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(here, text)
    path = make_schedule([good_row(1)])
    assert main(["validate", str(path)]) == 2  # checked even by a dry run, which would not use every value
    err = capsys.readouterr().err
    assert message in err and "kantata-import.toml" in err, err


def test_pyproject_table_is_found_and_the_own_file_wins(here: Path) -> None:
    _write(here, '[project]\nname = "x"\n[tool.kantata-import]\nbatch_size = 20\n', "pyproject.toml")
    assert find_config(here) == here / "pyproject.toml"
    assert load_config().get("batch_size") == 20
    _write(here, "batch_size = 30\n")
    assert find_config(here) == here / "kantata-import.toml"
    assert load_config().get("batch_size") == 30


def test_a_pyproject_without_the_table_is_not_a_config(here: Path) -> None:
    _write(here, '[project]\nname = "x"\n', "pyproject.toml")
    assert find_config(here) is None
    with pytest.raises(ConfigError, match=r"no \[tool.kantata-import\] table"):
        load_config(here / "pyproject.toml")


def test_config_flag_reads_that_file_only(
    here: Path, make_schedule: MakeSchedule, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(here, "token = 'x'\n")  # would be refused if it were read
    elsewhere = _write(tmp_path, "currency_decimals = 3\n", "team.toml")
    path = make_schedule([["A", "1.234", 1005]], headers=["title", "amount", "workspace_id"])
    assert main(["validate", str(path), "--config", str(elsewhere)]) == 0
    assert f"next: kantata-import upload {path} --config {elsewhere}" in capsys.readouterr().out
    assert main(["validate", str(path), "--config", str(tmp_path / "nope.toml")]) == 2
    assert "config file" in capsys.readouterr().err
