"""kantata-import: billing schedules from Excel or CSV into Kantata OX billing milestones, exactly once.

The stages, each callable on its own (the CLI is a thin layer over these):

    raw = load_schedule("schedule.xlsx")            # file -> raw frame indexed by Excel row number
    checked = validate_rows(raw)                    # -> typed rows + CellIssues, all at once
    result = run_upload("schedule.xlsx", Settings.from_env())   # the whole pipeline, results workbook included
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from importer._face import lazy

# Names resolve on first use (PEP 562), so `python -m importer` and the console script do not pay for pandas
# and pandera before the CLI has started reading the workbook (see schedule/prefetch.py).
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
    "RawSchedule": "schedule",
    "load_schedule": "schedule",
    "Outcome": "outcomes",
    "Status": "outcomes",
    "RunResult": "pipeline",
    "run_upload": "pipeline",
    "run_validate": "pipeline",
    "Validated": "schedule",
    "validate_rows": "schedule",
    "ProgressFeed": "progress",
    "Stage": "progress",
    "StopSwitch": "delivery",
    "Secret": "settings",
    "Settings": "settings",
    "write_template": "results",
}

if TYPE_CHECKING:
    from importer.delivery import StopSwitch
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
    from importer.outcomes import Outcome, Status
    from importer.pipeline import RunResult, run_upload, run_validate
    from importer.progress import ProgressFeed, Stage
    from importer.results import write_template
    from importer.schedule import RawSchedule, Validated, load_schedule, validate_rows
    from importer.settings import Secret, Settings


__getattr__, __dir__ = lazy(__name__, _HOMES)


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
    "ProgressFeed",
    "RawSchedule",
    "RunResult",
    "ScheduleError",
    "Secret",
    "Settings",
    "Stage",
    "Status",
    "StopSwitch",
    "TokenRejected",
    "Validated",
    "__version__",
    "load_schedule",
    "run_upload",
    "run_validate",
    "validate_rows",
    "write_template",
]
