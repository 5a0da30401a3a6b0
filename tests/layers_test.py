"""The layers of ``buildtool/`` (``buildtool.LAYERS``): every import, at module level, inside
functions and under ``TYPE_CHECKING``, points to the importer's own layer or one below it, and
no modules import each other in a circle."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildtool import LAYERS

PACKAGE = Path(__file__).resolve().parent.parent / "buildtool"


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, package: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of a ``buildtool`` module in ``path``, wherever it is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    own = module_name(path, package)
    base = own.split(".") if path.name == "__init__.py" else own.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "buildtool":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1]
                module = ".".join([*stem, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] != "buildtool":
                continue
            for alias in node.names:  # ``from buildtool.x import y``: y may be a module
                candidate = f"{module}.{alias.name}"
                named = package.parent.joinpath(*candidate.split("."))
                if named.with_suffix(".py").is_file() or (named / "__init__.py").is_file():
                    yield node.lineno, candidate
                else:
                    yield node.lineno, module


def rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return 0  # buildtool itself: its version and this table
    for index, names in enumerate(LAYERS):
        if parts[1] in names:
            return index
    raise AssertionError(f"buildtool.{parts[1]} has no layer in buildtool.LAYERS")


def upward_imports(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        own = module_name(path, package)
        for line, target in imports(path, package):
            if rank(target) > rank(own):
                where = path.relative_to(package.parent)
                found.append(f"{where}:{line}: {own} imports {target}, a higher layer")
    return found


def circles(package: Path) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        own = module_name(path, package)
        graph.setdefault(own, set()).update(
            t for _, t in imports(path, package) if t != own and t != "buildtool"
        )
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_import_of_buildtool_points_to_its_own_layer_or_below() -> None:
    assert upward_imports(PACKAGE) == []


def test_no_modules_of_buildtool_import_each_other_in_a_circle() -> None:
    assert circles(PACKAGE) == []


def test_every_top_level_entry_of_buildtool_has_a_layer() -> None:
    entries = {
        p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    assert sorted(entries - {"__init__"} - {n for names in LAYERS for n in names}) == []
    assert len(entries - {"__init__", "__main__"}) <= 14


@pytest.fixture
def copy_of_buildtool(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / "buildtool", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "buildtool"


@pytest.mark.parametrize(
    "line",
    [
        "from buildtool.cli.main import run\n",
        "def later() -> None:\n    import buildtool.cli.reporter\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from buildtool.cli import main\n",
    ],
    ids=["module-level", "inside-a-function", "type-checking"],
)
def test_an_import_of_the_command_line_from_the_lowest_layer_fails_naming_file_and_line(
    copy_of_buildtool: Path, line: str
) -> None:
    errors = copy_of_buildtool / "errors.py"
    lines = errors.read_text().count("\n")
    errors.write_text(errors.read_text() + line)
    found = upward_imports(copy_of_buildtool)
    assert len(found) == 1
    assert found[0].startswith(f"buildtool/errors.py:{lines + line.count(chr(10))}: ")
    assert "buildtool.errors imports buildtool.cli." in found[0]


def test_the_layer_check_runs_on_its_own_as_a_script_would(copy_of_buildtool: Path) -> None:
    """The same check from a plain interpreter: a failing run names the file and line."""
    errors = copy_of_buildtool / "errors.py"
    errors.write_text(errors.read_text() + "from buildtool.cli.main import run\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import layers_test as t; "
        "from pathlib import Path; found = t.upward_imports(Path(sys.argv[2])); "
        "print(*found, sep='\\n'); sys.exit(1 if found else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(copy_of_buildtool)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stdout.startswith("buildtool/errors.py:")


def test_the_readme_names_every_module_in_the_row_of_its_package() -> None:
    """ "Where the code lives" stays true: each module of ``buildtool/`` is named, in its
    package's row (top-level modules in the "top level" row)."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Where the code lives", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = line.split(" | ")
        if line.startswith("| ") and len(cells) == 2:
            rows[cells[0].strip("| `")] = cells[1]
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if path.name == "__init__.py" and len(relative.parts) > 1:
            continue  # a package's face: its modules are what is named
        row = "top level" if len(relative.parts) == 1 else f"{relative.parts[0]}/"
        if f"`{path.name}`" not in rows.get(row, ""):
            missing.append(str(relative))
    assert missing == ["__init__.py"]  # buildtool's own: its version and LAYERS
