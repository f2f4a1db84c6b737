"""Lazy public faces for the sub-packages of :mod:`mining` (PEP 562).

A sub-package's ``__init__`` names what it offers and the module each name
lives in; the module is imported the first time one of its names is asked
for. ``from mining.models import PixelModel`` thus costs the pixel model's
imports only, not torch's (the backbone), and a worker that imports
``mining.catalogue.store`` does not load the label formats.

The table is text, one module a line: ``module: name name ...``; a line that
starts with white space goes on with the module above.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def parse_table(table: str) -> dict[str, str]:
    """``"store: Store migrate\\nindex: index_archive"`` -> ``{"Store": "store", "migrate": "store", ...}``.

    Parameters
    ----------
    table : str
        One module a line, ``module: name name ...``; an indented line goes on
        with the module above.

    Returns
    -------
    dict of str to str
        Public name -> module.
    """
    exports: dict[str, str] = {}
    module = None
    for line in table.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            module, _, line = line.partition(":")
            module = module.strip()
        if module is None:
            raise ValueError(f"a name before any module in the table: {line!r}")
        for name in line.split():
            if name in exports:
                raise ValueError(f"{name!r} named twice (modules {exports[name]!r} and {module!r})")
            exports[name] = module
    return exports


def lazy_exports(package: str, table: str) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for a package whose names live in its modules.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    table : str
        Which module defines which public name (see :func:`parse_table`).

    Returns
    -------
    getattr : callable
        The module-level ``__getattr__``: imports the name's module, returns the name.
    dir : callable
        The module-level ``__dir__``: the exported names.
    all : list of str
        The exported names, sorted.
    """
    exports = parse_table(table)

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
