"""kantata-import: billing schedules from Excel or CSV into Kantata OX billing milestones, exactly once.

The stages, each callable on its own (the CLI is a thin layer over these):

    raw = load_schedule("schedule.xlsx")            # file -> raw frame indexed by Excel row number
    checked = validate_rows(raw)                    # -> typed rows + CellIssues, all at once
    result = run_upload("schedule.xlsx", Settings.from_env())   # the whole pipeline, results workbook included
"""

__version__ = "0.1.0"

from importer.errors import (  # noqa: E402 - __version__ first: client.py reads it
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
from importer.loader import RawSchedule, load_schedule  # noqa: E402
from importer.outcomes import Outcome, Status  # noqa: E402
from importer.pipeline import RunResult, run_upload, run_validate  # noqa: E402
from importer.schema import Validated, validate_rows  # noqa: E402
from importer.settings import Secret, Settings  # noqa: E402
from importer.template import write_template  # noqa: E402

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
