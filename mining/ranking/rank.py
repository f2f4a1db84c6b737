"""Ranking: choose the next batch for review and write it as a round.

The scores are fused by :mod:`mining.fusion` (re-exported here) and the batch
is chosen by a strategy of :data:`mining.strategies.STRATEGIES` (also
re-exported, with :func:`~mining.strategies.get_strategy`); :func:`rank`
writes the chosen images as a new round of candidates, each with its "why".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np

from mining.catalogue.store import Store
from mining.ranking.fusion import PRIMARY_SCORERS, FusedScores, fuse, fused_scores, rank_normalize
from mining.ranking.strategies import STRATEGIES, get_strategy, select_top

__all__ = [
    "PRIMARY_SCORERS",
    "STRATEGIES",
    "FusedScores",
    "fuse",
    "fused_scores",
    "get_strategy",
    "rank",
    "rank_normalize",
    "reviewed_ids",
    "select_top",
]

logger = logging.getLogger(__name__)


def reviewed_ids(store: Store) -> set[int]:
    """Images that already have a verdict."""
    return {r[0] for r in store.query("SELECT DISTINCT image_id FROM reviews")}


def rank(
    store: Store,
    *,
    strategy: str = "top",
    n: int = 24,
    weights: Mapping[str, float] | None = None,
    primary: Sequence[str] | None = None,
    fusion: str = "cauchy",
    include_reviewed: bool = False,
    **kwargs,
) -> int:
    """Choose the next batch of candidates and write it as a new round.

    Parameters
    ----------
    store : Store
    strategy : str, default="top"
        One of :data:`STRATEGIES` or a mixture spec (see :func:`get_strategy`).
    n : int, default=24
        Candidates in the round.
    weights : mapping, optional
        Fusion weights per scorer.
    primary : sequence of str, optional
        Primary scorers of the fusion (default :data:`PRIMARY_SCORERS`).
    fusion : {"cauchy", "mean"}, default="cauchy"
        How the scorers' percentiles are combined (config ``rank.fusion``).
    include_reviewed : bool, default=False
        Offer images that already have a verdict again.
    **kwargs
        Passed to the strategy.

    Returns
    -------
    round : int
        The number of the round written.

    Raises
    ------
    ValueError
        For an unknown strategy, n < 1, or a catalogue without scores.
    """
    select = get_strategy(strategy)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    fs = fused_scores(store, weights, primary=primary, rule=fusion)
    if len(fs.image_ids) == 0:
        raise ValueError("the catalogue has no scores yet: run `raremine mine` first")
    rows = np.arange(len(fs.image_ids))
    if not include_reviewed:
        done = reviewed_ids(store)
        rows = rows[~np.isin(fs.image_ids, list(done))]
    chosen = [c if isinstance(c, tuple) else (c, {}) for c in select(fs, rows, n, store=store, **kwargs)]
    round_ = store.current_round() + 1
    now = time.time()
    values = []
    for r, (i, info) in enumerate(chosen):
        picked_by = str(info.get("strategy", strategy))
        why = {"strategy": picked_by, "fused": round(float(np.nan_to_num(fs.fused[i])), 4), "scorers": fs.why(i)}
        why.update({k: v for k, v in info.items() if k != "strategy"})
        values.append(
            (
                round_,
                int(fs.image_ids[i]),
                r + 1,
                picked_by,
                float(np.nan_to_num(fs.fused[i])),
                json.dumps(why, default=float),
                now,
            )
        )
    with store.transaction() as con:
        con.executemany(
            "INSERT INTO candidates (round, image_id, tile, rank, strategy, score, why, created_at)"
            " VALUES (?, ?, -1, ?, ?, ?, ?, ?)",
            values,
        )
    logger.info("round %d: %d candidates by %s", round_, len(chosen), strategy)
    return round_
