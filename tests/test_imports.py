"""No import circle anywhere in segkit/: an AST scan of every import (function-local and
TYPE_CHECKING ones included), the way the engine's one-way imports are tested."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, module: str, is_package: bool, exists) -> set[str]:
    """The dotted names one import statement brings in (``from a import b``: ``a`` and, when
    ``a.b`` is a module, ``a.b``)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:  # relative: from the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    return {base} | {f"{base}.{a.name}" for a in node.names if exists(f"{base}.{a.name}")}


def import_graph(root: Path, package: str = "segkit") -> dict[str, set[str]]:
    """``module -> the package modules it imports``. Importing ``a.b.c`` runs the packages
    ``a`` and ``a.b`` too, so those count as imported, except by their own members."""
    files = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names |= _imported(node, module, path.name == "__init__.py", files.__contains__)
        deps = set()
        for name in names:
            if not (name == package or name.startswith(package + ".")):
                continue
            while name and name not in files:  # a.b.func -> the module a.b
                name = name.rpartition(".")[0]
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                inside = module.startswith(target + ".")
                if target in files and target != module and (i == len(parts) or not inside):
                    deps.add(target)
        graph[module] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None when the imports go one way."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_segkit_has_no_import_circle():
    cycle = find_cycle(import_graph(ROOT))
    assert cycle is None, "import circle in segkit/: " + " -> ".join(cycle or [])


def test_the_scan_finds_local_relative_and_package_circles(tmp_path):
    """The scan itself: a function-local import, a relative one and a package __init__ each
    close a circle it names."""
    pkg = tmp_path / "segkit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from segkit.b import g\n")
    (pkg / "b.py").write_text("from . import a\n")
    assert find_cycle(import_graph(tmp_path)) == ["segkit.a", "segkit.b", "segkit.a"]
    (pkg / "b.py").write_text("import numpy\n")
    assert find_cycle(import_graph(tmp_path)) is None
    (pkg / "sub" / "__init__.py").write_text("from segkit.sub.x import y\n")
    (pkg / "sub" / "x.py").write_text("from segkit.sub.w import q\ny = q\n")
    (pkg / "sub" / "w.py").write_text("q = 1\n")
    (pkg / "c.py").write_text("from segkit.sub.w import q\n")
    assert find_cycle(import_graph(tmp_path)) is None  # sub's members skip sub/__init__
    (pkg / "sub" / "__init__.py").write_text("import segkit.c\n")  # c -> sub.w runs sub
    assert find_cycle(import_graph(tmp_path)) == ["segkit.c", "segkit.sub", "segkit.c"]
