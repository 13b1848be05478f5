"""No import circles among evaluate's modules (issue 12), and dependencies that point one way (scripts ->
evaluate -> baselines -> vla_pruner). Imports are read from the source with `ast`, function-level (lazy) ones
included: a lazy import hides a circle from Python, not from a reader."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `package` under `root` (a package is its __init__)."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that `module` (at `path`) imports: `import a.b` and `from a import b` (b a
    submodule) point at a.b, `from a import name` at a; relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = ".".join(p for p in (package if node.level else "", node.module or "") if p)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != module)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = module_names(root, package)
    return {name: imported(path, name, modules) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import one another, directly or through others (strongly connected
    components of more than one module, Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_evaluate_has_no_import_circles():
    graph = import_graph(REPO, "evaluate")
    assert {"evaluate.runner", "evaluate.envs.libero", "evaluate.policies", "evaluate.analysis.report"} <= set(graph)
    assert "evaluate.envs.base" in graph["evaluate.rollout"]  # the graph sees real edges
    assert circles(graph) == []


def test_the_circle_finder_finds_direct_lazy_and_relative_circles(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pkg import a\n",
        "a.py": "import pkg.b\n",
        "b.py": "def f():\n    from pkg.sub import c  # lazy\n",
        "sub/__init__.py": "",
        "sub/c.py": "from .. import a\n",  # back to the start: a -> b -> sub.c -> a
        "d.py": "from pkg.e import thing\n",
        "e.py": "from . import d\n",
        "f.py": "import pkg.sub\n",  # into a package without closing a circle
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.c"] == {"pkg.a"} and graph["pkg"] == {"pkg.a"}
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"], ["pkg.d", "pkg.e"]]


def test_dependencies_point_one_way():
    """The library and the pruners know nothing of the harness; the harness knows nothing of the scripts."""
    for package, forbidden in (("vla_pruner", ("evaluate", "baselines", "scripts")),
                               ("baselines", ("evaluate", "scripts")), ("evaluate", ("scripts",))):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                bad = [n for n in names if n.split(".")[0] in forbidden]
                assert not bad, f"{path.relative_to(REPO)} imports {bad}"
