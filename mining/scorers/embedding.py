"""The ``embedding`` scorer: cheap descriptors per image, outlier scores and the 2-D map over the archive.

Streaming pass: :func:`mining.models.descriptors.describe` gives every image a
descriptor vector (stored as the ``descriptors`` embedding); no score is
written then (``archive_stage``: the score needs the whole archive). ``finalize`` reads every stored embedding
listed in ``embeddings`` (its own descriptors, the autoencoder's bottleneck,
the backbone's global vector, whichever exist), computes the outlier scores
listed in ``methods`` over each, rank-normalises them and writes their mean
as the ``embedding`` score, with each part kept in the stats (the "why").
Members of small, far clusters are flagged in the stats. Finally the 2-D
map (UMAP or t-SNE) of the first available embedding in ``map_embeddings``
is stored in ``map_coords`` under the method name ``"<method>:<embedding>"``.
"""

from __future__ import annotations

import logging

import numpy as np

from mining.metrics import rank_normalize
from mining.models.descriptors import describe
from mining.models.outliers import METHODS, outlier_scores, small_clusters
from mining.scorers._whole import load_embeddings, write_map, write_scores
from mining.scorers.base import Scorer, ScoreResult

logger = logging.getLogger(__name__)


class EmbeddingScorer(Scorer):
    """Descriptor embedding + outlier scores + 2-D map.

    Parameters
    ----------
    size, bins, lbp_radii, glcm_distances, levels
        Passed to :func:`mining.models.descriptors.describe`.
    embeddings : list of str, default=["descriptors", "autoencoder"]
        Stored embeddings the outlier scores are computed over (missing ones are skipped).
    methods : list of str, default=["knn", "lof", "iforest"]
        Outlier scores (:data:`mining.models.outliers.METHODS`).
    k : int, default=10
        Neighbours of ``knn`` and ``lof``.
    approx_threshold : int, default=20000
        From this many images on, ``knn`` uses pynndescent.
    map_method : {"auto", "umap", "tsne", "none"}, default="auto"
    map_embeddings : list of str, default=["backbone", "descriptors", "autoencoder"]
        The map is drawn from the first of these that is stored.
    random_state : int, default=0
    """

    name = "embedding"
    embedding_name = "descriptors"
    whole_image = True  # descriptors of a size x size thumbnail: a tiled image is described whole
    archive_stage = True  # the score is an outlier score over every stored embedding (finalize)

    def __init__(
        self,
        *,
        size: int = 64,
        bins: int = 16,
        lbp_radii: tuple[int, ...] = (1,),
        glcm_distances: tuple[int, ...] = (1, 3),
        levels: int = 32,
        embeddings: tuple[str, ...] = ("descriptors", "autoencoder"),
        methods: tuple[str, ...] = ("knn", "lof", "iforest"),
        k: int = 10,
        approx_threshold: int = 20_000,
        map_method: str = "auto",
        map_embeddings: tuple[str, ...] = ("backbone", "descriptors", "autoencoder"),
        random_state: int = 0,
    ):
        self.size = size
        self.bins = bins
        self.lbp_radii = tuple(lbp_radii)
        self.glcm_distances = tuple(glcm_distances)
        self.levels = levels
        self.embeddings = tuple(embeddings)
        self.methods = tuple(methods)
        self.k = k
        self.approx_threshold = approx_threshold
        self.map_method = map_method
        self.map_embeddings = tuple(map_embeddings)
        self.random_state = random_state

    def prepare(self, store=None, run_id=None) -> EmbeddingScorer:
        """Validate the parameters (nothing to learn before the streaming pass)."""
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"embedding.methods must be a non-empty list of {METHODS}, got {list(self.methods)}")
        if not self.embeddings:
            raise ValueError("embedding.embeddings must name at least one stored embedding")
        if self.map_method not in ("auto", "umap", "tsne", "none"):
            raise ValueError(f"embedding.map_method must be auto, umap, tsne or none, got {self.map_method!r}")
        if self.k < 1:
            raise ValueError(f"embedding.k must be >= 1, got {self.k}")
        describe(np.zeros((32, 32), np.float32), **self._describe_kwargs())  # validates the descriptor settings
        return self

    def _describe_kwargs(self) -> dict:
        return {
            "size": self.size,
            "bins": self.bins,
            "lbp_radii": self.lbp_radii,
            "glcm_distances": self.glcm_distances,
            "levels": self.levels,
        }

    def score_image(self, image: np.ndarray) -> ScoreResult:
        """Descriptor vector of one image (the score, a placeholder here, is made in :meth:`finalize`)."""
        return ScoreResult(score=0.0, embedding=describe(image, **self._describe_kwargs()))

    def outlier_table(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outlier score per method over one embedding matrix (rows = images)."""
        return {
            m: outlier_scores(X, m, k=self.k, approx_threshold=self.approx_threshold, random_state=self.random_state)
            for m in self.methods
        }

    def finalize(self, store, run_id: int | None = None) -> None:
        """Outlier scores over every stored embedding, the fused ``embedding`` score, and the 2-D map."""
        parts: dict[str, dict[int, float]] = {}
        flags: dict[int, list[str]] = {}
        for name in self.embeddings:
            ids, X = load_embeddings(store, name)
            if len(ids) < 3:
                logger.info("embedding: %d vectors named %r, skipped", len(ids), name)
                continue
            for method, raw in self.outlier_table(X).items():
                parts[f"{name}_{method}"] = dict(zip(ids.tolist(), rank_normalize(raw).tolist(), strict=True))
            for i in ids[small_clusters(X, random_state=self.random_state)]:
                flags.setdefault(int(i), []).append(name)
        if not parts:
            logger.warning("embedding: no stored embeddings among %s; no scores written", list(self.embeddings))
            return
        all_ids = np.array(sorted(set().union(*[set(p) for p in parts.values()])), np.int64)
        scores, stats = [], []
        for i in all_ids.tolist():
            mine = {k: round(v[i], 4) for k, v in parts.items() if i in v}
            scores.append(float(np.mean(list(mine.values()))))
            stats.append({**mine, "small_far_cluster": flags.get(i, [])})
        write_scores(store, self.name, all_ids, np.array(scores), stats, run_id)
        logger.info("embedding: %d images scored from %s", len(all_ids), sorted(parts))
        self._write_map(store, run_id)

    def _write_map(self, store, run_id) -> None:
        if self.map_method == "none":
            return
        from mining.models.embedmap import EmbeddingMap

        for name in self.map_embeddings:
            ids, X = load_embeddings(store, name)
            if len(ids) >= 4:
                emap = EmbeddingMap(method=self.map_method, random_state=self.random_state).fit(X)
                write_map(store, f"{emap.method_}:{name}", ids, emap.embedding_, run_id)
                return
        logger.info("embedding: no embedding with >= 4 vectors among %s; no map", list(self.map_embeddings))
