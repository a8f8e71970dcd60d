"""Real spreadsheets as they come: a corpus of messy and hostile files, each with its exact outcome.

Every case is built by code into tmp_path (real .xlsx written by openpyxl or xlsxwriter, real CSV bytes),
run through the CLI in-process, and checked for: the exit code, the exact (row, column, code) of every issue
in the results workbook's Errors sheet (or the one sentence on stderr for an unusable file), the cents that
reached the sandbox where it matters, and that the input file was not modified.
"""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import xlsxwriter
from openpyxl.worksheet.table import Table, TableStyleInfo

from importer.cli.main import main
from importer.sandbox.server import DEFAULT_TOKEN
from importer.schedule import OUTCOME_COLUMNS

H = ["title", "amount_in_cents", "workspace_id", "date_to_invoice", "story_id", "billing_type"]
D = dt.date(2026, 3, 31)
AMOUNT_H = ["title", "amount", "workspace_id"]


def _xlsx(rows: list[list[Any]], *, headers: list[str] = H, sheet: str = "Billing",
          tweak: Callable[[Any], None] | None = None) -> Callable[[Path], Path]:  # fmt: skip
    def build(folder: Path) -> Path:
        path = folder / "in.xlsx"
        wb = openpyxl.Workbook()
        ws = wb.active
        assert ws is not None
        ws.title = sheet
        ws.append(headers)
        for row in rows:
            ws.append(row)
        if tweak is not None:
            tweak(wb)
        wb.save(path)
        return path

    return build


def _csv(data: bytes, name: str = "in.csv") -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return build


def _raw(name: str, data: bytes) -> Callable[[Path], Path]:
    return _csv(data, name)


def _text_cells(wb: Any) -> None:
    for row in wb.active.iter_rows(min_row=2):
        for cell in row:
            if isinstance(cell.value, str):
                cell.data_type = "s"


def _xlsxwriter(write: Callable[[Any], None]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / "in.xlsx"
        wb = xlsxwriter.Workbook(str(path))
        ws = wb.add_worksheet("Billing")
        ws.write_row(0, 0, H[:3])
        write(ws)
        wb.close()
        return path

    return build


def _valid_xlsx_bytes() -> bytes:
    buffer = io.BytesIO()
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(H[:3])
    ws.append(["A", 100, 1001])
    wb.save(buffer)
    return buffer.getvalue()


def _with_member(name: str, data: bytes) -> bytes:
    """A valid workbook with one member replaced (or added)."""
    source = zipfile.ZipFile(io.BytesIO(_valid_xlsx_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for item in source.infolist():
            zf.writestr(item, data if item.filename == name else source.read(item.filename))
        if name not in source.namelist():
            zf.writestr(name, data)
    return out.getvalue()


def _excel_sheet(cells: str) -> Callable[[Path], Path]:
    """A workbook whose sheet XML is written as Excel writes it: doubles with all 17 significant digits
    (openpyxl and xlsxwriter write at most 15, hiding float artefacts)."""
    xml = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
           '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
           '<row r="1"><c r="A1" t="inlineStr"><is><t>title</t></is></c><c r="B1" t="inlineStr"><is><t>amount</t>'
           '</is></c><c r="C1" t="inlineStr"><is><t>workspace_id</t></is></c></row>'
           f"{cells}</sheetData></worksheet>")  # fmt: skip
    return _raw("in.xlsx", _with_member("xl/worksheets/sheet1.xml", xml.encode()))


BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n'
    b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1">'
    b"<si><t>&lol3;</t></si></sst>"
)


def _zip_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/worksheets/sheet1.xml", b"\0" * (40 * 2**20))
    return out.getvalue()


@dataclass
class Case:
    build: Callable[[Path], Path]
    exit: int
    issues: list[tuple[int, str | None, str]] = field(default_factory=list)  # (row, column, code), errors+warnings
    args: list[str] = field(default_factory=list)
    stderr: str | None = None  # a sentence that must appear on stderr
    sent: dict[str, int] | None = None  # title -> cents that must reach Kantata (runs an upload)


def _zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _formula_with_saved_value(ws: Any) -> None:
    ws.write(1, 0, "F")
    ws.write_formula(1, 1, "=100*5", None, 500)  # as Excel saves it: the formula and its result
    ws.write(1, 2, 1001)


def _hide_row(wb: Any) -> None:
    wb.active.row_dimensions[3].hidden = True


def _hide_col(wb: Any) -> None:
    wb.active.column_dimensions["G"].hidden = True


def _merge(wb: Any) -> None:
    wb.active.merge_cells("C2:C3")


def _merged_total(wb: Any) -> None:
    wb.active.merge_cells("C4:D4")  # the Total line's empty cells merged, as a finance sheet often has them
    wb.active.row_dimensions[4].hidden = True


def _table(wb: Any) -> None:
    ws = wb.active
    ws.append(["Total", "=SUBTOTAL(109,B2:B3)", None, None, None, None])
    table = Table(displayName="Billing2026", ref="A1:F4", totalsRowCount=1)
    table.tableStyleInfo = TableStyleInfo(name="TableStyleMedium9", showRowStripes=True)
    ws.add_table(table)


def _cut_off_export(wb: Any) -> None:
    wb.active.cell(row=1_048_576, column=1, value="last row Excel has")


def _two_sheets(wb: Any) -> None:
    notes = wb.create_sheet("Notes", 0)
    notes.append(["Read me first"])


def _hidden_first(wb: Any) -> None:
    old = wb.create_sheet("Old", 0)
    old.append(H)
    old.append(["Old row", 1, 1001, None, None, None])
    old.sheet_state = "hidden"


def _error_value(wb: Any) -> None:
    cell = wb.active["B2"]
    cell.value = "#REF!"
    cell.data_type = "e"


def _shifted(rows: int, columns: int, first: Callable[[Any], None] | None = None) -> Callable[[Any], None]:
    """Blank rows above and blank columns left of everything (after `first`): a sheet not starting at A1."""

    def tweak(wb: Any) -> None:
        if first is not None:
            first(wb)
        if rows:  # openpyxl's insert_*(1, 0) empties the sheet
            wb.active.insert_rows(1, rows)
        if columns:
            wb.active.insert_cols(1, columns)

    return tweak


CASES: dict[str, Case] = {
    # --- layout ---
    "header below a title block": Case(
        _xlsx([["Monthly billing"], [], H, ["A", 100, 1001, D, None, "fixed_date"]], headers=["Acme Corp"]),
        0, sent={"A": 100}),
    "sheet starting at C3 (blank rows and columns first)": Case(
        _xlsx([["A", 100, 1001, D, None, "fixed_date"], ["B", "x", 1001, D, None, None]], tweak=_shifted(2, 2)), 1,
        issues=[(5, "D", "amount-not-a-number")], sent={"A": 100}),
    "an Excel error in a sheet starting at B2": Case(
        _xlsx([["A", 1, 1001, None, None, None], ["B", 2, 1001, None, None, None]], tweak=_shifted(1, 1, _error_value)),
        1, issues=[(3, "C", "formula-error")], sent={"B": 2}),
    "header on row 20 under blank rows": Case(
        _xlsx([["A", 7, 1001, None, None, None]], tweak=_shifted(19, 0)), 0, sent={"A": 7}),
    "columns in any order + extra column kept": Case(
        _xlsx([[1001, "PO-1", 250, "B"]], headers=["workspace_id", "PO", "amount_in_cents", "title"]), 0,
        sent={"B": 250}),
    "readable template headers": Case(
        _xlsx([["C", 300, 1001, D, 5001, "Upon completion"]],
              headers=["Title", "Amount (cents)", "Project ID", "Date to invoice", "Task ID", "Billing type"]), 0,
        sent={"C": 300}),
    "blank rows inside and at the end": Case(
        _xlsx([["A", 1, 1001, None, None, None], [], [None, None], ["B", 2, 1001, None, None, None], [], []]), 0,
        sent={"A": 1, "B": 2}),
    "several sheets: first matching one is used": Case(_xlsx([["A", 5, 1001, None, None, None]], tweak=_two_sheets),
                                                        0, stderr='read sheet "Billing"', sent={"A": 5}),
    "hidden sheet is skipped by default": Case(_xlsx([["New", 7, 1001, None, None, None]], tweak=_hidden_first), 0,
                                               sent={"New": 7}),
    "--sheet picks a sheet": Case(_xlsx([["A", 1, 1001, None, None, None]], sheet="2026"), 0, args=["--sheet", "2026"]),
    "--sheet in other letter case, as Excel's names match": Case(
        _xlsx([["A", 1, 1001, None, None, None]], sheet="Billing 2026"), 0, args=["--sheet", "billing 2026"],
        sent={"A": 1}),
    "--sheet that does not exist": Case(_xlsx([["A", 1, 1001, None, None, None]]), 2, args=["--sheet", "2025"],
                                        stderr='has no sheet "2025"'),
    "hidden row is kept and reported": Case(
        _xlsx([["A", 1, 1001, None, None, None], ["B", 2, 1001, None, None, None]], tweak=_hide_row), 0,
        issues=[(3, None, "hidden-row")], sent={"A": 1, "B": 2}),
    "hidden column is kept and noted": Case(
        _xlsx([["A", 1, 1001, None, None, None, "secret"]], headers=[*H, "Notes"], tweak=_hide_col), 0,
        stderr="hidden columns G (Notes)"),
    "merged cells in the data": Case(
        _xlsx([["A", 1, 1001, None, None, None], ["B", 2, None, None, None, None]], tweak=_merge), 1,
        issues=[(2, "C", "merged-cells"), (3, "C", "merged-cells")]),
    "a merged, hidden Total line under the rows": Case(
        _xlsx([["A", 100, 1001, None], ["B", 200, 1001, None], ["Total", 300, None, None]],
              headers=["title", "amount_in_cents", "workspace_id", "Notes"], tweak=_merged_total), 0,
        stderr="row 4 looks like a totals line (no Project ID): not imported", sent={"A": 100, "B": 200}),
    "duplicate headers": Case(_xlsx([["A", 1, 1001]], headers=["title", "amount_in_cents", "workspace_id", "Title"]),
                              2, stderr="columns A and D both hold title"),
    "missing required column": Case(_xlsx([["A", 1]], headers=["title", "amount_in_cents", "Notes"]), 2,
                                    stderr='"Billing" (the header row (row 1) has no column Project ID)'),
    "amount column headed with its currency": Case(
        _xlsx([["A", 1, 1001]], headers=["title", "Amount (USD)", "workspace_id"]), 2,
        stderr='no column Amount (cents) or Amount (is "Amount (USD)" meant? head it Amount (cents) or Amount)'),
    "no header at all": Case(_xlsx([["x", "y"]], headers=["foo", "bar"]), 2, stderr="no sheet has a header row"),
    "Excel table with a totals row": Case(
        _xlsx([["A", 100, 1001, None, None, None], ["B", 200, 1001, None, None, None]], tweak=_table), 0,
        stderr="skipped the totals row of table Billing2026", sent={"A": 100, "B": 200}),
    # --- cells ---
    "formula with no saved value": Case(_xlsx([["A", "=10*10", 1001, None, None, None]]), 1,
                                        issues=[(2, "B", "formula-without-value")]),
    "a row holding only a formula with no saved result": Case(
        _xlsx([["A", 1, 1001, None, None, None], [None, "=SUM(B2:B2)", None, None, None, None],
               ["C", 3, 1001, None, None, None]]), 0, stderr="row 3 was skipped as blank, but B3 holds a formula"),
    "formula with its saved value is used": Case(
        _xlsxwriter(_formula_with_saved_value), 0, sent={"F": 500}),
    "Excel error value #REF!": Case(_xlsx([["A", 1, 1001, None, None, None]], tweak=_error_value), 1,
                                    issues=[(2, "B", "formula-error")]),
    "numbers stored as text": Case(_xlsx([["A", "12345", "1001", "2026-03-31", None, None]], tweak=_text_cells), 0,
                                   sent={"A": 12345}),
    "spaces and non-breaking spaces": Case(
        _xlsx([["  Spaced\u00a0", "\u00a0 777 ", " 1001 ", None, None, " fixed_date "]], tweak=_text_cells), 0,
        sent={"Spaced": 777}),
    "id stored as 1001.0": Case(_xlsx([["A", 1, 1001.0, None, None, None], ["B", 2, "1001.0", None, None, None]],
                                      tweak=_text_cells), 0, sent={"A": 1, "B": 2}),
    "id 1001.5 is not an id": Case(_xlsx([["A", 1, 1001.5, None, None, None]]), 1, issues=[(2, "C", "id-not-whole")]),
    "ambiguous text date": Case(_xlsx([["A", 1, 1001, "03/04/2026", None, None]]), 1,
                                issues=[(2, "D", "invalid-date")]),
    "ambiguous text date with --date-format": Case(_xlsx([["A", 1, 1001, "03/04/2026", None, None]]), 0,
                                                   args=["--date-format", "%d/%m/%Y"], sent={"A": 1}),
    "date with a time of day": Case(_xlsx([["A", 1, 1001, dt.datetime(2026, 3, 31, 14, 30), None, None]]), 1,
                                    issues=[(2, "D", "date-has-time")]),
    "cents with decimals are never rounded": Case(_xlsx([["A", 12.5, 1001, None, None, None]]), 1,
                                                  issues=[(2, "B", "amount-not-whole")]),
    # --- money in currency units ---
    "amount column, number cells": Case(
        _xlsx([["A", 1234.56, 1001], ["B", -0.01, 1001], ["C", 0.1, 1001]], headers=AMOUNT_H),
        0, sent={"A": 123456, "B": -1, "C": 10}),
    "amount column, text with separators and symbols": Case(
        _xlsx([["A", "1,234.56", 1001], ["B", "(1,234.56)", 1001], ["C", "$99.90", 1001], ["D", "-$5", 1001]],
              headers=["title", "amount", "workspace_id"], tweak=_text_cells), 0,
        sent={"A": 123456, "B": -123456, "C": 9990, "D": -500}),
    "amount with two signs (which one was meant?)": Case(
        _xlsx([["A", "-(5.00)", 1001], ["B", "(-5)", 1001], ["C", "--5", 1001], ["D", "-5", 1001]],
              headers=["title", "amount", "workspace_id"], tweak=_text_cells), 1,
        issues=[(2, "B", "amount-two-signs"), (3, "B", "amount-two-signs"), (4, "B", "amount-two-signs")],
        sent={"D": -500}),
    "amount written in another currency than its project's": Case(
        _xlsx([["A", "EUR 5.00", 1001], ["B", "£5.00", 1001], ["C", "JPY 500", 1001], ["D", "$5.00", 1001],
               ["E", "USD 5.00", 1001], ["F", "5.00 €", 1002], ["G", "$5.00", 1002]],
              headers=["title", "amount", "workspace_id"], tweak=_text_cells), 1,
        issues=[(2, "B", "amount-in-other-currency"), (3, "B", "amount-in-other-currency"),
                (4, "B", "amount-in-other-currency"), (8, "B", "amount-in-other-currency")],
        sent={"D": 500, "E": 500, "F": 500}),
    "amount with too many decimals": Case(_xlsx([["A", 12.345, 1001]], headers=["title", "amount", "workspace_id"]), 1,
                                          issues=[(2, "B", "amount-too-many-decimals")]),
    "a formula whose saved result is empty text (=IF(...,\"\",...))": Case(_excel_sheet(
        '<row r="2"><c r="A2" t="inlineStr"><is><t>A</t></is></c><c r="B2"><v>5</v></c><c r="C2"><v>1001</v></c>'
        '<c r="D2" t="str"><f>IF(1=1,"","x")</f><v></v></c></row>'
        '<row r="3"><c r="A3" t="inlineStr"><is><t>B</t></is></c><c r="B3" s="1" t="str"><f>IF(1=1,"",5)</f><v/>'
        '</c><c r="C3"><v>1001</v></c></row>'), 1, issues=[(3, "B", "required")], sent={"A": 500}),
    "amount that is a formula's float artefact (=0.1+0.2), read as Excel shows it": Case(_excel_sheet(
        '<row r="2"><c r="A2" t="inlineStr"><is><t>A</t></is></c><c r="B2"><v>0.30000000000000004</v></c>'
        '<c r="C2"><v>1001</v></c></row>'), 0, sent={"A": 30}),
    "amount with a real third decimal behind float noise": Case(_excel_sheet(
        '<row r="2"><c r="A2" t="inlineStr"><is><t>A</t></is></c><c r="B2"><v>1650.0050000000001</v></c>'
        '<c r="C2"><v>1001</v></c></row>'), 1, issues=[(2, "B", "amount-too-many-decimals")]),
    "amount Excel stores as a 17-digit double": Case(_excel_sheet(
        '<row r="2"><c r="A2" t="inlineStr"><is><t>A</t></is></c><c r="B2"><v>1234.5599999999999</v></c>'
        '<c r="C2"><v>1001</v></c></row>'), 0, sent={"A": 123456}),
    "amount and cents agree": Case(_xlsx([["A", 12.34, 1234, 1001]],
                                         headers=["title", "amount", "amount_in_cents", "workspace_id"]), 0,
                                   sent={"A": 1234}),
    "amount and cents disagree": Case(_xlsx([["A", 12.34, 1243, 1001]],
                                            headers=["title", "amount", "amount_in_cents", "workspace_id"]), 1,
                                      issues=[(2, "B", "amounts-disagree")]),
    "amount in yen with --currency-decimals 0": Case(
        _xlsx([["A", 1500, 1004], ["B", "12.5", 1004]], headers=["title", "amount", "workspace_id"]), 1,
        args=["--currency-decimals", "0"], issues=[(3, "B", "amount-too-many-decimals")]),
    "amount in dinars with --currency-decimals 3": Case(
        _xlsx([["A", 1.234, 1005]], headers=["title", "amount", "workspace_id"]), 0,
        args=["--currency-decimals", "3"], sent={"A": 1234}),
    # --- CSV ---
    "csv utf-8 with BOM": Case(
        _csv(codecs.BOM_UTF8 + "title,amount_in_cents,workspace_id\r\nCafé,100,1001\r\n".encode()), 0,
        sent={"Café": 100}),
    "csv utf-16 (Excel Unicode text, tabs)": Case(
        _csv(codecs.BOM_UTF16_LE + "title\tamount_in_cents\tworkspace_id\r\nNaïve\t200\t1001\r\n".encode("utf-16-le")),
        0, stderr="read as UTF-16", sent={"Naïve": 200}),
    "csv windows-1252": Case(_csv("title,amount_in_cents,workspace_id\nRésumé,300,1001\n".encode("cp1252")), 0,
                             stderr="the file is not UTF-8; it was read as Windows-1252",
                             sent={"Résumé": 300}),
    "csv from a European Excel: decimal commas": Case(
        _csv(b"title;amount;workspace_id\nA;1.234,50;1001\nB;(99,99);1001\nC;1234.50;1001\n"), 1,
        issues=[(2, "B", "amount-decimal-comma"), (3, "B", "amount-decimal-comma")],
        stderr='"(99,99)" is written with a decimal comma; enter -99.99 (a point', sent={"C": 123450}),
    "csv from a European Excel: points between thousands, spaces": Case(
        _csv(b"title;amount;workspace_id\nA;1.500;1002\nB;12 34;1002\nC;1 500.25;1002\n"), 1,
        issues=[(2, "B", "amount-ambiguous-point"), (3, "B", "amount-not-a-number")], sent={"C": 150025}),
    "csv with Excel's separator line (sep=;)": Case(
        _csv(b"sep=;\r\ntitle;amount_in_cents;workspace_id\r\nA;1.5;1001\r\nB;700;1001\r\n"), 1,
        issues=[(2, "B", "amount-not-whole")], stderr='the first line "sep=;" names the separator', sent={"B": 700}),
    "csv with a note longer than an Excel cell holds": Case(
        _csv(b"title,amount_in_cents,workspace_id,Notes\nA,1,1001," + b"x" * 40_000 + b"\n"), 0,
        issues=[(2, "D", "text-cut-in-results")],
        stderr="1 cell of in.csv (D2) holds more text than an Excel cell (32,767 characters): shown cut"),
    "csv with an unclosed quote": Case(
        _csv(b"title,amount_in_cents,workspace_id\nA,1,1001\n\"B,2,1001\nC,3,1001\n"), 2,
        stderr="is not well-formed CSV: the row starting on line 3: unexpected end of data"),
    "csv with data past Excel's last row": Case(
        _csv(b"title,amount_in_cents,workspace_id\nA,1,1001\n" + b"\n" * 1_048_580 + b"B,2,1001\n"), 2,
        stderr="has data on row 1,048,583, past Excel's last row (1,048,576)"),
    "csv date serial with --date-format": Case(
        _csv(b"title,amount_in_cents,workspace_id,date_to_invoice\nA,1,1001,46053\nB,2,1001,31/01/2026\n"), 0,
        args=["--date-format", "%d/%m/%Y"], sent={"A": 1, "B": 2}),
    "csv semicolons": Case(_csv(b"title;amount_in_cents;workspace_id\nA;400;1001\n"), 0, sent={"A": 400}),
    "csv tabs": Case(_csv(b"title\tamount_in_cents\tworkspace_id\nA\t500\t1001\n"), 0, sent={"A": 500}),
    "csv quoted newline keeps row numbers": Case(
        _csv(b'title,amount_in_cents,workspace_id\n"Two\nlines",1,1001\nBad,x,1001\n'), 1,
        issues=[(3, "B", "amount-not-a-number")]),
    "csv date serial": Case(_csv(b"title,amount_in_cents,workspace_id,date_to_invoice\nA,1,1001,46112\n"), 0,
                            sent={"A": 1}),
    # --- files that are not schedules ---
    "empty csv": Case(_csv(b""), 2, stderr="is empty"),
    "empty xlsx": Case(_raw("in.xlsx", b""), 2, stderr="not an .xlsx workbook"),
    "text renamed to .xlsx": Case(_raw("in.xlsx", b"title,amount\nA,1\n"), 2, stderr="rename it to .csv"),
    "old .xls": Case(_raw("in.xls", bytes.fromhex("D0CF11E0A1B11AE1") + b"\0" * 100), 2, stderr="Save As"),
    "password-protected workbook": Case(_raw("in.xlsx", bytes.fromhex("D0CF11E0A1B11AE1") + b"\0" * 100), 2,
                                        stderr="password-protected"),
    "truncated zip": Case(_raw("in.xlsx", _valid_xlsx_bytes()[:900]), 2,
                          stderr="in.xlsx: is a damaged .xlsx workbook (it ends too soon"),
    "zip without a workbook inside": Case(_raw("in.xlsx", _zip_of({"hello.txt": b"hi"})), 2,
                                          stderr="in.xlsx: is a zip archive, but not an Excel workbook"),
    "no extension": Case(_raw("schedule", b"title,amount\nA,1\n"), 2, stderr="schedule: has no extension"),
    "zip bomb": Case(_raw("in.xlsx", _zip_bomb()), 2, stderr="zip bomb"),
    "XML entity attack in the sheet": Case(_raw("in.xlsx", _with_member("xl/worksheets/sheet1.xml", BILLION_LAUGHS)),
                                           2, stderr="XML entity"),
    "XML entity attack in shared strings": Case(_raw("in.xlsx", _with_member("xl/sharedStrings.xml", BILLION_LAUGHS)),
                                                2, stderr="XML entity"),
    "data on Excel's last row (1,048,576)": Case(_xlsx([["A", 1, 1001, None, None, None]], tweak=_cut_off_export), 2,
                                                 stderr="has data on row 1,048,576"),
    "macro-enabled .xlsm": Case(_raw("in.xlsm", _valid_xlsx_bytes()), 0),
    "binary junk as csv": Case(_csv(b"\x00\x01\x02PK\x03\x04" * 20), 2, stderr="not a text file"),
    "unknown extension": Case(_raw("in.numbers", b"x"), 2, stderr='extension ".numbers"'),
}  # fmt: skip


SHIFT = len(OUTCOME_COLUMNS)  # the results sheet's outcome columns come first; the user's follow


def _errors_sheet(path: Path) -> list[tuple[int, str | None, str]]:
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        rows = list(wb["Errors"].iter_rows(min_row=2, values_only=True))
    finally:
        wb.close()
    return [(int(str(r[0])), None if r[1] is None else str(r[1]), str(r[4])) for r in rows]


@pytest.mark.parametrize("name", list(CASES))
def test_corpus(name: str, tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    case = CASES[name]
    path = case.build(tmp_path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "results.xlsx"
    if case.sent is not None:
        monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
        monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
        code = main(["upload", str(path), "-o", str(out), *case.args])
    else:
        code = main(["validate", str(path), "-o", str(out), *case.args])
    captured = capsys.readouterr()

    assert code == case.exit, captured.err
    assert "Traceback" not in captured.err and "internal error" not in captured.err
    if case.stderr is not None:
        assert case.stderr in captured.err, captured.err
    if code == 2:
        assert not out.exists()
        assert len([line for line in captured.err.splitlines() if line.startswith("error:")]) == 1
    else:
        assert _errors_sheet(out) == case.issues
    if case.sent is not None:
        assert {str(m["title"]): m["amount_in_cents"] for m in sandbox.milestones()} == case.sent
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # the input is never modified


def test_the_corpus_has_at_least_forty_files() -> None:
    assert len(CASES) >= 40


XLSX_CASES = [n for n, c in CASES.items() if c.exit != 2 and c.build.__qualname__.startswith(("_xlsx", "_excel"))]


def test_most_of_the_corpus_also_runs_through_the_fallback_reader() -> None:
    assert len(XLSX_CASES) >= 25


@pytest.mark.parametrize("name", XLSX_CASES)
def test_corpus_through_the_fallback_reader(name: str, tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The openpyxl reader (used when calamine cannot read a package) gives the same outcome, cell for cell."""
    import importer.schedule.loader

    def refuse(path: Path) -> None:
        raise RuntimeError("calamine unavailable")

    monkeypatch.setattr(importer.schedule.loader, "_CalamineBook", refuse)
    monkeypatch.setenv("KANTATA_IMPORT_NO_PREFETCH", "1")  # the CLI's early read is calamine too
    test_corpus(name, tmp_path, sandbox, monkeypatch, capsys)


def _use_reader(reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read .xlsx with openpyxl (the fallback) when asked, as when calamine cannot read a package."""
    import importer.schedule.loader

    if reader == "openpyxl":
        monkeypatch.setattr(
            importer.schedule.loader, "_CalamineBook", lambda path: (_ for _ in ()).throw(RuntimeError())
        )
        monkeypatch.setenv("KANTATA_IMPORT_NO_PREFETCH", "1")  # the CLI's early read is calamine too


@pytest.mark.parametrize("reader", ["calamine", "openpyxl"])
def test_every_cell_keeps_its_address_in_the_results(reader: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """A sheet starting at B3 (a title block in B, the header on row 5, a blank row in the data): every cell of the
    input is on the same row in the results, the outcome columns' width to the right (they come first), and an
    issue names the cell Excel shows in the input."""
    _use_reader(reader, monkeypatch)
    path = tmp_path / "in.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws["B3"] = "Acme Corp billing"
    for c, text in enumerate(["title", "amount_in_cents", "workspace_id", "PO"], start=2):
        ws.cell(row=5, column=c, value=text)
    data: dict[int, list[Any]] = {6: ["A", 100, 1001, "PO-6"], 8: ["B", "12.5", 1002, "PO-8"]}
    for r, values in data.items():
        for c, value in enumerate(values, start=2):
            ws.cell(row=r, column=c, value=value)
    wb.save(path)
    out = tmp_path / "results.xlsx"
    assert main(["validate", str(path), "-o", str(out)]) == 1, capsys.readouterr().err
    given = {(c.row, c.column): c.value for row in ws.iter_rows() for c in row if c.value is not None}
    results = openpyxl.load_workbook(out)
    sheet = results[ws.title]
    got = {(c.row, c.column - SHIFT): c.value for row in sheet.iter_rows(min_col=SHIFT + 1) for c in row
           if c.value is not None}  # fmt: skip
    assert got == given
    assert sheet["A6"].value == "valid" and sheet["A8"].value == "invalid"
    assert _errors_sheet(out) == [(8, "C", "amount-not-whole")]


@pytest.mark.parametrize("reader", ["calamine", "openpyxl"])
def test_times_durations_and_header_cells_come_back_as_they_were(
    reader: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's own cells come back as they were: a time 09:30 not as the text '09:30:00', a duration of 36 h
    not as '1 day, 12:00:00', header cells 2026 and a date not as text, '  Notes  ' not trimmed."""
    _use_reader(reader, monkeypatch)
    path = tmp_path / "in.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    header = ["title", "amount_in_cents", "workspace_id", "  Notes  ", 2026, dt.datetime(2026, 1, 1), "Start", "Took"]
    ws.append(header)
    ws.append(["A", 100, 1001, "n", 1, 2, dt.time(9, 30), dt.timedelta(hours=36)])
    wb.save(path)
    out = tmp_path / "results.xlsx"
    assert main(["validate", str(path), "-o", str(out)]) == 0
    rows = list(openpyxl.load_workbook(out)["Sheet"].iter_rows(values_only=True))
    assert list(rows[0][SHIFT : SHIFT + 8]) == header
    assert rows[1][SHIFT + 6 : SHIFT + 8] == (dt.time(9, 30), dt.timedelta(hours=36))


def test_a_tables_totals_row_among_the_data_is_kept_in_the_results_at_its_place(
    tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table A1:C4 with a totals row, and rows typed below the table: every row keeps its place in the
    results, the totals row among them, not only a totals row below every data row."""
    path = tmp_path / "in.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    rows: list[list[Any]] = [["title", "amount_in_cents", "workspace_id"], ["A", 1, 1001], ["B", 2, 1001],
                             ["Total", "=SUBTOTAL(109,B2:B3)", None], ["C", 3, 1001], ["D", 4, 1001]]  # fmt: skip
    for row in rows:
        ws.append(row)
    ws["B4"].value = 3  # as Excel saves it: the result (openpyxl writes no cached value for a formula)
    table = Table(displayName="Billing", ref="A1:C4", totalsRowCount=1)
    ws.add_table(table)
    wb.save(path)
    monkeypatch.setenv("KANTATA_BASE_URL", sandbox.url)
    monkeypatch.setenv("KANTATA_API_TOKEN", DEFAULT_TOKEN)
    out = tmp_path / "results.xlsx"
    assert main(["upload", str(path), "-o", str(out)]) == 0
    written = list(openpyxl.load_workbook(out)["Sheet"].iter_rows(values_only=True))
    assert [(r[SHIFT], r[SHIFT + 1], r[SHIFT + 2], r[0]) for r in written] == [
        ("title", "amount_in_cents", "workspace_id", "status"), ("A", 1, 1001, "created"), ("B", 2, 1001, "created"),
        ("Total", 3, None, None), ("C", 3, 1001, "created"), ("D", 4, 1001, "created")]  # fmt: skip
    assert sorted(str(m["title"]) for m in sandbox.milestones()) == ["A", "B", "C", "D"]


def test_numbers_come_back_with_every_digit_excel_saved(tmp_path: Path) -> None:
    """xlsxwriter writes 16 significant digits, which would turn 3333.3333333333335 (as Excel saves a third of
    10000) into 3333.333333333333, in the user's own column too: packing.ExactNumbers keeps every digit."""
    path = _excel_sheet('<row r="2"><c r="A2" t="inlineStr"><is><t>A</t></is></c><c r="B2"><v>3333.3333333333335</v>'
                        '</c><c r="C2"><v>1001</v></c><c r="D2"><v>33.333333333333336</v></c><c r="E2"><v>1E+20</v>'
                        "</c></row>")(tmp_path)  # fmt: skip
    out = tmp_path / "results.xlsx"
    assert main(["validate", str(path), "-o", str(out)]) == 1  # B2 has too many decimals for an amount
    row = next(openpyxl.load_workbook(out).worksheets[0].iter_rows(min_row=2, max_row=2, values_only=True))
    assert row[SHIFT + 1] == 3333.3333333333335 and row[SHIFT + 3] == 33.333333333333336 and row[SHIFT + 4] == 1e20
