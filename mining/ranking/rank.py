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
    "extend_round",
    "fuse",
    "fused_scores",
    "get_strategy",
    "rank",
    "rank_normalize",
    "reviewed_ids",
    "round_size",
    "round_target",
    "select_top",
]

logger = logging.getLogger(__name__)

_TARGET = "rank.target."  # meta key prefix: a round's intended size (chosen step by step)


def reviewed_ids(store: Store) -> set[int]:
    """Images that already have a verdict."""
    return {r[0] for r in store.query("SELECT DISTINCT image_id FROM reviews")}


def round_size(store: Store, round: int) -> int:
    """Candidates a round holds now."""
    return int(store.query("SELECT COUNT(*) FROM candidates WHERE round = ?", (int(round),))[0][0])


def round_target(store: Store, round: int | None = None) -> int:
    """How many candidates a round is meant to hold (its size when written whole).

    A round chosen step by step (``rank(..., target=)`` then
    :func:`extend_round`) records its target in the catalogue's ``meta``
    table; a round written whole holds its target already.
    """
    if round is None:
        round = store.current_round()
    rows = store.query("SELECT value FROM meta WHERE key = ?", (f"{_TARGET}{int(round)}",))
    held = round_size(store, round)
    return max(held, int(rows[0][0])) if rows else held


def rank(
    store: Store,
    *,
    strategy: str = "top",
    n: int = 24,
    weights: Mapping[str, float] | None = None,
    primary: Sequence[str] | None = None,
    fusion: str = "cauchy",
    include_reviewed: bool = False,
    target: int | None = None,
    **kwargs,
) -> int:
    """Choose the next batch of candidates and write it as a new round.

    Parameters
    ----------
    store : Store
    strategy : str, default="top"
        One of :data:`STRATEGIES` or a mixture spec (see :func:`get_strategy`).
    n : int, default=24
        Candidates written now.
    weights : mapping, optional
        Fusion weights per scorer.
    primary : sequence of str, optional
        Primary scorers of the fusion (default :data:`PRIMARY_SCORERS`).
    fusion : {"cauchy", "mean"}, default="cauchy"
        How the scorers' percentiles are combined (config ``rank.fusion``).
    include_reviewed : bool, default=False
        Offer images that already have a verdict again.
    target : int, optional
        The round's intended size when it is chosen step by step: ``n`` now,
        the rest by :func:`extend_round` once the first verdicts are in
        (config ``rank.step``). Default: ``n`` (the round is written whole).
    **kwargs
        Passed to the strategy.

    Returns
    -------
    round : int
        The number of the round written.

    Raises
    ------
    ValueError
        For an unknown strategy, n < 1, target < n, or a catalogue without scores.
    """
    if target is not None and target < n:
        raise ValueError(f"target must be >= n ({n}), got {target}")
    chosen, fs = _choose(store, strategy, n, weights, primary, fusion, include_reviewed, set(), kwargs)
    round_ = _write(store, None, 0, chosen, fs, strategy, target=target if target and target > n else None)[0]
    logger.info("round %d: %d candidates by %s", round_, len(chosen), strategy)
    return round_


def extend_round(
    store: Store,
    *,
    strategy: str = "top",
    n: int = 6,
    weights: Mapping[str, float] | None = None,
    primary: Sequence[str] | None = None,
    fusion: str = "cauchy",
    **kwargs,
) -> int:
    """Add up to ``n`` candidates to the current round, chosen with every verdict given so far.

    The next step of a round chosen step by step (:func:`rank` with
    ``target``): never more than the round's :func:`round_target`, never an
    image the round already holds or one with a verdict. The new candidates
    rank after the round's others.

    Returns
    -------
    int
        Candidates added (0 when the round is full or there is no round).

    Raises
    ------
    ValueError
        For an unknown strategy, n < 1, or a catalogue without scores.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    round_ = store.current_round()
    if round_ == 0:
        return 0
    held = store.query("SELECT image_id, rank FROM candidates WHERE round = ?", (round_,))
    room = round_target(store, round_) - len(held)
    if room <= 0:
        return 0
    in_round = {int(r[0]) for r in held}
    chosen, fs = _choose(store, strategy, min(n, room), weights, primary, fusion, False, in_round, kwargs)
    added = _write(store, round_, None, chosen, fs, strategy)[1]
    logger.info("round %d: %d more candidates by %s", round_, added, strategy)
    return added


def _choose(store, strategy, n, weights, primary, fusion, include_reviewed, exclude, kwargs):
    select = get_strategy(strategy)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    fs = fused_scores(store, weights, primary=primary, rule=fusion)
    if len(fs.image_ids) == 0:
        raise ValueError("the catalogue has no scores yet: run `raremine mine` first")
    rows = np.arange(len(fs.image_ids))
    done = set() if include_reviewed else reviewed_ids(store)
    done |= exclude
    if done:
        rows = rows[~np.isin(fs.image_ids, list(done))]
    chosen = [c if isinstance(c, tuple) else (c, {}) for c in select(fs, rows, n, store=store, **kwargs)]
    return chosen, fs


def _write(store, round_, start, chosen, fs, strategy, *, target=None) -> tuple[int, int]:
    """Write the chosen rows as candidates of ``round_``; return ``(round, candidates written)``.

    ``round_=None`` writes a new round, numbered inside the write
    transaction (two processes ranking at once get two rounds, not one mixed
    round). ``start=None`` extends the round: inside the write transaction,
    the round is read again, so another process that extended it meanwhile
    (a second app server) is neither repeated nor pushed past the round's target.
    """
    now = time.time()
    with store.transaction() as con:
        if round_ is None:
            round_ = int(con.execute("SELECT COALESCE(MAX(round), 0) FROM candidates").fetchone()[0]) + 1
        if start is None:
            held = con.execute("SELECT image_id, rank FROM candidates WHERE round = ?", (round_,)).fetchall()
            taken = {int(r[0]) for r in held}
            row = con.execute("SELECT value FROM meta WHERE key = ?", (f"{_TARGET}{round_}",)).fetchone()
            room = (int(row[0]) if row else len(held)) - len(held)
            chosen = [c for c in chosen if int(fs.image_ids[c[0]]) not in taken][: max(room, 0)]
            start = max((int(r[1]) for r in held), default=0)
        con.executemany(
            "INSERT INTO candidates (round, image_id, tile, rank, strategy, score, why, created_at)"
            " VALUES (?, ?, -1, ?, ?, ?, ?, ?)",
            _rows(round_, start, chosen, fs, strategy, now),
        )
        if target is not None:
            con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"{_TARGET}{round_}", int(target)))
    return round_, len(chosen)


def _rows(round_, start, chosen, fs, strategy, now) -> list[tuple]:
    values = []
    for r, (i, info) in enumerate(chosen):
        picked_by = str(info.get("strategy", strategy))
        why = {"strategy": picked_by, "fused": round(float(np.nan_to_num(fs.fused[i])), 4), "scorers": fs.why(i)}
        why.update({k: v for k, v in info.items() if k != "strategy"})
        values.append(
            (
                round_,
                int(fs.image_ids[i]),
                start + r + 1,
                picked_by,
                float(np.nan_to_num(fs.fused[i])),
                json.dumps(why, default=float),
                now,
            )
        )
    return values
