"""The package's layout is its pipeline: imports run one way, and subpackages meet only through their faces."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "importer"
SUBPACKAGES = ("schedule", "kantata", "delivery", "results", "cli", "sandbox", "web")

# What each part of the library may import besides the base modules (errors, outcomes, settings, progress,
# _face) and itself: data flows from the file (schedule) through Kantata's API (kantata) to the sending
# (delivery) and the workbooks (results); pipeline and summary tell the story over all of them; the CLI calls it.
MAY_IMPORT = {
    "schedule": set(),
    "kantata": {"schedule"},
    "delivery": {"schedule", "kantata"},
    "results": {"schedule", "kantata"},
    "sandbox": set(),
    "web": {"delivery", "pipeline", "results", "summary"},  # the page: a second caller, like the CLI
    "pipeline": {"schedule", "kantata", "delivery", "results"},
    "summary": {"schedule", "kantata", "delivery", "results", "pipeline"},
    "base": set(),
    "face": {"schedule", "kantata", "delivery", "results", "pipeline"},  # importer/__init__: the public API
}
BASE = {"errors", "outcomes", "settings", "progress", "clock", "logevents", "_face", "__version__"}


def _part(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if len(parts) > 1:
        return parts[0]
    if parts[0] == "__init__":
        return "face"
    return "base" if parts[0] in BASE else parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module of ours that `path` imports, at any depth (functions' imports too), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("importer")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("importer"):
            # `from importer import x` names a module when x is one of ours: count it as that module
            if node.module == "importer":
                found += [(node.lineno, f"importer.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _target(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return "base"
    return "base" if parts[0] in BASE else parts[0]


LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if _part(p) not in {"cli"} and p.name != "__main__.py")


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path) -> None:
    """No part of the library imports a part downstream of it, and nothing in the library imports the CLI."""
    mine = _part(path)
    allowed = MAY_IMPORT[mine] | {mine, "base"}
    wrong = [(line, m) for line, m in _imports(path) if _target(m) not in allowed]
    assert wrong == [], f"{path.relative_to(PACKAGE)} imports {wrong}; {mine}/ may import {sorted(allowed)}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_subpackages_meet_through_their_faces(path: Path) -> None:
    """Across subpackages only the face (`importer.schedule`) is imported, never a module behind it."""
    mine = _part(path)
    behind = [
        (line, m)
        for line, m in _imports(path)
        if len(m.split(".")) > 2 and m.split(".")[1] in SUBPACKAGES and m.split(".")[1] != mine
        and not (mine == "cli" and m.split(".")[1] == "cli")
    ]  # fmt: skip
    if path == PACKAGE / "__main__.py":
        behind = [b for b in behind if not b[1].startswith("importer.cli")]
    assert behind == [], f"{path.relative_to(PACKAGE)} reaches behind a face: {behind}"


@pytest.mark.parametrize("name", ["importer", *(f"importer.{s}" for s in SUBPACKAGES)])
def test_each_face_names_exactly_what_it_exports(name: str) -> None:
    """Sorted `__all__`; each name resolves, lazily, to the object of the module it lives in; unknown names fail."""
    face = importlib.import_module(name)
    assert face.__all__ == sorted(face.__all__)
    for attr in face.__all__:
        value = getattr(face, attr)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__name__ == attr, attr
    assert set(face.__all__) <= set(dir(face))
    with pytest.raises(AttributeError):
        face.no_such_name  # noqa: B018


def test_the_rules_can_fail(tmp_path: Path) -> None:
    """The scan sees an import inside a function, which is where a wrong one would hide."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from importer.cli.main import main\n    import importer.delivery.upload\n")
    assert [m for _, m in _imports(module)] == ["importer.cli.main", "importer.delivery.upload"]
