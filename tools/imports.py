"""python -m tools.imports: the project's import graph, per package, and the two rules it keeps.

Reads every .py file by AST (nothing is imported, so it runs without torch or JAX) and prints, per
package, the project packages it imports with the modules named, and the libraries. It exits 1,
naming each offence, when

- a package imports a package of its own layer or of a layer above (docs/design.md, "Layers and
  what may import what"); imports inside functions count, since they run too. A test module
  (``test_*.py``, ``conftest.py``) belongs with ``tests`` wherever its folder is (it may use
  ``tests.helpers``, and no package module may import it);
- a side's program imports its own tutorial chapters (``<side>.basics``): the chapters show the
  program's code, so they import it, never the reverse;
- modules of one package import each other in a circle at module level (imports that run when the
  module is imported: inside ``if``/``try`` too, ``TYPE_CHECKING`` included, since such an import
  still says that each module needs the other; imports inside functions do not count).

Exit 0 prints "no circle, no upward import". ``tests/test_import_rules.py`` runs ``problems()``.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# docs/design.md's layers, bottom up: a package may import only the layers below its own. The tools
# sit under the tests, which test them.
LAYERS = (
    ("quickstart_parity_common",),
    ("reference_torch", "jax_impl"),
    ("quickstart_parity_pairs",),
    ("parity", "benchmarks"),
    ("quickstart_parity_guide",),
    ("tools",),
    ("tests",),
)
LAYER = {pkg: n for n, pkgs in enumerate(LAYERS) for pkg in pkgs}
PACKAGES = tuple(pkg for pkgs in LAYERS for pkg in pkgs)
_STDLIB = set(sys.stdlib_module_names)


def imported_roots(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in ``path``, at any depth; relative imports are skipped
    (they stay inside the package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.lineno, node.args[0].value.split(".")[0]))  # importlib.import_module("x")
    return out


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))
            if "__pycache__" not in p.parts}


def _is_test(path: Path) -> bool:
    return path.name.startswith("test_") or path.name == "conftest.py"


def _module_level(tree: ast.Module):
    """The statements that run when the module is imported: the body, into if/try/with, and class
    bodies; not function bodies."""
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While, ast.ClassDef)):
            for name in ("body", "orelse", "finalbody"):
                todo += getattr(node, name, [])
            todo += [s for h in getattr(node, "handlers", []) for s in h.body]


def imports_of(path: Path, modules: dict[str, Path], root: Path = REPO) -> list[tuple[int, str, bool]]:
    """(line, module, at module level) of every import in ``path``: relative imports resolved, and
    ``from pkg import name`` naming ``pkg.name`` where that is a module of the project."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(n) for n in _module_level(tree)}
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            named = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            out += [(node.lineno, t, id(node) in top) for t in (named or [target])]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.lineno, node.args[0].value, False))
    return out


def graph(root: Path = REPO) -> dict[str, list[tuple[int, str, bool]]]:
    """Every project module -> its imports (``imports_of``)."""
    modules = _modules(root)
    return {name: imports_of(path, modules, root) for name, path in modules.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself), each
    as one circle through them (Tarjan, then a path around the component)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is the package's module count: tens
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
            if len(comp) > 1 or v in edges.get(v, ()):
                comps.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    out = []
    for comp in comps:  # a readable circle: from the first module, follow edges inside the component back to it
        members, path = set(comp), [comp[0]]
        while True:
            nxt = sorted(w for w in edges[path[-1]] if w in members)
            step = next((w for w in nxt if w == comp[0] and len(path) > 1), None) or next(
                (w for w in nxt if w not in path), comp[0])
            path.append(step)
            if step == comp[0]:
                break
        out.append(path)
    return out


def problems(root: Path = REPO) -> list[str]:
    """Every upward (or sideways) import between layers and every module-level circle inside a package."""
    g, modules = graph(root), _modules(root)
    bad = []
    for src, imps in sorted(g.items()):
        pkg = "tests" if _is_test(modules[src]) else src.split(".")[0]
        rel = modules[src].relative_to(root).as_posix()
        for line, target, _ in imps:
            tpkg = "tests" if target in modules and _is_test(modules[target]) else target.split(".")[0]
            chapter = f"{pkg}.basics"
            if (pkg != "tests" and (target == chapter or target.startswith(chapter + "."))
                    and not (src == chapter or src.startswith(chapter + "."))):
                bad.append(f"{rel}:{line}: {src} imports its own chapter {target}: the chapter imports the program")
            elif tpkg in LAYER and tpkg != pkg and LAYER[tpkg] >= LAYER[pkg]:
                how = "a layer above" if LAYER[tpkg] > LAYER[pkg] else "its own layer"
                bad.append(f"{rel}:{line}: {src} imports {target}, {how} ({tpkg}: layer {LAYER[tpkg]}, "
                           f"{pkg}: layer {LAYER[pkg]})")
    for pkg in PACKAGES:
        edges: dict[str, set[str]] = defaultdict(set)
        for src, imps in g.items():
            if src.split(".")[0] == pkg:
                edges[src] |= {t for _, t, top in imps if top and t in g and t.split(".")[0] == pkg and t != src}
        bad += [f"{pkg}: module-level import circle {' -> '.join(c)}" for c in _cycles(edges)]
    return bad


def report(root: Path = REPO) -> str:
    """Per package (bottom layer first): the project packages it imports with their modules, and the libraries."""
    g, modules = graph(root), _modules(root)
    lines = []
    for pkg in PACKAGES:
        own = {m: imps for m, imps in g.items() if m.split(".")[0] == pkg}
        project: dict[tuple[bool, str], set[str]] = defaultdict(set)  # (from test modules, package) -> modules
        libraries: set[str] = set()
        inner = 0
        for m, imps in own.items():
            tests = pkg != "tests" and _is_test(modules[m])
            for _, target, _top in imps:
                tpkg = target.split(".")[0]
                if tpkg == pkg:
                    inner += target in g
                elif tpkg in LAYER:
                    project[tests, tpkg].add(target)
                elif (root / f"{tpkg}.py").exists():  # the root's conftest.py: the project's, no library
                    project[tests, tpkg].add(target)
                elif tpkg and tpkg not in _STDLIB and tpkg != "__future__":
                    libraries.add(tpkg)
        lines.append(f"{pkg}  (layer {LAYER[pkg]}: {len(own)} modules, {inner} imports among them)")
        for tests, tpkg in sorted(project, key=lambda k: (k[0], LAYER.get(k[1], len(LAYERS)), k[1])):
            lines.append(f"  {'its test modules ' if tests else ''}-> {tpkg}: {', '.join(sorted(project[tests, tpkg]))}")
        if not any(not tests for tests, _ in project):
            lines.append("  -> no project package")
        lines.append(f"  libraries: {', '.join(sorted(libraries)) or '-'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.imports", description=__doc__.split("\n\n")[0])
    p.parse_args(argv)
    print(report())
    bad = problems()
    for line in bad:
        print(f"error: {line}", file=sys.stderr)
    if not bad:
        print("no circle, no upward import")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
