"""Test-only scorers for the batch-mining tests, and a ``raremine`` entry point that knows them.

``python tests/batch_helpers.py mine --db ...`` behaves like ``raremine mine``
with three more scorers registered:

- ``slow``: the contrast scorer, sleeping ``RAREMINE_TEST_DELAY`` seconds per image
  (so a test can kill the job in the middle);
- ``flaky``: the contrast scorer, raising on constant images;
- ``dying``: the contrast scorer, ending its worker process (``os._exit``) on
  constant images, or once per job when ``marker`` names a file that does not exist yet;
- ``flaky_batch``: like ``flaky``, with a ``score_batch`` that raises for a whole
  batch holding a constant image (as a network pass over a bad batch would) and
  records each batch's size in ``batches`` (seen in-process only).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from mining.scorers import SCORERS
from mining.scorers.contrast import ContrastScorer


class SlowScorer(ContrastScorer):
    """Contrast scores, slowly."""

    name = "slow"

    def score_image(self, image):
        time.sleep(float(os.environ.get("RAREMINE_TEST_DELAY", "0")))
        return super().score_image(image)


class FlakyScorer(ContrastScorer):
    """Contrast scores; raises on a constant image."""

    name = "flaky"

    def score_image(self, image):
        if np.ptp(image) == 0:
            raise ValueError("constant image, nothing to score")
        return super().score_image(image)


class BatchFlakyScorer(FlakyScorer):
    """``flaky`` with a batch method that fails for the whole batch."""

    name = "flaky_batch"

    def __init__(self, **kw):
        super().__init__(**kw)
        self._batches: list[int] = []

    def score_batch(self, images):
        self._batches.append(len(images))
        if any(np.ptp(im) == 0 for im in images):
            raise ValueError("constant image in the batch")
        return [ContrastScorer.score_image(self, im) for im in images]


class DyingScorer(ContrastScorer):
    """Contrast scores; kills its worker on a constant image, or once when ``marker`` does not exist."""

    name = "dying"

    def __init__(self, *, marker: str | None = None, **kw):
        super().__init__(**kw)
        self.marker = marker

    def score_image(self, image):
        if self.marker is not None and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(3)
        if np.ptp(image) == 0:
            os._exit(4)
        return super().score_image(image)


# -- for the tests that use them --------------------------------------------------------
HELPER = Path(__file__).resolve()


def noise_archive(root: Path, n: int, seed: int, *, constant: int | None = None) -> Path:
    """``n`` 32x32 noise PNGs ``img_000.png``, ... in ``root`` (image ``constant`` flat grey); return ``root``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.full((32, 32), 77, np.uint8) if i == constant else rng.integers(0, 255, (32, 32), dtype=np.uint8)
        cv2.imwrite(str(root / f"img_{i:03d}.png"), img)
    return root


def indexed_catalogue(archive: Path, folder: Path) -> Path:
    """A catalogue ``folder/base.db`` of ``archive``, indexed once (tests copy it)."""
    from mining.catalogue.index import index_archive
    from mining.catalogue.store import Store

    db = folder / "base.db"
    with Store(db) as store:
        index_archive(store, [str(archive)])
    return db


def scores_of(db: Path, scorer: str = "contrast") -> dict[int, float]:
    """``image_id -> score`` of one scorer's whole-image scores in a catalogue."""
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT image_id, score FROM scores WHERE scorer = ? AND tile = -1", (scorer,)))
    finally:
        con.close()


def start_job(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """``raremine`` (with the test scorers) started in a subprocess of its own session, its output piped."""
    return subprocess.Popen(
        [sys.executable, str(HELPER), *args],
        cwd=HELPER.parents[1],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kw,
    )


def register() -> None:
    """Add the test scorers to the registry of this process."""
    for cls in (SlowScorer, FlakyScorer, BatchFlakyScorer, DyingScorer):
        SCORERS[cls.name] = f"tests.batch_helpers:{cls.__name__}"


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests import batch_helpers

    batch_helpers.register()
    from raremine.cli import main

    main()
