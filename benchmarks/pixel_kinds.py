"""Pixel-classifier mining on archives of other kinds (issue 20): synthetic defects on other textures.

``pixel_mining.py --auto`` compares ours tuned (``pixel.tune: true``), ours with the fixed
defaults and scikit-image's ``fit_segmenter`` peer on magnetic-tile archives. This script runs
the same three sides (its functions, imported) on archives whose defects are synthetic
(:mod:`synthesis.procedural` through ``synthetic_archive.build``, exact masks) on textures:

- ``demo``: 128 px crops of scikit-image's brick, gravel and grass under varied lighting, drawn as
  ``make demo`` draws them (``mining.demo._texture`` / ``_lighting``), none of them tiles;
- ``tiles``: the magnetic-tile normals (``MT_Free``), a seeded draw.

Per texture, defect kind, bit depth and seed, one seeded pool of ``--images + 8`` normal
images is drawn; the first ``--images`` become the archive (``--defects`` of them get a defect),
the other 8 the training set (5 get a defect of the same kind, drawn the same way, their masks
become labels; 3 stay normal), so no training image is in the archive. ``--bits 16`` writes
16-bit PNGs (values x 257) for both. ``--strength`` picks the defects' settings
(``synthetic_archive.STRENGTHS``: ``subtle``, the default, small and faint; ``demo``, the bolder
spots and scratches of the ``make demo`` archive). Metrics and timings as in ``pixel_mining.py``.

usage: python benchmarks/pixel_kinds.py [--textures demo tiles] [--defect-kinds spots scratch]
       [--seeds 0 1] [--images 300] [--defects 5] [--bits 8] [--strength subtle|demo]
       [--variants tuned fixed] [--no-peer] [--set KEY=VALUE] [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pixel_mining as pm
import synthetic_archive

COLS = ["AP", "R@5%", "R@10%", "train_s", "img_s"]


def normal_pool(work: Path, texture: str, n: int, seed: int) -> list[str]:
    """``n`` normal images of ``texture`` (seeded): paths of existing files (tiles) or of written crops (demo)."""
    rng = np.random.default_rng(seed)
    if texture == "tiles":
        paths = sorted(str(p) for p in (pm.DATA / "MT_Free" / "Imgs").glob("*.jpg"))
        if len(paths) < n:
            raise SystemExit(f"{len(paths)} MT_Free images, need {n}")
        return [paths[i] for i in rng.choice(len(paths), n, replace=False)]
    from mining.demo import TEXTURES, _lighting, _texture

    out = work / f"pool-demo-{seed}-{n}"
    out.mkdir(parents=True, exist_ok=True)
    textures = {name: _texture(name) for name in TEXTURES}
    paths, size = [], 128
    for i in range(n):
        name = TEXTURES[i % len(TEXTURES)]
        tex = textures[name]
        y, x = rng.integers(0, tex.shape[0] - size), rng.integers(0, tex.shape[1] - size)
        img = _lighting(tex[y : y + size, x : x + size], rng)
        path = out / f"{name}_{i:05d}.png"
        cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8))
        paths.append(str(path))
    return paths


def _source_csv(path: Path, images: list[str]) -> str:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows([p, 0] for p in images)
    return str(path)


def build_kind(
    work: Path, texture: str, kind: str, seed: int, images: int, defects: int, bits: int, strength: str = "subtle"
) -> Path:
    """The archive folder (``truth.csv``, ``archive/``, ``masks/``) and its ``train/images`` + ``train/labels``."""
    folder = work / f"{texture}-{kind}-{bits}bit-{strength}-{seed}"
    if (folder / "train" / "labels").is_dir() and (folder / "truth.csv").exists():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    pool = normal_pool(work, texture, images + 8, seed)
    src = _source_csv(folder / "source.csv", pool[:images])
    synthetic_archive.build(src, str(folder), kind, defects=defects, seed=seed, bits=bits, strength=strength)
    tsrc = _source_csv(folder / "train-source.csv", pool[images:])
    tdir = folder / "train-raw"
    synthetic_archive.build(tsrc, str(tdir), kind, defects=5, seed=seed + 1000, bits=bits, strength=strength)
    (folder / "train" / "images").mkdir(parents=True)
    (folder / "train" / "labels").mkdir(parents=True)
    with open(tdir / "truth.csv", newline="") as fh:
        for i, r in enumerate(csv.DictReader(fh)):
            img = cv2.imread(r["path"], cv2.IMREAD_UNCHANGED)
            lab = np.ones(img.shape[:2], np.uint8)
            if r["mask"]:
                lab[cv2.imread(r["mask"], cv2.IMREAD_GRAYSCALE) > 0] = 2
            name = f"train{i}.png"
            shutil.copy(r["path"], folder / "train" / "images" / name)
            cv2.imwrite(str(folder / "train" / "labels" / name), lab)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--textures", nargs="+", default=["demo", "tiles"], choices=["demo", "tiles"])
    ap.add_argument("--defect-kinds", nargs="+", default=["spots", "scratch"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--images", type=int, default=300, help="archive size")
    ap.add_argument("--defects", type=int, default=5, help="defective archive images")
    ap.add_argument("--bits", type=int, default=8, choices=(8, 16))
    ap.add_argument("--strength", default="subtle", choices=sorted(synthetic_archive.STRENGTHS), help="defect settings")
    ap.add_argument("--variants", nargs="+", default=["tuned", "fixed"], choices=sorted(pm.VARIANTS))
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override for ours")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "raremine-pixel-kinds")
    ap.add_argument("--json", type=Path, default=None, help="also write every run's metrics here")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, list[dict]] = {}
    rows = []
    print(f"{'archive':<24} {'seed':>4} {'method':<14} " + " ".join(f"{c:>8}" for c in COLS), flush=True)
    for texture in a.textures:
        for kind in a.defect_kinds:
            for seed in a.seeds:
                folder = build_kind(a.work, texture, kind, seed, a.images, a.defects, a.bits, a.strength)
                truth = pm.read_truth(folder, None, seed)
                runs = {v: pm.run_ours(folder, truth, v, pm.VARIANTS[v] + a.overrides) for v in a.variants}
                if not a.no_peer:
                    runs["skimage-peer"] = pm.run_peer(folder, truth, seed)
                name = f"{texture}-{kind}-{a.bits}bit" + ("" if a.strength == "subtle" else f"-{a.strength}")
                for method, m in runs.items():
                    row = {"archive": name, "seed": seed, "method": method, **{c: m[c] for c in COLS}}
                    rows.append(row)
                    results.setdefault(method, []).append(row)
                    print(f"{name:<24} {seed:>4} {method:<14} " + " ".join(f"{m[c]:>8.3f}" for c in COLS), flush=True)
                if a.json:
                    a.json.write_text(json.dumps(rows, indent=1))
    print(f"\nmeans over every archive ({a.images} images, {a.defects} defective):")
    print(f"| method | {' | '.join(COLS)} | worst R@10% (archive, seed) |")
    print("|---|" + "---|" * (len(COLS) + 1))
    for method, rs in results.items():
        worst = min(rs, key=lambda r: (r["R@10%"], r["AP"]))
        vals = " | ".join(f"{np.mean([r[c] for r in rs]):.3g}" for c in COLS)
        print(f"| {method} | {vals} | {worst['R@10%']:.2f} ({worst['archive']}, {worst['seed']}) |")


if __name__ == "__main__":
    main()
