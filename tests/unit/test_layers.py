"""The folders are the architecture: every import points down the layers, never up.

canonical < adapters < activities < workflows < workers = starters; the sandbox stands for
the external services and imports none of them. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS: dict[str, int] = {
    "canonical": 0,
    "adapters": 1,
    "activities": 2,
    "workflows": 3,
    "workers": 4,
    "starters": 4,
}
# The sandbox is the outside world: it may import no product layer at all.
ISOLATED = frozenset({"sandbox"})


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in the tree, at any depth. A relative import
    stays inside its own top-level package, so it never crosses a layer."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def upward_imports(root: Path, packages: dict[str, int], isolated: frozenset[str]) -> list[str]:
    """Every import under `root` from a package of a lower layer into a higher one (or from
    an isolated package into any layer), as `file:line imports module` lines."""
    offences = []
    for package in sorted({*packages, *isolated}):
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, target in imported_modules(tree):
                top = target.split(".")[0]
                if top not in packages or top == package:
                    continue
                if package in isolated or packages[top] > packages[package]:
                    offences.append(f"{relative}:{line} imports {target}")
    return offences


def test_every_import_points_down_the_layers() -> None:
    offences = upward_imports(ROOT, LAYERS, ISOLATED)
    assert offences == [], "imports of a higher layer:\n" + "\n".join(offences)


def _package(root: Path, name: str, files: dict[str, str]) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    for file, source in files.items():
        (root / name / file).write_text(source)


@pytest.mark.parametrize(
    ("source", "offence"),
    [
        ("from high.mod import thing\n", "low/m.py:1 imports high.mod"),
        ("import high.mod\n", "low/m.py:1 imports high.mod"),
        ("import os\n\ndef later():\n    from high import mod\n", "low/m.py:4 imports high"),
        ("class A:\n    def f(self):\n        import high\n", "low/m.py:3 imports high"),
    ],
)
def test_checker_finds_an_upward_import_at_any_depth(
    tmp_path: Path, source: str, offence: str
) -> None:
    _package(tmp_path, "low", {"m.py": source})
    _package(tmp_path, "high", {"mod.py": "import low.m\nfrom low import m\n"})
    assert upward_imports(tmp_path, {"low": 0, "high": 1}, frozenset()) == [offence]


def test_checker_keeps_an_isolated_package_off_every_layer(tmp_path: Path) -> None:
    _package(tmp_path, "low", {"m.py": ""})
    _package(tmp_path, "outside", {"m.py": "import json\nfrom low.m import x\n"})
    assert upward_imports(tmp_path, {"low": 0}, frozenset({"outside"})) == [
        "outside/m.py:2 imports low.m"
    ]


def test_equal_layers_may_import_each_other(tmp_path: Path) -> None:
    _package(tmp_path, "left", {"m.py": "from right import m\n"})
    _package(tmp_path, "right", {"m.py": "from left import m\n"})
    assert upward_imports(tmp_path, {"left": 4, "right": 4}, frozenset()) == []
