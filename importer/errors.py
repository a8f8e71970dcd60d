"""What can go wrong, as values the user can read.

Row problems are values (`CellIssue`), collected all at once and written to the results workbook; they never
stop a run. Run-stopping failures are exceptions from one base, each kind a thing the user can act on:

    ImporterError                 base; .exit_code; str() is a complete sentence for the user
      ScheduleError               the file can't be used: missing, not a workbook, no such sheet, no header row
      ConfigError                 bad --batch-size, output path equal to the input, ...
        BadBaseUrl                the base URL cannot name a Kantata account; says which setting gave it
        DeletionNotConfirmed      --delete-missing=N where N is not the count of milestones to delete
      AuthError                   token missing or refused; nothing (more) was sent
        MissingToken
        TokenRejected
      ApiUnavailable              Kantata unreachable after retries; unsent rows are `not_sent`
      JournalNotWritten           the upload's journal can't be written (disk full): sending stops, as above
      ResultsNotWritten           the results workbook can't be written; the journal keeps the outcomes
      AccountBusy                 another upload to the same account holds its lock (--no-wait, --wait ran out)
      Interrupted                 Ctrl-C; in-flight batches resolved, the workbook written

Exit codes are the `ExitCode` enum; the CLI (`importer/cli/main.py`) maps exceptions to them in one place.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

# client.transport_error's words for a host name that does not resolve: the CLI's next step after it is to check
# the base URL, not to run again (kept here, light to import, for both)
UNRESOLVED = "the host name did not resolve"


class ExitCode(enum.IntEnum):
    OK = 0  # every row valid (validate) or created / already there (upload)
    ROWS_FAILED = 1  # the run finished, but some rows are invalid or were rejected
    UNUSABLE_INPUT = 2  # the file or the arguments are unusable; nothing was sent
    AUTH = 3  # token missing or refused; nothing was sent
    STOPPED = 4  # the run had to stop (Kantata unreachable, a journal or ledger unwritable); unsent rows `not_sent`
    NOT_WRITTEN = 5  # the results workbook could not be written (disk full, permissions); re-run to write it
    BUSY = 6  # another upload to the same Kantata account is running (--no-wait, or --wait ran out); nothing sent
    BUG = 70  # an internal error (EX_SOFTWARE); run again with --debug for the traceback
    INTERRUPTED = 130  # Ctrl-C; an upload wrote the results workbook (a dry run stops writing nothing)


EXIT_CODE_HELP = """\
exit codes:
  0    every row is valid (validate) or was created / already in Kantata (upload)
  1    the run finished, but some rows are invalid or were rejected: see the results workbook
  2    the file or the arguments are unusable; nothing was sent
  3    the API token is missing or was refused; nothing was sent
  4    the run had to stop (Kantata unreachable; a full disk under the state folder, or under the results
       before anything was sent); unsent rows are marked not_sent, re-run to resume
       (validate --online: nothing was written)
  5    the results workbook could not be written (a full disk, also one that filled up during an upload; no
       permission): fix that and run the same command again to write it (what was created is found, nothing
       is sent twice)
  6    another upload to the same Kantata account is running and --no-wait was given (or --wait ran out);
       nothing was sent: run it again when that one has finished
  130  interrupted (Ctrl-C, SIGTERM, SIGHUP); an upload wrote the results workbook, re-run to resume
       (validate: nothing written)
  70   internal error (a bug): run again with --debug for the traceback"""


@dataclass(frozen=True, slots=True)
class CellIssue:
    """One problem with one cell (or one row, when `column` is None), placed as Excel shows it."""

    row: int  # spreadsheet row number as Excel shows it (header row = 1 when it is the first row)
    column: str | None  # Excel column letter ("D"), None when the problem is the whole row
    header: str | None  # the column's header text as the user typed it
    value: str  # the offending value, as text ("" for an empty cell)
    code: str  # stable slug: "invalid-date", "amount-not-whole-cents", "rejected-by-kantata", ...
    message: str  # what is wrong and what to do
    severity: str = "error"  # "error" makes the row invalid; "warning" is worth a look and sends the row anyway

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    @property
    def cell(self) -> str:
        return f"{self.column}{self.row}" if self.column else f"row {self.row}"

    def __str__(self) -> str:
        return f"{self.cell}: {'' if self.is_error else 'warning: '}{self.message}"


class ImporterError(Exception):
    """Base of every failure that stops a run; str() is a complete sentence for the user."""

    exit_code: ExitCode = ExitCode.BUG


class ScheduleError(ImporterError):
    """The schedule file can't be used at all (as opposed to some of its rows being wrong)."""

    exit_code = ExitCode.UNUSABLE_INPUT

    def __init__(self, message: str, *, path: Path, sheet: str | None = None, cell: str | None = None) -> None:
        where = path.name or str(path)  # "." and ".." have no name
        if sheet is not None:
            where += f', sheet "{sheet}"'
        if cell is not None:
            where += f", cell {cell}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.sheet = sheet
        self.cell = cell


class ConfigError(ImporterError):
    """An argument or setting is unusable; nothing was read or sent."""

    exit_code = ExitCode.UNUSABLE_INPUT


class BadBaseUrl(ConfigError):
    """The base URL cannot be used (malformed, not http(s), a port that is no port, credentials or a query in
    it); `setting` names where it came from (--base-url, KANTATA_BASE_URL, base_url in the config file)."""

    def __init__(self, message: str, *, setting: str) -> None:
        super().__init__(message)
        self.setting = setting

    @classmethod
    def from_problem(cls, url: str, problem: str, *, setting: str) -> BadBaseUrl:
        # A user:password@ is never repeated back: it may be a real password.
        shown = re.sub(r"//[^/?#]*@", "//***@", url.strip())
        like = "" if "https://" in problem else ". Write it like https://api.mavenlink.com/api/v1"
        return cls(f"{setting} {shown!r} cannot be used: {problem}{like}", setting=setting)


class DeletionNotConfirmed(ConfigError):
    """`--delete-missing=N` where N is not how many milestones not in the schedule would be deleted: the user
    confirmed another list than the one found, so nothing is sent."""

    def __init__(self, given: int, found: int) -> None:
        super().__init__(f"--delete-missing={given} was given, but {found} milestone{'s' if found != 1 else ''} "
                         "created by kantata-import in these projects (not on an invoice) no row of this schedule "
                         f"matches; nothing was sent. Check the list (validate --online shows it), then run again "
                         f"with --delete-missing={found}, or without it to keep them")  # fmt: skip
        self.given = given
        self.found = found


class AuthError(ImporterError):
    exit_code = ExitCode.AUTH


class MissingToken(AuthError):
    @classmethod
    def from_env(cls, var: str) -> MissingToken:
        return cls(
            f"no API token: set {var} to a Kantata OX API token "
            "(Kantata OX > Settings > Integrations > API, or your application's page)."
        )


class BadToken(AuthError):
    """The token given cannot be one (a line break or other character inside it); refused before any request."""


class TokenRejected(AuthError):
    def __init__(self, message: str, *, status: int, request_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id

    @classmethod
    def from_response(cls, status: int, detail: str, request_id: str | None) -> TokenRejected:
        what = "refused the API token" if status == 401 else "does not allow this token to do that"
        rid = f" (x-request-id {request_id})" if request_id else ""
        return cls(
            f"Kantata {what}: HTTP {status}: {detail}{rid}. Check KANTATA_API_TOKEN and the base URL.",
            status=status,
            request_id=request_id,
        )


class ApiUnavailable(ImporterError):
    """Kantata could not be reached or kept failing; rows not sent are `not_sent` and a re-run resumes."""

    exit_code = ExitCode.STOPPED

    def __init__(self, message: str, *, attempts: int = 0, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status
        self.body = body  # the last answer in full (a proxy's HTML page): the CLI shows it with --debug only


class JournalNotWritten(ImporterError):
    """The upload's journal (or the ledger of requests in flight) could not be written (a full disk, the folder
    made read-only). No batch leaves unrecorded, so the run stops sending: what was sent is settled, the rest is
    `not_sent`."""

    exit_code = ExitCode.STOPPED

    def __init__(self, path: Path, exc: OSError, *, at_start: bool = False, what: str = "the upload's journal") -> None:
        reason = exc.strerror or type(exc).__name__
        then = ("nothing was sent" if at_start else
                "sending stopped, since a row sent without it could be sent twice by a re-run")  # fmt: skip
        super().__init__(
            f"{what} {path} could not be written ({reason}): {then}. Free some space (or restore write access to "
            "the folder) and run the same command again" + ("" if at_start else ": it resumes")
        )
        self.path = path
        self.cause = exc


class ResultsNotWritten(ImporterError):
    """The run ended, but its results workbook could not be written: not a bug, something the user can mend."""

    exit_code = ExitCode.NOT_WRITTEN


class AccountBusy(ImporterError):
    """Another upload to the same Kantata account holds the account's lock, and this one was told not to wait
    (--no-wait) or not that long (--wait SECONDS). Nothing was sent."""

    exit_code = ExitCode.BUSY

    def __init__(self, message: str, *, account: str, holder: str) -> None:
        super().__init__(message)
        self.account = account
        self.holder = holder

    @classmethod
    def from_wait(cls, account: str, holder: str, waited: float) -> AccountBusy:
        how = "--no-wait was given" if waited <= 0 else f"it was still running after --wait {waited:g} s"
        return cls(f"another upload to {account} is running ({holder}) and {how}; nothing was sent. Run this one "
                   "again when that one has finished, or without --no-wait to wait for it", account=account,
                   holder=holder)  # fmt: skip


class Interrupted(ImporterError):
    """The user pressed Ctrl-C; what was sent is resolved and recorded, the rest is `not_sent`."""

    exit_code = ExitCode.INTERRUPTED

    def __init__(self) -> None:
        super().__init__("interrupted: rows not yet sent are marked not_sent; run the same command again to resume")
