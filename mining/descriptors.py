"""Cheap image descriptors: intensity histogram and texture statistics (LBP, GLCM).

A second embedding that costs almost nothing next to a network: the image is
brought to a small fixed size, and the vector concatenates

- intensity statistics (mean, std, percentiles) and a histogram;
- uniform local binary pattern histograms (scikit-image ``local_binary_pattern``)
  at one or more radii;
- grey-level co-occurrence properties (scikit-image ``graycomatrix`` /
  ``graycoprops``) at a few distances, averaged over four angles.

Layout of the vector (see :func:`descriptor_names`), for the defaults:
8 intensity statistics, 16 histogram bins, 10 + 18 LBP bins (radius 1, 2) and
5 properties x 2 distances = 10 GLCM values: 62 float32 values.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

from mining.io import to_float_gray

GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")


def _check(size: int, bins: int, lbp_radii: tuple[int, ...], glcm_distances: tuple[int, ...], levels: int) -> None:
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    if not lbp_radii or any(r < 1 for r in lbp_radii):
        raise ValueError(f"lbp_radii must be positive integers, got {lbp_radii}")
    if not glcm_distances or any(d < 1 for d in glcm_distances):
        raise ValueError(f"glcm_distances must be positive integers, got {glcm_distances}")
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must be in [2, 256], got {levels}")


def descriptor_names(
    *, bins: int = 16, lbp_radii: tuple[int, ...] = (1, 2), glcm_distances: tuple[int, ...] = (1, 3)
) -> list[str]:
    """Names of the values returned by :func:`describe`, in order."""
    names = ["mean", "std", "p01", "p10", "p50", "p90", "p99", "grad_mean"]
    names += [f"hist_{i}" for i in range(bins)]
    for r in lbp_radii:
        names += [f"lbp{r}_{i}" for i in range(8 * r + 2)]
    names += [f"glcm_{p}_d{d}" for d in glcm_distances for p in GLCM_PROPS]
    return names


def describe(
    image: np.ndarray,
    *,
    size: int = 128,
    bins: int = 16,
    lbp_radii: tuple[int, ...] = (1, 2),
    glcm_distances: tuple[int, ...] = (1, 3),
    levels: int = 32,
) -> np.ndarray:
    """Cheap descriptor vector of one image.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C)
        Any dtype accepted by :func:`mining.io.to_float_gray`.
    size : int, default=128
        The image is resized (area interpolation) to ``size`` x ``size`` first.
    bins : int, default=16
        Intensity histogram bins over [0, 1].
    lbp_radii : tuple of int, default=(1, 2)
        Radii of uniform LBP histograms (``8 * r`` neighbours each).
    glcm_distances : tuple of int, default=(1, 3)
        Pixel distances of the co-occurrence matrices (4 angles averaged).
    levels : int, default=32
        Grey levels of the co-occurrence matrices.

    Returns
    -------
    ndarray of shape (D,), float32
        ``D == len(descriptor_names(...))``.
    """
    lbp_radii, glcm_distances = tuple(lbp_radii), tuple(glcm_distances)
    _check(size, bins, lbp_radii, glcm_distances, levels)
    g = to_float_gray(image)
    g = cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA)
    g = np.clip(g, 0.0, 1.0)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    pct = np.percentile(g, (1, 10, 50, 90, 99))
    parts = [np.array([g.mean(), g.std(), *pct, np.sqrt(gx * gx + gy * gy).mean()], np.float64)]
    hist = np.histogram(g, bins=bins, range=(0.0, 1.0))[0]
    parts.append(hist / g.size)
    g8 = (g * 255 + 0.5).astype(np.uint8)
    for r in lbp_radii:
        p = 8 * r
        lbp = local_binary_pattern(g8, p, r, method="uniform")
        parts.append(np.bincount(lbp.astype(np.int64).ravel(), minlength=p + 2)[: p + 2] / lbp.size)
    q = (g * (levels - 1) + 0.5).astype(np.uint8)
    glcm = graycomatrix(
        q,
        distances=list(glcm_distances),
        angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
        levels=levels,
        symmetric=True,
        normed=True,
    )
    for di in range(len(glcm_distances)):
        parts.append(np.array([graycoprops(glcm[:, :, di : di + 1], p).mean() for p in GLCM_PROPS]))
    return np.nan_to_num(np.concatenate(parts)).astype(np.float32)
