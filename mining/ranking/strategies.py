"""Selection strategies for the next batch of review candidates.

Every strategy is registered in :data:`STRATEGIES` (``raremine rank
--strategy S`` and :func:`mining.rank.rank` find them there through
:func:`get_strategy`); mixtures such as ``"top:0.8,least_confidence:0.2"``
are built by :func:`mixture_strategy`.

Each strategy is ``f(fs, candidates, n, *, store=None, **kwargs)`` and returns
``(row, info)`` pairs in order; ``info["strategy"]`` names the strategy that
picked the row (recorded in ``candidates.strategy``) and the rest of ``info``
goes into the candidate's ``why`` (the probability, the uncertainty, the
category it was picked for...).

Probabilities come from the re-ranker (its scores stored under
:data:`mining.rerank.RERANK_SCORER` by :func:`mining.learn.learn`), or from a
``proba`` keyword: shape (n_rows,) for the rare-event probability, or
(n_rows, n_classes) for several classes. Before any re-ranker exists the
uncertainty strategies fall back to ``top`` and say so in ``why``; ``top``
then uses the fused score, or with ``cold_start="round_robin"`` each
scorer's best in turn (the ``learn.cold_start`` config key, default
``round_robin``, is what the CLI passes). With two classes, least confidence, entropy and margin order the
images identically (all are monotone in ``|p - 0.5|``); they differ with more
classes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable

import numpy as np

from mining.ranking.fusion import FusedScores, rank_normalize
from mining.ranking.rerank import RERANK_SCORER
from mining.ranking.similar import (
    confirmed_vs_rest,
    embedding_spaces,
    like_confirmed,
    like_confirmed_patches,
    like_features,
    patch_sets,
    standardise,
)

logger = logging.getLogger(__name__)


# -- inputs -------------------------------------------------------------------------------
def class_proba(fs: FusedScores, proba: np.ndarray | None = None) -> np.ndarray | None:
    """Class probabilities per row of ``fs``, shape (n, n_classes), or None without a model.

    Parameters
    ----------
    fs : FusedScores
    proba : ndarray of shape (n,) or (n, n_classes), optional
        Given probabilities (rare-event probability when 1-D); default: the
        re-ranker's stored scores.
    """
    if proba is None:
        if RERANK_SCORER not in fs.scorers:
            return None
        proba = fs.raw[:, fs.scorers.index(RERANK_SCORER)]
    P = np.asarray(proba, dtype=np.float64)
    if P.shape[0] != len(fs.image_ids):
        raise ValueError(f"proba must have one row per image ({len(fs.image_ids)}), got shape {P.shape}")
    if P.ndim == 1:
        P = np.column_stack([1 - P, P])
    return P


def _rare_p(P: np.ndarray) -> np.ndarray:
    """Probability of "any rare event" (every class but the first, which is normal)."""
    return P[:, 1:].sum(axis=1)


def uncertainty(P: np.ndarray, kind: str) -> np.ndarray:
    """Uncertainty per row (higher = less sure) from class probabilities (n, n_classes).

    ``least_confidence``: 1 - max p; ``entropy``: -sum p log p;
    ``margin``: 1 - (p_first - p_second). NaN rows (no probability) stay NaN.
    """
    P = np.asarray(P, dtype=np.float64)
    if kind == "least_confidence":
        return 1 - P.max(axis=1)
    if kind == "entropy":
        Q = np.clip(P, 1e-12, 1)
        return -(np.where(P > 0, P * np.log(Q), 0)).sum(axis=1) + np.where(np.isnan(P).any(axis=1), np.nan, 0)
    if kind == "margin":
        S = np.sort(P, axis=1)
        return 1 - (S[:, -1] - S[:, -2])
    raise ValueError(f"kind must be least_confidence, entropy or margin, got {kind!r}")


def _order(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Candidates by decreasing value (NaN last, ties by row order)."""
    v = np.nan_to_num(values[candidates], nan=-np.inf)
    return candidates[np.argsort(-v, kind="stable")]


# -- strategies ---------------------------------------------------------------------------
COLD_STARTS = ("fused", "round_robin")


def round_robin(fs: FusedScores, candidates: np.ndarray, n: int) -> list[tuple[int, dict]]:
    """Each scorer's best unpicked candidate in turn (scorer order as in ``fs``).

    Before any verdict nobody knows which scorer is right; taking each
    scorer's top picks in turn is not diluted by scorers that carry no signal
    for this archive (a mean of rank percentiles is). Scorers the fusion
    gives weight 0 (``rank.weights``) take no turn.
    """
    w = np.ones(len(fs.scorers)) if fs.weights is None else np.asarray(fs.weights, float)
    names = [j for j, name in enumerate(fs.scorers) if name != RERANK_SCORER and w[j] > 0]
    if len(names) <= 1:
        return [(int(i), {"by": "fused"}) for i in _order(fs.fused, candidates)[:n]]
    lists = [_order(fs.raw[:, j], candidates) for j in names]
    picks: list[tuple[int, dict]] = []
    taken: set[int] = set()
    pos = [0] * len(lists)
    while len(picks) < min(n, len(candidates)):
        for k, j in enumerate(names):
            while pos[k] < len(lists[k]) and int(lists[k][pos[k]]) in taken:
                pos[k] += 1
            if pos[k] < len(lists[k]) and len(picks) < n:
                i = int(lists[k][pos[k]])
                taken.add(i)
                picks.append((i, {"by": "round_robin", "scorer": fs.scorers[j], "scorer_rank": pos[k] + 1}))
    return picks


def select_top(
    fs: FusedScores, candidates: np.ndarray, n: int, *, proba=None, cold_start: str = "fused", **_
) -> list[tuple[int, dict]]:
    """Most likely rare first ("find more events").

    Uses the re-ranker's probability once there is one. Before that
    (``cold_start``): the fused score (``"fused"``), or each scorer's best in
    turn (``"round_robin"``, see :func:`round_robin`).
    """
    if cold_start not in COLD_STARTS:
        raise ValueError(f"cold_start must be one of {COLD_STARTS}, got {cold_start!r}")
    P = class_proba(fs, proba)
    if P is None:
        if cold_start == "round_robin":
            return [(i, {"strategy": "top", **info}) for i, info in round_robin(fs, candidates, n)]
        return [(int(i), {"strategy": "top", "by": "fused"}) for i in _order(fs.fused, candidates)[:n]]
    p = _rare_p(P)
    return [
        (int(i), {"strategy": "top", "by": "rerank", "p": round(float(p[i]), 4)}) for i in _order(p, candidates)[:n]
    ]


def _uncertainty_strategy(kind: str):
    def select(fs: FusedScores, candidates: np.ndarray, n: int, *, proba=None, **kw) -> list[tuple[int, dict]]:
        P = class_proba(fs, proba)
        if P is None:
            picks = select_top(fs, candidates, n, **kw)
            return [(i, {**info, "strategy": kind, "fallback": "no re-ranker yet: top"}) for i, info in picks]
        u = uncertainty(P, kind)
        p = _rare_p(P)
        return [
            (int(i), {"strategy": kind, "p": round(float(p[i]), 4), kind: round(float(u[i]), 4)})
            for i in _order(u, candidates)[:n]
        ]

    select.__name__ = f"select_{kind}"
    select.__doc__ = f"Most uncertain first by {kind.replace('_', ' ')} of the re-ranker's class probabilities."
    return select


select_least_confidence = _uncertainty_strategy("least_confidence")
select_entropy = _uncertainty_strategy("entropy")
select_margin = _uncertainty_strategy("margin")


def select_random(fs: FusedScores, candidates: np.ndarray, n: int, *, random_state=None, **_) -> list[tuple[int, dict]]:
    """A uniform random sample (``random_state``: seed or Generator)."""
    rng = np.random.default_rng(random_state)
    picks = rng.choice(candidates, size=min(n, len(candidates)), replace=False) if len(candidates) else []
    return [(int(i), {"strategy": "random"}) for i in picks]


def row_vectors(fs: FusedScores, store=None, embedding: str | None = None) -> tuple[np.ndarray, str]:
    """A vector per row of ``fs`` for distances, and where it came from.

    The named ``embedding`` (or the first one stored), standardised; without
    embeddings, the re-ranker's standardised feature table; without a store,
    the scorers' percentiles.
    """
    if store is not None:
        names = [r[0] for r in store.query("SELECT DISTINCT name FROM embeddings WHERE tile = -1 ORDER BY name")]
        if embedding is not None and embedding not in names:
            raise ValueError(f"unknown embedding {embedding!r}; stored embeddings: {names}")
        if names:
            name = embedding or names[0]
            from mining.ranking.rerank import build_features

            ft = build_features(store, embeddings=[name], scorers=[], embedding_components=32)
            return standardise(ft.X[ft.rows(fs.image_ids)]), f"embedding {name}"
        from mining.ranking.rerank import build_features

        ft = build_features(store, embedding_components=0)
        if ft.X.shape[1]:
            return standardise(ft.X[ft.rows(fs.image_ids)]), "features"
    return standardise(fs.percentiles), "percentiles"


def k_center_greedy(V: np.ndarray, centers: np.ndarray, candidates: np.ndarray, n: int) -> list[int]:
    """Pick ``n`` candidate rows, each the farthest from everything chosen or given so far.

    Parameters
    ----------
    V : ndarray of shape (n_rows, d)
    centers : ndarray of int
        Rows already covered (e.g. reviewed images); when empty the first
        pick is the candidate farthest from the candidates' mean.
    candidates : ndarray of int
    n : int

    Returns
    -------
    list of int (rows, in pick order)
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    if len(candidates) == 0 or n <= 0:
        return []
    C = V[candidates]
    if len(centers):
        d = (
            np.min(np.linalg.norm(C[:, None, :] - V[np.asarray(centers)][None, :, :], axis=2), axis=1)
            if len(centers) * len(candidates) <= 4_000_000
            else _min_dist_chunked(C, V[np.asarray(centers)])
        )
    else:
        d = np.linalg.norm(C - C.mean(axis=0), axis=1)
    picks = []
    for _ in range(min(n, len(candidates))):
        j = int(np.argmax(d))
        picks.append(int(candidates[j]))
        d = np.minimum(d, np.linalg.norm(C - C[j], axis=1))
        d[j] = -np.inf
    return picks


def _min_dist_chunked(C: np.ndarray, centers: np.ndarray, chunk: int = 512) -> np.ndarray:
    d = np.full(len(C), np.inf)
    for s in range(0, len(centers), chunk):
        block = centers[s : s + chunk]
        d = np.minimum(d, np.min(np.linalg.norm(C[:, None, :] - block[None, :, :], axis=2), axis=1))
    return d


def select_diversity(
    fs: FusedScores, candidates: np.ndarray, n: int, *, store=None, embedding=None, vectors=None, **_
) -> list[tuple[int, dict]]:
    """Cover the archive: k-center greedy over an embedding, reviewed images as starting centers.

    ``vectors`` (n_rows, d) overrides the embedding (tests, custom spaces).
    """
    if vectors is not None:
        V, source = np.asarray(vectors, dtype=np.float64), "vectors"
    else:
        V, source = row_vectors(fs, store, embedding)
    centers = np.setdiff1d(np.arange(len(fs.image_ids)), candidates)
    return [(i, {"strategy": "diversity", "space": source}) for i in k_center_greedy(V, centers, candidates, n)]


def select_balanced(
    fs: FusedScores,
    candidates: np.ndarray,
    n: int,
    *,
    store=None,
    per_category: int = 1,
    base: str = "least_confidence",
    categories: dict | None = None,
    proba=None,
    vectors=None,
    embedding=None,
    **kw,
) -> list[tuple[int, dict]]:
    """Category-balanced: at least ``per_category`` picks for every known category, the rest by ``base``.

    A known category is one given to a confirmed image (``categories`` maps
    row -> category to override the catalogue's consensus). Each candidate is
    assigned the category of its nearest confirmed image (in the space of
    :func:`row_vectors`, or ``vectors``); per category the candidates with
    the highest rare-event probability (fused score before any model) are
    taken first.
    """
    if per_category < 0:
        raise ValueError(f"per_category must be >= 0, got {per_category}")
    if base == "balanced" or base not in STRATEGIES:
        raise ValueError(f"base must be one of {sorted(set(STRATEGIES) - {'balanced'})}, got {base!r}")
    if categories is None:
        categories = {}
        if store is not None:
            from mining.ranking.rerank import consensus_labels

            pos = {int(iid): r for r, iid in enumerate(fs.image_ids)}
            for iid, (label, cat) in consensus_labels(store).items():
                if label == 1 and cat and iid in pos:
                    categories[pos[iid]] = cat
    picks: list[tuple[int, dict]] = []
    if categories and per_category:
        if vectors is not None:
            V = np.asarray(vectors, dtype=np.float64)
        else:
            V, _ = row_vectors(fs, store, embedding)
        known_rows = np.array(sorted(categories), dtype=np.int64)
        known_cats = np.array([categories[r] for r in known_rows])
        cand = np.asarray(candidates, dtype=np.int64)
        if len(cand):
            nearest = np.argmin(np.linalg.norm(V[cand][:, None, :] - V[known_rows][None, :, :], axis=2), axis=1)
            assigned = known_cats[nearest]
            P = class_proba(fs, proba)
            score = _rare_p(P) if P is not None else np.nan_to_num(fs.fused, nan=-1)
            for cat in sorted(set(known_cats)):
                rows = cand[assigned == cat]
                for i in _order(score, rows)[:per_category]:
                    if len(picks) < n:
                        picks.append((int(i), {"strategy": "balanced", "category": str(cat)}))
    taken = {i for i, _ in picks}
    rest = np.array([c for c in candidates if c not in taken], dtype=np.int64)
    for i, info in STRATEGIES[base](
        fs, rest, n - len(picks), store=store, proba=proba, vectors=vectors, embedding=embedding, **kw
    ):
        picks.append((int(i), {**info, "strategy": "balanced", "via": info.get("strategy", base)}))
    return picks[:n]


# -- adaptive: the verdicts decide which signal to follow ---------------------------------
def adaptive_arms(
    fs: FusedScores, store=None, labels: dict[int, int] | None = None, random_state=None
) -> dict[str, np.ndarray]:
    """The rankings the adaptive strategy chooses between, as one value column per arm (higher = pick first).

    Arms: every scorer with a positive fusion weight; the fused score (with
    two scorers or more); the re-ranker's probability once it exists; and,
    once an image is confirmed, two "more like this" arms:

    - ``like``: an image's best percentile of closeness to a confirmed image
      over every stored embedding (:func:`like_confirmed`) and every patch
      set (:func:`like_confirmed_patches`). Which space finds a defect's kin
      differs by archive (the patch sets on small local defects, the
      whole-image vectors on defects that change the whole image); one arm
      over all of them takes each space's nearest in turn without adding an
      arm, and so exploration, per space;
    - ``learned``: a linear classifier of the confirmed images against all
      the others over the same spaces and the scorers' percentiles
      (:func:`confirmed_vs_rest`), which learns the directions that set the
      confirmed images apart instead of weighing every direction alike.
    """
    w = np.ones(len(fs.scorers)) if fs.weights is None else np.asarray(fs.weights, float)
    arms = {name: fs.raw[:, j] for j, name in enumerate(fs.scorers) if name != RERANK_SCORER and w[j] > 0}
    if len(arms) >= 2:
        arms["fused"] = fs.fused
    if RERANK_SCORER in fs.scorers:
        arms[RERANK_SCORER] = fs.raw[:, fs.scorers.index(RERANK_SCORER)]
    if store is not None and labels:
        pos = {int(iid): r for r, iid in enumerate(fs.image_ids)}
        confirmed = np.array(sorted(pos[i] for i, y in labels.items() if y == 1 and i in pos), dtype=np.int64)
        if len(confirmed):
            spaces, sets = embedding_spaces(store, fs), patch_sets(store, fs)
            like = [like_confirmed(V, confirmed) for V in spaces.values()]
            like += [like_confirmed_patches(P, confirmed) for P in sets.values()]
            like = [v for v in like if not np.isnan(v).all()]
            if like:
                # one arm, whichever space an image is close in: its best percentile over the spaces
                arms["like"] = np.fmax.reduce(np.column_stack([rank_normalize(v) for v in like]), axis=1)
            F = like_features(store, fs, spaces, sets)
            if F is not None:
                learned = confirmed_vs_rest(F, confirmed, random_state=random_state)
                if not np.isnan(learned).all():
                    arms["learned"] = learned
    return arms


def pick_history(store) -> list[tuple[int, str]]:
    """(image id, arm) of every earlier pick of the adaptive strategy (the ``by`` of its ``why``)."""
    out = []
    for image_id, why in store.query("SELECT image_id, why FROM candidates WHERE strategy = 'adaptive' AND tile = -1"):
        try:
            arm = json.loads(why or "{}").get("by")
        except ValueError:
            continue
        if arm:
            out.append((int(image_id), str(arm)))
    return out


def arm_evidence(arms: dict[str, np.ndarray], image_ids: np.ndarray, labels: dict[int, int], history) -> np.ndarray:
    """Hits and misses of each arm (rows in the order of ``arms``): its ranking replayed on the verdicts.

    An arm is judged on every image it ranks as high as the deepest of its
    own picks: an arm picks its best image not yet taken, so all of those
    have been reviewed, whichever arm picked them, and their verdicts are its
    precision down to that depth. A defect found by one ranking also counts
    for every ranking that had it as high, and none is credited for a defect
    it ranks low, so the arm that carries the signal stands out after fewer
    picks of its own. This holds for the arms built from the verdicts too:
    their value for an image with a verdict never uses that verdict ("more
    like this" compares a confirmed image with the *other* confirmed images,
    the learned arm and the re-ranker score it out of fold). An arm without
    picks of its own (or whose picks it no longer ranks at all) has no
    evidence: the prior alone.

    Parameters
    ----------
    arms : dict of str to ndarray of shape (n,)
        One value column per arm, higher = picked first (NaN: never).
    image_ids : ndarray of shape (n,)
    labels : dict of int to int
        Image id -> 1 (confirmed) or 0 (rejected).
    history : sequence of (image id, arm)
        Earlier picks (:func:`pick_history`).

    Returns
    -------
    ndarray of shape (n_arms, 2)
        ``[hits, misses]`` per arm.
    """
    names = list(arms)
    evidence = np.zeros((len(names), 2))
    row_of = {int(iid): r for r, iid in enumerate(image_ids)}
    lab_rows = np.array([row_of[i] for i in labels if i in row_of], dtype=np.int64)
    lab_y = np.array([labels[int(image_ids[r])] for r in lab_rows], dtype=np.int64)
    own: dict[str, list[int]] = {}
    for image_id, arm in history:
        if arm in arms and int(image_id) in row_of:
            own.setdefault(arm, []).append(row_of[int(image_id)])
    for k, name in enumerate(names):
        values = np.asarray(arms[name], dtype=np.float64)
        picked = [r for r in own.get(name, []) if np.isfinite(values[r])]
        if not picked or not len(lab_rows):
            continue
        order = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")
        rank_of = np.empty(len(order), dtype=np.int64)
        rank_of[order] = np.arange(len(order))
        inside = (rank_of[lab_rows] <= rank_of[picked].max()) & np.isfinite(values[lab_rows])
        evidence[k] = [(lab_y[inside] == 1).sum(), (lab_y[inside] == 0).sum()]
    return evidence


def select_adaptive(
    fs: FusedScores,
    candidates: np.ndarray,
    n: int,
    *,
    store=None,
    labels=None,
    history=None,
    random_state=None,
    **_,
) -> list[tuple[int, dict]]:
    """Follow whichever signal the verdicts say finds rare events (Thompson sampling over rankings).

    Nobody knows beforehand which scorer carries the signal on a given
    archive, so each ranking of :func:`adaptive_arms` is an arm of a bandit.
    An arm's evidence is how its own ranking did down to the depth its picks
    have reached: ``hits`` confirmed, ``misses`` rejected among the images it
    ranks that high, whichever arm picked them (:func:`arm_evidence`). Each pick draws a success rate per arm
    from Beta(a + hits, b + misses), where a and b are a weak prior around
    the hit rate of all verdicts so far, and takes the best unpicked
    candidate of the arm that drew highest. Before any verdict every arm
    draws from the same prior, so the first round takes each scorer's best in
    turn; from then on the picks follow the arms that find defects, including
    "more like this" from confirmed images (nearest and learned) and the re-ranker.

    ``labels`` (image id -> 1 / 0) overrides the catalogue's consensus
    verdicts and ``history`` ((image id, arm) pairs) the catalogue's record
    of earlier picks (:func:`pick_history`).
    """
    if labels is None:
        labels = {}
        if store is not None:
            from mining.ranking.rerank import consensus_labels

            labels = {i: y for i, (y, _cat) in consensus_labels(store).items()}
    if history is None:
        history = pick_history(store) if store is not None else []
    arms = adaptive_arms(fs, store, labels, random_state=random_state)
    if not arms:
        return [(int(i), {"strategy": "adaptive", "by": "fused"}) for i in _order(fs.fused, candidates)[:n]]
    y = np.full(len(fs.image_ids), -1)
    for r, iid in enumerate(fs.image_ids):
        if int(iid) in labels:
            y[r] = labels[int(iid)]
    names = list(arms)
    evidence = arm_evidence(arms, fs.image_ids, labels, history)
    # Empirical-Bayes prior: an arm without evidence of its own is expected to do as well as the
    # verdicts so far (a Beta of strength 2 around their hit rate; Beta(1, 1) before any verdict),
    # so a new arm is tried without taking the round from an arm that finds defects.
    rate = ((y == 1).sum() + 1) / ((y >= 0).sum() + 2)
    prior = np.array([2 * rate, 2 * (1 - rate)])
    orders = [_order(arms[a], candidates) for a in names]
    rng = np.random.default_rng(random_state)
    pos = [0] * len(names)
    taken: set[int] = set()
    picks: list[tuple[int, dict]] = []
    live = np.ones(len(names), dtype=bool)
    while len(picks) < min(n, len(candidates)) and live.any():
        draw = rng.beta(prior[0] + evidence[:, 0], prior[1] + evidence[:, 1])
        draw[~live] = -1
        k = int(np.argmax(draw))
        while pos[k] < len(orders[k]) and (
            int(orders[k][pos[k]]) in taken or np.isnan(arms[names[k]][orders[k][pos[k]]])
        ):
            pos[k] += 1
        if pos[k] >= len(orders[k]):
            live[k] = False
            continue
        i = int(orders[k][pos[k]])
        taken.add(i)
        hits, misses = evidence[k]
        picks.append(
            (
                i,
                {
                    "strategy": "adaptive",
                    "by": names[k],
                    "arm_rank": pos[k] + 1,
                    "arm_hits": int(hits),
                    "arm_misses": int(misses),
                },
            )
        )
    if len(picks) < min(n, len(candidates)):  # every arm ran dry (NaN everywhere): fill by the fused score
        rest = np.array([c for c in candidates if int(c) not in taken], dtype=np.int64)
        picks += [(int(i), {"strategy": "adaptive", "by": "fused"}) for i in _order(fs.fused, rest)[: n - len(picks)]]
    return picks


# -- mixtures -----------------------------------------------------------------------------
_MIX_PART = re.compile(r"^\s*([a-z_]+)\s*:\s*([0-9]*\.?[0-9]+)\s*$")


def parse_mixture(spec: str) -> list[tuple[str, float]]:
    """``"top:0.8,least_confidence:0.2"`` -> [("top", 0.8), ("least_confidence", 0.2)] (shares normalised).

    Raises
    ------
    ValueError
        Naming the bad part, an unknown strategy (with the valid ones) or non-positive shares.
    """
    parts = []
    for part in spec.split(","):
        m = _MIX_PART.match(part)
        if not m:
            raise ValueError(f"bad mixture part {part!r} in {spec!r}: expected name:share, e.g. top:0.8")
        name, share = m.group(1), float(m.group(2))
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r} in mixture {spec!r}; valid: {', '.join(sorted(STRATEGIES))}")
        parts.append((name, share))
    total = sum(s for _, s in parts)
    if total <= 0:
        raise ValueError(f"mixture {spec!r} needs a positive share")
    return [(name, s / total) for name, s in parts]


def mixture_counts(parts: list[tuple[str, float]], n: int) -> list[int]:
    """Split ``n`` picks by share (largest remainder, ties to the first part)."""
    raw = [s * n for _, s in parts]
    counts = [int(np.floor(r)) for r in raw]
    for j in sorted(range(len(parts)), key=lambda j: -(raw[j] - counts[j]))[: n - sum(counts)]:
        counts[j] += 1
    return counts


def mixture_strategy(spec: str):
    """A strategy that takes each part's share of the batch in turn, never the same image twice."""
    parts = parse_mixture(spec)

    def select(fs: FusedScores, candidates: np.ndarray, n: int, **kw) -> list[tuple[int, dict]]:
        picks: list[tuple[int, dict]] = []
        remaining = np.asarray(candidates, dtype=np.int64)
        for (name, _), k in zip(parts, mixture_counts(parts, n), strict=True):
            if k == 0:
                continue
            got = [(c if isinstance(c, tuple) else (c, {})) for c in STRATEGIES[name](fs, remaining, k, **kw)]
            picks += [(int(i), {**info, "strategy": info.get("strategy", name), "mixture": spec}) for i, info in got]
            remaining = np.setdiff1d(remaining, [i for i, _ in got])
        return picks

    select.__name__ = "select_mixture"
    return select


#: strategy name -> function(fused_scores, candidate_rows, n, **kwargs) -> row indices or
#: ``(row, info)`` pairs: ``info["strategy"]`` (when given) is recorded as the candidate's
#: strategy and the rest of ``info`` is added to its ``why``. Mixtures such as
#: ``"top:0.8,least_confidence:0.2"`` are built by :func:`get_strategy`.
STRATEGIES: dict[str, Callable[..., list]] = dict(
    {
        "top": select_top,
        "least_confidence": select_least_confidence,
        "entropy": select_entropy,
        "margin": select_margin,
        "random": select_random,
        "diversity": select_diversity,
        "balanced": select_balanced,
        "adaptive": select_adaptive,
    }
)


def get_strategy(name: str) -> Callable[..., list]:
    """The selection function for a strategy name or a mixture spec.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid ones.
    """
    if name in STRATEGIES:
        return STRATEGIES[name]
    if ":" in name or "," in name:
        return mixture_strategy(name)
    raise ValueError(
        f"unknown strategy {name!r}; valid strategies: {', '.join(sorted(STRATEGIES))}"
        " (or a mixture such as 'top:0.8,least_confidence:0.2')"
    )
