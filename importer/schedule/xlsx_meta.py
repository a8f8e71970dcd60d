"""What the fast cell readers (calamine, openpyxl's read-only mode) do not tell: merged cells, hidden rows and
columns, formulas with no saved result, and table totals rows, read from the package's XML directly, plus the
package checks that must happen before any XML is parsed (zip bomb, encrypted workbook).

One streaming pass over the sheet's XML with one regular expression: the loader keeps its fast reader and
still meets the cells a careful user would want to hear about. Small parts (workbook, relationships, tables) are
parsed with defusedxml, so a hostile package cannot expand entities.
"""

from __future__ import annotations

import posixpath
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from defusedxml import DefusedXmlException, ElementTree

from importer.schedule.limits import cells_over, columns_over, file_over

OLE2_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")  # an encrypted .xlsx or an old .xls is an OLE2 compound file
MAX_UNCOMPRESSED = 1024 * 2**20  # 1 GiB of XML in all: room for a schedule of Excel's full height, not for a bomb
MAX_RATIO = 200  # real sheets compress far less; a member 200x its compressed size (and over 10 MB) is a bomb
_CHUNK = 1 << 20
_OVERLAP = 1 << 16  # longer than any tag we look for (a formula is at most 8,192 characters)
_NS = {
    "m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "rel": "http://schemas.openxmlformats.org/package/2006/relationships",
}

_SCAN = re.compile(
    rb"<row\b(?P<row>[^>]*\bhidden=\"(?:1|true)\"[^>]*)>"  # only hidden rows: no Python work per visible row
    rb"|<col\b(?P<col>[^>]*)/?>"
    rb"|<mergeCell\b[^>]*\bref=\"(?P<merge>[A-Z]+[0-9]+:[A-Z]+[0-9]+)\""
    rb"|<c\b(?P<nchead>[^>]*\br=\"(?P<nocache>[A-Z]+[0-9]+)\"[^>]*)>\s*<f\b[^>]*(?:/>|>[^<]*</f>)\s*"
    rb"(?P<emptyv><v>\s*</v>|<v\s*/>)?\s*</c>"
    rb"|<c\b(?P<error>[^>]*\bt=\"e\"[^>]*)>(?:\s*<f\b[^>]*(?:/>|>[^<]*</f>))?\s*<v>(?P<errval>[^<]*)</v>"
    rb"|<c\b[^>]*\br=\"(?P<sumcell>[A-Z]+[0-9]+)\"[^>]*>\s*<f\b[^>]*>(?P<sum>[^<]*\b(?:SUM|SUBTOTAL|AGGREGATE)\([^<]*)</f>"
)
_MARKERS = (b"hidden=", b"<col", b"<mergeCell", b"<f", b't="e"')  # every alternative of _SCAN needs one
_ATTR = re.compile(rb'\b(r|hidden|min|max)="([^"]*)"')
# The sheet's extent, which python-calamine allocates as one dense block (rows x columns) before any check of
# ours could see it: the last row of each chunk (rows come in order) and the widest column reference. References
# of two letters or more are looked for in the whole chunk, with every whitespace byte made a space first: the
# search then starts with a literal (' r="'), which the regular expression engine finds at C speed, where a
# leading \s would make it try a match at every byte. A usual sheet (columns A to Z) costs one failed search.
_SPACES = bytes.maketrans(b"\t\n\r\x0b\x0c", b"     ")  # each byte \s matches, as a space
_ROW_NUMBER = re.compile(rb'<row\b[^>]*?\sr="([0-9]{1,9})"')
_WIDE = re.compile(rb' r="([A-Z]{2,})[0-9]')
_COL1 = re.compile(rb'\sr="([A-Z])[0-9]')
# What reading a package's parts raises when the package is damaged or lies (a bad CRC, a cut or corrupted
# deflate stream, a part missing, XML that does not parse): each means "this file cannot be used".
DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ElementTree.ParseError, DefusedXmlException,
           UnicodeDecodeError, ValueError, struct.error)  # fmt: skip


class PackageProblem(Exception):
    """The package is not a workbook we may open; the message is a sentence for the user."""

    @classmethod
    def damaged(cls, exc: BaseException, part: str | None = None) -> PackageProblem:
        where = f" (its part {part})" if part else ""
        detail = str(exc) or type(exc).__name__
        return cls(f"is a damaged .xlsx workbook{where}: {detail}; get the file again, or open it in Excel and "
                   "save it again")  # fmt: skip


@dataclass(slots=True)
class Table:
    name: str
    first_row: int
    last_row: int
    totals_rows: int


@dataclass(slots=True)
class SheetMeta:
    hidden_rows: set[int] = field(default_factory=set)
    hidden_columns: set[int] = field(default_factory=set)  # 1-based column numbers
    merged: list[str] = field(default_factory=list)  # "A5:B6"
    formulas_without_value: list[str] = field(default_factory=list)  # "D7"
    error_values: dict[str, str] = field(default_factory=dict)  # "B5" -> "#REF!" (some readers show them as blank)
    sums: dict[str, str] = field(default_factory=dict)  # "B9" -> "SUBTOTAL(9,B2:B8)": formulas that add up cells
    tables: list[Table] = field(default_factory=list)
    last_row: int = 0  # the sheet's extent as its cell references give it (not its <dimension>, which can lie)
    last_column: int = 0


def check_package(path: Path) -> None:
    """Refuse what must not be opened: encrypted or old workbooks, broken zips, zip bombs, parts that are damaged
    or inflate to more than their header says (every part but the worksheets, which `sheet_meta` reads)."""
    if (over := file_over(path.stat().st_size)) is not None:
        raise PackageProblem(over)
    with path.open("rb") as fh:
        head = fh.read(8)
    if head == OLE2_MAGIC:
        raise PackageProblem(
            "is password-protected (encrypted) or an old-format .xls workbook; open it in Excel, remove the "
            "password (File > Info > Protect Workbook) and save it as an Excel Workbook (.xlsx)"
        )
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK"):  # a zip's start without its end: a download or copy cut short
            raise PackageProblem(
                "is a damaged .xlsx workbook (it ends too soon: a download or copy cut short?); get the file again, "
                "or open it in Excel and save it again"
            )
        raise PackageProblem(
            "is not an .xlsx workbook (its contents are not a zip package); if it is CSV text, rename it to .csv, "
            "otherwise open it in Excel and save it as .xlsx"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageProblem(f"is a damaged .xlsx package ({exc}); save it again from Excel") from None
    if not any(m.filename == "[Content_Types].xml" for m in members):  # every Office package has one
        raise PackageProblem(
            "is a zip archive, but not an Excel workbook (it has no workbook inside); open the schedule in Excel "
            "and save it as .xlsx"
        )
    total = sum(m.file_size for m in members)
    if total > MAX_UNCOMPRESSED:
        raise PackageProblem(
            f"would expand to {total // 2**20} MiB of data, over the {MAX_UNCOMPRESSED // 2**20} MiB limit; "
            "split the schedule into smaller files"
        )
    for m in members:
        if m.file_size > 10 * 2**20 and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise PackageProblem(
                f"contains {m.filename}, which expands {m.file_size // max(m.compress_size, 1)}x: "
                "that is a zip bomb, not a spreadsheet; it was not opened"
            )
    if not any(m.filename.casefold().endswith(("workbook.xml", "workbook.bin")) for m in members):
        raise PackageProblem("is a damaged .xlsx workbook (its workbook part is missing); get the file again, or "
                             "open it in Excel and save it again")  # fmt: skip
    with path.open("rb") as fh:
        for m in members:
            if not m.filename.endswith((".xml", ".rels")) or not m.file_size:
                continue
            chunks = member_chunks(fh, m)
            head = next(chunks, b"")
            if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
                raise PackageProblem(
                    f"contains XML entity or DTD declarations ({m.filename}), which spreadsheets do not need "
                    "(a known attack); it was not opened"
                )
            if not m.filename.startswith("xl/worksheets/"):
                for _ in chunks:  # inflated and checked (size, CRC) before any reader trusts the part
                    pass


def member_chunks(fh: BinaryIO, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """A part's bytes, inflated a chunk at a time and never past the size its header declares, then checked
    against that size and its CRC: a zip bomb that lies about its size stops at the lie, and a damaged part is
    a PackageProblem naming it, whatever the reader behind would have made of it."""
    try:
        yield from _inflate(fh, info)
    except PackageProblem:
        raise
    except (*DAMAGED, OSError) as exc:
        raise PackageProblem.damaged(exc, info.filename) from None


def _inflate(fh: BinaryIO, info: zipfile.ZipInfo) -> Iterator[bytes]:
    if info.flag_bits & 0x1:
        raise PackageProblem(f"is an encrypted zip (its part {info.filename}); save it again from Excel")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise PackageProblem(f"stores its part {info.filename} in a way Excel does not (zip method "
                             f"{info.compress_type}); open it in Excel and save it again")  # fmt: skip
    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile("a part's local header is missing")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    fh.seek(info.header_offset + 30 + name_length + extra_length)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if info.compress_type == zipfile.ZIP_DEFLATED else None
    left, room, crc = info.compress_size, info.file_size, 0
    while left:
        raw = fh.read(min(_CHUNK, left))
        if not raw:
            raise EOFError("the file ends inside this part (cut short?)")
        left -= len(raw)
        while raw:
            if inflater is None:
                data, raw = raw, b""
            else:
                data = inflater.decompress(raw, min(room, _CHUNK) + 1)
                raw = inflater.unconsumed_tail
            if len(data) > room:
                raise zipfile.BadZipFile(f"it holds more than the {info.file_size:,} bytes its header declares")
            room -= len(data)
            crc = zlib.crc32(data, crc)
            if data:
                yield data
    if (inflater is not None and not inflater.eof) or room:
        raise zipfile.BadZipFile(f"it holds fewer bytes than the {info.file_size:,} its header declares")
    if crc != info.CRC:
        raise zipfile.BadZipFile("its checksum (CRC-32) does not match: the bytes were changed or damaged")


def sheet_meta(path: Path, sheet: str) -> SheetMeta:
    """Merged cells, hidden rows/columns, uncached formulas, tables and extent of one sheet; read before the cell
    reader parses the sheet, so that a damaged part or a sheet past the limits (limits.py) is refused first."""
    try:
        with zipfile.ZipFile(path) as zf, path.open("rb") as fh:
            part = _sheet_part(zf, sheet)
            meta = SheetMeta()
            if part is None:
                return meta
            _scan(fh, zf.getinfo(part), meta)
            meta.tables = _tables(zf, part)
    except PackageProblem:
        raise
    except (*DAMAGED, OSError) as exc:
        raise PackageProblem.damaged(exc) from None
    if (over := columns_over(meta.last_column) or cells_over(meta.last_row, meta.last_column)) is not None:
        raise PackageProblem(over)
    return meta


def _sheet_part(zf: zipfile.ZipFile, sheet: str) -> str | None:
    workbook = ElementTree.fromstring(zf.read("xl/workbook.xml"))
    rels = ElementTree.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
    targets = {r.get("Id"): r.get("Target", "") for r in rels.findall("rel:Relationship", _NS)}
    for node in workbook.findall("m:sheets/m:sheet", _NS):
        if node.get("name") == sheet:
            target = targets.get(node.get(f"{{{_NS['r']}}}id"), "")
            return _resolve("xl/workbook.xml", target)
    return None


def _resolve(source: str, target: str) -> str:
    """A relationship target as a member name: absolute ("/xl/tables/table1.xml") or relative to its source."""
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(source), target))


def _scan(fh: BinaryIO, part: zipfile.ZipInfo, meta: SheetMeta) -> None:
    tail = b""
    chunks = member_chunks(fh, part)
    while True:
        chunk = next(chunks, b"")
        buffer = tail + chunk
        cut = len(buffer) if not chunk else max(0, len(buffer) - _OVERLAP)
        # Most chunks hold only plain cells: a byte search (C speed) proves there is nothing to match.
        if any(marker in buffer for marker in _MARKERS):
            for match in _SCAN.finditer(buffer):
                if match.start() >= cut:
                    break
                _take(match, meta)
        _extent(buffer, cut, meta)
        if not chunk:
            return
        tail = buffer[cut:]


def _extent(buffer: bytes, cut: int, meta: SheetMeta) -> None:
    """The last row and the widest column of the buffer (a reference cut at its end is whole in the next)."""
    last = buffer.rfind(b"<row", 0, cut)
    if last >= 0 and (row := _ROW_NUMBER.match(buffer, last)) is not None:
        meta.last_row = max(meta.last_row, int(row.group(1)))
    letters = set(_WIDE.findall(buffer.translate(_SPACES)))
    if not letters:
        # one-letter columns (at most 26) only in the chunk's last row: every cell has one, and the width they
        # can add is small
        row_end = buffer.find(b"</row>", max(last, 0))
        letters = set(_COL1.findall(buffer, max(last, 0), row_end if row_end >= 0 else len(buffer)))
    if letters:
        meta.last_column = max(meta.last_column, *map(_column_number, letters))


def _column_number(letters: bytes) -> int:
    number = 0
    for byte in letters:
        number = number * 26 + byte - 64
    return number


def _take(match: re.Match[bytes], meta: SheetMeta) -> None:
    if match.group("row") is not None:
        attrs = dict(_ATTR.findall(match.group("row")))
        if attrs.get(b"hidden") in (b"1", b"true") and b"r" in attrs:
            meta.hidden_rows.add(int(attrs[b"r"]))
    elif match.group("col") is not None:
        attrs = dict(_ATTR.findall(match.group("col")))
        if attrs.get(b"hidden") in (b"1", b"true"):
            meta.hidden_columns.update(range(int(attrs.get(b"min", b"1")), int(attrs.get(b"max", b"1")) + 1))
    elif match.group("merge") is not None:
        meta.merged.append(match.group("merge").decode())
    elif match.group("nocache") is not None:
        # An empty <v> of a text result (t="str") is a saved result: the empty string, as Excel saves
        # =IF(...,"",...); an empty or missing <v> otherwise is no result at all.
        if match.group("emptyv") is None or not re.search(rb'\bt="str"', match.group("nchead")):
            meta.formulas_without_value.append(match.group("nocache").decode())
    elif match.group("sumcell") is not None:
        meta.sums[match.group("sumcell").decode()] = match.group("sum").decode(errors="replace")
    elif match.group("error") is not None:
        ref = re.search(rb'\br="([A-Z]+[0-9]+)"', match.group("error"))
        if ref is not None:
            meta.error_values[ref.group(1).decode()] = match.group("errval").decode(errors="replace")


def _tables(zf: zipfile.ZipFile, part: str) -> list[Table]:
    rels_name = posixpath.join(posixpath.dirname(part), "_rels", posixpath.basename(part) + ".rels")
    if rels_name not in zf.namelist():
        return []
    rels = ElementTree.fromstring(zf.read(rels_name))
    tables: list[Table] = []
    for rel in rels.findall("rel:Relationship", _NS):
        if not rel.get("Type", "").endswith("/table"):
            continue
        node = ElementTree.fromstring(zf.read(_resolve(part, rel.get("Target", ""))))
        ref = node.get("ref", "")
        rows = [int(n) for n in re.findall(r"[0-9]+", ref)]
        if len(rows) == 2:
            tables.append(Table(node.get("displayName") or node.get("name") or "table", rows[0], rows[1],
                                int(node.get("totalsRowCount") or 0)))  # fmt: skip
    return tables
