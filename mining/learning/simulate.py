"""Simulated review rounds with known truth: does every verdict make the next candidates better?

A simulated reviewer answers from a truth CSV (columns ``path,label`` and
optionally ``category`` and ``mask``; label 1 = rare event). Each round:

1. :func:`mining.ranking.rank.rank` picks ``batch`` candidates with the strategy
   (with ``step``, ``step`` at a time, each step chosen with the verdicts
   before it, as the review app does);
2. the reviewer confirms or rejects each one (``reviews.source = "simulate"``)
   and, for mixed supervision, paints the truth mask of up to
   ``masks_per_round`` confirmed images (``reviews.mask_path``);
3. :func:`mining.learn.learn` retrains.

After each round it records the images reviewed, the events found (recall),
and the re-ranker's AP and AUROC over the whole archive (out-of-fold for the
images with a verdict; the fused unsupervised score while no re-ranker could
be trained). :func:`write_outputs` writes ``summary.json``, ``rounds.csv`` and
PNG plots. It writes verdicts into the catalogue it is given: run it on a copy
(:func:`copy_catalogue`; the CLI does).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mining.catalogue.store import Store
from mining.learning.learn import learn
from mining.metrics import auroc, average_precision
from mining.ranking.rank import extend_round, fused_scores, rank
from mining.ranking.rerank import RERANK_SCORER

logger = logging.getLogger(__name__)


@dataclass
class Truth:
    """Known answers for a catalogue's images (aligned with ``image_ids``)."""

    image_ids: np.ndarray
    label: np.ndarray
    category: list[str | None]
    mask: list[str | None]
    n_missing: int = 0

    def lookup(self) -> dict[int, int]:
        """image_id -> position."""
        return {int(i): k for k, i in enumerate(self.image_ids)}


def read_truth(path: str | os.PathLike, store: Store) -> Truth:
    """Read a truth CSV and match its paths to the catalogue (real paths compared).

    Raises
    ------
    ValueError
        For a missing column, a label other than 0/1 (file and line named), or
        when no row matches an indexed image.
    """
    path = os.fspath(path)
    try:
        fh = open(path, newline="", encoding="utf-8")
    except FileNotFoundError as err:
        raise ValueError(f"truth CSV {path!r} does not exist") from err
    with fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"truth CSV {path!r} lacks columns {sorted(missing)}; needs path,label[,category,mask]")
        rows = {}
        for line, row in enumerate(reader, start=2):
            if row["label"] not in ("0", "1"):
                raise ValueError(f"truth CSV {path!r} line {line}: label must be 0 or 1, got {row['label']!r}")
            rows[os.path.realpath(row["path"])] = (
                int(row["label"]),
                row.get("category") or None,
                row.get("mask") or None,
            )
    ids, labels, cats, masks, n_missing = [], [], [], [], 0
    for r in store.images():
        hit = rows.get(os.path.realpath(r["path"]))
        if hit is None:
            n_missing += 1
            continue
        ids.append(r["id"])
        labels.append(hit[0])
        cats.append(hit[1])
        masks.append(hit[2])
    if not ids:
        raise ValueError(f"no path in truth CSV {path!r} matches an image of catalogue {store.path!r}")
    if n_missing:
        logger.warning("%d catalogue images have no truth row; they are answered 'unsure'", n_missing)
    return Truth(np.array(ids, np.int64), np.array(labels, np.int64), cats, masks, n_missing)


def copy_catalogue(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Copy a catalogue (consistently, WAL included) with SQLite's backup API; return ``dst``."""
    src, dst = os.fspath(src), os.fspath(dst)
    if not os.path.exists(src):
        raise ValueError(f"catalogue {src!r} does not exist")
    os.makedirs(os.path.dirname(os.path.abspath(dst)) or ".", exist_ok=True)
    if os.path.exists(dst):
        os.remove(dst)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()
    return dst


def model_scores(store: Store, truth: Truth) -> tuple[np.ndarray, str]:
    """The current ranking score per truth image: re-ranker probability, else the fused score."""
    fs = fused_scores(store)
    pos = {int(i): r for r, i in enumerate(fs.image_ids)}
    rows = np.array([pos.get(int(i), -1) for i in truth.image_ids])
    if RERANK_SCORER in fs.scorers:
        col, source = fs.raw[:, fs.scorers.index(RERANK_SCORER)], RERANK_SCORER
    else:
        unsup = [j for j, s in enumerate(fs.scorers) if s != RERANK_SCORER]
        col, source = np.nanmean(fs.percentiles[:, unsup], axis=1) if unsup else fs.fused, "fused"
    s = np.where(rows >= 0, col[np.maximum(rows, 0)], np.nan)
    return np.nan_to_num(s, nan=-1.0), source


def simulate(
    store: Store,
    truth: Truth,
    *,
    strategy: str = "top",
    batch: int = 24,
    rounds: int = 4,
    step: int = 0,
    masks_per_round: int = 0,
    reviewer: str = "simulator",
    learn_kwargs: dict | None = None,
    rank_kwargs: dict | None = None,
    random_state: int = 0,
    rescore_pixel: bool = True,
    rescore_workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Run review rounds with a simulated reviewer; return the summary (JSON-ready).

    Parameters
    ----------
    store : Store
        A catalogue with scores (it receives the rounds and verdicts).
    truth : Truth
        From :func:`read_truth`.
    strategy : str, default="top"
        A selection strategy or mixture (see :mod:`mining.ranking.strategies`).
    batch : int, default=24
        Images reviewed per round.
    rounds : int, default=4
    step : int, default=0
        Choose each round this many candidates at a time, as the review app
        does (config ``rank.step``): each step is chosen with the verdicts on
        the steps before it (:func:`mining.ranking.rank.extend_round`: the
        adaptive strategy's arms and "more like this"); :func:`learn` runs
        once per round, at its end. 0 (or ``step >= batch``): the whole
        round at once.
    masks_per_round : int, default=0
        Confirmed images per round whose truth mask is painted (mixed supervision).
    reviewer : str, default="simulator"
    learn_kwargs, rank_kwargs : dict, optional
        Passed to :func:`mining.learn.learn` and :func:`mining.ranking.rank.rank`.
    random_state : int, default=0
        Seeds the strategies (round r uses ``random_state + r``) and the re-ranker.
    rescore_pixel : bool, default=True
        When a round retrained the pixel model, score the archive again with
        it (the ``pixel`` scorer) before the next round.
    rescore_workers : int, default=1
        Processes of that re-scoring: 1 scores in this process; more use
        the process pool (``forkserver`` workers, which start clean of this
        process's XGBoost/OpenMP threads).
    progress : callable, optional
        ``progress(round_done, rounds)``.

    Returns
    -------
    dict
        ``recall_per_round``, ``reviewed_per_round``, ``found_per_round``,
        ``ap_per_round``, ``auroc_per_round``, ``random_recall_per_round``
        (expected recall of random review), ``strategies_per_round`` (how
        many picks each strategy made), ``learn_per_round`` and the setup.
    """
    if batch < 1 or rounds < 1 or masks_per_round < 0 or step < 0:
        raise ValueError(
            "batch and rounds must be >= 1, step and masks_per_round >= 0; "
            f"got batch={batch}, rounds={rounds}, step={step}, masks_per_round={masks_per_round}"
        )
    t0 = time.perf_counter()
    lookup = truth.lookup()
    n_pos = int(truth.label.sum())
    n_images = len(truth.image_ids)
    learn_kwargs = {"random_state": random_state, "pixel": masks_per_round > 0, **(learn_kwargs or {})}
    out: dict = {
        "strategy": strategy,
        "batch": batch,
        "rounds": rounds,
        "step": step if 0 < step < batch else batch,
        "masks_per_round": masks_per_round,
        "n_images": n_images,
        "n_positives": n_pos,
        "random_state": random_state,
        "reviewed_per_round": [],
        "found_per_round": [],
        "recall_per_round": [],
        "random_recall_per_round": [],
        "ap_per_round": [],
        "auroc_per_round": [],
        "score_source_per_round": [],
        "strategies_per_round": [],
        "learn_per_round": [],
    }
    found: set[int] = set()
    reviewed: set[int] = set()
    for r in range(rounds):
        first = step if 0 < step < batch else batch
        seed = random_state + r
        round_no = rank(store, strategy=strategy, n=first, target=batch, random_state=seed, **(rank_kwargs or {}))
        painted = 0
        picked: dict[str, int] = {}
        done_cands: set[int] = set()
        while True:
            for c in store.candidates(round_no):
                if int(c["id"]) in done_cands:
                    continue
                done_cands.add(int(c["id"]))
                picked[c["strategy"]] = picked.get(c["strategy"], 0) + 1
                painted += _answer(store, truth, lookup, c, reviewer, found, reviewed, masks_per_round - painted)
            if len(done_cands) >= batch or first == batch:
                break
            # the next step of the round, chosen with this step's verdicts (as the review app does)
            seed += 7919  # a different stream per step (the strategy's random parts)
            if not extend_round(store, strategy=strategy, n=step, random_state=seed, **(rank_kwargs or {})):
                break
        rep = learn(store, **learn_kwargs)
        pixel_info = rep.pixel or rep.pixel_skipped
        if rep.pixel and rescore_pixel:
            _rescore_pixel(store, rescore_workers)
            rep = learn(store, **{**learn_kwargs, "pixel": False})  # the re-ranker sees the new pixel scores
        scores, source = model_scores(store, truth)
        out["reviewed_per_round"].append(len(reviewed))
        out["found_per_round"].append(len(found))
        out["recall_per_round"].append(len(found) / n_pos if n_pos else float("nan"))
        out["random_recall_per_round"].append(len(reviewed) / n_images)
        out["ap_per_round"].append(_none_nan(average_precision(truth.label, scores)))
        out["auroc_per_round"].append(_none_nan(auroc(truth.label, scores)))
        out["score_source_per_round"].append(source)
        out["strategies_per_round"].append(picked)
        out["learn_per_round"].append(
            {
                "reranker_skipped": rep.reranker_skipped,
                "pixel": pixel_info,
                "n_labelled": rep.n_labelled,
                "n_confirmed": rep.n_confirmed,
                "oof_ap": (rep.reranker or {}).get("oof_ap"),
            }
        )
        logger.info(
            "round %d: reviewed %d, found %d/%d, AP %.3f",
            r + 1,
            len(reviewed),
            len(found),
            n_pos,
            out["ap_per_round"][-1] or float("nan"),
        )
        if progress:
            progress(r + 1, rounds)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _answer(store, truth, lookup, c, reviewer, found, reviewed, masks_left) -> int:
    """The simulated reviewer's verdict on one candidate (from the truth); return 1 when it painted a mask."""
    k = lookup.get(int(c["image_id"]))
    mask = None
    if k is None:
        verdict, category = "unsure", None
    elif truth.label[k]:
        verdict, category = "confirm", truth.category[k]
        found.add(int(c["image_id"]))
        if masks_left > 0 and truth.mask[k] and os.path.exists(truth.mask[k]):
            mask = truth.mask[k]
    else:
        verdict, category = "reject", None
    reviewed.add(int(c["image_id"]))
    store.add_review(
        int(c["image_id"]),
        reviewer,
        verdict,
        category=category,
        mask_path=mask,
        candidate_id=int(c["id"]),
        source="simulate",
    )
    return int(mask is not None)


def _rescore_pixel(store: Store, workers: int = 1) -> None:
    from mining.job.mine import mine
    from mining.scorers import get_scorer

    try:
        scorer = get_scorer("pixel")
    except ValueError as err:
        logger.warning("pixel model retrained but not re-scored: %s", err)
        return
    # this process has run XGBoost (OpenMP threads): workers forked from it could hang, so either
    # inline or forkserver workers (started from a clean interpreter)
    if workers > 1:
        mine(
            store,
            [scorer],
            backend="process",
            workers=workers,
            start_method="forkserver",
            rescore=True,
            save_maps=False,
        )
    else:
        mine(store, [scorer], backend="inline", rescore=True, save_maps=False)


def _none_nan(v: float) -> float | None:
    return None if v is None or np.isnan(v) else round(float(v), 6)


def write_outputs(summary: dict, out_dir: str | os.PathLike) -> list[str]:
    """Write ``summary.json``, ``rounds.csv``, ``recall.png`` and ``ap.png`` into ``out_dir``; return the paths."""
    from synthesis.atomic import atomic_write

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    p = os.path.join(out_dir, "summary.json")
    with atomic_write(p, "w") as fh:
        json.dump(summary, fh, indent=2)
    paths.append(p)
    p = os.path.join(out_dir, "rounds.csv")
    with atomic_write(p, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["round", "reviewed", "found", "recall", "random_recall", "ap", "auroc", "score_source"])
        for k in range(len(summary["reviewed_per_round"])):
            w.writerow(
                [
                    k + 1,
                    summary["reviewed_per_round"][k],
                    summary["found_per_round"][k],
                    summary["recall_per_round"][k],
                    summary["random_recall_per_round"][k],
                    summary["ap_per_round"][k],
                    summary["auroc_per_round"][k],
                    summary["score_source_per_round"][k],
                ]
            )
    paths.append(p)
    curves = {summary["strategy"]: (summary["reviewed_per_round"], summary["recall_per_round"])}
    p = os.path.join(out_dir, "recall.png")
    title = f"{summary['n_positives']} events in {summary['n_images']} images"
    plot_recall(curves, summary["n_images"], p, title=title)
    paths.append(p)
    p = os.path.join(out_dir, "ap.png")
    plot_curves(
        {summary["strategy"]: (summary["reviewed_per_round"], summary["ap_per_round"])},
        p,
        ylabel="re-ranker AP (whole archive)",
        baseline=summary["n_positives"] / summary["n_images"],
        baseline_label="chance (prevalence)",
    )
    paths.append(p)
    return paths


def plot_recall(curves: dict, n_images: int, path: str, *, title: str = "", bands: dict | None = None) -> None:
    """Recall against images reviewed, one line per strategy, with random review (expected) drawn alongside.

    Parameters
    ----------
    curves : dict of label to (reviewed, recall) sequences
    n_images : int
        Archive size (random review finds ``reviewed / n_images`` of the events on average).
    path : str
        PNG to write.
    bands : dict of label to (low, high) sequences, optional
        Shaded spread (e.g. min and max over seeds).
    """
    xmax = max(max(x) for x, _ in curves.values())
    plot_curves(
        curves,
        path,
        ylabel="recall (share of events found)",
        bands=bands,
        title=title,
        extra=[([0, xmax], [0, xmax / n_images], "random review (expected)")],
        ylim=(0, 1.02),
    )


def plot_curves(
    curves: dict,
    path: str,
    *,
    ylabel: str,
    xlabel: str = "images reviewed",
    bands=None,
    baseline: float | None = None,
    baseline_label: str = "",
    extra=None,
    title: str = "",
    ylim=None,
) -> None:
    """Line plot of several (x, y) curves into a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for label, (x, y) in curves.items():
        yy = [np.nan if v is None else v for v in y]
        (line,) = ax.plot(
            [0, *x] if ylabel.startswith("recall") else x,
            [0, *yy] if ylabel.startswith("recall") else yy,
            marker="o",
            ms=3,
            label=label,
        )
        if bands and label in bands:
            lo, hi = bands[label]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    for x, y, label in extra or []:
        ax.plot(x, y, "k--", lw=1, label=label)
    if baseline is not None:
        ax.axhline(baseline, color="k", ls=":", lw=1, label=baseline_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
