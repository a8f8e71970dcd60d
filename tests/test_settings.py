"""Settings: where each value comes from, and the token that never shows."""

from __future__ import annotations

import pytest

from importer.errors import ConfigError, ExitCode, MissingToken
from importer.settings import Secret, Settings, sanitize_url


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
