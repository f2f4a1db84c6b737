"""Defects at their own scale: the ``backbone`` scorer's global kNN and patch scores on archives of several kinds.

Archives (``build``):

- ``mt-Blowhole``, ``mt-Crack``, ``mt-Uneven``: the shared tool ``make_rare_archive.py`` at seed 0
  (MT_Free plus 1 % of the category; 8-bit grey JPEG, 110-630 x 230-400 px), then its 10 defective images
  beside 250 of its normal ones drawn at seed 0 (3.8 %: small enough to run on 2 shared cores).
- ``mosaic``: 100 images of 2 x 4 magnetic tiles (each resized to 400 x 400) stitched into 800 x 1600 grey PNGs; in 4 %
  of them one of the eight tiles is a Blowhole or Crack tile. Larger than ``index.tile_size`` (1024), so
  the indexer cuts every image into two tiles.
- ``mt-Crack-16``: the ``mt-Crack`` archive as 16-bit PNGs (values x 257).
- ``texture``: 200 images, 640 x 480, colour of a smooth random texture (Perlin noise in three channels, a new
  draw per image); 2 % carry a small procedural defect of :mod:`synthesis.procedural` (spots, scratch,
  crack or a small blob, in the grey level of every channel).

Each run (``run``) indexes an archive with the default ``index`` settings, mines it with the ``backbone``
scorer alone (``--set`` overrides its config, e.g. ``backbone.size=320``) in a 2-process pool, and reports
AP and recall after reviewing 10 % for the global kNN score (scorer ``backbone``) and the patch score
(scorer ``patchcore``; for the code before the change, ``backbone``'s ``patch_max`` statistic of a run
with ``backbone.patch_weight=0.5``). An image without a score counts as score 0 (what the review saw).

``speed`` times the scorer in one process with one torch thread (what a mining worker does):
``score_batch`` on 32 images of 256 x 256 and 8 of 500 x 1250, CPU milliseconds per image (best of 3).

usage:
  RAREMINE_BACKBONE_WEIGHTS=... python benchmarks/patch_scale.py build --data /tmp/ps
  RAREMINE_BACKBONE_WEIGHTS=... python benchmarks/patch_scale.py run --data /tmp/ps --archives mt-Crack,mosaic
      [--label after] [--old] [--set backbone.size=320] [--out benchmarks/results/patch_scale]
  RAREMINE_BACKBONE_WEIGHTS=... python benchmarks/patch_scale.py speed [--set ...]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from rare_data import MAGNETIC_TILE as ROOT_MT
from rare_data import build_rare_archive

ARCHIVES = ("mt-Blowhole", "mt-Crack", "mt-Uneven", "mosaic", "mt-Crack-16", "texture")


# -- building the archives -------------------------------------------------------------------------
def _write_truth(out: Path, truth: list[str]) -> None:
    (out / "truth.txt").write_text("\n".join(os.path.realpath(p) for p in truth) + "\n")


def build_mt(data: Path, archive: Path, category: str, normals: int) -> list[str]:
    """The shared tool's archive (seed 0), then ``normals`` of its normal images drawn (seeded) beside every defect."""
    full = data / f"full-mt-{category}"
    if not (full / "truth.txt").exists():
        build_rare_archive(full, category, "--seed", "0", root=ROOT_MT)
    truth = set((full / "truth.txt").read_text().split())
    files = sorted((full / "archive").iterdir())
    normal = [p for p in files if os.path.realpath(p) not in truth]
    keep = [normal[i] for i in np.random.default_rng(0).choice(len(normal), min(normals, len(normal)), replace=False)]
    new_truth = []
    for p in keep + [p for p in files if os.path.realpath(p) in truth]:
        dst = archive / p.name
        shutil.copyfile(p, dst)
        if os.path.realpath(p) in truth:
            new_truth.append(str(dst))
    return new_truth


def build_mt16(data: Path, archive: Path) -> list[str]:
    """The ``mt-Crack`` archive (built before) as 16-bit PNGs."""
    src = data / "mt-Crack"
    truth = set((src / "truth.txt").read_text().split())
    new_truth = []
    for p in sorted((src / "archive").iterdir()):
        im = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        dst = archive / (p.stem + ".png")
        cv2.imwrite(str(dst), im.astype(np.uint16) * 257)
        if os.path.realpath(p) in truth:
            new_truth.append(str(dst))
    return new_truth


def build_mosaic(data: Path, archive: Path, n: int = 100, rate: float = 0.04, seed: int = 0) -> list[str]:
    """Mosaics of 2 x 4 magnetic tiles, a Blowhole or Crack tile in ``rate`` of them."""
    rng = np.random.default_rng(seed)
    free = sorted((ROOT_MT / "MT_Free" / "Imgs").glob("*.jpg"))
    bad = sorted((ROOT_MT / "MT_Blowhole" / "Imgs").glob("*.jpg")) + sorted(
        (ROOT_MT / "MT_Crack" / "Imgs").glob("*.jpg")
    )
    n_bad = max(1, round(rate * n))
    bad_pick = rng.choice(len(bad), n_bad, replace=False)
    order = rng.permutation(np.resize(rng.permutation(len(free)), n * 8))
    truth = []
    for i in range(n):
        tiles = [
            cv2.resize(cv2.imread(str(free[j]), cv2.IMREAD_GRAYSCALE), (400, 400)) for j in order[i * 8 : i * 8 + 8]
        ]
        if i < n_bad:
            tiles[int(rng.integers(8))] = cv2.resize(
                cv2.imread(str(bad[bad_pick[i]]), cv2.IMREAD_GRAYSCALE), (400, 400)
            )
        mosaic = np.vstack([np.hstack(tiles[:4]), np.hstack(tiles[4:])])
        dst = archive / f"m{rng.integers(1 << 30):010d}_{i:04d}.png"  # defect images not first by name
        cv2.imwrite(str(dst), mosaic)
        if i < n_bad:
            truth.append(str(dst))
    return truth


def build_texture(data: Path, archive: Path, n: int = 200, rate: float = 0.02, seed: int = 0) -> list[str]:
    """Colour Perlin textures, a small procedural defect in ``rate`` of them."""
    from synthesis.procedural import perlin_noise, simulate

    rng = np.random.default_rng(seed)
    n_bad = max(1, round(rate * n))
    kinds = ["spots", "scratch", "crack", "perlin"]
    truth = []
    base = np.array([0.55, 0.45, 0.35])
    for i in range(n):
        h, w = 480, 640
        chans = [
            0.5 * perlin_noise((h, w), (3, 4), rng=rng) + 0.25 * perlin_noise((h, w), (12, 16), rng=rng)
            for _ in range(3)
        ]
        im = np.clip(np.stack(chans, -1) * 0.35 + base, 0, 1)
        if i < n_bad:
            grey = im.mean(-1)
            # the defect's change of grey level applied to every channel, confined to a small window
            changed, _ = simulate(kinds[i % len(kinds)], grey, rng=rng)
            delta = changed - grey
            ys, xs = np.nonzero(np.abs(delta) > 1 / 512)
            if len(ys):
                cy, cx = int(np.median(ys)), int(np.median(xs))
                win = np.zeros_like(delta)
                win[max(0, cy - 60) : cy + 60, max(0, cx - 60) : cx + 60] = 1
                delta = delta * win
            im = np.clip(im + delta[..., None], 0, 1)
        dst = archive / f"t{rng.integers(1 << 30):010d}_{i:04d}.png"
        cv2.imwrite(str(dst), (im[..., ::-1] * 255).round().astype(np.uint8))
        if i < n_bad:
            truth.append(str(dst))
    return truth


def build(data: Path, normals: int = 250) -> None:
    """Build every archive of :data:`ARCHIVES` not built yet (its ``truth.txt`` is written last)."""
    builders = {
        **{
            f"mt-{c}": functools.partial(build_mt, category=c, normals=normals) for c in ("Blowhole", "Crack", "Uneven")
        },
        "mosaic": functools.partial(build_mosaic, n=100),
        "mt-Crack-16": build_mt16,  # from mt-Crack, built before it
        "texture": functools.partial(build_texture, n=200),
    }
    for name in ARCHIVES:
        out = data / name
        if (out / "truth.txt").exists():
            continue
        (out / "archive").mkdir(parents=True, exist_ok=True)
        _write_truth(out, builders[name](data, out / "archive"))


# -- mining and metrics ---------------------------------------------------------------------------
def run_one(data: Path, name: str, overrides: list[str], old: bool) -> dict:
    from mining.catalogue.index import index_archive
    from mining.catalogue.store import Store
    from mining.config import load_config, scorer_params
    from mining.job.mine import mine
    from mining.metrics import average_precision, recall_at_fraction
    from mining.scorers import get_scorer

    cfg = load_config(overrides=[*overrides, *(["backbone.patch_weight=0.5"] if old else [])])
    truth = set((data / name / "truth.txt").read_text().split())
    with tempfile.TemporaryDirectory() as tmp, Store(os.path.join(tmp, "c.db")) as store:
        index_archive(store, [str(data / name / "archive")], tile_size=cfg.index.tile_size)
        t0 = time.perf_counter()
        summary = mine(store, [get_scorer("backbone", **scorer_params(cfg, "backbone"))], workers=2, save_maps=False)
        seconds = time.perf_counter() - t0
        paths = {r["id"]: os.path.realpath(r["path"]) for r in store.images()}
        n_tiled = store.query("SELECT COUNT(DISTINCT image_id) FROM tiles")[0][0]
        rows = store.query("SELECT image_id, scorer, score, stats FROM scores WHERE tile = -1")
    ids = sorted(paths)
    y = np.array([paths[i] in truth for i in ids], int)
    got: dict[str, dict[int, float]] = {}
    for iid, scorer, score, stats in rows:
        st = json.loads(stats or "{}")
        if old:
            if scorer == "backbone":
                got.setdefault("global", {})[iid] = st.get("global_knn", 0.0)  # tiled images: never finalized
                if st.get("patch_max") is not None:
                    got.setdefault("patch", {})[iid] = st["patch_max"]
        else:
            key = {"backbone": "global", "patchcore": "patch"}.get(scorer)
            if key:
                got.setdefault(key, {})[iid] = score
    out = {"archive": name, "images": len(ids), "defects": int(y.sum()), "tiled": n_tiled, "seconds": round(seconds, 1)}
    out["images_per_s"] = round(summary.done / max(seconds, 1e-9), 2)
    for key in ("global", "patch"):
        s = np.array([got.get(key, {}).get(i, 0.0) for i in ids], float)
        out[key] = {
            "ap": round(average_precision(y, s), 3),
            "recall_10": round(recall_at_fraction(y, s, 0.10), 3),
            "scored": len(got.get(key, {})),
        }
    return out


def speed(overrides: list[str], old: bool) -> dict:
    import torch

    from mining.config import load_config, scorer_params
    from mining.scorers import get_scorer

    torch.set_num_threads(1)
    cfg = load_config(overrides=[*overrides, *(["backbone.patch_weight=0.5"] if old else [])])
    s = get_scorer("backbone", **scorer_params(cfg, "backbone"))
    from mining.models.backbone import load_mobilenet_v2, resolve_weights

    rng = np.random.default_rng(0)
    s.net_ = load_mobilenet_v2(resolve_weights(s.weights))
    out = {}
    for label, shape, n in (("256x256", (256, 256), 32), ("500x1250", (500, 1250), 8)):
        ims = [(rng.random(shape) * 255).astype(np.uint8) for _ in range(n)]
        s.fit_bank([(rng.random(shape) * 255).astype(np.uint8) for _ in range(16)])
        s.score_batch(ims[:2])
        best = float("inf")
        for _ in range(3):  # CPU time of this one-thread process: the shared machine's load does not count
            t0 = time.process_time()
            s.score_batch(ims)
            best = min(best, time.process_time() - t0)
        out[label] = round(1000 * best / n, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("build", "run", "speed"))
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "patch_scale")
    ap.add_argument("--archives", default=",".join(ARCHIVES))
    ap.add_argument("--label", default="after")
    ap.add_argument("--old", action="store_true", help="the code before the change (patch score from stats)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "patch_scale")
    a = ap.parse_args()
    if a.what == "build":
        build(a.data)
        return
    a.out.mkdir(parents=True, exist_ok=True)
    if a.what == "speed":
        res = {"label": a.label, "overrides": a.overrides, "ms_per_image": speed(a.overrides, a.old)}
        print(json.dumps(res), flush=True)
        with open(a.out / "speed.jsonl", "a") as f:
            f.write(json.dumps(res) + "\n")
        return
    for name in a.archives.split(","):
        res = {"label": a.label, "overrides": a.overrides, **run_one(a.data, name, a.overrides, a.old)}
        print(json.dumps(res), flush=True)
        with open(a.out / "runs.jsonl", "a") as f:
            f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
