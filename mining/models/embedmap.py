"""The 2-D map of the archive: one fit/transform API over UMAP and t-SNE.

UMAP (umap-learn) is used for large sets and can place new points later;
t-SNE (scikit-learn) for small ones (it has no ``transform``). ``method="auto"``
picks t-SNE below ``tsne_max`` points. numba's compiled code is cached on disk
(``NUMBA_CACHE_DIR``, default ``~/.cache/raremine/numba``) so a second process
does not pay UMAP's compile time again; set it before umap is first imported.
"""

from __future__ import annotations

import logging
import os

import numpy as np

logger = logging.getLogger(__name__)

METHODS = ("auto", "umap", "tsne")


def ensure_numba_cache(path: str | None = None) -> str:
    """Point ``NUMBA_CACHE_DIR`` at a writable folder (kept when already set); return it."""
    current = os.environ.get("NUMBA_CACHE_DIR")
    if current and path is None:
        os.makedirs(current, exist_ok=True)
        return current
    path = path or os.path.join(os.path.expanduser("~"), ".cache", "raremine", "numba")
    os.makedirs(path, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = path
    return path


class EmbeddingMap:
    """Fit a 2-D map of embeddings.

    Parameters
    ----------
    method : {"auto", "umap", "tsne"}, default="auto"
    n_neighbors : int, default=15
        UMAP neighbours (also bounds t-SNE's perplexity: ``perplexity = min(30, n_neighbors * 2, (n - 1) / 3)``).
    min_dist : float, default=0.1
        UMAP ``min_dist``.
    tsne_max : int, default=2000
        ``auto`` uses t-SNE below this many points, UMAP from it on.
    standardize : bool, default=True
        Robust-standardise the columns first (:func:`mining.outliers.standardize`).
    random_state : int, default=0
    large : int, default=50000
        From this many points on, UMAP starts from a PCA layout and runs
        ``large_epochs`` optimisation epochs instead of umap-learn's defaults
        (a spectral layout and 200 epochs). Measured on 100,000 points of 62
        dimensions in 20 clusters, on 2 cores: 40 s instead of 119 s, with
        the same trustworthiness (0.979, on 3,000 sampled points).
    large_epochs : int, default=100

    Attributes
    ----------
    method_ : str
        The method actually used ("umap" or "tsne").
    embedding_ : ndarray of shape (n, 2), float32
    """

    def __init__(
        self,
        *,
        method: str = "auto",
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        tsne_max: int = 2000,
        standardize: bool = True,
        random_state: int = 0,
        large: int = 50_000,
        large_epochs: int = 100,
    ):
        self.method = method
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.tsne_max = tsne_max
        self.standardize = standardize
        self.random_state = random_state
        self.large = large
        self.large_epochs = large_epochs

    def _validate(self, n: int) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be >= 2, got {self.n_neighbors}")
        if not 0 <= self.min_dist <= 1:
            raise ValueError(f"min_dist must be in [0, 1], got {self.min_dist}")
        if self.large_epochs < 1:
            raise ValueError(f"large_epochs must be >= 1, got {self.large_epochs}")
        if n < 4:
            raise ValueError(f"need at least 4 points for a map, got {n}")

    def _prep(self, X: np.ndarray) -> np.ndarray:
        from mining.models.outliers import _as_2d

        X = _as_2d(X)
        if self.standardize:
            if not hasattr(self, "scaler_"):
                from sklearn.preprocessing import RobustScaler

                self.scaler_ = RobustScaler(unit_variance=True).fit(X)
            X = np.nan_to_num(self.scaler_.transform(X)).astype(np.float32)
        return X

    def fit(self, X: np.ndarray) -> EmbeddingMap:
        """Fit the map to ``X`` of shape (n, d); return self."""
        X = np.asarray(X)
        self._validate(len(X))
        if hasattr(self, "scaler_"):
            del self.scaler_
        Z = self._prep(X)
        n = len(Z)
        method = self.method
        if method == "auto":
            method = "tsne" if n < self.tsne_max else "umap"
        if method == "tsne":
            from sklearn.manifold import TSNE

            perplexity = float(max(2.0, min(30.0, self.n_neighbors * 2, (n - 1) / 3)))
            self.model_ = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=self.random_state)
            emb = self.model_.fit_transform(Z)
        else:
            ensure_numba_cache()
            import umap

            big = {"init": "pca", "n_epochs": self.large_epochs} if n >= self.large else {}
            self.model_ = umap.UMAP(
                n_components=2,
                n_neighbors=min(self.n_neighbors, n - 1),
                min_dist=self.min_dist,
                random_state=self.random_state,
                low_memory=True,
                n_jobs=1,
                **big,
            )
            emb = self.model_.fit_transform(Z)
        self.method_ = method
        self.embedding_ = np.asarray(emb, np.float32)
        logger.info("2-D map of %d points by %s", n, method)
        return self

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        """Fit and return the coordinates, shape (n, 2), float32."""
        return self.fit(X).embedding_

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Place new points on a fitted UMAP map (t-SNE cannot).

        Raises
        ------
        ValueError
            When not fitted, or fitted with t-SNE.
        """
        if not hasattr(self, "method_"):
            raise ValueError("this EmbeddingMap is not fitted yet: call fit first")
        if self.method_ != "umap":
            raise ValueError("t-SNE maps cannot place new points; fit with method='umap'")
        return np.asarray(self.model_.transform(self._prep(np.asarray(X))), np.float32)
