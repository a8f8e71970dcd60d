"""The console script's entry point: the command's modules are imported only here, so that a Ctrl-C while they
load (the first half second) ends with exit 130 and one line, not a traceback (helper-18)."""

from __future__ import annotations

import sys


def run() -> int:
    try:
        from importer.cli import run as command
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) while starting; nothing was read or sent", file=sys.stderr)
        return 130
    return command()
