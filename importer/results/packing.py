"""The workbook class every results workbook is written with: xlsxwriter's, packed faster.

Kept apart from report.py so that the benchmark's I/O floor can pack its file the same way without importing
pandas (report.py reads the loader's frames).
"""

from __future__ import annotations

import contextlib
import types
import zipfile
from typing import Any

import xlsxwriter
import xlsxwriter.exceptions
import xlsxwriter.workbook
import xlsxwriter.worksheet

PACK_LEVEL = 1  # zlib's fastest (Z_BEST_SPEED); xlsxwriter always packs at zlib's default, 6


class ExactNumbers(xlsxwriter.worksheet.Worksheet):  # type: ignore[misc]  # xlsxwriter ships no types
    """A worksheet that writes every number with the digits that give it back exactly.

    xlsxwriter writes 16 significant digits (f"{n:.16G}"); a double can need 17, as Excel itself writes them, so a
    cell's 3333.3333333333335 would come back from the results as 3333.333333333333. Python's repr is the
    shortest text that reads back as the same double; xsd:double (the sheet's <v>) reads "1e+20" as Excel does."""

    def _xml_number_element(self, number: float, attributes: list[tuple[str, object]] | None = None) -> None:
        attr = "".join(f' {key}="{self._escape_attributes(value)}"' for key, value in attributes or ())
        exact = float(number) if isinstance(number, float) else int(number)  # numpy's repr names its type
        self.fh.write(f"<c{attr}><v>{exact!r}</v></c>")


def _level_zip_file(file: Any, mode: Any, **kwargs: Any) -> zipfile.ZipFile:
    """The ZipFile xlsxwriter packs with, at PACK_LEVEL (looked up at each call, so the benchmark can compare)."""
    return zipfile.ZipFile(file, mode, compresslevel=PACK_LEVEL, **kwargs)


def _packing_at_level() -> Any:
    """xlsxwriter's own `Workbook._store_workbook`, the same code, but whose global name `ZipFile` is ours: a
    function built over a copy of its module's namespace, so xlsxwriter's module, and every other workbook in
    the process, are left as they are."""
    store = xlsxwriter.workbook.Workbook._store_workbook
    names = {**vars(xlsxwriter.workbook), "ZipFile": _level_zip_file}
    return types.FunctionType(store.__code__, names, store.__name__, store.__defaults__, store.__closure__)


class ResultsWorkbook(xlsxwriter.Workbook):  # type: ignore[misc]  # xlsxwriter ships no types
    """An xlsxwriter workbook packed at zlib level 1 when it closes.

    Packing is the last step of every run, after the last answer of an upload, and the results sheet of a large
    schedule is a lot of XML: level 1 packs it much faster than xlsxwriter's level 6, into a file only somewhat
    larger (benchmarks/process_state.py measures both). xlsxwriter has no setting for the level, so this class's
    `_store_workbook` is xlsxwriter's with its `ZipFile` bound to one at PACK_LEVEL. test_packing checks the
    level holds, and that xlsxwriter's module is untouched."""

    worksheet_class = ExactNumbers
    _store_workbook = _packing_at_level()

    def close(self) -> None:
        """xlsxwriter's close, but a file that cannot be written (a full disk) raises the OSError xlsxwriter
        wraps in its FileCreateError, which callers catch as any other, and the half-written zip is closed here:
        else the garbage collector closes it later, meets the full disk again, and prints a traceback of its own
        ("Exception ignored in: ZipFile.__del__") after the run's message."""
        try:
            super().close()
        except xlsxwriter.exceptions.FileCreateError as exc:
            cause = exc.args[0] if exc.args and isinstance(exc.args[0], OSError) else None
            if cause is None:
                raise
            _drop_open_zips(cause)
            raise cause from None


def _drop_open_zips(exc: BaseException) -> None:
    """Close the files of the zips still open in the frames `exc` went through, so that no ZipFile.__del__ tries
    to finish them: a ZipFile without `fp` is closed already, as far as it knows."""
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, zipfile.ZipFile) and value.fp is not None:
                fp, value.fp = value.fp, None
                with contextlib.suppress(OSError, ValueError):  # its buffer meets the full disk too; the fd closes
                    fp.close()
        tb = tb.tb_next
