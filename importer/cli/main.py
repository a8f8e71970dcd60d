"""`kantata-import`: argument parsing, printing and exit codes over `importer.pipeline`. No rules live here.

argparse rather than click: it adds no dependency, and `main(argv) -> int` is trivial to test in-process and as
a subprocess. Only this module prints (with bars.py, to the stderr it hands it) or decides an exit code.
What a run shows:

- stderr: notes, the issue table, progress bars (only on a terminal, never with --quiet), stage messages;
- stdout: the closing summary (counts, amounts per project, results path, the next command), or with --json
  exactly one JSON object (docs/summary.schema.json) and the human summary moves to stderr.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from importer.cli import logs
from importer.cli.bars import Bars
from importer.cli.config import CONFIG_NAME, load_config
from importer.errors import (
    EXIT_CODE_HELP,
    UNRESOLVED,
    ApiUnavailable,
    ConfigError,
    ExitCode,
    ImporterError,
    JournalNotWritten,
)
from importer.outcomes import NotInSchedule, Status
from importer.results import MISSING_SHEET, ProjectTotal, decimals_for, format_units, in_words, kept_results
from importer.schedule import ReadAhead, start_prefetch
from importer.settings import (
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    LOG_FORMATS,
    MAX_BATCH,
    MAX_CONCURRENCY,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    Secret,
    Settings,
    redact,
    sanitize_url,
)
from importer.summary import error_kind, error_summary, run_summary

if TYPE_CHECKING:
    from importer.delivery import DeleteMissing
    from importer.pipeline import RunResult

MAX_ISSUES_SHOWN = 20
MAX_PROJECTS_SHOWN = 20

DESCRIPTION = """\
Load a billing schedule (.xlsx or .csv) into Kantata OX as billing milestones, exactly once.

  kantata-import template -o schedule.xlsx        blank schedule to fill in
  kantata-import validate schedule.xlsx           dry run: checks every row, sends nothing
  kantata-import validate schedule.xlsx --online  ... and asks Kantata (read-only) about projects and tasks
  kantata-import upload schedule.xlsx             creates the milestones, writes schedule.results.xlsx
  kantata-import upload schedule.xlsx --sandbox   the same against a built-in Kantata look-alike
  kantata-import sandbox --port 8765              run that look-alike on its own

The API token is read from a private file (--token-file, or KANTATA_API_TOKEN_FILE), else the environment
variable KANTATA_API_TOKEN, else a hidden prompt; never from a flag or the config file.
Settings you use every time (base_url, sheet, batch_size, concurrency, date_format, currency_decimals,
lock_wait, encoding, log_file, log_format, ...) can live in kantata-import.toml in the current folder, or
[tool.kantata-import] in pyproject.toml; flags and environment variables beat it."""


class _Version(argparse.Action):
    """--version: the installed version, looked up only when asked for (reading package metadata takes time)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(f"{parser.prog} {logs.tool_version()}")
        parser.exit()


class _UsageError(SystemExit):
    """argparse's exit 2 for a bad flag, keeping the message so that --json can report it too."""

    def __init__(self, message: str) -> None:
        super().__init__(int(ExitCode.UNUSABLE_INPUT))
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        _err(f"{self.prog}: error: {message}")
        raise _UsageError(f"{message} (see {self.prog} --help)")


VALIDATE_HELP = """\
Dry run: check every row of a schedule and write the results; send nothing.

With --online (or --sandbox) it also asks Kantata, with GET requests only, whether each row's project
exists and the token can see it, whether its task belongs to that project, whether Amount fits the
project's currency (0 decimals for JPY, 3 for KWD), and which rows an earlier upload created (status
exists). Look-ups are batched, 200 ids a request; the note at the end says how many requests it took."""

TEMPLATE_HELP = """\
Write a blank billing schedule workbook to fill in, with an Example sheet of filled-in rows.

With --online (or --sandbox) it adds a Workspaces sheet listing the projects the token can see
(id, title, currency), to look ids up in."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kantata-import",
        description=DESCRIPTION,
        epilog=EXIT_CODE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an internal error, and an unexpected answer from Kantata in full",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def schedule_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text.splitlines()[0], description=help_text, epilog=EXIT_CODE_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        p.add_argument("schedule", type=Path, help="the billing schedule, .xlsx or .csv")
        p.add_argument("-o", "--output", type=Path, help="results workbook (default: <schedule>.results.xlsx)")
        p.add_argument("--sheet", help="sheet to read (or sheet in the config file; default: the first sheet whose "
                       "header row matches)")  # fmt: skip
        shown = p.add_mutually_exclusive_group()
        shown.add_argument("-q", "--quiet", action="store_true",
                           help="print only the summary: no notes, issues or progress bars (bars show only on a "
                           "terminal anyway); the log keeps every event")  # fmt: skip
        shown.add_argument("-v", "--verbose", action="store_true",
                           help="also show each event of the log (requests, rows' fates) on stderr, instead of "
                           "progress bars")  # fmt: skip
        p.add_argument("--log-file", type=Path, metavar="PATH",
                       help="append one line per event to this file: the run, each request, each row's fate, "
                       "the end (or log_file in the config file)")  # fmt: skip
        p.add_argument("--log-format", choices=LOG_FORMATS,
                       help="how --log-file's lines are written: text (key=value) or json, one object per line, "
                       "for log shippers (or log_format in the config file; default text)")  # fmt: skip
        p.add_argument("--json", action="store_true",
                       help="print one JSON summary on stdout for scripts (docs/summary.schema.json); "
                       "the human summary goes to stderr")  # fmt: skip
        p.add_argument("--config", type=Path, metavar="PATH",
                       help=f"settings file to use instead of ./{CONFIG_NAME} or [tool.kantata-import] "
                       "in ./pyproject.toml")  # fmt: skip
        p.add_argument(
            "--date-format",
            metavar="FORMAT",
            help="how text dates that are not ISO (2026-03-31) are written, e.g. %%d/%%m/%%Y or %%m/%%d/%%Y "
            "(or date_format in the config file)",
        )
        p.add_argument(
            "--currency-decimals",
            type=int,
            choices=range(5),
            metavar="N",
            help="decimal places of the currency: what an Amount column may have and how totals are shown "
            "(or currency_decimals in the config file; default 2; 0 for JPY, 3 for KWD)",
        )
        p.add_argument("--encoding", metavar="NAME",
                       help="a CSV file's text encoding, e.g. cp1252, mac_roman, shift_jis, utf-16 (or encoding "
                       "in the config file; default: told from the file, or it stops and asks)")  # fmt: skip
        p.add_argument("--decimal-comma", action="store_true", default=None,
                       help="amounts are written with a decimal comma, 1.234,50 (or decimal_comma in the config "
                       "file; default: only when the whole Amount column is written so)")  # fmt: skip
        p.add_argument("--allow-totals", action="store_true", default=None,
                       help="rows that read like a total (a title starting with Total or Subtotal, an amount that "
                       "sums the rows above) are milestones: a warning, not an error (or allow_totals in the "
                       "config file)")  # fmt: skip
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    val = schedule_command("validate", VALIDATE_HELP)
    val.add_argument("--online", action="store_true", help="also check against Kantata, reading only (needs "
                     f"{TOKEN_ENV}): projects, tasks, currencies, rows already created")  # fmt: skip
    _connection_arguments(val, "check against")
    up = schedule_command("upload", "Create a billing milestone for every valid row not already in Kantata.")
    up.add_argument("--batch-size", type=int, help=f"milestones per request, 1-{MAX_BATCH} (or batch_size in the "
                    f"config file; default {MAX_BATCH})")  # fmt: skip
    up.add_argument(
        "--concurrency",
        type=int,
        help=f"requests in flight at most, 1-{MAX_CONCURRENCY} (default {DEFAULT_CONCURRENCY}; "
        "lowered automatically while Kantata answers 429)",
    )
    _connection_arguments(up, "upload to")
    up.add_argument("--delete-missing", nargs="?", const=-1, type=_count, metavar="N",
                    help="also delete the milestones kantata-import created in the schedule's projects that no row "
                    "matches, except those on an invoice, after the creates and updates: only when N is their "
                    "count (else nothing is sent), or without N after showing them and asking y/N on a "
                    "terminal. validate --online lists them")  # fmt: skip
    turns = up.add_mutually_exclusive_group()
    turns.add_argument("--wait", type=float, metavar="SECONDS", dest="lock_wait",
                       help="while another upload to the same Kantata account runs, wait at most this long, then "
                       "stop with exit 6 (or lock_wait in the config file; default: wait until it ends)")  # fmt: skip
    turns.add_argument("--no-wait", action="store_const", const=0.0, dest="lock_wait",
                       help="while another upload to the same Kantata account runs, stop at once with exit 6 "
                       "(nothing is sent) instead of waiting for it")  # fmt: skip

    tpl = sub.add_parser("template", help=TEMPLATE_HELP.splitlines()[0],
                         description=TEMPLATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    tpl.add_argument("-o", "--output", type=Path, default=Path("billing_schedule.xlsx"),
                     help="where to write it (default: billing_schedule.xlsx; an existing file only with "
                     "--force)")  # fmt: skip
    tpl.add_argument("--force", action="store_true", help="replace the file at --output if there is one")
    tpl.add_argument("--external-reference", action="store_true",
                     help="add the external-reference columns (service, type, id, status, ...) for an "
                     "integration")  # fmt: skip
    tpl.add_argument("--online", action="store_true",
                     help=f"add Workspaces and Tasks sheets: the projects and tasks the token ({TOKEN_ENV}) can "
                     "see, offered in the Project ID and Task ID dropdowns")  # fmt: skip
    _connection_arguments(tpl, "list the projects of")
    tpl.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    sbx = sub.add_parser("sandbox", help="Run the built-in Kantata look-alike on loopback.",
                         description="Run the built-in Kantata OX look-alike on loopback, to point tools at. "
                         "Ctrl-C stops it.")  # fmt: skip
    from importer import sandbox

    sandbox.add_arguments(sbx)
    sbx.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    web = sub.add_parser("serve", help="Open a page in your browser that does what these commands do.",
                         description="Serve a local web page (on this machine only) to drop a schedule, check "
                         "it, connect to Kantata and upload, then download the results. Needs the web extra: "
                         f"{WEB_INSTALL}. Ctrl-C stops it.")  # fmt: skip
    web.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    web.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; another needs "
                     "--allow-remote)")  # fmt: skip
    web.add_argument("--allow-remote", action="store_true",
                     help="allow --host to be an address other machines can reach (the page has no TLS)")  # fmt: skip
    web.add_argument("--sandbox", action="store_true", help="start the built-in Kantata look-alike too, to try it")
    web.add_argument("--no-browser", action="store_true", help="print the page's address; do not open a browser")
    web.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _count(text: str) -> int:
    """--delete-missing's N: a count, 0 or more."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: write --delete-missing=N with N the number of "
                                         "milestones to delete (validate --online lists them)")  # fmt: skip
    return int(text)


def _connection_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """Which Kantata to talk to and how to get the token: one set of flags for every command that connects."""
    parser.add_argument("--base-url", help=f"Kantata API URL (or set {BASE_URL_ENV}, or base_url in the config "
                        f"file; default {DEFAULT_BASE_URL})")  # fmt: skip
    where = "a built-in Kantata look-alike on this machine (no account, no network)"
    parser.add_argument("--sandbox", action="store_true", help=f"{verb} {where}")
    parser.add_argument("--token-file", type=Path, metavar="PATH",
                        help=f"read the API token from this file, which only you may read (chmod 600); beats "
                        f"{TOKEN_ENV} and {TOKEN_FILE_ENV}")  # fmt: skip
    parser.add_argument("--non-interactive", action="store_true",
                        help=f"never prompt for the token; fail if no token file is given and {TOKEN_ENV} is "
                        "not set")  # fmt: skip


def run() -> int:
    """The `kantata-import` command and `python -m importer`: `main()`, then the cycle collector frozen for the
    exit, whose last full collection would otherwise walk every row still alive. `main()` itself does not
    freeze: tests and scripts call it in a process that goes on."""
    _skip_unused_imports()
    code = main()
    gc.freeze()
    return code


# Imported by a dependency only when installed, for what the command never does: pandera registers hypothesis
# strategies for data synthesis (`schema.example()`) on its first validation, a noticeable part of a run's start
# (benchmarks/README.md). pandera catches the ImportError this gives.
UNUSED_IMPORTS = ("hypothesis",)


def _skip_unused_imports() -> None:
    """For the command's own process only (`run`): a library caller may want them. Does nothing to a module
    already imported."""
    for name in UNUSED_IMPORTS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None in sys.modules: "not installed"


SWITCH_INTERVAL = 0.0002  # seconds; Python's default is 0.005


@dataclass(frozen=True, slots=True)
class ProcessTuning:
    """What the command changes about its own process while its one library call runs, put back after; the
    library changes nothing process-wide, so a program that imports it keeps its own settings.

    - `pause_collector`: no cycle collection during the run. Reading and checking a schedule makes a few hundred
      thousand objects (cells, keys, bodies) that all live until the end, and every collection they trigger
      walks all of them again; a run makes few cycles, and the process ends soon after.
    - `switch_interval`: while the results writer runs beside the senders of an upload, a sender whose answer
      has arrived waits for the writer to let go of the GIL up to this long at each step of reading it.
    benchmarks/process_state.py measures each against the run without it."""

    pause_collector: bool = True
    switch_interval: float | None = SWITCH_INTERVAL

    def without(self, what: str) -> ProcessTuning:
        """This tuning less one part ("gc", "switch"), for the benchmark; unchanged for any other name."""
        if what == "gc":
            return replace(self, pause_collector=False)
        if what == "switch":
            return replace(self, switch_interval=None)
        return self


TUNING = ProcessTuning()


@contextmanager
def _tuned(*, upload: bool) -> Iterator[None]:
    """The process tuned for one library call (the switch interval only for an upload, which has threads to
    switch between), then put back as it was, however the call ends."""
    collecting, interval = gc.isenabled(), sys.getswitchinterval()
    if TUNING.pause_collector:
        gc.disable()
    if upload and TUNING.switch_interval is not None:
        sys.setswitchinterval(min(interval, TUNING.switch_interval))
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if collecting:
            gc.enable()


def main(argv: Sequence[str] | None = None, *, ask: Callable[[str], str] | None = None) -> int:
    """The command; `ask` answers its questions (`upload --delete-missing` without N), by default the terminal's
    `input` when stdin is one (else there is no one to ask)."""
    parser = build_parser()
    tokens = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(tokens)
    except _UsageError as exc:
        if "--json" in tokens:
            command = next((t for t in tokens if t in {"validate", "upload"}), None)
            _json_error(argparse.Namespace(command=command, json=True), ExitCode.UNUSABLE_INPUT, "usage-error",
                        exc.message)  # fmt: skip
        raise
    asking = ask if ask is not None else (input if sys.stdin.isatty() else None)
    held: list[Secret] = []  # the tokens this command holds, filled as it gets them: no message may show one
    with logs.run_log(args, held) as log:  # opened once the settings say where (_settings)
        code = _dispatch(args, held, log, asking)
        log.end(code)
    return code


def _dispatch(args: argparse.Namespace, held: list[Secret], log: logs.RunLog, ask: Callable[[str], str] | None) -> int:
    """The command's handler, and the one place where what stops a run becomes words and an exit code. `ask`:
    who answers the upload's question, if anyone can."""
    handlers: dict[str, Callable[[argparse.Namespace, list[Secret]], int]] = {
        "validate": _validate, "upload": functools.partial(_upload, ask=ask), "template": _template,
        "sandbox": _sandbox, "serve": _serve}  # fmt: skip
    try:
        return int(handlers[args.command](args, held))
    except ImporterError as exc:
        _err(f"error: {exc}", held)
        _show_answer(args, exc, held)
        _json_error(args, exc.exit_code, error_kind(exc), str(exc), held)
        log.failure = (error_kind(exc), str(exc))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _err("interrupted")
        _json_error(args, ExitCode.INTERRUPTED, "interrupted", "interrupted (Ctrl-C); run the same command again")
        log.failure = ("interrupted", "interrupted (Ctrl-C)")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        if args.debug:
            _err(traceback.format_exc().rstrip(), held)
        else:
            _err(f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)", held)
        _json_error(args, ExitCode.BUG, "internal-error", f"{type(exc).__name__}: {exc}", held)
        log.failure = ("internal-error", f"{type(exc).__name__}: {exc}")
        return int(ExitCode.BUG)


def _err(text: str, secrets: Sequence[Secret] = (), stream: TextIO | None = None) -> None:
    """A message for the user; should it quote one of the tokens held (a library's error message), it shows ***
    instead."""
    print(_printable(redact(text, *secrets)), file=stream or sys.stderr, flush=True)


def _show_answer(args: argparse.Namespace, exc: ImporterError, held: Sequence[Secret]) -> None:
    """With --debug, the answer that stopped the run in full (a proxy's page): the one-line message names it, this
    shows it; any token it echoes is starred out."""
    if getattr(args, "debug", False) and isinstance(exc, ApiUnavailable) and exc.body:
        _err(f"debug: Kantata's answer, in full: {exc.body}", held)


def _printable(text: str) -> str:
    """A file named in another encoding than the system's comes in holding bytes Python keeps as lone surrogates,
    which a UTF-8 terminal, pipe or JSON reader refuses: they are shown as escapes (\\xe9) instead."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _settings(args: argparse.Namespace, held: list[Secret], *, connect: bool) -> Settings:
    """The command's one Settings: flags > environment > config file > defaults; says which file was used.
    Without `connect` nothing about Kantata is read (a dry run offline uses neither the URL nor the token)."""
    config = load_config(getattr(args, "config", None))
    environ: dict[str, str] = dict(os.environ)
    if not connect:
        environ = {k: v for k, v in environ.items() if k not in (BASE_URL_ENV, TOKEN_ENV, TOKEN_FILE_ENV)}
    values = config.values if connect else {k: v for k, v in config.values.items() if k != "base_url"}
    settings = Settings.from_argparse(args if connect else _offline(args), values, environ)
    if settings.token is not None:
        held.append(settings.token)
    if config.path is not None and not getattr(args, "quiet", False):
        _err(f"config: {config.path}")
    if (log := logs.current()) is not None:
        log.start(settings, connect=connect)
    return settings


def _offline(args: argparse.Namespace) -> argparse.Namespace:
    """The flags without those that name a Kantata or its token: a dry run offline reads neither."""
    return argparse.Namespace(**{**vars(args), "base_url": None, "token_file": None})


def _read_ahead(args: argparse.Namespace, settings: Settings) -> ReadAhead | None:
    """The schedule's early read, started before pandas and pandera are imported (schedule/prefetch.py)."""
    return start_prefetch(args.schedule, settings.sheet) if settings.prefetch else None


def _validate(args: argparse.Namespace, held: list[Secret]) -> int:
    online = bool(args.online or args.sandbox)
    settings = _settings(args, held, connect=online)
    ahead = _read_ahead(args, settings)
    from importer.pipeline import run_validate  # pandas and pandera, slow to import: while the workbook is read

    with _progress(args) as bars:
        if not online:
            with _tuned(upload=False):
                result = run_validate(args.schedule, output=args.output, settings=settings, online=False,
                                      on_progress=bars, read_ahead=ahead)  # fmt: skip
        else:
            with _connection(args, settings, held) as connected, _tuned(upload=False):
                result = run_validate(args.schedule, output=args.output, settings=connected, online=True,
                                      on_stage=_say(args, bars, held), on_progress=bars,
                                      read_ahead=ahead)  # fmt: skip
    _report(result, args, settings, held, dry_run=True)
    return int(result.exit_code)


def _upload(args: argparse.Namespace, held: list[Secret], *, ask: Callable[[str], str] | None) -> int:
    if args.delete_missing == -1 and (args.non_interactive or ask is None):
        raise ConfigError("--delete-missing without a count needs a terminal to ask on: spell the count out, "
                          "--delete-missing=N (validate --online lists the milestones no row matches)")  # fmt: skip
    settings = _settings(args, held, connect=True)
    ahead = _read_ahead(args, settings)
    with _connection(args, settings, held) as connected:
        return _run_upload(args, connected, held, ahead, ask)


def _say(args: argparse.Namespace, bars: Bars | None, held: list[Secret]) -> Callable[[str], None] | None:
    """Where stage messages go: nowhere with --quiet, above the bars when they are drawn, else stderr."""
    return None if args.quiet else (bars.say if bars else lambda text: _err(text, held))


@contextmanager
def _connection(args: argparse.Namespace, settings: Settings, held: list[Secret]) -> Iterator[Settings]:
    """`settings` with a token: --sandbox's (a look-alike for this command only) or the one from the environment
    (prompting for it unless --non-interactive); says which Kantata, and whence the token."""
    quiet = getattr(args, "quiet", False)
    if args.sandbox:
        with _sandbox_server() as (url, token):
            held.append(token)
            connected = replace(settings, base_url=url, token=token)
            if not quiet:
                _err(f"kantata: {sanitize_url(connected.base_url)} (token from the built-in sandbox)")
            yield connected
        return
    token = settings.require_token(interactive=not args.non_interactive)
    held.append(token)
    if not quiet:
        _err(f"kantata: {sanitize_url(settings.base_url)} (token from {settings.token_source or 'the prompt'})")
    yield replace(settings, token=token)


def _run_upload(
    args: argparse.Namespace,
    settings: Settings,
    held: list[Secret],
    ahead: ReadAhead | None,
    ask: Callable[[str], str] | None,
) -> int:
    from importer.pipeline import run_upload

    with _progress(args) as bars, _tuned(upload=True):
        deleting = _deleting(args, bars, held, ask)
        result = run_upload(args.schedule, settings, output=args.output, on_stage=_say(args, bars, held),
                            on_progress=bars, read_ahead=ahead, delete_missing=deleting)  # fmt: skip
    _report(result, args, settings, held, dry_run=False)
    return int(result.exit_code)


def _deleting(
    args: argparse.Namespace, bars: Bars | None, held: list[Secret], ask: Callable[[str], str] | None
) -> DeleteMissing | None:
    """--delete-missing as the library takes it: the count given, or the question asked."""
    from importer.delivery import DeleteMissing

    if args.delete_missing is None:
        return None
    if args.delete_missing >= 0:
        return DeleteMissing(count=args.delete_missing)
    assert ask is not None  # _upload refused --delete-missing without a count where no one can answer

    def confirm(missing: Sequence[NotInSchedule]) -> bool:
        deletable = [m for m in missing if not m.invoiced]
        show = bars.say if bars else (lambda text: _err(text, held))
        show(f"{len(missing)} milestones created by kantata-import in these projects are not in this schedule:")
        for m in missing:
            show(f"  {_missing_line(m)}")
        try:
            answer = ask(f"delete the {len(deletable)} not on an invoice from Kantata? [y/N] ")
        except EOFError:
            return False
        return answer.strip().casefold() in ("y", "yes")

    return DeleteMissing(confirm=confirm)


def _missing_line(m: NotInSchedule) -> str:
    on_invoice = " (on an invoice: kept)" if m.invoiced else ""
    cents = "" if m.amount_in_cents is None else f", {m.amount_in_cents} cents"
    return (
        f"{m.milestone_id}  project {m.workspace_id}  {m.title!r}{cents}, {m.date_to_invoice or 'no date'}{on_invoice}"
    )


@contextmanager
def _sandbox_server() -> Iterator[tuple[str, Secret]]:
    from importer.sandbox import DEFAULT_TOKEN, Sandbox

    with Sandbox() as server:
        _err(f"sandbox: a Kantata look-alike is running at {server.url} for this command only (in memory)")
        yield server.url, Secret(DEFAULT_TOKEN)


def _template(args: argparse.Namespace, held: list[Secret]) -> int:
    from importer.pipeline import run_template

    overwrite, external = bool(args.force), bool(args.external_reference)
    try:
        if not (args.online or args.sandbox):
            made = run_template(args.output, overwrite=overwrite, external=external)
        else:
            with _connection(args, _settings(args, held, connect=True), held) as settings:
                made = run_template(args.output, settings, overwrite=overwrite, external=external)
    except ConfigError as exc:
        if "already exists" in str(exc):  # the one refusal a flag answers
            raise ConfigError(f"{args.output} already exists; choose another name with -o, or add --force to "
                              "replace it") from exc  # fmt: skip
        raise
    listed = "" if made.workspaces is None else (f" (Workspaces sheet: {len(made.workspaces)} projects, Tasks "
                                                 f"sheet: {len(made.tasks or [])} tasks)")  # fmt: skip
    print(
        _printable(
            f"wrote {made.path}{listed}: fill in the Billing sheet, then run: kantata-import validate {made.path}"
        )
    )
    return int(ExitCode.OK)


def _sandbox(args: argparse.Namespace, held: list[Secret]) -> int:
    import sqlite3

    from importer import sandbox

    try:
        sandbox.serve(
            host=args.host, port=args.port, db=args.db, faults=sandbox.faults_from_args(args), invoiced=args.invoiced
        )
    except OSError as exc:  # the port taken: the user's to mend, not a bug
        raise ConfigError(f"the sandbox cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); choose "
                          "another --port (0 picks a free one)") from exc  # fmt: skip
    except sqlite3.Error as exc:
        raise ConfigError(f"the sandbox cannot use --db {args.db} ({exc}); name a file in a folder you can write "
                          "to") from exc  # fmt: skip
    return int(ExitCode.OK)


WEB_INSTALL = 'pip install "kantata-import[web]"'
WEB_MODULES = ("starlette", "uvicorn", "multipart", "jinja2")


def _serve(args: argparse.Namespace, held: list[Secret]) -> int:
    import importlib.util

    missing = [name for name in WEB_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"the page needs the web extra, which is not installed (no {', '.join(missing)}): "
                          f"run {WEB_INSTALL}")  # fmt: skip
    from importer.settings import is_loopback

    if not is_loopback(args.host):
        if not args.allow_remote:
            raise ConfigError(f"--host {args.host} would let other machines reach the page; add --allow-remote "
                              "if that is what you want")  # fmt: skip
        _err(f"warning: the page listens on {args.host}: anyone who can reach it and learns its address can "
             "upload with your token; the traffic is not encrypted")  # fmt: skip
    from importer.web import serve

    settings = Settings.from_env(dict(os.environ))
    if settings.token is not None:
        held.append(settings.token)
    try:
        if args.sandbox:
            with _sandbox_server() as (url, token):
                held.append(token)
                serve(replace(settings, base_url=url, token=token), host=args.host, port=args.port, say=_err,
                      open_browser=not args.no_browser)  # fmt: skip
        else:
            serve(settings, host=args.host, port=args.port, say=_err, open_browser=not args.no_browser)
    except OSError as exc:
        raise ConfigError(f"the page cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); choose "
                          "another --port (0 picks a free one)") from exc  # fmt: skip
    return int(ExitCode.OK)


def _report(
    result: RunResult, args: argparse.Namespace, settings: Settings, held: list[Secret], *, dry_run: bool
) -> None:
    """Issues to stderr (the first few, in Excel coordinates); the closing summary to stdout, or with --json the
    JSON summary to stdout and the closing summary to stderr."""
    if (log := logs.current()) is not None:
        log.counts = dict(result.counts)
    if not args.quiet:
        _show_issues(result, held)
    if result.stopped is not None:
        _err(f"stopped: {result.stopped}", held)
        _show_answer(args, result.stopped, held)
    if args.json:
        if not args.quiet:
            for line in _closing_summary(result, args, settings, dry_run=dry_run):
                _err(line, held)
        print(
            _printable(json.dumps(run_summary(result, command=args.command), indent=2, ensure_ascii=False)), flush=True
        )
    else:
        for line in _closing_summary(result, args, settings, dry_run=dry_run):
            print(_printable(line))


def _show_issues(result: RunResult, held: list[Secret]) -> None:
    for note in result.notes:
        _err(f"note: {note}", held)
    shown = result.issues[:MAX_ISSUES_SHOWN]
    refused = (Status.REJECTED, Status.CONFLICT)  # a row's own failure at Kantata, said in Kantata's or our words
    rejected = sorted((o for o in result.outcomes.values() if o.status in refused), key=lambda o: o.row)
    width = max([30, *(len(i.code) for i in shown)])  # the longest code still leaves a space before the message
    if result.issues:
        _err(f"{'row':>6}  {'cell':<6} {'code':<{width}} message")
        for issue in shown:
            prefix = "" if issue.is_error else "warning: "
            _err(f"{issue.row:>6}  {issue.column or '-':<6} {issue.code:<{width}} {prefix}{issue.message}")
        if len(result.issues) > MAX_ISSUES_SHOWN:
            _err(f"... and {len(result.issues) - MAX_ISSUES_SHOWN} more: see the Errors sheet of the results")
    for o in rejected[:MAX_ISSUES_SHOWN]:
        code = "rejected-by-kantata" if o.status is Status.REJECTED else "conflict"
        words = "; ".join(in_words(e)[0] for e in o.errors)
        _err(f"{o.row:>6}  {'-':<6} {code:<{width}} {words}")


def _closing_summary(result: RunResult, args: argparse.Namespace, settings: Settings, *, dry_run: bool) -> list[str]:
    """Counts per status, amounts per project, where the results are and what to do next."""
    counts = ", ".join(f"{n} {status}" for status, n in result.counts.items() if n)
    where = f' (sheet "{result.sheet}")' if result.sheet else ""
    lines = [f"{result.rows} rows read{where}: {counts or 'nothing to do'}"]
    lines += _amounts(result, settings, dry_run=dry_run)
    lines += _before_after(result, settings)
    lines += _not_in_schedule(result)
    lines.append(f"results: {result.output}")
    kept = kept_results(result.output)
    if kept:  # the run before is not lost: say where it went
        lines.append(f"  earlier results kept beside it: {kept[-1].name}" + (
            f" and {len(kept) - 1} older" if len(kept) > 1 else ""))  # fmt: skip
    nxt = _next_step(result, args, dry_run=dry_run)
    if nxt:
        lines.append(f"next: {nxt}")
    return lines


def _not_in_schedule(result: RunResult) -> list[str]:
    """How many milestones no row matches, what became of them, and the hints."""
    missing = result.not_in_schedule
    if not missing:
        return []
    deleted = sum(m.outcome == "deleted" for m in missing)
    invoiced = sum(m.invoiced for m in missing)
    deletable = len(missing) - invoiced - deleted
    what = [f"{deleted} deleted"] if deleted else []
    what += [f"{invoiced} on an invoice (never deleted)"] if invoiced else []
    if deletable:
        tried = any(m.outcome == "deleted" or m.outcome.startswith("not deleted") for m in missing)
        them = "them" if deletable > 1 else "it"
        what.append(
            f"{deletable} kept" + ("" if tried else f": delete {them} with upload --delete-missing={deletable}")
        )
    lines = [f"not in this schedule: {len(missing)} milestones created by kantata-import in its projects that no "
             f"row matches ({'; '.join(what)}); see the sheet \"{MISSING_SHEET}\""]  # fmt: skip
    lines += [f"  {m.milestone_id}: {m.hint}" for m in missing if m.hint][:MAX_ISSUES_SHOWN]
    return lines


def _amounts(result: RunResult, settings: Settings, *, dry_run: bool) -> list[str]:
    """Per project, the rows that will be created (dry run: `valid`, not those `--online` found in Kantata
    already) or are in Kantata (upload: `created` and `unchanged`) and their amount, exactly."""

    def rows_of(t: ProjectTotal) -> int:
        return t.rows[Status.VALID.value] if dry_run else t.landed_rows

    def cents_of(t: ProjectTotal) -> int:
        return t.cents[Status.VALID.value] if dry_run else t.landed_cents

    shown = [t for t in result.totals if rows_of(t)]
    if not shown:
        return []
    table = [(f"  project {t.workspace_id}", str(rows_of(t)),
              format_units(cents_of(t), decimals_for(t.currency, settings.currency_decimals)) + (
                  f" {t.currency}" if t.currency else "")) for t in shown[:MAX_PROJECTS_SHOWN]]  # fmt: skip
    head = ("to be created (valid rows)" if dry_run else "created or already in Kantata", "rows", "amount")
    w = [max(len(row[i]) for row in [head, *table]) for i in range(3)]
    lines = [f"{a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}" for a, b, c in [head, *table]]
    if len(shown) > MAX_PROJECTS_SHOWN:
        lines.append(f"  ... and {len(shown) - MAX_PROJECTS_SHOWN} more projects: see the Summary sheet of the results")
    if any(t.currency is None for t in shown):
        lines.append(f"  amounts with {settings.currency_decimals} decimals (--currency-decimals); exact cents on the "
                     "Summary sheet")  # fmt: skip
    return lines


def _before_after(result: RunResult, settings: Settings) -> list[str]:
    """Per project, what the schedule's milestones in Kantata add up to now and once the plan is carried out (an
    online dry run), exactly. Only projects where rows matched milestones already there: for the others, "to be
    created" above says it all."""
    there = (Status.UNCHANGED.value, Status.UPDATE.value, Status.CONFLICT.value)
    shown = [t for t in result.totals if t.kantata is not None and any(t.rows[s] for s in there)]
    if not shown:
        return []

    def units(cents: int, t: ProjectTotal) -> str:
        return format_units(cents, decimals_for(t.currency, settings.currency_decimals)) + (
            f" {t.currency}" if t.currency else "")  # fmt: skip

    table = []
    for t in shown[:MAX_PROJECTS_SHOWN]:
        assert t.kantata is not None
        before, after = t.kantata
        change = after - before
        table.append((f"  project {t.workspace_id}", units(before, t), units(after, t),
                      ("+" if change > 0 else "") + units(change, t)))  # fmt: skip
    head = ("in Kantata, this schedule's milestones", "now", "after upload", "change")
    w = [max(len(row[i]) for row in [head, *table]) for i in range(4)]
    lines = [f"{a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}  {d:>{w[3]}}" for a, b, c, d in [head, *table]]
    if len(shown) > MAX_PROJECTS_SHOWN:
        lines.append(f"  ... and {len(shown) - MAX_PROJECTS_SHOWN} more projects: see the Summary sheet of the results")
    return lines


def _next_step(result: RunResult, args: argparse.Namespace, *, dry_run: bool) -> str | None:
    """The command to run next, spelled out."""
    code = result.exit_code
    if code == ExitCode.ROWS_FAILED:
        kinds = ("invalid", "rejected", "conflict")
        failed = " and ".join(f"{n} {s}" for s, n in result.counts.items() if n and s in kinds)
        rows = "row" if sum(result.counts[s] for s in kinds) == 1 else "rows"
        if dry_run:
            return f"fix the {failed} {rows} (see the Errors sheet), then run {_command(args, 'validate')} again"
        return (f"fix the {failed} {rows} (see the Errors sheet) and run the same command again: "
                "rows already created will be skipped")  # fmt: skip
    if code == ExitCode.STOPPED and (
        getattr(result.stopped, "status", None) == 404 or UNRESOLVED in str(result.stopped)
    ):  # a re-run cannot mend a wrong address
        return "check the base URL (--base-url, KANTATA_BASE_URL or base_url in the config), then run again"
    if code == ExitCode.STOPPED and isinstance(result.stopped, JournalNotWritten):  # space, not Kantata
        return (f"free some space in {result.stopped.path.parent} (or restore write access to it), then run the "
                "same command again; it resumes without duplicates")  # fmt: skip
    if code == ExitCode.STOPPED:
        return "run the same command again when Kantata is reachable; it resumes without duplicates"
    if code == ExitCode.AUTH:  # the token refused midway: rows created before are in the workbook
        return "set a valid KANTATA_API_TOKEN and run the same command again; it resumes without duplicates"
    if code == ExitCode.INTERRUPTED:
        return "run the same command again to resume; nothing is sent twice"
    if dry_run and code == ExitCode.OK and (result.counts[Status.VALID.value] or result.counts[Status.UPDATE.value]):
        if result.base_url is None:  # offline: each row on its own; Kantata's side is unchecked
            return (f"{_command(args, 'upload')}; this check was offline: whether each project and task exists "
                    "and belong together, and which rows are already in Kantata, only "
                    f"{_command(args, 'validate')} --online can tell (reading only)")  # fmt: skip
        return _command(args, "upload")
    if dry_run and code == ExitCode.OK and result.counts[Status.UNCHANGED.value]:
        return "nothing to upload: every row is already in Kantata"
    return None


def _command(args: argparse.Namespace, command: str) -> str:
    """`kantata-import COMMAND SCHEDULE` with the reading flags the user typed (a config file needs no repeat)."""
    words = ["kantata-import", command, str(args.schedule)]
    for name in ("sheet", "date_format", "currency_decimals"):
        if getattr(args, name, None) is not None:  # typed as a flag
            words += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.config is not None:
        words += ["--config", str(args.config)]
    if command == "validate":  # checked against Kantata: check the same way again
        words += [f"--{name}" for name in ("online", "sandbox") if getattr(args, name, False)]
    return shlex.join(words)


def _json_error(args: argparse.Namespace, code: ExitCode, kind: str, message: str, held: Sequence[Secret] = ()) -> None:
    """Under --json, a run that could not finish still prints its one JSON object."""
    if not getattr(args, "json", False):
        return
    schedule = getattr(args, "schedule", None)
    summary = error_summary(command=args.command, file=None if schedule is None else str(schedule),
                            sheet=getattr(args, "sheet", None), exit_code=code, kind=kind,
                            message=redact(message, *held))  # fmt: skip
    print(_printable(json.dumps(summary, indent=2, ensure_ascii=False)), flush=True)


@contextmanager
def _progress(args: argparse.Namespace) -> Iterator[Bars | None]:
    """Bars only for a person watching: stderr is a terminal and neither --quiet nor --verbose (which shows the
    events instead) was given."""
    if args.quiet or getattr(args, "verbose", False) or not sys.stderr.isatty():
        yield None
        return
    bars = Bars(sys.stderr)
    try:
        yield bars
    finally:
        bars.close()
