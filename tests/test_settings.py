"""Settings: where each value comes from, and the token that never shows."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from importer.errors import ConfigError, ExitCode, MissingToken
from importer.schedule import ParseOptions
from importer.settings import Secret, Settings, redact, sanitize_url, state_dir_from


def test_secret_never_shows_its_value() -> None:
    secret = Secret("s3cr3t-token")
    assert "s3cr3t" not in repr(secret) and "s3cr3t" not in str(secret) and "s3cr3t" not in f"{secret}"
    assert "s3cr3t" not in repr(Settings(token=secret))
    assert secret.reveal() == "s3cr3t-token"


@pytest.mark.parametrize(
    "url",
    ["http://api.mavenlink.com/api/v1", "http://10.0.0.5/api/v1", "ftp://x/y", "api.mavenlink.com", "https://u:p@h/x"],
)
def test_unsafe_or_malformed_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(base_url=url)
    assert info.value.exit_code == ExitCode.UNUSABLE_INPUT
    assert "p@" not in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765/api/v1/", "http://localhost/api/v1", "http://[::1]:9/x"])
def test_plain_http_to_loopback_is_allowed_and_trailing_slash_dropped(url: str) -> None:
    assert Settings(base_url=url).base_url == url.rstrip("/")


@pytest.mark.parametrize("size", [0, 101, -1])
def test_batch_size_outside_kantatas_limit_is_refused(size: int) -> None:
    with pytest.raises(ConfigError, match="between 1 and 100"):
        Settings(batch_size=size)


def test_flag_beats_environment_which_beats_default() -> None:
    env = {"KANTATA_BASE_URL": "https://env.example/api/v1", "KANTATA_API_TOKEN": "from-env"}
    assert Settings.from_env(env).base_url == "https://env.example/api/v1"
    assert Settings.from_env(env).token == Secret("from-env")
    assert Settings.from_env(env, base_url="https://flag.example/api/v1").base_url == "https://flag.example/api/v1"
    assert Settings.from_env({}).base_url == "https://api.mavenlink.com/api/v1"
    assert Settings.from_env({}, base_url=None).token is None


def test_missing_token_without_a_prompt_names_the_variable() -> None:
    with pytest.raises(MissingToken, match="KANTATA_API_TOKEN") as info:
        Settings().require_token(interactive=False)
    assert info.value.exit_code == ExitCode.AUTH


def test_sanitize_url_drops_credentials_and_query() -> None:
    assert sanitize_url("https://user:pw@host:8443/api/v1?access_token=abc") == "https://host:8443/api/v1"


def test_redact_hides_exactly_the_tokens_it_is_given() -> None:
    held = Secret("s3cr3t-token")
    Secret("other-token-value")  # made, and not given to redact: not hidden
    text = "header 'Bearer s3cr3t-token' and other-token-value refused"
    assert redact(text, held, None) == "header 'Bearer ***' and other-token-value refused"
    assert redact(text) == text  # no registry of every token made: the caller names what it holds
    assert redact("x marks x", Secret("x")) == "x marks x"  # too short to be a token


def test_the_environments_switches_and_state_folder_are_read_only_by_from_env(tmp_path: Path) -> None:
    env = {"KANTATA_IMPORT_NO_STREAM": "1", "KANTATA_IMPORT_NO_PREFETCH": "yes", "KANTATA_IMPORT_STATE": "~/st"}
    settings = Settings.from_env(env)
    assert not settings.stream_results and not settings.prefetch
    assert settings.state_dir == Path("~/st").expanduser()
    default = Settings.from_env({"KANTATA_IMPORT_NO_STREAM": "0"})
    assert default.stream_results and default.prefetch
    assert state_dir_from({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "kantata-import"
    assert state_dir_from({}) == Path.home() / ".local" / "state" / "kantata-import" == Settings().state_dir


def test_from_argparse_puts_flags_over_environment_over_the_file() -> None:
    args = argparse.Namespace(schedule=Path("s.xlsx"), sheet=None, date_format="%d/%m/%Y", currency_decimals=None,
                              base_url=None, batch_size=50, concurrency=None)  # fmt: skip
    config = {"sheet": "Billing", "currency_decimals": 0, "batch_size": 20, "base_url": "https://file.example/api"}
    settings = Settings.from_argparse(args, config, {"KANTATA_BASE_URL": "https://env.example/api"})
    assert (settings.sheet, settings.date_format, settings.batch_size) == ("Billing", "%d/%m/%Y", 50)
    assert settings.base_url == "https://env.example/api"
    assert ParseOptions.of(settings) == ParseOptions(date_format="%d/%m/%Y", currency_decimals=0,
                                                  currency_decimals_given=True)  # fmt: skip
    csv = Settings.from_argparse(argparse.Namespace(**{**vars(args), "schedule": Path("s.csv")}), config, {})
    assert csv.sheet is None  # a CSV has no sheets: the file's sheet is not for it
    assert not Settings.from_argparse(argparse.Namespace(schedule=Path("s.csv")), {}, {}).currency_decimals_given


def test_the_default_state_folder_is_the_platforms(tmp_path: Path) -> None:
    """platformdirs' folder for an application's state; KANTATA_IMPORT_STATE beats it, and on the XDG platforms
    XDG_STATE_HOME in the environment the edge was given moves it, as platformdirs would."""
    import platformdirs

    assert state_dir_from({}) == Path(platformdirs.user_state_dir("kantata-import", appauthor=False))
    assert state_dir_from({"XDG_STATE_HOME": str(tmp_path), "KANTATA_IMPORT_STATE": str(tmp_path / "s")}) == (
        tmp_path / "s"
    )
    assert state_dir_from({"XDG_STATE_HOME": "  "}) == state_dir_from({})  # blank: unset


@pytest.mark.parametrize(
    ("where", "named"),
    [
        ({"flag": "http://[x"}, "--base-url"),
        ({"env": "http://localhost:port/api"}, "KANTATA_BASE_URL"),
        ({"config": "ftp://example.com/api"}, "base_url in the config file"),
        ({"env": "https://example.com/api", "flag": "https://u:p@example.com/api"}, "--base-url"),
    ],
)
def test_a_bad_base_url_is_named_by_where_it_came_from(where: dict[str, str], named: str) -> None:
    from importer.errors import BadBaseUrl

    args = argparse.Namespace(base_url=where.get("flag"))
    environ = {"KANTATA_BASE_URL": where["env"]} if "env" in where else {}
    config = {"base_url": where["config"]} if "config" in where else {}
    with pytest.raises(BadBaseUrl, match=f"^{named} '") as raised:
        Settings.from_argparse(args, config, environ)
    assert raised.value.setting == named


def test_the_base_url_is_kept_in_one_spelling_and_the_lock_wait_checked() -> None:
    assert Settings(base_url="HTTPS://Example.com:443/api/v1/").base_url == "https://example.com/api/v1"
    assert Settings(lock_wait=0).lock_wait == 0 and Settings().lock_wait is None
    with pytest.raises(ConfigError, match="--wait must be 0 to"):
        Settings(lock_wait=-1)
