"""The files a user keeps (the results workbook, the template) appear whole or not at all, with the permissions
any file they save gets.

A file is written under a temporary name beside its target, then renamed over it: a run stopped halfway leaves
no half-written workbook under the name the user opens. `tempfile.mkstemp` would make that file owner-only
(0600) whatever the umask, so a results workbook or template saved to a shared folder could not be opened by
the colleague it was meant for; the file here is created as `open()` creates one (0666 less the umask). A file
it replaces keeps its mode, as when an editor saves over it: results made private stay private on a re-run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from importer.results.history import keep_previous

_TRIES = 100  # random names that collide this often mean something else is wrong


def temp_beside(target: Path) -> Path:
    """A new, empty file in the target's folder (so that the final rename is atomic), named with a leading dot."""
    for _ in range(_TRIES):
        candidate = target.parent / f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"no free temporary name beside {target} after {_TRIES} tries")


def write_then_rename(target: Path, write: Callable[[Path], object], *, keep: bool = False) -> Path:
    """`write(temp)` fills a file beside `target`, which is then renamed over it; on any failure (Ctrl-C
    included) the temporary file is removed and `target` is left as it was. With `keep`, the file it replaces
    stays beside it under a dated name (history.py)."""
    temp = temp_beside(target)
    try:
        write(temp)
        _keep_mode(temp, target)
        if keep:
            keep_previous(target)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):  # (Windows: still open somewhere) the first error is the one to see
            temp.unlink(missing_ok=True)
        raise
    return target


def move_into_place(done: Path, target: Path, *, keep: bool = False) -> None:
    """A finished file moved to `target` atomically: a rename, or across file systems a copy beside the target
    first. It has the permissions it was created with (0666 less the umask), or those of the file it replaces.
    `keep` as in write_then_rename."""
    try:
        _keep_mode(done, target)
        if keep:
            keep_previous(target)
        os.replace(done, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # only another file system is worth a copy; anything else would fail again
            raise
        # The previous file is kept already (the rename is what failed).
        write_then_rename(target, lambda temp: shutil.copyfile(done, temp))


def _keep_mode(new: Path, target: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.chmod(new, stat.S_IMODE(target.stat().st_mode))
