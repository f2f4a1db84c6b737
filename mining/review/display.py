"""Pictures for the screen: windowing, overlays, thumbnails, hot regions, crops."""

from __future__ import annotations

import cv2
import numpy as np

from mining.catalogue.store import Store


# -- pixels -------------------------------------------------------------------------------------
def auto_window(image: np.ndarray) -> tuple[float, float]:
    """A level/width window covering the 0.5-99.5 percentiles of an image (native units)."""
    a = np.asarray(image, dtype=np.float64)
    if a.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(a[np.isfinite(a)] if not np.isfinite(a).all() else a, [0.5, 99.5])
    return float((lo + hi) / 2), float(max(hi - lo, 1e-6))


def value_range(image: np.ndarray) -> tuple[float, float]:
    """The range a window slider should span: the dtype's range for integers, min..max otherwise."""
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return float(info.min), float(info.max)
    a = np.asarray(image, dtype=np.float64)
    return float(np.nanmin(a)), float(max(np.nanmax(a), np.nanmin(a) + 1e-6))


def window(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map native values ``[level - width/2, level + width/2]`` to 0..255 (uint8).

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C), any numeric dtype
    level, width : float
        Window centre and width in the image's own units; ``width > 0``.

    Returns
    -------
    ndarray of the same shape, uint8
    """
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    lo = level - width / 2.0
    a = (np.asarray(image, dtype=np.float32) - np.float32(lo)) * np.float32(255.0 / width)
    return np.rint(np.clip(np.nan_to_num(a), 0, 255)).astype(np.uint8)


def stored_window(store: Store, image_id: int) -> dict | None:
    """The default display window an image's file carries (DICOM ``WindowCenter`` / ``WindowWidth``), or None.

    Indexing stores it in ``image_meta`` (``window_center``,
    ``window_width``, in the pixel values :func:`mining.io.read_image`
    gives, i.e. after the DICOM rescale); ``photometric`` ``MONOCHROME1``
    (low values white, as many X-ray files) asks for inverted grey.

    Returns
    -------
    dict or None
        ``{"level": float, "width": float, "invert": bool, "source": str}``;
        None when the image has no stored window (the app then uses
        :func:`auto_window`).
    """
    meta = {
        r[0]: r[1]
        for r in store.query(
            "SELECT key, value FROM image_meta WHERE image_id = ? AND key IN"
            " ('window_center', 'window_width', 'photometric')",
            (int(image_id),),
        )
    }
    try:
        level, width = float(meta["window_center"]), float(meta["window_width"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (np.isfinite(level) and np.isfinite(width) and width > 0):
        return None
    return {
        "level": level,
        "width": width,
        "invert": meta.get("photometric") == "MONOCHROME1",
        "source": f"DICOM window: level {level:g}, width {width:g}",
    }


def display_image(
    image: np.ndarray, level: float | None = None, width: float | None = None, *, invert: bool = False
) -> np.ndarray:
    """An 8-bit grey or RGB picture of an image for the screen.

    uint8 images are shown as they are unless a window is given; other
    dtypes use the window (the automatic one when none is given).
    ``invert`` shows low values white (DICOM ``MONOCHROME1``).
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.dtype == np.uint8 and level is None:
        out = img
    else:
        if level is None or width is None:
            level, width = auto_window(img)
        out = window(img, level, width)
    if out.ndim == 3:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)  # read_image gives OpenCV's BGR order
    if invert:
        out = 255 - out
    return out


def overlay(picture: np.ndarray, score_map: np.ndarray, opacity: float) -> np.ndarray:
    """Blend a score map (uint8, 0..255, any size) over a picture as a colour map.

    Parameters
    ----------
    picture : ndarray of shape (H, W) or (H, W, 3), uint8
    score_map : ndarray of shape (h, w), uint8
        Resized to (H, W).
    opacity : float in [0, 1]

    Returns
    -------
    ndarray of shape (H, W, 3), uint8 (RGB)
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    rgb = picture if picture.ndim == 3 else cv2.cvtColor(picture, cv2.COLOR_GRAY2RGB)
    h, w = rgb.shape[:2]
    m = score_map if score_map.ndim == 2 else score_map[:, :, 0]
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap(m.astype(np.uint8), cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1.0 - opacity, colour, opacity, 0.0)


def thumbnail(picture: np.ndarray, size: int = 160, *, square: bool = False) -> np.ndarray:
    """A picture scaled so that its longer side is at most ``size`` pixels.

    With ``square``, it is centred on a black ``size`` x ``size`` canvas so
    that a grid of thumbnails lines up.
    """
    h, w = picture.shape[:2]
    scale = min(size / max(h, w), 1.0) if not square else size / max(h, w)
    out = picture
    if scale != 1.0:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        out = cv2.resize(picture, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    if not square:
        return out
    canvas = np.zeros((size, size, *out.shape[2:]), out.dtype)
    y0, x0 = (size - out.shape[0]) // 2, (size - out.shape[1]) // 2
    canvas[y0 : y0 + out.shape[0], x0 : x0 + out.shape[1]] = out
    return canvas


# -- what the viewer is sent ---------------------------------------------------------------------------
def view_rendering(picture: np.ndarray, max_side: int = 2048) -> tuple[np.ndarray, float]:
    """A screen-sized copy of a picture, for the viewer.

    Parameters
    ----------
    picture : ndarray of shape (H, W) or (H, W, 3), uint8
    max_side : int, default=2048

    Returns
    -------
    (ndarray, float)
        The picture itself when it is small enough, else a copy whose longer
        side is ``max_side`` (area interpolation), and its scale (<= 1).
    """
    h, w = picture.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s >= 1.0:
        return picture, 1.0
    out = cv2.resize(picture, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return out, s


def hot_region(score_map: np.ndarray, shape: tuple[int, int], *, level: float = 0.5, max_regions: int = 12) -> dict:
    """The hot region of a score map in the image's pixel coordinates.

    The map (any size, uint8 or float) is thresholded half-way (``level``)
    between its median and its peak at its own resolution; the outlines of the
    largest regions above are returned, scaled to the image's ``shape``, with
    the peak.

    Parameters
    ----------
    score_map : ndarray of shape (h, w)
    shape : (H, W)
        The image's shape.
    level : float, default=0.5
        Where between the median (0) and the peak (1) the threshold lies.
    max_regions : int, default=12
        The largest regions kept.

    Returns
    -------
    dict
        ``contours``: list of point lists ``[[x, y], ...]`` (image pixels),
        ``peak``: ``[x, y]`` of the maximum (image pixels), ``regions``: per
        hot region (hottest first) its ``peak`` (image pixels), ``value`` and
        ``area`` (map pixels), ``threshold`` and ``peak_value`` (map units),
        ``fraction``: share of the map above the threshold.
    """
    m = np.asarray(score_map)
    if m.ndim == 3:
        m = m[:, :, 0]
    m = np.nan_to_num(m.astype(np.float32))
    H, W = int(shape[0]), int(shape[1])
    mh, mw = m.shape
    sx, sy = W / mw, H / mh
    peak_value = float(m.max())
    med = float(np.median(m))
    py, px = np.unravel_index(int(np.argmax(m)), m.shape)
    peak = [int(min(W - 1, (px + 0.5) * sx)), int(min(H - 1, (py + 0.5) * sy))]
    if peak_value <= med:
        return {
            "contours": [],
            "peak": peak,
            "regions": [],
            "threshold": peak_value,
            "peak_value": peak_value,
            "fraction": 0.0,
        }
    thr = med + level * (peak_value - med)
    mask = (m >= thr).astype(np.uint8)
    found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found = sorted(found, key=lambda c: -cv2.contourArea(c) - len(c))[:max_regions]
    contours = []
    for c in found:
        pts = c.reshape(-1, 2).astype(np.float64)
        if len(pts) == 1:  # a single map pixel: its square
            x, y = pts[0]
            pts = np.array([[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1]])
        else:
            pts = pts + 0.5
        contours.append(np.round(pts * [sx, sy], 1).tolist())
    n, labels = cv2.connectedComponents(mask, connectivity=8)
    regions = []
    for lab in range(1, n):
        ys, xs = np.nonzero(labels == lab)
        j = int(np.argmax(m[ys, xs]))
        regions.append(
            {
                "peak": [int(min(W - 1, (xs[j] + 0.5) * sx)), int(min(H - 1, (ys[j] + 0.5) * sy))],
                "value": float(m[ys[j], xs[j]]),
                "area": len(xs),
            }
        )
    regions.sort(key=lambda r: (-r["value"], -r["area"]))
    return {
        "contours": contours,
        "peak": peak,
        "regions": regions[:max_regions],
        "threshold": thr,
        "peak_value": peak_value,
        "fraction": float(mask.mean()),
    }


def crop_around(picture: np.ndarray, centre: tuple[int, int], size: int = 192) -> tuple[np.ndarray, tuple[int, int]]:
    """A full-resolution ``size`` x ``size`` crop of a picture centred on ``(x, y)`` (shifted to stay inside).

    Parameters
    ----------
    picture : ndarray of shape (H, W) or (H, W, C)
    centre : (int, int)
        ``(x, y)`` in the picture's pixels.
    size : int, default=192
        Smaller pictures give their whole extent.

    Returns
    -------
    (ndarray, (x0, y0))
        The crop and its top-left corner in the picture.
    """
    h, w = picture.shape[:2]
    cw, ch = min(size, w), min(size, h)
    x0 = int(np.clip(centre[0] - cw // 2, 0, w - cw))
    y0 = int(np.clip(centre[1] - ch // 2, 0, h - ch))
    return picture[y0 : y0 + ch, x0 : x0 + cw], (x0, y0)


def heat_colours(score_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A score map as an RGB colour map (inferno), for showing beside the image.

    Parameters
    ----------
    score_map : ndarray of shape (h, w) or (h, w, c)
        Stretched to its own minimum and maximum.
    shape : (H, W)
        The size of the result.

    Returns
    -------
    ndarray of shape (H, W, 3), uint8
    """
    m = score_map if score_map.ndim == 2 else score_map[:, :, 0]
    m = m.astype(np.float32)
    lo, hi = float(m.min()), float(m.max())
    m8 = np.zeros(m.shape, np.uint8) if hi <= lo else ((m - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if m8.shape != tuple(shape[:2]):
        m8 = cv2.resize(m8, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(cv2.applyColorMap(m8, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
