"""Similar images: "more like this" from the images a reviewer confirmed.

Two ways to find a confirmed defect's kin, both used as arms of the adaptive
strategy (:func:`mining.ranking.strategies.adaptive_arms`):

- nearest neighbours: :func:`like_confirmed` in every stored whole-image
  embedding (:func:`embedding_spaces`) and :func:`like_confirmed_patches` in
  every patch set (:func:`patch_sets`, an image's hottest patch features);
- learned: :func:`confirmed_vs_rest`, a linear classifier of the confirmed
  images against all the others over the same spaces
  (:func:`like_features`).
"""

from __future__ import annotations

import hashlib
import os
import threading

import numpy as np

from mining.catalogue.store import PATCH_SET_SUFFIX, is_patch_set, unpack_patch_set
from mining.ranking.fusion import FusedScores
from mining.ranking.rerank import RERANK_SCORER


def standardise(V: np.ndarray) -> np.ndarray:
    """Columns z-scored (NaN-aware); NaN and constant columns become 0.

    Parameters
    ----------
    V : ndarray of shape (n, d)

    Returns
    -------
    ndarray of shape (n, d), float64
    """
    V = np.asarray(V, dtype=np.float64)
    mu, sd = np.nanmean(V, axis=0), np.nanstd(V, axis=0)
    return np.nan_to_num((V - np.nan_to_num(mu)) / np.where(np.nan_to_num(sd) > 0, sd, 1))


#: Rows a whole-image space's PCA is fitted on (a seeded sample beyond it; every row is projected).
PCA_FIT_ROWS = 20000

_SPACES: dict = {}  # the last catalogue's spaces (one entry), shared by the steps of a round
_SPACES_LOCK = threading.Lock()


def embedding_spaces(store, fs: FusedScores, components: int = 32) -> dict[str, np.ndarray]:
    """Every stored whole-image embedding per row of ``fs``: columns z-scored, then PCA (NaN rows: missing).

    The PCA of a space is fitted on at most :data:`PCA_FIT_ROWS` rows (a
    seeded sample of a larger archive: enough to estimate its leading
    directions) and every row is projected. The spaces do not depend on the
    verdicts, so the last catalogue's are kept in memory, read-only, until
    its embeddings or its scored images change: the steps of a round reuse
    them (see :func:`mining.ranking.rank.extend_round`).
    """
    key = _spaces_key(store, fs, components)
    with _SPACES_LOCK:
        hit = _SPACES.get(key)
    if hit is not None:
        return dict(hit)
    spaces = _embedding_spaces(store, fs, components)
    for V in spaces.values():
        V.flags.writeable = False
    with _SPACES_LOCK:
        _SPACES.clear()
        _SPACES[key] = spaces
    return dict(spaces)


def _spaces_key(store, fs: FusedScores, components: int) -> tuple:
    count, last = store.query("SELECT COUNT(*), MAX(rowid) FROM embeddings WHERE tile = -1")[0]
    ids = hashlib.sha256(np.ascontiguousarray(fs.image_ids, dtype=np.int64).tobytes()).hexdigest()
    return (os.path.realpath(store.path), int(count), last, ids, int(components))


def _embedding_spaces(store, fs: FusedScores, components: int) -> dict[str, np.ndarray]:
    from sklearn.decomposition import PCA

    pos = {int(iid): r for r, iid in enumerate(fs.image_ids)}
    vectors: dict[str, dict[int, np.ndarray]] = {}
    for image_id, name, blob in store.query("SELECT image_id, name, vector FROM embeddings WHERE tile = -1"):
        if image_id in pos and not is_patch_set(name):
            vectors.setdefault(name, {})[pos[image_id]] = np.frombuffer(blob, dtype=np.float32)
    spaces = {}
    for name in sorted(vectors):
        rows = np.array(sorted(vectors[name]))
        if len({vectors[name][r].size for r in rows}) != 1 or len(rows) < 3:
            continue
        V = np.stack([vectors[name][r] for r in rows]).astype(np.float64)
        V = (V - V.mean(axis=0)) / np.where(V.std(axis=0) > 0, V.std(axis=0), 1)
        k = min(components, V.shape[1], len(rows) - 1)
        if V.shape[1] > k:
            fit = V
            if len(V) > PCA_FIT_ROWS:
                fit = V[np.sort(np.random.default_rng(0).choice(len(V), PCA_FIT_ROWS, replace=False))]
            Z = PCA(n_components=k, random_state=0).fit(fit).transform(V)
        else:
            Z = V
        out = np.full((len(fs.image_ids), Z.shape[1]), np.nan)
        out[rows] = Z
        spaces[name] = out
    return spaces


def patch_sets(store, fs: FusedScores) -> dict[str, np.ndarray]:
    """Every stored patch set (name -> array of shape (n, K, D)) per row of ``fs`` (NaN rows: missing).

    K is the most common number of patches of a set's rows; a row with
    another shape (an image smaller than K patches, another configuration) is
    left out.
    """
    pos = {int(iid): r for r, iid in enumerate(fs.image_ids)}
    sets: dict[str, dict[int, np.ndarray]] = {}
    for image_id, name, blob in store.query(
        "SELECT image_id, name, vector FROM embeddings WHERE tile = -1 AND name LIKE ?", ("%" + PATCH_SET_SUFFIX,)
    ):
        if image_id in pos and is_patch_set(name):
            P = unpack_patch_set(blob)
            if P is not None:
                sets.setdefault(name, {})[pos[image_id]] = P
    out = {}
    for name in sorted(sets):
        shapes = [v.shape for v in sets[name].values()]
        shape = max(set(shapes), key=shapes.count)
        P = np.full((len(fs.image_ids), *shape), np.nan, dtype=np.float32)
        for r, v in sets[name].items():
            if v.shape == shape:
                P[r] = v
        out[name] = P
    return out


def like_confirmed_patches(P: np.ndarray, confirmed: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Patch-level "more like this": closeness of every row's patches to a confirmed row's hottest patch.

    A defect a few pixels wide barely moves an image's global vector, but its
    patch is where the image differs most from the archive: the first patch
    of a confirmed row's set. Every row is scored by the distance of its
    nearest patch (of its set) to the nearest such confirmed patch; features
    are standardised by the spread of all stored patches. As in
    :func:`like_confirmed`, a confirmed row is compared with the *other*
    confirmed rows only.

    Parameters
    ----------
    P : ndarray of shape (n, K, D)
        Patch sets, hottest patch first (rows with NaN get NaN).
    confirmed : ndarray of int
        Rows confirmed as rare events.
    chunk : int, default=4096
        Rows per block (bounds memory).

    Returns
    -------
    ndarray of shape (n,)
        Minus the distance; NaN without a usable confirmed row.
    """
    out = np.full(len(P), np.nan)
    good = ~np.isnan(P).any(axis=(1, 2))
    confirmed = np.array([c for c in np.asarray(confirmed, dtype=np.int64) if good[c]], dtype=np.int64)
    if len(confirmed) == 0:
        return out
    flat = P[good].reshape(-1, P.shape[2]).astype(np.float64)
    mu, sd = flat.mean(axis=0), flat.std(axis=0)
    sd = np.where(sd > 0, sd, 1)
    Q = (P[confirmed, 0, :] - mu) / sd  # (c, D): each confirmed row's hottest patch
    rows = np.flatnonzero(good)
    for s in range(0, len(rows), chunk):
        r = rows[s : s + chunk]
        X = (P[r] - mu) / sd  # (m, K, D)
        d2 = ((X[:, :, None, :] - Q[None, None, :, :]) ** 2).sum(axis=3).min(axis=1)  # (m, c)
        d2[r[:, None] == confirmed[None, :]] = np.inf
        best = d2.min(axis=1)
        out[r] = np.where(np.isfinite(best), -np.sqrt(best), np.nan)
    return out


def like_confirmed(V: np.ndarray, confirmed: np.ndarray) -> np.ndarray:
    """Closeness of every row to its nearest confirmed row ("more like this"); higher = closer.

    A confirmed row is compared with the *other* confirmed rows only, so the
    value of a labelled row says how well the space predicts it (leave one out).

    Parameters
    ----------
    V : ndarray of shape (n, d)
        Vectors (rows with NaN get NaN).
    confirmed : ndarray of int
        Rows confirmed as rare events.

    Returns
    -------
    ndarray of shape (n,)
        Minus the distance to the nearest (other) confirmed row; NaN without one.
    """
    out = np.full(len(V), np.nan)
    C = V[confirmed]
    ok = ~np.isnan(C).any(axis=1)
    confirmed, C = np.asarray(confirmed)[ok], C[ok]
    if len(confirmed) == 0:
        return out
    good = ~np.isnan(V).any(axis=1)
    D = np.sqrt(np.maximum(((V[good, None, :] - C[None, :, :]) ** 2).sum(axis=2), 0))
    rows = np.flatnonzero(good)
    D[rows[:, None] == confirmed[None, :]] = np.inf  # a confirmed row never matches itself
    best = D.min(axis=1)
    out[rows] = np.where(np.isfinite(best), -best, np.nan)
    return out


def like_features(store, fs: FusedScores, spaces=None, sets=None) -> np.ndarray | None:
    """One standardised feature row per row of ``fs`` for learning what confirmed images have in common.

    Columns: every stored whole-image embedding (:func:`embedding_spaces`),
    the hottest patch of every patch set (:func:`patch_sets`) and each
    scorer's percentile (not the re-ranker's: it is trained on the same
    verdicts); each column z-scored, missing values 0 (the mean). None when
    nothing is stored.
    """
    spaces = embedding_spaces(store, fs) if spaces is None else spaces
    sets = patch_sets(store, fs) if sets is None else sets
    parts = list(spaces.values()) + [P[:, 0, :] for P in sets.values()]
    own = [j for j, name in enumerate(fs.scorers) if name != RERANK_SCORER]
    if own:
        parts.append(fs.percentiles[:, own])
    parts = [np.asarray(p, dtype=np.float64) for p in parts if p.size]
    if not parts:
        return None
    return standardise(np.column_stack(parts))


def confirmed_vs_rest(
    F: np.ndarray,
    confirmed: np.ndarray,
    *,
    folds: int = 5,
    max_rest: int = 20000,
    random_state=None,
) -> np.ndarray:
    """How much each row looks like the confirmed rows and unlike the rest (a learned "more like this").

    Rare events are rare: almost every image without a verdict is normal, so
    a linear classifier of the confirmed rows against every other row
    (rejected or not yet reviewed; positive-unlabelled learning with the
    unlabelled as negatives) learns which directions of the feature space
    set the confirmed images apart, where :func:`like_confirmed` weighs every
    direction alike. It is out of fold: the rows are split into ``folds``
    random folds and each fold is scored by a model that did not train on
    it, so an image's own label never lifts its own score. Settings are
    scikit-learn's defaults for logistic regression (C = 1 on standardised
    features) with balanced class weights: a rule for any archive, nothing
    tuned on one.

    Parameters
    ----------
    F : ndarray of shape (n, d)
        Standardised features (:func:`like_features`).
    confirmed : ndarray of int
        Rows confirmed as rare events.
    folds : int, default=5
    max_rest : int, default=20000
        At most this many other rows train each fold's model (a seeded sample;
        bounds the time on large archives). Every row is scored.
    random_state : int or numpy.random.Generator, optional

    Returns
    -------
    ndarray of shape (n,)
        The decision value (higher = more like the confirmed rows); NaN
        without a confirmed row.
    """
    from sklearn.linear_model import LogisticRegression

    F = np.asarray(F, dtype=np.float64)
    n = len(F)
    out = np.full(n, np.nan)
    confirmed = np.unique(np.asarray(confirmed, dtype=np.int64))
    if len(confirmed) == 0 or n < 3:
        return out
    y = np.zeros(n, dtype=np.int64)
    y[confirmed] = 1
    if y.sum() == n:
        return out
    rng = np.random.default_rng(random_state)
    fold = rng.integers(0, max(2, folds), n)
    for f in np.unique(fold):
        test = fold == f
        train = np.flatnonzero(~test)
        if y[train].sum() == 0:  # every confirmed row is in this fold: learn from all of them
            train = np.arange(n)
        rest = train[y[train] == 0]
        if len(rest) > max_rest:
            rest = rng.choice(rest, max_rest, replace=False)
        train = np.concatenate([train[y[train] == 1], rest])
        if len(np.unique(y[train])) < 2:
            continue
        model = LogisticRegression(class_weight="balanced", max_iter=1000)
        model.fit(F[train], y[train])
        out[test] = model.decision_function(F[test])
    return out
