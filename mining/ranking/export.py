"""Exporting what the catalogue holds: scores and candidates as CSV tables."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from mining.catalogue.store import Store
from mining.ranking.rank import fused_scores
from synthesis.atomic import atomic_write

logger = logging.getLogger(__name__)


def export_scores(
    store: Store,
    out: str | os.PathLike,
    *,
    weights: Mapping[str, float] | None = None,
    primary: Sequence[str] | None = None,
    fusion: str = "cauchy",
) -> int:
    """Write image scores as CSV: ``path,score,<one column per scorer>``, sorted by score.

    ``score`` is the fused score (the scorers' percentiles combined by ``fusion``,
    :func:`mining.ranking.fusion.fuse`, in (0, 1));
    the scorer columns hold each scorer's raw score (empty where missing).
    Higher always means more likely rare.

    Returns
    -------
    int
        Rows written.
    """
    fs = fused_scores(store, weights, primary=primary, rule=fusion)
    paths = dict(store.query("SELECT id, path FROM images"))
    order = np.argsort(-np.nan_to_num(fs.fused, nan=-1), kind="stable")
    with atomic_write(out, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "score", *fs.scorers])
        for i in order:
            w.writerow([paths[int(fs.image_ids[i])], _fmt(fs.fused[i]), *(_fmt(v) for v in fs.raw[i])])
    logger.info("wrote %d scores to %s", len(order), out)
    return len(order)


def export_candidates(store: Store, out: str | os.PathLike, *, round: int | None = None) -> int:
    """Write a round of candidates (default: the current one) as CSV.

    Columns: ``round,rank,path,strategy,score,why`` (``why`` is JSON).

    Returns
    -------
    int
        Rows written.
    """
    rows = store.candidates(round)
    with atomic_write(out, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["round", "rank", "path", "strategy", "score", "why"])
        for r in rows:
            w.writerow(
                [
                    r["round"],
                    r["rank"],
                    r["path"],
                    r["strategy"],
                    _fmt(r["score"]),
                    json.dumps(json.loads(r["why"] or "{}")),
                ]
            )
    return len(rows)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return f"{float(v):.6g}"
