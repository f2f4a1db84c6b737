"""Outlier scores over a set of embeddings (higher means rarer).

- ``knn``: mean distance to the ``k`` nearest other points (exact with
  scikit-learn below ``approx_threshold`` points, approximate with
  pynndescent above it);
- ``lof``: scikit-learn ``LocalOutlierFactor`` (the negated
  ``negative_outlier_factor_``);
- ``iforest``: scikit-learn ``IsolationForest`` (the negated ``score_samples``);
- :func:`small_clusters`: members of small clusters far from the big ones.

Features are robust-standardised (median / IQR per column) first, so no
single descriptor dominates the distances. :func:`whiten` (PCA whitening)
can follow, so that a deviation along a direction in which the archive
hardly varies counts as much as one along its main directions of variation.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
from sklearn.preprocessing import RobustScaler

logger = logging.getLogger(__name__)

METHODS = ("knn", "lof", "iforest")


def _as_2d(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d), got {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X holds NaN or infinite values")
    return X


def standardize(X: np.ndarray) -> np.ndarray:
    """Robust per-column standardisation (median, IQR); constant columns become 0.

    Returns
    -------
    ndarray of shape (n, d), float32
    """
    X = _as_2d(X)
    if len(X) < 2:
        return np.zeros_like(X)
    return np.nan_to_num(RobustScaler(unit_variance=True).fit_transform(X)).astype(np.float32)


#: Fraction of the variance the whitened directions keep (:func:`whiten`): the rest,
#: directions with almost no variance, would be noise magnified to unit spread.
WHITEN_VARIANCE = 0.99

#: Most rows the whitening is fitted on (a seeded sample beyond); every row is transformed.
WHITEN_FIT_ROWS = 20_000

_WHITEN_BLOCK = 8192  # rows transformed at a time


def whiten(
    X: np.ndarray,
    *,
    variance: float = WHITEN_VARIANCE,
    max_fit_rows: int = WHITEN_FIT_ROWS,
    random_state: int = 0,
) -> np.ndarray:
    """PCA whitening: the leading principal components, each scaled to unit variance.

    Euclidean distances after whitening are Mahalanobis distances in the
    kept subspace. In pretrained features an archive's normal images vary
    mostly along a few directions (lighting, position, product variant),
    and a defect often moves an image along a direction of little
    variance, which plain distances drown.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    variance : float, default=0.99
        Keep the fewest leading components that hold this fraction of the
        variance, in (0, 1].
    max_fit_rows : int, default=20000
        Fit on at most this many rows (a seeded sample); all rows are transformed.
    random_state : int, default=0

    Returns
    -------
    ndarray of shape (n, m), float32
        ``m`` components; ``X`` centred when it has fewer than 3 rows or no variance.
    """
    if not 0 < variance <= 1:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    X = _as_2d(X)
    n = len(X)
    fit = X if n <= max_fit_rows else X[np.random.default_rng(random_state).choice(n, max_fit_rows, replace=False)]
    fit = fit.astype(np.float64)
    if n < 3 or not (fit.var(axis=0) > 0).any():
        return (X - X.mean(axis=0)).astype(np.float32) if n else X
    # more rows than columns: the d x d covariance's eigenvectors (one BLAS product, 6x faster
    # than the SVD at 50 000 x 1376); fewer: the SVD of the rows themselves (no d x d eigh)
    solver = "covariance_eigh" if len(fit) >= X.shape[1] else "full"
    pca = PCA(n_components=variance if variance < 1 else None, whiten=True, svd_solver=solver)
    pca.fit(fit)
    keep = pca.explained_variance_ > 0
    out = np.empty((n, int(keep.sum())), dtype=np.float32)
    for start in range(0, n, _WHITEN_BLOCK):  # in blocks: no float64 copy of a large archive
        block = X[start : start + _WHITEN_BLOCK].astype(np.float64)
        out[start : start + len(block)] = pca.transform(block)[:, keep]
    return out


def knn_indices(
    X: np.ndarray, k: int, *, approx_threshold: int = 20_000, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other points of every point (self excluded).

    Parameters
    ----------
    X : ndarray of shape (n, d)
    k : int
        Neighbours per point (at most ``n - 1``).
    approx_threshold : int, default=20000
        From this many points on, pynndescent's approximate graph is used.
    random_state : int, default=0

    Returns
    -------
    indices : ndarray of shape (n, k), int64
    distances : ndarray of shape (n, k), float32
        Euclidean, ascending.
    """
    X = _as_2d(X)
    n = len(X)
    if k < 1 or k > n - 1:
        raise ValueError(f"k must be in [1, n - 1] = [1, {n - 1}], got {k}")
    if n >= approx_threshold:
        from pynndescent import NNDescent

        logger.info("approximate neighbours (pynndescent) for %d points", n)
        index = NNDescent(X, n_neighbors=k + 1, random_state=random_state, n_jobs=1)
        idx, dist = index.neighbor_graph
    else:
        nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
        dist, idx = nn.kneighbors(X)
    # drop each point itself (normally column 0; duplicates may swap places)
    out_i = np.empty((n, k), np.int64)
    out_d = np.empty((n, k), np.float32)
    for r in range(n):
        keep = idx[r] != r
        ii, dd = idx[r][keep][:k], dist[r][keep][:k]
        if len(ii) < k:  # self was not among the neighbours: the list is already k + 1 long
            ii, dd = idx[r][:k], dist[r][:k]
        out_i[r], out_d[r] = ii, dd
    return out_i, out_d


def outlier_scores(
    X: np.ndarray,
    method: str = "knn",
    *,
    k: int = 10,
    approx_threshold: int = 20_000,
    random_state: int = 0,
    standardize_features: bool = True,
    whiten_features: bool = False,
) -> np.ndarray:
    """One outlier score per row; higher means rarer.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    method : {"knn", "lof", "iforest"}, default="knn"
    k : int, default=10
        Neighbours for ``knn`` and ``lof`` (clipped to ``n - 1``).
    approx_threshold : int, default=20000
        ``knn`` switches to pynndescent from this many rows on.
    random_state : int, default=0
        Seed of ``iforest`` and pynndescent.
    standardize_features : bool, default=True
        Apply :func:`standardize` first.
    whiten_features : bool, default=False
        Then apply :func:`whiten` (seeded by ``random_state``).

    Returns
    -------
    ndarray of shape (n,), float64
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    X = standardize(X) if standardize_features else _as_2d(X)
    if whiten_features:
        X = whiten(X, random_state=random_state)
    n = len(X)
    if n < 3:
        return np.zeros(n)
    k = max(1, min(k, n - 1))
    if method == "knn":
        _, dist = knn_indices(X, k, approx_threshold=approx_threshold, random_state=random_state)
        return dist.mean(axis=1).astype(np.float64)
    if method == "lof":
        lof = LocalOutlierFactor(n_neighbors=k).fit(X)
        return -lof.negative_outlier_factor_.astype(np.float64)
    forest = IsolationForest(n_estimators=200, random_state=random_state).fit(X)
    return -forest.score_samples(X).astype(np.float64)


def small_clusters(
    X: np.ndarray,
    *,
    n_clusters: int | None = None,
    max_fraction: float = 0.02,
    far_quantile: float = 0.9,
    random_state: int = 0,
) -> np.ndarray:
    """Flag members of small clusters that lie far from every big cluster.

    K-means (``MiniBatchKMeans``) splits the standardised points; a cluster
    holding at most ``max_fraction`` of the points whose centroid is farther
    from the nearest big centroid than the ``far_quantile`` of the points'
    own distances to their centroids is "small and far".

    Parameters
    ----------
    X : ndarray of shape (n, d)
    n_clusters : int, optional
        Default ``clip(sqrt(n / 2), 2, 50)``.
    max_fraction : float, default=0.02
    far_quantile : float, default=0.9
    random_state : int, default=0

    Returns
    -------
    ndarray of shape (n,), bool
    """
    if not 0 < max_fraction < 1:
        raise ValueError(f"max_fraction must be in (0, 1), got {max_fraction}")
    X = standardize(X)
    n = len(X)
    if n < 10:
        return np.zeros(n, bool)
    c = n_clusters or int(np.clip(np.sqrt(n / 2), 2, 50))
    km = MiniBatchKMeans(n_clusters=c, random_state=random_state, n_init=3, batch_size=1024).fit(X)
    labels, centres = km.labels_, km.cluster_centers_
    sizes = np.bincount(labels, minlength=c)
    small = sizes <= max(1, max_fraction * n)
    if small.all() or not small.any():
        return np.zeros(n, bool)
    own = np.linalg.norm(X - centres[labels], axis=1)
    limit = np.quantile(own, far_quantile)
    big = centres[~small]
    flagged = np.zeros(c, bool)
    for j in np.flatnonzero(small):
        flagged[j] = np.linalg.norm(big - centres[j], axis=1).min() > limit
    return flagged[labels]
