"""Evaluation metrics for rankings of rare events (higher score = more likely rare).

AP and AUROC are scikit-learn's (returned as NaN, not an exception, when only
one class is present, so a report over many rounds never stops on one); the
review-budget metrics answer "how many events does a reviewer find". :func:`rank_normalize`
puts any scorer's scores on one scale (percentile ranks), for the scorers and the fusion alike.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score


def _check(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true and scores must have the same length, got {y.shape[0]} and {s.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if np.isnan(s).any():
        raise ValueError("scores must not contain NaN")
    return y.astype(int), s


def average_precision(y_true, scores) -> float:
    """Average precision (area under the precision-recall curve, step-wise); NaN without positives."""
    y, s = _check(y_true, scores)
    return float(average_precision_score(y, s)) if y.any() else float("nan")


def auroc(y_true, scores) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    y, s = _check(y_true, scores)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def _topk_hits(y: np.ndarray, s: np.ndarray, k: int) -> int:
    # stable order on -score: ties keep their input order (a reviewer's queue order)
    order = np.argsort(-s, kind="stable")
    return int(y[order[:k]].sum())


def recall_at_k(y_true, scores, k: int) -> float:
    """Share of all positives among the ``k`` highest scores (ties broken by input order); NaN without positives."""
    y, s = _check(y_true, scores)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return _topk_hits(y, s, k) / y.sum() if y.any() else float("nan")


def recall_at_fraction(y_true, scores, fraction: float) -> float:
    """Recall after reviewing the top ``fraction`` of the images (``ceil(fraction * n)`` of them)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    y, _ = _check(y_true, scores)
    return recall_at_k(y_true, scores, int(np.ceil(fraction * len(y))))


def hits_per_n(y_true, scores, n: int) -> float:
    """Positives found per ``n`` images reviewed, reviewing the top ``n`` (precision at n, times n)."""
    y, s = _check(y_true, scores)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return float(_topk_hits(y, s, min(n, len(y))))


def pixel_auroc(masks, score_maps) -> float:
    """AUROC over all pixels of several images (masks non-zero = defect; maps higher = more suspicious).

    Parameters
    ----------
    masks : sequence of ndarray (H_i, W_i)
    score_maps : sequence of ndarray (H_i, W_i), same shapes as ``masks``
    """
    masks, score_maps = list(masks), list(score_maps)
    if len(masks) != len(score_maps):
        raise ValueError(f"got {len(masks)} masks and {len(score_maps)} score maps")
    for i, (m, s) in enumerate(zip(masks, score_maps, strict=True)):
        if np.shape(m) != np.shape(s):
            raise ValueError(f"mask {i} has shape {np.shape(m)} but its score map {np.shape(s)}")
    if not masks:
        return float("nan")
    y = np.concatenate([(np.asarray(m) > 0).ravel() for m in masks]).astype(int)
    s = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in score_maps])
    return auroc(y, s)


def recall_curve(y_true, scores) -> np.ndarray:
    """Recall after each image reviewed in score order, shape (n,) (index i = i + 1 images reviewed)."""
    y, s = _check(y_true, scores)
    total = max(int(y.sum()), 1)
    return np.cumsum(y[np.argsort(-s, kind="stable")]) / total


def rank_normalize(scores: np.ndarray) -> np.ndarray:
    """Percentile ranks in (0, 1] of the finite values (ties share their mean rank; NaN stays NaN).

    Parameters
    ----------
    scores : ndarray of shape (n,)

    Returns
    -------
    ndarray of shape (n,), float64
    """
    scores = np.asarray(scores, dtype=np.float64)
    out = np.full(scores.shape, np.nan)
    ok = np.isfinite(scores)
    if ok.any():
        out[ok] = rankdata(scores[ok], method="average") / ok.sum()
    return out
