"""A cheap, training-free scorer: robust local-contrast outliers.

Each pixel's difference from its smoothed neighbourhood is turned into a
robust z-score (median and MAD of the image itself), the absolute z map is
smoothed, and the image score is its maximum away from the border. A spot,
scratch or particle that differs from the local texture more than the
texture differs from itself scores high; slow lighting changes do not.
The image score is the map's peak over its own 90th percentile, so busy
textures (brick joints) do not outrank a single spot on a calm one.

Three options fit the scorer to a kind of part without any label:

- ``polarity``: only darker (``dark``) or brighter (``bright``) than the
  background counts. On magnetic tiles every defect category is darker and
  most false alarms are bright reflections: recall after reviewing 10 % of
  the benchmark archives goes from 0.13-0.21 (``both``) to about 0.45
  (``dark``, with the elongated background below).
- ``background_sigma=(long, short)``: a background elongated along the
  image's structure (grooves, stripes, fibres), so the structure itself is
  background and a spot across it is not. ``orientation="auto"`` lays the
  long axis along the direction with the weaker gradients, image by image.
- ``size``: every image is first resized to ``size`` x ``size`` (area
  interpolation), so sigmas and border are in the same units whatever the
  image's shape; the map is then at that size.

It is meant to cost about as much as decoding the image (a batch job should
not be slower than reading the archive), hence two approximations, both
configurable: the wide background blur runs on a copy shrunk by up to
``background_sigma / 2`` (a smooth background loses nothing there), and the
median, MAD and reference percentile are estimated on every
``stat_stride``-th pixel in each direction. The map and its peak stay
full resolution and exact.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from mining.io import to_float_gray
from mining.scorers.base import Scorer, ScoreResult


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (its default, linear interpolation) by one ``np.partition``.

    ``np.percentile`` and ``np.median`` cost about as much again as the
    partition itself in their own bookkeeping on the few thousand values used
    here, and a partition on two positions costs three times one on a single
    position: the upper neighbour is the minimum of the values above.
    """
    flat = np.array(values, dtype=np.float32).ravel()
    pos = q / 100.0 * (flat.size - 1)
    lo = int(np.floor(pos))
    part = np.partition(flat, lo)
    a = float(part[lo])
    if lo + 1 >= flat.size or pos == lo:
        return a
    b = float(part[lo + 1 :].min())
    return a + (b - a) * (pos - lo)


@functools.lru_cache(maxsize=16)
def _gaussian_kernel(sigma: float) -> np.ndarray:
    """The 1-D kernel ``cv2.GaussianBlur`` uses for float images (size ``round(8 sigma + 1) | 1``)."""
    k = cv2.getGaussianKernel(round(sigma * 8 + 1) | 1, sigma, cv2.CV_32F)
    k.setflags(write=False)
    return k


def _median(values: np.ndarray) -> float:
    """Median (the mean of the two middle values for an even count), as ``np.median``."""
    return _percentile(values, 50.0)


class ContrastScorer(Scorer):
    """Robust local-contrast outlier statistic.

    Parameters
    ----------
    background_sigma : float or (float, float), default=8.0
        Gaussian sigma (px) of the background that is subtracted; a pair is
        ``(long, short)``: sigma along and across the structure (see
        ``orientation``).
    orientation : {"auto", "vertical", "horizontal"}, default="auto"
        Direction of the long sigma of a ``(long, short)`` background:
        ``auto`` chooses per image the direction with the weaker mean squared
        Sobel gradient (vertical grooves have strong horizontal gradients).
    polarity : {"both", "dark", "bright"}, default="both"
        Which deviations count: either sign (the absolute z map), only darker
        or only brighter than the background (the z map of that sign,
        negative values set to 0).
    size : int or None, default=None
        Resize every image to ``size`` x ``size`` first (None: score it at its
        own size).
    smooth_sigma : float, default=2.0
        Gaussian sigma (px) applied to the z map.
    border : int, default=8
        Pixels at the image border left out of the image score.
    reference_percentile : float, default=90
        The image score is the map's peak divided by this percentile of it.
    stat_stride : int, default=4
        The median, MAD and reference percentile use every ``stat_stride``-th
        pixel in each direction (1: every pixel, exact and about 3x slower).
    fast_background : bool, default=True
        Blur the background on a copy shrunk by ``min(4, background_sigma // 2)``
        and enlarge it back (False: the full-resolution Gaussian).
    """

    name = "contrast"
    map_range = (0.0, 10.0)

    def __init__(
        self,
        *,
        background_sigma: float | tuple[float, float] = 8.0,
        orientation: str = "auto",
        polarity: str = "both",
        size: int | None = None,
        smooth_sigma: float = 2.0,
        border: int = 8,
        reference_percentile: float = 90.0,
        stat_stride: int = 4,
        fast_background: bool = True,
    ):
        self.background_sigma = background_sigma
        self.orientation = orientation
        self.polarity = polarity
        self.size = size
        self.smooth_sigma = smooth_sigma
        self.border = border
        self.reference_percentile = reference_percentile
        self.stat_stride = stat_stride
        self.fast_background = fast_background

    def _sigmas(self) -> tuple[float, float]:
        """``(long, short)`` background sigmas (equal for a single number)."""
        bs = self.background_sigma
        if isinstance(bs, (int, float)) and not isinstance(bs, bool):
            return float(bs), float(bs)
        if isinstance(bs, (list, tuple)) and len(bs) == 2 and all(isinstance(v, (int, float)) for v in bs):
            return float(bs[0]), float(bs[1])
        raise ValueError(f"background_sigma must be a number or a pair [long, short] of numbers, got {bs!r}")

    def _validate(self) -> None:
        long, short = self._sigmas()
        if long <= 0 or short <= 0:
            raise ValueError(f"background_sigma must be > 0, got {self.background_sigma}")
        if self.orientation not in ("auto", "vertical", "horizontal"):
            raise ValueError(f"orientation must be one of auto, vertical, horizontal; got {self.orientation!r}")
        if self.polarity not in ("both", "dark", "bright"):
            raise ValueError(f"polarity must be one of both, dark, bright; got {self.polarity!r}")
        if self.size is not None and (not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 16):
            raise ValueError(f"size must be null or an integer >= 16, got {self.size!r}")
        if self.smooth_sigma < 0:
            raise ValueError(f"smooth_sigma must be >= 0, got {self.smooth_sigma}")
        if self.border < 0:
            raise ValueError(f"border must be >= 0, got {self.border}")
        if not 0 < self.reference_percentile < 100:
            raise ValueError(f"reference_percentile must be in (0, 100), got {self.reference_percentile}")
        if not isinstance(self.stat_stride, int) or self.stat_stride < 1:
            raise ValueError(f"stat_stride must be an integer >= 1, got {self.stat_stride!r}")

    def _axis_sigmas(self, gray: np.ndarray) -> tuple[float, float]:
        """``(sigma_y, sigma_x)`` of the background for this image."""
        long, short = self._sigmas()
        if long == short:
            return long, short
        vertical = self.orientation == "vertical"
        if self.orientation == "auto":
            st = max(1, self.stat_stride)
            g = gray[::st, ::st]
            gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
            gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
            vertical = float(np.square(gx).mean()) >= float(np.square(gy).mean())
        return (long, short) if vertical else (short, long)

    def _background(self, gray: np.ndarray) -> np.ndarray:
        """The Gaussian background, computed on a shrunk copy when ``fast_background``.

        Each axis is shrunk by ``min(4, sigma // 2)`` of its own sigma.
        """
        sy, sx = self._axis_sigmas(gray)
        h, w = gray.shape
        fy, fx = (min(4, int(s // 2)) if self.fast_background else 1 for s in (sy, sx))
        fy = fy if fy >= 2 and h >= 8 * fy else 1
        fx = fx if fx >= 2 and w >= 8 * fx else 1
        if fy == 1 and fx == 1:
            return cv2.GaussianBlur(gray, (0, 0), sigmaX=sx, sigmaY=sy, borderType=cv2.BORDER_REFLECT)
        small = cv2.resize(gray, (max(1, round(w / fx)), max(1, round(h / fy))), interpolation=cv2.INTER_AREA)
        # the box average of INTER_AREA already smooths by about f / sqrt(12) px at full scale
        sig_y = np.sqrt(max(sy**2 - fy**2 / 12.0, 0.25)) / fy
        sig_x = np.sqrt(max(sx**2 - fx**2 / 12.0, 0.25)) / fx
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=sig_x, sigmaY=sig_y, borderType=cv2.BORDER_REFLECT)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)

    def prepare(self, store=None, run_id=None) -> ContrastScorer:
        """Validate parameters; nothing to learn."""
        self._validate()
        return self

    def score_image(self, image: np.ndarray) -> ScoreResult:
        """Score one image.

        Returns
        -------
        ScoreResult
            ``map`` is the smoothed robust z-score (absolute, or of the
            chosen ``polarity``), shape (H, W) or (size, size), float32;
            ``score`` its maximum inside the border margin divided by its
            ``reference_percentile`` there.
        """
        self._validate()
        gray = to_float_gray(image)
        if self.size is not None and gray.shape != (self.size, self.size):
            gray = cv2.resize(gray, (self.size, self.size), interpolation=cv2.INTER_AREA)
        st = self.stat_stride
        z = np.subtract(gray, self._background(gray), out=gray if gray is not image else None)
        med = _median(z[::st, ::st])
        if self.polarity == "both":
            z = cv2.absdiff(z, med, dst=z)  # |z - med| in one pass, in place
            mad = _median(z[::st, ::st]) * 1.4826
        else:
            z -= med  # in place: one image-sized buffer for the whole map
            mad = _median(np.abs(z[::st, ::st])) * 1.4826
        scale = (-1.0 if self.polarity == "dark" else 1.0) / (mad + 1e-3)
        if self.smooth_sigma > 0:
            # the Gaussian, with the z scale (and sign) folded into one of its two 1-D kernels
            k = _gaussian_kernel(float(self.smooth_sigma))
            z = cv2.sepFilter2D(z, cv2.CV_32F, k * np.float32(scale), k, borderType=cv2.BORDER_REFLECT)
        else:
            z *= scale
        if self.polarity != "both":
            np.maximum(z, 0.0, out=z)  # the other sign is not a deviation of interest
        b = min(self.border, (min(z.shape) - 1) // 2)
        inner = z[b : z.shape[0] - b, b : z.shape[1] - b] if b else z
        peak = float(inner.max())
        ref = _percentile(inner[::st, ::st], self.reference_percentile)
        return ScoreResult(
            score=peak / (ref + 1e-6),
            stats={
                "contrast_max": peak,
                "contrast_ref": ref,
                "contrast_mad": mad,
            },
            map=z.astype(np.float32, copy=False),
        )
