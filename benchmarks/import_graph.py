"""The import graph of raremine's own modules, function-local imports included, and its circles.

Reads the source with :mod:`ast` (nothing is imported), so an import inside a
function counts as much as one at the top of a file: it runs the first time
the function does, and a circle through it is a circle. Imports under
``if TYPE_CHECKING:`` are left out (they never run), and so is the implicit
import of a module's parent package. ``importlib.import_module("literal")``
counts as an import of that module, and so does every module a lazy public face
names (the text table ``_EXPORTS``, ``module: name ...`` a line, in a package's ``__init__``, see
``mining/_lazy.py``).

Prints every strongly connected component of more than one module (a circle:
each module in it reaches every other), the arrows inside it with file and
line (``local`` marks a function-local import), and the count.

Then the imports that run back up the loop's order (:data:`LAYERS`): the
stages of ``mining/`` from the bottom (io, tiling, metrics; the catalogue and
the models; the scorers; ranking and the mining job; review; learning; the
demo) to the shells (``raremine/``, ``app.py``) on top. A module may import
its own floor and the floors below it; an arrow to a floor above is an
upward import and is listed with file and line. Modules on no floor are named.

Usage::

    python benchmarks/import_graph.py              # mining/, synthesis/, raremine/, app.py
    python benchmarks/import_graph.py --max-cycles 0   # exit 1 when there are more circles than that
    python benchmarks/import_graph.py --edges      # every arrow, one a line
    python benchmarks/import_graph.py --max-upward 0   # exit 1 when any import runs back up
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCES = ("mining", "synthesis", "raremine", "app.py")

#: The loop's floors, bottom first: (name, module prefixes). A module lies on the floor of
#: its longest matching prefix (the module itself or a module inside it; ``=name``: that
#: module only); it may import its own floor and those below.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base: io, formats, tiling, metrics, config files; synthesis",
        (
            "=mining",
            "mining._lazy",
            "mining._versions",
            "mining.io",
            "mining.formats",
            "mining.tiling",
            "mining.metrics",
            "mining.configfile",
            "synthesis",
        ),
    ),
    ("catalogue and models", ("mining.catalogue", "mining.models")),
    ("scorers", ("mining.scorers",)),
    ("ranking, the mining job, the config", ("mining.ranking", "mining.job", "mining.config")),
    ("review", ("mining.review",)),
    ("learning", ("mining.learning",)),
    ("demo", ("mining.demo",)),
    ("shells", ("raremine", "app")),
)


@dataclass(frozen=True)
class Edge:
    """One import: ``src`` imports ``dst`` at ``path:line``; ``local`` when inside a function."""

    src: str
    dst: str
    path: str
    line: int
    local: bool


def module_name(path: Path, root: Path) -> str:
    """``mining/scorers/base.py`` -> ``mining.scorers.base``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path, sources: Iterable[str]) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file under the given folders (or the given files)."""
    modules = {}
    for s in sources:
        p = root / s
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            modules[module_name(f, root)] = f
    return modules


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies inside (``mining.job.mine.mine`` -> ``mining.job.mine``)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in known:
            return cand
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, known: set[str], root: Path) -> list[Edge]:
    """The arrows out of one module (to known modules only, itself excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    rel = str(path.relative_to(root))
    edges: list[Edge] = []

    def add(target: str | None, node: ast.AST, local: bool) -> None:
        dst = _resolve(target, known) if target else None
        if dst is not None and dst != module:
            edges.append(Edge(module, dst, rel, node.lineno, local))

    def visit(node: ast.AST, local: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, local)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, local)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            for alias in node.names:  # `from mining import mine` imports the module mining.job.mine
                full = f"{base}.{alias.name}"
                add(full if full in known else base, node, local)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.args[0].value, node, local)
        inner = local or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    if is_package:  # a lazy public face (mining/_lazy.py): _EXPORTS = """module: name name ..."""
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                for line in node.value.value.splitlines():
                    if line.strip() and not line[0].isspace() and ":" in line:
                        add(f"{module}.{line.split(':', 1)[0].strip()}", node, True)
    return list(dict.fromkeys(edges))  # `from m import a, b` is one arrow


def build_graph(root: Path = ROOT, sources: Iterable[str] = DEFAULT_SOURCES) -> tuple[list[str], list[Edge]]:
    """Every module and every import arrow between them.

    Parameters
    ----------
    root : Path
        The repository root (module names are relative to it).
    sources : iterable of str
        Folders and files under ``root``.

    Returns
    -------
    modules : list of str
    edges : list of Edge
    """
    modules = find_modules(root, sources)
    known = set(modules)
    edges = [e for name, path in modules.items() for e in imports_of(name, path, known, root)]
    return sorted(modules), edges


def strongly_connected(nodes: Iterable[str], edges: Iterable[Edge]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node (the circles), each sorted, largest first."""
    graph: dict[str, set[str]] = {n: set() for n in nodes}
    for e in edges:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
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
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    n = stack.pop()
                    on_stack.discard(n)
                    comp.append(n)
                    if n == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out, key=lambda c: (-len(c), c))


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The floor (index into ``layers``) of ``module``: that of its longest matching prefix; None if none."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            exact = prefix.startswith("=")
            prefix = prefix.lstrip("=")
            inside = not exact and module.startswith(prefix + ".")
            if (module == prefix or inside) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def upward(edges: Iterable[Edge], layers=LAYERS) -> list[Edge]:
    """The imports that run back up: from a module to one on a higher floor.

    Parameters
    ----------
    edges : iterable of Edge
    layers : sequence of (str, tuple of str)
        The floors, bottom first (default :data:`LAYERS`).

    Returns
    -------
    list of Edge
        Sorted by file and line.
    """
    out = []
    for e in edges:
        a, b = layer_of(e.src, layers), layer_of(e.dst, layers)
        if a is not None and b is not None and b > a:
            out.append(e)
    return sorted(out, key=lambda e: (e.path, e.line))


def report(modules: list[str], edges: list[Edge], *, show_edges: bool = False) -> tuple[str, int]:
    """The printed report and the number of circles (:func:`layer_report` gives the upward imports)."""
    sccs = strongly_connected(modules, edges)
    lines = [f"{len(modules)} modules, {len({(e.src, e.dst) for e in edges})} arrows "]
    lines[0] += f"({sum(e.local for e in edges)} of {len(edges)} import statements inside functions)"
    if show_edges:
        lines += [f"  {e.src} -> {e.dst}  ({e.path}:{e.line}{', local' if e.local else ''})" for e in edges]
    for i, comp in enumerate(sccs, 1):
        members = set(comp)
        lines.append(f"circle {i}: {len(comp)} modules: {', '.join(comp)}")
        for e in sorted(edges, key=lambda e: (e.src, e.dst, e.line)):
            if e.src in members and e.dst in members:
                lines.append(f"    {e.src} -> {e.dst}  ({e.path}:{e.line}{', local' if e.local else ''})")
    lines.append(f"circles (strongly connected components of more than one module): {len(sccs)}")
    return "\n".join(lines), len(sccs)


def layer_report(modules: list[str], edges: list[Edge], layers=LAYERS) -> tuple[str, int]:
    """The upward imports and the modules on no floor, printed; and the number of upward imports."""
    up = upward(edges, layers)
    lines = [f"floors, bottom first: {' < '.join(name for name, _ in layers)}"]
    for e in up:
        src, dst = layers[layer_of(e.src, layers)][0], layers[layer_of(e.dst, layers)][0]
        lines.append(f"  up: {e.src} -> {e.dst}  ({e.path}:{e.line}{', local' if e.local else ''}; {src} -> {dst})")
    unplaced = [m for m in modules if layer_of(m, layers) is None]
    if unplaced:
        lines.append(f"modules on no floor: {', '.join(unplaced)}")
    lines.append(f"imports running back up the floors: {len(up)}")
    return "\n".join(lines), len(up)


def main(argv: list[str] | None = None) -> int:
    """Print the report; exit 1 when the circles exceed ``--max-cycles`` or the upward imports ``--max-upward``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="*", default=list(DEFAULT_SOURCES), help="folders and files under the root")
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--max-cycles", type=int, default=None, help="exit 1 when there are more circles than this")
    ap.add_argument("--max-upward", type=int, default=None, help="exit 1 when more imports than this run back up")
    ap.add_argument("--edges", action="store_true", help="print every arrow")
    args = ap.parse_args(argv)
    modules, edges = build_graph(args.root, args.sources)
    text, n = report(modules, edges, show_edges=args.edges)
    print(text)
    up_text, n_up = layer_report(modules, edges)
    print(up_text)
    too_many = args.max_cycles is not None and n > args.max_cycles
    too_many |= args.max_upward is not None and n_up > args.max_upward
    return 1 if too_many else 0


if __name__ == "__main__":
    sys.exit(main())
