"""The code's shape (issue 14): no import cycle between the project's modules, no module reaching
into another's private names (ruff SLF001, also in ``make lint``), and the size limits."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas_gym", "agents", "experiments")
#: repo folder -> its installed (import) name (pyproject.toml's package-dir)
IMPORT_NAMES = {"nas_gym": "nas_gym", "agents": "nas_gym.agents",
                "experiments": "nas_gym.experiments"}
#: the size limits of issue 14 (lines of a module, lines of a function or method)
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT / pkg).with_suffix("").parts)
            if parts and parts[-1] == "__init__":
                parts.pop()
            found[".".join([IMPORT_NAMES[pkg], *parts])] = path
    return found


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Import statements run when the module is imported (not inside functions, classes or an
    ``if TYPE_CHECKING:`` block)."""
    out: list[ast.stmt] = []

    def scan(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.append(node)
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    scan(node.body)
                scan(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody,
                              *(h.body for h in node.handlers)):
                    scan(block)
    scan(tree.body)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in _top_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for t in targets:
                while t and t not in modules:  # "nas_gym.envs.grammar.rollout" -> its module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph()
    assert "nas_gym.envs.grammar" in graph["nas_gym.table"]  # the graph sees relative imports
    found = cycles(graph)
    assert not found, f"import cycles: {found}"


def test_no_private_access_across_modules() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    proc = subprocess.run([ruff, "check", "--select", "SLF001", "--output-format", "concise",
                           *PACKAGES], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_module_or_function_over_the_size_limits() -> None:
    over = []
    for name, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            over.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    over.append(f"{name}.{node.name} (line {node.lineno}): {length} lines")
    assert not over, "over the size limits: " + "; ".join(over)


def test_the_repo_folders_import_under_their_installed_names() -> None:
    import nas_gym.agents
    import nas_gym.experiments
    assert Path(nas_gym.agents.__file__).parent == ROOT / "agents"
    assert Path(nas_gym.experiments.__file__).parent == ROOT / "experiments"
    graph = import_graph()
    assert "nas_gym.agents.base" in graph["nas_gym.experiments.search"]
