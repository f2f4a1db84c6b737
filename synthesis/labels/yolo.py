"""YOLO text labels (Ultralytics / Darknet): boxes and segments.

One ``<image stem>.txt`` per image under ``labels/``; one object per line:

- box: ``class cx cy w h``: centre and size divided by the image width and
  height (:func:`~synthesis.labels.core.xyxy_to_yolo`);
- segment: ``class x1 y1 x2 y2 ...`` (at least 3 points): polygon vertices
  in pixel-edge coordinates (as boxes, and as COCO polygons converted to
  YOLO by Ultralytics) divided by the width and height. raremine writes the
  outline through the boundary pixels' centres, ``(c + 0.5) / W``:
  Ultralytics rasterises a segment by scaling it to pixels in float32,
  truncating to integers and filling with OpenCV ``fillPoly``
  (``ultralytics.data.utils.polygon2mask``), and a vertex half a pixel
  from every pixel edge truncates to its own pixel whatever the float32
  rounding (and so do the points its ``resample_segments`` puts between
  vertices). Each object is checked with that rule when written; one that
  would not come back exactly is listed in ``classes.json``
  (``segments.inexact``, with its IoU). Reading subtracts the half pixel
  (raremine polygons are in pixel centres).

``class`` is the 0-based index in the class map (``classes.txt``, one name a
line, or ``data.yaml`` ``names``). An empty file marks an image with no
object (a background image). Numbers are written in their shortest exact
form, so reading back gives the same floats. YOLO files do not hold the
image size: the reader needs it from the caller (``size_of``) or from the
image beside the labels (``../images/<stem>.*`` or the same folder).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np
from scipy import ndimage as ndi

from synthesis.labels._files import (
    WriteResult,
    exportable,
    find_image,
    image_size,
    read_error,
    rejected,
    start_write,
    write_class_map,
    write_text,
    writer_doc,
)
from synthesis.labels.core import (
    PIXEL_DECIMALS,
    ImageLabels,
    LabelError,
    LabelFormatError,
    LabelObject,
    LabelSet,
    check_box,
    class_map_from,
    fmt_number,
    load_class_map,
    object_box,
    object_mask,
    object_polygons,
    stem,
    xyxy_to_yolo,
    yolo_to_xyxy,
)

logger = logging.getLogger(__name__)

SizeOf = Callable[[str], "tuple[int, int] | None"]
#: Segment vertices are written in pixel edges: a raremine (pixel-centre) vertex plus half a pixel.
EDGE_SHIFT = 0.5
_CLASS_FILES = ("classes.json", "classes.txt", "data.yaml", "dataset.yaml", "obj.names")


def find_class_map(folder: str):
    """The class map beside YOLO labels (``classes.json``, ``classes.txt``, ``data.yaml``...), or None."""
    for d in (folder, os.path.dirname(os.path.abspath(folder))):
        for name in _CLASS_FILES:
            p = os.path.join(d, name)
            if os.path.isfile(p):
                return load_class_map(p)
    return None


def read_yolo(folder: str | os.PathLike, *, classes=None, size_of: SizeOf | None = None) -> LabelSet:
    """Read YOLO label files (boxes and segments) from a folder.

    Parameters
    ----------
    folder : str or path-like
        A dataset folder with ``labels/`` or the label folder itself;
        searched recursively for ``*.txt`` (``classes.txt`` excluded).
    classes : ClassMap, list, path or None
        Class id -> name; default: a class map file found beside the labels.
    size_of : callable or None
        ``size_of(label_path) -> (width, height)`` or None; when it gives
        None the image beside the labels is looked up. It may raise
        :class:`~synthesis.labels.core.LabelFormatError` to reject the file
        (e.g. ``not_in_catalogue``).

    Returns
    -------
    LabelSet
        ``image`` is the image file when found beside the labels, else the
        label's stem.
    """
    folder = os.fspath(folder)
    labels_dir = os.path.join(folder, "labels") if os.path.isdir(os.path.join(folder, "labels")) else folder
    cmap = class_map_from(classes) or find_class_map(labels_dir)
    if cmap is None:
        return rejected(folder, "no class map: pass one or put classes.txt / data.yaml beside the labels")
    items, errors = [], []
    for dirpath, dirnames, filenames in os.walk(labels_dir):
        dirnames.sort()
        for f in sorted(filenames):
            if not f.endswith(".txt") or f in _CLASS_FILES or f.startswith("."):
                continue
            p = os.path.join(dirpath, f)
            image = _image_beside(p)
            try:
                size = size_of(p) if size_of is not None else None
                if size is None and image is not None:
                    size = image_size(image)
                if size is None:
                    raise LabelFormatError(
                        "missing_size", "image size unknown: no catalogue image and no image beside the label file"
                    )
                objs = _parse(p, cmap, *size)
            except LabelFormatError as err:
                errors.append(read_error(p, err, image=image or stem(p)))
                continue
            except (OSError, UnicodeDecodeError) as err:
                errors.append(LabelError(p, "malformed", f"cannot read: {err}", image=image or stem(p)))
                continue
            items.append(ImageLabels(image=image or stem(p), width=size[0], height=size[1], objects=objs, source=p))
    logger.info("read %d YOLO label files from %s (%d rejected)", len(items), labels_dir, len(errors))
    return LabelSet(items, errors, list(cmap.names))


def _image_beside(label_path: str) -> str | None:
    d, s = os.path.dirname(label_path), stem(label_path)
    parts = d.split(os.sep)
    candidates = [d]
    if "labels" in parts:
        i = len(parts) - 1 - parts[::-1].index("labels")
        candidates.insert(0, os.sep.join([*parts[:i], "images", *parts[i + 1 :]]))
    for c in candidates:
        found = find_image(c, s)
        if found:
            return found
    return None


def _parse(path: str, cmap, width: int, height: int) -> list[LabelObject]:
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    objs = []
    for n, line in enumerate(lines, 1):
        tok = line.split()
        if not tok:
            continue
        where = f"line {n}"
        try:
            cid = int(tok[0])
            vals = [float(t) for t in tok[1:]]
        except ValueError:
            raise LabelFormatError("malformed", f"{where}: expected `class x y ...` numbers, got {line!r}") from None
        if not 0 <= cid < len(cmap):
            raise LabelFormatError(
                "unknown_class",
                f"{where}: class id {cid} not in the class map (ids 0..{len(cmap) - 1}: {list(cmap.names)})",
            )
        if not all(np.isfinite(vals)):
            raise LabelFormatError("malformed", f"{where}: non-finite number")
        name = cmap.names[cid]
        eps = 10.0**-PIXEL_DECIMALS
        if len(vals) == 4:
            cx, cy, w, h = vals
            if min(cx - w / 2, cy - h / 2) < -eps or max(cx + w / 2, cy + h / 2) > 1 + eps:
                raise LabelFormatError("out_of_bounds", f"{where}: box {vals} reaches outside [0, 1]")
            objs.append(LabelObject(name, box=check_box(yolo_to_xyxy(vals, width, height), width, height)))
        elif len(vals) >= 6 and len(vals) % 2 == 0:
            p = np.asarray(vals, np.float64).reshape(-1, 2)
            if (p < -eps).any() or (p > 1 + eps).any():
                raise LabelFormatError("out_of_bounds", f"{where}: segment points outside [0, 1]")
            poly = np.round(p * [width, height] - EDGE_SHIFT, PIXEL_DECIMALS) + 0.0
            objs.append(LabelObject(name, polygons=[poly]))
        else:
            raise LabelFormatError(
                "malformed",
                f"{where}: {len(vals)} numbers after the class; expected 4 (box) or an even number >= 6 (segment)",
            )
    return objs


@writer_doc
def write_yolo(
    items: Sequence[ImageLabels],
    out: str | os.PathLike,
    *,
    classes=None,
    task: str = "detect",
    holes: bool = True,
) -> WriteResult:
    """Write ``OUT/labels/<stem>.txt``, ``OUT/classes.txt``, ``OUT/data.yaml`` and ``OUT/classes.json``.

    Parameters
    ----------
    {items_out_classes}
    task : {"detect", "segment"}
        Boxes, or segments (one line per outline of each object; an object
        with only a box is written as its box's four corner pixels).
    {holes}
    """
    if task not in ("detect", "segment"):
        raise ValueError(f"task must be 'detect' or 'segment', got {task!r}")
    out, cmap, res = start_write(out, classes, items)
    inexact, n_seg = [], 0
    for name, it, w, h in exportable(items, cmap, res):
        try:
            lines = []
            checks = []
            for obj in it.objects:
                cid = cmap.yolo_id(obj.category)
                if task == "detect":
                    box = object_box(obj, h, w)
                    if box is None:
                        continue
                    vals = xyxy_to_yolo(check_box(box, w, h), w, h)
                    lines.append(" ".join([str(cid), *(fmt_number(v) for v in vals)]))
                else:
                    texts = []
                    for p in object_polygons(obj, h, w, holes=holes):
                        if len(p) < 3:  # YOLO segments need 3 points; repeat the last one
                            p = np.vstack([p, np.repeat(p[-1:], 3 - len(p), axis=0)])
                        texts.append([fmt_number(v) for v in ((p + EDGE_SHIFT) / [w, h]).ravel()])
                        lines.append(" ".join([str(cid), *texts[-1]]))
                    if texts and obj.geometry() != "box":
                        checks.append((obj, texts))
        except LabelFormatError as err:
            res.skip(it, err)
            continue
        for obj, texts in checks:
            n_seg += 1
            ref = object_mask(obj, h, w)
            ref = ref if holes else ndi.binary_fill_holes(ref)
            got = np.zeros_like(ref)
            for t in texts:
                got |= yolo_segment_mask(t, w, h)
            if not np.array_equal(got, ref):
                iou = float((got & ref).sum() / max((got | ref).sum(), 1))
                inexact.append({"image": it.image, "category": obj.category, "iou": round(iou, 4)})
        res.files.append(write_text(os.path.join(out, "labels", name + ".txt"), "".join(s + "\n" for s in lines)))
        res.images += 1
    write_text(os.path.join(out, "classes.txt"), "".join(n + "\n" for n in cmap.names))
    import yaml

    write_text(
        os.path.join(out, "data.yaml"),
        yaml.safe_dump({"names": dict(enumerate(cmap.names)), "nc": len(cmap)}, sort_keys=False),
    )
    extra: dict = {"yolo_task": task}
    if task == "segment":
        extra["segments"] = {
            "convention": "pixel edges / image size; checked with Ultralytics' rule (float32, int32, cv2.fillPoly)",
            "objects": n_seg,
            "inexact": inexact,
        }
        if inexact:
            logger.warning("%d objects do not come back exactly through YOLO segments", len(inexact))
    res.class_map = write_class_map(out, cmap, extra)
    return res


def yolo_segment_mask(values, width: int, height: int) -> np.ndarray:
    """The pixels of one YOLO segment line as Ultralytics rasterises it for training.

    As ``ultralytics.data.utils.polygon2mask`` (at full resolution): the
    normalised numbers are parsed as float32, scaled by the image size in
    float32, truncated to int32 and filled with ``cv2.fillPoly``.

    Parameters
    ----------
    values : sequence of str or float
        ``x1 y1 x2 y2 ...`` normalised, as written after the class id.
    width, height : int

    Returns
    -------
    ndarray of shape (height, width), bool
    """
    pts = np.asarray(values, dtype=np.float32).reshape(-1, 2) * np.array([width, height], np.float32)
    out = np.zeros((int(height), int(width)), np.uint8)
    cv2.fillPoly(out, [pts.astype(np.int32)], 1)
    return out.astype(bool)
