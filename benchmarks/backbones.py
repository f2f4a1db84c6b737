"""Which pretrained backbone to ship: accuracy of the no-label score and CPU milliseconds per image.

For each network of :data:`mining.models.backbone.ARCHS` whose weights package is
installed, the ``backbone`` scorer's own code computes the global vector of
every image (:meth:`~mining.scorers.backbone.BackboneScorer.features`: resize
to 224, the arch's default stages average-pooled) and scores it the way its
``finalize`` does (each stage scaled to unit spread, kNN distance, k = 5).
No labels are used by the scores; the truth only measures them: AP and recall
after reviewing 10 % of the archive.

Archives: magnetic tiles built by the archive builder (``$RAREMINE_ARCHIVE_TOOL``)
(MT_Free plus 1 % of one category, seed 0; to keep the run small, 400 of
the 949 normal tiles, the same ones in every archive, and all 10 defective
ones: 2.4 % defective), and one archive of another kind:
16-bit brushed-metal textures made here (perlin noise and streaks along one
axis) with 2 % of them carrying a procedural defect from
:mod:`synthesis.procedural` (scratch, spots, stain), seed 0.

Speed: the same images in batches of 32 (preprocessing included), the
networks interleaved, 5 repeats, median milliseconds per image, with one
torch thread and with torch's default thread count.

usage: python benchmarks/backbones.py [--categories Blowhole,Crack,Uneven] [--seed 0] [--work DIR]
       [--normals 400] [--no-synthetic] [--repeats 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.metrics import average_precision_score

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from rare_data import ARCHIVE_TOOL as TOOL  # noqa: E402
from rare_data import MAGNETIC_TILE as DATA  # noqa: E402 (benchmarks/rare_data.py, beside this script)
from rare_data import build_rare_archive  # noqa: E402

from mining.io import read_image  # noqa: E402
from mining.models.backbone import ARCHS, DEFAULT_ARCH, block_channels, packaged_weights  # noqa: E402
from mining.models.outliers import outlier_scores  # noqa: E402
from mining.scorers import get_scorer  # noqa: E402
from mining.scorers.backbone import scale_blocks  # noqa: E402


def tile_archive(category: str, seed: int, work: Path, normals: int) -> list[tuple[str, int]]:
    """(path, is_defect) of the archive the shared tool builds (built once per work folder).

    Every defective image is kept; the normal ones are cut to ``normals`` (0: all), the same
    names in every archive (the smallest hashes of the names), so that the networks see
    each normal tile once for all the archives.
    """
    out = work / f"mt_{category}_{seed}"
    if not (out / "truth.csv").exists():
        build_rare_archive(out, category, "--seed", seed, capture_output=True)
    truth = {p for p in (out / "truth.txt").read_text().split() if p}
    items = [
        (os.path.realpath(p), int(os.path.realpath(p) in truth)) for p in sorted(map(str, (out / "archive").iterdir()))
    ]
    normal = sorted(
        (p for p, t in items if not t), key=lambda p: hashlib.blake2b(os.path.basename(p).encode()).digest()
    )
    keep = set(normal[:normals] if normals else normal)
    return [(p, t) for p, t in items if t or p in keep]


def metal_archive(seed: int, work: Path, normal: int = 294, defective: int = 6) -> list[tuple[str, int]]:
    """16-bit grey brushed-metal textures, ``defective`` of them with a procedural defect."""
    from synthesis.procedural import perlin_noise, simulate

    out = work / f"metal_{seed}"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bad = set(rng.choice(normal + defective, defective, replace=False).tolist())
    kinds = ("scratch", "spots", "stain")
    items = []
    for i in range(normal + defective):
        path = out / f"metal_{i:04d}.png"
        if not path.exists():
            base = 0.45 + 0.12 * perlin_noise((256, 256), (4, 4), rng=rng)
            streaks = cv2.GaussianBlur(rng.normal(0, 1, (256, 256)).astype(np.float32), (0, 0), sigmaX=25, sigmaY=0.7)
            image = np.clip(base + 0.25 * streaks + rng.normal(0, 0.01, (256, 256)), 0, 1)
            if i in bad:
                image, _ = simulate(kinds[len(items) % 3], image, rng=rng)
            cv2.imwrite(str(path), np.round(image * 65535).astype(np.uint16))
        items.append((str(path), int(i in bad)))
    return items


def recall_at(scores: np.ndarray, truth: np.ndarray, frac: float) -> float:
    """Share of the defects among the top ``frac`` of the ranking."""
    top = np.argsort(-scores, kind="stable")[: max(1, round(frac * len(scores)))]
    return float(truth[top].sum() / max(1, truth.sum()))


def vectors(scorer, paths: list[str], cache: dict) -> np.ndarray:
    """Global vectors of ``paths`` (each image computed once per network)."""
    todo = [p for p in paths if p not in cache]
    for s in range(0, len(todo), 32):
        batch = todo[s : s + 32]
        _, glob = scorer.features([read_image(p) for p in batch], patches=False)
        cache.update(zip(batch, glob.numpy(), strict=True))
    return np.stack([cache[p] for p in paths])


def knn_score(scorer, X: np.ndarray) -> np.ndarray:
    """The scorer's ``finalize``: each stage scaled to the same spread, kNN distance (k = 5)."""
    sizes = tuple(block_channels(v, scorer.arch) for v in scorer.global_layers)
    return outlier_scores(scale_blocks(X, sizes), "knn", k=scorer.k, standardize_features=False)


def timing(scorers: dict, images: list[np.ndarray], threads: int, repeats: int) -> dict[str, float]:
    """Median ms per image over ``repeats`` interleaved passes of batches of 32."""
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {a: [] for a in scorers}
    for s in scorers.values():  # warm-up
        s.features(images[:32], patches=False)
    for _ in range(repeats):
        for a, s in scorers.items():
            t0 = time.perf_counter()
            for i in range(0, len(images), 32):
                s.features(images[i : i + 32], patches=False)
            times[a].append(1000 * (time.perf_counter() - t0) / len(images))
    return {a: float(np.median(v)) for a, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--categories", default="Blowhole,Crack,Uneven")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="archives are built here (default: a temporary folder)")
    ap.add_argument("--no-synthetic", action="store_true", help="magnetic tiles only")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--normals", type=int, default=400, help="normal tiles kept per archive (0: all 949)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="raremine-backbones-"))
    default_threads = torch.get_num_threads()

    scorers = {}
    for name, spec in ARCHS.items():
        if packaged_weights(name) is None:
            print(f"skipping {name}: {spec.distribution} is not installed ({spec.install_hint()})")
            continue
        s = get_scorer("backbone", arch=name)
        s.prepare(store=None)
        scorers[name] = s
    if not scorers:
        sys.exit("no backbone weights installed")

    archives: dict[str, list[tuple[str, int]]] = {}
    if DATA.is_dir() and TOOL.is_file():
        for cat in a.categories.split(","):
            archives[f"tiles {cat}"] = tile_archive(cat, a.seed, work, a.normals)
    else:
        print(f"magnetic tiles not found at {DATA}: skipped")
    if not a.no_synthetic:
        archives["metal 16-bit (synthetic)"] = metal_archive(a.seed, work)

    results: dict[tuple[str, str], tuple[float, float]] = {}
    caches: dict[str, dict] = {n: {} for n in scorers}
    torch.set_num_threads(default_threads)
    for label, items in archives.items():
        paths = [p for p, _ in items]
        truth = np.array([t for _, t in items])
        for name, s in scorers.items():
            score = knn_score(s, vectors(s, paths, caches[name]))
            results[label, name] = (average_precision_score(truth, score), recall_at(score, truth, 0.10))
        print(f"{label}: {len(items)} images, {truth.sum()} defective", flush=True)

    first = next(iter(archives.values()))
    images = [read_image(p) for p, _ in first[:64]]
    ms1 = timing(scorers, images, 1, a.repeats)
    msd = timing(scorers, images, default_threads, a.repeats)

    names = list(scorers)
    print()
    print("| archive | " + " | ".join(f"{n} AP | {n} R@10%" for n in names) + " |")
    print("|---|" + "---|---|" * len(names))
    for label in archives:
        cells = " | ".join(f"{results[label, n][0]:.3f} | {results[label, n][1]:.2f}" for n in names)
        print(f"| {label} | {cells} |")
    mean = {n: np.mean([results[label, n] for label in archives], axis=0) for n in names}
    cells = " | ".join(f"**{mean[n][0]:.3f}** | **{mean[n][1]:.2f}**" for n in names)
    print(f"| mean | {cells} |")
    print()
    print(
        f"| backbone | ms/image, 1 thread | ms/image, {default_threads} threads | mean AP | mean R@10% | AP per 10 ms |"
    )
    print("|---|---|---|---|---|---|")
    for n in names:
        default = " (default)" if n == DEFAULT_ARCH else ""
        print(
            f"| {n}{default} | {ms1[n]:.1f} | {msd[n]:.1f} | {mean[n][0]:.3f} | {mean[n][1]:.2f} "
            f"| {10 * mean[n][0] / ms1[n]:.3f} |"
        )


if __name__ == "__main__":
    main()
