"""No run destroys the results of the run before: the workbook a run replaces is kept beside it, under a name
dated with the time it was written, so last month's milestone ids are still there after this month's runs.

The latest results are always at the one name (`schedule.results.xlsx`, or `--output`): easy to find, and the
name the journal beside it is keyed on, so that a run stopped midway resumes from it. The earlier ones sort by
date beside it: `schedule.results.2026-12-05T1432.xlsx`, `-2`, `-3` for two written within one minute.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
import shutil
from pathlib import Path

STAMP = "%Y-%m-%dT%H%M"
# A kept workbook's name: the results' stem, a stamp, perhaps a counter that kept it from colliding.
_DATED = re.compile(r"^(?P<stem>.+)\.(?P<stamp>\d{4}-\d\d-\d\dT\d{4})(?:-(?P<n>\d+))?$")
_TRIES = 1000  # as many runs within one minute is something else going wrong


def dated_name(target: Path, when: dt.datetime, n: int = 1) -> Path:
    """`schedule.results.xlsx` at 2026-12-05 14:32 -> `schedule.results.2026-12-05T1432.xlsx` (n > 1: `-n`)."""
    counter = f"-{n}" if n > 1 else ""
    return target.with_name(f"{target.stem}.{when.strftime(STAMP)}{counter}{target.suffix}")


def undated(path: Path) -> Path:
    """The latest results' name for a kept one (itself for any other name)."""
    found = _DATED.match(path.stem)
    return path.with_name(found.group("stem") + path.suffix) if found else path


def keep_previous(target: Path) -> Path | None:
    """The file at `target`, if any, also under a dated name beside it (never over another file), before a new
    one replaces it; that name, or None when there was nothing to keep. A hard link where the file system has
    them (no copy of a large workbook), else a copy."""
    try:
        written = dt.datetime.fromtimestamp(target.stat().st_mtime)
    except FileNotFoundError:
        return None
    for n in range(1, _TRIES + 1):
        kept = dated_name(target, written, n)
        try:
            os.link(target, kept)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK, errno.EACCES):
                raise
            if kept.exists():
                continue
            shutil.copy2(target, kept)  # a file system without hard links (FAT, some network shares)
        return kept
    raise FileExistsError(f"no free dated name beside {target} after {_TRIES} tries")


def kept_results(target: Path) -> list[Path]:
    """The workbooks kept beside `target` by earlier runs, oldest first."""
    stem = re.escape(target.stem)
    mine = re.compile(rf"^{stem}\.\d{{4}}-\d\d-\d\dT\d{{4}}(?:-(\d+))?{re.escape(target.suffix)}$")
    kept = [p for p in target.parent.glob(f"{target.stem}.*{target.suffix}") if mine.match(p.name)]
    return sorted(kept, key=lambda p: (_DATED.match(p.stem).group("stamp"), int(_DATED.match(p.stem).group("n") or 1)))  # type: ignore[union-attr]
