"""Splitting large images into overlapping tiles (a tile is the unit that gets a score)."""

from __future__ import annotations

import numpy as np


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)  # last tile flush with the edge
    return starts


def tile_grid(height: int, width: int, tile_size: int, overlap: int = 0) -> list[tuple[int, int, int, int]]:
    """Overlapping tiles that cover an image.

    Tiles are ``tile_size`` square (smaller only when the image is), step
    ``tile_size - overlap``; the last row and column are shifted to end
    flush with the image, so every pixel is covered and no tile leaves it.
    An image no larger than ``tile_size`` in both directions is one tile.

    Parameters
    ----------
    height, width : int
        Image size in pixels.
    tile_size : int
        Side of a tile in pixels, > 0.
    overlap : int, optional
        Pixels shared by neighbouring tiles, 0 <= overlap < tile_size.

    Returns
    -------
    tiles : list of (y, x, h, w)
        In row-major order.
    """
    if tile_size <= 0:
        raise ValueError(f"tile_size must be > 0, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size={tile_size}), got {overlap}")
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    step = tile_size - overlap
    ys, xs = _starts(height, tile_size, step), _starts(width, tile_size, step)
    th, tw = min(tile_size, height), min(tile_size, width)
    return [(y, x, th, tw) for y in ys for x in xs]


def needs_tiling(height: int, width: int, tile_size: int) -> bool:
    """Whether an image is split into tiles (larger than ``tile_size`` either way)."""
    return height > tile_size or width > tile_size


def stitch_max(maps: list[np.ndarray], tiles: list[tuple[int, int, int, int]], shape: tuple[int, int]) -> np.ndarray:
    """Put per-tile maps back into one image-sized map, taking the maximum where tiles overlap.

    Parameters
    ----------
    maps : list of ndarray of shape (h, w)
        One map per tile, in the order of ``tiles``.
    tiles : list of (y, x, h, w)
        As returned by :func:`tile_grid`.
    shape : (H, W)
        Size of the whole image.

    Returns
    -------
    out : ndarray of shape (H, W), float32
    """
    out = np.full(shape, -np.inf, np.float32)
    for m, (y, x, h, w) in zip(maps, tiles, strict=True):
        if m.shape != (h, w):
            raise ValueError(f"map of shape {m.shape} does not fit tile {(y, x, h, w)}")
        np.maximum(out[y : y + h, x : x + w], m, out=out[y : y + h, x : x + w])
    return out
