"""Pascal VOC: ``Annotations/<stem>.xml`` boxes, with ``SegmentationObject`` / ``SegmentationClass`` masks.

Boxes (``<bndbox>``) are 1-based inclusive pixel indices, as in the VOC
devkit: a box over 0-based columns ``c0..c1`` has ``xmin = c0 + 1`` and
``xmax = c1 + 1`` (:func:`~synthesis.labels.core.xyxy_to_voc`). Readers
that treat VOC as 0-based (some labelImg files hold ``xmin = 0``) are met
half way: ``xmin``/``ymin`` of 0 are read as 1 (logged), anything further
outside the image is ``out_of_bounds``.

Masks follow the VOC segmentation layout: ``SegmentationObject/<stem>.png``
(palette PNG; value ``i`` is the ``i``-th ``<object>`` of the XML, 0
background, 255 "void" ignored) and ``SegmentationClass/<stem>.png`` (value
= class index + 1). Where objects overlap the later one wins.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from synthesis.atomic import atomic_write
from synthesis.labels._files import (
    WriteResult,
    exportable,
    find_image,
    read_files,
    start_write,
    write_class_map,
    write_text,
    writer_doc,
)
from synthesis.labels.core import (
    ImageLabels,
    LabelFormatError,
    LabelObject,
    LabelSet,
    check_box,
    fmt_number,
    object_box,
    object_mask,
    stem,
    voc_to_xyxy,
    xyxy_to_voc,
)

logger = logging.getLogger(__name__)

VOID = 255


def voc_palette() -> list[int]:
    """The standard VOC colour map (256 RGB entries, flattened), as the devkit's ``labelcolormap``."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def read_voc(folder: str | os.PathLike, *, classes=None) -> LabelSet:
    """Read Pascal VOC XML annotations, and instance masks when ``SegmentationObject/`` holds them.

    Parameters
    ----------
    folder : str or path-like
        A VOC folder (with ``Annotations/``), a folder of XML files, or one
        XML file.
    classes : ClassMap, list, path or None
        When given, an object class outside it rejects that file.

    Returns
    -------
    LabelSet
        ``image`` is the XML's ``<path>`` when it exists, else
        ``JPEGImages/<filename>`` beside the annotations, else the filename.
    """
    folder = os.fspath(folder)
    if os.path.isfile(folder):
        files, root = [folder], os.path.dirname(os.path.dirname(os.path.abspath(folder)))
    else:
        ann = os.path.join(folder, "Annotations")
        xml_dir = ann if os.path.isdir(ann) else folder
        root = folder
        files = [os.path.join(xml_dir, f) for f in sorted(os.listdir(xml_dir)) if f.lower().endswith(".xml")]
    read_one = functools.partial(_read_one, root=root)
    result = read_files(files, read_one, classes, malformed=(ET.ParseError, OSError, ValueError, TypeError))
    logger.info("read %d VOC files from %s (%d rejected)", len(result.items), folder, len(result.errors))
    return result


def _text(el, tag: str, required: bool = True) -> str | None:
    node = el.find(tag)
    if node is None or node.text is None or not node.text.strip():
        if required:
            raise LabelFormatError("malformed", f"missing <{tag}>")
        return None
    return node.text.strip()


def _read_one(path: str, cmap, root: str) -> ImageLabels:
    tree = ET.parse(path)
    ann = tree.getroot()
    if ann.tag != "annotation":
        raise LabelFormatError("malformed", f"root element is <{ann.tag}>, expected <annotation>")
    fname = _text(ann, "filename")
    size = ann.find("size")
    if size is None:
        raise LabelFormatError("malformed", "missing <size>")
    w, h = int(float(_text(size, "width"))), int(float(_text(size, "height")))
    depth = _text(size, "depth", required=False)
    objs = []
    for ob in ann.findall("object"):
        name = _text(ob, "name")
        if cmap is not None and name not in cmap:
            raise LabelFormatError("unknown_class", f"class {name!r} not in the class map {list(cmap.names)}")
        bb = ob.find("bndbox")
        if bb is None:
            raise LabelFormatError("malformed", f"object {name!r} has no <bndbox>")
        voc = [float(_text(bb, t)) for t in ("xmin", "ymin", "xmax", "ymax")]
        for i in (0, 1):
            if voc[i] == 0:
                logger.debug("%s: %s = 0 read as 1 (0-based VOC writer)", path, ("xmin", "ymin")[i])
                voc[i] = 1.0
        attrs = {}
        for t in ("difficult", "truncated", "occluded"):
            v = _text(ob, t, required=False)
            if v is not None:
                attrs[t] = int(float(v))
        pose = _text(ob, "pose", required=False)
        if pose and pose != "Unspecified":
            attrs["pose"] = pose
        objs.append(LabelObject(name, box=check_box(voc_to_xyxy(voc), w, h), attrs=attrs))
    base = os.path.dirname(os.path.abspath(path))
    voc_root = os.path.dirname(base) if os.path.basename(base) == "Annotations" else base
    seg_path = find_image(os.path.join(voc_root, "SegmentationObject"), stem(path))
    if seg_path is not None and objs:
        _attach_masks(seg_path, objs, w, h)
    img_path = _text(ann, "path", required=False)
    if img_path and os.path.isabs(img_path):
        image = img_path
    else:
        jpeg = os.path.join(voc_root, "JPEGImages", fname)
        image = jpeg if os.path.exists(jpeg) else (os.path.join(voc_root, img_path) if img_path else fname)
    return ImageLabels(
        image=image,
        width=w,
        height=h,
        objects=objs,
        source=path,
        channels=int(depth) if depth and depth.isdigit() else None,
    )


def _attach_masks(seg_path: str, objs: list[LabelObject], w: int, h: int) -> None:
    from PIL import Image

    with Image.open(seg_path) as im:
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise LabelFormatError("malformed", f"{seg_path}: SegmentationObject must be a palette (index) PNG")
    if arr.shape != (h, w):
        raise LabelFormatError("size_mismatch", f"{seg_path} is {arr.shape[1]}x{arr.shape[0]}, the XML says {w}x{h}")
    present = {int(v) for v in np.unique(arr)} - {0, VOID}
    if present and max(present) > len(objs):
        raise LabelFormatError("malformed", f"{seg_path} has instance {max(present)}, the XML {len(objs)} objects")
    for i, obj in enumerate(objs, 1):
        if i in present:
            obj.mask = arr == i


@writer_doc
def write_voc(
    items: Sequence[ImageLabels],
    out: str | os.PathLike,
    *,
    classes=None,
    masks: bool = True,
) -> WriteResult:
    """Write ``OUT/Annotations/<stem>.xml`` (+ segmentation PNGs), ``OUT/classes.txt`` and ``OUT/classes.json``.

    Parameters
    ----------
    {items}
    out : str or path-like
        A VOC-style folder.
    {classes}
    masks : bool
        Also write ``SegmentationObject`` and ``SegmentationClass`` PNGs for
        images with mask or polygon objects.
    """
    from PIL import Image

    out, cmap, res = start_write(out, classes, items)
    if len(cmap) >= VOID:
        raise ValueError(f"VOC segmentation PNGs hold at most {VOID - 1} classes, the map has {len(cmap)}")
    palette = voc_palette()
    for name, it, w, h in exportable(items, cmap, res):
        try:
            if len(it.objects) >= VOID:
                raise LabelFormatError("malformed", f"{len(it.objects)} objects; VOC instance PNGs hold at most 254")
            xml, inst, cls = _build(it, name, cmap, w, h, masks)
        except LabelFormatError as err:
            res.skip(it, err)
            continue
        if inst is not None:
            for sub, arr in (("SegmentationObject", inst), ("SegmentationClass", cls)):
                im = Image.fromarray(arr, mode="P")
                im.putpalette(palette)
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                target = os.path.join(out, sub, name + ".png")
                with atomic_write(target, "wb") as fh:
                    fh.write(buf.getvalue())
                res.files.append(target)
        res.files.append(write_text(os.path.join(out, "Annotations", name + ".xml"), xml))
        res.images += 1
    write_text(os.path.join(out, "classes.txt"), "".join(n + "\n" for n in cmap.names))
    res.class_map = write_class_map(out, cmap)
    return res


def _build(it: ImageLabels, name: str, cmap, w: int, h: int, masks: bool):
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = os.path.basename(os.path.dirname(os.path.abspath(it.image)))
    ET.SubElement(ann, "filename").text = os.path.basename(it.image)
    ET.SubElement(ann, "path").text = os.path.abspath(it.image) if os.path.sep in it.image else it.image
    src = ET.SubElement(ann, "source")
    ET.SubElement(src, "database").text = "raremine"
    size = ET.SubElement(ann, "size")
    ET.SubElement(size, "width").text = str(w)
    ET.SubElement(size, "height").text = str(h)
    ET.SubElement(size, "depth").text = str(it.channels or 1)
    has_masks = masks and any(o.geometry() in ("mask", "polygon") for o in it.objects)
    ET.SubElement(ann, "segmented").text = "1" if has_masks else "0"
    inst = np.zeros((h, w), np.uint8) if has_masks else None
    cls = np.zeros((h, w), np.uint8) if has_masks else None
    k = 0
    for obj in it.objects:
        box = object_box(obj, h, w)
        if box is None:
            continue
        box = check_box(box, w, h)
        k += 1
        ob = ET.SubElement(ann, "object")
        ET.SubElement(ob, "name").text = obj.category
        ET.SubElement(ob, "pose").text = str(obj.attrs.get("pose", "Unspecified"))
        ET.SubElement(ob, "truncated").text = str(int(obj.attrs.get("truncated", 0)))
        ET.SubElement(ob, "difficult").text = str(int(obj.attrs.get("difficult", 0)))
        bb = ET.SubElement(ob, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), xyxy_to_voc(box), strict=True):
            ET.SubElement(bb, tag).text = fmt_number(v)
        if has_masks and obj.geometry() in ("mask", "polygon"):
            m = object_mask(obj, h, w)
            inst[m] = k
            cls[m] = cmap.yolo_id(obj.category) + 1
    ET.indent(ann)
    return ET.tostring(ann, encoding="unicode") + "\n", inst, cls
