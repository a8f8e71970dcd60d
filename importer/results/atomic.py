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
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

from importer.results.history import keep_previous

_TRIES = 100  # random names that collide this often mean something else is wrong
# A temporary file is a killed writer's leftover only once untouched this long (a writer creates it, then fills it
# at the end: its own process being gone is what tells), and, when its name carries no writer (an older
# version's) or where the writer cannot be asked about (process_gone), once untouched for an hour, longer than
# any write takes.
LEFTOVER_AGE = 60.0
UNNAMED_LEFTOVER_AGE = 3600.0
# Whether a process can be asked if it is still there without harm: Windows' os.kill(pid, 0) ends the process.
CAN_ASK_WHETHER_RUNNING = os.name == "posix"
_MIDDLE = re.compile(r"[0-9a-f]{8}(?:-p(?P<pid>[0-9]+))?")  # the random part, then the writer's process id


def temp_beside(target: Path) -> Path:
    """A new, empty file in the target's folder (so that the final rename is atomic), named with a leading dot
    and the writer's process id (remove_leftovers)."""
    for _ in range(_TRIES):
        candidate = target.parent / f".{target.stem}.{secrets.token_hex(4)}-p{os.getpid()}.tmp{target.suffix}"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"no free temporary name beside {target} after {_TRIES} tries")


def remove_leftovers(target: Path, *, now: float | None = None) -> list[Path]:
    """The temporary files of `target`'s name that a writer killed outright (kill -9, a power cut) left beside
    it, removed: those whose writer process is gone and that are untouched for LEFTOVER_AGE (older names without
    a writer: UNNAMED_LEFTOVER_AGE). A concurrent writer's file is left alone; so is what cannot be removed."""
    prefix, suffix = f".{target.stem}.", f".tmp{target.suffix}"
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(suffix)]
    except OSError:
        return removed  # the write that follows says what is wrong with the folder
    for name in names:
        found = _MIDDLE.fullmatch(name[len(prefix) : -len(suffix)])
        path = target.parent / name
        try:
            info = path.lstat()
        except OSError:
            continue
        if found is None or not stat.S_ISREG(info.st_mode):
            continue
        pid = found.group("pid")
        gone = process_gone(int(pid)) if pid else None
        if gone is False or now - info.st_mtime < (LEFTOVER_AGE if gone else UNNAMED_LEFTOVER_AGE):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def process_gone(pid: int) -> bool | None:
    """Whether process `pid` has ended; None where that cannot be asked without ending it (only POSIX can ask:
    CAN_ASK_WHETHER_RUNNING), so that the caller goes by how long its files were left untouched instead."""
    if not CAN_ASK_WHETHER_RUNNING:
        return None
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: is it there? (another user's process is there too: PermissionError)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def write_then_rename(target: Path, write: Callable[[Path], object], *, keep: bool = False) -> Path:
    """`write(temp)` fills a file beside `target`, which is then renamed over it; on any failure (Ctrl-C
    included) the temporary file is removed and `target` is left as it was. With `keep`, the file it replaces
    stays beside it under a dated name (history.py). A killed writer's leftovers of the same name go first."""
    remove_leftovers(target)
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
