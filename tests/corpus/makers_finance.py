"""Files finance teams really produce, written by code into a temporary folder: CSV in the encodings their tools
save (Excel for Mac, a Japanese Excel, "Unicode Text"), workbooks with a summary sheet first, subtotal rows and
formula amounts. Each function is named by a case of cases/finance.toml (`make = "makers_finance:NAME"`)."""

from __future__ import annotations

import codecs
from pathlib import Path

import openpyxl
import xlsxwriter

HEADER = "Title,Amount,Project ID\n"


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def shift_jis(folder: Path) -> Path:
    text = HEADER + "請求 第1回,1500.00,1001\nコンサルティング費用,200.00,1001\n"
    return _write(folder, "sjis.csv", text.encode("shift_jis"))


def utf16_le_bom(folder: Path) -> Path:
    text = "Title\tAmount\tProject ID\r\nNaïve fee\t12.50\t1001\r\n"
    return _write(folder, "u16.csv", codecs.BOM_UTF16_LE + text.encode("utf-16-le"))


def utf16_be_bom(folder: Path) -> Path:
    return _write(folder, "u16be.csv", codecs.BOM_UTF16_BE + (HEADER + "Naïve fee,12.50,1001\n").encode("utf-16-be"))


def utf16_le_no_bom(folder: Path) -> Path:
    return _write(folder, "u16nb.csv", (HEADER + "Déjà vu,12.50,1001\n").encode("utf-16-le"))


def utf16_be_no_bom(folder: Path) -> Path:
    return _write(folder, "u16benb.csv", (HEADER + "Déjà vu,12.50,1001\n").encode("utf-16-be"))


def utf32_bom(folder: Path) -> Path:
    return _write(folder, "u32.csv", codecs.BOM_UTF32_LE + (HEADER + "Über,1.00,1001\n").encode("utf-32-le"))


def utf8_bom(folder: Path) -> Path:
    return _write(folder, "u8bom.csv", codecs.BOM_UTF8 + (HEADER + "Café,1.00,1001\n").encode())


def cp1252_accents(folder: Path) -> Path:
    text = HEADER + "Résumé review,300.00,1001\nMüller Straße,1.00,1001\n"
    return _write(folder, "cp1252.csv", text.encode("cp1252"))


def latin1(folder: Path) -> Path:
    return _write(folder, "latin1.csv", (HEADER + "Señor Núñez,300.00,1001\n").encode("latin-1"))


def mac_roman_cr(folder: Path) -> Path:
    text = (HEADER + "Café crème,300.00,1001\nRéunion,1.00,1001\n").replace("\n", "\r")
    return _write(folder, "mac.csv", text.encode("mac_roman"))


def mac_roman_ambiguous(folder: Path) -> Path:
    """Köln in Mac Roman is "Kšln" in Windows-1252: both plain text, so only the user can tell."""
    return _write(folder, "koln.csv", (HEADER + "Köln office,1.00,1001\n").replace("\n", "\r").encode("mac_roman"))


def undecidable_bytes(folder: Path) -> Path:
    return _write(folder, "junk.csv", HEADER.encode() + b"x\x81\x8d\x90,1.00,1001\n")


def cp1251_cyrillic(folder: Path) -> Path:
    return _write(folder, "cp1251.csv", (HEADER + "Оплата услуг,1.00,1001\n").encode("cp1251"))


def utf8_plain(folder: Path) -> Path:
    return _write(folder, "utf8.csv", (HEADER + "Café,1.00,1001\n請求,2.00,1001\n").encode())


def _workbook(folder: Path, sheets: dict[str, list[list[object]]], name: str = "book.xlsx") -> Path:
    path = folder / name
    wb = openpyxl.Workbook()
    wb.remove(wb.active)  # type: ignore[arg-type]
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(row)
    wb.save(path)
    return path


BILLING: list[list[object]] = [["Title", "Amount", "Project ID"], ["Kick-off", 1500, 1001], ["Design", 2500.5, 1001]]


def summary_first(folder: Path) -> Path:
    summary: list[list[object]] = [["Project", "Amount", "Owner"], [1001, 4000.5, "Ana"]]
    return _workbook(folder, {"Summary": summary, "Billing": BILLING})


def no_sheet_fits(folder: Path) -> Path:
    summary: list[list[object]] = [["Project", "Amount", "Owner"], [1001, 4000.5, "Ana"]]
    return _workbook(folder, {"Summary": summary, "Notes": [["Read me first"]]})


def summary_first_named(folder: Path) -> Path:
    return summary_first(folder)


def _formulas(folder: Path, rows: list[tuple[str, str | float, float, int | None]], name: str) -> Path:
    """A workbook whose amount cells are formulas with their saved results, as Excel saves them."""
    path = folder / name
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("Billing")
    ws.write_row(0, 0, ["Title", "Amount", "Project ID"])
    for i, (title, formula, value, project) in enumerate(rows, start=1):
        ws.write(i, 0, title)
        if isinstance(formula, str):
            ws.write_formula(i, 1, formula, None, value)
        else:
            ws.write_number(i, 1, formula)
        if project is not None:
            ws.write(i, 2, project)
    wb.close()
    return path


def subtotal_formula_row(folder: Path) -> Path:
    return _formulas(folder, [("Kick-off", 1500.0, 1500.0, 1001), ("Design", 2500.0, 2500.0, 1001),
                              ("Phase 1", "=SUBTOTAL(9,B2:B3)", 4000.0, 1001)], "subtotal.xlsx")  # fmt: skip


def sum_formula_row(folder: Path) -> Path:
    return _formulas(folder, [("Kick-off", 1500.0, 1500.0, 1001), ("Design", 2500.0, 2500.0, 1001),
                              ("Q1", "=SUM(B2:B3)", 4000.0, 1001)], "sum.xlsx")  # fmt: skip


def subtotal_title_row(folder: Path) -> Path:
    return _workbook(folder, {"Billing": [["Title", "Amount", "Project ID"], ["Kick-off", 1500, 1001],
                                          ["Subtotal Phase 1", 1500, 1001], ["Total Q1", 1500, 1001]]})  # fmt: skip


def formula_noise(folder: Path) -> Path:
    return _formulas(folder, [("Uplift", "=1500*1.1", 1500 * 1.1, 1001), ("Third", "=0.1+0.2", 0.1 + 0.2, 1001)],
                     "noise.xlsx")  # fmt: skip


def formula_third_decimal(folder: Path) -> Path:
    return _formulas(folder, [("Split", "=10/8", 10 / 8 + 0.000, 1001), ("Real", "=1650.005*1", 1650.005, 1001)],
                     "third.xlsx")  # fmt: skip


def formula_fine_sum_below(folder: Path) -> Path:
    """A SUM over cells of its own row (hours times rate) is a milestone's amount, not a total."""
    path = folder / "rowsum.xlsx"
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("Billing")
    ws.write_row(0, 0, ["Title", "Amount", "Project ID", "Fee", "Expenses"])
    ws.write_row(1, 0, ["Kick-off"])
    ws.write_formula(1, 1, "=SUM(D2:E2)", None, 1750)
    ws.write_row(1, 2, [1001, 1500, 250])
    wb.close()
    return path
