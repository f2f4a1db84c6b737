"""Shared fixtures: tiny synthetic images made once per session, and the real data when present."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import settings

# One numba cache for the whole session and every process it starts (pool workers, dask workers, the CLI run
# by subprocess), set before anything imports numba: pynndescent's and UMAP's cached functions compile once per
# checkout, not once per process. The Makefile exports the same folder; an outer NUMBA_CACHE_DIR wins.
NUMBA_CACHE_DIR = os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "numba")
)
os.makedirs(NUMBA_CACHE_DIR, exist_ok=True)

# The machines are shared and noisy: no per-example deadlines, a modest number of examples.
settings.register_profile("raremine", deadline=None, max_examples=50)
settings.load_profile("raremine")

#: The magnetic-tile development data (MVTec-style folders; never bundled): ``$RAREMINE_MAGNETIC_TILE``,
#: else the team's shared folder beside the checkout (as benchmarks/rare_data.py).
MAGNETIC_TILE = Path(
    os.environ.get("RAREMINE_MAGNETIC_TILE")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "magnetic-tile"
)

_skip_without_magnetic_tile = pytest.mark.skipif(
    not MAGNETIC_TILE.is_dir(),
    reason=f"real data not found at {MAGNETIC_TILE} (development data, not bundled: set $RAREMINE_MAGNETIC_TILE)",
)


def requires_magnetic_tile(test):
    """Mark a test ``realdata`` and skip it when the magnetic-tile data is absent (``-m "not realdata"``: left out)."""
    return pytest.mark.realdata(_skip_without_magnetic_tile(test))


def run_python(
    argv: list[str], *, cwd: Path, env: dict | None = None, timeout: float, **kw
) -> subprocess.CompletedProcess:
    """``python ARGV`` in a subprocess, ``env`` added to this process's, its output captured as text.

    Parameters
    ----------
    argv : list of str
        The arguments after the interpreter (``["-m", "raremine.cli", ...]``).
    cwd : Path
    env : dict or None
        Variables to set or override.
    timeout : float
        Seconds; a hang fails the test.
    **kw
        Other :func:`subprocess.run` options (e.g. ``preexec_fn``).

    Returns
    -------
    subprocess.CompletedProcess
    """
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def make_texture(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A smooth random texture, uint8."""
    noise = rng.normal(128, 30, (size, size)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5), 0, 255).astype(np.uint8)


def add_blob(img: np.ndarray, center: tuple[int, int], radius: int = 4, value: int = 250) -> np.ndarray:
    """Paint a bright disc (the known answer of many tests)."""
    out = img.copy()
    cv2.circle(out, center, radius, int(value), -1)
    return out


def texture_archive(
    root: Path, n: int, seed: int, defects: tuple[int, ...], paint: Callable[[np.ndarray], np.ndarray], name: str
) -> dict:
    """``n`` textures (:func:`make_texture`) as PNGs in ``root``, those numbered in ``defects`` painted.

    Parameters
    ----------
    root : Path
    n : int
    seed : int
        Seeds the textures.
    defects : tuple of int
        The images ``paint`` marks.
    paint : callable
        Draws the defect on a texture, returns the image.
    name : str
        File name pattern, formatted with the image's number.

    Returns
    -------
    dict
        ``root`` (str) and ``truth``: path -> 1 for a defect, 0 otherwise.
    """
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n):
        img = make_texture(rng)
        if i in defects:
            img = paint(img)
        p = root / name.format(i)
        cv2.imwrite(str(p), img)
        truth[str(p)] = int(i in defects)
    return {"root": str(root), "truth": truth}


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> dict:
    """A folder of 40 small PNGs, two of them with a bright blob; returns paths and truth."""
    root = tmp_path_factory.mktemp("tiny_archive")
    return texture_archive(root, 40, 0, (7, 23), lambda img: add_blob(img, (32, 30)), "img_{:03d}.png")


@pytest.fixture
def chdir_tmp(tmp_path, monkeypatch):
    """Run a test inside its own temporary folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def db(indexed, tmp_path) -> Path:
    """A copy of the module's ``indexed`` catalogue, for a test that writes to it."""
    out = tmp_path / "c.db"
    shutil.copy(indexed, out)
    return out


@pytest.fixture(scope="module")
def app_url(catalogue):
    """The review app serving the module's ``catalogue`` (tests/review_browser.py); its URL."""
    from tests import review_browser as rb

    with rb.run_app(catalogue["db"]) as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium for the module's browser tests (tests/review_browser.py)."""
    from tests import review_browser as rb

    with rb.browser() as b:
        yield b
