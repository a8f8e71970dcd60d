"""Settings a repeat user keeps in one file instead of retyping flags.

`kantata-import.toml` in the current folder, else a `[tool.kantata-import]` table in ./pyproject.toml, else
the file given with `--config PATH`, which then is the only one read. Flags beat environment variables, which
beat this file, which beats the defaults; `Settings.from_argparse` merges them into the one Settings. Every
value is checked here, when the file is read, so a mistake in it stops `validate` as surely as `upload` (exit
2). A token is refused: a file is easily shared, committed or backed up, so tokens come only from a private
token file, KANTATA_API_TOKEN or the hidden prompt.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from importer.errors import ConfigError
from importer.settings import TOKEN_ENV, TOKEN_FILE_ENV, Settings

CONFIG_NAME = "kantata-import.toml"
PYPROJECT_TABLE = "kantata-import"  # [tool.kantata-import] in pyproject.toml

# key -> (type, what it means); the types are TOML's, checked exactly (TOML true is not a number here)
KEYS: dict[str, tuple[type, str]] = {
    "base_url": (str, "Kantata API URL, like --base-url"),
    "sheet": (str, "sheet to read in .xlsx workbooks, like --sheet (ignored for CSV files)"),
    "batch_size": (int, "milestones per request, like --batch-size"),
    "concurrency": (int, "requests in flight at once while uploading"),
    "connect_timeout": (int, "seconds to wait for a connection to Kantata before the attempt counts as failed"),
    "read_timeout": (int, "seconds to wait for an answer to one request before it counts as unanswered"),
    "server_timeout": (int, "seconds the server may go on working on a request it did not answer (Kantata: 180)"),
    "date_format": (str, "how non-ISO text dates are written, like --date-format"),
    "currency_decimals": (int, "decimal places of an Amount column, like --currency-decimals"),
    "lock_wait": (int, "seconds an upload waits for another upload to the same account, like --wait (0: --no-wait)"),
    "encoding": (str, "a CSV file's text encoding, like --encoding (default: told from the file)"),
    "decimal_comma": (bool, "amounts are written with a decimal comma (1.234,50), like --decimal-comma"),
    "allow_totals": (bool, "rows that read like a total are milestones, like --allow-totals"),
    "log_file": (str, "a log of the run's events to append to, like --log-file"),
    "log_format": (str, "text or json: how each line of the log is written, like --log-format"),
}


@dataclass(frozen=True, slots=True)
class FileConfig:
    """The values a config file set (only those), and where they came from."""

    path: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def settings(self) -> dict[str, Any]:
        """The values `Settings.from_env(config=...)` takes: each setting of the file is a Settings field."""
        return dict(self.values)


def find_config(folder: Path) -> Path | None:
    """kantata-import.toml in `folder`, else its pyproject.toml if that has a [tool.kantata-import] table."""
    own = folder / CONFIG_NAME
    if own.is_file():
        return own
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
            return None  # someone else's broken pyproject.toml is not ours to complain about
        if isinstance(data.get("tool"), dict) and PYPROJECT_TABLE in data["tool"]:
            return pyproject
    return None


def load_config(path: Path | None = None, *, folder: Path | None = None) -> FileConfig:
    """The file given (`--config`), or the one found in `folder` (default: the current folder), checked."""
    if path is None:
        path = find_config(folder or Path())
        if path is None:
            return FileConfig()
    try:
        data = tomllib.loads(_not_nested_deeply(path, path.read_text(encoding="utf-8")))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError) as exc:
        if isinstance(exc, (tomllib.TOMLDecodeError, UnicodeDecodeError)):  # both are ValueErrors
            raise ConfigError(f"{path} is not valid TOML ({exc}); fix it, or remove it to use the defaults") from None
        raise ConfigError(f"config file {path} not found; check the path given to --config") from None
    except RecursionError:  # tomllib recurses once per nested array or table: a hostile file, not a config
        raise _too_deep(path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror})") from None
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get(PYPROJECT_TABLE) if isinstance(data.get("tool"), dict) else None
        if not isinstance(table, dict):
            raise ConfigError(f"{path} has no [tool.{PYPROJECT_TABLE}] table; add one, or point --config elsewhere")
        data = table
    return FileConfig(path, _checked(path, data))


# Arrays or inline tables opened this many times in a row: no setting nests at all, and tomllib recurses once per
# level, so such a file is refused before it is parsed rather than by the interpreter's recursion limit (which
# can leave finalizers running out of stack on the way).
_DEEP = re.compile(r"(?:[\[{]\s*){64}")


def _not_nested_deeply(path: Path, text: str) -> str:
    if _DEEP.search(text):
        raise _too_deep(path)
    return text


def _too_deep(path: Path) -> ConfigError:
    return ConfigError(f"{path} nests arrays or tables too deeply to be a config file; fix it, or remove it to use "
                       "the defaults")  # fmt: skip


def _checked(path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    for key in data:
        if "token" in key.casefold():
            raise ConfigError(
                f"{path}: `{key}` is refused: a token in a file gets shared, committed and backed up. Remove it and "
                f"set {TOKEN_ENV} in the environment instead, or name a private file holding it with "
                f"{TOKEN_FILE_ENV} or --token-file (or let kantata-import prompt for it)"
            )
    for key, value in data.items():
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise ConfigError(f"{path}: unknown setting `{key}`; {hint}the settings are {', '.join(KEYS)}")
        kind = KEYS[key][0]
        if type(value) is not kind:
            what = {int: "a whole number, e.g. 100", bool: "true or false"}.get(kind, 'text in quotes, e.g. "Billing"')
            raise ConfigError(f"{path}: {key} must be {what} (is {value!r})")
        if (
            isinstance(value, str) and "\x00" in value
        ):  # no file name, encoding or URL holds one; refused here, in words
            raise ConfigError(f"{path}: {key} has a NUL character (\\u0000) inside; remove it")
    values = dict(data)
    if "date_format" in values and "%" not in values["date_format"]:
        raise ConfigError(f'{path}: date_format {values["date_format"]!r} has no % codes; write e.g. "%d/%m/%Y"')
    if "currency_decimals" in values and not 0 <= values["currency_decimals"] <= 4:
        raise ConfigError(f"{path}: currency_decimals must be 0 to 4 (2 for USD, 0 for JPY, 3 for KWD)")
    try:
        Settings(**values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return values
