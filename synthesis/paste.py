"""Pasting real defect crops (with their masks) onto normal images.

A crop is placed at a random position inside an allowed region, after a
random scale, rotation and flip; its intensity and contrast are matched to
the target around the paste position; it is blended hard, with a feathered
alpha, or by Poisson image editing (OpenCV ``seamlessClone``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from synthesis._common import CHANGE_TOL, SeedLike, as_rng, bbox, check_image2d

logger = logging.getLogger(__name__)

BLENDS = ("hard", "feather", "poisson")


@dataclass
class PasteResult:
    """The outcome of one paste.

    Attributes
    ----------
    image : ndarray of shape (H, W), float32 in [0, 1]
    mask : ndarray of shape (H, W), bool
        The defect's pixels in the output (the transformed crop mask).
    changed : ndarray of shape (H, W), bool
        Every pixel whose value changed. Equal to ``mask`` for ``hard``;
        for ``feather`` and ``poisson`` it also holds the blending fringe
        around the defect.
    box : (x, y, w, h)
        Bounding box of ``mask``.
    params : dict
        Position, scale, rotation, flip, blend and intensity match used.
    """

    image: np.ndarray
    mask: np.ndarray
    changed: np.ndarray
    box: tuple[int, int, int, int]
    params: dict = field(default_factory=dict)


def transform_crop(
    crop: np.ndarray, mask: np.ndarray, *, scale: float = 1.0, rotation: float = 0.0, flip: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Scale, rotate (degrees, counter-clockwise) and optionally flip a crop and its mask identically.

    The canvas grows to hold the rotated crop; the new corners get the crop's
    median value and mask 0. Returns ``(crop, mask)`` with mask as bool.
    """
    crop = check_image2d(crop, "crop").astype(np.float32)
    mask = check_image2d(mask, "mask") > 0
    if crop.shape != mask.shape:
        raise ValueError(f"crop shape {crop.shape} differs from mask shape {mask.shape}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if flip:
        crop, mask = crop[:, ::-1], mask[:, ::-1]
    h, w = crop.shape
    cos, sin = abs(np.cos(np.radians(rotation))), abs(np.sin(np.radians(rotation)))
    nw = max(1, int(np.ceil((w * cos + h * sin) * scale)))
    nh = max(1, int(np.ceil((w * sin + h * cos) * scale)))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rotation, scale)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    fill = float(np.median(crop))
    out = cv2.warpAffine(
        np.ascontiguousarray(crop),
        m,
        (nw, nh),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill,
    )
    inside = cv2.warpAffine(np.ones((h, w), np.float32), m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)
    out = np.where(inside > 0.999, out, fill).astype(np.float32)
    mk = (
        cv2.warpAffine(np.ascontiguousarray(mask, dtype=np.float32), m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)
        >= 0.5
    )
    return out, mk


def valid_positions(allowed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Top-left positions where every pixel of ``mask`` lands inside ``allowed``.

    Returns
    -------
    ok : ndarray of shape (H - h + 1, W - w + 1), bool
        Empty (size 0) when the mask is larger than the image.
    """
    H, W = allowed.shape
    h, w = mask.shape
    if h > H or w > W:
        return np.zeros((0, 0), bool)
    bad = (allowed == 0).astype(np.float32)
    hits = cv2.matchTemplate(bad, mask.astype(np.float32), cv2.TM_CCORR)
    return hits < 0.5


def match_intensity(
    crop: np.ndarray, crop_mask: np.ndarray, target_patch: np.ndarray, *, contrast: bool = True
) -> np.ndarray:
    """Shift (and optionally scale) a crop so its background matches a target patch's mean and spread.

    The crop's background is its pixels outside ``crop_mask`` (its whole area
    if the mask covers it all); the defect keeps its contrast relative to it.
    """
    bg = crop[~crop_mask] if (~crop_mask).any() else crop.ravel()
    mu_c, sd_c = float(bg.mean()), float(bg.std())
    mu_t, sd_t = float(target_patch.mean()), float(target_patch.std())
    gain = float(np.clip(sd_t / sd_c, 0.5, 2.0)) if (contrast and sd_c > 1e-6 and sd_t > 1e-6) else 1.0
    return ((crop - mu_c) * gain + mu_t).astype(np.float32)


def paste(
    target: np.ndarray,
    crop: np.ndarray,
    crop_mask: np.ndarray,
    *,
    rng: SeedLike = None,
    allowed: np.ndarray | None = None,
    blend: Literal["hard", "feather", "poisson"] = "hard",
    scale: tuple[float, float] = (1.0, 1.0),
    rotation: tuple[float, float] = (0.0, 0.0),
    flip: bool = False,
    match: bool = True,
    feather: float = 2.0,
    context: int = 3,
) -> PasteResult:
    """Paste a defect crop onto a target image at a random allowed position.

    Parameters
    ----------
    target : ndarray of shape (H, W), float in [0, 1]
    crop : ndarray of shape (h, w), float in [0, 1]
        The defect with some of its surroundings.
    crop_mask : ndarray of shape (h, w)
        Non-zero on the defect's pixels.
    rng : int or numpy.random.Generator
    allowed : ndarray of shape (H, W), optional
        Non-zero where the defect may land (default: everywhere).
    blend : {"hard", "feather", "poisson"}
        ``hard`` copies the defect's pixels (nothing else changes);
        ``feather`` blends with an alpha blurred by ``feather`` pixels;
        ``poisson`` runs ``cv2.seamlessClone`` (NORMAL_CLONE) over the defect
        grown by ``context`` pixels.
    scale : (lo, hi)
        Scale factor drawn uniformly.
    rotation : (lo, hi)
        Rotation in degrees drawn uniformly.
    flip : bool, default=False
        Flip left-right with probability 1/2.
    match : bool, default=True
        Match the crop's background mean and spread to the target around the
        paste position (ignored by ``poisson``, which matches by construction).
    feather : float, default=2.0
        Alpha blur (pixels) for ``feather``.
    context : int, default=3
        Pixels around the defect that ``poisson`` takes from the crop.

    Returns
    -------
    PasteResult

    Raises
    ------
    ValueError
        If no position inside ``allowed`` can hold the transformed defect.
    """
    target = check_image2d(target, "target").astype(np.float32)
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}; got {blend!r}")
    rng = as_rng(rng)
    H, W = target.shape
    if allowed is None:
        allowed = np.ones((H, W), bool)
    allowed = np.asarray(allowed)
    if allowed.shape != (H, W):
        raise ValueError(f"allowed shape {allowed.shape} differs from target shape {(H, W)}")
    s = float(rng.uniform(*scale))
    rot = float(rng.uniform(*rotation))
    fl = bool(flip and rng.random() < 0.5)
    c, m = transform_crop(crop, crop_mask, scale=s, rotation=rot, flip=fl)
    if not m.any():
        raise ValueError("the crop mask is empty after scaling; nothing to paste")
    # trim the crop to the defect plus the margin the blend needs
    pad = int(np.ceil(3 * feather)) + 1 if blend == "feather" else (context + 2 if blend == "poisson" else 0)
    x0, y0, bw, bh = bbox(m)
    ys = slice(max(0, y0 - pad), min(m.shape[0], y0 + bh + pad))
    xs = slice(max(0, x0 - pad), min(m.shape[1], x0 + bw + pad))
    c, m = c[ys, xs], m[ys, xs]
    ok = valid_positions(allowed, m)
    if blend == "poisson" and ok.size:  # seamlessClone needs the region one pixel inside the image
        ok[:1, :] = ok[-1:, :] = False
        ok[:, :1] = ok[:, -1:] = False
    cand = np.flatnonzero(ok) if ok.size else np.zeros(0, int)
    if cand.size == 0:
        raise ValueError(
            f"no position inside the allowed region fits the defect (size {m.shape} "
            f"after scale {s:.2f}, rotation {rot:.1f}) in a {H}x{W} image"
        )
    py, px = divmod(int(cand[rng.integers(cand.size)]), ok.shape[1])
    h, w = m.shape
    region = target[py : py + h, px : px + w]
    out = target.copy()
    if blend == "poisson":
        grown = cv2.dilate(m.astype(np.uint8), np.ones((2 * context + 1,) * 2, np.uint8))
        src8 = np.clip(c * 255, 0, 255).astype(np.uint8)
        dst8 = np.clip(target * 255, 0, 255).astype(np.uint8)
        src_full = dst8.copy()
        src_full[py : py + h, px : px + w] = src8
        mask_full = np.zeros((H, W), np.uint8)
        mask_full[py : py + h, px : px + w] = grown * 255
        gx, gy, gw, gh = cv2.boundingRect(mask_full)
        center = (gx + gw // 2, gy + gh // 2)
        res = (
            cv2.seamlessClone(cv2.merge([src_full] * 3), cv2.merge([dst8] * 3), mask_full, center, cv2.NORMAL_CLONE)[
                ..., 0
            ].astype(np.float32)
            / 255
        )
        changed8 = res != dst8.astype(np.float32) / 255
        out = np.where(changed8, res, target).astype(np.float32)
    else:
        if match:
            c = match_intensity(c, m, region)
        alpha = m.astype(np.float32)
        if blend == "feather" and feather > 0:
            alpha = np.maximum(alpha, cv2.GaussianBlur(alpha, (0, 0), feather))
        out[py : py + h, px : px + w] = np.clip(region * (1 - alpha) + c * alpha, 0, 1)
    full = np.zeros((H, W), bool)
    full[py : py + h, px : px + w] = m
    changed = np.abs(out - target) > (0 if blend == "hard" else CHANGE_TOL)
    if blend != "hard":  # drop sub-quantum changes so `changed` is exact
        out = np.where(changed, out, target).astype(np.float32)
    changed |= full & (blend == "hard")
    params = {
        "x": px,
        "y": py,
        "scale": round(s, 4),
        "rotation": round(rot, 3),
        "flip": fl,
        "blend": blend,
        "match": bool(match),
    }
    logger.debug("pasted %s at (%d, %d)", params, px, py)
    return PasteResult(image=out, mask=full, changed=changed, box=bbox(full), params=params)


def crops_from_mask(
    image: np.ndarray, mask: np.ndarray, *, margin: int = 8, min_area: int = 4
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut one crop per connected defect region of a mask, with ``margin`` pixels around it.

    Returns a list of ``(crop, crop_mask)``; regions smaller than ``min_area`` pixels are skipped.
    """
    image = check_image2d(image)
    mask = check_image2d(mask, "mask") > 0
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = []
    H, W = mask.shape
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        if area < min_area:
            continue
        ys = slice(max(0, y - margin), min(H, y + h + margin))
        xs = slice(max(0, x - margin), min(W, x + w + margin))
        out.append((image[ys, xs].copy(), lab[ys, xs] == i))
    return out
