"""Learn from verdicts: retrain the re-ranker (and the pixel model) so the next round is better.

``raremine learn`` and the review app's *learn* button both call
:func:`learn`::

    from mining.learning.learn import learn
    report = learn(store)                     # defaults: 5 folds, threshold calibration
    report = learn(store, config=cfg)         # the learn: and review: sections of a Config
    report.as_dict()                          # JSON-ready summary for the shell / the app

What it does:

1. reads the labels the consensus rule decides (:func:`mining.catalogue.verdicts.image_labels`,
   through :func:`mining.ranking.rerank.consensus_labels`): the one definition of a
   label that the review app and every label export share; undecided images
   (pending, disagreeing, dropped, unsure, neutral) train nothing and the
   report's ``left_out`` counts them per reason;
2. trains the K-fold XGBoost re-ranker on the image scores, map statistics and
   embeddings (:func:`mining.ranking.rerank.build_features`; monotone increasing in
   every scorer's score, which by contract rises with rarity) and writes its
   probability for every readable image into the ``scores`` table under the
   scorer name ``rerank`` (out-of-fold for images with a verdict; ``stats``
   holds ``oof``, ``fold`` and the fold models' ``std``), replacing the
   previous one, and registers the fold models (XGBoost JSON) in ``models``;
3. when the confirming votes of images decided as defects carry painted masks
   (``reviews.mask_path``) and the pixel model is available, retrains it
   through :func:`mining.pixel_fit.fit_pixel`, the function behind ``raremine
   fit-pixel`` (the masks become its label images, beside
   the training set of ``raremine fit-pixel``, which every retraining keeps).

Too few verdicts (fewer than 2 confirmed or 2 rejected images) is not an
error: the report says why nothing was trained and ranking goes on with the
unsupervised scores.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from mining.catalogue.paths import models_dir
from mining.catalogue.store import Store
from mining.catalogue.verdicts import ConsensusRule, image_labels, left_out_counts
from mining.metrics import auroc, average_precision
from mining.ranking.rerank import (
    CALIBRATIONS,
    RERANK_SCORER,
    ReRanker,
    build_features,
    consensus_labels,
    monotone_constraints,
)

logger = logging.getLogger(__name__)

#: ``progress(stage, done, total)``; stages: "features", "rerank", "write", "pixel".
Progress = Callable[[str, int, int], None]


@dataclass
class LearnReport:
    """What one call of :func:`learn` did (``as_dict()`` is JSON-ready)."""

    run_id: int | None = None
    n_labelled: int = 0
    n_confirmed: int = 0
    n_rejected: int = 0
    categories: dict = field(default_factory=dict)
    left_out: dict = field(default_factory=dict)
    reranker: dict | None = None
    reranker_skipped: str | None = None
    pixel: dict | None = None
    pixel_skipped: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


#: Marks a parameter taken from ``config.learn`` (or its default when no config is given).
FROM_CONFIG = "from-config"


def learn(
    store: Store,
    *,
    config=None,
    rerank: bool = True,
    pixel: bool | None = None,
    n_folds: int | None = None,
    calibration: str | None = FROM_CONFIG,
    embedding_components: int | None = None,
    random_state: int = 0,
    progress: Progress | None = None,
) -> LearnReport:
    """Retrain from the verdicts in the catalogue; the next ``rank`` uses the result.

    Parameters
    ----------
    store : Store
        The catalogue (opened for writing).
    config : mining.config.Config, optional
        Supplies every parameter left at its default (``learn:`` section) and
        the consensus rule (``review:`` section). Without it the defaults of
        :class:`mining.config.LearnConfig` apply.
    rerank : bool, default=True
        Train the re-ranker and store its probabilities.
    pixel : bool, optional
        Retrain the pixel model when painted masks exist (default ``learn.pixel``, true).
    n_folds : int, optional
        Folds for out-of-fold probabilities (default ``learn.n_folds``, 5).
    calibration : {None, "none", "threshold", "isotonic", "sigmoid"}, optional
        See :mod:`mining.ranking.rerank` (default ``learn.calibration``, "threshold").
    embedding_components : int, optional
        Principal components kept per embedding (default ``learn.embedding_components``, 16).
    random_state : int, default=0
    progress : callable, optional
        ``progress(stage, done, total)``.

    Returns
    -------
    LearnReport

    Raises
    ------
    ValueError
        For a bad ``n_folds`` or ``calibration``.
    """
    from mining.config import Config

    cfg = config if config is not None else Config()
    lc = cfg.learn
    pixel = lc.pixel if pixel is None else pixel
    n_folds = lc.n_folds if n_folds is None else n_folds
    calibration = lc.calibration if calibration == FROM_CONFIG else calibration
    calibration = None if calibration == "none" else calibration
    embedding_components = lc.embedding_components if embedding_components is None else embedding_components
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of none, threshold, isotonic, sigmoid; got {calibration!r}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    rule = ConsensusRule.from_config(cfg)
    t0 = time.perf_counter()
    run_config = {
        "rerank": rerank,
        "pixel": pixel,
        "n_folds": n_folds,
        "calibration": calibration,
        "embedding_components": embedding_components,
        "random_state": random_state,
        "consensus": rule.as_dict(),
    }
    run_id = store.start_run("learn", run_config)
    report = LearnReport(run_id=run_id)
    try:
        decided = image_labels(store, rule)
        labels = consensus_labels(store, rule)
        report.left_out = left_out_counts(decided)
        report.n_labelled = len(labels)
        report.n_confirmed = sum(lab for lab, _ in labels.values())
        report.n_rejected = report.n_labelled - report.n_confirmed
        report.categories = dict(Counter(c or "unspecified" for lab, c in labels.values() if lab))
        if rerank:
            _learn_rerank(
                store,
                labels,
                report,
                run_id,
                n_folds=n_folds,
                calibration=calibration,
                embedding_components=embedding_components,
                random_state=random_state,
                progress=progress,
            )
        if pixel:
            _learn_pixel(store, decided, report, run_id, cfg, progress)
    except BaseException as err:
        report.seconds = time.perf_counter() - t0
        store.finish_run(run_id, {**report.as_dict(), "error": repr(err)}, status="failed")
        raise
    report.seconds = round(time.perf_counter() - t0, 3)
    store.finish_run(run_id, report.as_dict())
    logger.info("learned %s", report.as_dict())
    return report


def _learn_rerank(
    store,
    labels,
    report,
    run_id,
    *,
    n_folds,
    calibration,
    embedding_components,
    random_state,
    progress,
    monotone=True,
    rerank_params=None,
) -> None:
    if progress:
        progress("features", 0, 1)
    ft = build_features(store, embedding_components=embedding_components, random_state=random_state)
    if progress:
        progress("features", 1, 1)
    if ft.X.shape[1] == 0:
        report.reranker_skipped = "no features: run `raremine mine` first"
        return
    y = np.full(len(ft.image_ids), np.nan)
    rows = ft.rows(list(labels))
    for r, (label, _) in zip(rows, labels.values(), strict=True):
        if r >= 0:
            y[r] = label
    reason = ReRanker.can_fit(y)
    if reason:
        report.reranker_skipped = reason
        logger.info("re-ranker not trained: %s", reason)
        return
    model = ReRanker(
        n_folds=n_folds,
        calibration=calibration,
        random_state=random_state,
        monotone=monotone_constraints(ft.names) if monotone else None,
        **(rerank_params or {}),
    )
    if progress:
        progress("rerank", 0, 1)
    res = model.fit_predict(ft.X, y)
    if progress:
        progress("rerank", 1, 1)
    lab = ~np.isnan(y)
    folder = os.path.join(models_dir(store.path), f"rerank-run{run_id}")
    model.save(folder)
    metrics = {"oof_ap": average_precision(y[lab], res.proba[lab]), "oof_auroc": auroc(y[lab], res.proba[lab])}
    model_id = store.add_model(
        RERANK_SCORER,
        "rerank",
        folder,
        "xgboost-json",
        config={**model.get_params(), "features": ft.names},
        classes=["normal", "rare"],
        metrics={k: (None if np.isnan(v) else v) for k, v in metrics.items()},
    )
    now = time.time()
    values = [
        (
            int(iid),
            RERANK_SCORER,
            float(res.proba[r]),
            json.dumps({"oof": int(lab[r]), "fold": int(res.fold[r]), "std": round(float(res.std[r]), 6)}),
            model_id,
            run_id,
            now,
        )
        for r, iid in enumerate(ft.image_ids)
    ]
    if progress:
        progress("write", 0, len(values))
    with store.transaction() as con:
        con.execute("DELETE FROM scores WHERE scorer = ?", (RERANK_SCORER,))
        con.executemany(
            "INSERT INTO scores (image_id, tile, scorer, score, stats, model_id, run_id, created_at)"
            " VALUES (?, -1, ?, ?, ?, ?, ?, ?)",
            values,
        )
    if progress:
        progress("write", len(values), len(values))
    report.reranker = {
        "model_id": model_id,
        "path": folder,
        "n_folds": model.n_splits_,
        "calibration": calibration,
        "thresholds": [round(t, 4) for t in res.thresholds],
        "n_features": len(ft.names),
        "features": ft.names[:50],
        **metrics,
    }


def _base_pairs(store) -> tuple[dict | None, list[tuple[str, str]]]:
    """The user's own training set of the current pixel model (``raremine fit-pixel``'s folders), if still there."""
    import mining.models.pixel as px

    row = store.latest_model("pixel")
    if row is None:
        return None, []
    base = (json.loads(row["config"] or "{}").get("training") or {}).get("base")
    if not base:
        return None, []
    try:
        return base, px.find_training_pairs(base["images"], base["labels"])
    except ValueError as err:
        logger.warning("pixel model %d: training set gone (%s); retraining on painted masks only", row["id"], err)
        return None, []


def _learn_pixel(store, decided, report, run_id, cfg, progress) -> None:
    """Retrain the pixel model from every image decided as a defect with a painted mask, as ``raremine fit-pixel``.

    The masks are those of the image's confirming votes
    (:attr:`mining.catalogue.verdicts.ImageLabel.masks`, the newest one used), so an
    image the consensus rule does not decide as a defect trains nothing here
    either.

    The painted masks become label images (1 background, 2 defect) in a
    training folder beside the catalogue, beside a copy of the training set
    the current model came from (the folders given to ``raremine
    fit-pixel``, kept through every retraining), so painted masks add to
    what the model knew instead of replacing it. :func:`mining.pixel_fit.fit_pixel`
    (the function behind ``raremine fit-pixel``, with the config's ``pixel:``
    section) trains, saves and registers the model, so the next
    ``raremine mine --scorers pixel --rescore`` uses it.

    Image-level verdicts train too: whole images decided as normal (``reject``) become normal
    training images (label images all 1, background), at most as many as the defect images
    plus :data:`MAX_EXTRA_NORMALS` (newest first), so a few verdicts retrain the model even without a
    new mask. The pixel tuning (``pixel.tune``) reruns only when the labelled images have grown
    by half (:data:`RETUNE_GROWTH`) since the model was last tuned; otherwise the previous
    choice is kept and the model retrained with it.
    """
    import shutil

    with_masks = {image_id: lab.masks for (image_id, _), lab in decided.items() if lab.masks}
    paths = {}
    if with_masks:
        ids = sorted(with_masks)
        paths = dict(store.query(f"SELECT id, path FROM images WHERE id IN ({','.join('?' * len(ids))})", ids))
    # newest mask of each image first, then the earlier ones (used when the newest cannot be read)
    masks = [(i, paths[i], m) for i in sorted(with_masks) if i in paths for m in reversed(with_masks[i])]
    normal_ids = sorted(
        (image_id for (image_id, tile), lab in decided.items() if tile == -1 and lab.target == 0), reverse=True
    )
    base_row = store.latest_model("pixel")
    if not masks and not (normal_ids and base_row is not None):
        report.pixel_skipped = "no painted masks on images decided as defects"
        return
    try:
        from mining.learning.pixel_fit import fit_pixel
    except ImportError:
        report.pixel_skipped = f"{len(masks)} painted masks, but the pixel model (mining.models.pixel) is not available"
        return
    import cv2

    from mining.io import UnreadableImage, read_image

    root = os.path.join(models_dir(store.path), "pixel-training", f"run{run_id}")
    images_dir, labels_dir = os.path.join(root, "images"), os.path.join(root, "labels")
    os.makedirs(images_dir, exist_ok=True)
    os.makedirs(labels_dir, exist_ok=True)
    base, base_pairs = _base_pairs(store)
    for img_path, lab_path in base_pairs:  # "base-" stems: never an image id
        stem = "base-" + os.path.splitext(os.path.basename(img_path))[0]
        shutil.copyfile(img_path, os.path.join(images_dir, stem + os.path.splitext(img_path)[1].lower()))
        shutil.copyfile(lab_path, os.path.join(labels_dir, stem + os.path.splitext(lab_path)[1].lower()))
    used = set()
    for image_id, path, mask_path in masks:  # newest mask of an image first
        if image_id in used:
            continue
        try:
            shape = read_image(path).shape[:2]
            mask = read_image(mask_path)
        except UnreadableImage as err:
            logger.warning("painted mask of image %d skipped: %s", image_id, err)
            continue
        mask = mask if mask.ndim == 2 else mask.max(axis=-1)
        if mask.shape != shape:
            logger.warning("mask %s has shape %s, image %s has %s: skipped", mask_path, mask.shape, path, shape)
            continue
        used.add(image_id)
        shutil.copyfile(path, os.path.join(images_dir, f"{image_id}{os.path.splitext(path)[1].lower()}"))
        cv2.imwrite(os.path.join(labels_dir, f"{image_id}.png"), np.where(mask > 0, 2, 1).astype(np.uint8))
    n_defect = len(used) + sum(1 for _, lab in base_pairs if _has_defect(lab))
    if not used and not n_defect:
        report.pixel_skipped = f"none of the {len(masks)} painted masks could be used"
        return
    normals_used = 0
    if normal_ids:
        npaths = dict(
            store.query(f"SELECT id, path FROM images WHERE id IN ({','.join('?' * len(normal_ids))})", normal_ids)
        )
        for image_id in normal_ids[: n_defect + MAX_EXTRA_NORMALS]:
            path = npaths.get(image_id)
            if path is None or image_id in used:
                continue
            try:
                shape = read_image(path).shape[:2]
            except UnreadableImage as err:
                logger.warning("normal image %d skipped: %s", image_id, err)
                continue
            shutil.copyfile(path, os.path.join(images_dir, f"{image_id}{os.path.splitext(path)[1].lower()}"))
            cv2.imwrite(os.path.join(labels_dir, f"{image_id}.png"), np.ones(shape, np.uint8))
            normals_used += 1
    if not used and not normals_used:
        report.pixel_skipped = f"none of the {len(masks)} painted masks could be used"
        return
    reuse = _previous_tuning(base_row, len(base_pairs) + len(used) + normals_used) if cfg.pixel.tune else None
    if progress:
        progress("pixel", 0, 1)
    res = fit_pixel(store, images_dir, labels_dir, config=cfg.pixel, base=base, reuse=reuse)
    if progress:
        progress("pixel", 1, 1)
    report.pixel = {
        "model_id": res["model_id"],
        "path": res["path"],
        "images": len(used),
        "normal_images": normals_used,
        "base_images": len(base_pairs),
        "tuned": reuse is None and "tuning" in res.get("metrics", {}),
    }


#: Normal images (decided ``reject``) beyond the number of defect images that a retraining takes.
MAX_EXTRA_NORMALS = 5
#: The pixel tuning reruns once the labelled images number this many times those it was tuned on.
RETUNE_GROWTH = 1.5


def _has_defect(label_path: str) -> bool:
    import cv2

    lab = cv2.imread(label_path, cv2.IMREAD_UNCHANGED)
    return lab is not None and bool((lab >= 2).any())


def _previous_tuning(row, n_images: int) -> dict | None:
    """The current pixel model's tuning, to reuse while the labels have grown by less than half; else None."""
    if row is None:
        return None
    metrics = json.loads(row["metrics"] or "{}") if isinstance(row["metrics"], str) else (row["metrics"] or {})
    tuning = metrics.get("tuning")
    if not tuning:
        return None
    tuned_on = int(tuning.get("estimate", {}).get("images", 0))  # a reused tuning keeps its own count
    if n_images >= RETUNE_GROWTH * max(1, tuned_on):
        logger.info("pixel labels grew from %d to %d images: tuning again", tuned_on, n_images)
        return None
    return tuning
