"""Mask images: one single-channel image per labelled image, named by the image's file stem.

Reading: non-zero pixels are the defect. Without a class map (or with a
single class) every non-zero pixel belongs to that one class (``default``
when no map is given); with a map of several classes each pixel value names
a class (``classes.json`` ``"mask"`` entry or a JSON ``{"value": "name"}``)
and a value outside the map rejects the file (``unknown_class``). Each class
becomes one object holding its mask; an all-zero mask labels the image as
having no defect.

Writing: ``OUT/<stem>.png``, 8-bit (16-bit beyond 255 classes), pixel value
from :meth:`ClassMap.value_map` (255 for a single class, else 1, 2, ...);
where objects overlap the later one wins. ``OUT/classes.json`` states the
values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from synthesis.labels._files import (
    MaskReader,
    WriteResult,
    exportable,
    read_mask_file,
    rejected,
    start_write,
    write_class_map,
    write_png,
)
from synthesis.labels.core import (
    ClassMap,
    ImageLabels,
    LabelError,
    LabelObject,
    LabelSet,
    class_map_from,
    object_mask,
    stem,
)

logger = logging.getLogger(__name__)

MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".npy")


def read_masks(
    folder: str | os.PathLike,
    *,
    classes=None,
    default: str = "defect",
    read: MaskReader | None = None,
    exclude: Sequence[str] = (),
) -> LabelSet:
    """Read a folder of mask images (see the module notes).

    Parameters
    ----------
    folder : str or path-like
        Folder of masks, not searched recursively.
    classes : ClassMap, list, path or None
        Pixel value -> class. None or one class: non-zero is that class.
    default : str
        Class name when no class map is given.
    read : callable or None
        Reads one mask file into an array (default: OpenCV / NumPy).
    exclude : sequence of str
        File names to skip (e.g. ``classes.json`` is skipped anyway).

    Returns
    -------
    LabelSet
        ``image`` of each item is the mask's stem; ``width``/``height`` the
        mask's size.
    """
    folder = os.fspath(folder)
    cmap = class_map_from(classes)
    if cmap is None:
        cmap = ClassMap((default,))
    values = cmap.value_map()
    single = len(cmap) == 1
    read = read or read_mask_file
    items, errors = [], []
    try:
        names = sorted(os.listdir(folder))
    except OSError as err:
        return rejected(folder, f"cannot list the mask folder: {err}")
    for name in names:
        p = os.path.join(folder, name)
        if name in exclude or os.path.splitext(name)[1].lower() not in MASK_EXTENSIONS or not os.path.isfile(p):
            continue
        try:
            arr = np.asarray(read(p))
        except Exception as err:
            errors.append(LabelError(p, "malformed", f"cannot read the mask: {err}", image=stem(p)))
            continue
        if arr.ndim == 3:
            if arr.shape[2] in (3, 4) and (arr[..., :3] == arr[..., :1]).all():
                arr = arr[..., 0]
            elif arr.shape[2] == 1:
                arr = arr[..., 0]
            else:
                errors.append(LabelError(p, "malformed", "colour mask: give one channel", image=stem(p)))
                continue
        if arr.ndim != 2:
            errors.append(LabelError(p, "malformed", f"mask must be 2-D, got shape {arr.shape}", image=stem(p)))
            continue
        h, w = arr.shape
        objects = []
        if single:
            m = arr != 0
            if m.any():
                objects.append(LabelObject(cmap.names[0], mask=m))
        else:
            present = [int(v) for v in np.unique(arr) if v != 0]
            unknown = [v for v in present if v not in values]
            if unknown:
                errors.append(
                    LabelError(
                        p,
                        "unknown_class",
                        f"pixel values {unknown} not in the class map { {k: v for k, v in values.items()} }",
                        image=stem(p),
                    )
                )
                continue
            by_class: dict[str, np.ndarray] = {}
            for v in present:
                n = values[v]
                by_class[n] = by_class[n] | (arr == v) if n in by_class else arr == v
            objects = [LabelObject(n, mask=m) for n, m in by_class.items()]
        items.append(ImageLabels(image=stem(p), width=w, height=h, objects=objects, source=p))
    logger.info("read %d masks from %s (%d rejected)", len(items), folder, len(errors))
    return LabelSet(items, errors, list(cmap.names))


def write_masks(items: Sequence[ImageLabels], out: str | os.PathLike, *, classes=None) -> WriteResult:
    """Write one mask PNG per image (``OUT/<image stem>.png``) and ``OUT/classes.json``.

    Images labelled with a class but no geometry (box, polygon or mask) are
    skipped (``no_geometry``); boxes are filled. Negative images get an
    all-zero mask.
    """
    out, cmap, res = start_write(out, classes, items)
    values = cmap.value_map()
    dtype = np.uint8 if max(values, default=0) <= 255 else np.uint16
    for name, it, w, h in exportable(items, cmap, res, catch=ValueError):
        try:
            arr = np.zeros((h, w), dtype)
            for obj in it.objects:
                arr[object_mask(obj, h, w)] = cmap.mask_value(obj.category)
        except ValueError as err:
            res.skip(it, err)
            continue
        res.files.append(write_png(os.path.join(out, name + ".png"), arr))
        res.images += 1
    res.class_map = write_class_map(out, cmap)
    return res
