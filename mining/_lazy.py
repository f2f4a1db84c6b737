"""Lazy public faces for the sub-packages of :mod:`mining` (PEP 562).

A sub-package's ``__init__`` names what it offers and the module each name
lives in; the module is imported the first time one of its names is asked
for. ``from mining.models import PixelModel`` thus costs the pixel model's
imports only, not torch's (the backbone), and a worker that imports
``mining.catalogue.store`` does not load the label formats.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose names live in its modules.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : mapping of str to str
        Public name -> the module (relative to ``package``) that defines it.

    Returns
    -------
    getattr : callable
        The module-level ``__getattr__``: imports the name's module, returns the name.
    dir : callable
        The module-level ``__dir__``: the package's names and the exported ones.
    """

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(set(exports))

    return __getattr__, __dir__
