"""A cheap, training-free scorer: robust local-contrast outliers.

Each pixel's difference from its smoothed neighbourhood is turned into a
robust z-score (median and MAD of the image itself), the absolute z map is
smoothed, and the image score is its maximum away from the border. A spot,
scratch or particle that differs from the local texture more than the
texture differs from itself scores high; slow lighting changes do not.
The image score is the map's peak over its own 90th percentile, so busy
textures (brick joints) do not outrank a single spot on a calm one.
"""

from __future__ import annotations

import cv2
import numpy as np

from mining.io import to_float_gray
from mining.scorers.base import Scorer, ScoreResult


class ContrastScorer(Scorer):
    """Robust local-contrast outlier statistic.

    Parameters
    ----------
    background_sigma : float, default=8.0
        Gaussian sigma (px) of the background that is subtracted.
    smooth_sigma : float, default=2.0
        Gaussian sigma (px) applied to the absolute z map.
    border : int, default=8
        Pixels at the image border left out of the image score.
    reference_percentile : float, default=90
        The image score is the map's peak divided by this percentile of it.
    """

    name = "contrast"
    map_range = (0.0, 10.0)

    def __init__(
        self,
        *,
        background_sigma: float = 8.0,
        smooth_sigma: float = 2.0,
        border: int = 8,
        reference_percentile: float = 90.0,
    ):
        self.background_sigma = background_sigma
        self.smooth_sigma = smooth_sigma
        self.border = border
        self.reference_percentile = reference_percentile

    def _validate(self) -> None:
        if self.background_sigma <= 0:
            raise ValueError(f"background_sigma must be > 0, got {self.background_sigma}")
        if self.smooth_sigma < 0:
            raise ValueError(f"smooth_sigma must be >= 0, got {self.smooth_sigma}")
        if self.border < 0:
            raise ValueError(f"border must be >= 0, got {self.border}")
        if not 0 < self.reference_percentile < 100:
            raise ValueError(f"reference_percentile must be in (0, 100), got {self.reference_percentile}")

    def prepare(self, store=None, run_id=None) -> ContrastScorer:
        """Validate parameters; nothing to learn."""
        self._validate()
        return self

    def score_image(self, image: np.ndarray) -> ScoreResult:
        """Score one image.

        Returns
        -------
        ScoreResult
            ``map`` is the smoothed absolute robust z-score, shape (H, W),
            float32; ``score`` its maximum inside the border margin divided
            by its ``reference_percentile`` there.
        """
        self._validate()
        gray = to_float_gray(image)
        background = cv2.GaussianBlur(gray, (0, 0), self.background_sigma, borderType=cv2.BORDER_REFLECT)
        local = gray - background
        med = float(np.median(local))
        mad = float(np.median(np.abs(local - med))) * 1.4826
        z = np.abs(local - med) / (mad + 1e-3)
        if self.smooth_sigma > 0:
            z = cv2.GaussianBlur(z, (0, 0), self.smooth_sigma, borderType=cv2.BORDER_REFLECT)
        b = min(self.border, (min(z.shape) - 1) // 2)
        inner = z[b : z.shape[0] - b, b : z.shape[1] - b] if b else z
        peak, ref = float(inner.max()), float(np.percentile(inner, self.reference_percentile))
        return ScoreResult(
            score=peak / (ref + 1e-6),
            stats={
                "contrast_max": peak,
                "contrast_ref": ref,
                "contrast_mad": mad,
            },
            map=z.astype(np.float32),
        )
