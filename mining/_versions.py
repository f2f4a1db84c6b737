"""Versions of the packages that shape results, recorded with every run."""

from __future__ import annotations

import platform
from importlib import metadata

_PACKAGES = (
    "raremine",
    "numpy",
    "scikit-learn",
    "scikit-image",
    "opencv-python-headless",
    "xgboost",
    "xgboost-cpu",
    "torch",
    "umap-learn",
    "dask",
    "distributed",
)


def package_versions() -> dict[str, str]:
    """Map package name -> installed version (missing packages left out), plus Python's."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
