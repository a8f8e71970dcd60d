"""docs/files.md lists every header a column is recognised by, in a table made from importer/schedule/columns.py.

After changing the aliases, regenerate the table with `python -m tests.schedule.test_columns_doc`."""

from __future__ import annotations

from pathlib import Path

from importer.schedule.columns import FIELDS, field_for_header

DOC = Path(__file__).resolve().parents[2] / "docs" / "files.md"
START, END = "<!-- header names: generated from importer/schedule/columns.py -->", "<!-- end of header names -->"


def header_table() -> str:
    lines = ["| column | also recognised as |", "| --- | --- |"]
    for f in FIELDS:
        others = [f.name, *(a[:1].upper() + a[1:] for a in f.aliases)]
        shown = ", ".join(f"`{name}`" for name in dict.fromkeys(others) if name != f.label)
        lines.append(f"| {f.label} | {shown} |")
    return "\n".join(lines)


def _block(text: str) -> str:
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def test_the_doc_lists_every_header_name_of_every_column() -> None:
    assert _block(DOC.read_text(encoding="utf-8")) == header_table(), (
        "docs/files.md's header table is stale: run python -m tests.schedule.test_columns_doc"
    )


def test_every_name_in_the_table_is_recognised_as_its_column() -> None:
    table = header_table()
    for f in FIELDS:
        for name in (f.label, f.name, *f.aliases):
            assert field_for_header(name) == f.name
            assert name == f.label or f"`{name}`" in table or f"`{name[:1].upper() + name[1:]}`" in table


if __name__ == "__main__":
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    DOC.write_text(f"{head}{START}\n{header_table()}\n{END}{rest.split(END, 1)[1]}", encoding="utf-8")
