"""Where the benchmarks find what is not in this repository: the magnetic-tile data and the archive builder.

The magnetic-tile data set (MVTec-style folder layout: one folder per class,
``MT_Free`` for the normal tiles, images with their ``*.png`` masks beside
them) is development data and never bundled. Point at it with
``$RAREMINE_MAGNETIC_TILE`` (a benchmark's ``--data`` / ``--root`` option, where
it has one, wins). The rare archives the benchmarks mine are drawn from it by
an archive builder script (``make_rare_archive.py``, kept with the data, not
in this repository): ``$RAREMINE_ARCHIVE_TOOL``.

Unset, both default to the team's shared folder beside the checkout, so the
measurements in ``docs/benchmarks/`` rerun as they were taken. A benchmark
without the data says so and measures nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = "RAREMINE_MAGNETIC_TILE"
TOOL_ENV = "RAREMINE_ARCHIVE_TOOL"


def beside_checkout(*parts: str) -> Path:
    """``shared/<parts>`` beside the checkout (a git worktree under ``wt/NAME``: two levels up), found or not."""
    for base in (REPO.parent, REPO.parent.parent):
        if (base / "shared").is_dir():
            return base.joinpath("shared", *parts)
    return REPO.parent.joinpath("shared", *parts)


#: The magnetic-tile data set: ``$RAREMINE_MAGNETIC_TILE``, else the shared folder beside the checkout.
MAGNETIC_TILE = Path(os.environ.get(DATA_ENV) or beside_checkout("data", "magnetic-tile"))
#: The archive builder: ``$RAREMINE_ARCHIVE_TOOL``, else the shared folder beside the checkout.
ARCHIVE_TOOL = Path(os.environ.get(TOOL_ENV) or beside_checkout("tools", "make_rare_archive.py"))


def build_rare_archive(
    out: str | os.PathLike, category: str, *args: object, root: str | os.PathLike | None = None, **run
) -> subprocess.CompletedProcess:
    """Draw a rare archive: ``make_rare_archive.py mt OUT --root DATA --category C ARGS...``.

    Parameters
    ----------
    out : path
        The archive's folder (``archive/``, ``truth.csv``, ``truth.txt``).
    category : str
        The magnetic-tile defect class.
    *args : object
        More options of the builder (``"--seed", 0``...), as strings.
    root : path, optional
        The magnetic-tile data (default :data:`MAGNETIC_TILE`).
    **run
        Passed to :func:`subprocess.run` (``capture_output=True``...); the builder must succeed.

    Returns
    -------
    subprocess.CompletedProcess
    """
    data = MAGNETIC_TILE if root is None else root
    cmd = [sys.executable, str(ARCHIVE_TOOL), "mt", str(out), "--root", str(data), "--category", category]
    return subprocess.run([*cmd, *map(str, args)], check=True, **run)
