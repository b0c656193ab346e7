"""Which way imports go between the project's modules (README.md, "Architecture"): the data package imports
nothing of the explanation package, and sfam_lite's modules import each other without a cycle.

The import graph is read from the source with :mod:`ast`: every ``import`` and ``from … import`` of a module,
at module level or inside a function, relative or absolute, except code under ``if __name__ == "__main__":``
(it runs only when the module is the program, after every import). Imports made by name at run time
(``importlib.import_module``) are not edges of this graph.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sfam_lite", "data_download")


# ------------------------------------------------------------------------------------------------- checker

def module_name(path: Path, root: Path) -> str:
    """``sfam_lite/models/frn.py`` → ``sfam_lite.models.frn``; a package's ``__init__.py`` → the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_main_guard(node: ast.AST) -> bool:
    if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1
            and isinstance(node.test.ops[0], ast.Eq)):
        return False
    sides = [node.test.left, *node.test.comparators]
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node of ``tree``, outside ``if __name__ == "__main__":`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif _is_main_guard(node):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _nearest_module(dotted: str, modules: set[str]) -> str | None:
    """``dotted`` or the nearest project module enclosing it (``sfam_lite.train.main`` → ``sfam_lite.train``)."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or None


def _targets(node: ast.AST, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The project modules that one import node of module ``name`` imports: ``from package import submodule``
    imports the submodule; ``from module import name`` and ``import a.b`` import the module itself (the parent
    packages that Python initialises on the way are not counted)."""
    if isinstance(node, ast.Import):
        found = {_nearest_module(alias.name, modules) for alias in node.names}
    else:
        if node.level:
            package = name.split(".") if is_package else name.split(".")[:-1]
            package = package[:len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module
        found = {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else _nearest_module(base, modules)
                 for alias in node.names}
    return found - {None, name}


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """``{module: modules of the project it imports}`` for every ``.py`` file under ``root/<package>``."""
    files = {module_name(p, root): p for package in packages for p in sorted((root / package).rglob("*.py"))}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = set().union(*(_targets(node, name, is_package, modules) for node in _imports(tree)))
    return graph


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def forbidden_imports(graph: dict[str, set[str]], lower: str, upper: str) -> list[tuple[str, str]]:
    """``(importer, imported)`` pairs where a module of package ``lower`` imports one of package ``upper``."""
    return sorted((m, t) for m, targets in graph.items() if in_package(m, lower)
                  for t in targets if in_package(t, upper))


def cycles(graph: dict[str, set[str]], package: str) -> list[list[str]]:
    """One cycle (``[a, b, …, a]``) per strongly connected component of more than one module among ``package``'s
    modules (Tarjan's algorithm)."""
    nodes = sorted(m for m in graph if in_package(m, package))
    edges = {m: sorted(t for t in graph[m] if in_package(t, package)) for m in nodes}
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return [_cycle_through(min(c), c, edges) for c in components]


def _cycle_through(start: str, component: set[str], edges: dict[str, list[str]]) -> list[str]:
    """A shortest path from ``start`` back to itself inside ``component`` (breadth first)."""
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in edges[v]:
                if w == start:
                    path = [v]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w in component and w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def describe(cycle: list[str]) -> str:
    return " → ".join(cycle)


# --------------------------------------------------------------------------------------------- the project

def test_the_graph_sees_both_packages():
    graph = import_graph(ROOT)
    assert "sfam_lite.references" in graph["sfam_lite.controls"]
    assert "data_download.synthetic" in graph["sfam_lite.controls"]
    assert "sfam_lite.maps" in graph["sfam_lite.localization"]
    assert "data_download.errors" in graph["data_download"]


def test_the_data_package_imports_nothing_of_sfam_lite():
    bad = forbidden_imports(import_graph(ROOT), lower="data_download", upper="sfam_lite")
    assert not bad, "data_download must not import sfam_lite: " + ", ".join(f"{m} imports {t}" for m, t in bad)


def test_sfam_lite_has_no_import_cycle():
    found = cycles(import_graph(ROOT), "sfam_lite")
    assert not found, "import cycles in sfam_lite: " + "; ".join(describe(c) for c in found)


# ------------------------------------------------------------------------------- the checker on made-up trees

def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_reports_a_cycle_through_a_function_level_import(tmp_path):
    root = write_tree(tmp_path, {
        "sfam_lite/__init__.py": "",
        "sfam_lite/a.py": "from .b import f\n",
        "sfam_lite/b.py": "def f():\n    from sfam_lite import c\n",
        "sfam_lite/c.py": "import sfam_lite.a as a\n",
        "sfam_lite/d.py": "from . import a\n",            # imports into the cycle, is not on it
        "data_download/__init__.py": "",
    })
    found = cycles(import_graph(root), "sfam_lite")
    assert [describe(c) for c in found] == ["sfam_lite.a → sfam_lite.b → sfam_lite.c → sfam_lite.a"]


def test_the_checker_ignores_the_main_block_and_resolves_relative_imports(tmp_path):
    root = write_tree(tmp_path, {
        "sfam_lite/__init__.py": "from . import maps\n",
        "sfam_lite/train.py": "from .models import Net\nif __name__ == '__main__':\n    from sfam_lite.cli import main\n",
        "sfam_lite/cli.py": "from . import train\n",
        "sfam_lite/models/__init__.py": "from .net import Net\n",
        "sfam_lite/models/net.py": "from ..maps import upsample\n",
        "sfam_lite/maps.py": "",
        "data_download/__init__.py": "",
    })
    graph = import_graph(root)
    assert graph == {"sfam_lite": {"sfam_lite.maps"}, "sfam_lite.train": {"sfam_lite.models"},
                     "sfam_lite.cli": {"sfam_lite.train"}, "sfam_lite.models": {"sfam_lite.models.net"},
                     "sfam_lite.models.net": {"sfam_lite.maps"}, "sfam_lite.maps": set(), "data_download": set()}
    assert cycles(graph, "sfam_lite") == []
    (root / "sfam_lite/maps.py").write_text("def upsample():\n    from .cli import main\n")
    assert [describe(c) for c in cycles(import_graph(root), "sfam_lite")] == [
        "sfam_lite.cli → sfam_lite.train → sfam_lite.models → sfam_lite.models.net → sfam_lite.maps → sfam_lite.cli"]


def test_the_checker_reports_the_data_package_importing_sfam_lite(tmp_path):
    root = write_tree(tmp_path, {
        "sfam_lite/__init__.py": "",
        "sfam_lite/controls.py": "from data_download import synthetic\n",
        "sfam_lite/localization.py": "",
        "data_download/__init__.py": "\"\"\"Mentions sfam_lite.localization in a docstring only.\"\"\"\n",
        "data_download/synthetic.py": "import numpy\n",
        "data_download/boxes.py": "def f():\n    from sfam_lite.localization import iou\n",
        "data_download/cub.py": "import sfam_lite\n",
    })
    graph = import_graph(root)
    assert forbidden_imports(graph, "data_download", "sfam_lite") == [
        ("data_download.boxes", "sfam_lite.localization"), ("data_download.cub", "sfam_lite")]
    assert forbidden_imports(graph, "sfam_lite", "numpy") == []
