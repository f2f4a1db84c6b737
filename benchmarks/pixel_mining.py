"""Pixel-classifier mining on magnetic tiles: raremine's pixel scorer against scikit-image's fit_segmenter.

For each category and seed, a rare archive is built with
the archive builder (``$RAREMINE_ARCHIVE_TOOL``) (all MT_Free images plus 1 % of the
category; 5 masked images of the category and 3 normal images, none of them
in the archive, for training). Both sides train on the same 8 label images
and score every archive image; we report AP, recall after reviewing 5 % and
10 % of the archive, training seconds and images per second, side by side.

- ours: ``raremine fit-pixel`` (mining.learning.pixel_fit.fit_pixel with the default
  ``pixel:`` config) then ``mining.job.mine.mine`` with the ``pixel`` scorer
  (inline backend, one process, map PNGs off) through a real catalogue.
- peer: ``skimage.future.fit_segmenter`` with ``RandomForestClassifier(
  n_estimators=50, max_depth=10, max_samples=0.05)`` (scikit-image's example)
  on ``multiscale_basic_features`` at full resolution; image score = max of
  the defect probability smoothed with a Gaussian of sigma 2.

Both sides run single-threaded in this one process (``n_jobs=1``), so the
ratio of images per second is a fair per-core comparison on a CPU shared with
other jobs; absolute numbers move with the machine's load.

``--auto`` (issue 20): per category and seed, ours tuned by ``fit-pixel``'s cross-validation
(``pixel.tune: true``; its ``train_s`` is tuning plus training) against ours with the fixed
defaults (``pixel.tune: false``) and the peer. ``--mosaic N`` adds an archive of N large images
(4 x 4 magnetic tiles of the archive, each resized to 354 px: 1416 x 1416, 2.0 MP), one in
eight holding one defective tile, trained on 5 defective and 3 normal mosaics built from other
tiles; both sides score each whole image (ours: tiles of ``tile_size`` with a halo, memory flat;
the peer: at once), timed in turn on the same images. The peer trains on every defect pixel and
a seeded 5 % of the background pixels there (all of them would need ~3 GB of features).

usage: python benchmarks/pixel_mining.py [--categories Blowhole Crack] [--seeds 0]
       [--normals N (subsample for quick runs)] [--ablation] [--work DIR]
       [--speed-chunks K [--chunk-size N]] (also time both sides in turn on K chunks; median ratio)
       [--auto [--mosaic N]] (tuned vs fixed vs peer; N large mosaic images)
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import average_precision_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rare_data import ARCHIVE_TOOL as TOOL  # noqa: E402
from rare_data import MAGNETIC_TILE as DATA  # noqa: E402 (benchmarks/rare_data.py, beside this script)
from rare_data import build_rare_archive  # noqa: E402

CATEGORIES = ("Blowhole", "Crack", "Fray", "Break", "Uneven")


def build_archive(work: Path, category: str, seed: int) -> Path:
    """Run the shared tool once per (category, seed); return the folder."""
    out = work / f"{category}-{seed}"
    if not (out / "truth.csv").exists():
        if out.exists():
            shutil.rmtree(out)
        build_rare_archive(out, category, "--seed", seed, stdout=subprocess.DEVNULL)
    return out


def read_truth(folder: Path, normals: int | None, seed: int) -> dict[str, int]:
    """path -> label, optionally with only ``normals`` normal images (seeded subsample, for quick runs)."""
    with open(folder / "truth.csv", newline="") as fh:
        rows = [(r["path"], int(r["label"])) for r in csv.DictReader(fh)]
    if normals is not None:
        rng = np.random.default_rng(seed)
        norm = [r for r in rows if r[1] == 0]
        keep = {norm[i][0] for i in rng.choice(len(norm), min(normals, len(norm)), replace=False)}
        rows = [r for r in rows if r[1] == 1 or r[0] in keep]
    return dict(rows)


def metrics(truth: dict[str, int], scores: dict[str, float]) -> dict[str, float]:
    """AP and recall after reviewing 5 % and 10 % of the archive.

    Ties are broken pessimistically (normal images first), so a score that is
    0 for most images cannot look good through file-name order.
    """
    paths = sorted(truth)
    y = np.array([truth[p] for p in paths])
    s = np.array([scores.get(p, -np.inf) for p in paths])
    s = np.where(np.isfinite(s), s, np.nanmin(s[np.isfinite(s)]) - 1)
    order = np.lexsort((y, -s))  # by score descending, then normals before defects
    out = {"AP": float(average_precision_score(y, s))}
    for frac in (0.05, 0.10):
        n = round(frac * len(y))
        out[f"R@{int(frac * 100)}%"] = float(y[order[:n]].sum() / y.sum())
    return out


def link_archive(folder: Path, truth: dict[str, int], dest: Path) -> Path:
    """A folder of symlinks to the archive images in ``truth`` (the subsample, or all)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for p in truth:
        os.symlink(p, dest / os.path.basename(p))
    return dest


def run_ours(folder: Path, truth: dict[str, int], tag: str, overrides: list[str]) -> dict:
    """fit-pixel + mine through a real catalogue; return metrics and timings."""
    from mining.catalogue.index import index_archive
    from mining.catalogue.store import Store
    from mining.config import load_config, scorer_params
    from mining.io import read_image
    from mining.job.mine import mine
    from mining.learning.pixel_fit import fit_pixel
    from mining.scorers import get_scorer

    cfg = load_config(None, overrides)
    db = folder / f"ours-{tag}.db"
    for p in folder.glob(f"ours-{tag}.*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    archive = link_archive(folder, truth, folder / f"links-{tag}")
    with Store(db) as store:
        index_archive(store, [archive], tile_size=cfg.index.tile_size)
        t0 = time.perf_counter()
        fit_pixel(store, folder / "train" / "images", folder / "train" / "labels", cfg.pixel)
        train_s = time.perf_counter() - t0
        scorer = get_scorer("pixel", **scorer_params(cfg, "pixel"))
        summary = mine(store, [scorer], backend="inline", workers=1, save_maps=False)
        scorer.prepare(store)  # the same model, kept for the interleaved timing
        rows = store.query(
            "SELECT i.path, s.score FROM scores s JOIN images i ON i.id = s.image_id"
            " WHERE s.scorer = 'pixel' AND s.tile = -1"
        )
    scores = {os.path.realpath(p): s for p, s in rows}
    m = metrics(truth, scores)
    m.update({"train_s": train_s, "img_s": summary.done / summary.seconds, "failed": sum(summary.failed.values())})
    m["score_one"] = lambda path: scorer.score_image(read_image(path)).score
    return m


def run_peer(folder: Path, truth: dict[str, int], seed: int, background_fraction: float = 1.0) -> dict:
    """scikit-image's fit_segmenter / multiscale_basic_features + RandomForest; image score = max smoothed P."""
    from functools import partial

    from skimage.feature import multiscale_basic_features
    from skimage.future import fit_segmenter
    from sklearn.ensemble import RandomForestClassifier

    feat = partial(
        multiscale_basic_features, intensity=True, edges=True, texture=True, sigma_min=0.5, sigma_max=16, workers=1
    )
    t0 = time.perf_counter()
    feats, labs = [], []
    for p in sorted((folder / "train" / "images").glob("*.png")):
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        lab = cv2.imread(str(folder / "train" / "labels" / p.name), cv2.IMREAD_GRAYSCALE)
        if background_fraction < 1:
            rng = np.random.default_rng(seed)
            lab = np.where((lab == 1) & (rng.random(lab.shape) > background_fraction), 0, lab).astype(np.uint8)
        f = feat(img)
        keep = lab.ravel() > 0  # fit_segmenter uses the labelled pixels only; keeping only them saves memory
        f, lab = f.reshape(-1, f.shape[-1])[keep], lab.ravel()[keep]
        feats.append(f.reshape(-1, 1, f.shape[-1]))
        labs.append(lab.reshape(-1, 1))
    clf = RandomForestClassifier(n_estimators=50, max_depth=10, max_samples=0.05, n_jobs=1, random_state=seed)
    clf = fit_segmenter(np.concatenate(labs), np.concatenate(feats), clf)
    train_s = time.perf_counter() - t0
    col = list(clf.classes_).index(2)

    def score_one(path: str) -> float:
        img = cv2.imread(path, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        f = feat(img)
        prob = clf.predict_proba(f.reshape(-1, f.shape[-1]))[:, col].reshape(img.shape).astype(np.float32)
        return float(cv2.GaussianBlur(prob, (0, 0), 2.0).max())

    t0 = time.perf_counter()
    scores = {p: score_one(p) for p in truth}
    img_s = len(truth) / (time.perf_counter() - t0)
    m = metrics(truth, scores)
    m.update({"train_s": train_s, "img_s": img_s, "score_one": score_one})
    return m


def interleaved_speed(ours: dict, peer: dict, paths: list[str], chunks: int, size: int, seed: int) -> dict:
    """Images per second of both sides on the same chunks of images, timed in turn (ours, peer, ours, ...).

    On a shared CPU the load changes during a long run; timing the two sides on the same images
    close together and taking the median over chunks gives a ratio that moves far less.
    """
    rng = np.random.default_rng(seed)
    rates = {"ours": [], "peer": []}
    for _ in range(chunks):
        chunk = [paths[i] for i in rng.choice(len(paths), min(size, len(paths)), replace=False)]
        for name, side in (("ours", ours), ("peer", peer)):
            t0 = time.perf_counter()
            for p in chunk:
                side["score_one"](p)
            rates[name].append(len(chunk) / (time.perf_counter() - t0))
    ratios = np.array(rates["ours"]) / np.array(rates["peer"])
    return {
        "ours_img_s": float(np.median(rates["ours"])),
        "peer_img_s": float(np.median(rates["peer"])),
        "ratio_median": float(np.median(ratios)),
        "ratio_min": float(ratios.min()),
        "ratio_max": float(ratios.max()),
    }


MOSAIC_GRID, MOSAIC_TILE = 4, 354  # 4 x 4 tiles of 354 px: 1416 x 1416 = 2.0 MP


def build_mosaics(folder: Path, n: int, seed: int) -> Path:
    """An archive of ``n`` 2 MP mosaics of the archive's tiles (one in eight defective) plus 5 + 3 training mosaics.

    Training mosaics use the archive's training images (5 defective, 3 normal) and normal tiles that
    no archive mosaic uses; masks follow their tile. Returns the mosaic folder (with its truth.csv).
    """
    out = folder / f"mosaic-{n}"
    if (out / "truth.csv").exists():
        return out
    rng = np.random.default_rng(seed)
    with open(folder / "truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    normals = [r["path"] for r in rows if r["label"] == "0"]
    defects = [(r["path"], r["mask"]) for r in rows if r["label"] == "1"]
    rng.shuffle(normals)
    cells = MOSAIC_GRID * MOSAIC_GRID
    n_def = max(1, round(n / 8))
    need = n * cells + 8 * cells
    pool = iter(normals * (need // len(normals) + 1))
    train_imgs = sorted((folder / "train" / "images").glob("*.png"))

    def tile(path, mask_path=None):
        img = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (MOSAIC_TILE, MOSAIC_TILE), cv2.INTER_AREA)
        if mask_path is None:
            return img, np.zeros_like(img)
        m = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        return img, cv2.resize(m, (MOSAIC_TILE, MOSAIC_TILE), interpolation=cv2.INTER_NEAREST)

    def mosaic(special):
        side = MOSAIC_GRID * MOSAIC_TILE
        img, mask = np.zeros((side, side), np.uint8), np.zeros((side, side), np.uint8)
        at = int(rng.integers(cells))
        for k in range(cells):
            t, m = tile(*special) if (special and k == at) else tile(next(pool))
            y, x = (k // MOSAIC_GRID) * MOSAIC_TILE, (k % MOSAIC_GRID) * MOSAIC_TILE
            img[y : y + MOSAIC_TILE, x : x + MOSAIC_TILE] = t
            mask[y : y + MOSAIC_TILE, x : x + MOSAIC_TILE] = m
        return img, mask

    for d in ("archive", "train/images", "train/labels", "masks"):
        (out / d).mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(train_imgs):  # the training tile at a random cell, its label there, background elsewhere
        lab_path = folder / "train" / "labels" / p.name
        img, _ = mosaic(None)
        t, m = tile(p, lab_path)
        k = int(rng.integers(cells))
        y, x = (k // MOSAIC_GRID) * MOSAIC_TILE, (k % MOSAIC_GRID) * MOSAIC_TILE
        label = np.ones_like(img)
        img[y : y + MOSAIC_TILE, x : x + MOSAIC_TILE] = t
        label[y : y + MOSAIC_TILE, x : x + MOSAIC_TILE] = np.where(m >= 2, 2, 1)
        cv2.imwrite(str(out / "train" / "images" / f"train{i}.png"), img)
        cv2.imwrite(str(out / "train" / "labels" / f"train{i}.png"), label)
    lines = ["path,label,category,mask"]
    picks = rng.choice(len(defects), min(n_def, len(defects)), replace=False)
    for i in range(n):
        special = defects[picks[i]] if i < len(picks) else None
        img, mask = mosaic(special)
        path = out / "archive" / f"mosaic{i:03d}.png"
        cv2.imwrite(str(path), img)
        mpath = ""
        if special:
            mpath = str(out / "masks" / f"mosaic{i:03d}.png")
            cv2.imwrite(mpath, (mask > 0).astype(np.uint8) * 255)
        lines.append(f"{path},{int(bool(special))},{'defect' if special else ''},{mpath}")
    (out / "truth.csv").write_text("\n".join(lines) + "\n")
    return out


VARIANTS = {
    "ours": [],
    "tuned": ["pixel.tune=true"],
    "fixed": ["pixel.tune=false"],
    "tuned-cfgclf": ["pixel.tune=true", "pixel.tune_final=config"],
    # border ablation: no distance-to-border feature and no valid-region margin in the image score
    "ours-noborder": ["pixel.features.border_feature=false", "scorers.pixel.border=0"],
}


def run_mosaic(
    folder: Path, truth: dict[str, int], cat: str, seed: int, overrides: list[str], results: dict, variants: list[str]
) -> None:
    """Our variants and the peer on the 2 MP mosaics; the first variant and the peer timed in turn."""
    cols = ["AP", "R@5%", "R@10%", "train_s", "img_s"]
    runs = {v: run_ours(folder, truth, v, VARIANTS[v] + overrides) for v in variants}
    runs["skimage-peer"] = run_peer(folder, truth, seed, background_fraction=0.05)
    first = variants[0]
    sp = interleaved_speed(runs[first], runs["skimage-peer"], sorted(truth), 3, 4, seed)
    runs[first]["img_s"], runs["skimage-peer"]["img_s"] = sp["ours_img_s"], sp["peer_img_s"]
    for name, m in runs.items():
        results.setdefault((f"{cat}-2MP", name), []).append(m)
        print(f"{cat + '-2MP':<9} {seed:>4} {name:<14} " + " ".join(f"{m[c]:>8.3f}" for c in cols), flush=True)
    print(
        f"{'':<9} {'':>4} {'2MP speed':<14} {first} / peer = {sp['ratio_median']:.2f}x (median of 3 chunks of 4 "
        f"images timed in turn; min {sp['ratio_min']:.2f}, max {sp['ratio_max']:.2f})",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--normals", type=int, default=None, help="subsample of normal images (quick runs)")
    ap.add_argument("--ablation", action="store_true", help="also run ours without border handling")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--peer-only", action="store_true", help="run only the peer (e.g. in parallel with ours)")
    ap.add_argument(
        "--speed-chunks",
        type=int,
        default=0,
        help="also time both sides in turn on this many random chunks of --chunk-size archive images "
        "and print the median ratio (robust to a changing load)",
    )
    ap.add_argument("--chunk-size", type=int, default=40)
    ap.add_argument("--auto", action="store_true", help="ours tuned (pixel.tune) vs ours fixed vs the peer")
    ap.add_argument("--variants", nargs="+", default=None, choices=sorted(VARIANTS), help="with --auto: these")
    ap.add_argument("--mosaic", type=int, default=0, help="with --auto: also an archive of N 2 MP mosaics")
    ap.add_argument("--mosaic-only", action="store_true", help="with --mosaic: skip the tile archives themselves")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override for ours")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "raremine-pixel-bench")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not DATA.is_dir() or not TOOL.exists():
        sys.exit(f"needs {DATA} and {TOOL} (development data, not bundled)")
    variants = ["ours", "ours-noborder"] if a.ablation else ["ours"]
    if a.auto:
        variants = a.variants or ["tuned", "fixed"]
    cols = ["AP", "R@5%", "R@10%", "train_s", "img_s"]
    results: dict[tuple[str, str], list[dict]] = {}
    header = f"{'category':<9} {'seed':>4} {'method':<14} " + " ".join(f"{c:>8}" for c in cols)
    print(header, flush=True)
    for cat in a.categories:
        for seed in a.seeds:
            folder = build_archive(a.work, cat, seed)
            truth = read_truth(folder, a.normals, seed)
            if a.auto and a.mosaic:
                mos = build_mosaics(folder, a.mosaic, seed)
                run_mosaic(mos, read_truth(mos, None, seed), cat, seed, a.overrides, results, variants)
                if a.mosaic_only:
                    continue
            runs = {} if a.peer_only else {v: run_ours(folder, truth, v, VARIANTS[v] + a.overrides) for v in variants}
            if not a.no_peer:
                runs["skimage-peer"] = run_peer(folder, truth, seed)
            for name, m in runs.items():
                results.setdefault((cat, name), []).append(m)
                print(f"{cat:<9} {seed:>4} {name:<14} " + " ".join(f"{m[c]:>8.3f}" for c in cols), flush=True)
            mine_side = "tuned" if a.auto else "ours"
            if "skimage-peer" in runs and mine_side in runs:
                print(
                    f"{'':<9} {'':>4} {'speed ratio':<14} {mine_side} / peer = "
                    f"{runs[mine_side]['img_s'] / runs['skimage-peer']['img_s']:.2f}x",
                    flush=True,
                )
                if a.speed_chunks:
                    sp = interleaved_speed(
                        runs[mine_side], runs["skimage-peer"], sorted(truth), a.speed_chunks, a.chunk_size, seed
                    )
                    print(
                        f"{'':<9} {'':>4} {'interleaved':<14} {a.speed_chunks} chunks of {a.chunk_size} images: "
                        f"ours {sp['ours_img_s']:.2f} img/s, peer {sp['peer_img_s']:.2f} img/s (medians); "
                        f"ratio median {sp['ratio_median']:.2f}x "
                        f"(min {sp['ratio_min']:.2f}, max {sp['ratio_max']:.2f})",
                        flush=True,
                    )
    print(
        f"\nmeans over seeds {a.seeds} (n = {len(truth)} images in the last archive"
        f"{'; subsample' if a.normals else ''}):"
    )
    print(f"| category | method | {' | '.join(cols)} |")
    print("|---|---|" + "---|" * len(cols))
    for (cat, name), ms in results.items():
        vals = " | ".join(f"{np.mean([m[c] for m in ms]):.3g}" for c in cols)
        print(f"| {cat} | {name} | {vals} |")


if __name__ == "__main__":
    main()
