"""A CSV file's bytes -> text, or a clear refusal: text read in the wrong encoding is never passed on.

A title decoded wrongly is still text (`Café` saved by a Mac reads as `CafŽ` in Windows-1252), so no later check
could see the mistake and it would be uploaded garbled. The rules, in order:

1. `--encoding NAME` decides, and bytes that are not valid in it are an error naming the line.
2. A byte-order mark decides (UTF-8, UTF-16 or UTF-32, either byte order).
3. UTF-16 or UTF-32 without a mark is recognised by its zero bytes (text that is mostly ASCII has one in every
   other byte, or three in four).
4. Valid UTF-8 is UTF-8: other encodings seldom produce valid UTF-8 by chance, except for plain ASCII, which
   reads the same in all of them.
5. Otherwise each legacy encoding that finance exports use (Windows-1252, Mac Roman, Shift-JIS, and the guess of
   charset-normalizer) decodes the file, and its text is read for signs of a wrong guess: a control character, a
   capital letter inside a lower-case word, an accent mark or a symbol between letters, a letter of another
   script glued to a Latin word. The file is read only when exactly one reading is free of them; otherwise the
   run stops and shows a line as each candidate reads it, so the user can name the right one.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from importer.errors import ScheduleError
from importer.schedule.columns import column_letter

# Encodings tried when the bytes are not UTF-8, with the names shown to the user. Windows-1252 reads any Latin-1
# file the same way wherever it matters (it differs only in bytes that are control characters in Latin-1).
LEGACY: tuple[tuple[str, str], ...] = (
    ("cp1252", "Windows-1252 (Western European)"),
    ("mac_roman", 'Mac Roman (Excel for Mac\'s "CSV (Macintosh)")'),
    ("shift_jis", "Shift-JIS (Japanese)"),
)
_LEGACY_CODECS = frozenset(codec for codec, _ in LEGACY)
SHOWN_CANDIDATES = 3  # readings shown when the encoding cannot be told
_SNIFF = 4096  # bytes looked at for zero-byte patterns
_BOMS: tuple[tuple[bytes, str, str], ...] = (  # UTF-32 first: its little-endian mark starts like UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", 'UTF-16 (Excel\'s "Unicode Text")'),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)
# Punctuation that sits between letters in real text: apostrophes, dashes, the Catalan middle dot, degrees.
_BETWEEN_LETTERS = frozenset("\u2019\u2018\u2013\u2014\u00b7\u00b0\u00ba\u00aa")
_NON_ASCII = re.compile("[^\x00-\x7f]")
_WORD = re.compile(r"[^\W\d_]*[^\x00-\x7f][^\W\d_]*")  # a word with a letter outside ASCII


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    encoding: str  # a Python codec name
    note: str | None  # said to the user when the encoding was not plain UTF-8


def decode_text(data: bytes, encoding: str | None, *, path: Path) -> Decoded:
    """The file's text by the rules above; ScheduleError when its encoding cannot be told for sure."""
    if encoding is not None:
        return _forced(data, encoding, path)
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            return _strict(data[len(bom) :], codec, path, f"read as {name} (the file starts with its mark)"
                           if codec != "utf-8" else None)  # fmt: skip
    if (wide := _wide_without_bom(data[:_SNIFF])) is not None:
        return _strict(data, wide, path, f"read as {wide.upper()} (no byte-order mark; its zero bytes tell)")
    if b"\x00" in data[:_SNIFF]:
        raise ScheduleError("is not a text file (it contains NUL bytes); if it is a workbook, rename it to .xlsx",
                            path=path)  # fmt: skip
    try:
        return Decoded(data.decode("utf-8"), "utf-8", None)
    except UnicodeDecodeError:
        pass
    readings = _readings(data)
    # The encodings finance tools save in first; charset-normalizer's guess only when none of them reads plainly,
    # since its guess for short Western text is often a neighbour (Central European for Spanish).
    sound = [r for r in readings if not r.doubts and r.codec in _LEGACY_CODECS] or [r for r in readings
                                                                                   if not r.doubts]  # fmt: skip
    if len({r.text for r in sound}) == 1:
        best = sound[0]
        return Decoded(best.text, best.codec, f"the file is not UTF-8; it was read as {best.name}, the only encoding "
                       f'that reads it as plain text (pass --encoding to choose another; "CSV UTF-8" avoids the '
                       "question)")  # fmt: skip
    raise ScheduleError(_ask_for_encoding(data, readings), path=path)


@dataclass(frozen=True, slots=True)
class _Reading:
    codec: str
    name: str
    text: str
    doubts: int  # characters that suggest a wrong guess


def _readings(data: bytes) -> list[_Reading]:
    """The file read in each candidate encoding that decodes it, most plausible first."""
    codecs_tried = [*LEGACY]
    guess = _normalizer_guess(data)
    if guess is not None and all(codecs.lookup(guess).name != codecs.lookup(c).name for c, _ in codecs_tried):
        codecs_tried.append((guess, "charset-normalizer's guess"))
    readings: list[_Reading] = []
    for codec, name in codecs_tried:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        readings.append(_Reading(codec, name, text, len(_doubtful(text))))
    return sorted(readings, key=lambda r: r.doubts)


def _normalizer_guess(data: bytes) -> str | None:
    """charset-normalizer's best encoding for the bytes: a check on our own candidates, and one more candidate
    (a Cyrillic or Chinese file, say) that the list above lacks."""
    from charset_normalizer import from_bytes

    best = from_bytes(data[: 1 << 20]).best()  # a megabyte tells as much as the whole file
    if best is None:
        return None
    try:
        return codecs.lookup(best.encoding).name
    except LookupError:
        return None


def _doubtful(text: str) -> list[int]:
    """Offsets of the characters that a correctly decoded text would hardly have (see the module's docstring)."""
    doubts: list[int] = []
    for match in _NON_ASCII.finditer(text):  # most of a file is ASCII: only the other characters are looked at
        i, c = match.start(), match.group()
        before = text[i - 1] if i else " "
        after = text[i + 1] if i + 1 < len(text) else " "
        kind = unicodedata.category(c)
        if kind[0] == "C":  # control (C1), private use, unassigned
            doubts.append(i)
        elif kind[0] == "L":
            if _doubtful_letter(c, kind, before, after):
                doubts.append(i)
        elif kind[0] in "PS" and c not in _BETWEEN_LETTERS:
            between = before.isalpha() and after.isalpha()
            glued = any(ord(n) > 127 and not n.isspace() and not n.isalpha() for n in (before, after))
            if between or glued or (kind == "Sk" and (before.isalpha() or after.isalpha())):
                doubts.append(i)
    for word in _WORD.finditer(text):  # "Îïëàòà": Cyrillic read as Western has words of accents only
        letters = word.group()
        latin = [c for c in letters if c.isascii() or unicodedata.name(c, "").startswith("LATIN")]
        if len(latin) == len(letters) >= 4 and sum(ord(c) > 127 for c in letters) * 2 > len(letters):
            doubts.append(word.start())
    return sorted(doubts)


def _doubtful_letter(c: str, kind: str, before: str, after: str) -> bool:
    latin = unicodedata.name(c, "").startswith("LATIN")
    if kind == "Lu" and before.isalpha() and before.islower():  # "CafŽ", "RÈsumÈ"
        return True
    if not latin and kind in {"Lu", "Ll", "Lt"} and (_ascii_letter(before) or _ascii_letter(after)):
        return True  # a Greek or Cyrillic letter glued to a Latin word
    if kind == "Lo" and (_ascii_letter(before) or _ascii_letter(after)):
        return True  # a kana or an ideograph glued to a Latin word
    return latin and any(unicodedata.category(n) == "Lo" for n in (before, after))


def _ascii_letter(c: str) -> bool:
    return c.isascii() and c.isalpha()


def _wide_without_bom(head: bytes) -> str | None:
    """UTF-16 or UTF-32 without a byte-order mark, told by where the zero bytes of mostly-ASCII text fall."""
    if len(head) < 4 or head.count(0) < len(head) // 3:
        return None
    share = [head[k::4].count(0) / max(1, len(head[k::4])) for k in range(4)]
    if min(share[1:]) > 0.9 and share[0] < 0.5:
        return "utf-32-le"
    if min(share[:3]) > 0.9 and share[3] < 0.5:
        return "utf-32-be"
    odd, even = (share[1] + share[3]) / 2, (share[0] + share[2]) / 2
    if odd > 0.6 and even < 0.2:
        return "utf-16-le"
    if even > 0.6 and odd < 0.2:
        return "utf-16-be"
    return None


def _strict(data: bytes, codec: str, path: Path, note: str | None) -> Decoded:
    try:
        return Decoded(data.decode(codec), codec, note)
    except UnicodeDecodeError as exc:
        line = _line_of(data, exc.start, codec)
        raise ScheduleError(f"is not valid {codec.upper()} text (line {line:,} has bytes that cannot be read in it); "
                            "save it again from Excel as \"CSV UTF-8\", or pass --encoding with the encoding it has",
                            path=path) from None  # fmt: skip


def _forced(data: bytes, encoding: str, path: Path) -> Decoded:
    codec = codecs.lookup(encoding).name  # the name was checked when the settings were made
    for bom, bom_codec, _ in _BOMS:
        if data.startswith(bom) and codecs.lookup(bom_codec).name.split("-")[:2] == codec.split("-")[:2]:
            data = data[len(bom) :]  # a mark of the encoding named is no text
            break
    if codec in {"utf-16", "utf-32"} and not data.startswith(tuple(b for b, _, _ in _BOMS)):
        codec = _wide_without_bom(data[:_SNIFF]) or codec + "-le"
    try:
        return Decoded(data.decode(codec), codec, f"read as {encoding} (--encoding)")
    except UnicodeDecodeError as exc:
        line = _line_of(data, exc.start, codec)
        raise ScheduleError(f"is not {encoding} text: line {line:,} has bytes that cannot be read in it "
                            f"({data[exc.start:exc.start + 4]!r}); check the name given to --encoding",
                            path=path) from None  # fmt: skip


def _line_of(data: bytes, offset: int, codec: str) -> int:
    """The line of a byte offset: line feeds counted, or carriage returns in a file that has no line feed (a Mac
    export); in UTF-16 or UTF-32 the line feed's own bytes are counted."""
    head = data[:offset]
    if "16" in codec or "32" in codec:
        return head.count("\n".encode(codec)) + 1
    return (head.count(b"\n") if b"\n" in data else head.count(b"\r")) + 1


def _ask_for_encoding(data: bytes, readings: list[_Reading]) -> str:
    """The refusal: a cell where the candidates differ, as each reads it, and what to do."""
    if not readings:
        return ("is not UTF-8 text, and no encoding tried (Windows-1252, Mac Roman, Shift-JIS) reads it; save it "
                'again from Excel as "CSV UTF-8", or pass --encoding NAME with its encoding')  # fmt: skip
    top = readings[:SHOWN_CANDIDATES]
    lines = [_lines(r.text) for r in top]
    row, index = _first_doubt(lines[0])
    column = column_letter(index)
    shown = "; ".join(f'"{_cell(text, row, index)}" as {r.codec} ({r.name})'
                      for r, text in zip(top, lines, strict=True))  # fmt: skip
    flags = ", ".join(f"--encoding {r.codec}" for r in top)
    what = "no encoding reads it as plain text" if all(r.doubts for r in readings) else (
        "more than one encoding reads it as plain text")  # fmt: skip
    try:
        raw = _cell(lines[0], row, index).encode(top[0].codec).hex(" ")
    except UnicodeEncodeError:  # pragma: no cover - decoded from these very bytes
        raw = "?"
    return (f"is not UTF-8 text, and {what}, so its encoding cannot be told for sure: row {row}, column {column} "
            f"(bytes {raw}) reads {shown}. Pass the one that reads right ({flags}"
            ', or another encoding\'s name), or save the file from Excel as "CSV UTF-8"')  # fmt: skip


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _separator(line: str) -> str:
    return max(",;\t", key=line.count)


def _first_doubt(lines: list[str]) -> tuple[int, int]:
    """(line number, cell index) of the first doubtful character, else of the first non-ASCII one."""
    fallback: tuple[int, int] | None = None
    for number, line in enumerate(lines, start=1):
        places = _doubtful(line)
        wide = next((i for i, c in enumerate(line) if ord(c) > 127), None)
        spot = places[0] if places else wide
        if spot is None:
            continue
        found = (number, line[:spot].count(_separator(line)))
        if places:
            return found
        fallback = fallback or found
    return fallback or (1, 0)


def _cell(lines: list[str], row: int, index: int) -> str:
    if row - 1 >= len(lines):
        return ""
    cells = lines[row - 1].split(_separator(lines[row - 1]))
    return cells[index] if index < len(cells) else lines[row - 1]
