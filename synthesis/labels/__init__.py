"""Label formats in and out: CSV tables, class folders, mask images, COCO, YOLO, Pascal VOC, labelme.

Every reader returns a :class:`~synthesis.labels.core.LabelSet` of neutral
:class:`~synthesis.labels.core.ImageLabels` (plus the files it rejected and
why); every writer takes a sequence of them, writes its files atomically and
the class map (``classes.json``) last. Coordinate conventions are defined
once, in :mod:`synthesis.labels.core`.

This package imports nothing from ``mining``: the catalogue side lives in
``mining.catalogue.labels``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from synthesis.labels._files import CLASS_MAP_FILE, WriteResult, resolve_output
from synthesis.labels.coco import read_coco, write_coco
from synthesis.labels.core import (
    REASONS,
    ClassMap,
    ImageLabels,
    LabelError,
    LabelFormatError,
    LabelObject,
    LabelSet,
    box_to_mask,
    category_masks,
    class_map_from,
    coco_to_xyxy,
    load_class_map,
    mask_box,
    mask_to_polygons,
    object_box,
    object_mask,
    polygons_to_mask,
    voc_to_xyxy,
    xyxy_to_coco,
    xyxy_to_voc,
    xyxy_to_yolo,
    yolo_to_xyxy,
)
from synthesis.labels.cvat import read_cvat
from synthesis.labels.labelme import read_labelme, write_labelme
from synthesis.labels.masks import read_masks, write_masks
from synthesis.labels.synth import read_synth
from synthesis.labels.tables import read_csv, read_folders, write_csv, write_folders
from synthesis.labels.voc import read_voc, write_voc
from synthesis.labels.yolo import read_yolo, write_yolo

#: Format names accepted by :func:`read_labels` and :func:`write_labels`.
FORMATS = ("csv", "folders", "masks", "coco", "yolo", "voc", "labelme")

#: Formats that can be read (imported or converted from): every written format, and CVAT for images 1.1 XML.
IMPORT_FORMATS = (*FORMATS, "cvat")

#: Formats that carry geometry (boxes, polygons or masks), not only image-level classes.
GEOMETRY_FORMATS = ("masks", "coco", "yolo", "voc", "labelme")

_READERS = {
    "csv": read_csv,
    "folders": read_folders,
    "masks": read_masks,
    "coco": read_coco,
    "yolo": read_yolo,
    "voc": read_voc,
    "labelme": read_labelme,
    "cvat": read_cvat,
    "synth": read_synth,
}
_WRITERS = {
    "csv": write_csv,
    "folders": write_folders,
    "masks": write_masks,
    "coco": write_coco,
    "yolo": write_yolo,
    "voc": write_voc,
    "labelme": write_labelme,
}


def check_format(fmt: str, allowed: Sequence[str] = FORMATS) -> str:
    """Return ``fmt`` when it is among ``allowed``, else raise ValueError listing them."""
    if fmt not in allowed:
        raise ValueError(f"label format must be one of {', '.join(allowed)}; got {fmt!r}")
    return fmt


def read_labels(fmt: str, path: str | os.PathLike, **options) -> LabelSet:
    """Read labels in format ``fmt`` (or ``"synth"``, a synthesis output folder) from ``path``.

    Options go to that format's reader.
    """
    return _READERS[check_format(fmt, (*IMPORT_FORMATS, "synth"))](path, **options)


def write_labels(fmt: str, items: Sequence[ImageLabels], out: str | os.PathLike, **options) -> WriteResult:
    """Write ``items`` in format ``fmt`` into the folder ``out``; options go to that format's writer.

    ``out`` may name the file of a single-file format (``x.json`` for COCO,
    ``x.csv`` for CSV); a file name for a folder format raises ValueError
    (:func:`~synthesis.labels._files.resolve_output`).
    """
    folder, name = resolve_output(check_format(fmt), out)
    if name is not None:
        options["file_name"] = name
    return _WRITERS[fmt](items, folder, **options)


__all__ = [
    "CLASS_MAP_FILE",
    "FORMATS",
    "GEOMETRY_FORMATS",
    "IMPORT_FORMATS",
    "REASONS",
    "ClassMap",
    "ImageLabels",
    "LabelError",
    "LabelFormatError",
    "LabelObject",
    "LabelSet",
    "WriteResult",
    "box_to_mask",
    "category_masks",
    "check_format",
    "class_map_from",
    "coco_to_xyxy",
    "load_class_map",
    "mask_box",
    "mask_to_polygons",
    "object_box",
    "object_mask",
    "polygons_to_mask",
    "read_coco",
    "read_csv",
    "read_folders",
    "read_labelme",
    "read_labels",
    "read_masks",
    "read_synth",
    "read_voc",
    "read_yolo",
    "voc_to_xyxy",
    "write_coco",
    "write_csv",
    "write_folders",
    "write_labelme",
    "write_labels",
    "write_masks",
    "write_voc",
    "write_yolo",
    "xyxy_to_coco",
    "xyxy_to_voc",
    "xyxy_to_yolo",
    "yolo_to_xyxy",
]
