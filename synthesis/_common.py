"""Small helpers shared by the synthesis modules: random generators, value ranges, exact masks."""

from __future__ import annotations

import numpy as np

#: Smallest change (in [0, 1] units) that counts as "changed": half an 8-bit grey level.
CHANGE_TOL = 0.5 / 255

SeedLike = int | np.random.Generator | np.random.SeedSequence | None


def as_rng(seed: SeedLike) -> np.random.Generator:
    """A numpy Generator from a seed, a SeedSequence or a Generator (returned unchanged).

    ``None`` gives a fresh, unseeded generator (not reproducible); every public
    function of ``synthesis`` accepts a seed so that callers can be.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def to_unit(image: np.ndarray) -> tuple[np.ndarray, tuple[str, float, float]]:
    """Convert an image to float32 in [0, 1]; return it with what :func:`from_unit` needs to undo it.

    uint8 is divided by 255, uint16 by 65535, bool by 1; float images are
    taken as they are when already in [0, 1], otherwise min-max scaled.
    """
    image = np.asarray(image)
    dt = image.dtype
    if dt == np.uint8:
        return image.astype(np.float32) / 255.0, ("uint8", 0.0, 255.0)
    if dt == np.uint16:
        return image.astype(np.float32) / 65535.0, ("uint16", 0.0, 65535.0)
    if dt == np.bool_:
        return image.astype(np.float32), ("bool", 0.0, 1.0)
    if not np.issubdtype(dt, np.number):
        raise TypeError(f"image dtype must be numeric, got {dt}")
    f = image.astype(np.float32)
    lo, hi = float(np.nanmin(f)) if f.size else 0.0, float(np.nanmax(f)) if f.size else 1.0
    if lo >= 0.0 and hi <= 1.0:
        return f, (str(dt), 0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    return (f - lo) / span, (str(dt), lo, lo + span)


def from_unit(image: np.ndarray, how: tuple[str, float, float]) -> np.ndarray:
    """Undo :func:`to_unit` (integers are rounded and clipped to their range)."""
    dtype, lo, hi = how
    out = image.astype(np.float64) * (hi - lo) + lo
    if dtype in ("uint8", "uint16"):
        return np.clip(np.rint(out), lo, hi).astype(dtype)
    if dtype == "bool":
        return out >= 0.5
    return out.astype(np.float32 if dtype in ("float16", "float32") else dtype)


def check_image2d(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate a single-channel 2-D image and return it as an array."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2-D single-channel array, got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"{name} is too small: shape {image.shape}")
    return image


def apply_delta(image: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Add ``delta`` to a [0, 1] image; the mask is exactly where the output changed.

    Changes smaller than :data:`CHANGE_TOL` are dropped (set to zero), so that
    the returned mask marks every changed pixel and nothing else.

    Returns
    -------
    out : ndarray, float32, in [0, 1]
    mask : ndarray of bool
    """
    out = np.clip(image + delta, 0.0, 1.0).astype(np.float32)
    mask = np.abs(out - image) > CHANGE_TOL
    out = np.where(mask, out, image).astype(np.float32)
    return out, mask


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x, y, w, h)`` of the non-zero pixels of a 2-D mask, or None if empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1
