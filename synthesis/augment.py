"""Classic augmentation plus cutout, mixup, cutmix and gridmask, with masks carried; tiling with overlap.

Images are 2-D float arrays in [0, 1] of shape (H, W); masks are 2-D arrays
of the same shape (bool or float in [0, 1] for soft masks after mixup). Each
function returns the new image, the new mask and a dict of what it drew.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from synthesis._common import SeedLike, as_rng, check_image2d

logger = logging.getLogger(__name__)


def _pair(image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    image = check_image2d(image).astype(np.float32)
    if mask is None:
        mask = np.zeros(image.shape, bool)
    mask = np.asarray(mask)
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    return image, mask


def classic(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    rng: SeedLike = None,
    flip: bool = True,
    rot90: bool = True,
    brightness: float = 0.1,
    contrast: float = 0.2,
    gamma: float = 0.2,
    noise: float = 0.0,
    blur: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Flips, right-angle rotations (mask follows) and photometric jitter (mask unchanged).

    Parameters
    ----------
    image : ndarray of shape (H, W), float in [0, 1]
    mask : ndarray of shape (H, W), optional
    rng : int or numpy.random.Generator
    flip : bool, default=True
        Flip left-right and up-down, each with probability 1/2.
    rot90 : bool, default=True
        Rotate by k * 90 degrees, k drawn from 0..3 (square images only;
        non-square images get k in {0, 2}).
    brightness : float, default=0.1
        Add a value drawn from [-brightness, brightness].
    contrast : float, default=0.2
        Scale about the mean by a factor in [1 - contrast, 1 + contrast].
    gamma : float, default=0.2
        Gamma drawn from [1 - gamma, 1 + gamma].
    noise : float, default=0.0
        Standard deviation of additive Gaussian noise.
    blur : float, default=0.0
        Largest Gaussian blur sigma (drawn from [0, blur]).

    Returns
    -------
    image, mask, params
    """
    image, mask = _pair(image, mask)
    rng = as_rng(rng)
    p: dict = {}
    if flip:
        p["flip_lr"], p["flip_ud"] = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        if p["flip_lr"]:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if p["flip_ud"]:
            image, mask = image[::-1], mask[::-1]
    if rot90:
        k = int(rng.integers(4)) if image.shape[0] == image.shape[1] else 2 * int(rng.integers(2))
        p["rot90"] = k
        image, mask = np.rot90(image, k), np.rot90(mask, k)
    out = np.ascontiguousarray(image, dtype=np.float32)
    if contrast:
        c = float(rng.uniform(1 - contrast, 1 + contrast))
        m = float(out.mean())
        out = (out - m) * c + m
        p["contrast"] = round(c, 4)
    if brightness:
        b = float(rng.uniform(-brightness, brightness))
        out = out + b
        p["brightness"] = round(b, 4)
    if gamma:
        g = float(rng.uniform(1 - gamma, 1 + gamma))
        out = np.clip(out, 0, 1) ** g
        p["gamma"] = round(g, 4)
    if blur:
        s = float(rng.uniform(0, blur))
        if s > 0.1:
            out = cv2.GaussianBlur(out, (0, 0), s)
        p["blur"] = round(s, 4)
    if noise:
        out = out + rng.normal(0, noise, out.shape).astype(np.float32)
        p["noise"] = noise
    return np.clip(out, 0, 1).astype(np.float32), np.ascontiguousarray(mask), p


def _box(rng: np.random.Generator, shape: tuple[int, int], frac: float) -> tuple[int, int, int, int]:
    h, w = shape
    bh, bw = max(1, round(h * frac)), max(1, round(w * frac))
    y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    return y, x, bh, bw


def cutout(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    rng: SeedLike = None,
    holes: int = 1,
    size: tuple[float, float] = (0.1, 0.3),
    fill: float | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Erase rectangles; the defect pixels erased are removed from the mask too.

    Parameters
    ----------
    image, mask : ndarray of shape (H, W)
    rng : int or numpy.random.Generator
    holes : int, default=1
    size : (lo, hi)
        Side of each hole as a fraction of the image side.
    fill : float, optional
        Fill value; default the image mean.

    Returns
    -------
    image, mask, params
        ``params["boxes"]`` lists ``(y, x, h, w)`` of the holes.
    """
    image, mask = _pair(image, mask)
    rng = as_rng(rng)
    out, mk = image.copy(), mask.copy()
    v = float(image.mean()) if fill is None else float(fill)
    boxes = []
    for _ in range(int(holes)):
        y, x, bh, bw = _box(rng, image.shape, float(rng.uniform(*size)))
        out[y : y + bh, x : x + bw] = v
        mk[y : y + bh, x : x + bw] = 0
        boxes.append((y, x, bh, bw))
    return out, mk, {"boxes": boxes, "fill": v}


def mixup(
    image_a: np.ndarray,
    mask_a: np.ndarray | None,
    image_b: np.ndarray,
    mask_b: np.ndarray | None,
    *,
    rng: SeedLike = None,
    alpha: float = 0.4,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Mixup: ``lam * a + (1 - lam) * b`` for the images and the (soft, float32) masks alike.

    ``lam`` is drawn from Beta(alpha, alpha); ``params["lam"]`` is also the
    weight of ``a``'s image label.
    """
    a, ma = _pair(image_a, mask_a)
    b, mb = _pair(image_b, mask_b)
    if a.shape != b.shape:
        raise ValueError(f"mixup needs images of one shape, got {a.shape} and {b.shape}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    lam = float(as_rng(rng).beta(alpha, alpha))
    img = lam * a + (1 - lam) * b
    mk = lam * ma.astype(np.float32) + (1 - lam) * mb.astype(np.float32)
    return img.astype(np.float32), mk.astype(np.float32), {"lam": round(lam, 6)}


def cutmix(
    image_a: np.ndarray,
    mask_a: np.ndarray | None,
    image_b: np.ndarray,
    mask_b: np.ndarray | None,
    *,
    rng: SeedLike = None,
    alpha: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """CutMix: a box of ``b`` (image and mask) replaces the same box of ``a``.

    The box's area fraction is ``1 - lam`` with ``lam ~ Beta(alpha, alpha)``;
    ``params["lam"]`` is the exact fraction of ``a`` kept (the weight of its label).
    """
    a, ma = _pair(image_a, mask_a)
    b, mb = _pair(image_b, mask_b)
    if a.shape != b.shape:
        raise ValueError(f"cutmix needs images of one shape, got {a.shape} and {b.shape}")
    rng = as_rng(rng)
    lam = float(rng.beta(alpha, alpha))
    y, x, bh, bw = _box(rng, a.shape, float(np.sqrt(1 - lam)))
    img, mk = a.copy(), ma.copy()
    img[y : y + bh, x : x + bw] = b[y : y + bh, x : x + bw]
    mk[y : y + bh, x : x + bw] = mb[y : y + bh, x : x + bw]
    kept = 1 - bh * bw / a.size
    return img, mk, {"box": (y, x, bh, bw), "lam": round(kept, 6)}


def gridmask(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    rng: SeedLike = None,
    period: tuple[int, int] = (16, 48),
    ratio: float = 0.5,
    fill: float = 0.0,
    rotate: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """GridMask: drop a regular grid of squares (side ``ratio * period``); the mask loses those pixels too.

    Parameters
    ----------
    image, mask : ndarray of shape (H, W)
    rng : int or numpy.random.Generator
    period : (lo, hi)
        Grid period in pixels, drawn per call.
    ratio : float, default=0.5
        Side of the dropped square relative to the period, in (0, 1).
    fill : float, default=0.0
    rotate : bool, default=False
        Rotate the grid by a random angle.
    """
    image, mask = _pair(image, mask)
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    rng = as_rng(rng)
    h, w = image.shape
    d = int(rng.integers(period[0], period[1] + 1))
    off = rng.integers(0, d, 2)
    side = max(1, round(ratio * d))
    yy, xx = np.mgrid[0:h, 0:w]
    ang = float(rng.uniform(0, 90)) if rotate else 0.0
    if ang:
        t = np.radians(ang)
        yy, xx = (yy * np.cos(t) - xx * np.sin(t)), (yy * np.sin(t) + xx * np.cos(t))
        yy, xx = np.floor(yy).astype(int), np.floor(xx).astype(int)
    drop = (((yy + off[0]) % d) < side) & (((xx + off[1]) % d) < side)
    out = np.where(drop, np.float32(fill), image).astype(np.float32)
    mk = mask.copy()
    mk[drop] = 0
    return out, mk, {"period": d, "offset": [int(v) for v in off], "side": side, "angle": round(ang, 3)}


def tile_boxes(height: int, width: int, tile: int, overlap: int = 0) -> list[tuple[int, int, int, int]]:
    """Tiles ``(y, x, h, w)`` of side ``tile`` with ``overlap`` pixels shared, covering the image.

    The last row and column are shifted to end flush with the image edge;
    an image smaller than ``tile`` is one tile.
    """
    if tile <= 0:
        raise ValueError(f"tile must be > 0, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    step = tile - overlap

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        s = list(range(0, n - tile + 1, step))
        if s[-1] + tile < n:
            s.append(n - tile)
        return s

    th, tw = min(tile, height), min(tile, width)
    return [(y, x, th, tw) for y in starts(height) for x in starts(width)]


def tiles(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    tile: int,
    overlap: int = 0,
) -> list[tuple[tuple[int, int, int, int], np.ndarray, np.ndarray | None]]:
    """Cut an image (and its mask) into overlapping tiles: a list of ``(box, image_tile, mask_tile)``."""
    image = np.asarray(image)
    if mask is not None and np.asarray(mask).shape[:2] != image.shape[:2]:
        raise ValueError(f"mask shape {np.asarray(mask).shape} differs from image shape {image.shape}")
    out = []
    for y, x, h, w in tile_boxes(image.shape[0], image.shape[1], tile, overlap):
        mt = None if mask is None else np.asarray(mask)[y : y + h, x : x + w]
        out.append(((y, x, h, w), image[y : y + h, x : x + w], mt))
    return out
