"""The run's log: the library's events (importer/logevents.py) written to `--log-file`, and to the terminal with -v.

Configuring logging is process-wide, so it is done here, by the command, for one run, and undone after it: the
handlers go on the `importer` logger only (never the root logger, so another library's debug lines stay out), and
the logger's level and handlers are put back as they were. Each line is one event, with an ISO 8601 timestamp
(UTC) and a level; `--log-format json` writes one JSON object per line for a log shipper instead. -v and -q change
what the terminal shows, never what the log keeps. Every line passes a filter that stars out the tokens the run
holds, should a message ever quote one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from importer.errors import ConfigError
from importer.logevents import ROOT, RUN_END, RUN_START, emit
from importer.settings import Secret, Settings, redact

DISTRIBUTION = "kantata-import"
_log = logging.getLogger("importer.cli")
_BARE = re.compile(r"[^\s\"=]+")  # a text value written without quotes


def tool_version() -> str:
    """The installed distribution's version (its metadata); the package's own when run from a source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        from importer import __version__

        return __version__


def _when(record: logging.LogRecord) -> str:
    return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return {k: v for k, v in fields.items() if v is not None} if isinstance(fields, Mapping) else {}


def _pairs(key: str, value: Any) -> Iterator[str]:
    """`key=value`, a mapping's entries as `key.entry=value` (logfmt's way), so that every value is one word."""
    if isinstance(value, Mapping):
        for entry, inner in value.items():
            if inner is not None:
                yield from _pairs(f"{key}.{entry}", inner)
        return
    yield f"{key}={_value(value)}"


def _value(value: Any) -> str:
    """A value as one word: text bare when it has no space, quote or = and cannot be read as another type (200,
    true), else in JSON quotes; numbers and true/false as JSON; a list as its items joined by commas."""
    if isinstance(value, list | tuple):
        value = ",".join(str(item) for item in value)
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
        return value if _BARE.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    try:
        json.loads(value)
    except ValueError:
        return value if _BARE.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`2026-03-31T06:00:00.123+00:00 INFO request method=POST path=/billing_milestones rows=100 status=200 ...`:
    a timestamp, the level, the event, then its fields as key=value (docs/unattended.md says how to read them
    back), then the message in words as msg="..."."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", "log")
        pairs = [pair for key, value in _fields(record).items() for pair in _pairs(key, value)]
        line = " ".join([_when(record), record.levelname, event, *pairs, f"msg={_value(record.getMessage())}"])
        return line.replace("\n", " ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, message, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        head = {"time": _when(record), "level": record.levelname, "logger": record.name,
                "event": getattr(record, "event", "log"), "message": record.getMessage()}  # fmt: skip
        return json.dumps({**head, **_fields(record)}, ensure_ascii=False, default=str)


class TerminalFormatter(logging.Formatter):
    """For a person watching (-v): the time of day and the message."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{dt.datetime.fromtimestamp(record.created).strftime('%H:%M:%S')} {record.getMessage()}"


class _Redacted(logging.Filter):
    """Stars out each token the run holds (the list grows as the run gets them) in the line's message and fields."""

    def __init__(self, secrets: Sequence[Secret]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg, record.args = redact(record.getMessage(), *self._secrets), None
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            record.fields = {k: redact(v, *self._secrets) if isinstance(v, str) else v for k, v in fields.items()}
        return True


class RunLog:
    """One command's log: opened once the settings are known (`start`), closed at the end of the command."""

    def __init__(self, args: argparse.Namespace, secrets: Sequence[Secret]) -> None:
        self._args = args
        self._secrets = secrets
        self._handlers: list[logging.Handler] = []
        self._level: int | None = None  # the `importer` logger's own, put back at the end
        self.started = False
        self.counts: dict[str, int] | None = None
        self.failure: tuple[str, str] | None = None

    def start(self, settings: Settings, *, connect: bool) -> None:
        """Open the log file (appending) and the terminal's lines (-v), then say what this run is."""
        if self.started:
            return
        self.started = True
        if settings.log_file is not None:
            try:  # appended to: a monthly job keeps one log
                handler: logging.Handler = logging.FileHandler(settings.log_file, mode="a", encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot open the log file {settings.log_file} ({exc.strerror or exc}); name a "
                                  "file in a folder you can write to (--log-file or log_file)") from None  # fmt: skip
            handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
            self._add(handler)
        if getattr(self._args, "verbose", False):
            terminal = logging.StreamHandler(sys.stderr)
            terminal.setFormatter(TerminalFormatter())
            self._add(terminal)
        if self._handlers:
            root = logging.getLogger(ROOT)
            self._level = root.level
            root.setLevel(logging.INFO)
            emit(_log, logging.INFO, RUN_START, self._started_message(settings), **self._start_fields(settings,
                 connect=connect))  # fmt: skip

    def _add(self, handler: logging.Handler) -> None:
        handler.addFilter(_Redacted(self._secrets))
        logging.getLogger(ROOT).addHandler(handler)
        self._handlers.append(handler)

    def _started_message(self, settings: Settings) -> str:
        schedule = getattr(self._args, "schedule", None)
        return f"kantata-import {tool_version()} {self._args.command}" + (f" {schedule}" if schedule else "")

    def _start_fields(self, settings: Settings, *, connect: bool) -> dict[str, Any]:
        args = self._args
        schedule: Path | None = getattr(args, "schedule", None)
        host = None
        if connect:
            host = "sandbox" if getattr(args, "sandbox", False) else urlsplit(settings.base_url).hostname
        options = {
            "sheet": settings.sheet,
            "batch_size": settings.batch_size,
            "concurrency": settings.concurrency,
            "date_format": settings.date_format,
            "currency_decimals": settings.currency_decimals,
            "online": bool(getattr(args, "online", False) or getattr(args, "sandbox", False)),
            "output": None if getattr(args, "output", None) is None else str(args.output),
            "config": None if getattr(args, "config", None) is None else str(args.config),
            "state_dir": str(settings.state_dir),
            "token_from": settings.token_source if connect else None,
        }
        return {
            "version": tool_version(),
            "command": args.command,
            "file": None if schedule is None else str(schedule),
            "sha256": _digest(schedule),
            "host": host,
            "options": {k: v for k, v in options.items() if v is not None},
        }

    def end(self, code: int) -> None:
        """The run's last line: the exit code, the counts per status (when it got that far), the error if any."""
        if not self._handlers:
            return
        level = logging.INFO if code in (0, 1) else logging.ERROR
        kind, message = self.failure or (None, None)
        counts = {k: v for k, v in (self.counts or {}).items() if v}
        said = f"exit {code}" + (f": {message}" if message else f" ({_counted(counts)})" if counts else "")
        emit(_log, level, RUN_END, said, exit_code=code, counts=self.counts, error=kind, reason=message)

    def close(self) -> None:
        root = logging.getLogger(ROOT)
        for handler in self._handlers:
            root.removeHandler(handler)
            handler.close()  # (a FileHandler closes its file; the terminal's stream stays open)
        self._handlers.clear()
        if self._level is not None:
            root.setLevel(self._level)
            self._level = None


def _counted(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "nothing to do"


def _digest(path: Path | None) -> str | None:
    """The schedule's SHA-256, naming exactly which file a run read (None if it cannot be read: the run says
    why soon after)."""
    if path is None:
        return None
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


_current: ContextVar[RunLog | None] = ContextVar("run_log", default=None)


@contextmanager
def run_log(args: argparse.Namespace, secrets: Sequence[Secret]) -> Iterator[RunLog]:
    """The command's log for the length of the block, found by `current()` where the settings are made."""
    log = RunLog(args, secrets)
    token = _current.set(log)
    try:
        yield log
    finally:
        _current.reset(token)
        log.close()


def current() -> RunLog | None:
    return _current.get()
