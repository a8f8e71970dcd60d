"""The shipped samples do what samples/README.md says, cell for cell."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from importer.pipeline import run_upload, run_validate
from importer.sandbox.server import DEFAULT_TOKEN
from importer.settings import Secret, Settings

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _documented(columns: int = 4) -> list[tuple[str, str, str]]:
    """(cell, code, message) from the mistakes table (4 columns) or the online table (3) of samples/README.md."""
    rows = []
    for line in (SAMPLES / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == columns and re.fullmatch(r"[A-Z]+\d+|row \d+", cells[0]):
            rows.append((cells[0], cells[-2].split()[0].strip("`"), cells[-1]))
    return rows


def test_valid_samples_are_valid(tmp_path: Path) -> None:
    for name in ("billing_schedule.xlsx", "billing_schedule.csv"):
        result = run_validate(SAMPLES / name, output=tmp_path / f"{name}.xlsx")
        assert result.rows == 48 and result.counts["valid"] == 48 and result.issues == []
        assert int(result.exit_code) == 0


def test_mistakes_are_reported_exactly_as_documented(sandbox: Any, tmp_path: Path) -> None:
    documented = _documented()
    assert len(documented) == 9
    checked = run_validate(SAMPLES / "schedule_with_mistakes.xlsx", output=tmp_path / "v.xlsx")
    local = [(i.cell, i.code, i.message) for i in checked.issues]
    assert local == [d for d in documented if d[1] != "rejected-by-kantata"]
    assert checked.counts["valid"] == 4 and checked.counts["invalid"] == 7

    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    uploaded = run_upload(SAMPLES / "schedule_with_mistakes.xlsx", settings, output=tmp_path / "u.xlsx")
    in_order = sorted(uploaded.outcomes.values(), key=lambda o: o.row)
    rejected = [
        (f"row {o.row}", "rejected-by-kantata", "; ".join(o.errors)) for o in in_order if o.status == "rejected"
    ]
    assert rejected == [d for d in documented if d[1] == "rejected-by-kantata"]
    assert uploaded.counts["created"] == 2
    assert sorted(str(m["title"]) for m in sandbox.milestones()) == ["Credit note", "Kickoff workshop"]


def test_an_online_dry_run_finds_before_sending_what_upload_had_kantata_reject(sandbox: Any, tmp_path: Path) -> None:
    online = _documented(columns=3)
    assert [cell for cell, _, _ in online] == ["E11", "C12"]
    settings = Settings(base_url=sandbox.url, token=Secret(DEFAULT_TOKEN))
    checked = run_validate(SAMPLES / "schedule_with_mistakes.xlsx", output=tmp_path / "v.xlsx", settings=settings)
    offline = [d for d in _documented() if d[1] != "rejected-by-kantata"]
    assert [(i.cell, i.code, i.message) for i in checked.issues] == offline + online
    assert checked.counts["valid"] == 2 and checked.counts["invalid"] == 9
    assert sandbox.milestones() == []
