"""The package boundaries, checked from the source: no import cycles, no upward imports.

Layers, lowest first: ``storage`` < ``engine`` < ``web``; a package imports only from its own
layer or below. ``bench`` may import all three and nothing imports it; ``widget`` imports
nothing of ours and only ``web`` imports it (for its asset directory).
The graph is built with ``ast`` from every ``.py`` file, so imports inside functions and inside
``if TYPE_CHECKING:`` blocks count like any other: a cycle hidden in a function body or a type
hint is still two modules that cannot be understood (or split) one without the other.

Across packages, a module is used through its package's ``__init__``. The imports that still
reach past it are listed in ``REACHES_INSIDE`` with the reason; the list can only shrink (a new
one fails, and so does an entry that is no longer needed).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = {"storage": 0, "engine": 1, "web": 2, "bench": 3}
PACKAGES = (*LAYERS, "widget")

# Cross-package imports of a module other than the package's ``__init__``, as
# "importer -> imported". Each group says why it is still allowed; remove entries as the
# public surfaces grow. Do not add to it: export the name from the package's __init__ instead.
REACHES_INSIDE = frozenset(
    {
        # The root error lives in storage (the lowest layer); storage/__init__ is being changed
        # by the storage encryption branch, so exporting it from there waits for that merge.
        "engine.errors -> storage.errors",
        # Operator commands (migrate, backup, restore, export) are not part of the Storage
        # interface, and storage/__init__ cannot import them (they import storage itself).
        "web.storage_commands -> storage.commands",
        # Benches measure internals on purpose: the storage bench times the SQL layer below the
        # interface, the routing bench drives a visitor actor without a web layer.
        "bench.routing_bench -> engine.visitor",
        "bench.storage_bench -> storage._base",
        "bench.storage_bench -> storage._records",
        "bench.storage_bench -> storage._sql",
        "bench.storage_bench -> storage.crypto",  # plaintext and sealed rows, side by side
    }
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    return {
        module_name(p): p
        for top in PACKAGES
        for p in sorted((REPO / top).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def imported(path: Path, mod: str, known: set[str]) -> Iterator[str]:
    """Every project module ``path`` imports, anywhere in the file (functions included)."""
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            # ``from engine import conversation`` names a module, not a name of the package
            targets = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            targets = targets or [target]
        else:
            continue
        for target in targets:
            # ``import engine.api.x`` resolves to the longest known prefix
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != mod:
                yield target


def import_graph() -> dict[str, set[str]]:
    files = source_files()
    known = set(files)
    return {mod: set(imported(path, mod, known)) for mod, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        comp.append(member)
                        if member == node:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def top(mod: str) -> str:
    return mod.partition(".")[0]


def test_the_graph_sees_imports_inside_functions_and_type_checking_blocks(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from engine import codec\n"
        "if TYPE_CHECKING:\n"
        "    from engine.api import ChatEngine\n"
        "def f() -> None:\n"
        "    from storage.api import Storage\n"
        "    import web.ws\n"
        "    from . import helper\n"
    )
    known = {"engine", "engine.api", "engine.codec", "storage.api", "web.ws", "engine.helper"}
    found = set(imported(source, "engine.mod", known))
    assert found == {"engine.codec", "engine.api", "storage.api", "web.ws", "engine.helper"}
    assert len(import_graph()) > 100


def test_no_module_imports_in_a_circle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def allowed(mod: str, dep: str) -> bool:
    """May ``mod`` import ``dep``? Downwards through the layers; ``widget`` is the visitor's
    JavaScript app and its Python package only names its asset directory for ``web.pages``."""
    if top(mod) == top(dep):
        return True
    if top(dep) == "widget":
        return top(mod) == "web"
    return top(mod) != "widget" and LAYERS[top(dep)] < LAYERS[top(mod)]


def test_packages_import_only_downwards() -> None:
    upward = sorted(
        f"{mod} -> {dep}"
        for mod, deps in import_graph().items()
        for dep in deps
        if not allowed(mod, dep)
    )
    assert not upward, "upward imports (storage < engine < web):\n" + "\n".join(upward)


def test_other_packages_are_used_through_their_init() -> None:
    inside = {
        f"{mod} -> {dep}"
        for mod, deps in import_graph().items()
        for dep in deps
        if top(dep) != top(mod) and dep != top(dep)
    }
    new = sorted(inside - REACHES_INSIDE)
    gone = sorted(REACHES_INSIDE - inside)
    assert not new, "import from the package's __init__ instead:\n" + "\n".join(new)
    assert not gone, "no longer needed, remove from REACHES_INSIDE:\n" + "\n".join(gone)
