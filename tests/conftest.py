"""Shared fixtures: a clean environment, real schedule files written to tmp_path, and the real sandbox."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gc
import os
import re
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import openpyxl
import pytest
from hypothesis import settings as hypothesis_settings

hypothesis_settings.register_profile("ci", max_examples=200, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

HEADERS = ["title", "amount_in_cents", "workspace_id", "date_to_invoice", "story_id", "billing_type"]

MakeSchedule = Callable[..., Path]


# A formula cell is a cell with an <f> element (openpyxl reads data_type "f" from nothing else), under any
# namespace prefix. Escaped text cannot hold "<", so no cell text matches.
FORMULA_ELEMENT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?f[\s>/]")


def _may_hold_a_formula(path: Path) -> bool:
    """False only when no part of the workbook holds a formula element: then no cell of it can be one, and
    reading it cell by cell is skipped. Anything unreadable or oversized here (the hostile corpus has both) is
    left to openpyxl."""
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
            if sum(info.file_size for info in parts) > 64 * 1024 * 1024:
                return True
            return any(FORMULA_ELEMENT.search(archive.read(info)) for info in parts)
    except Exception:
        return True


@pytest.fixture(autouse=True)
def no_formula_in_any_results_workbook(tmp_path: Path) -> Iterator[None]:
    """After every test: each results workbook it wrote holds no formula cell (we never write one, and copy
    cached values, not formulas, from the input)."""
    yield
    for path in tmp_path.rglob("*.xlsx"):
        if not path.is_file() or not _may_hold_a_formula(path):  # the corpus has folders and pipes named .xlsx
            continue
        try:
            file = path.open("rb")
        except OSError:
            continue
        with file:  # given the file, since openpyxl leaves one it opened itself open when the package is broken
            _no_formula(path, file)


def _no_formula(path: Path, file: IO[bytes]) -> None:
    try:
        wb = openpyxl.load_workbook(file, read_only=True)
    except Exception:
        return  # the corpus's broken inputs
    try:
        if "Errors" not in wb.sheetnames or "Summary" not in wb.sheetnames:
            return
        for ws in wb.worksheets:
            for row in ws.iter_rows():
                for cell in row:
                    assert getattr(cell, "data_type", None) != "f", f"{path.name} {ws.title}!{cell.coordinate}"
    finally:
        wb.close()


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No KANTATA_* or PANDERA_* setting of the developer's leaks into a test; no ~/.netrc either."""
    for name in list(os.environ):
        if name.startswith(("KANTATA_", "PANDERA_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # also each test's own ledger (importer/delivery/ledger.py)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)


def good_row(n: int, *, workspace: int = 1001) -> list[Any]:
    """A valid fixed-date row; n makes each one distinct."""
    return [
        f"Milestone {n}",
        10000 + n,
        workspace,
        dt.date(2026, 1, 1) + dt.timedelta(days=n % 300),
        None,
        "fixed_date",
    ]


@pytest.fixture
def make_schedule(tmp_path: Path) -> MakeSchedule:
    """Write a real .xlsx (openpyxl) or .csv file from rows; returns its path."""

    def make(
        rows: Sequence[Sequence[Any]],
        *,
        headers: Sequence[str] = HEADERS,
        name: str = "schedule",
        fmt: str = "xlsx",
        sheet: str = "Billing",
        above: Sequence[Sequence[Any]] = (),
    ) -> Path:
        path = tmp_path / f"{name}.{fmt}"
        if fmt == "csv":
            with path.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                for line in [*above, headers, *rows]:
                    writer.writerow(["" if v is None else v.isoformat() if hasattr(v, "isoformat") else v
                                     for v in line])  # fmt: skip
            return path
        wb = openpyxl.Workbook()
        ws = wb.active
        assert ws is not None
        ws.title = sheet
        for line in [*above, headers, *rows]:
            ws.append(list(line))
        wb.save(path)
        return path

    return make


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Any]:
    from importer.sandbox.server import Sandbox

    with Sandbox() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: Any) -> Any:
    """The real sandbox on loopback, emptied and fault-free for each test."""
    sandbox_server.reset()
    return sandbox_server


@pytest.fixture
def in_file_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uploads send their batches from the first, in file order, rather than from the point each upload's mark
    picks (delivery/order.py): for a test of what happens at a given batch."""
    import importer.delivery.order

    monkeypatch.setattr(importer.delivery.order, "start", lambda count, mark: 0)


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block: a file a reader leaves open inside a reference cycle (an
    exception's traceback holds the reader) then stays open, where the collector would close it at a moment of
    its choosing, with a ResourceWarning that fails whichever test is running then."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def files_open_on(path: Path) -> list[int]:
    """This process's file descriptors open on `path` (Linux's /proc/self/fd), after the read-ahead threads of
    the runs before have ended: a run must leave none behind, whatever it made of the file."""
    for thread in threading.enumerate():
        if thread.name == "prefetch":
            thread.join(timeout=60)
    target = os.path.realpath(path)
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor of the listing itself, closed by now
            if os.readlink(f"/proc/self/fd/{name}") == target:
                found.append(int(name))
    return found


def read_results(path: Path, sheet: str = "Billing") -> list[dict[str, Any]]:
    """The results sheet as dicts keyed by header, each with its Excel row number under "_row"."""
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        ws = wb[sheet]
        rows = list(ws.iter_rows(values_only=True))
    finally:
        wb.close()
    header_at = next(i for i, r in enumerate(rows) if "status" in r)
    header = rows[header_at]
    out = []
    for number, row in enumerate(rows[header_at + 1 :], start=header_at + 2):
        if any(v is not None for v in row):
            out.append({"_row": number, **{str(h): v for h, v in zip(header, row, strict=False) if h is not None}})
    return out


def milestone_id(row: dict[str, Any]) -> str | None:
    """A row's milestone id as Kantata gives it (text); the results workbook holds it as a number."""
    value = row.get("billing_milestone_id")
    return None if value is None else str(value)
