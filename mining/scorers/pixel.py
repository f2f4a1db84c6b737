"""The pixel-classifier scorer: a trained pixel model run over the archive.

``prepare`` loads the newest pixel model registered in the catalogue (or the
file given), once, in the main process; the loaded model travels to each
worker once with the scorer. ``score_image`` predicts class probabilities
(on the model's downscaled grid, optionally strided, tile by tile for large
images), turns them into a defect-probability map (1 - P(background)) and
image statistics per class, and one image score by the configured rule.
Higher means more likely rare, as for every scorer.
"""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np

from mining.models.pixel import PixelModel, PixelModelError, load_pixel_model, map_stats, uncertainty, valid_mask
from mining.scorers.base import Scorer, ScoreResult

logger = logging.getLogger(__name__)

SCORE_RULES = ("topk_mean", "max", "area", "largest_component")


class PixelScorer(Scorer):
    """Score images with a trained pixel classifier.

    Parameters
    ----------
    model : str, optional
        Path of a pixel model's metadata JSON; default: the newest model of
        kind ``pixel`` registered in the catalogue (``raremine fit-pixel``).
    model_name : str, optional
        Take the newest registered model of this name.
    features : dict, optional
        Feature spec expected by the caller; a model trained with other
        features is refused with a message listing the differences.
    stride : int, default=2
        Predict every ``stride``-th pixel of the model's feature grid
        (speed); maps are upsampled back.
    tile_size : int or None, default=1024
        Images larger than this (px) are predicted tile by tile.
    smooth_sigma : float, default=2.0
        Gaussian sigma (original px) applied to the defect map before the
        statistics (isolated pixels do not make a score).
    score_rule : {"topk_mean", "max", "area", "largest_component"} or None, default=None
        None: the rule the model's tuning chose (``raremine fit-pixel``), or
        ``"max"`` for a model trained without tuning. Image score: mean of the ``top_k`` highest smoothed defect
        probabilities; their maximum; the fraction of the valid region above
        ``threshold``; or the size (px) of the largest connected region above
        ``threshold``.
    top_k : int, default=30
        Pixels (original resolution) averaged by ``topk_mean``.
    threshold : float, default=0.5
        Probability above which a pixel counts for area and components.
    border : int or None, default=None
        None: the margin the model's tuning chose, or 12 for a model trained
        without tuning. Pixels at the image border left out of the image score and the
        statistics (valid-region mask); the map keeps them. On magnetic
        tiles most false alarms sit on and near the cut edge, while frayed
        or broken edges reach further in than 12 px; 12 ranked every
        category at least as well as 6 (benchmarks/pixel_mining.py). A defect
        that lies wholly within the margin is not seen: lower it when yours
        can.
    uncertainty_kind : {"margin", "entropy"}, default="margin"
        Uncertainty summarised in the stats (1 - max probability, or entropy).
    """

    name = "pixel"
    map_range = (0.0, 1.0)

    def __init__(
        self,
        *,
        model: str | None = None,
        model_name: str | None = None,
        features: dict | None = None,
        stride: int = 2,
        tile_size: int | None = 1024,
        smooth_sigma: float = 2.0,
        score_rule: str | None = None,
        top_k: int = 30,
        threshold: float = 0.5,
        border: int | None = None,
        uncertainty_kind: str = "margin",
    ):
        self.model = model
        self.model_name = model_name
        self.features = features
        self.stride = stride
        self.tile_size = tile_size
        self.smooth_sigma = smooth_sigma
        self.score_rule = score_rule
        self.top_k = top_k
        self.threshold = threshold
        self.border = border
        self.uncertainty_kind = uncertainty_kind
        self._model: PixelModel | None = None

    def _validate(self) -> None:
        if self.score_rule is not None and self.score_rule not in SCORE_RULES:
            raise ValueError(f"scorers.pixel.score_rule must be one of {SCORE_RULES}, got {self.score_rule!r}")
        if self.stride < 1:
            raise ValueError(f"scorers.pixel.stride must be >= 1, got {self.stride}")
        if self.tile_size is not None and self.tile_size < 16:
            raise ValueError(f"scorers.pixel.tile_size must be >= 16 or null, got {self.tile_size}")
        if self.smooth_sigma < 0:
            raise ValueError(f"scorers.pixel.smooth_sigma must be >= 0, got {self.smooth_sigma}")
        if self.top_k < 1:
            raise ValueError(f"scorers.pixel.top_k must be >= 1, got {self.top_k}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"scorers.pixel.threshold must be in [0, 1], got {self.threshold}")
        if self.border is not None and self.border < 0:
            raise ValueError(f"scorers.pixel.border must be >= 0, got {self.border}")
        if self.uncertainty_kind not in ("margin", "entropy"):
            raise ValueError(
                f"scorers.pixel.uncertainty_kind must be 'margin' or 'entropy', got {self.uncertainty_kind!r}"
            )

    def prepare(self, store=None, run_id=None) -> PixelScorer:
        """Validate the parameters and load the model once.

        Raises
        ------
        ValueError
            No model registered, missing file, or a model trained with other features.
        """
        self._validate()
        path = self.model
        if path is None:
            row = store.latest_model("pixel", self.model_name) if store is not None else None
            if row is None:
                which = f" named {self.model_name!r}" if self.model_name else ""
                raise ValueError(
                    f"no pixel model{which} is registered in the catalogue: train one with "
                    "`raremine fit-pixel --db DB --images DIR --labels DIR` or set scorers.pixel.model"
                )
            path = row["path"]
        try:
            self._model = load_pixel_model(path, expect=self.features)
        except PixelModelError as err:
            raise ValueError(str(err)) from err
        self._model.classifier.n_jobs = 1
        self._resolve()
        logger.info("pixel scorer uses model %s (score_rule %s, border %d px)", path, self._score_rule, self._border)
        return self

    def _resolve(self) -> None:
        """The score rule and border in use: the scorer's own, else the model's tuned ones, else max / 12."""
        tuned = (self._model.metrics.get("tuning") or {}).get("scorer") or {}
        self._score_rule = self.score_rule or tuned.get("score_rule") or "max"
        self._border = int(self.border if self.border is not None else tuned.get("border", 12))
        if self._score_rule not in SCORE_RULES:
            raise ValueError(f"the pixel model's tuned score_rule {self._score_rule!r} is not one of {SCORE_RULES}")

    def set_model(self, model: PixelModel) -> PixelScorer:
        """Use an in-memory model instead of loading one (tests, benchmarks); returns self."""
        self._validate()
        model.check_spec(self.features)
        self._model = model
        self._resolve()
        return self

    def score_image(self, image: np.ndarray) -> ScoreResult:
        """Score one image or tile.

        Returns
        -------
        ScoreResult
            ``map``: defect probability 1 - P(background), shape (H, W),
            float32 in [0, 1]; ``stats``: per class ``<name>_max``,
            ``_topk_mean``, ``_area``, ``_components``, ``_largest`` and
            ``uncertainty_mean``; ``score`` by ``score_rule``.
        """
        if self._model is None:
            raise RuntimeError("PixelScorer.prepare() (or set_model) must run before score_image")
        m = self._model
        proba = m.predict_proba(image, stride=self.stride, full_resolution=False, tile_size=self.tile_size)
        cell = m.spec.downscale * self.stride  # original px per grid cell
        H, W = image.shape[:2]
        classes = [int(c) for c in m.classes]
        bg = classes.index(1) if 1 in classes else None
        defect = 1.0 - proba[..., bg] if bg is not None else proba.max(axis=-1)
        mask = valid_mask(defect.shape, int(np.ceil(self._border / cell)))
        kw = {"mask": mask, "top_k": self.top_k, "threshold": self.threshold, "pixel_area": cell * cell}
        stats: dict[str, float] = {}
        for k, c in enumerate(classes):
            if c == 1:
                continue
            st = map_stats(self._smooth(proba[..., k], cell), **kw)
            stats.update({f"{m.class_names.get(c, f'class_{c}')}_{key}": v for key, v in st.items()})
        smooth = self._smooth(defect, cell)
        st = map_stats(smooth, **kw)
        stats.update({f"defect_{key}": v for key, v in st.items()})
        unc = uncertainty(proba, self.uncertainty_kind)
        stats["uncertainty_mean"] = float(unc[mask].mean()) if mask.any() else 0.0
        score = {
            "topk_mean": st["topk_mean"],
            "max": st["max"],
            "area": st["area"],
            "largest_component": st["largest"],
        }[self._score_rule]
        full = cv2.resize(defect.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
        return ScoreResult(score=float(score), stats=stats, map=full)

    def _smooth(self, p: np.ndarray, cell: float) -> np.ndarray:
        s = self.smooth_sigma / cell
        if s <= 0.2:
            return p.astype(np.float32)
        return cv2.GaussianBlur(p.astype(np.float32), (0, 0), s, borderType=cv2.BORDER_REFLECT)

    def config(self) -> dict:
        """Constructor arguments, for the run record."""
        cfg = super().config()
        cfg["model"] = os.fspath(cfg["model"]) if cfg.get("model") else None
        return cfg
