"""A run as one JSON object for automation (`--json`), the shape `docs/summary.schema.json` documents.

Built from a `RunResult` (or, when the run could not start, from the error), so a script calling the library gets
the very object the CLI prints. Amounts are integer cents; the base URL is the sanitised one; no token.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from importer import __version__
from importer.errors import ExitCode
from importer.outcomes import Status

if TYPE_CHECKING:
    from importer.pipeline import RunResult

SCHEMA_VERSION = 2  # 2: the living schedule's update, updated and conflict counts


def run_summary(result: RunResult, *, command: str) -> dict[str, Any]:
    """The summary of a run that finished (exit 0 or 1) or stopped midway (exit 4 or 130)."""
    from importer.results import all_issues  # xlsxwriter and pandas: not before the CLI needs them

    stopped = None
    if result.stopped is not None:
        stopped = {"kind": error_kind(result.stopped), "message": str(result.stopped)}
    return {
        **_head(command, str(result.schedule) if result.schedule else None, result.sheet, result.dry_run),
        "base_url": result.base_url,
        "exit_code": int(result.exit_code),
        "rows": result.rows,
        "counts": {s.value: result.counts.get(s.value, 0) for s in Status},
        "totals": [
            {
                "workspace_id": t.workspace_id,
                "currency": t.currency,
                "rows": dict(sorted(t.rows.items())),
                "cents": dict(sorted(t.cents.items())),
                "landed_rows": t.landed_rows,
                "landed_cents": t.landed_cents,
                "total_cents": t.total_cents,
                "kantata_before_cents": t.kantata[0] if t.kantata is not None else None,
                "kantata_after_cents": t.kantata[1] if t.kantata is not None else None,
            }
            for t in result.totals
        ],
        "output": str(result.output),
        "stopped": stopped,
        "requests": dict(result.requests),
        "issues": [
            {
                "row": i.row,
                "column": i.column,
                "header": i.header,
                "value": i.value,
                "code": i.code,
                "message": i.message,
                "severity": i.severity,
            }
            for i in all_issues(result.issues, result.outcomes)
        ],
        "notes": list(result.notes),
        "not_in_schedule": [
            {
                "billing_milestone_id": m.milestone_id,
                "workspace_id": m.workspace_id,
                "title": m.title,
                "amount_in_cents": m.amount_in_cents,
                "date_to_invoice": m.date_to_invoice,
                "invoiced": m.invoiced,
                "outcome": m.outcome or None,
                "hint": m.hint or None,
            }
            for m in result.not_in_schedule
        ],
        "error": None,
    }


def error_summary(
    *, command: str | None, file: str | None, sheet: str | None, exit_code: ExitCode, kind: str, message: str
) -> dict[str, Any]:
    """The summary of a run that could not start or broke off (exit 2, 3, 70, 130): the error, nothing counted."""
    return {
        **_head(command, file, sheet, command != "upload"),
        "base_url": None,
        "exit_code": int(exit_code),
        "rows": None,
        "counts": None,
        "totals": [],
        "output": None,
        "stopped": None,
        "requests": {},
        "issues": [],
        "notes": [],
        "not_in_schedule": [],
        "error": {"kind": kind, "message": message},
    }


def error_kind(exc: BaseException) -> str:
    """A stable slug from the exception's class: ScheduleError -> "schedule-error", TokenRejected -> ..."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", type(exc).__name__).casefold()


def _head(command: str | None, file: str | None, sheet: str | None, dry_run: bool) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "version": __version__,
        "command": command,
        "file": file,
        "sheet": sheet,
        "dry_run": dry_run,
    }
