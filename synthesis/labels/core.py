"""The neutral label representation shared by every format, and the coordinate conventions.

Every reader in :mod:`synthesis.labels` returns :class:`ImageLabels` and every
writer takes them, so converting between two formats is "read one, write the
other" and each format only has to get its own conventions right.

Coordinate conventions (the one place they are defined)
-------------------------------------------------------
- **Boxes** are ``(x0, y0, x1, y1)`` in *pixel-edge* coordinates: pixel
  ``(row r, column c)`` covers ``[c, c + 1) x [r, r + 1)``, so the tight box
  of a mask whose pixels span columns ``c0..c1`` and rows ``r0..r1`` is
  ``(c0, r0, c1 + 1, r1 + 1)``; width is ``x1 - x0`` (a one-pixel box is
  1 wide). COCO's ``[x, y, w, h]`` uses the same edges
  (:func:`xyxy_to_coco`); YOLO stores the centre and size divided by the
  image size (:func:`xyxy_to_yolo`); Pascal VOC stores 1-based *inclusive*
  pixel indices, ``xmin = x0 + 1``, ``xmax = x1`` (:func:`xyxy_to_voc`), as
  the VOC devkit and Detectron2 read them.
- **Polygons** are ``(N, 2)`` float arrays of ``(x, y)`` in *pixel-centre*
  coordinates, the convention of OpenCV (``findContours`` / ``fillPoly``),
  labelme and YOLO segments: the centre of pixel ``(r, c)`` is ``(c, r)``.
  COCO polygons use pixel edges, so the COCO module shifts them by half a
  pixel on the way out and back.
- **Masks** are boolean ``(H, W)`` arrays of the whole image.

Pixel coordinates computed from normalised values are rounded to
:data:`PIXEL_DECIMALS` decimals, which removes floating-point noise
(``0.1 * 30 != 3``) without moving any real coordinate.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

logger = logging.getLogger(__name__)

#: Decimals kept when pixel coordinates are computed from normalised ones.
PIXEL_DECIMALS = 6

#: Slack (in pixels) allowed beyond the outermost pixel centres when checking polygon vertices:
#: 1 accepts vertices anywhere from -1 to W (H), so outlines written in pixel edges by other tools
#: (a vertex on the right edge at x = W) are not rejected.
POLYGON_SLACK = 1.0

#: Reasons a label file (or one image's labels in it) is rejected.
REASONS = (
    "malformed",  # XML / JSON / CSV / text that does not parse or misses a field
    "unknown_class",  # a class id or name not in the class map
    "out_of_bounds",  # coordinates outside the image
    "size_mismatch",  # the file's image size differs from the image's
    "not_in_catalogue",  # the label names an image the catalogue does not hold
    "ambiguous_image",  # the label's image reference matches several images
    "missing_size",  # no image size known (YOLO needs one to denormalise)
    "duplicate",  # two label files (or two exported images) for the same name
    "no_geometry",  # exporting image-level labels to a format that needs boxes or masks
)

BOX_CONVENTION = "xyxy pixel edges: pixel (r, c) covers [c, c+1) x [r, r+1)"
POLYGON_CONVENTION = "x, y pixel centres: pixel (r, c) has its centre at (c, r)"


class LabelFormatError(ValueError):
    """A label file that cannot be used, with a machine-readable ``reason`` from :data:`REASONS`."""

    def __init__(self, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class LabelError:
    """One rejected file (or one image's labels within a file), and why."""

    file: str
    reason: str
    detail: str
    image: str | None = None

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {"file": self.file, "image": self.image, "reason": self.reason, "detail": self.detail}


@dataclass
class LabelObject:
    """One labelled object: a category and any of box, polygons and mask.

    Attributes
    ----------
    category : str
        Class name.
    box : tuple of 4 floats or None
        ``(x0, y0, x1, y1)`` in pixel-edge coordinates (see the module notes).
    polygons : list of ndarray of shape (N, 2) or None
        Outlines in pixel-centre coordinates; several polygons form one
        object by union.
    mask : ndarray of shape (H, W), bool, or None
        The object's pixels in the whole image.
    attrs : dict
        Format-specific extras kept on a round trip (VOC ``difficult``,
        ``truncated``; COCO ``iscrowd``).
    """

    category: str
    box: tuple[float, float, float, float] | None = None
    polygons: list[np.ndarray] | None = None
    mask: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)

    def geometry(self) -> str:
        """The richest geometry held: ``mask``, ``polygon``, ``box`` or ``none``."""
        if self.mask is not None:
            return "mask"
        if self.polygons:
            return "polygon"
        if self.box is not None:
            return "box"
        return "none"


@dataclass
class ImageLabels:
    """Everything labelled on one image.

    Attributes
    ----------
    image : str
        The image as the label file names it: a path (absolute, or already
        joined to the label file's folder) or, for YOLO and mask folders,
        the file stem.
    width, height : int or None
        Image size when the format states it.
    labels : list of str
        Image-level classes (CSV tables, folder layouts); object classes are
        added by :meth:`categories`.
    objects : list of LabelObject
    source : str
        The label file these labels came from (for messages).
    channels : int or None
        Colour channels when known (VOC writes it as ``depth``).
    skipped : list of dict
        Parts of the label file not imported, each with a ``reason`` (a
        labelme ``line`` shape, a CVAT polyline, an image flag outside the
        class map); the file itself is imported.
    """

    image: str
    width: int | None = None
    height: int | None = None
    labels: list[str] = field(default_factory=list)
    objects: list[LabelObject] = field(default_factory=list)
    source: str = ""
    channels: int | None = None
    skipped: list[dict] = field(default_factory=list)

    def categories(self) -> list[str]:
        """Image-level labels and object classes, unique, in first-seen order."""
        return list(dict.fromkeys([*self.labels, *(o.category for o in self.objects)]))

    @property
    def is_negative(self) -> bool:
        """True when the image is labelled as having nothing (no class, no object)."""
        return not self.labels and not self.objects

    def size(self) -> tuple[int, int]:
        """``(width, height)``; raises when unknown."""
        if self.width is None or self.height is None:
            raise LabelFormatError("missing_size", f"image size of {self.image!r} is unknown")
        return int(self.width), int(self.height)


@dataclass
class LabelSet:
    """What a reader returns: the images' labels, the rejected files, the class map used, parts not read.

    ``skipped`` lists parts of files not read that belong to no one image
    (CVAT ``<track>`` s), each a dict with a ``reason``; parts of one image's
    labels are in that item's ``skipped``.
    """

    items: list[ImageLabels]
    errors: list[LabelError]
    classes: list[str]
    skipped: list[dict] = field(default_factory=list)


# -- class maps ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassMap:
    """An ordered list of class names and the ids each format gives them.

    YOLO ids are 0-based (``names[i]`` is id ``i``), COCO category ids are
    1-based, mask pixel values are 1-based too except that a single class is
    written as 255 (visible, and what most binary mask folders hold).
    ``mask_values`` may override the pixel value of each class (import of
    mask folders with their own coding).
    """

    names: tuple[str, ...]
    mask_values: tuple[tuple[int, str], ...] = ()

    def __post_init__(self):
        if len(set(self.names)) != len(self.names):
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise ValueError(f"class map names must be unique; repeated: {dup}")
        for n in self.names:
            if not isinstance(n, str) or not n:
                raise ValueError(f"class names must be non-empty strings, got {n!r}")

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)

    def yolo_id(self, name: str) -> int:
        """0-based id."""
        return self._index(name)

    def coco_id(self, name: str) -> int:
        """1-based COCO category id."""
        return self._index(name) + 1

    def value_map(self) -> dict[int, str]:
        """Mask pixel value -> class name."""
        if self.mask_values:
            return dict(self.mask_values)
        if len(self.names) == 1:
            return {255: self.names[0]}
        return {i + 1: n for i, n in enumerate(self.names)}

    def mask_value(self, name: str) -> int:
        """Pixel value of a class in a mask image."""
        for v, n in self.value_map().items():
            if n == name:
                return v
        raise LabelFormatError("unknown_class", f"class {name!r} not in the class map {list(self.names)}")

    def _index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise LabelFormatError("unknown_class", f"class {name!r} not in the class map {list(self.names)}") from None

    def to_json(self) -> dict:
        """The class map as written beside every export (``classes.json``)."""
        return {
            "schema": "raremine.classes/1",
            "names": list(self.names),
            "yolo": {str(self.yolo_id(n)): n for n in self.names},
            "coco": {str(self.coco_id(n)): n for n in self.names},
            "mask": {str(v): n for v, n in self.value_map().items()},
            "conventions": {"box": BOX_CONVENTION, "polygon": POLYGON_CONVENTION},
        }

    @classmethod
    def from_names(cls, names: Iterable[str]) -> ClassMap:
        """A class map from names in order."""
        return cls(tuple(names))


def load_class_map(path: str | os.PathLike) -> ClassMap:
    """Read a class map file.

    Accepted: raremine's ``classes.json``; a JSON list of names; a JSON
    object ``{"value or id": name}`` (mask pixel values, e.g. ``{"1":
    "crack", "2": "pit"}``); a text file with one name per line (YOLO
    ``classes.txt``, id = line number from 0); a YOLO ``data.yaml`` with
    ``names`` (list or ``{id: name}``).

    Raises
    ------
    ValueError
        Naming the file and what is wrong.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as err:
        raise ValueError(f"class map {path!r} cannot be read: {err}") from err
    try:
        if ext == ".json":
            data = json.loads(text)
            if isinstance(data, dict) and "names" in data:
                values = data.get("mask") or {}
                cm = ClassMap(tuple(data["names"]))
                if values and {int(k): v for k, v in values.items()} != cm.value_map():
                    cm = ClassMap(cm.names, tuple(sorted((int(k), v) for k, v in values.items())))
                return cm
            if isinstance(data, list):
                return ClassMap(tuple(str(n) for n in data))
            if isinstance(data, dict):
                pairs = sorted((int(k), str(v)) for k, v in data.items())
                return ClassMap(tuple(dict.fromkeys(v for _, v in pairs)), tuple(pairs))
            raise ValueError("expected a list of names or an object of value: name")
        if ext in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
            names = data.get("names") if isinstance(data, dict) else None
            if isinstance(names, dict):
                names = [names[k] for k in sorted(names, key=int)]
            if not isinstance(names, list):
                raise ValueError("a YAML class map needs `names:` as a list or {id: name}")
            return ClassMap(tuple(str(n) for n in names))
        names = [line.strip() for line in text.splitlines() if line.strip()]
        return ClassMap(tuple(names))
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"class map {path!r}: {err}") from err


def class_map_from(classes: ClassMap | Sequence[str] | str | os.PathLike | None) -> ClassMap | None:
    """Coerce a class-map argument (object, names, or a file) to a :class:`ClassMap`."""
    if classes is None or isinstance(classes, ClassMap):
        return classes
    if isinstance(classes, str | os.PathLike):
        return load_class_map(classes)
    return ClassMap.from_names(classes)


def collect_classes(items: Iterable[ImageLabels]) -> ClassMap:
    """A class map of every category in ``items``, sorted by name."""
    names: set[str] = set()
    for it in items:
        names.update(it.categories())
    return ClassMap(tuple(sorted(names)))


# -- box conventions ------------------------------------------------------------------------------
def _clean(v: float) -> float:
    """Round away floating-point noise (see :data:`PIXEL_DECIMALS`); -0.0 becomes 0.0."""
    return float(round(float(v), PIXEL_DECIMALS)) + 0.0


def xyxy_to_coco(box: Sequence[float]) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` -> COCO ``(x, y, width, height)``, both in pixel edges."""
    x0, y0, x1, y1 = map(float, box)
    return x0, y0, x1 - x0, y1 - y0


def coco_to_xyxy(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """COCO ``(x, y, width, height)`` -> ``(x0, y0, x1, y1)``."""
    x, y, w, h = map(float, bbox)
    return x, y, x + w, y + h


def xyxy_to_yolo(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` -> YOLO ``(cx, cy, w, h)`` divided by the image width and height."""
    x0, y0, x1, y1 = map(float, box)
    return (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height


def yolo_to_xyxy(yolo: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """YOLO normalised ``(cx, cy, w, h)`` -> ``(x0, y0, x1, y1)`` in pixels (noise rounded away)."""
    cx, cy, w, h = map(float, yolo)
    return (
        _clean((cx - w / 2) * width),
        _clean((cy - h / 2) * height),
        _clean((cx + w / 2) * width),
        _clean((cy + h / 2) * height),
    )


def xyxy_to_voc(box: Sequence[float]) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` -> VOC ``(xmin, ymin, xmax, ymax)``, 1-based inclusive pixel indices."""
    x0, y0, x1, y1 = map(float, box)
    return x0 + 1, y0 + 1, x1, y1


def voc_to_xyxy(voc: Sequence[float]) -> tuple[float, float, float, float]:
    """VOC ``(xmin, ymin, xmax, ymax)`` (1-based, inclusive) -> ``(x0, y0, x1, y1)``."""
    xmin, ymin, xmax, ymax = map(float, voc)
    return xmin - 1, ymin - 1, xmax, ymax


def check_box(box: Sequence[float], width: int | None, height: int | None) -> tuple[float, float, float, float]:
    """Validate a box against the image; return it as floats.

    Raises
    ------
    LabelFormatError
        ``malformed`` for an empty or inverted box, ``out_of_bounds`` for one
        reaching outside ``[0, width] x [0, height]``.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise LabelFormatError("malformed", f"box {box} has non-finite coordinates")
    if x1 <= x0 or y1 <= y0:
        raise LabelFormatError("malformed", f"box {(x0, y0, x1, y1)} is empty or inverted (x1 <= x0 or y1 <= y0)")
    eps = 10.0**-PIXEL_DECIMALS
    if width is not None and height is not None and (x0 < -eps or y0 < -eps or x1 > width + eps or y1 > height + eps):
        raise LabelFormatError("out_of_bounds", f"box {(x0, y0, x1, y1)} reaches outside the {width}x{height} image")
    return x0, y0, x1, y1


def check_polygon(poly: np.ndarray, width: int | None, height: int | None) -> np.ndarray:
    """Validate one polygon (``(N, 2)``, pixel centres) against the image; return it as float64."""
    p = np.asarray(poly, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 1 or not np.isfinite(p).all():
        raise LabelFormatError("malformed", f"polygon must be (N, 2) finite x, y pairs, got shape {p.shape}")
    if width is not None and height is not None:
        lo, eps = -POLYGON_SLACK - 1e-6, 1e-6
        hi_x, hi_y = width - 1 + POLYGON_SLACK + eps, height - 1 + POLYGON_SLACK + eps
        if (p[:, 0] < lo).any() or (p[:, 1] < lo).any() or (p[:, 0] > hi_x).any() or (p[:, 1] > hi_y).any():
            raise LabelFormatError(
                "out_of_bounds",
                f"polygon spans x {p[:, 0].min():g}..{p[:, 0].max():g}, y {p[:, 1].min():g}..{p[:, 1].max():g}, "
                f"outside the {width}x{height} image (pixel centres 0..{width - 1}, 0..{height - 1}, "
                f"{POLYGON_SLACK:g} px slack)",
            )
    return p


# -- masks, polygons, boxes -----------------------------------------------------------------------
def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight box ``(x0, y0, x1, y1)`` (pixel edges) of a mask's non-zero pixels; None when empty."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(m != 0, dtype=np.uint8))
    if w == 0 or h == 0:
        return None
    return float(x), float(y), float(x + w), float(y + h)


def mask_to_polygons(mask: np.ndarray, *, holes: bool = False) -> list[np.ndarray]:
    """Outlines of a mask's parts with OpenCV ``findContours`` (pixel-centre coordinates).

    Parameters
    ----------
    mask : ndarray of shape (H, W)
        Non-zero pixels are the object.
    holes : bool
        False: outer outlines only (``RETR_EXTERNAL``, ``CHAIN_APPROX_SIMPLE``);
        filling them back with :func:`polygons_to_mask` gives the mask again
        except for holes, which come back filled. True: each part's holes
        (``RETR_CCOMP``) are joined to its outline by a zero-width cut between
        their nearest boundary pixels, so one self-touching polygon per part
        keeps its holes under even-odd filling (OpenCV ``fillPoly``, as YOLO
        trainers rasterise segments); Ultralytics joins the parts of COCO
        objects into YOLO segments the same way.

    Returns
    -------
    list of ndarray of shape (N, 2), float64
        One outline per connected part (8-connectivity), longest first.
    """
    m = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
    if not holes:
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        polys = [c.reshape(-1, 2).astype(np.float64) for c in contours]
    else:
        contours, hier = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        polys = []
        if contours:
            parent = hier[0][:, 3]
            for i, c in enumerate(contours):
                if parent[i] != -1:
                    continue
                poly = c.reshape(-1, 2)
                for j in np.flatnonzero(parent == i):
                    poly = _bridge(poly, contours[j].reshape(-1, 2))
                polys.append(_simplify(poly).astype(np.float64))
    polys.sort(key=lambda p: (-len(p), p[:, 1].min(), p[:, 0].min()))
    return polys


def _bridge(outer: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Join a hole outline into an outline at their nearest vertices (there and back along one cut)."""
    best = (np.inf, 0, 0)
    for k in range(0, len(outer), 512):  # chunked so that long outlines stay small in memory
        d = ((outer[k : k + 512, None, :] - hole[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] < best[0]:
            best = (d[i, j], k + i, j)
    _, i, j = best
    return np.concatenate([outer[: i + 1], hole[j:], hole[: j + 1], outer[i:]])


def _simplify(poly: np.ndarray) -> np.ndarray:
    """Drop vertices lying on the straight line between their neighbours (exact; keeps the cuts)."""
    if len(poly) < 4:
        return poly
    prev, nxt = np.roll(poly, 1, axis=0), np.roll(poly, -1, axis=0)
    d1, d2 = poly - prev, nxt - poly
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    dot = (d1 * d2).sum(1)
    keep = (cross != 0) | (dot <= 0)  # a turn, a reversal (the cut) or a repeated point
    return poly[keep] if keep.sum() >= 3 else poly


def mask_to_edge_polygons(mask: np.ndarray, *, holes: bool = True) -> list[np.ndarray]:
    """Outlines of a mask's parts along the pixel *edges* (pixel-edge coordinates).

    Pixel ``(r, c)`` is the square ``[c, c + 1) x [r, r + 1)``; the outline
    runs along the edges between mask and background pixels, so every mask
    pixel's centre lies half a pixel inside it and every other centre half
    a pixel outside. Rasterisers that test pixel centres (pycocotools'
    ``frPyObjects``, which COCO tools decode polygons with) give the mask
    back exactly, where the pixel-centre outlines of :func:`mask_to_polygons`
    lose the boundary pixels. Parts touching only at a corner share that
    corner; holes are joined by a zero-width cut as in :func:`mask_to_polygons`.

    Parameters
    ----------
    mask : ndarray of shape (H, W)
        Non-zero pixels are the object.
    holes : bool
        Keep holes (True) or write outer outlines only.

    Returns
    -------
    list of ndarray of shape (N, 2), float64
        ``(x, y)`` vertices in pixel-edge coordinates, integers.
    """
    m = np.asarray(mask) != 0
    box = mask_box(m)
    if box is None:
        return []
    x0, y0, x1, y1 = (int(v) for v in box)
    # 2x nearest upsampling: the centre outline of the doubled mask, mapped back with (u + 1) // 2, runs
    # along the original pixel edges (u = 2c -> c on the left side, u = 2c + 1 -> c + 1 on the right side)
    crop = np.pad(m[y0:y1, x0:x1], 1)
    up = np.kron(crop.astype(np.uint8), np.ones((2, 2), np.uint8))
    out = []
    for p in mask_to_polygons(up, holes=holes):
        q = (p.astype(np.int64) + 1) // 2 + [x0 - 1, y0 - 1]
        keep = np.r_[True, (np.diff(q, axis=0) != 0).any(axis=1)]
        q = q[keep]
        if len(q) > 1 and (q[0] == q[-1]).all():
            q = q[:-1]
        out.append(_simplify(q).astype(np.float64))
    out.sort(key=lambda p: (-len(p), p[:, 1].min(), p[:, 0].min()))
    return out


#: Sub-pixel bits used when rasterising polygons with fractional vertices.
_FILL_SHIFT = 4


def polygons_to_mask(polygons: Iterable[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise polygons (pixel-centre coordinates, union of all) with OpenCV ``fillPoly``.

    Each polygon is filled on its own so that overlapping polygons form a
    union (as COCO reads several polygons of one object), and the outline
    pixels themselves are part of the mask.

    Returns
    -------
    ndarray of shape (height, width), bool
    """
    out = np.zeros((int(height), int(width)), np.uint8)
    scale = 1 << _FILL_SHIFT
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(p) == 0:
            continue
        pts = np.round(p * scale).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(out, [pts], 1, lineType=cv2.LINE_8, shift=_FILL_SHIFT)
        cv2.polylines(out, [pts], True, 1, lineType=cv2.LINE_8, shift=_FILL_SHIFT)
    return out.astype(bool)


def box_to_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """The pixels whose centres lie inside a box (pixel edges); bool ``(height, width)``."""
    x0, y0, x1, y1 = box
    out = np.zeros((int(height), int(width)), bool)
    c0, r0 = max(int(np.ceil(x0 - 0.5)), 0), max(int(np.ceil(y0 - 0.5)), 0)
    c1, r1 = min(int(np.ceil(x1 - 0.5)), width), min(int(np.ceil(y1 - 0.5)), height)
    out[r0:r1, c0:c1] = True
    return out


def object_mask(obj: LabelObject, height: int, width: int) -> np.ndarray:
    """An object's pixels: its mask, else its polygons filled, else its box filled."""
    if obj.mask is not None:
        m = np.asarray(obj.mask, bool)
        if m.shape != (height, width):
            raise LabelFormatError("size_mismatch", f"mask is {m.shape[1]}x{m.shape[0]}, image is {width}x{height}")
        return m
    if obj.polygons:
        return polygons_to_mask(obj.polygons, height, width)
    if obj.box is not None:
        return box_to_mask(obj.box, height, width)
    return np.zeros((height, width), bool)


def object_box(obj: LabelObject, height: int | None = None, width: int | None = None):
    """An object's box: its own, else the tight box of its mask or rasterised polygons (None if empty)."""
    if obj.box is not None:
        return tuple(float(v) for v in obj.box)
    if obj.mask is not None:
        return mask_box(obj.mask)
    if obj.polygons:
        if height is None or width is None:
            raise LabelFormatError("missing_size", "a polygon's box needs the image size")
        return mask_box(polygons_to_mask(obj.polygons, height, width))
    return None


def object_polygons(
    obj: LabelObject, height: int | None = None, width: int | None = None, *, holes: bool = False
) -> list[np.ndarray]:
    """An object's outlines (pixel centres): those of its mask, else its own polygons, else its box's corners.

    The mask comes first: an object read with both (a labelme polygon with
    the pixels labelme's rule gives it) is those pixels. ``holes`` is passed
    to :func:`mask_to_polygons` for mask objects.
    """
    if obj.mask is not None:
        return mask_to_polygons(obj.mask, holes=holes)
    if obj.polygons:
        return [np.asarray(p, np.float64) for p in obj.polygons]
    if obj.box is not None:
        x0, y0, x1, y1 = obj.box
        # the centres of the box's outermost pixels (those of box_to_mask), so filling gives them back
        a, b = np.ceil(x0 - 0.5), np.ceil(y0 - 0.5)
        c, d = np.ceil(x1 - 0.5) - 1, np.ceil(y1 - 0.5) - 1
        return [np.array([[a, b], [c, b], [c, d], [a, d]], np.float64)]
    return []


def category_masks(item: ImageLabels, height: int, width: int) -> dict[str, np.ndarray]:
    """Union mask of each category's objects in one image (objects without geometry add nothing)."""
    out: dict[str, np.ndarray] = {}
    for obj in item.objects:
        if obj.geometry() == "none":
            continue
        m = object_mask(obj, height, width)
        out[obj.category] = out[obj.category] | m if obj.category in out else m
    return out


def check_exportable(item: ImageLabels, cmap: ClassMap) -> None:
    """Refuse an image whose classes are not all in the class map, or whose labels have no geometry.

    Raises
    ------
    LabelFormatError
        Reason ``unknown_class`` or ``no_geometry``.
    """
    unknown = [c for c in item.categories() if c not in cmap]
    if unknown:
        raise LabelFormatError("unknown_class", f"{unknown} not in the class map {list(cmap.names)}")
    if item.labels and not item.objects:
        raise LabelFormatError("no_geometry", f"labels {item.labels} have no mask, polygon or box")


def stem(path: str) -> str:
    """File name without folder and extension."""
    return os.path.splitext(os.path.basename(path))[0]


def fmt_number(v: float) -> str:
    """A coordinate as text: integers without a decimal point, others in the shortest exact form."""
    f = float(v)
    if f.is_integer():
        return str(int(f))
    return repr(f)
