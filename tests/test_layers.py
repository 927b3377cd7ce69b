"""The one-way import rule of the package: core ← llm ← structured/experiments ← cli/notebooks, records a leaf.

Read from the source (``ast``), so the rule is checked without importing anything; plus one real
import of ``attnprune.core`` in a process where transformers and pandas cannot be imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "attnprune"
LAYERS = {"core": 0, "records": 0, "llm": 1, "structured": 1.5, "experiments": 2, "cli": 3, "notebooks": 3}
"""The height of each part: a module may import its own part and any part below it (records is a
leaf: it imports no other part, and every part may import it). ``structured`` (Part II) sits above
``llm`` and below ``experiments``: the experiments may use it, it never uses them."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts  # ("attnprune", "core", "masks")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The attnprune modules that ``path`` imports (absolute names), at any depth of the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:  # `from . import assets` imports a module
                candidate = f"{target}.{alias.name}"
                is_module = any(candidate == _module_name(p) for p in PACKAGE.rglob("*.py"))
                found.add(candidate if is_module else target)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {m for m in found if m == "attnprune" or m.startswith("attnprune.")}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package's __init__


GRAPH = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _part(m) is not None))
def test_imports_go_downward_only(module):
    here = _part(module)
    for target in GRAPH[module]:
        there = _part(target)
        assert there is not None, f"{module} imports the package root {target}: import the module itself"
        if here == "records":
            assert there == "records", f"records is a leaf, but {module} imports {target}"
        elif there != "records":
            assert LAYERS[there] <= LAYERS[here], f"{module} ({here}) imports {target} ({there}) from above"


def test_no_import_circles():
    """Depth-first search of the module graph: no module reaches itself."""
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in GRAPH.get(module, ()):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(target) :], target]))
            if target in GRAPH and not state.get(target):
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if not state.get(module):
            visit(module, [module])


def test_the_graph_is_read():
    """The reader finds the known imports (so the two tests above check something)."""
    assert "attnprune.core.masks" in GRAPH["attnprune.core.solver"]
    assert "attnprune.llm.assets" in GRAPH["attnprune.llm.models"]
    assert "attnprune.llm.assets" in GRAPH["attnprune.llm.data"]  # `from . import assets`


def test_core_imports_without_transformers_or_pandas():
    code = (
        "import sys\n"
        "sys.modules['transformers'] = None; sys.modules['pandas'] = None\n"
        "import attnprune, attnprune.core\n"
        "from attnprune.core import attention, baselines, checks, masks, objective, solver, theory, trace\n"
        "assert attnprune.prune is solver.prune\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
