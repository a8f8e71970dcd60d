"""An .xlsx schedule starts being read on a second thread while the CLI imports pandas and pandera.

python-calamine parses a sheet in Rust with the GIL released, so on 2 cores the imports and most of the parse
overlap instead of adding up (benchmarks/README.md has the figures). This module imports only the standard
library and the package checks, and does only what the loader would do first anyway: check the package for zip
bombs and the like, open it, parse the sheet that would be tried first, scan that sheet's XML.

`start_prefetch` returns a handle (`ReadAhead`) that the caller passes down to the loader; nothing is kept in
the module. The loader takes the result (`ReadAhead.claim`) only for the same file, unchanged, and the same
--sheet. Anything that goes wrong here is dropped without a word and the loader reads the file itself, so every
message about a bad file still comes from one place, and a caller who passes no handle sees no difference.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from importer.schedule.xlsx_meta import SheetMeta, check_package, sheet_meta


@dataclass
class Early:
    """A workbook opened ahead of time, and its first candidate sheet parsed (or None when that failed)."""

    book: Any  # python_calamine.CalamineWorkbook
    sheet_name: str
    sheet: Any  # python_calamine.CalamineSheet
    meta: SheetMeta


@dataclass
class ReadAhead:
    """An early read under way: `claim` it once, for the file and --sheet it was started for."""

    key: tuple[str, str | None, int, int]  # absolute path, --sheet, mtime_ns, size
    done: threading.Event = field(default_factory=threading.Event)
    result: Early | None = None
    _claimed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, path: Path, sheet: str | None) -> Early | None:
        """The early read of exactly this file and --sheet, waiting for it to finish; None if it failed, was
        of another file or sheet, the file changed since, or it was claimed already."""
        with self._lock:
            claimed, self._claimed = self._claimed, True
        if claimed:
            return None
        self.done.wait()
        result, self.result = self.result, None
        if result is None or self.key != _key(path, sheet):
            _close(result)
            return None
        return result


def _key(path: Path, sheet: str | None) -> tuple[str, str | None, int, int] | None:
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    return (str(path.absolute()), sheet, st.st_mtime_ns, st.st_size)


def start_prefetch(path: Path, sheet: str | None) -> ReadAhead | None:
    """Begin reading `path` on a daemon thread if it is an .xlsx/.xlsm file, and return the handle to pass to
    the loader; None (nothing started) for any other file."""
    if path.suffix.casefold() not in {".xlsx", ".xlsm"}:
        return None
    try:
        if not path.is_file():
            return None
    except OSError:  # a name too long, say: the loader says why, in words
        return None
    key = _key(path, sheet)
    if key is None:
        return None
    pending = ReadAhead(key)
    threading.Thread(target=_read, args=(pending, path, sheet), name="prefetch", daemon=True).start()
    return pending


def _read(pending: ReadAhead, path: Path, sheet: str | None) -> None:
    try:
        check_package(path)  # before anything decompresses the parts: bombs, entities, encryption
        from python_calamine import CalamineWorkbook

        book = CalamineWorkbook.from_path(str(path))
        try:
            names = sheet_visibility(book)
            if sheet is not None:
                first = sheet if sheet in {n for n, _ in names} else None
            else:
                first = next((n for n, visible in names if visible), None)
            if first is None:
                book.close()
                return
            meta = sheet_meta(path, first)  # first: the checks of the sheet's part and extent
            pending.result = Early(book, first, book.get_sheet_by_name(first), meta)
        except BaseException:
            book.close()
            raise
    except BaseException:  # noqa: BLE001, S110 - a Rust panic too (pyo3: BaseException); the loader reads again
        pending.result = None
    finally:
        pending.done.set()


def sheet_visibility(book: Any) -> list[tuple[str, bool]]:
    """Each sheet of a calamine workbook and whether it is visible: the loader's view too, so that the read-ahead
    parses the very sheet the loader tries first."""
    return [(s.name, str(s.visible).rsplit(".", 1)[-1].casefold() == "visible") for s in book.sheets_metadata]


def _close(early: Early | None) -> None:
    if early is not None:
        with contextlib.suppress(Exception):  # closing a reader we are discarding
            early.book.close()
