"""benchmarks/import_graph.py finds circles through function-local imports, and only real ones."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "benchmarks" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
sys.modules["import_graph"] = import_graph  # its dataclass looks itself up there
_spec.loader.exec_module(import_graph)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_a_circle_through_a_function_local_import_is_found(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "def f():\n    from . import c\n",
            "pkg/c.py": "import importlib\n\ndef g():\n    importlib.import_module('pkg.a')\n",
            "pkg/d.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\nfrom pkg.b import f\n"
            ),
            "pkg/sub/__init__.py": "from ..d import *\n",
        },
    )
    modules, edges = import_graph.build_graph(tmp_path, ["pkg"])
    assert "pkg.sub" in modules and "pkg.a" in modules
    arrows = {(e.src, e.dst, e.local) for e in edges}
    assert ("pkg.b", "pkg.c", True) in arrows and ("pkg.c", "pkg.a", True) in arrows
    assert ("pkg.d", "pkg.a", False) not in arrows and ("pkg.d", "pkg.b", False) in arrows  # TYPE_CHECKING left out
    assert ("pkg.sub", "pkg.d", False) in arrows  # relative import from a sub-package
    assert import_graph.strongly_connected(modules, edges) == [["pkg.a", "pkg.b", "pkg.c"]]
    text, n = import_graph.report(modules, edges)
    assert n == 1 and "pkg/b.py:2, local" in text
    assert import_graph.main(["pkg", "--root", str(tmp_path), "--max-cycles", "0"]) == 1
    assert import_graph.main(["pkg", "--root", str(tmp_path), "--max-cycles", "1"]) == 0


def test_the_tree_builds_a_graph():
    modules, edges = import_graph.build_graph()
    expected = {"mining.config", "mining.configfile", "synthesis.config", "raremine.cli", "raremine.app", "app"}
    assert expected <= set(modules)
    arrows = {(e.src, e.dst) for e in edges}
    assert ("synthesis.config", "mining.configfile") in arrows and ("mining.configfile", "mining.config") not in arrows


def test_synthesis_reaches_mining_only_through_the_config_machinery():
    """``synthesis/`` imports nothing from ``mining/`` but :mod:`mining.configfile`, which imports no module of ours."""
    _, edges = import_graph.build_graph()
    into_mining = {e.dst for e in edges if e.src.startswith("synthesis") and e.dst.startswith("mining")}
    assert into_mining <= {"mining.configfile"}, into_mining
    assert not [e for e in edges if e.src == "mining.configfile"]


def test_an_import_running_back_up_the_floors_is_found(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": 'from mining._lazy import lazy_exports\n_EXPORTS = """\nlow: f\n"""\n',
            "pkg/low.py": "def f():\n    from pkg import high\n",  # up, inside a function
            "pkg/high.py": "from pkg import low\n",  # down: allowed
            "pkg/side.py": "import pkg.low\n",  # on no floor: the package's own floor is "=pkg"
        },
    )
    layers = (("low", ("=pkg", "pkg.low")), ("high", ("pkg.high",)))
    modules, edges = import_graph.build_graph(tmp_path, ["pkg"])
    assert ("pkg", "pkg.low", True) in {(e.src, e.dst, e.local) for e in edges}  # the lazy face's module
    assert import_graph.layer_of("pkg.high", layers) == 1 and import_graph.layer_of("pkg.side", layers) is None
    up = import_graph.upward(edges, layers)
    assert [(e.src, e.dst, e.local) for e in up] == [("pkg.low", "pkg.high", True)]
    text, n = import_graph.layer_report(modules, edges, layers)
    assert n == 1 and "pkg/low.py:2, local" in text and "modules on no floor: pkg.side" in text


def test_the_tree_has_no_circles_and_no_import_running_back_up():
    """The loop's floors (benchmarks/import_graph.py LAYERS) hold: every import goes down or sideways."""
    modules, edges = import_graph.build_graph()
    assert import_graph.strongly_connected(modules, edges) == []
    assert [f"{e.src} -> {e.dst} ({e.path}:{e.line})" for e in import_graph.upward(edges)] == []
    unplaced = [m for m in modules if import_graph.layer_of(m) is None]
    assert unplaced == [], unplaced
    assert import_graph.main(["--max-cycles", "0", "--max-upward", "0"]) == 0
