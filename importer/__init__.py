"""kantata-import: billing schedules from Excel or CSV into Kantata OX billing milestones, exactly once.

The stages, each callable on its own (the CLI is a thin layer over these):

    raw = load_schedule("schedule.xlsx")            # file -> raw frame indexed by Excel row number
    checked = validate_rows(raw)                    # -> typed rows + CellIssues, all at once
    result = run_upload("schedule.xlsx", Settings.from_env())   # the whole pipeline, results workbook included
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

# Names resolve on first use (PEP 562), so `python -m importer` and the console script do not pay for pandas
# and pandera before the CLI has started reading the workbook (see prefetch.py).
_HOMES = {
    "ApiUnavailable": "errors",
    "AuthError": "errors",
    "CellIssue": "errors",
    "ConfigError": "errors",
    "ExitCode": "errors",
    "ImporterError": "errors",
    "Interrupted": "errors",
    "MissingToken": "errors",
    "ScheduleError": "errors",
    "TokenRejected": "errors",
    "RawSchedule": "loader",
    "load_schedule": "loader",
    "Outcome": "outcomes",
    "Status": "outcomes",
    "RunResult": "pipeline",
    "run_upload": "pipeline",
    "run_validate": "pipeline",
    "Validated": "schema",
    "validate_rows": "schema",
    "Secret": "settings",
    "Settings": "settings",
    "write_template": "template",
}

if TYPE_CHECKING:
    from importer.errors import (
        ApiUnavailable,
        AuthError,
        CellIssue,
        ConfigError,
        ExitCode,
        ImporterError,
        Interrupted,
        MissingToken,
        ScheduleError,
        TokenRejected,
    )
    from importer.loader import RawSchedule, load_schedule
    from importer.outcomes import Outcome, Status
    from importer.pipeline import RunResult, run_upload, run_validate
    from importer.schema import Validated, validate_rows
    from importer.settings import Secret, Settings
    from importer.template import write_template


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'importer' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"importer.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "ApiUnavailable",
    "AuthError",
    "CellIssue",
    "ConfigError",
    "ExitCode",
    "ImporterError",
    "Interrupted",
    "MissingToken",
    "Outcome",
    "RawSchedule",
    "RunResult",
    "ScheduleError",
    "Secret",
    "Settings",
    "Status",
    "TokenRejected",
    "Validated",
    "__version__",
    "load_schedule",
    "run_upload",
    "run_validate",
    "validate_rows",
    "write_template",
]
