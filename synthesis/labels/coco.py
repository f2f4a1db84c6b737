"""COCO object-detection / instance-segmentation JSON.

Conventions: ``bbox`` is ``[x, y, width, height]`` in pixel edges (the same
edges as raremine boxes, :func:`~synthesis.labels.core.xyxy_to_coco`);
polygons are flat ``[x1, y1, x2, y2, ...]`` lists in pixel edges, i.e.
raremine's pixel-centre polygons shifted by +0.5; RLE masks (``{"size": [h,
w], "counts": ...}``, compressed string or uncompressed list) are decoded
and encoded with pycocotools. Category ids are 1-based in class-map order.

Writing: ``OUT/annotations.json`` and ``OUT/classes.json``. With
``segmentation="polygon"`` each mask is written as its outline along the
pixel edges (:func:`~synthesis.labels.core.mask_to_edge_polygons`; each
hole joined to its outline by a zero-width cut, ``holes=False`` writes outer
outlines only), which pycocotools' rasteriser (``frPyObjects``, behind
``annToMask`` and ``COCOeval``) fills back to exactly the mask. Every
polygon is decoded with pycocotools before it is written; an object whose
polygon would not give its mask back (none among the magnetic-tile masks)
is written as RLE instead, and ``classes.json`` lists it under
``segmentation.rle_fallback``. ``area`` is the pixel count pycocotools
decodes. With ``"rle"`` every mask is compressed RLE. A box-only object
gets its box as a 4-corner polygon (so COCO's segmentation tools, e.g.
``COCOeval`` with ``iouType="segm"``, can decode every annotation) and
``area = w * h``; on reading, a single polygon that is exactly the
annotation's ``bbox`` rectangle is read back as that box alone.

Reading: polygons (one or several parts, as other exporters write them)
are decoded with pycocotools, the rasteriser COCO's own tools use, so an
object is the pixels COCO tools see; crowd RLE (compressed or not) is
decoded likewise.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage as ndi

from synthesis.labels._files import (
    WriteResult,
    annotation_file,
    class_map_name,
    read_error,
    rejected,
    start_write,
    write_class_map,
    write_json,
    writer_doc,
)
from synthesis.labels.core import (
    ImageLabels,
    LabelError,
    LabelFormatError,
    LabelObject,
    LabelSet,
    check_box,
    check_exportable,
    check_polygon,
    class_map_from,
    coco_to_xyxy,
    mask_to_edge_polygons,
    object_box,
    object_mask,
    xyxy_to_coco,
)

logger = logging.getLogger(__name__)

COCO_FILE = "annotations.json"
#: COCO polygons are in pixel edges; raremine polygons in pixel centres.
EDGE_SHIFT = 0.5


def read_coco(path: str | os.PathLike, *, classes=None, image_root: str | os.PathLike | None = None) -> LabelSet:
    """Read a COCO annotation file (boxes, polygons, RLE).

    Parameters
    ----------
    path : str or path-like
        The JSON file (or a folder holding ``annotations.json``).
    classes : ClassMap, list, path or None
        When given, a category name outside it rejects that image.
    image_root : str or None
        Folder that relative ``file_name`` values are relative to (default:
        the JSON file's folder).

    Returns
    -------
    LabelSet
        One item per COCO image; an image with a bad annotation is rejected
        whole (``errors``), the others are kept.
    """
    path, root = annotation_file(path, COCO_FILE, image_root)
    cmap = class_map_from(classes)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        images = data["images"]
        cats = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
        anns = data.get("annotations", [])
        if not isinstance(images, list) or not isinstance(anns, list):
            raise TypeError("`images` and `annotations` must be lists")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        return rejected(path, f"not a COCO file: {type(err).__name__}: {err}")
    by_image: dict = {}
    for a in anns:
        by_image.setdefault(a.get("image_id") if isinstance(a, dict) else None, []).append(a)
    items, errors = [], []
    for im in images:
        try:
            fname = str(im["file_name"])
            w, h = int(im["width"]), int(im["height"])
            skipped: list[dict] = []
            objs = [_read_ann(a, cats, cmap, w, h, skipped) for a in by_image.get(im["id"], [])]
            objs = [o for o in objs if o is not None]
        except (KeyError, TypeError, ValueError) as err:  # LabelFormatError among them
            ref = im.get("file_name") if isinstance(im, dict) else None
            errors.append(read_error(path, err, image=ref, prefix="bad image or annotation entry: "))
            continue
        image = fname if os.path.isabs(fname) else os.path.normpath(os.path.join(root, fname))
        items.append(ImageLabels(image=image, width=w, height=h, objects=objs, source=path, skipped=skipped))
    known = {i.get("id") for i in images if isinstance(i, dict)}
    orphans = [k for k in by_image if k not in known]
    if orphans:
        errors.append(LabelError(path, "malformed", f"annotations refer to missing image ids {orphans[:5]}"))
    names = list(cmap.names) if cmap is not None else [cats[k] for k in sorted(cats)]
    logger.info("read %d images from %s (%d rejected)", len(items), path, len(errors))
    return LabelSet(items, errors, names)


def _read_ann(a: dict, cats: dict[int, str], cmap, w: int, h: int, skipped: list) -> LabelObject | None:
    cid = int(a["category_id"])
    if cid not in cats:
        raise LabelFormatError("unknown_class", f"category_id {cid} is not among the file's categories {sorted(cats)}")
    name = cats[cid]
    if cmap is not None and name not in cmap:
        raise LabelFormatError("unknown_class", f"category {name!r} not in the class map {list(cmap.names)}")
    obj = LabelObject(name, attrs={"iscrowd": int(a.get("iscrowd", 0))})
    if a.get("bbox") is not None and len(a["bbox"]) == 4:
        obj.box = check_box(coco_to_xyxy(a["bbox"]), w, h)
    seg = a.get("segmentation")
    if isinstance(seg, list) and seg:
        polys = []
        for part, flat in enumerate(seg):
            p = np.asarray(flat, np.float64)
            if p.ndim != 1 or len(p) % 2:
                raise LabelFormatError("malformed", f"polygon must be a flat list of x, y pairs, got shape {p.shape}")
            if len(p) < 6:  # some exporters write points or lines as 1- or 2-point polygons
                reason = f"polygon part {part} has {len(p) // 2} points (3 needed)"
                skipped.append({"annotation": a.get("id"), "label": name, "reason": reason})
                continue
            polys.append(check_edge_polygon(p.reshape(-1, 2), w, h))
        if polys and not (obj.box is not None and len(polys) == 1 and _is_box_rectangle(polys[0], obj.box)):
            obj.mask = coco_polygon_mask(polys, h, w)
    elif isinstance(seg, dict):
        size = [int(v) for v in seg.get("size", [])]
        if size != [h, w]:
            raise LabelFormatError("size_mismatch", f"RLE size {size} differs from the image [height, width] {[h, w]}")
        rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg
        if isinstance(rle.get("counts"), str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        obj.mask = mask_utils.decode(rle).astype(bool)
    if obj.box is None and not obj.polygons and obj.mask is None:
        if skipped and skipped[-1].get("annotation") == a.get("id"):
            return None  # nothing usable left; reported in skipped
        raise LabelFormatError("malformed", "annotation has neither bbox nor segmentation")
    return obj


def check_edge_polygon(poly: np.ndarray, width: int | None, height: int | None) -> np.ndarray:
    """Validate one polygon in pixel edges (COCO, CVAT) against the image; return it as float64.

    Parameters
    ----------
    poly : array-like
        ``(N, 2)`` x, y in pixel edges.
    width, height : int or None
        The image size (None: the bounds are not checked).

    Returns
    -------
    numpy.ndarray
        The polygon, still in pixel edges.

    Raises
    ------
    LabelFormatError
        As :func:`~synthesis.labels.core.check_polygon` does for its pixel centres.
    """
    return check_polygon(np.asarray(poly, np.float64) - EDGE_SHIFT, width, height) + EDGE_SHIFT


def coco_polygon_mask(polygons, height: int, width: int) -> np.ndarray:
    """Pixels of COCO polygons (pixel edges, flat lists or ``(N, 2)``) as pycocotools rasterises them.

    The union of the parts, decoded by ``frPyObjects`` / ``decode`` as
    ``COCO.annToMask`` does; bool ``(height, width)``.
    """
    flat = [[float(v) for v in np.asarray(p, np.float64).ravel()] for p in polygons]
    if not flat:
        return np.zeros((int(height), int(width)), bool)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(flat, int(height), int(width)))).astype(bool)


def _is_box_rectangle(poly: np.ndarray, box) -> bool:
    """True when a polygon (pixel edges) is exactly the 4 corners of ``box``, as written for box-only objects."""
    if len(poly) != 4:
        return False
    x0, y0, x1, y1 = box
    return {(float(x), float(y)) for x, y in poly} == {(x0, y0), (x1, y0), (x1, y1), (x0, y1)}


@writer_doc
def write_coco(
    items: Sequence[ImageLabels],
    out: str | os.PathLike,
    *,
    classes=None,
    segmentation: str = "polygon",
    image_root: str | os.PathLike | None = None,
    holes: bool = True,
    file_name: str | None = None,
) -> WriteResult:
    """Write ``OUT/annotations.json`` (COCO) and ``OUT/classes.json``.

    Parameters
    ----------
    {items_out_classes}
    segmentation : {"polygon", "rle"}
        How masks are written (see the module notes).
    image_root : str or None
        Write ``file_name`` relative to this folder (default: the path as given).
    {holes}
    file_name : str or None
        Write this file in ``out`` instead of ``annotations.json``, with the
        class map beside it as ``<stem>.classes.json`` (``--out x.json``).
    """
    if segmentation not in ("polygon", "rle"):
        raise ValueError(f"segmentation must be 'polygon' or 'rle', got {segmentation!r}")
    out, cmap, res = start_write(out, classes, items)
    images, anns, fallback = [], [], []
    n_poly = 0
    for it in items:
        try:
            w, h = it.size()
            check_exportable(it, cmap)
            image_id = len(images) + 1
            new = [_ann(o, cmap, w, h, segmentation, holes) for o in it.objects]
        except LabelFormatError as err:
            res.skip(it, err)
            continue
        fname = os.path.relpath(it.image, image_root) if image_root is not None else it.image
        images.append({"id": image_id, "file_name": fname, "width": w, "height": h})
        for a in new:
            if a is None:
                continue
            a.update(id=len(anns) + 1, image_id=image_id)
            why = a.pop("_fallback", None)
            if why:
                fallback.append({"image": fname, "annotation_id": a["id"], "reason": why})
            elif segmentation == "polygon" and isinstance(a["segmentation"], list):
                n_poly += 1
            anns.append(a)
        res.images += 1
    data = {
        "info": {"description": "exported by raremine", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [{"id": cmap.coco_id(n), "name": n, "supercategory": "defect"} for n in cmap.names],
    }
    res.files.append(write_json(os.path.join(out, file_name or COCO_FILE), data))
    extra = {
        "segmentation": {
            "written": segmentation,
            "polygon_convention": "pixel edges, checked with pycocotools frPyObjects (annToMask)",
            "polygons_exact": n_poly,
            "rle_fallback": fallback,
        }
    }
    if fallback:
        logger.info("%d objects written as RLE: their polygon would not decode to their mask", len(fallback))
    res.class_map = write_class_map(out, cmap, extra, name=class_map_name(file_name))
    return res


def _ann(obj: LabelObject, cmap, w: int, h: int, segmentation: str, holes: bool) -> dict | None:
    box = object_box(obj, h, w)
    if box is None:
        return None
    box = check_box(box, w, h)
    ann = {
        "category_id": cmap.coco_id(obj.category),
        "bbox": list(xyxy_to_coco(box)),
        "iscrowd": int(obj.attrs.get("iscrowd", 0)),
    }
    if obj.geometry() == "box":
        x0, y0, x1, y1 = box
        ann["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
        ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        return ann
    m = object_mask(obj, h, w)
    if segmentation == "polygon":
        target = m if holes else ndi.binary_fill_holes(m)
        polys = mask_to_edge_polygons(m, holes=holes)
        if polys and all(len(p) >= 3 for p in polys):
            got = coco_polygon_mask(polys, h, w)
            if np.array_equal(got, target):
                ann["segmentation"] = [[float(v) for v in p.ravel()] for p in polys]
                ann["area"] = float(got.sum())
                return ann
            ann["_fallback"] = f"polygon decodes to {int((got != target).sum())} differing pixels"
        else:
            ann["_fallback"] = "no outline of 3 or more vertices"
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    ann["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
    ann["area"] = float(mask_utils.area(rle))
    return ann
