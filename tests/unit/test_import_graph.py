"""No import circle in src/softprompt, hidden or not.

The graph has an edge A -> B for every `import softprompt.B` / `from . import B` / `from .B import x` in A,
at module level *and inside functions*: an import moved into a function to dodge a circle still counts,
since the circle is in the design either way. Third-party imports are not edges, nor is the package itself
(softprompt/__init__.py re-exports a few names and runs before any of its modules).
"""

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "softprompt"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The softprompt modules a file imports anywhere in its body."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules  # `from . import model`
            found.update(submodules or {base})
    # Every import runs softprompt/__init__.py first, so an edge to the package itself is no circle.
    return {m for m in found if m in modules and m not in (name, "softprompt")}


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): imported_modules(p, modules) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert {"softprompt.train", "softprompt.model", "softprompt.config"} <= set(graph)
    assert "softprompt.model" in graph["softprompt.train"]  # edges are found (a test of the test)


def test_find_cycle_finds_a_hidden_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circle_in_src():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


LEAVES = ("errors", "files", "metrics", "testing", "distributed")
"""Modules everything may use and that use nothing of the package (docs/architecture.md)."""


def test_the_leaves_import_nothing_from_the_package():
    graph = import_graph()
    assert {leaf: graph[f"softprompt.{leaf}"] for leaf in LEAVES} == {leaf: set() for leaf in LEAVES}
