"""The events a run emits through the standard `logging` module, for a log that is kept, searched or shipped.

The library only emits. Each module logs to `logging.getLogger("importer.<module>")`, the event's name and its
fields passed as `extra={"event": ..., "fields": {...}}`; handlers, formatters and levels are the application's
to choose (the command's `--log-file`: importer/cli/logs.py). No event carries the token, and none a row's
contents: a request gives its method, path (never its query), rows, status, duration and try; a decision its
row, status and milestone id.

    run-start   the command's version, file and digest, Kantata host, options (emitted by the CLI)
    request     one HTTP exchange with Kantata: method, path, rows, status, seconds, attempt
    decision    one row's fate in an upload: row, status, milestone_id (and Kantata's reason when refused)
    run-end     counts per status and the exit code (emitted by the CLI)
"""

from __future__ import annotations

import logging
from typing import Any

ROOT = "importer"  # every logger of the library is below this one
RUN_START = "run-start"
REQUEST = "request"
DECISION = "decision"
RUN_END = "run-end"

# What the logging HOWTO asks of a library: its loggers end in a handler that drops what no application asked
# for, so that an event of WARNING and above is not printed to stderr by logging's last-resort handler in a
# program that configured no logging (the library never prints). Only this library's own logger is touched.
logging.getLogger(ROOT).addHandler(logging.NullHandler())


def emit(log: logging.Logger, level: int, event: str, message: str, **fields: Any) -> None:
    """One event: `message` in words for a person, `fields` for a machine (JSON-able values only)."""
    if log.isEnabledFor(level):
        log.log(level, message, extra={"event": event, "fields": fields}, stacklevel=2)
