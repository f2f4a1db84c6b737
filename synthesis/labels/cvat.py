"""CVAT for images 1.1 XML (read only): boxes, polygons, masks, ellipses and tags.

One ``annotations.xml`` with an ``<image id name width height>`` per image
and its shapes as children. Coordinates are in pixel edges, as CVAT's own
COCO export writes them unchanged: ``<box xtl ytl xbr ybr>`` is a
raremine box (a ``rotation`` other than 0 makes it a polygon of its
corners); ``<polygon points="x,y;x,y;...">`` is decoded with the COCO
rasteriser (pycocotools: pixels whose centres the outline encloses);
``<ellipse cx cy rx ry>`` is filled the same way from its outline;
``<mask rle left top width height>`` is a run-length mask over its box,
row by row, runs alternating from background. ``<tag label>`` is an
image-level label. Shapes with the same label and ``group_id`` form one
object. Not areas and skipped, with the reason, per image:
``<polyline>``, ``<points>``, ``<skeleton>``, ``<cuboid>``; ``<track>``
(CVAT for video) is reported once per file.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET

import numpy as np

from synthesis.labels._files import annotation_file, label_set, read_error, rejected
from synthesis.labels.coco import check_edge_polygon, coco_polygon_mask
from synthesis.labels.core import (
    ImageLabels,
    LabelFormatError,
    LabelObject,
    LabelSet,
    check_box,
    class_map_from,
)

logger = logging.getLogger(__name__)

CVAT_FILE = "annotations.xml"
_NOT_AREAS = ("polyline", "points", "skeleton", "cuboid")


def read_cvat(path: str | os.PathLike, *, classes=None, image_root: str | os.PathLike | None = None) -> LabelSet:
    """Read a CVAT for images 1.1 XML file (or a folder holding ``annotations.xml``).

    Parameters
    ----------
    path : str or path-like
    classes : ClassMap, list, path or None
        When given, a label outside it rejects that image (``unknown_class``).
    image_root : str or None
        Folder that the images' ``name`` s are relative to (default: the XML file's folder).

    Returns
    -------
    LabelSet
        One item per ``<image>``; an image with a bad shape is rejected whole
        (``errors``); parts that are not areas are listed in each item's
        ``skipped``.
    """
    path, root = annotation_file(path, CVAT_FILE, image_root)
    cmap = class_map_from(classes)
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError) as err:
        return rejected(path, f"not a CVAT XML file: {type(err).__name__}: {err}")
    doc = tree.getroot()
    if doc.tag != "annotations":
        return rejected(path, f"root element is <{doc.tag}>, not <annotations>")
    items, errors, skipped = [], [], []
    tracks = doc.findall("track")
    if tracks:
        reason = "<track> (CVAT for video) not read: export the task as 'CVAT for images'"
        skipped.append({"file": path, "count": len(tracks), "reason": reason})
    for im in doc.findall("image"):
        name = im.get("name")
        try:
            if not name:
                raise LabelFormatError("malformed", "<image> without a name")
            w, h = int(im.get("width", "")), int(im.get("height", ""))
            items.append(_read_image(im, name, w, h, cmap, root, path))
        except (TypeError, ValueError) as err:  # LabelFormatError among them
            errors.append(read_error(path, err, image=name, prefix="bad attribute: "))
    logger.info("read %d images from %s (%d rejected)", len(items), path, len(errors))
    return label_set(items, errors, cmap, skipped)


def _read_image(im, name: str, w: int, h: int, cmap, root: str, path: str) -> ImageLabels:
    image = name if os.path.isabs(name) else os.path.normpath(os.path.join(root, name))
    it = ImageLabels(image=image, width=w, height=h, source=path)
    groups: dict[tuple, LabelObject] = {}
    for k, el in enumerate(im):
        label = el.get("label")
        if not label:
            raise LabelFormatError("malformed", f"<{el.tag}> #{k} has no label")
        if cmap is not None and label not in cmap:
            raise LabelFormatError(
                "unknown_class", f"<{el.tag}> #{k}: {label!r} not in the class map {list(cmap.names)}"
            )
        if el.tag == "tag":
            it.labels.append(label)
            continue
        if el.tag in _NOT_AREAS or el.tag not in ("box", "polygon", "mask", "ellipse"):
            it.skipped.append({"shape": k, "shape_type": el.tag, "label": label, "reason": "not an area"})
            continue
        gid = el.get("group_id")
        obj = groups.get((label, gid)) if gid not in (None, "", "0") else None
        new = obj is None
        obj = obj or LabelObject(label, attrs={"occluded": int(el.get("occluded", "0") or 0)})
        m = _shape_mask(el, k, w, h, obj)
        if m is not None:
            obj.mask = m if obj.mask is None else obj.mask | m
        if new:
            it.objects.append(obj)
            if gid not in (None, "", "0"):
                groups[(label, gid)] = obj
    return it


def _floats(el, names, k) -> list[float]:
    try:
        return [float(el.get(n)) for n in names]
    except (TypeError, ValueError):
        raise LabelFormatError("malformed", f"<{el.tag}> #{k} needs numeric {', '.join(names)}") from None


def _shape_mask(el, k: int, w: int, h: int, obj: LabelObject) -> np.ndarray | None:
    """The shape's pixels (None for a plain box, which is kept as ``obj.box``)."""
    if el.tag == "box":
        x0, y0, x1, y1 = _floats(el, ("xtl", "ytl", "xbr", "ybr"), k)
        rot = float(el.get("rotation", "0") or 0)
        if rot == 0:
            if obj.box is None and obj.mask is None:
                obj.box = check_box((x0, y0, x1, y1), w, h)
                return None
            poly = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        else:  # CVAT rotates a box about its centre, clockwise in image coordinates
            c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
            t = np.deg2rad(rot)
            r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
            poly = (np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) - c) @ r.T + c
        return _polygon_mask(poly, k, w, h)
    if el.tag == "polygon":
        try:
            pts = np.array([[float(v) for v in p.split(",")] for p in (el.get("points") or "").split(";") if p])
        except ValueError:
            raise LabelFormatError("malformed", f"<polygon> #{k}: points must be 'x,y;x,y;...'") from None
        if pts.ndim != 2 or pts.shape[1:] != (2,) or len(pts) < 3:
            raise LabelFormatError("malformed", f"<polygon> #{k}: needs 3 or more x,y points")
        return _polygon_mask(pts, k, w, h)
    if el.tag == "ellipse":
        cx, cy, rx, ry = _floats(el, ("cx", "cy", "rx", "ry"), k)
        t = np.linspace(0, 2 * np.pi, max(16, int(np.ceil(2 * np.pi * max(rx, ry)))), endpoint=False)
        return _polygon_mask(np.c_[cx + rx * np.cos(t), cy + ry * np.sin(t)], k, w, h)
    # mask: run lengths over its box, row-major, starting with background
    left, top, bw, bh = (round(v) for v in _floats(el, ("left", "top", "width", "height"), k))
    try:
        runs = np.array([int(v) for v in (el.get("rle") or "").replace(" ", "").split(",") if v], np.int64)
    except ValueError:
        raise LabelFormatError("malformed", f"<mask> #{k}: rle must be comma-separated counts") from None
    if bw <= 0 or bh <= 0 or (runs < 0).any() or runs.sum() != bw * bh:
        raise LabelFormatError("malformed", f"<mask> #{k}: rle covers {int(runs.sum())} pixels, its box {bw}x{bh}")
    if left < 0 or top < 0 or left + bw > w or top + bh > h:
        raise LabelFormatError("out_of_bounds", f"<mask> #{k} at ({left}, {top}) {bw}x{bh} outside the {w}x{h} image")
    values = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    out = np.zeros((h, w), bool)
    out[top : top + bh, left : left + bw] = values.reshape(bh, bw)
    return out


def _polygon_mask(pts: np.ndarray, k: int, w: int, h: int) -> np.ndarray:
    check_edge_polygon(pts, w, h)
    return coco_polygon_mask([pts], h, w)
