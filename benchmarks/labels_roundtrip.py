"""Round trips of the magnetic-tile masks through every label format, and how well pycocotools agrees.

Indexes the magnetic-tile images (JPEG) into a scratch catalogue, imports
their masks (``raremine import --format masks``), exports the labels as
COCO (polygons and RLE), YOLO segments, Pascal VOC and labelme, imports each
export back under its own source name and compares the masks with the
original ones, pixel by pixel. Also decodes the exports with each tool's own
decoder and compares with the original masks: the COCO polygon export with
pycocotools (``COCO.annToMask``), the YOLO segments with Ultralytics' rule
(float32, int32 truncation, ``cv2.fillPoly``, as ``polygon2mask``) and the
labelme export with ``labelme.utils.shapes_to_label``; per-mask IoU median and
minimum over the masks with defects.

    .venv/bin/python benchmarks/labels_roundtrip.py [--per-class N] [--out DIR]

Printed per format: images, images whose masks come back identical, pixels
that differ (total and share of the defect pixels), pixels that differ
farther than one pixel from the original boundary (0 is the acceptance
criterion), holes filled, export and import seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rare_data import MAGNETIC_TILE as DATA

from mining.catalogue.index import index_archive
from mining.catalogue.labels import catalogue_labels, export_labels, import_labels
from mining.catalogue.store import Store
from synthesis.labels import ClassMap, category_masks


def off_boundary(ref: np.ndarray, got: np.ndarray) -> int:
    """Pixels where the masks differ that lie more than one pixel from the reference's boundary."""
    r = ref.astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    band = cv2.dilate(r, k).astype(bool) & ~cv2.erode(r, k, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    return int(((ref != got) & ~band).sum())


def row(name: str, decoded: dict, truth: dict, defect_px: int, note: str) -> None:
    """One line of the decoder table: identical images, differing pixels, off-boundary pixels, IoU median / min."""
    same = diff = off = 0
    ious = []
    for stem, got in decoded.items():
        ref = truth[stem]
        d = int((got != ref).sum())
        same += d == 0
        diff += d
        off += off_boundary(ref, got)
        if ref.any():
            ious.append((ref & got).sum() / (ref | got).sum())
    print(
        f"{name:<16}{len(decoded):>7}{same:>10}{diff:>9}{100 * diff / max(defect_px, 1):>7.2f}%{off:>16}"
        f"   IoU median {np.median(ious):.4f} min {np.min(ious):.4f} over {len(ious)} masks {note}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=0, help="images per class folder (0 = all)")
    ap.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"magnetic-tile data not found at {DATA}")
        return 1
    logging.basicConfig(level=logging.ERROR)
    work = Path(args.out or tempfile.mkdtemp(prefix="labels_bench_"))
    imgs, masks = work / "imgs", work / "masks"
    for d in (imgs, masks):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    for cls in sorted(p for p in DATA.iterdir() if p.is_dir()):
        jpgs = sorted((cls / "Imgs").glob("*.jpg"))
        if args.per_class:
            jpgs = jpgs[: args.per_class]
        for p in jpgs:
            os.symlink(p, imgs / p.name)
            os.symlink(p.with_suffix(".png"), masks / (p.stem + ".png"))
    db = work / "bench.db"
    if db.exists():
        db.unlink()
    store = Store(db)
    index_archive(store, [str(imgs)], workers=2)
    t = time.perf_counter()
    s = import_labels(store, "masks", masks, source="truth")
    print(
        f"imported {s.images} mask files ({s.positives} with defects, {s.negatives} empty) in "
        f"{time.perf_counter() - t:.1f}s; rejected {len(s.errors)}"
    )
    truth = {}
    for it in catalogue_labels(store, reviewers=["truth"]):
        truth[Path(it.image).stem] = category_masks(it, it.height, it.width).get(
            "defect", np.zeros((it.height, it.width), bool)
        )
    from scipy import ndimage as ndi

    holes = sum(int((ndi.binary_fill_holes(m) & ~m).sum()) for m in truth.values())
    defect_px = sum(int(m.sum()) for m in truth.values())
    print(f"defect pixels {defect_px}; pixels in holes of the masks {holes}")
    print(
        f"{'format':<16}{'images':>7}{'identical':>10}{'diff px':>9}{'diff %':>8}{'off-boundary px':>16}"
        f"{'export s':>9}{'import s':>9}"
    )
    cases = [
        ("coco", {"segmentation": "polygon"}),
        ("coco", {"segmentation": "rle"}),
        ("yolo", {"task": "segment"}),
        ("voc", {}),
        ("labelme", {}),
        ("masks", {}),
    ]
    for fmt, opts in cases:
        name = fmt + ("-" + next(iter(opts.values())) if opts else "")
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        res = export_labels(store, fmt, out, reviewers=["truth"], **opts)
        t1 = time.perf_counter()
        s2 = import_labels(store, fmt, out, source=f"back-{name}", classes=ClassMap(("defect",)))
        t2 = time.perf_counter()
        assert not s2.errors and not res.skipped, (s2.errors[:3], res.skipped[:3])
        same = diff = off = 0
        for it in catalogue_labels(store, reviewers=[f"back-{name}"]):
            ref = truth[Path(it.image).stem]
            got = category_masks(it, it.height, it.width).get("defect", np.zeros_like(ref))
            d = int((got != ref).sum())
            same += d == 0
            diff += d
            off += off_boundary(ref, got)
        print(
            f"{name:<16}{s2.images:>7}{same:>10}{diff:>9}{100 * diff / max(defect_px, 1):>7.2f}%{off:>16}"
            f"{t1 - t0:>9.1f}{t2 - t1:>9.1f}"
        )
    # each tool's own decoder on the polygon exports, compared with the original masks
    from pycocotools.coco import COCO

    coco = COCO(str(work / "coco-polygon" / "annotations.json"))
    decoded = {}
    for img in coco.loadImgs(coco.getImgIds()):
        ref = truth[Path(img["file_name"]).stem]
        got = np.zeros_like(ref)
        for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            got |= coco.annToMask(a).astype(bool)
        decoded[Path(img["file_name"]).stem] = got
    row("pycocotools", decoded, truth, defect_px, "(pycocotools' own rasterisation of the COCO polygon export)")
    from synthesis.labels.yolo import yolo_segment_mask

    decoded = {}
    for f in sorted((work / "yolo-segment" / "labels").glob("*.txt")):
        h, w = truth[f.stem].shape
        m = np.zeros((h, w), bool)
        for line in f.read_text().splitlines():
            m |= yolo_segment_mask(line.split()[1:], w, h)
        decoded[f.stem] = m
    row("ultralytics", decoded, truth, defect_px, "(Ultralytics' polygon2mask rule on the YOLO segment export)")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from labelme.utils import img_b64_to_arr, shapes_to_label
    except Exception as err:
        print(f"labelme not importable here ({type(err).__name__}); its decoder row is left out")
    else:
        import json

        decoded = {}
        for f in sorted((work / "labelme").glob("*.json")):
            if f.name == "classes.json":
                continue
            d = json.loads(f.read_text())
            for sh in d["shapes"]:  # as labelme's LabelFile loads a mask shape
                if sh["shape_type"] == "mask":
                    sh["mask"] = img_b64_to_arr(sh["mask"]).astype(bool)
            cls, _ = shapes_to_label((d["imageHeight"], d["imageWidth"]), d["shapes"], {"defect": 1})
            decoded[f.stem] = cls == 1
        row("labelme", decoded, truth, defect_px, "(labelme.utils.shapes_to_label on the labelme export)")
    store.close()
    print(f"scratch folder: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
