"""Which MobileNetV2 blocks make the best global vector for the ``backbone`` scorer (magnetic tiles).

The study behind ``backbone.global_layers`` (default 13 and 18). Every
magnetic-tile image is passed through the network once per input size; the
average-pooled maps of several blocks are cached. Then, for the same 15 rare
archives as ``benchmarks/unsupervised_mining.py`` (MT_Free plus 1 % of each
category, seeds 0-2, drawn exactly like the archive builder (``$RAREMINE_ARCHIVE_TOOL``)),
each block combination is scored the way the scorer's ``finalize`` does:
each block scaled to unit spread (:func:`mining.scorers.backbone.scale_blocks`)
and the kNN distance (k = 5). Printed per combination: mean AP, recall after
reviewing 5 % and 10 %, and recall at 10 % per category.

No labels are used by the scores; the labels only measure them. Choosing
the blocks on these archives tunes the default to this data set: the README
says so.

usage: python benchmarks/backbone_layers.py [--sizes 224 320] [--k 5] [--cache benchmarks/results/backbone_layers]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.metrics import average_precision_score

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from rare_data import MAGNETIC_TILE as DATA  # noqa: E402 (benchmarks/rare_data.py, beside this script)

from mining.models.backbone import block_channels, load_mobilenet_v2, preprocess  # noqa: E402
from mining.models.outliers import outlier_scores  # noqa: E402
from mining.scorers.backbone import scale_blocks  # noqa: E402

CATEGORIES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
BLOCKS = (6, 10, 13, 16, 17, 18)
COMBOS = ((18,), (13,), (10,), (13, 18), (10, 13, 18), (13, 17, 18), (13, 16, 17, 18))


def all_images() -> list[tuple[str, str, bool]]:
    """(unique name, path, is_defect) of every image, in the order the shared tool lists them."""
    out = []
    for d in sorted(os.listdir(DATA)):
        if d.startswith("MT_"):
            for f in sorted(os.listdir(DATA / d / "Imgs")):
                if f.endswith(".jpg"):
                    out.append((f"{d}_{f}", str(DATA / d / "Imgs" / f), d != "MT_Free"))
    return out


def archive(
    images: list[tuple[str, str, bool]], category: str, seed: int, rate: float = 0.01
) -> tuple[list, np.ndarray]:
    """Names and labels of one rare archive, drawn like make_rare_archive.py (5 + 3 training images left out)."""
    rng = random.Random(seed)
    items = [t for t in images if not t[2] or t[0].startswith(f"MT_{category}_")]
    normal, defect = [t for t in items if not t[2]], [t for t in items if t[2]]
    rng.shuffle(normal)
    rng.shuffle(defect)
    k = max(1, round(rate * len(normal) / (1 - rate)))
    chosen = normal[3:] + defect[5 : 5 + k]
    return [t[0] for t in chosen], np.array([int(t[2]) for t in chosen])


def pooled_features(weights: str, size: int, cache: Path) -> dict[str, np.ndarray]:
    """Average-pooled maps of BLOCKS for every image at one input size (cached as .npz)."""
    path = cache / f"pooled{size}.npz"
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    images = all_images()
    net = load_mobilenet_v2(weights)
    pooled: dict[int, list] = {b: [] for b in BLOCKS}
    t0 = time.perf_counter()
    for s in range(0, len(images), 32):
        batch = [cv2.imread(p, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255 for _, p, _ in images[s : s + 32]]
        with torch.no_grad():
            maps = net.feature_maps(preprocess(batch, size), BLOCKS)
        for b, m in zip(BLOCKS, maps, strict=True):
            pooled[b].append(m.mean(dim=(2, 3)).numpy())
    print(f"size {size}: features of {len(images)} images in {time.perf_counter() - t0:.0f} s", flush=True)
    out = {"names": np.array([n for n, _, _ in images])} | {f"gap{b}": np.concatenate(v) for b, v in pooled.items()}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def evaluate(feats: dict[str, np.ndarray], combo: tuple[int, ...], k: int) -> tuple[float, float, float, dict]:
    """Mean AP, recall@5 %, recall@10 % over the 15 archives, and recall@10 % per category."""
    images = all_images()
    pos = {n: i for i, n in enumerate(feats["names"].tolist())}
    per_cat: dict[str, list] = {}
    for cat in CATEGORIES:
        for seed in (0, 1, 2):
            names, y = archive(images, cat, seed)
            idx = np.array([pos[n] for n in names])
            X = np.hstack([feats[f"gap{b}"][idx] for b in combo])
            s = outlier_scores(
                scale_blocks(X, tuple(block_channels(b) for b in combo)), "knn", k=k, standardize_features=False
            )
            order = np.argsort(-s, kind="stable")
            r5, r10 = (y[order[: round(f * len(y))]].sum() / y.sum() for f in (0.05, 0.10))
            per_cat.setdefault(cat, []).append((average_precision_score(y, s), r5, r10))
    allv = np.array([v for vs in per_cat.values() for v in vs])
    return allv[:, 0].mean(), allv[:, 1].mean(), allv[:, 2].mean(), {c: np.mean(v, 0)[2] for c, v in per_cat.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--weights", default=None, help="MobileNetV2 state_dict (default: the test package)")
    ap.add_argument("--cache", type=Path, default=HERE / "results" / "backbone_layers")
    a = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"magnetic-tile data not found at {DATA}")
    weights = a.weights
    if weights is None:
        from unsupervised_mining import default_weights

        weights = default_weights()
    if not weights:
        sys.exit("no MobileNetV2 weights: make test-weights, or --weights FILE")
    torch.set_num_threads(os.cpu_count() or 1)
    print("| size | blocks | AP | recall@5% | recall@10% | " + " | ".join(CATEGORIES) + " |")
    print("|---|---|---|---|---|" + "---|" * len(CATEGORIES))
    for size in a.sizes:
        feats = pooled_features(weights, size, a.cache)
        for combo in COMBOS:
            m_ap, r5, r10, cats = evaluate(feats, combo, a.k)
            print(
                f"| {size} | {'+'.join(map(str, combo))} | {m_ap:.3f} | {r5:.2f} | {r10:.2f} | "
                + " | ".join(f"{cats[c]:.2f}" for c in CATEGORIES)
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
