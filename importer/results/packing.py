"""The workbook class every results workbook is written with: xlsxwriter's, packed faster.

Kept apart from report.py so that the benchmark's I/O floor can pack its file the same way without importing
pandas (report.py reads the loader's frames).
"""

from __future__ import annotations

import functools
import threading
import zipfile

import xlsxwriter
import xlsxwriter.workbook
import xlsxwriter.worksheet

PACK_LEVEL = 1  # zlib's fastest (Z_BEST_SPEED); xlsxwriter always packs at zlib's default, 6
_packing = threading.Lock()


class ExactNumbers(xlsxwriter.worksheet.Worksheet):  # type: ignore[misc]  # xlsxwriter ships no types
    """A worksheet that writes every number with the digits that give it back exactly.

    xlsxwriter writes 16 significant digits (f"{n:.16G}"); a double can need 17, as Excel itself writes them, so a
    cell's 3333.3333333333335 came back from the results as 3333.333333333333 (helper-17). Python's repr is the
    shortest text that reads back as the same double; xsd:double (the sheet's <v>) reads "1e+20" as Excel does."""

    def _xml_number_element(self, number: float, attributes: list[tuple[str, object]] | None = None) -> None:
        attr = "".join(f' {key}="{self._escape_attributes(value)}"' for key, value in attributes or ())
        exact = float(number) if isinstance(number, float) else int(number)  # numpy's repr names its type
        self.fh.write(f"<c{attr}><v>{exact!r}</v></c>")


class ResultsWorkbook(xlsxwriter.Workbook):  # type: ignore[misc]  # xlsxwriter ships no types
    """An xlsxwriter workbook packed at zlib level 1 when it closes.

    Packing is the last step of every run, after the last answer of an upload. For 100k rows the results sheet
    is 48 MB of XML: level 6 packs it in 0.79 s into 4.0 MB, level 1 in 0.21 s into 5.0 MB (zlib on that sheet,
    this machine). xlsxwriter has no setting for it (3.3.1's options; jmcnamara/XlsxWriter#853 asked), so the
    ZipFile its `_store_workbook` makes is swapped for one with `compresslevel` for the length of that call,
    under a lock so that two closing at once restore it in order. test_packing checks the level holds."""

    worksheet_class = ExactNumbers

    def _store_workbook(self) -> None:
        with _packing:
            packer = xlsxwriter.workbook.ZipFile
            xlsxwriter.workbook.ZipFile = functools.partial(zipfile.ZipFile, compresslevel=PACK_LEVEL)
            try:
                super()._store_workbook()
            finally:
                xlsxwriter.workbook.ZipFile = packer
