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
