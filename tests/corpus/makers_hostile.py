"""Hostile and damaged schedules for tests/corpus/cases/hostile.toml: each maker writes one file (or folder, or
link) into the folder it is given and returns its path. Generated, since most are large or built by breaking
a real workbook's bytes."""

from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import xlsxwriter

from importer.schedule.limits import MAX_COLUMNS

HEADER = ["Title", "Amount (cents)", "Project ID"]
ROW = ["Kickoff", 100000, 1001]
OLE2_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")


def _workbook(rows: list[list[Any]] | None = None) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Billing"
    for row in [HEADER, *(rows if rows is not None else [ROW])]:
        ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _rezip(data: bytes, *, stored: bool = False, replace: dict[str, bytes] | None = None) -> bytes:
    """The package again, each part stored (not deflated) when asked, some parts' bytes replaced."""
    out = io.BytesIO()
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", method) as dst:
        for name in src.namelist():
            dst.writestr(name, (replace or {}).get(name, src.read(name)))
    return out.getvalue()


def _data_start(data: bytes, part: str) -> tuple[int, zipfile.ZipInfo]:
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(part)
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_length + extra_length, info


def _flip(part: str, *, stored: bool) -> bytes:
    """A byte of a part changed in place: a bad CRC (stored) or a corrupted deflate stream."""
    data = bytearray(_rezip(_workbook(), stored=stored))
    start, info = _data_start(bytes(data), part)
    for k in range(info.compress_size // 3, min(info.compress_size // 3 + 8, info.compress_size)):
        data[start + k] ^= 0x5A
    return bytes(data)


def _declare(data: bytes, part: str, size: int) -> bytes:
    """The part's uncompressed size in both its headers set to `size`: a package that lies about its sizes."""
    buf = bytearray(data)
    _, info = _data_start(data, part)
    struct.pack_into("<I", buf, info.header_offset + 22, size)
    central = buf.find(b"PK\x01\x02")
    name = part.encode()
    while central >= 0:
        name_length = struct.unpack_from("<H", buf, central + 28)[0]
        if bytes(buf[central + 46 : central + 46 + name_length]) == name:
            struct.pack_into("<I", buf, central + 24, size)
            break
        central = buf.find(b"PK\x01\x02", central + 4)
    return bytes(buf)


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _flipper(part: str, *, stored: bool):  # noqa: ANN202 - a maker factory
    def make(folder: Path) -> Path:
        return _write(folder, "damaged.xlsx", _flip(part, stored=stored))

    return make


bad_crc_sheet = _flipper("xl/worksheets/sheet1.xml", stored=True)
bad_crc_styles = _flipper("xl/styles.xml", stored=True)
bad_crc_workbook = _flipper("xl/workbook.xml", stored=True)
bad_crc_relationships = _flipper("xl/_rels/workbook.xml.rels", stored=True)
bad_crc_document_properties = _flipper("docProps/core.xml", stored=True)
bad_crc_content_types = _flipper("[Content_Types].xml", stored=True)
bad_crc_theme = _flipper("xl/theme/theme1.xml", stored=True)
deflate_sheet = _flipper("xl/worksheets/sheet1.xml", stored=False)
deflate_styles = _flipper("xl/styles.xml", stored=False)
deflate_workbook = _flipper("xl/workbook.xml", stored=False)
deflate_relationships = _flipper("_rels/.rels", stored=False)
deflate_document_properties = _flipper("docProps/app.xml", stored=False)


def size_too_small(folder: Path) -> Path:
    return _write(folder, "lies.xlsx", _declare(_workbook(), "xl/worksheets/sheet1.xml", 100))


def size_too_large(folder: Path) -> Path:
    return _write(folder, "lies.xlsx", _declare(_workbook(), "xl/styles.xml", 5_000_000))


def truncated(folder: Path) -> Path:
    data = _workbook()
    return _write(folder, "cut.xlsx", data[: len(data) // 2])


def _bomb_part() -> bytes:
    sheet = zipfile.ZipFile(io.BytesIO(_workbook())).read("xl/worksheets/sheet1.xml")
    return sheet.replace(b"<sheetData>", b"<sheetData>" + b" " * (12 * 2**20))


def zip_bomb(folder: Path) -> Path:
    return _write(folder, "bomb.xlsx", _rezip(_workbook(), replace={"xl/worksheets/sheet1.xml": _bomb_part()}))


def zip_bomb_lying(folder: Path) -> Path:
    """A part that inflates to 12 MB while its headers say 2 KB: only the declared bytes are ever inflated."""
    data = _rezip(_workbook(), replace={"xl/worksheets/sheet1.xml": _bomb_part()})
    return _write(folder, "bomb.xlsx", _declare(data, "xl/worksheets/sheet1.xml", 2048))


def _xlsxwriter(folder: Path, name: str, far: tuple[int, int] | None, dimension: str | None = None) -> Path:
    path = folder / name
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("Billing")
    ws.write_row(0, 0, HEADER)
    ws.write_row(1, 0, ROW)
    if far is not None:
        ws.write_string(far[0], far[1], "x")
    wb.close()
    if dimension is not None:
        data = path.read_bytes()
        sheet = zipfile.ZipFile(io.BytesIO(data)).read("xl/worksheets/sheet1.xml")
        start = sheet.index(b'<dimension ref="') + 16
        sheet = sheet[:start] + dimension.encode() + sheet[sheet.index(b'"', start) :]
        path.write_bytes(_rezip(data, replace={"xl/worksheets/sheet1.xml": sheet}))
    return path


def xfd_wide(folder: Path) -> Path:
    return _xlsxwriter(folder, "wide.xlsx", (1, 16383))


def one_column_too_wide(folder: Path) -> Path:
    """Data in one column more than leaves room for the outcome columns."""
    return _xlsxwriter(folder, "wide.xlsx", (1, MAX_COLUMNS))


def widest(folder: Path) -> Path:
    """Data up to the widest sheet that still has room for the outcome columns: read."""
    return _xlsxwriter(folder, "wide.xlsx", (1, MAX_COLUMNS - 1))


def far_cell(folder: Path) -> Path:
    return _xlsxwriter(folder, "far.xlsx", (1_047_999, 16383))


def too_many_cells(folder: Path) -> Path:
    return _xlsxwriter(folder, "far.xlsx", (99_999, 701))


def lying_dimension(folder: Path) -> Path:
    return _xlsxwriter(folder, "dimension.xlsx", None, dimension="A1:XFD1048576")


def _csv(folder: Path, text: str, name: str = "schedule.csv") -> Path:
    return _write(folder, name, text.encode())


def csv_16385_columns(folder: Path) -> Path:
    extra = 16385 - len(HEADER)
    header = ",".join(HEADER + [f"c{i}" for i in range(extra)])
    return _csv(folder, header + "\nKickoff,100000,1001" + "," * extra + "\n")


def csv_widest(folder: Path) -> Path:
    extra = MAX_COLUMNS - len(HEADER)
    header = ",".join(HEADER + [f"c{i}" for i in range(extra)])
    return _csv(folder, header + "\nKickoff,100000,1001" + "," * extra + "\n")


def csv_million_columns(folder: Path) -> Path:
    return _csv(folder, ",".join(HEADER) + "," * 1_000_000 + "\nKickoff,100000,1001\n")


def csv_wide_quoted_record(folder: Path) -> Path:
    """A record over several lines, each under the limit, together over it: caught after parsing."""
    return _csv(folder, ",".join(HEADER) + "\n" + "x," * 9000 + '"Kick\noff",100000,1001' + ",y" * 9000 + "\n")


def csv_first_line_too_long(folder: Path) -> Path:
    return _csv(folder, "T" * (2**20 + 10))


def csv_huge_cell(folder: Path) -> Path:
    return _csv(folder, ",".join(HEADER) + "\n" + "x" * 200_000 + ",100000,1001\n")


def xlsx_huge_cell(folder: Path) -> Path:
    """A cell longer than Excel allows (only a program writes one): read, and cut in the results with a note."""
    path = folder / "long.xlsx"
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("Billing")
    ws.write_row(0, 0, HEADER)
    ws.write_row(1, 0, ROW)
    ws.write_row(1, 3, ["notes"])
    wb.close()
    data = path.read_bytes()
    sheet = zipfile.ZipFile(io.BytesIO(data)).read("xl/worksheets/sheet1.xml")
    sheet = sheet.replace(b"</row></sheetData>", b'<c r="E2" t="inlineStr"><is><t>' + b"y" * 40_000
                          + b"</t></is></c></row></sheetData>")  # fmt: skip
    path.write_bytes(_rezip(data, replace={"xl/worksheets/sheet1.xml": sheet}))
    return path


def csv_nul_bytes(folder: Path) -> Path:
    return _write(folder, "nul.csv", b"Title,Amount (cents),Project ID\nKick\x00off,100000,1001\n")


def control_characters(folder: Path) -> Path:
    """Control characters (a bell, an escape) inside titles: an XML 1.0 workbook cannot hold them as they are."""
    return _csv(folder, ",".join(HEADER) + "\nKick\x07off\x1b[31m,100000,1001\n")


RTL_TITLE = "\u05e9\u05dc\u05d1 \u05d0\u05f3 \u202bphase\u202c \u0627\u0644\u062f\u0641\u0639\u0629"
COMBINING_TITLE = "Cafe\u0301 e\u0308\u0301 \u1100\u1161\u11a8 \U0001f469\u200d\U0001f4bb"


def rtl_and_combining(folder: Path) -> Path:
    return _write(folder, "titles.xlsx", _workbook([[RTL_TITLE, 100000, 1001], [COMBINING_TITLE, 2500, 1001]]))


def rtl_and_combining_csv(folder: Path) -> Path:
    return _csv(folder, ",".join(HEADER) + f"\n{RTL_TITLE},100000,1001\n{COMBINING_TITLE},2500,1001\n")


def text_named_xlsx(folder: Path) -> Path:
    return _csv(folder, ",".join(HEADER) + "\nKickoff,100000,1001\n", "schedule.xlsx")


def empty_xlsx(folder: Path) -> Path:
    return _write(folder, "empty.xlsx", b"")


def empty_csv(folder: Path) -> Path:
    return _write(folder, "empty.csv", b"")


def directory(folder: Path) -> Path:
    path = folder / "schedule.xlsx"
    path.mkdir()
    return path


def symlink_loop(folder: Path) -> Path:
    path = folder / "loop.xlsx"
    os.symlink(folder / "loop2.xlsx", path)
    os.symlink(path, folder / "loop2.xlsx")
    return path


def fifo(folder: Path) -> Path:
    """A named pipe named like a schedule: opening it would wait for a writer for ever."""
    path = folder / "schedule.csv"
    os.mkfifo(path)
    return path


def xlsm(folder: Path) -> Path:
    return _write(folder, "macros.xlsm", _workbook())


def xls(folder: Path) -> Path:
    return _write(folder, "old.xls", OLE2_MAGIC + bytes(504))


def ods(folder: Path) -> Path:
    return _write(folder, "calc.ods", _workbook())


def password_protected(folder: Path) -> Path:
    """An encrypted .xlsx is an OLE2 compound file (CDF), not a zip."""
    return _write(folder, "locked.xlsx", OLE2_MAGIC + bytes(4096))


def zip_not_workbook(folder: Path) -> Path:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("readme.txt", "hello")
    return _write(folder, "archive.xlsx", out.getvalue())


def entity_declaration(folder: Path) -> Path:
    data = _workbook()
    workbook = zipfile.ZipFile(io.BytesIO(data)).read("xl/workbook.xml")
    evil = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]>' + workbook.split(b"?>", 1)[-1]
    return _write(folder, "entities.xlsx", _rezip(data, replace={"xl/workbook.xml": evil}))


def missing_workbook_part(folder: Path) -> Path:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(_workbook())) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if name != "xl/workbook.xml":
                dst.writestr(name, src.read(name))
    return _write(folder, "parts.xlsx", out.getvalue())


def malformed_xml_styles(folder: Path) -> Path:
    return _write(folder, "styles.xlsx", _rezip(_workbook(), replace={"xl/styles.xml": b"<styleSheet><fonts>"}))
