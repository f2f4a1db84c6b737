"""Summaries of a pixel model's probability maps: uncertainty, the valid area, per-image statistics."""

from __future__ import annotations

import cv2
import numpy as np


def uncertainty(proba: np.ndarray, kind: str = "margin") -> np.ndarray:
    """Uncertainty map from (..., K) probabilities: ``"margin"`` = 1 - max, ``"entropy"`` normalised to [0, 1]."""
    if kind == "margin":
        return (1.0 - proba.max(axis=-1)).astype(np.float32)
    if kind == "entropy":
        p = np.clip(proba, 1e-7, 1)
        return (-(p * np.log(p)).sum(-1) / np.log(proba.shape[-1])).astype(np.float32)
    raise ValueError(f"uncertainty kind must be 'margin' or 'entropy', got {kind!r}")


def valid_mask(shape: tuple[int, int], border: int) -> np.ndarray:
    """True inside the image, ``border`` px away from its edges (all True when border is 0)."""
    m = np.zeros(shape, bool)
    b = min(border, (min(shape) - 1) // 2)
    m[b : shape[0] - b, b : shape[1] - b] = True
    return m


def map_stats(
    prob: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    top_k: int = 50,
    threshold: float = 0.5,
    pixel_area: float = 1.0,
) -> dict[str, float]:
    """Statistics of one probability map.

    Parameters
    ----------
    prob : ndarray of shape (h, w)
    mask : ndarray of bool, optional
        Pixels that count (e.g. :func:`valid_mask`).
    top_k : int, default=50
        Pixels averaged in ``topk_mean`` (scaled by ``pixel_area`` on coarse grids).
    threshold : float, default=0.5
    pixel_area : float, default=1.0
        Original-image pixels per map pixel.

    Returns
    -------
    dict
        ``max``, ``topk_mean``, ``area`` (fraction of counted pixels above
        ``threshold``), ``components`` and ``largest`` (original px).
    """
    vals = prob[mask] if mask is not None else prob.ravel()
    if vals.size == 0:
        return {"max": 0.0, "topk_mean": 0.0, "area": 0.0, "components": 0.0, "largest": 0.0}
    k = int(min(vals.size, max(1, round(top_k / pixel_area))))
    top = np.partition(vals, vals.size - k)[vals.size - k :]
    above = prob > threshold
    if mask is not None:
        above &= mask
    n, _, st, _ = cv2.connectedComponentsWithStats(above.astype(np.uint8), connectivity=8)
    largest = float(st[1:, cv2.CC_STAT_AREA].max()) * pixel_area if n > 1 else 0.0
    return {
        "max": float(vals.max()),
        "topk_mean": float(top.mean()),
        "area": float((vals > threshold).mean()),
        "components": float(n - 1),
        "largest": largest,
    }
