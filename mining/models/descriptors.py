"""Cheap image descriptors: intensity histogram and texture statistics (LBP, GLCM).

A second embedding that costs almost nothing next to a network: the image is
brought to a small fixed size, and the vector concatenates

- intensity statistics (mean, std, percentiles) and a histogram;
- uniform local binary pattern histograms (scikit-image ``local_binary_pattern``)
  at one or more radii;
- grey-level co-occurrence properties (scikit-image ``graycomatrix`` /
  ``graycoprops``) at a few distances, averaged over four angles.

Layout of the vector (see :func:`descriptor_names`), for the defaults:
8 intensity statistics, 16 histogram bins, 10 LBP bins (radius 1) and
5 properties x 2 distances = 10 GLCM values: 44 float32 values, computed at
64 x 64. (Until December 2026 the defaults were 128 x 128 and LBP radii 1 and 2,
62 values at about 10 ms an image; pass those to get them back.)
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.feature import graycomatrix, local_binary_pattern

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
    *, bins: int = 16, lbp_radii: tuple[int, ...] = (1,), glcm_distances: tuple[int, ...] = (1, 3)
) -> list[str]:
    """Names of the values returned by :func:`describe`, in order."""
    names = ["mean", "std", "p01", "p10", "p50", "p90", "p99", "grad_mean"]
    names += [f"hist_{i}" for i in range(bins)]
    for r in lbp_radii:
        names += [f"lbp{r}_{i}" for i in range(8 * r + 2)]
    names += [f"glcm_{p}_d{d}" for d in glcm_distances for p in GLCM_PROPS]
    return names


def glcm_properties(glcm: np.ndarray) -> np.ndarray:
    """The :data:`GLCM_PROPS` of normalised co-occurrence matrices, in one vectorised pass.

    The same formulas as scikit-image's ``graycoprops`` (a test checks them
    against it), evaluated for all distances and angles at once: each
    ``graycoprops`` call re-validates its input and rebuilds its grids, which
    cost more than the rest of the descriptor.

    Parameters
    ----------
    glcm : ndarray of shape (L, L, n_distances, n_angles)
        Normalised matrices, as returned by ``graycomatrix(..., normed=True)``.

    Returns
    -------
    ndarray of shape (len(GLCM_PROPS), n_distances, n_angles), float64
    """
    P = np.asarray(glcm, np.float64)
    L = P.shape[0]
    flat_p = P.reshape(L * L, -1)
    i, j = (a.ravel().astype(np.float64) for a in np.indices((L, L)))
    d = i - j
    # every property is a weighted sum over the matrix, except energy: one product for all of them
    w = np.stack([d * d, np.abs(d), 1.0 / (1.0 + d * d), i, j, i * i, j * j, i * j])
    contrast, dissimilarity, homogeneity, mu_i, mu_j, ii, jj, ij = w @ flat_p
    energy = np.sqrt((flat_p * flat_p).sum(axis=0))
    var_i, var_j = np.maximum(ii - mu_i * mu_i, 0.0), np.maximum(jj - mu_j * mu_j, 0.0)
    cov = ij - mu_i * mu_j
    # graycoprops: a matrix with no spread (a constant image) is perfectly correlated; the variances
    # here are differences of moments, so "no spread" is below rounding, not exactly zero
    flat = (var_i < 1e-12) | (var_j < 1e-12)
    correlation = np.where(flat, 1.0, cov / np.sqrt(np.where(flat, 1.0, var_i * var_j)))
    shape = P.shape[2:]
    contrast, dissimilarity, homogeneity, energy, correlation = (
        v.reshape(shape) for v in (contrast, dissimilarity, homogeneity, energy, correlation)
    )
    return np.stack([contrast, dissimilarity, homogeneity, energy, correlation])


def describe(
    image: np.ndarray,
    *,
    size: int = 64,
    bins: int = 16,
    lbp_radii: tuple[int, ...] = (1,),
    glcm_distances: tuple[int, ...] = (1, 3),
    levels: int = 32,
) -> np.ndarray:
    """Cheap descriptor vector of one image.

    About 1.3 ms for a 256 x 256 image at the defaults on one core here
    (``benchmarks/unsupervised_mining.py`` measures it with the rest of the
    streaming pass); the LBP is most of it and grows with ``size**2`` and the
    number of radii.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C)
        Any dtype accepted by :func:`mining.io.to_float_gray`.
    size : int, default=64
        The image is resized (area interpolation) to ``size`` x ``size`` first.
    bins : int, default=16
        Intensity histogram bins over [0, 1].
    lbp_radii : tuple of int, default=(1,)
        Radii of uniform LBP histograms (``8 * r`` neighbours each).
    glcm_distances : tuple of int, default=(1, 3)
        Pixel distances of the co-occurrence matrices (4 angles averaged).
    levels : int, default=32
        Grey levels of the co-occurrence matrices.

    Returns
    -------
    ndarray of shape (D,), float32
        ``D == len(descriptor_names(...))``.

    Notes
    -----
    Percentiles and the histogram are taken from the image quantised to 8
    bits (value ``v`` counts as level ``round(255 v)``): one ``bincount``
    instead of a sort; percentile ``q`` is the lowest level whose cumulative
    count reaches ``q`` % of the pixels.
    """
    lbp_radii, glcm_distances = tuple(lbp_radii), tuple(glcm_distances)
    _check(size, bins, lbp_radii, glcm_distances, levels)
    g = to_float_gray(image)
    g = cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA)
    g = np.clip(g, 0.0, 1.0)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    g8 = (g * 255 + 0.5).astype(np.uint8)
    counts = np.bincount(g8.ravel(), minlength=256)
    cdf = np.cumsum(counts)
    pct = np.searchsorted(cdf, np.array([0.01, 0.10, 0.50, 0.90, 0.99]) * g.size) / 255.0
    parts = [np.array([g.mean(), g.std(), *pct, np.sqrt(gx * gx + gy * gy).mean()], np.float64)]
    level_bin = np.minimum((np.arange(256) / 255.0 * bins).astype(np.int64), bins - 1)
    parts.append(np.bincount(level_bin, weights=counts, minlength=bins) / g.size)
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
    props = glcm_properties(glcm).mean(axis=2)  # (props, distances): averaged over the angles
    parts.append(props.T.ravel())
    return np.nan_to_num(np.concatenate(parts)).astype(np.float32)
