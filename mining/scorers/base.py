"""The scorer protocol shared by every way of mining.

A scorer turns one image into a score map and a few image statistics.
Direction, stated once and kept everywhere: **higher means more likely rare.**

Life cycle, driven by :func:`mining.job.mine.mine`:

1. ``prepare(store, run_id)`` in the main process, once per job: train on a
   sample of the catalogue, load a model, or do nothing. Afterwards the
   scorer is pickled to the workers (between our own processes only).
2. ``score_image(image)`` in the workers, once per image or tile, returning a
   :class:`ScoreResult`; or ``score_batch(images)`` once per batch of them
   (the default loops over ``score_image``).
3. ``finalize(store, run_id)`` in the main process after all shards: scorers
   that need the whole archive (outlier scores over embeddings, a 2-D map)
   write their scores here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ScoreResult:
    """What a scorer returns for one image or tile.

    Attributes
    ----------
    score : float
        Image score; higher means more likely rare.
    stats : dict of str to float
        A few image statistics (kept for the re-ranker and the app).
    map : ndarray of shape (H, W), float32, optional
        Score map at the image's resolution (higher = more suspicious);
        None when the scorer has no map.
    embedding : ndarray of shape (D,), float32, optional
        A per-image vector, stored under ``embedding_name``.
    patches : ndarray of shape (K, D), float32, optional
        Local feature vectors of the image's most anomalous places, hottest
        first, stored as the patch set ``embedding_name + ".patches"``
        (:data:`mining.catalogue.store.PATCH_SET_SUFFIX`): the review loop's "more like
        this" compares a confirmed defect's hottest patch with them.
    """

    score: float
    stats: dict[str, float] = field(default_factory=dict)
    map: np.ndarray | None = None
    embedding: np.ndarray | None = None
    patches: np.ndarray | None = None


class Scorer:
    """Base class of scorers; subclasses override :meth:`score_image`.

    Class attributes
    ----------------
    name : str
        The name used on the command line and in the catalogue.
    map_range : (float, float)
        Map values mapped to 0 and 255 when an overlay PNG is saved.
    embedding_name : str or None
        Name under which ``ScoreResult.embedding`` is stored.
    per_image : bool
        False for scorers that take no part in the streaming pass (a
        backbone without its weights file).
    archive_stage : bool
        True for scorers whose image score needs the whole archive (kNN and
        outliers over all embeddings): the streaming pass stores only their
        embedding (an image counts as streamed once it is stored) and
        :meth:`finalize`, the archive stage, writes every score. A score row
        exists only when it is final; a killed job resumes either stage.
    whole_image : bool
        True for scorers that resample the image to their own input size
        (a network's fixed input, a descriptor's thumbnail): they are given
        the whole image even when the catalogue tiles it, so a tiled image
        gets one image-level score, map and embedding (and no tile rows).
        False: a tiled image is scored tile by tile and takes the maximum.
    prepare_workers : int
        Threads :meth:`prepare` may run side by side (for example network
        passes over a sample): :func:`mining.job.mine.mine` sets it to the
        process pool's worker count before ``prepare``, so that ``prepare``
        uses the cores the streaming pass will use; 1 otherwise.
    """

    name: str = "base"
    map_range: tuple[float, float] = (0.0, 1.0)
    embedding_name: str | None = None
    per_image: bool = True
    whole_image: bool = False
    archive_stage: bool = False
    prepare_workers: int = 1

    def prepare(self, store, run_id: int | None = None) -> Scorer:
        """Get ready in the main process before the streaming pass; return self."""
        return self

    def score_image(self, image: np.ndarray) -> ScoreResult:
        """Score one image (as read by :func:`mining.io.read_image`)."""
        raise NotImplementedError

    def score_batch(self, images: list[np.ndarray]) -> list[ScoreResult]:
        """Score several images (or tiles) at once; one result per image, in order.

        The worker calls this with up to :data:`mining.job.mine.BATCH_IMAGES`
        images. The default calls :meth:`score_image` on each; scorers with a
        network override it to run one forward pass per batch. When it raises,
        the worker scores the images one by one with :meth:`score_image`, so
        an error is recorded on the image that caused it.
        """
        return [self.score_image(im) for im in images]

    def finalize(self, store, run_id: int | None = None) -> None:
        """Whole-archive step after the streaming pass (default: nothing)."""
        return None

    def config(self) -> dict:
        """Constructor arguments, for the run record (``type(self)(**config())`` builds the same scorer).

        The names come from the constructor's signature, so state set later
        (``prepare``'s flags, fitted models) never leaks into the record.
        """
        params = inspect.signature(type(self).__init__).parameters
        return {
            k: getattr(self, k)
            for k, p in params.items()
            if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and hasattr(self, k)
        }
