"""Every exception type that reading a schedule, a config file or a setting can raise, each provoked with a real
file or setting and run through the real CLI: the answer is exit 2 (or the run's own code, when the input is
fine) with a sentence, never a traceback, never exit 70.

The types are enumerated from the readers' own modules (the standard library's zipfile, zlib, csv, tomllib,
ElementTree and the OSError and UnicodeError families; python-calamine's, openpyxl's and defusedxml's exception
classes), not listed by hand: a reader that gains an exception type on an upgrade fails
`test_every_exception_type_is_walked` until it is provoked here, or named in UNREACHABLE with the reason the
program cannot meet it. Each provocation also shows, by calling the reader itself, that its file or setting does
raise that type, so a case cannot silently stop testing what it names.
"""

from __future__ import annotations

import builtins
import codecs
import csv
import io
import os
import subprocess
import sys
import tempfile
import tomllib
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import defusedxml
import openpyxl.utils.exceptions
import pytest
import python_calamine
from defusedxml import ElementTree as SafeET

from importer.cli.main import main
from tests.conftest import collector_paused, files_open_on
from tests.corpus import makers_hostile as mh

ROOT = Path(__file__).resolve().parents[2]
READER_MODULES: tuple[ModuleType, ...] = (zipfile, zlib, csv, tomllib, ET, python_calamine, openpyxl.utils.exceptions,
                                          defusedxml)  # fmt: skip
# The builtin families a reader of files and settings raises from (their subclasses enumerated), and single types
# (LookupError is codecs' "no such encoding"; its subclasses KeyError and IndexError are no reader's answer).
BUILTIN_FAMILIES: tuple[type[BaseException], ...] = (OSError, UnicodeError)
BUILTIN_SINGLES = {LookupError, RecursionError, MemoryError, EOFError}


def exception_types() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for module in READER_MODULES:
        for value in vars(module).values():
            home = str(getattr(value, "__module__", None)).split(".")[0].lstrip("_")  # csv.Error lives in _csv
            if isinstance(value, type) and issubclass(value, BaseException) and home == module.__name__.split(".")[0]:
                found.add(value)
    for value in vars(builtins).values():
        if isinstance(value, type) and issubclass(value, BUILTIN_FAMILIES):
            found.add(value)
    return found | BUILTIN_SINGLES


@dataclass(frozen=True, slots=True)
class Provoked:
    """What the CLI is given (`argv` after the command name) and the reader's own call that raises `raises`."""

    argv: list[str]
    raw: Callable[[], object]
    says: str
    exit: int = 2


Maker = Callable[[Path], Provoked]


def _good_xlsx(folder: Path) -> Path:
    return mh._write(folder, "good.xlsx", mh._workbook())


def _good_csv(folder: Path) -> Path:
    path = folder / "good.csv"
    path.write_text("Title,Amount (cents),Project ID\nKickoff,100000,1001\n", encoding="utf-8")
    return path


def _read_all(path: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            zf.read(name)


def _calamine(path: Path) -> None:
    book = python_calamine.CalamineWorkbook.from_path(str(path))
    try:
        for name in book.sheet_names:
            book.get_sheet_by_name(name).to_python()
    finally:
        book.close()


def _config(folder: Path, text: str, *, schedule: Path | None = None) -> list[str]:
    (folder / "bad.toml").write_text(text, encoding="utf-8")
    return ["validate", str(schedule or _good_csv(folder)), "--config", str(folder / "bad.toml")]


def bad_zip(folder: Path) -> Provoked:
    path = mh.text_named_xlsx(folder)
    return Provoked(["validate", str(path)], lambda: zipfile.ZipFile(path), "not an .xlsx workbook")


def corrupt_deflate(folder: Path) -> Provoked:
    path = mh.deflate_sheet(folder)
    return Provoked(["validate", str(path)], lambda: _read_all(path), "damaged")


def csv_unclosed_quote(folder: Path) -> Provoked:
    path = folder / "quote.csv"
    path.write_text('Title,Amount (cents),Project ID\n"Kickoff,100000,1001\n', encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    return Provoked(["validate", str(path)], lambda: list(csv.reader(io.StringIO(text), strict=True)),
                    "not well-formed CSV")  # fmt: skip


def toml_broken(folder: Path) -> Provoked:
    return Provoked(_config(folder, "batch_size = \n"), lambda: tomllib.loads("batch_size = \n"), "not valid TOML")


def _tomllib_in_a_child(text: str) -> None:
    """tomllib.loads(text) in a child process, its exception raised here by name: at the recursion limit, the
    interpreter may run finalizers out of stack, which pytest reports as an error of whichever test is running."""
    done = subprocess.run([sys.executable, "-c", "import sys, tomllib; tomllib.loads(sys.stdin.read())"], input=text,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    last = done.stderr.strip().splitlines()[-1] if done.returncode else ""
    kinds: dict[str, type[BaseException]] = {"RecursionError": RecursionError}
    raise kinds.get(last.split(":")[0], AssertionError)(last)


def toml_nested_deeply(folder: Path) -> Provoked:
    text = "sheet = " + "[" * 5000 + "]" * 5000 + "\n"
    return Provoked(_config(folder, text), lambda: _tomllib_in_a_child(text), "nests arrays or tables too deeply")


def toml_not_utf8(folder: Path) -> Provoked:
    argv = _config(folder, "")
    (folder / "bad.toml").write_bytes(b'sheet = "Factur\xe9"\n')
    return Provoked(argv, lambda: b"\xe9".decode("utf-8"), "not valid TOML")


def csv_not_the_encoding_named(folder: Path) -> Provoked:
    path = folder / "latin.csv"
    path.write_bytes(b"Title,Amount (cents),Project ID\nCaf\xe9,100000,1001\n")
    return Provoked(["validate", str(path), "--encoding", "utf-8"], lambda: path.read_bytes().decode("utf-8"),
                    "is not utf-8 text")  # fmt: skip


def encoding_not_a_text_codec(folder: Path) -> Provoked:
    return Provoked(["validate", str(_good_csv(folder)), "--encoding", "rot13"], lambda: b"a".decode("rot13"),
                    "is not an encoding")  # fmt: skip


def encoding_unknown(folder: Path) -> Provoked:
    return Provoked(["validate", str(_good_csv(folder)), "--encoding", "klingon"], lambda: codecs.lookup("klingon"),
                    "is not an encoding")  # fmt: skip


def encoding_undefined(folder: Path) -> Provoked:
    return Provoked(["validate", str(_good_csv(folder)), "--encoding", "undefined"],
                    lambda: b"a".decode("undefined"), "is not an encoding")  # fmt: skip


def file_name_not_utf8(folder: Path) -> Provoked:
    """A file named in Latin-1 on a UTF-8 system: its name holds a byte Python keeps as a lone surrogate, which
    no UTF-8 output can write. Read, checked and answered like any other (exit 0), its name shown escaped."""
    path = folder / os.fsdecode(b"factur\xe9.csv")
    path.write_text("Title,Amount (cents),Project ID\nKickoff,100000,1001\n", encoding="utf-8")
    return Provoked(["validate", str(path), "-o", str(folder / "out.xlsx")], lambda: str(path).encode("utf-8"),
                    "1 valid", exit=0)  # fmt: skip


def missing(folder: Path) -> Provoked:
    path = folder / "missing.xlsx"
    return Provoked(["validate", str(path)], lambda: path.open("rb"), "file not found")


def folder_named_xlsx(folder: Path) -> Provoked:
    path = mh.directory(folder)
    return Provoked(["validate", str(path)], lambda: path.open("rb"), "is a folder")


def under_a_file(folder: Path) -> Provoked:
    path = _good_csv(folder) / "schedule.csv"
    return Provoked(["validate", str(path)], lambda: path.open("rb"), "file not found")


def link_loop(folder: Path) -> Provoked:
    path = mh.symlink_loop(folder)
    return Provoked(["validate", str(path)], lambda: path.open("rb"), "leads back to itself")


def name_too_long(folder: Path) -> Provoked:
    path = folder / ("a" * 300 + ".xlsx")
    return Provoked(["validate", str(path)], lambda: path.open("rb"), "name too long")


def output_name_too_long(folder: Path) -> Provoked:
    out = folder / ("a" * 300 + ".xlsx")
    return Provoked(["validate", str(_good_csv(folder)), "-o", str(out)], lambda: out.open("wb"),
                    "name too long")  # fmt: skip


def config_name_too_long(folder: Path) -> Provoked:
    path = folder / ("a" * 300 + ".toml")
    return Provoked(["validate", str(_good_csv(folder)), "--config", str(path)], lambda: path.read_text(),
                    "name too long")  # fmt: skip


def entities(folder: Path) -> Provoked:
    path = mh.entity_declaration(folder)
    with zipfile.ZipFile(path) as zf:
        part = zf.read("xl/workbook.xml")
    return Provoked(["validate", str(path)], lambda: SafeET.fromstring(part), "XML entity")


def malformed_sheet_xml(folder: Path) -> Provoked:
    data = mh._workbook()
    part = b"<worksheet><sheetData><row>"
    path = mh._write(folder, "cut-xml.xlsx", mh._rezip(data, replace={"xl/worksheets/sheet1.xml": part}))
    return Provoked(["validate", str(path)], lambda: SafeET.fromstring(part), "could not be read")


def calamine_xml(folder: Path) -> Provoked:
    path = mh.malformed_xml_styles(folder)
    return Provoked(["validate", str(path)], lambda: _calamine(path), "styles")


def calamine_package(folder: Path) -> Provoked:
    path = mh.zip_not_workbook(folder)
    return Provoked(["validate", str(path)], lambda: _calamine(path), "workbook")


# Each exception type with the makers that provoke it.
PROVOKED: dict[type[BaseException], list[Maker]] = {
    zipfile.BadZipFile: [bad_zip],
    zlib.error: [corrupt_deflate],
    csv.Error: [csv_unclosed_quote],
    tomllib.TOMLDecodeError: [toml_broken],
    RecursionError: [toml_nested_deeply],
    UnicodeDecodeError: [toml_not_utf8, csv_not_the_encoding_named],
    UnicodeEncodeError: [file_name_not_utf8],
    UnicodeError: [encoding_undefined],
    LookupError: [encoding_not_a_text_codec, encoding_unknown],
    FileNotFoundError: [missing],
    IsADirectoryError: [folder_named_xlsx],
    NotADirectoryError: [under_a_file],
    OSError: [link_loop, name_too_long, output_name_too_long, config_name_too_long],
    defusedxml.EntitiesForbidden: [entities],
    ET.ParseError: [malformed_sheet_xml],
    python_calamine.XmlError: [calamine_xml],
    python_calamine.CalamineError: [calamine_package],
    # PermissionError: test_unreadable_schedule_as_a_command (root reads anything: it runs as nobody)
}

_HTTP = "raised by sockets, which reading a file or a setting never opens (kantata/client.py maps those)"
_PROCESS = "raised by process and signal calls, which reading a file or a setting never makes"
_CHECKED_FIRST = ("check_package (xlsx_meta.py) reads every part of the package before calamine is given it, and "
                  "refuses a damaged or encrypted one in its own words (the hostile corpus)")  # fmt: skip
_OPENPYXL = (
    "openpyxl reads only a package calamine refused after check_package passed it, and the loader turns "
    "any exception of it into exit 2 (_open_book); it is not known to raise its own types on reading"
)
UNREACHABLE: dict[type[BaseException], str] = {
    PermissionError: "provoked by test_unreadable_schedule_as_a_command, which runs the CLI as another user",
    BlockingIOError: "raised by non-blocking I/O; files are opened blocking, and a pipe is refused unopened (the "
    "hostile corpus's fifo case)",
    InterruptedError: "Python retries a system call a signal interrupted (PEP 475)",
    FileExistsError: "reading creates nothing; the results are written to a fresh temporary name, then replaced",
    TimeoutError: _HTTP,
    ConnectionError: _HTTP,
    BrokenPipeError: _HTTP,
    ConnectionAbortedError: _HTTP,
    ConnectionRefusedError: _HTTP,
    ConnectionResetError: _HTTP,
    ChildProcessError: _PROCESS,
    ProcessLookupError: _PROCESS,
    UnicodeTranslateError: "raised only by str.translate-style encoding, which no reader uses",
    EOFError: "zipfile raises it for a part cut short inside an intact directory, which xlsx_meta's own pass "
    "over every part's bytes meets first and refuses as damaged (its DAMAGED types)",
    MemoryError: "limits.py refuses what would need the memory before reading it (the zip bombs, too many cells "
    "and the long lines of the hostile corpus)",
    zipfile.LargeZipFile: "raised only when writing a zip of more than 2 GiB without ZIP64; xlsxwriter writes "
    "ZIP64 and the readers only read",
    python_calamine.ZipError: _CHECKED_FIRST,
    python_calamine.PasswordError: _CHECKED_FIRST,
    python_calamine.WorksheetNotFound: "the loader asks calamine only for sheets calamine itself listed",
    python_calamine.TableNotFound: "the loader reads tables from the sheet's XML (xlsx_meta.py), not calamine's",
    python_calamine.TablesNotLoaded: "the loader reads tables from the sheet's XML (xlsx_meta.py), not calamine's",
    python_calamine.TablesNotSupported: "the loader reads tables from the sheet's XML (xlsx_meta.py)",
    python_calamine.WorkbookClosed: "the loader closes a book only after its last read (loader._load_xlsx)",
    defusedxml.DefusedXmlException: "the base of defusedxml's types, each walked on its own",
    defusedxml.DTDForbidden: "defusedxml's ElementTree forbids entities, not DTDs, by default; EntitiesForbidden "
    "is the one a DOCTYPE with an entity raises (the entities case)",
    defusedxml.ExternalReferenceForbidden: "an external entity is an entity declaration, refused first as "
    "EntitiesForbidden (the entities case)",
    defusedxml.NotSupportedError: "raised by defusedxml's xmlrpc and lxml shims, which the loader does not use",
    **{t: _OPENPYXL for t in vars(openpyxl.utils.exceptions).values()
       if isinstance(t, type) and issubclass(t, Exception) and t.__module__.startswith("openpyxl")},
}  # fmt: skip

CASES = {f"{kind.__name__}:{maker.__name__}": (kind, maker) for kind, makers in PROVOKED.items() for maker in makers}


def test_every_exception_type_is_walked() -> None:
    types = exception_types()
    assert not set(PROVOKED) & set(UNREACHABLE)
    assert types - set(PROVOKED) - set(UNREACHABLE) == set(), "provoke these, or say why they cannot be met"
    assert set(PROVOKED) | set(UNREACHABLE) <= types, "stale entries: these are no longer raised by the readers"


@pytest.mark.parametrize("case", list(CASES))
def test_each_exception_type_gets_a_sentence(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    kind, maker = CASES[case]
    monkeypatch.chdir(tmp_path)
    provoked = maker(tmp_path)
    with pytest.raises(kind) as raised:
        provoked.raw()
    assert type(raised.value) is kind or kind is OSError, f"the reader raised {type(raised.value).__name__}"
    schedule = Path(provoked.argv[1])
    with collector_paused():
        code = main(provoked.argv)
        left_open = files_open_on(schedule)
    captured = capsys.readouterr()
    said = captured.out + captured.err
    said.encode("utf-8")  # what a terminal or pipe is given is text it can show: no lone surrogates
    assert code == provoked.exit, said
    assert left_open == [], "the schedule was left open (a reader that failed, not closed)"
    assert "Traceback" not in said and "internal error" not in said, said
    if provoked.exit == 2:
        assert captured.err.startswith("error: ") or "\nerror: " in captured.err, said
    assert provoked.says.casefold() in said.casefold(), said


def test_unreadable_schedule_as_a_command(tmp_path: Path) -> None:
    """A schedule the user may not read, run as a real command. Root reads any file, so as root the command runs
    as nobody, in a folder nobody may enter."""
    as_root = os.geteuid() == 0
    with tempfile.TemporaryDirectory(prefix="kantata-unreadable-") as name:
        folder = Path(name)
        folder.chmod(0o755)
        path = _good_csv(folder)
        path.chmod(0)
        user, group = (65534, 65534) if as_root else (None, None)
        groups: list[int] | None = [] if as_root else None
        probe = [sys.executable, "-c", f"open({str(path)!r}, 'rb')"]
        raw = subprocess.run(probe, capture_output=True, text=True, timeout=60, user=user, group=group,
                             extra_groups=groups)  # fmt: skip
        assert "PermissionError" in raw.stderr, raw.stderr
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(folder)}
        done = subprocess.run([sys.executable, "-m", "importer", "validate", str(path)], capture_output=True,
                              text=True, timeout=120, env=env, cwd=folder, user=user, group=group,
                              extra_groups=groups)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "good.csv: cannot be opened (permission denied)" in done.stderr, done.stderr
