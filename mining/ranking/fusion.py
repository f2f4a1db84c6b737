"""Fusion: the scorers' image scores as one ranking.

Fusion rank-normalises each scorer (its scores become percentiles in (0, 1],
higher = rarer) and combines them over the scorers that scored an image. The
default rule (``"cauchy"``) reads each percentile as a p-value of "this
image is normal" and combines them with the Cauchy combination test (Liu and
Xie, JASA 2020): the weighted mean of ``tan((0.5 - p) * pi)``, turned back
into a probability. One scorer that puts an image far out in its tail
outweighs several that rank it in their middle, as it should when a rare
event shows in one scorer and the others are at chance; the test is valid
whatever the dependence between the scorers. ``"mean"`` is the weighted mean
of the percentiles, where a scorer at chance pulls every defect back to the
middle. No scorer is trusted by default: which one carries the signal differs
from archive to archive (on magnetic tiles the pretrained backbone, on
machined parts a pixel statistic), so the review loop's default strategy
(``adaptive``, :mod:`mining.strategies`) follows each scorer's own ranking as
well as the fused one and lets the verdicts decide. *Primary* scorers
(config ``rank.primary``, default none) remain an option: where one of them
scored an image, the mean runs over the primary scorers alone.
Every image keeps its "why": the percentile each scorer gave it.

This module sits below the scorers, the strategies and :mod:`mining.rank`
(which writes rounds): it imports only the catalogue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mining.catalogue.store import Store
from mining.metrics import rank_normalize


@dataclass
class FusedScores:
    """Image-level scores of a catalogue, fused.

    Attributes
    ----------
    image_ids : ndarray of shape (n,), int64
    scorers : list of str
    raw : ndarray of shape (n, n_scorers), float64
        Scores as stored (NaN where a scorer did not score an image).
    percentiles : ndarray of shape (n, n_scorers), float64
        Rank-normalised scores in (0, 1] (NaN where missing).
    fused : ndarray of shape (n,), float64
        The available percentiles combined (:func:`fuse`), in (0, 1); higher = rarer.
    weights : ndarray of shape (n_scorers,), float64, optional
        The weight each scorer had in the fusion (None: all 1). A scorer
        with weight 0 is left out of the fusion and of the cold start.
    """

    image_ids: np.ndarray
    scorers: list[str]
    raw: np.ndarray
    percentiles: np.ndarray
    fused: np.ndarray
    weights: np.ndarray | None = None

    def why(self, i: int) -> dict:
        """Which scorers ranked row ``i`` high (percentile per scorer, best first)."""
        pairs = zip(self.scorers, self.percentiles[i], strict=True)
        per = {s: round(float(p), 4) for s, p in pairs if not np.isnan(p)}
        return dict(sorted(per.items(), key=lambda kv: -kv[1]))


#: Scorers that alone decide the fused score of every image they scored (``rank.primary``).
PRIMARY_SCORERS: tuple[str, ...] = ()

#: How :func:`fuse` combines the percentiles: ``"cauchy"`` (Cauchy combination of the
#: percentiles read as p-values, the default) or ``"mean"`` (their weighted mean).
FUSION_RULES = ("cauchy", "mean")


def fuse(
    raw: np.ndarray,
    weights: np.ndarray | None = None,
    primary: np.ndarray | None = None,
    rule: str = "cauchy",
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-normalise each column and combine the available ones, weighted.

    Parameters
    ----------
    raw : ndarray of shape (n, k)
        One column per scorer, NaN where missing.
    weights : ndarray of shape (k,), optional
        Non-negative weights (default equal).
    primary : ndarray of shape (k,), bool, optional
        Primary columns: in a row where a primary column with a positive
        weight is available, only the primary columns are averaged
        (default: none is primary, every column counts everywhere).
    rule : {"cauchy", "mean"}, default="cauchy"
        ``"cauchy"``: each percentile ``q`` of a column with ``m`` values
        becomes the p-value ``p = 1 - q + 1 / (2m)`` (clipped to
        ``[1 / (2m), 1 - 1 / (2m)]``), the row's statistic is the weighted
        mean of ``tan((0.5 - p) * pi)`` and the fused score is
        ``0.5 + arctan(statistic) / pi`` (one minus the combined p-value).
        ``"mean"``: the weighted mean of the percentiles.

    Returns
    -------
    percentiles : ndarray of shape (n, k)
    fused : ndarray of shape (n,)
        In (0, 1), higher = rarer; NaN where no scorer scored the row.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2:
        raise ValueError(f"raw must have shape (n, k), got {raw.shape}")
    k = raw.shape[1]
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or (w < 0).any():
        raise ValueError(f"weights must be {k} non-negative numbers, got {weights!r}")
    pct = np.column_stack([rank_normalize(raw[:, j]) for j in range(k)]) if k else raw
    avail = ~np.isnan(pct)
    if primary is not None:
        primary = np.asarray(primary, dtype=bool)
        if primary.shape != (k,):
            raise ValueError(f"primary must be {k} booleans, got shape {primary.shape}")
        has_primary = (avail & primary & (w > 0)).any(axis=1, keepdims=True)
        w = np.where(has_primary, w * primary, w)  # (n, k): per-row weights
    if rule not in FUSION_RULES:
        raise ValueError(f"rule must be one of {FUSION_RULES}, got {rule!r}")
    wsum = (avail * w).sum(axis=1)
    denom = np.where(wsum > 0, wsum, 1)
    if rule == "mean":
        fused = np.where(wsum > 0, np.nansum(np.nan_to_num(pct) * w, axis=1) / denom, np.nan)
        return pct, fused
    half = 0.5 / np.maximum(avail.sum(axis=0), 1)  # per column: half a rank step
    p = np.clip(1.0 - np.nan_to_num(pct, nan=0.5) + half, half, 1.0 - half)
    t = np.tan((0.5 - p) * np.pi)
    stat = (avail * w * t).sum(axis=1) / denom
    fused = np.where(wsum > 0, 0.5 + np.arctan(stat) / np.pi, np.nan)
    return pct, fused


def fused_scores(
    store: Store,
    weights: Mapping[str, float] | None = None,
    scorers: list[str] | None = None,
    primary: Sequence[str] | None = None,
    rule: str = "cauchy",
) -> FusedScores:
    """Read the image-level scores of a catalogue and fuse them.

    Parameters
    ----------
    store : Store
    weights : mapping of scorer name to float, optional
        Weight per scorer (missing names weigh 1; 0 leaves a scorer out, and
        may name a scorer without scores).
    scorers : list of str, optional
        Use only these scorers.
    primary : sequence of str, optional
        Scorers that alone decide the fused score where they scored an image
        (default :data:`PRIMARY_SCORERS`; ``[]`` fuses every scorer everywhere).
    rule : {"cauchy", "mean"}, default="cauchy"
        How the percentiles are combined (:func:`fuse`; config ``rank.fusion``).

    Raises
    ------
    ValueError
        If ``weights`` names a scorer that has no scores.
    """
    ids, names, table = store.score_table(scorers)
    weights = dict(weights or {})
    # a weight of 0 for a scorer that did not run is harmless (a config written for several archives)
    unknown = sorted(n for n in set(weights) - set(names) if weights[n] != 0)
    if unknown:
        raise ValueError(f"weights name scorers without scores: {unknown}; scored: {names}")
    raw = np.full((len(ids), len(names)), np.nan)
    pos = {iid: i for i, iid in enumerate(ids)}
    for j, n in enumerate(names):
        for iid, s in table[n].items():
            raw[pos[iid], j] = s
    w = np.array([float(weights.get(n, 1.0)) for n in names])
    primary = PRIMARY_SCORERS if primary is None else tuple(primary)
    pct, fused = fuse(raw, w, np.array([n in primary for n in names], dtype=bool), rule)
    return FusedScores(np.asarray(ids, dtype=np.int64), names, raw, pct, fused, w)
