"""`kantata-import`: argument parsing, printing and exit codes over `importer.pipeline`. No rules live here.

argparse rather than click: it adds no dependency, and `main(argv) -> int` is trivial to test in-process and as
a subprocess. Only this module prints or decides an exit code.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from importer import __version__
from importer.cells import ParseOptions
from importer.concurrency import DEFAULT_CONCURRENCY, MAX_CONCURRENCY
from importer.errors import EXIT_CODE_HELP, ConfigError, ExitCode, ImporterError
from importer.pipeline import RunResult, run_template, run_upload, run_validate
from importer.settings import (
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    MAX_BATCH,
    TOKEN_ENV,
    Secret,
    Settings,
    sanitize_url,
)

MAX_ISSUES_SHOWN = 20

DESCRIPTION = """\
Load a billing schedule (.xlsx or .csv) into Kantata OX as billing milestones, exactly once.

  kantata-import template -o schedule.xlsx        blank schedule to fill in
  kantata-import validate schedule.xlsx           dry run: checks every row, sends nothing
  kantata-import validate schedule.xlsx --online  ... and asks Kantata (read-only) about projects and tasks
  kantata-import upload schedule.xlsx             creates the milestones, writes schedule.results.xlsx
  kantata-import upload schedule.xlsx --sandbox   the same against a built-in Kantata look-alike
  kantata-import sandbox --port 8765              run that look-alike on its own

The API token is read from the environment variable KANTATA_API_TOKEN (never from a flag)."""


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
    parser = argparse.ArgumentParser(
        prog="kantata-import",
        description=DESCRIPTION,
        epilog=EXIT_CODE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def schedule_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text.splitlines()[0], description=help_text, epilog=EXIT_CODE_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        p.add_argument("schedule", type=Path, help="the billing schedule, .xlsx or .csv")
        p.add_argument("-o", "--output", type=Path, help="results workbook (default: <schedule>.results.xlsx)")
        p.add_argument("--sheet", help="sheet to read (default: the first sheet whose header row matches)")
        p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
        p.add_argument(
            "--date-format",
            metavar="FORMAT",
            help="how text dates that are not ISO (2026-03-31) are written, e.g. %%d/%%m/%%Y or %%m/%%d/%%Y",
        )
        p.add_argument(
            "--currency-decimals",
            type=int,
            default=2,
            choices=range(5),
            metavar="N",
            help="decimal places an Amount column may have (default 2; 0 for JPY, 3 for KWD)",
        )
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    val = schedule_command("validate", VALIDATE_HELP)
    val.add_argument("--online", action="store_true", help="also check against Kantata, reading only (needs "
                     f"{TOKEN_ENV}): projects, tasks, currencies, rows already created")  # fmt: skip
    _connection_arguments(val, "check against")
    up = schedule_command("upload", "Create a billing milestone for every valid row not already in Kantata.")
    up.add_argument("--batch-size", type=int, help=f"milestones per request, 1-{MAX_BATCH} (default {MAX_BATCH})")
    up.add_argument(
        "--concurrency",
        type=int,
        help=f"requests in flight at most, 1-{MAX_CONCURRENCY} (default {DEFAULT_CONCURRENCY}; "
        "lowered automatically while Kantata answers 429)",
    )
    _connection_arguments(up, "upload to")

    tpl = sub.add_parser("template", help=TEMPLATE_HELP.splitlines()[0],
                         description=TEMPLATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    tpl.add_argument("-o", "--output", type=Path, default=Path("billing_schedule.xlsx"),
                     help="where to write it (default: billing_schedule.xlsx; never overwrites)")  # fmt: skip
    tpl.add_argument("--online", action="store_true",
                     help=f"add a Workspaces sheet: the projects the token ({TOKEN_ENV}) can see")  # fmt: skip
    _connection_arguments(tpl, "list the projects of")
    tpl.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    sbx = sub.add_parser("sandbox", help="Run the built-in Kantata look-alike on loopback.",
                         description="Run the built-in Kantata OX look-alike on loopback, to point tools at. "
                         "Ctrl-C stops it.")  # fmt: skip
    from importer import sandbox

    sandbox.add_arguments(sbx)
    sbx.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _connection_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """Which Kantata to talk to and how to get the token: one set of flags for every command that connects."""
    parser.add_argument("--base-url", help=f"Kantata API URL (or set {BASE_URL_ENV}; default {DEFAULT_BASE_URL})")
    where = "a built-in Kantata look-alike on this machine (no account, no network)"
    parser.add_argument("--sandbox", action="store_true", help=f"{verb} {where}")
    parser.add_argument("--non-interactive", action="store_true",
                        help=f"never prompt for the token; fail if {TOKEN_ENV} is not set")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"validate": _validate, "upload": _upload, "template": _template, "sandbox": _sandbox}
    try:
        return int(handlers[args.command](args))
    except ImporterError as exc:
        _err(f"error: {exc}")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _err("interrupted")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        else:
            _err(f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)")
        return int(ExitCode.BUG)


def _err(text: str, stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stderr, flush=True)


def _options(args: argparse.Namespace) -> ParseOptions:
    if args.date_format is not None and "%" not in args.date_format:
        raise ConfigError(f"--date-format {args.date_format!r} has no % codes; write e.g. %d/%m/%Y")
    return ParseOptions(date_format=args.date_format, currency_decimals=args.currency_decimals)


def _validate(args: argparse.Namespace) -> int:
    options = _options(args)
    if not (args.online or args.sandbox):
        result = run_validate(args.schedule, sheet=args.sheet, output=args.output, options=options)
    else:
        with _connection(args, quiet=args.quiet) as settings:
            result = run_validate(args.schedule, sheet=args.sheet, output=args.output, options=options,
                                  settings=settings, on_stage=None if args.quiet else _err)  # fmt: skip
    _report(result, args, dry_run=True)
    return int(result.exit_code)


def _upload(args: argparse.Namespace) -> int:
    with _connection(args, quiet=args.quiet) as settings:
        return _run_upload(args, settings)


@contextmanager
def _connection(args: argparse.Namespace, *, quiet: bool) -> Iterator[Settings]:
    """Settings with a token, from --sandbox (a look-alike for this command only) or from the environment and
    flags (prompting for the token unless --non-interactive); says which Kantata, and whence the token."""
    overrides = {name: getattr(args, name, None) for name in ("base_url", "batch_size", "concurrency")}
    if args.sandbox:
        with _sandbox_server() as (url, token):
            settings = replace(Settings.from_env(**overrides), base_url=url, token=token)
            if not quiet:
                _err(f"kantata: {sanitize_url(settings.base_url)} (token from the built-in sandbox)")
            yield settings
        return
    settings = Settings.from_env(**overrides)
    token = settings.require_token(interactive=not args.non_interactive)
    if not quiet:
        _err(f"kantata: {sanitize_url(settings.base_url)} (token from {TOKEN_ENV})")
    yield replace(settings, token=token)


def _run_upload(args: argparse.Namespace, settings: Settings) -> int:
    result = run_upload(
        args.schedule,
        settings,
        sheet=args.sheet,
        output=args.output,
        on_stage=None if args.quiet else _err,
        options=_options(args),
    )
    _report(result, args, dry_run=False)
    return int(result.exit_code)


@contextmanager
def _sandbox_server() -> Iterator[tuple[str, Secret]]:
    from importer.sandbox import DEFAULT_TOKEN, Sandbox

    with Sandbox() as server:
        _err(f"sandbox: a Kantata look-alike is running at {server.url} for this command only (in memory)")
        yield server.url, Secret(DEFAULT_TOKEN)


def _template(args: argparse.Namespace) -> int:
    if not (args.online or args.sandbox):
        made = run_template(args.output)
    else:
        with _connection(args, quiet=False) as settings:
            made = run_template(args.output, settings)
    listed = "" if made.workspaces is None else f" (Workspaces sheet: {len(made.workspaces)} projects)"
    print(f"wrote {made.path}{listed}: fill in the Billing sheet, then run: kantata-import validate {made.path}")
    return int(ExitCode.OK)


def _sandbox(args: argparse.Namespace) -> int:
    from importer import sandbox

    sandbox.serve(host=args.host, port=args.port, db=args.db, faults=sandbox.faults_from_args(args))
    return int(ExitCode.OK)


def _report(result: RunResult, args: argparse.Namespace, *, dry_run: bool) -> None:
    """Issues to stderr (the first few, in Excel coordinates); the summary to stdout."""
    for note in result.notes:
        if not args.quiet:
            _err(f"note: {note}")
    if result.issues and not args.quiet:
        _err(f"{'row':>6}  {'cell':<6} {'code':<30} message")
        for issue in result.issues[:MAX_ISSUES_SHOWN]:
            prefix = "" if issue.is_error else "warning: "
            _err(f"{issue.row:>6}  {issue.column or '-':<6} {issue.code:<30} {prefix}{issue.message}")
        if len(result.issues) > MAX_ISSUES_SHOWN:
            _err(f"... and {len(result.issues) - MAX_ISSUES_SHOWN} more: see the Errors sheet of the results")
    rejected = [o for o in result.outcomes.values() if o.status.value == "rejected"]
    if rejected and not args.quiet:
        for o in sorted(rejected, key=lambda o: o.row)[:MAX_ISSUES_SHOWN]:
            _err(f"{o.row:>6}  {'-':<6} {'rejected-by-kantata':<30} {'; '.join(o.errors)}")
    if result.stopped is not None:
        _err(f"stopped: {result.stopped}")
    counts = ", ".join(f"{n} {status}" for status, n in result.counts.items() if n)
    where = f' (sheet "{result.sheet}")' if result.sheet else ""
    print(f"{result.rows} rows read{where}: {counts or 'nothing to do'}")
    print(f"results: {result.output}")
    if result.exit_code == ExitCode.ROWS_FAILED:
        nxt = "fix the rows marked invalid or rejected and run the same command again"
        if not dry_run:
            nxt += " (rows already created will be skipped)"
        print(f"next: {nxt}")
    elif result.exit_code == ExitCode.STOPPED:
        print("next: run the same command again when Kantata is reachable; it resumes without duplicates")
    elif dry_run and result.exit_code == ExitCode.OK and not result.counts["valid"] and result.counts["exists"]:
        print("next: nothing to upload: every row is already in Kantata")
    elif dry_run and result.exit_code == ExitCode.OK:
        print(f"next: kantata-import upload {args.schedule}")
