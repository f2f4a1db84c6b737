"""Procedural defects: each function takes a [0, 1] float image and returns ``(image, mask)``.

Modelled on anomalib's ``perlin.py`` (a pure noise function plus defect
makers), but every random draw comes from a ``numpy.random.Generator`` passed
in, never from global state. The returned mask is exact: it marks every pixel
that changed (by more than half an 8-bit grey level) and nothing else.

All defect makers share the signature ``fn(image, *, rng, **params)``;
:data:`SIMULATORS` maps the YAML name of each to its function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import cv2
import numpy as np

from synthesis._common import SeedLike, apply_delta, as_rng, check_image2d

logger = logging.getLogger(__name__)

Polarity = Literal["dark", "bright", "random"]


def _fade(t: np.ndarray) -> np.ndarray:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], *, rng: SeedLike = None) -> np.ndarray:
    """2-D gradient (Perlin) noise.

    Parameters
    ----------
    shape : (H, W)
        Output size in pixels (any size; no divisibility needed).
    res : (ry, rx)
        Number of noise periods along each axis (>= 1); larger is finer.
    rng : int or numpy.random.Generator
        Seed or generator for the lattice gradients.

    Returns
    -------
    noise : ndarray of shape (H, W), float32, roughly in [-1, 1]
    """
    h, w = (int(v) for v in shape)
    ry, rx = (int(v) for v in res)
    if h < 1 or w < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    if ry < 1 or rx < 1:
        raise ValueError(f"res must be >= 1 along each axis, got {res}")
    rng = as_rng(rng)
    angles = 2 * np.pi * rng.random((ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    fy = np.arange(h) * (ry / h)
    fx = np.arange(w) * (rx / w)
    iy, ix = fy.astype(int), fx.astype(int)
    ty, tx = (fy - iy)[:, None], (fx - ix)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[(iy + dy)[:, None], (ix + dx)[None, :]]
        return g[..., 0] * (ty - dy) + g[..., 1] * (tx - dx)

    uy, ux = _fade(ty), _fade(tx)
    top = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
    bottom = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
    return (np.sqrt(2) * (top * (1 - uy) + bottom * uy)).astype(np.float32)


def _rotate_same(a: np.ndarray, angle: float) -> np.ndarray:
    h, w = a.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(a, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def perlin_blob(
    image: np.ndarray,
    *,
    rng: SeedLike = None,
    min_scale: int = 0,
    max_scale: int = 6,
    threshold: float = 0.5,
    mode: Literal["intensity", "texture"] = "intensity",
    strength: tuple[float, float] = (0.15, 0.4),
    texture: np.ndarray | None = None,
    beta: tuple[float, float] = (0.2, 0.8),
) -> tuple[np.ndarray, np.ndarray]:
    """DRAEM-style anomaly: a thresholded, rotated Perlin-noise region blended into the image.

    Parameters
    ----------
    image : ndarray of shape (H, W), float in [0, 1]
    rng : int or numpy.random.Generator
    min_scale, max_scale : int, default=0, 6
        The noise resolution is ``2**k`` periods for ``k`` drawn in
        ``[min_scale, max_scale)`` per axis (as in DRAEM).
    threshold : float, default=0.5
        Noise above it is the defect region.
    mode : {"intensity", "texture"}
        ``intensity``: the region gets darker or brighter by a factor drawn
        from ``strength``; ``texture``: it is replaced by ``texture`` (an
        image of the same size, e.g. another texture) with opacity ``1 - beta``.
    strength : (lo, hi)
        Relative intensity change for ``mode="intensity"``.
    texture : ndarray of shape (H, W), optional
        Required for ``mode="texture"``.
    beta : (lo, hi)
        DRAEM's opacity range for ``mode="texture"``.

    Returns
    -------
    image : ndarray of shape (H, W), float32
    mask : ndarray of shape (H, W), bool
        The pixels that changed. May be empty when the noise stays under the threshold.
    """
    image = check_image2d(image).astype(np.float32)
    if mode not in ("intensity", "texture"):
        raise ValueError(f"mode must be one of intensity, texture; got {mode!r}")
    if not 0 <= min_scale < max_scale:
        raise ValueError(f"need 0 <= min_scale < max_scale, got {min_scale}, {max_scale}")
    rng = as_rng(rng)
    h, w = image.shape
    sy, sx = 2 ** rng.integers(min_scale, max_scale, size=2)
    noise = perlin_noise((h, w), (int(sy), int(sx)), rng=rng)
    noise = _rotate_same(noise, float(rng.uniform(-90, 90)))
    region = (noise > threshold).astype(np.float32)
    if mode == "intensity":
        s = float(rng.uniform(*strength)) * float(rng.choice([-1.0, 1.0]))
        delta = region * s * np.maximum(image, 0.15)
    else:
        if texture is None:
            raise ValueError("mode='texture' needs a texture image of the same size")
        texture = check_image2d(texture, "texture").astype(np.float32)
        if texture.shape != image.shape:
            raise ValueError(f"texture shape {texture.shape} differs from image shape {image.shape}")
        b = float(rng.uniform(*beta))
        delta = region * (1 - b) * (texture - image)
    return apply_delta(image, delta)


def _smooth_path(
    rng: np.random.Generator, start: np.ndarray, heading: float, length: float, step: float, wiggle: float
) -> np.ndarray:
    n = max(2, int(length / step))
    turn = np.cumsum(rng.normal(0, wiggle, n))
    turn = cv2.GaussianBlur(turn.reshape(1, -1), (0, 0), max(1.0, n / 10)).ravel()
    ang = heading + turn
    steps = np.stack([np.cos(ang), np.sin(ang)], 1) * step
    return start + np.vstack([[0.0, 0.0], np.cumsum(steps, 0)])


def _draw_polyline(
    shape: tuple[int, int], pts: np.ndarray, widths: np.ndarray, values: np.ndarray, ss: int = 4
) -> np.ndarray:
    """Draw a polyline with per-vertex width and value, anti-aliased by ``ss``-fold supersampling.

    Only the polyline's bounding box (plus its width) is supersampled, so long
    curves on large images stay cheap.
    """
    h, w = shape
    out = np.zeros((h, w), np.float32)
    pad = int(np.ceil(float(np.max(widths)))) + 2
    x0 = max(0, int(np.floor(pts[:, 0].min())) - pad)
    y0 = max(0, int(np.floor(pts[:, 1].min())) - pad)
    x1 = min(w, int(np.ceil(pts[:, 0].max())) + pad + 1)
    y1 = min(h, int(np.ceil(pts[:, 1].max())) + pad + 1)
    if x1 <= x0 or y1 <= y0:
        return out
    canvas = np.zeros(((y1 - y0) * ss, (x1 - x0) * ss), np.float32)
    local = (pts - [x0, y0]) * ss
    for i in range(len(pts) - 1):
        p0 = (round(local[i, 0]), round(local[i, 1]))
        p1 = (round(local[i + 1, 0]), round(local[i + 1, 1]))
        cv2.line(canvas, p0, p1, float(values[i]), max(1, round(widths[i] * ss)), cv2.LINE_8)
    out[y0:y1, x0:x1] = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out


def scratch(
    image: np.ndarray,
    *,
    rng: SeedLike = None,
    length: tuple[float, float] = (0.2, 0.6),
    width: tuple[float, float] = (1.0, 3.0),
    depth: tuple[float, float] = (0.2, 0.5),
    wiggle: float = 0.05,
    polarity: Polarity = "random",
    relative: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A scratch: a random smooth curve with a width and a depth profile that taper at both ends.

    Parameters
    ----------
    image : ndarray of shape (H, W), float in [0, 1]
    rng : int or numpy.random.Generator
    length : (lo, hi)
        Length as a fraction of the image diagonal.
    width : (lo, hi)
        Maximum width in pixels.
    depth : (lo, hi)
        Maximum intensity change (in [0, 1] units).
    wiggle : float, default=0.05
        Standard deviation of the heading change per step (radians).
    polarity : {"dark", "bright", "random"}
    relative : bool, default=False
        Read ``depth`` as a fraction of the local mean intensity instead of
        absolute [0, 1] units (a dark scratch on a dark surface stays subtle).

    Returns
    -------
    image : ndarray of shape (H, W), float32
    mask : ndarray of shape (H, W), bool
    """
    image = check_image2d(image).astype(np.float32)
    rng = as_rng(rng)
    h, w = image.shape
    sign = _polarity(polarity, rng)
    diag = float(np.hypot(h, w))
    n_len = float(rng.uniform(*length)) * diag
    start = rng.uniform([0.15 * w, 0.15 * h], [0.85 * w, 0.85 * h])
    pts = _smooth_path(rng, start, float(rng.uniform(0, 2 * np.pi)), n_len, 1.0, wiggle)
    t = np.linspace(0, np.pi, len(pts))
    profile = np.sin(t) ** 0.5
    wmax, dmax = float(rng.uniform(*width)), float(rng.uniform(*depth))
    prof = _draw_polyline((h, w), pts, np.maximum(0.6, wmax * profile), profile)
    return apply_delta(image, sign * dmax * prof * _local_level(image, relative))


def crack(
    image: np.ndarray,
    *,
    rng: SeedLike = None,
    length: tuple[float, float] = (0.2, 0.5),
    width: tuple[float, float] = (1.0, 2.5),
    depth: tuple[float, float] = (0.3, 0.6),
    branch_prob: float = 0.03,
    max_branches: int = 4,
    jitter: float = 0.35,
    polarity: Polarity = "dark",
    relative: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A crack: a branching random walk, jagged, thinner on each branch.

    Parameters
    ----------
    image : ndarray of shape (H, W), float in [0, 1]
    rng : int or numpy.random.Generator
    length : (lo, hi)
        Length of the main walk as a fraction of the image diagonal.
    width : (lo, hi)
        Width of the main walk in pixels (branches are thinner).
    depth : (lo, hi)
        Intensity change (in [0, 1] units) along the main walk.
    branch_prob : float, default=0.03
        Probability per step of starting a branch.
    max_branches : int, default=4
    jitter : float, default=0.35
        Standard deviation of the heading change per step (radians); cracks are jagged.
    polarity : {"dark", "bright", "random"}
    relative : bool, default=False
        Read ``depth`` as a fraction of the local mean intensity.

    Returns
    -------
    image : ndarray of shape (H, W), float32
    mask : ndarray of shape (H, W), bool
    """
    image = check_image2d(image).astype(np.float32)
    if not 0 <= branch_prob <= 1:
        raise ValueError(f"branch_prob must be in [0, 1], got {branch_prob}")
    rng = as_rng(rng)
    h, w = image.shape
    sign = _polarity(polarity, rng)
    diag = float(np.hypot(h, w))
    wmax, dmax = float(rng.uniform(*width)), float(rng.uniform(*depth))
    heading0 = float(rng.uniform(0, 2 * np.pi))
    walks = [(rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h]), heading0, float(rng.uniform(*length)) * diag, 1.0)]
    prof = np.zeros((h, w), np.float32)
    n_branches = 0
    while walks:
        start, heading, n_len, level = walks.pop()
        n = max(2, int(n_len / 1.5))
        pts = [np.asarray(start, float)]
        drift = heading
        for _ in range(n):
            drift += rng.normal(0, jitter * 0.15)
            heading = drift + rng.normal(0, jitter)
            pts.append(pts[-1] + 1.5 * np.array([np.cos(heading), np.sin(heading)]))
            if n_branches < max_branches and rng.random() < branch_prob:
                n_branches += 1
                walks.append(
                    (
                        pts[-1].copy(),
                        drift + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1),
                        n_len * rng.uniform(0.2, 0.5),
                        level * 0.7,
                    )
                )
        pts = np.asarray(pts)
        taper = np.linspace(1.0, 0.4, len(pts))
        seg = _draw_polyline((h, w), pts, np.maximum(0.6, wmax * level * taper), level * (0.6 + 0.4 * taper))
        np.maximum(prof, seg, out=prof)
    return apply_delta(image, sign * dmax * prof * _local_level(image, relative))


def spots(
    image: np.ndarray,
    *,
    rng: SeedLike = None,
    count: tuple[int, int] = (1, 3),
    radius: tuple[float, float] = (2.0, 8.0),
    contrast: tuple[float, float] = (0.2, 0.6),
    texture: float = 0.3,
    softness: float = 0.8,
    polarity: Polarity = "random",
    margin: float = 0.1,
    relative: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Spots and particles: small bright or dark blobs with an inner texture (contamination, pits).

    Parameters
    ----------
    image : ndarray of shape (H, W), float in [0, 1]
    rng : int or numpy.random.Generator
    count : (lo, hi)
        Number of blobs, inclusive.
    radius : (lo, hi)
        Semi-axes in pixels.
    contrast : (lo, hi)
        Intensity change at the blob's centre (in [0, 1] units).
    texture : float, default=0.3
        Relative amplitude of the noise inside each blob (0 = flat).
    softness : float, default=0.8
        Edge blur in pixels.
    polarity : {"dark", "bright", "random"}
        ``random`` draws once per blob.
    margin : float, default=0.1
        Blobs' centres stay this fraction of the size away from the border.
    relative : bool, default=False
        Read ``contrast`` as a fraction of the local mean intensity.

    Returns
    -------
    image : ndarray of shape (H, W), float32
    mask : ndarray of shape (H, W), bool
    """
    image = check_image2d(image).astype(np.float32)
    rng = as_rng(rng)
    h, w = image.shape
    lo, hi = int(count[0]), int(count[1])
    if lo < 1 or hi < lo:
        raise ValueError(f"count must be (lo, hi) with 1 <= lo <= hi, got {count}")
    delta = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(lo, hi + 1))):
        sign = _polarity(polarity, rng)
        c = rng.uniform([margin * w, margin * h], [(1 - margin) * w, (1 - margin) * h])
        ax = rng.uniform(radius[0], radius[1], 2)
        shape = np.zeros((h, w), np.float32)
        cv2.ellipse(
            shape,
            (round(c[0]), round(c[1])),
            (max(1, round(ax[0])), max(1, round(ax[1]))),
            float(rng.uniform(0, 180)),
            0,
            360,
            1.0,
            -1,
            cv2.LINE_AA,
        )
        if softness > 0:
            shape = cv2.GaussianBlur(shape, (0, 0), softness)
        grain = 1.0 + texture * rng.normal(0, 1, (h, w)).astype(np.float32)
        grain = cv2.GaussianBlur(grain, (0, 0), 0.7) if texture > 0 else grain
        blob = sign * float(rng.uniform(*contrast)) * shape * grain
        delta = np.where(np.abs(blob) > np.abs(delta), blob, delta)
    return apply_delta(image, delta * _local_level(image, relative))


def stain(
    image: np.ndarray,
    *,
    rng: SeedLike = None,
    size: tuple[float, float] = (0.2, 0.5),
    contrast: tuple[float, float] = (0.04, 0.12),
    polarity: Polarity = "random",
) -> tuple[np.ndarray, np.ndarray]:
    """A stain: a smooth, irregular, low-contrast region with soft edges.

    Parameters
    ----------
    image : ndarray of shape (H, W), float in [0, 1]
    rng : int or numpy.random.Generator
    size : (lo, hi)
        Diameter as a fraction of the shorter image side.
    contrast : (lo, hi)
        Intensity change in the stain's core (in [0, 1] units).
    polarity : {"dark", "bright", "random"}

    Returns
    -------
    image : ndarray of shape (H, W), float32
    mask : ndarray of shape (H, W), bool
    """
    image = check_image2d(image).astype(np.float32)
    rng = as_rng(rng)
    h, w = image.shape
    sign = _polarity(polarity, rng)
    d = float(rng.uniform(*size)) * min(h, w)
    c = rng.uniform([0.2 * w, 0.2 * h], [0.8 * w, 0.8 * h])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot(xx - c[0], yy - c[1]) / (d / 2)
    noise = perlin_noise((h, w), (4, 4), rng=rng)
    field = 1.0 - r + 0.35 * noise
    alpha = np.clip(field / 0.35, 0.0, 1.0)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, d / 20))
    return apply_delta(image, sign * float(rng.uniform(*contrast)) * alpha)


def _local_level(image: np.ndarray, relative: bool) -> np.ndarray | float:
    """1.0, or the local mean intensity (Gaussian, sigma 8 px) for defects whose contrast is relative."""
    if not relative:
        return 1.0
    return np.maximum(cv2.GaussianBlur(image, (0, 0), 8.0), 0.02)


def _polarity(polarity: str, rng: np.random.Generator) -> float:
    if polarity == "dark":
        return -1.0
    if polarity == "bright":
        return 1.0
    if polarity == "random":
        return float(rng.choice([-1.0, 1.0]))
    raise ValueError(f"polarity must be one of dark, bright, random; got {polarity!r}")


#: YAML name -> defect maker ``fn(image, *, rng, **params) -> (image, mask)``.
SIMULATORS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "perlin": perlin_blob,
    "scratch": scratch,
    "crack": crack,
    "spots": spots,
    "stain": stain,
}


def simulate(kind: str, image: np.ndarray, *, rng: SeedLike = None, **params) -> tuple[np.ndarray, np.ndarray]:
    """Run the defect maker called ``kind`` (one of :data:`SIMULATORS`)."""
    try:
        fn = SIMULATORS[kind]
    except KeyError:
        raise ValueError(f"unknown defect kind {kind!r}; allowed: {', '.join(SIMULATORS)}") from None
    return fn(image, rng=rng, **params)
