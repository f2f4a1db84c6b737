"""Painted labels: strokes to a label image, defect masks and label images written beside the catalogue."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import cv2
import numpy as np

from mining.catalogue.paths import labels_dir, masks_dir

#: Values of a painted label image.
UNLABELLED, BACKGROUND, DEFECT = 0, 1, 2


# -- painting -----------------------------------------------------------------------------------
def _points(path_cmds: list) -> list[tuple[float, float]]:
    pts = []
    for cmd in path_cmds or []:
        nums = [c for c in cmd[1:] if isinstance(c, int | float)]
        for j in range(0, len(nums) - 1, 2):
            pts.append((float(nums[j]), float(nums[j + 1])))
    return pts


def _object_shift(obj: Mapping, pts: np.ndarray) -> np.ndarray:
    """How far a path was moved on the canvas: its ``left``/``top`` against its own points."""
    shift = np.zeros(2)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    for axis, (pos, origin) in enumerate((("left", "originX"), ("top", "originY"))):
        if obj.get(pos) is None:
            continue
        anchor = {"center": (lo[axis] + hi[axis]) / 2, "right": hi[axis], "bottom": hi[axis]}.get(
            obj.get(origin, "left"), lo[axis]
        )
        shift[axis] = float(obj[pos]) - anchor
    return shift


def strokes_to_labels(
    drawing: Mapping | None, canvas_size: tuple[int, int], image_shape: tuple[int, int], colours: Mapping[str, int]
) -> np.ndarray:
    """Rasterise free-hand strokes (Fabric.js JSON from the canvas) into a label image.

    Parameters
    ----------
    drawing : mapping or None
        ``{"objects": [{"type": "path", "path": [["M", x, y], ["Q", ...], ...],
        "stroke": colour, "strokeWidth": w, ...}]}`` in canvas pixels.
    canvas_size : (width, height)
        The canvas the strokes were drawn on.
    image_shape : (H, W)
        The label image's shape (the image's own pixels).
    colours : mapping of stroke colour to label value
        E.g. ``{"#ff0000": DEFECT, "#00ff00": BACKGROUND}``; other colours are ignored.

    Returns
    -------
    ndarray of shape (H, W), uint8
        0 unlabelled, then each stroke painted in drawing order (later strokes win).
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    labels = np.zeros((h, w), np.uint8)
    cw, ch = canvas_size
    sx, sy = w / float(cw), h / float(ch)
    lookup = {str(k).lower(): int(v) for k, v in colours.items()}
    for obj in (drawing or {}).get("objects", []) or []:
        if str(obj.get("type", "")).lower() != "path":  # Fabric 7 writes "Path", older versions "path"
            continue
        value = lookup.get(str(obj.get("stroke", "")).lower())
        if value is None:
            continue
        pts = _points(obj.get("path"))
        if not pts:
            continue
        arr = np.array(pts, dtype=np.float64)
        arr += _object_shift(obj, arr)
        arr = np.round(arr * [sx, sy]).astype(np.int32).reshape(-1, 1, 2)
        thick = max(1, round(float(obj.get("strokeWidth", 1)) * (sx + sy) / 2))
        if len(pts) == 1:
            cv2.circle(labels, tuple(arr[0, 0]), max(1, thick // 2), value, -1)
        else:
            cv2.polylines(labels, [arr], False, value, thick, lineType=cv2.LINE_8)
    return labels


def painted_name(image_id: int, tile: int, data: bytes) -> str:
    """The file name of a painted mask or label image: ``<image_id>[_t<tile>]_<content hash>.png``.

    Keyed by the image's catalogue identity, never by its file name (``day1/cam.png``
    and ``day2/cam.png`` share a stem), and by the file's content, so painting
    an image again never overwrites the file an earlier vote points at.

    Parameters
    ----------
    image_id : int
        The catalogue id of the image.
    tile : int
        The tile index, -1 for the whole image.
    data : bytes
        The encoded PNG.

    Returns
    -------
    str
    """
    if isinstance(image_id, bool) or not isinstance(image_id, int | np.integer):
        raise TypeError(f"painted files are named by the image's catalogue id (an int), got {image_id!r}")
    tile_part = f"_t{int(tile)}" if int(tile) != -1 else ""
    return f"{int(image_id)}{tile_part}_{hashlib.sha256(data).hexdigest()[:16]}.png"


def _write_painted(folder: str, image_id: int, tile: int, image: np.ndarray, what: str) -> str:
    from synthesis.atomic import atomic_write

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode the {what} of image {image_id}")
    data = buf.tobytes()
    out = os.path.join(folder, painted_name(image_id, tile, data))
    if os.path.isfile(out):
        with open(out, "rb") as fh:
            if fh.read() == data:
                return out  # the same picture of the same image: already there
    with atomic_write(out, "wb") as fh:
        fh.write(data)
    return out


def save_defect_mask(labels: np.ndarray, store_path: str | os.PathLike, image_id: int, tile: int = -1) -> str | None:
    """Save the painted defect pixels as a 0/255 mask in ``<catalogue>.masks/``; return its path.

    This is the format of ``reviews.mask_path`` that the learn step and the
    label exports read (non-zero = defect). The file is named by
    :func:`painted_name` (image id, tile, content hash).

    Parameters
    ----------
    labels : ndarray of shape (H, W), uint8
        A painted label image (:data:`DEFECT` marks defect pixels).
    store_path : path
        The catalogue.
    image_id : int
        The catalogue id of the painted image.
    tile : int, default=-1
        The tile, -1 for the whole image.

    Returns
    -------
    str or None
        The mask's path; None when no defect pixel was painted.
    """
    if not (labels == DEFECT).any():
        return None
    mask = np.where(labels == DEFECT, 255, 0).astype(np.uint8)
    return _write_painted(masks_dir(store_path), image_id, tile, mask, "defect mask")


def save_label_image(labels: np.ndarray, store_path: str | os.PathLike, image_id: int, tile: int = -1) -> str:
    """Save a label image (0 unlabelled, 1 background, 2 defect) in ``<catalogue>.labels/``; return its path.

    The file is named by :func:`painted_name` (image id, tile, content hash),
    so images of the same file name in different folders keep their own label
    images. (``raremine learn`` pairs them with their images through the
    catalogue; for ``raremine fit-pixel --labels``, copy them under the
    images' stems.)

    Parameters
    ----------
    labels : ndarray of shape (H, W), uint8
    store_path, image_id, tile
        As in :func:`save_defect_mask`.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For a label image that is not 2-D uint8 with values 0, 1 and 2.
    """
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D uint8 array, got {labels.dtype} {labels.shape}")
    bad = set(np.unique(labels).tolist()) - {UNLABELLED, BACKGROUND, DEFECT}
    if bad:
        raise ValueError(f"label values must be 0, 1 or 2; got {sorted(bad)}")
    return _write_painted(labels_dir(store_path), image_id, tile, labels, "label image")
