"""A CSV's encoding: real bytes written in each encoding finance tools save in, and the text they must give."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from importer.errors import ScheduleError
from importer.schedule.encodings import decode_text

HEADER = "Title,Amount,Project ID\n"
TEXT = HEADER + "Café crème,1.00,1001\nRéunion d'équipe,2.00,1001\n"
PATH = Path("in.csv")


@pytest.mark.parametrize(
    ("data", "codec"),
    [(codecs.BOM_UTF8 + TEXT.encode(), "utf-8"), (TEXT.encode(), "utf-8"),
     (codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"), "utf-16-le"),
     (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16-be"),
     (TEXT.encode("utf-16-le"), "utf-16-le"), (TEXT.encode("utf-16-be"), "utf-16-be"),
     (codecs.BOM_UTF32_LE + TEXT.encode("utf-32-le"), "utf-32-le"),
     (TEXT.encode("cp1252"), "cp1252"), (TEXT.encode("latin-1"), "cp1252"),
     (TEXT.replace("\n", "\r").encode("mac_roman"), "mac_roman")],
)  # fmt: skip
def test_each_encoding_gives_the_text_as_written(data: bytes, codec: str) -> None:
    decoded = decode_text(data, None, path=PATH)
    assert decoded.encoding == codec
    assert decoded.text.replace("\r", "\n") == TEXT


def test_shift_jis_gives_the_japanese_titles() -> None:
    text = HEADER + "請求 第1回,1500.00,1001\nコンサルティング費用,200.00,1001\n"
    assert decode_text(text.encode("shift_jis"), None, path=PATH).text == text


def test_a_file_two_encodings_read_plainly_is_refused_with_both_readings() -> None:
    with pytest.raises(ScheduleError) as caught:
        decode_text((HEADER + "Köln,1.00,1001\n").encode("mac_roman"), None, path=PATH)
    message = str(caught.value)
    assert '"Kšln" as cp1252' in message and '"Köln" as mac_roman' in message and "row 2, column A" in message


def test_encoding_named_wins_and_its_mark_is_no_text() -> None:
    assert decode_text(codecs.BOM_UTF8 + b"x", "utf-8", path=PATH).text == "x"
    assert decode_text((HEADER + "Köln").encode("mac_roman"), "mac_roman", path=PATH).text.endswith("Köln")
    assert decode_text("Łódź".encode("utf-16-le"), "utf-16", path=PATH).text == "Łódź"


def test_an_encoding_named_that_cannot_read_the_bytes_names_the_line() -> None:
    with pytest.raises(ScheduleError, match="line 2"):
        decode_text((HEADER + "請求,1,1\n").encode("shift_jis"), "utf-8", path=PATH)


def test_nul_bytes_that_are_no_utf_16_are_no_text() -> None:
    with pytest.raises(ScheduleError, match="not a text file"):
        decode_text(b"\x00\x01\x02PK\x03\x04" * 20, None, path=PATH)
