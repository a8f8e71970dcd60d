"""The `kantata-import` command: argument parsing, printing and exit codes over the library. No rules live here."""

from __future__ import annotations

import sys


def run() -> int:
    """The console script and `python -m importer`. The command's modules are imported here, so that a Ctrl-C
    while they load ends with exit 130 and one line instead of a traceback."""
    try:
        from importer.cli.main import run as command
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) while starting; nothing was read or sent", file=sys.stderr)
        return 130
    return command()


__all__ = ["run"]
