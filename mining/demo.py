"""The demo: a small rare-event archive built on the fly, mined and ranked end to end.

The archive is made of crops of the textures bundled with scikit-image
(brick, gravel, grass) under varied lighting; about 1 % of the images carry
a synthetic defect (a dark or bright spot, or a thin scratch, made by
:mod:`synthesis.procedural`) whose truth and mask are kept in ``truth.csv``. Nothing is downloaded.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mining.io import read_image
from mining.learning.pixel_fit import fit_pixel
from synthesis.atomic import atomic_write

logger = logging.getLogger(__name__)

TEXTURES = ("brick", "gravel", "grass")


def _texture(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)().astype(np.float32)


def _lighting(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = crop.shape
    gain = rng.uniform(0.7, 1.25)
    offset = rng.uniform(-25, 25)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * gx / w + np.sin(angle) * gy / h) * rng.uniform(0, 40)
    return crop * gain + offset + ramp


def _add_defect(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """A dark or bright spot or a thin scratch from :mod:`synthesis.procedural`; mask = exactly the changed pixels."""
    from synthesis.procedural import scratch, spots

    kind = str(rng.choice(["spot", "scratch"]))
    unit = np.clip(img, 0, 255).astype(np.float32) / 255.0
    if kind == "spot":
        out, mask = spots(
            unit, rng=rng, count=(1, 1), radius=(4.0, 8.0), contrast=(0.7, 0.95), texture=0.15, margin=0.15
        )
    else:
        out, mask = scratch(unit, rng=rng, length=(0.14, 0.28), width=(2.5, 3.5), depth=(0.55, 0.8), wiggle=0.03)
    return out * 255.0, mask.astype(np.uint8), kind


def build_demo_archive(
    out_dir: str | os.PathLike, *, n_images: int = 400, rate: float = 0.01, size: int = 128, seed: int = 0
) -> str:
    """Write a demo archive of texture crops, a few with a synthetic defect.

    Parameters
    ----------
    out_dir : path
        Gets ``archive/*.png``, ``masks/*.png`` (for the defective images) and
        ``truth.csv`` (``path,label,category,mask``).
    n_images : int, default=400
    rate : float, default=0.01
        Fraction of images with a defect (at least one).
    size : int, default=128
        Side of each crop in pixels.
    seed : int, default=0

    Returns
    -------
    str
        Path of ``truth.csv``.
    """
    if not 0 < rate < 1:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    if n_images < 2:
        raise ValueError(f"n_images must be >= 2, got {n_images}")
    rng = np.random.default_rng(seed)
    textures = {n: _texture(n) for n in TEXTURES}
    n_defect = max(1, round(rate * n_images))
    defective = set(rng.choice(n_images, n_defect, replace=False).tolist())
    archive = os.path.join(out_dir, "archive")
    masks = os.path.join(out_dir, "masks")
    os.makedirs(archive, exist_ok=True)
    os.makedirs(masks, exist_ok=True)
    rows = []
    for i in range(n_images):
        name = TEXTURES[i % len(TEXTURES)]
        tex = textures[name]
        y, x = rng.integers(0, tex.shape[0] - size), rng.integers(0, tex.shape[1] - size)
        img = _lighting(tex[y : y + size, x : x + size], rng)
        path = os.path.abspath(os.path.join(archive, f"{name}_{i:05d}.png"))
        mask_path, category = "", ""
        if i in defective:
            img, mask, category = _add_defect(img, rng)
            mask_path = os.path.abspath(os.path.join(masks, f"{name}_{i:05d}.png"))
            cv2.imwrite(mask_path, mask * 255)
        cv2.imwrite(path, np.clip(img, 0, 255).astype(np.uint8))
        rows.append((path, int(i in defective), category, mask_path))
    truth = os.path.join(out_dir, "truth.csv")
    with atomic_write(truth, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "category", "mask"])
        w.writerows(rows)
    logger.info("demo archive: %d images, %d defective, in %s", n_images, n_defect, archive)
    return truth


@dataclass
class DemoResult:
    """What the demo produced."""

    db: str
    truth: str
    round: int
    top: list[dict]
    n_defects: int
    found_in_top: int


def read_truth(path: str | os.PathLike) -> dict[str, dict]:
    """Read a truth CSV (``path,label[,category,mask]``) into path -> row."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"truth file {path!r} lacks columns {sorted(missing)}; needs path,label")
        return {os.path.abspath(r["path"]): r for r in reader}


def run_demo(
    out_dir: str | os.PathLike,
    *,
    n_images: int = 400,
    n_top: int = 20,
    seed: int = 0,
    workers: int = 2,
    progress: Callable[[str, int, int], None] | None = None,
) -> DemoResult:
    """Build the demo archive, index it, mine it, rank it.

    Parameters
    ----------
    out_dir : path
        Working folder (archive, catalogue ``catalogue.db``, maps).
    n_images : int, default=400
    n_top : int, default=20
        Candidates in the first round.
    seed : int, default=0
    workers : int, default=2
    progress : callable, optional
        Called as ``progress(stage, done, total)`` while the archive is indexed
        (stage ``"index"``) and mined (``"mine"``).

    Returns
    -------
    DemoResult
    """
    from mining.catalogue.index import index_archive
    from mining.catalogue.store import Store
    from mining.config import load_config, scorer_params
    from mining.job.mine import mine
    from mining.ranking.rank import rank
    from mining.scorers import get_scorer, resolve_scorers

    out_dir = os.path.abspath(os.fspath(out_dir))
    truth_path = build_demo_archive(out_dir, n_images=n_images, seed=seed)
    truth = read_truth(truth_path)
    db = os.path.join(out_dir, "catalogue.db")
    with Store(db) as store:
        cb = (lambda stage: lambda d, t: progress(stage, d, t)) if progress else (lambda stage: None)
        index_archive(store, [os.path.join(out_dir, "archive")], progress=cb("index"))

        fit_demo_pixel(store, out_dir, seed=seed)  # the pixel scorer, trained on a few labelled demo images
        # the defaults a user gets: every scorer that can run (the pixel model just trained among them)
        # and the default strategy and fusion
        cfg = load_config(None, [])
        names = resolve_scorers(cfg.mine.scorers, store)
        mine(
            store,
            [get_scorer(n, **scorer_params(cfg, n)) for n in names],
            workers=workers,
            backend="process" if workers > 1 else "inline",
            progress=cb("mine"),
        )
        round_ = rank(
            store,
            strategy=cfg.rank.strategy,
            n=n_top,
            weights=cfg.rank.weights,
            primary=cfg.rank.primary,
            fusion=cfg.rank.fusion,
        )
        top = []
        for c in store.candidates(round_):
            t = truth.get(c["path"], {})
            top.append(
                {
                    "rank": c["rank"],
                    "path": c["path"],
                    "score": c["score"],
                    "defect": t.get("label") == "1",
                    "category": t.get("category", ""),
                }
            )
    n_def = sum(1 for r in truth.values() if r["label"] == "1")
    return DemoResult(
        db=db, truth=truth_path, round=round_, top=top, n_defects=n_def, found_in_top=sum(t["defect"] for t in top)
    )


def fit_demo_pixel(store, out_dir: str | os.PathLike, *, n_train: int = 12, seed: int = 0, config=None) -> dict:
    """Train the demo's pixel model on a few labelled demo images kept out of the archive.

    A second, tiny demo archive (``out_dir/pixel-train``, another seed, half of
    its images defective) is written with :func:`mining.demo.build_demo_archive`;
    its masks become label images (1 background, 2 defect) in
    ``pixel-train/labels`` and :func:`fit_pixel` trains and registers the model.

    Parameters
    ----------
    store : mining.catalogue.store.Store
    out_dir : path
        The demo's working folder.
    n_train : int, default=12
        Training images (about half carry a defect).
    seed : int, default=0
        The demo's seed (the training images use ``seed + 1000``).
    config : mining.config.PixelConfig, optional
        Default: XGBoost (60 trees, depth 6) on a balanced 20 000-pixel budget
        with one hard-example round, ilastik bank at sigmas 1-8.

    Returns
    -------
    dict
        As :func:`fit_pixel`.
    """

    folder = os.path.join(os.fspath(out_dir), "pixel-train")
    truth = read_truth(build_demo_archive(folder, n_images=max(2, n_train), rate=0.5, seed=seed + 1000))
    labels = os.path.join(folder, "labels")
    os.makedirs(labels, exist_ok=True)
    for path, row in truth.items():
        img = read_image(path)
        lab = np.ones(img.shape[:2], np.uint8)
        if row.get("mask"):
            lab[read_image(row["mask"]) > 0] = 2
        cv2.imwrite(os.path.join(labels, Path(path).stem + ".png"), lab)
    if config is None:
        from mining.config import PixelConfig

        # few, small images with tiny defects: balanced classes and a quick XGBoost
        config = PixelConfig(
            tune=False,
            method="xgboost",
            n_estimators=60,
            max_depth=6,
            sampling="balanced",
            class_weight="balanced",
            hard_rounds=1,
            budget=20_000,
            features={"sigmas": [1.0, 2.0, 4.0, 8.0]},
        )
    return fit_pixel(store, os.path.join(folder, "archive"), labels, config)


# -- maps and statistics ----------------------------------------------------------------------------
