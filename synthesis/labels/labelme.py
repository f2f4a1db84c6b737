"""labelme JSON: one ``<image stem>.json`` per image with polygon and rectangle shapes.

Schema (as labelme's own ``LabelFile`` reads it): top-level ``version``,
``flags``, ``shapes``, ``imagePath`` (relative to the JSON file),
``imageData`` (base64 or null: the image is then read from ``imagePath``),
``imageHeight``, ``imageWidth``; each shape has ``label``, ``points``
(``[[x, y], ...]``), ``group_id``, ``shape_type``, ``flags``,
``description`` (and ``mask``, base64 PNG, for ``shape_type: "mask"``).

Points are pixel centres: labelme rasterises shapes with PIL
(``labelme.utils.shape_to_mask``: ``ImageDraw.polygon`` with the outline
drawn), and :func:`labelme_shape_mask` does the same without importing
labelme. Read (files of labelme 3.x to 6.x): ``polygon`` -> polygon, with
the object's mask rasterised by labelme's rule; ``rectangle`` (two corner
pixels, inclusive) -> box; ``circle`` (centre, point on the rim) -> mask by
labelme's rule; ``mask`` (base64 PNG over the box of the two points) ->
mask; ``point``, ``line``, ``linestrip`` are not areas and are skipped
(logged and counted in ``skipped_shapes``). Shapes with the same label and
``group_id`` form one object; embedded ``imageData`` is not needed (the
image is found through ``imagePath``) and ``flags`` (file and shape) are
kept in the object's ``attrs``. Written: masks and polygons as ``polygon``
shapes through the boundary pixels' centres (several outlines of one
object share a ``group_id``), each object checked with labelme's rule; an
object whose polygons would not give its mask back is written as a labelme
5 ``mask`` shape instead (listed in ``classes.json``,
``shapes.mask_fallback``). Boxes are ``rectangle`` s; ``imageData`` is null.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage as ndi

from synthesis.labels._files import (
    WriteResult,
    exportable,
    read_files,
    start_write,
    write_class_map,
    write_json,
    writer_doc,
)
from synthesis.labels.core import (
    ImageLabels,
    LabelFormatError,
    LabelObject,
    LabelSet,
    check_box,
    check_polygon,
    object_mask,
    object_polygons,
)

logger = logging.getLogger(__name__)

#: labelme version written into exported files (the schema of labelme 5 and 6).
LABELME_VERSION = "5.5.0"


def read_labelme(path: str | os.PathLike, *, classes=None) -> LabelSet:
    """Read labelme JSON files (one file, or every ``*.json`` in a folder, recursively).

    Parameters
    ----------
    path : str or path-like
    classes : ClassMap, list, path or None
        When given, a shape label outside it rejects that file.

    Returns
    -------
    LabelSet
        ``image`` is ``imagePath`` joined to the JSON file's folder.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        files = [path]
    else:
        files = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            files += [
                os.path.join(dirpath, f)
                for f in sorted(filenames)
                if f.endswith(".json") and f != "classes.json" and not f.startswith(".")
            ]
    malformed = (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError)
    result = read_files(files, _read_one, classes, malformed=malformed)
    logger.info("read %d labelme files from %s (%d rejected)", len(result.items), path, len(result.errors))
    return result


def _read_one(path: str, cmap) -> ImageLabels:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or "shapes" not in data or "imagePath" not in data:
        raise LabelFormatError("malformed", "not a labelme file: needs `shapes` and `imagePath`")
    ref = str(data["imagePath"]).replace("\\", "/")
    image = ref if os.path.isabs(ref) else os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), ref))
    w, h = data.get("imageWidth"), data.get("imageHeight")
    w = int(w) if w is not None else None
    h = int(h) if h is not None else None
    if (w is None or h is None) and data.get("imageData"):  # labelme 3.x: no size fields, the image embedded
        w, h = _embedded_size(data["imageData"])
    groups: dict[tuple, LabelObject] = {}
    objs: list[LabelObject] = []
    skipped: list[dict] = []
    for k, s in enumerate(data["shapes"]):
        label, kind = s["label"], s.get("shape_type") or "polygon"
        if not isinstance(label, str) or not label:
            raise LabelFormatError("malformed", f"shape {k}: label must be a non-empty string")
        if cmap is not None and label not in cmap:
            raise LabelFormatError("unknown_class", f"shape {k}: {label!r} not in the class map {list(cmap.names)}")
        pts = np.asarray(s["points"], np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
            raise LabelFormatError("malformed", f"shape {k}: points must be a non-empty list of [x, y]")
        gid = s.get("group_id")
        obj = groups.get((label, gid)) if gid is not None else None
        if obj is None:
            obj = LabelObject(label)
        if kind == "polygon":
            if len(pts) < 3:
                skipped.append({"shape": k, "shape_type": kind, "label": label, "reason": f"{len(pts)} points"})
                continue
            obj.polygons = [*(obj.polygons or []), check_polygon(pts, w, h)]
            if w is not None and h is not None:
                m = labelme_shape_mask("polygon", pts, h, w)
                obj.mask = m if obj.mask is None else obj.mask | m
        elif kind == "rectangle":
            if len(pts) != 2:
                raise LabelFormatError("malformed", f"shape {k}: a rectangle has 2 points, got {len(pts)}")
            (xa, ya), (xb, yb) = pts
            box = (min(xa, xb), min(ya, yb), max(xa, xb) + 1, max(ya, yb) + 1)
            obj.box = check_box(box, w, h)
        elif kind == "circle":
            if len(pts) != 2:
                raise LabelFormatError("malformed", f"shape {k}: a circle has 2 points, got {len(pts)}")
            if w is None or h is None:
                raise LabelFormatError("missing_size", f"shape {k}: a circle needs imageWidth and imageHeight")
            check_polygon(pts, w, h)
            m = labelme_shape_mask("circle", pts, h, w)
            obj.mask = m if obj.mask is None else obj.mask | m
        elif kind == "mask":
            if w is None or h is None:
                raise LabelFormatError("missing_size", f"shape {k}: a mask shape needs imageWidth and imageHeight")
            m = _decode_mask(s.get("mask"), pts, w, h, k)
            obj.mask = m if obj.mask is None else obj.mask | m
        else:
            logger.info("%s: shape %d (%r, label %r) is not an area; skipped", path, k, kind, label)
            skipped.append({"shape": k, "shape_type": kind, "label": label, "reason": "not an area"})
            continue
        if s.get("flags"):
            obj.attrs.setdefault("flags", {}).update(s["flags"])
        if gid is not None:
            if (label, gid) not in groups:
                groups[(label, gid)] = obj
                objs.append(obj)
        else:
            objs.append(obj)
    flags = data.get("flags") or {}
    it = ImageLabels(image=image, width=w, height=h, objects=objs, source=path)
    # image-level flags (labelme --flags) that are set: a label when the class map names them, else reported
    for f, on in flags.items() if isinstance(flags, dict) else ():
        if on is not True:
            continue
        if cmap is not None and f in cmap:
            it.labels.append(str(f))
        else:
            skipped.append({"flag": f, "reason": "image flag not in the class map (pass --classes naming it)"})
    it.skipped = skipped
    return it


def _embedded_size(b64: str) -> tuple[int, int]:
    """``(width, height)`` of the image embedded as base64 ``imageData``."""
    try:
        img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
    except (ValueError, TypeError) as err:
        raise LabelFormatError("malformed", f"imageData is not base64: {err}") from None
    if img is None:
        raise LabelFormatError("malformed", "imageData is not an image OpenCV can decode")
    return int(img.shape[1]), int(img.shape[0])


def labelme_shape_mask(kind: str, points, height: int, width: int) -> np.ndarray:
    """The pixels of a labelme ``polygon`` or ``circle`` shape by labelme's own rule.

    As ``labelme.utils.shape_to_mask``: PIL ``ImageDraw.polygon`` (or
    ``ellipse`` of the circle's bounding square) with ``outline=1, fill=1``
    on the points as given (pixel centres).

    Returns
    -------
    ndarray of shape (height, width), bool
    """
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.zeros((int(height), int(width)), np.uint8))
    draw = ImageDraw.Draw(img)
    xy = [(float(x), float(y)) for x, y in np.asarray(points, np.float64).reshape(-1, 2)]
    if kind == "circle":
        (cx, cy), (px, py) = xy
        d = float(np.hypot(cx - px, cy - py))
        draw.ellipse(((cx - d, cy - d), (cx + d, cy + d)), outline=1, fill=1)
    else:
        draw.polygon(xy, outline=1, fill=1)
    return np.array(img, dtype=bool)


def _decode_mask(b64, pts: np.ndarray, w: int, h: int, k: int) -> np.ndarray:
    if not isinstance(b64, str):
        raise LabelFormatError("malformed", f"shape {k}: a mask shape needs `mask` as base64 PNG")
    crop = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
    if crop is None:
        raise LabelFormatError("malformed", f"shape {k}: `mask` is not a PNG")
    if crop.ndim == 3:
        crop = crop[..., 0]
    x0, y0 = round(pts[:, 0].min()), round(pts[:, 1].min())
    if x0 < 0 or y0 < 0 or x0 + crop.shape[1] > w or y0 + crop.shape[0] > h:
        raise LabelFormatError(
            "out_of_bounds",
            f"shape {k}: mask at ({x0}, {y0}) of {crop.shape[1]}x{crop.shape[0]} reaches outside the {w}x{h} image",
        )
    out = np.zeros((h, w), bool)
    out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop != 0
    return out


@writer_doc
def write_labelme(
    items: Sequence[ImageLabels], out: str | os.PathLike, *, classes=None, holes: bool = True
) -> WriteResult:
    """Write ``OUT/<image stem>.json`` per image (``imagePath`` relative to OUT) and ``OUT/classes.json``.

    Parameters
    ----------
    {items_out_classes}
    {holes}
    """
    out, cmap, res = start_write(out, classes, items)
    fallback, n_obj = [], 0
    for name, it, w, h in exportable(items, cmap, res):
        try:
            shapes = []
            gid = 0
            for obj in it.objects:
                if obj.geometry() == "box":
                    x0, y0, x1, y1 = check_box(obj.box, w, h)
                    shapes.append(_shape(obj.category, [[x0, y0], [x1 - 1, y1 - 1]], "rectangle", None))
                    continue
                polys = object_polygons(obj, h, w, holes=holes)
                if not polys:
                    continue
                polys = [p if len(p) >= 3 else np.vstack([p, np.repeat(p[-1:], 3 - len(p), axis=0)]) for p in polys]
                n_obj += 1
                ref = object_mask(obj, h, w)
                ref = ref if holes else ndi.binary_fill_holes(ref)
                got = np.zeros_like(ref)
                for p in polys:
                    got |= labelme_shape_mask("polygon", p, h, w)
                if not np.array_equal(got, ref):
                    shapes.append(_mask_shape(obj.category, ref))
                    diff = int((got != ref).sum())
                    fallback.append({"image": it.image, "category": obj.category, "differing_pixels": diff})
                    continue
                group = None
                if len(polys) > 1:
                    gid += 1
                    group = gid
                for p in polys:
                    shapes.append(_shape(obj.category, p.tolist(), "polygon", group))
        except LabelFormatError as err:
            res.skip(it, err)
            continue
        target = os.path.join(out, name + ".json")
        rel = os.path.relpath(os.path.abspath(it.image), os.path.dirname(os.path.abspath(target)))
        data = {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": shapes,
            "imagePath": rel,
            "imageData": None,
            "imageHeight": h,
            "imageWidth": w,
        }
        res.files.append(write_json(target, data, indent=2))
        res.images += 1
    extra = {
        "shapes": {
            "convention": "pixel centres; checked with labelme's rule (PIL ImageDraw.polygon, outline drawn)",
            "objects": n_obj,
            "mask_fallback": fallback,
        }
    }
    res.class_map = write_class_map(out, cmap, extra)
    return res


def _mask_shape(label: str, mask: np.ndarray) -> dict:
    """A labelme 5 ``mask`` shape: the two inclusive corner pixels of the mask's box and its crop as base64 PNG."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    _, png = cv2.imencode(".png", mask[y0 : y1 + 1, x0 : x1 + 1].astype(np.uint8) * 255)
    shape = _shape(label, [[x0, y0], [x1, y1]], "mask", None)
    shape["mask"] = base64.b64encode(png.tobytes()).decode("ascii")
    return shape


def _shape(label: str, points, kind: str, group: int | None) -> dict:
    return {
        "label": label,
        "points": [[float(x), float(y)] for x, y in points],
        "group_id": group,
        "description": "",
        "shape_type": kind,
        "flags": {},
        "mask": None,
    }
