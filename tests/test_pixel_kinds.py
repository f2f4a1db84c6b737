"""benchmarks/pixel_kinds.py: the synthetic archive of another kind and its separate training set (fast)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_build_kind_demo_texture_keeps_training_out_of_the_archive(tmp_path):
    import pixel_kinds

    folder = pixel_kinds.build_kind(tmp_path, "demo", "spots", seed=3, images=6, defects=2, bits=16, strength="demo")
    with open(folder / "truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and sum(r["label"] == "1" for r in rows) == 2
    for r in rows:
        img = cv2.imread(r["path"], cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint16 and img.shape == (128, 128)
        if r["label"] == "1":
            assert (cv2.imread(r["mask"], cv2.IMREAD_GRAYSCALE) > 0).any()
    with open(folder / "source.csv") as a, open(folder / "train-source.csv") as b:
        archive_src = {r["path"] for r in csv.DictReader(a)}
        train_src = {r["path"] for r in csv.DictReader(b)}
    assert len(archive_src) == 6 and len(train_src) == 8 and not archive_src & train_src
    labels = sorted((folder / "train" / "labels").glob("*.png"))
    assert len(labels) == 8 and len(list((folder / "train" / "images").glob("*.png"))) == 8
    classes = [set(np.unique(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)).tolist()) for p in labels]
    assert sum(c == {1, 2} for c in classes) == 5 and sum(c == {1} for c in classes) == 3
    # built once: a second call reuses the folder
    assert pixel_kinds.build_kind(tmp_path, "demo", "spots", 3, 6, 2, 16, "demo") == folder
