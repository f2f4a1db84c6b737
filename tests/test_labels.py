"""Label formats (synthesis.labels): coordinate conventions, exact round trips, the formats' own tools, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from synthesis.labels import (
    ClassMap,
    ImageLabels,
    LabelObject,
    category_masks,
    coco_to_xyxy,
    load_class_map,
    mask_box,
    mask_to_polygons,
    object_box,
    object_mask,
    polygons_to_mask,
    read_labels,
    voc_to_xyxy,
    write_labels,
    xyxy_to_coco,
    xyxy_to_voc,
    xyxy_to_yolo,
    yolo_to_xyxy,
)

CLASSES = ClassMap(("crack", "pit"))

# pycocotools 2.0 calls numpy's __array__ the pre-2.0 way; harmless here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def blob(rng: np.random.Generator, shape=(40, 56), thresh=0.62) -> np.ndarray:
    """A smooth random hole-free blob (bool)."""
    for _ in range(20):
        m = ndi.gaussian_filter(rng.random(shape), 2.5) > thresh - rng.random() * 0.1
        m = ndi.binary_fill_holes(m)
        lab, n = ndi.label(m)
        if n:
            sizes = ndi.sum(m, lab, range(1, n + 1))
            return lab == 1 + int(np.argmax(sizes))
    raise AssertionError("no blob")


def within_boundary(ref: np.ndarray, got: np.ndarray, tol: int = 1) -> bool:
    """True when every pixel where the masks differ lies within ``tol`` px of the reference's boundary."""
    ref = ref.astype(np.uint8)
    k = np.ones((2 * tol + 1, 2 * tol + 1), np.uint8)
    inner = cv2.erode(ref, k, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    band = cv2.dilate(ref, k).astype(bool) & ~inner
    return bool(((ref.astype(bool) != got) & ~band).sum() == 0)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> list[ImageLabels]:
    """Six small labelled images (see :func:`make_dataset`)."""
    return make_dataset(tmp_path_factory.mktemp("label_images"))


def make_dataset(root: Path) -> list[ImageLabels]:
    """Six small grey PNGs in ``root``: masks of one or two classes, a box-only object, and one normal image."""
    rng = np.random.default_rng(3)
    items = []
    for i in range(6):
        h, w = 40, 56
        p = root / f"img_{i}.png"
        cv2.imwrite(str(p), (rng.random((h, w)) * 255).astype(np.uint8))
        objs = []
        if i == 0:
            pass  # a normal image
        elif i == 1:
            objs = [LabelObject("crack", mask=blob(rng))]
        elif i == 2:
            a = blob(rng)
            b = blob(rng) & ~ndi.binary_dilation(a, iterations=2)
            b = b if b.any() else np.roll(a, 5, axis=1) & ~a
            objs = [LabelObject("crack", mask=a), LabelObject("pit", mask=b)]
        elif i == 3:
            objs = [LabelObject("pit", box=(3.0, 4.0, 20.0, 31.0))]
        elif i == 4:
            m = np.zeros((h, w), bool)
            m[5, 7] = True  # a single pixel
            m[20:23, 30:50] = True
            objs = [LabelObject("pit", mask=m)]
        else:
            objs = [LabelObject("crack", mask=blob(rng)), LabelObject("crack", box=(0.0, 0.0, 56.0, 40.0))]
        items.append(ImageLabels(image=str(p), width=w, height=h, objects=objs, channels=1))
    return items


def by_stem(items) -> dict[str, ImageLabels]:
    return {Path(it.image).stem: it for it in items}


def class_masks(it: ImageLabels) -> dict[str, np.ndarray]:
    return {c: m for c, m in category_masks(it, it.height, it.width).items() if m.any()}


# -- coordinate conventions ------------------------------------------------------------------------
sizes = st.integers(1, 5000)


@st.composite
def int_boxes(draw):
    w, h = draw(sizes), draw(sizes)
    x0 = draw(st.integers(0, w - 1))
    y0 = draw(st.integers(0, h - 1))
    x1 = draw(st.integers(x0 + 1, w))
    y1 = draw(st.integers(y0 + 1, h))
    return (float(x0), float(y0), float(x1), float(y1)), w, h


@st.composite
def float_boxes(draw):
    w, h = draw(sizes), draw(sizes)
    f = st.floats(0, 1, allow_nan=False)
    xa, xb = sorted([draw(f) * w, draw(f) * w])
    ya, yb = sorted([draw(f) * h, draw(f) * h])
    if xb - xa < 1e-3 or yb - ya < 1e-3:
        xa, xb, ya, yb = 0.0, float(w), 0.0, float(h)
    return (xa, ya, xb, yb), w, h


@settings(max_examples=300, deadline=None)
@given(int_boxes())
def test_yolo_roundtrip_is_exact_for_pixel_boxes(case):
    box, w, h = case
    yolo = xyxy_to_yolo(box, w, h)
    assert all(0 <= v <= 1 for v in yolo)
    assert yolo_to_xyxy(yolo, w, h) == box
    # the text form (shortest exact float repr) reads back to the same numbers
    from synthesis.labels.core import fmt_number

    assert yolo_to_xyxy([float(fmt_number(v)) for v in yolo], w, h) == box


@settings(max_examples=300, deadline=None)
@given(float_boxes())
def test_yolo_roundtrip_float_boxes_within_a_micro_pixel(case):
    box, w, h = case
    back = yolo_to_xyxy(xyxy_to_yolo(box, w, h), w, h)
    assert np.allclose(back, box, atol=2e-6, rtol=0)


@settings(max_examples=300, deadline=None)
@given(float_boxes())
def test_coco_and_voc_conversions_are_inverse(case):
    box, _, _ = case
    x, y, bw, bh = xyxy_to_coco(box)
    assert (x, y) == box[:2] and bw > 0 and bh > 0
    assert np.allclose(coco_to_xyxy((x, y, bw, bh)), box, rtol=0, atol=1e-9)
    assert np.allclose(voc_to_xyxy(xyxy_to_voc(box)), box, rtol=0, atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(int_boxes())
def test_conventions_on_pixel_boxes(case):
    """A box over 0-based columns c0..c1: COCO x=c0, w=c1-c0+1; VOC xmin=c0+1, xmax=c1+1; YOLO centre (c0+c1+1)/2/W."""
    box, w, h = case
    c0, r0, c1, r1 = int(box[0]), int(box[1]), int(box[2]) - 1, int(box[3]) - 1
    assert xyxy_to_coco(box) == (c0, r0, c1 - c0 + 1, r1 - r0 + 1)
    assert xyxy_to_voc(box) == (c0 + 1, r0 + 1, c1 + 1, r1 + 1)
    assert xyxy_to_yolo(box, w, h)[0] == pytest.approx((c0 + c1 + 1) / 2 / w, abs=1e-12)
    assert voc_to_xyxy(xyxy_to_voc(box)) == box and coco_to_xyxy(xyxy_to_coco(box)) == box


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(8, 60), st.integers(8, 60))
def test_mask_box_matches_pixels_and_polygons_refill_exactly(seed, h, w):
    m = blob(np.random.default_rng(seed), (h, w), 0.55)
    rows, cols = np.nonzero(m)
    assert mask_box(m) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    assert np.array_equal(polygons_to_mask(mask_to_polygons(m), h, w), m)  # hole-free masks come back exactly
    box_mask = object_mask(LabelObject("x", box=mask_box(m)), h, w)
    assert mask_box(box_mask) == mask_box(m) and box_mask.sum() == (np.ptp(cols) + 1) * (np.ptp(rows) + 1)


# -- round trips ---------------------------------------------------------------------------------
def _write_read(fmt, items, tmp_path, **opts):
    out = tmp_path / fmt
    res = write_labels(fmt, items, out, classes=CLASSES, **opts)
    read_opts = {"classes": out / "classes.json"}
    ls = read_labels(fmt, out, **read_opts)
    assert not ls.errors, ls.errors
    return res, ls


def test_masks_roundtrip_exact(dataset, tmp_path):
    res, ls = _write_read("masks", dataset, tmp_path)
    assert res.images == len(dataset) and not res.skipped
    got = by_stem(ls.items)
    for it in dataset:
        g = got[Path(it.image).stem]
        ref = class_masks(it)
        assert set(class_masks(g)) == set(ref)
        for c in ref:
            assert np.array_equal(class_masks(g)[c], ref[c])
    cm = json.loads((tmp_path / "masks" / "classes.json").read_text())
    assert cm["mask"] == {"1": "crack", "2": "pit"} and cm["yolo"] == {"0": "crack", "1": "pit"}


@pytest.mark.parametrize(
    "fmt,opts",
    [
        ("coco", {"segmentation": "rle"}),
        ("coco", {"segmentation": "polygon"}),
        ("voc", {}),
        ("labelme", {}),
        ("yolo", {"task": "segment"}),
    ],
)
def test_geometry_roundtrip(dataset, tmp_path, fmt, opts):
    """Boxes identical; masks identical (hole-free masks through polygons come back exactly too)."""
    if fmt == "yolo":  # YOLO finds the image size beside its labels, or from the caller
        out = tmp_path / "yolo"
        write_labels("yolo", dataset, out, classes=CLASSES, **opts)
        sizes_ = {Path(it.image).stem: (it.width, it.height) for it in dataset}
        ls = read_labels("yolo", out, size_of=lambda p: sizes_[Path(p).stem])
        assert not ls.errors
    else:
        _, ls = _write_read(fmt, dataset, tmp_path, **opts)
    got = by_stem(ls.items)
    assert set(got) == {Path(it.image).stem for it in dataset}
    for it in dataset:
        g = got[Path(it.image).stem]
        ref = class_masks(it)
        assert set(class_masks(g)) == set(ref), it.image
        for c in ref:
            assert np.array_equal(class_masks(g)[c], ref[c]), (fmt, it.image, c)
        if fmt != "yolo":  # YOLO segments carry no box; every other format keeps one box per object
            ref_boxes = sorted(object_box(o, it.height, it.width) for o in it.objects)
            assert sorted(object_box(o, g.height, g.width) for o in g.objects) == ref_boxes
    assert by_stem(ls.items)["img_0"].is_negative


def test_yolo_boxes_and_voc_boxes_identical(dataset, tmp_path):
    for fmt in ("yolo", "voc", "coco"):
        write_labels(fmt, dataset, tmp_path / fmt, classes=CLASSES)
    sizes_ = {Path(it.image).stem: (it.width, it.height) for it in dataset}
    ys = read_labels("yolo", tmp_path / "yolo", size_of=lambda p: sizes_[Path(p).stem])
    vs = read_labels("voc", tmp_path / "voc")
    cs = read_labels("coco", tmp_path / "coco")
    for it in dataset:
        s = Path(it.image).stem
        ref = sorted((o.category, object_box(o, it.height, it.width)) for o in it.objects)
        for ls in (ys, vs, cs):
            assert sorted((o.category, object_box(o)) for o in by_stem(ls.items)[s].objects) == ref


def test_yolo_and_voc_agree_after_conversion_both_ways(dataset, tmp_path):
    """VOC -> YOLO -> VOC gives the same XML boxes; YOLO -> VOC -> YOLO the same text."""
    write_labels("voc", dataset, tmp_path / "voc1", classes=CLASSES, masks=False)
    voc1 = read_labels("voc", tmp_path / "voc1", classes=CLASSES)
    write_labels("yolo", voc1.items, tmp_path / "yolo1", classes=CLASSES)
    sizes_ = {Path(it.image).stem: (it.width, it.height) for it in dataset}
    yolo1 = read_labels("yolo", tmp_path / "yolo1", size_of=lambda p: sizes_[Path(p).stem])
    write_labels("voc", yolo1.items, tmp_path / "voc2", classes=CLASSES, masks=False)
    for f in sorted(os.listdir(tmp_path / "voc1" / "Annotations")):
        a = (tmp_path / "voc1" / "Annotations" / f).read_text()
        b = (tmp_path / "voc2" / "Annotations" / f).read_text()
        assert a.split("<object>")[1:] == b.split("<object>")[1:], f
    write_labels("yolo", read_labels("voc", tmp_path / "voc2").items, tmp_path / "yolo2", classes=CLASSES)
    for f in sorted(os.listdir(tmp_path / "yolo1" / "labels")):
        assert (tmp_path / "yolo1" / "labels" / f).read_text() == (tmp_path / "yolo2" / "labels" / f).read_text()


def test_voc_xml_uses_one_based_inclusive_corners(dataset, tmp_path):
    write_labels("voc", dataset, tmp_path, classes=CLASSES)
    xml = (tmp_path / "Annotations" / "img_3.xml").read_text()  # box (3, 4, 20, 31) in pixel edges
    assert "<xmin>4</xmin>" in xml and "<ymin>5</ymin>" in xml and "<xmax>20</xmax>" in xml and "<ymax>31</ymax>" in xml
    line = (Path(write_labels("yolo", dataset, tmp_path / "y", classes=CLASSES).files[3]).read_text()).split()
    assert line[0] == "1" and [float(v) for v in line[1:]] == pytest.approx([11.5 / 56, 17.5 / 40, 17 / 56, 27 / 40])


def test_csv_and_folders_roundtrip(dataset, tmp_path):
    items = [ImageLabels(it.image, labels=it.categories()) for it in dataset]
    items[1].labels = ["crack", "pit"]  # multi-label
    write_labels("csv", items, tmp_path / "csv", classes=CLASSES)
    got = read_labels("csv", tmp_path / "csv" / "labels.csv", classes=CLASSES)
    assert [(it.image, it.labels) for it in got.items] == [(it.image, it.labels) for it in items]
    # the one-hot columns alone carry the same labels
    text = (tmp_path / "csv" / "labels.csv").read_text().splitlines()
    onehot = ["path,crack,pit"] + [",".join([r.split(",")[0], *r.split(",")[2:]]) for r in text[1:]]
    (tmp_path / "onehot.csv").write_text("\n".join(onehot) + "\n")
    got2 = read_labels("csv", tmp_path / "onehot.csv")
    assert [sorted(it.labels) for it in got2.items] == [sorted(it.labels) for it in items]
    res = write_labels("folders", items, tmp_path / "folders", classes=CLASSES)
    assert res.images == len(items)
    got3 = read_labels("folders", tmp_path / "folders", classes=[*CLASSES.names, "normal"])
    labels: dict[str, set] = {}
    for it in got3.items:
        labels.setdefault(Path(it.image).name, set()).update(it.labels)
    assert labels == {Path(it.image).name: set(it.labels) or {"normal"} for it in items}


# -- the formats' own tools ----------------------------------------------------------------------
def test_pycocotools_loads_export_and_areas_masks_match(dataset, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    for seg in ("rle", "polygon"):
        out = tmp_path / seg
        write_labels("coco", dataset, out, classes=CLASSES, segmentation=seg)
        coco = COCO(str(out / "annotations.json"))
        assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["crack", "pit"]
        ours = by_stem(dataset)
        n = 0
        for img in coco.loadImgs(coco.getImgIds()):
            it = ours[Path(img["file_name"]).stem]
            objs = [o for o in it.objects]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert len(anns) == len(objs)
            for a, o in zip(anns, objs, strict=True):
                assert coco_to_xyxy(a["bbox"]) == object_box(o, it.height, it.width)
                m = coco.annToMask(a).astype(bool)
                assert m.sum() == a["area"]  # area is what pycocotools decodes
                ref = object_mask(o, it.height, it.width)
                if o.geometry() == "box":  # written as its 4 corners: exactly the box's pixels
                    assert a["area"] == a["bbox"][2] * a["bbox"][3] and np.array_equal(m, ref)
                    continue
                # RLE, and polygons along the pixel edges, decode to exactly the mask (issue 22)
                assert np.array_equal(m, ref) and a["area"] == ref.sum(), (seg, img["file_name"], a["id"])
                n += 1
        assert n >= 5
        # COCO's own evaluation accepts the file: the annotations scored against themselves give AP 1
        for iou_type in ("bbox", "segm"):
            dt = coco.loadRes([dict(a, score=1.0) for a in coco.dataset["annotations"]])
            ev = COCOeval(coco, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            assert ev.stats[0] == pytest.approx(1.0), (seg, iou_type)


def _labelme_loader():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from labelme import LabelFile
        from labelme.utils import shape_to_mask
    except Exception as err:  # labelme imports Qt; a machine without it skips, saying why
        pytest.skip(f"labelme cannot be imported here: {type(err).__name__}: {err}")
    return LabelFile, shape_to_mask


def test_labelme_export_opens_with_labelme(dataset, tmp_path):
    LabelFile, shape_to_mask = _labelme_loader()
    write_labels("labelme", dataset, tmp_path, classes=CLASSES)
    ours = by_stem(dataset)
    for f in sorted(tmp_path.glob("img_*.json")):
        lf = LabelFile(str(f))  # reads the image through imagePath and checks its size
        it = ours[f.stem]
        assert lf.image_data and len(lf.shapes) >= len(it.objects)
        # labelme's own rasteriser gives our masks back
        got: dict[str, np.ndarray] = {}
        for s in lf.shapes:
            m = shape_to_mask((it.height, it.width), s["points"], shape_type=s["shape_type"])
            got[s["label"]] = got.get(s["label"], np.zeros_like(m)) | m
        ref = class_masks(it)
        for c, m in ref.items():
            box_objs = [o for o in it.objects if o.category == c and o.geometry() == "box"]
            if box_objs:
                continue
            assert within_boundary(m, got[c]), (f.name, c)


def test_labelme_schema_fields(dataset, tmp_path):
    """The fields labelme's loader requires, checked without labelme (always runs)."""
    write_labels("labelme", dataset, tmp_path, classes=CLASSES)
    data = json.loads((tmp_path / "img_2.json").read_text())
    assert set(data) >= {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"}
    assert (tmp_path / data["imagePath"]).resolve() == Path(dataset[2].image).resolve()
    for s in data["shapes"]:
        assert isinstance(s["label"], str) and s["shape_type"] in ("polygon", "rectangle")
        assert all(isinstance(p, list) and len(p) == 2 for p in s["points"]) and len(s["points"]) >= 2
        assert isinstance(s["flags"], dict) and (s["group_id"] is None or isinstance(s["group_id"], int))


# -- bad input -----------------------------------------------------------------------------------
def test_bad_files_are_rejected_one_by_one_with_reasons(dataset, tmp_path):
    write_labels("voc", dataset, tmp_path / "voc", classes=CLASSES)
    ann = tmp_path / "voc" / "Annotations"
    (ann / "img_1.xml").write_text("<annotation><filename>img_1.png</filename><size>")  # malformed
    xml = (ann / "img_3.xml").read_text()
    (ann / "img_3.xml").write_text(xml.replace("<xmax>20</xmax>", "<xmax>99</xmax>"))  # outside the 56 px image
    (ann / "img_4.xml").write_text((ann / "img_4.xml").read_text().replace("<name>pit</name>", "<name>dent</name>"))
    ls = read_labels("voc", tmp_path / "voc", classes=CLASSES)
    reasons = {Path(e.file).stem: e.reason for e in ls.errors}
    assert reasons == {"img_1": "malformed", "img_3": "out_of_bounds", "img_4": "unknown_class"}
    assert sorted(Path(it.source).stem for it in ls.items) == ["img_0", "img_2", "img_5"]

    write_labels("yolo", dataset, tmp_path / "yolo", classes=CLASSES)
    lab = tmp_path / "yolo" / "labels"
    (lab / "img_1.txt").write_text("0 0.5 0.5 0.2\n")
    (lab / "img_2.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    (lab / "img_3.txt").write_text("1 0.95 0.5 0.2 0.2\n")
    ls = read_labels("yolo", tmp_path / "yolo", size_of=lambda p: (56, 40))
    reasons = {Path(e.file).stem: e.reason for e in ls.errors}
    assert reasons == {"img_1": "malformed", "img_2": "unknown_class", "img_3": "out_of_bounds"}
    assert len(ls.items) == len(dataset) - 3

    write_labels("coco", dataset, tmp_path / "coco", classes=CLASSES)
    (tmp_path / "bad.json").write_text('{"images": [')
    assert read_labels("coco", tmp_path / "bad.json").errors[0].reason == "malformed"
    write_labels("labelme", dataset, tmp_path / "lm", classes=CLASSES)
    (tmp_path / "lm" / "img_1.json").write_text("{not json")
    ls = read_labels("labelme", tmp_path / "lm", classes=CLASSES)
    assert [(Path(e.file).name, e.reason) for e in ls.errors] == [("img_1.json", "malformed")]
    assert len(ls.items) == len(dataset) - 1


def test_masks_with_a_class_map_of_pixel_values(tmp_path):
    m = np.zeros((10, 12), np.uint8)
    m[1:3, 1:4] = 1
    m[5:8, 6:9] = 2
    cv2.imwrite(str(tmp_path / "a.png"), m)
    m2 = m.copy()
    m2[0, 0] = 9
    cv2.imwrite(str(tmp_path / "b.png"), m2)
    (tmp_path / "map.json").write_text(json.dumps({"1": "crack", "2": "pit"}))
    ls = read_labels("masks", tmp_path, classes=load_class_map(tmp_path / "map.json"), exclude=("map.json",))
    assert [(e.image, e.reason) for e in ls.errors] == [("b", "unknown_class")]
    (a,) = ls.items
    assert {o.category: int(o.mask.sum()) for o in a.objects} == {"crack": 6, "pit": 9}
    binary = read_labels("masks", tmp_path)  # no map: non-zero is one class
    assert {it.image: [o.category for o in it.objects] for it in binary.items} == {"a": ["defect"], "b": ["defect"]}


def test_writers_leave_no_temporary_files_and_write_the_class_map_last(dataset, tmp_path, monkeypatch):
    import synthesis.labels.coco as coco_mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(coco_mod, "write_json", boom)
    with pytest.raises(OSError):
        write_labels("coco", dataset, tmp_path, classes=CLASSES)
    assert not (tmp_path / "classes.json").exists()
    monkeypatch.undo()
    write_labels("coco", dataset, tmp_path, classes=CLASSES)
    assert sorted(os.listdir(tmp_path)) == ["annotations.json", "classes.json"]


def test_foreign_files_uncompressed_rle_and_edge_touching_segments(tmp_path):
    """COCO crowd annotations (uncompressed RLE) and YOLO segments touching the right edge (x = 1.0) are read."""
    from pycocotools import mask as mask_utils

    m = np.zeros((6, 8), bool)
    m[1:4, 2:8] = True
    counts, prev, run = [], False, 0
    for v in m.ravel(order="F"):  # column-major runs, starting with zeros
        if v != prev:
            counts.append(run)
            prev, run = v, 0
        run += 1
    counts.append(run)
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "width": 8, "height": 6}],
        "categories": [{"id": 3, "name": "stain"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 3,
                "iscrowd": 1,
                "bbox": [2, 1, 6, 3],
                "segmentation": {"size": [6, 8], "counts": counts},
            }
        ],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    (it,) = read_labels("coco", tmp_path / "c.json").items
    assert np.array_equal(it.objects[0].mask, m) and it.objects[0].attrs == {"iscrowd": 1}
    assert mask_utils.area(mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))) == m.sum()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.25 0.1 1.0 0.1 1.0 0.9 0.25 0.9\n")
    (tmp_path / "classes.txt").write_text("stain\n")
    ls = read_labels("yolo", tmp_path, size_of=lambda p: (8, 6))
    assert not ls.errors
    poly = ls.items[0].objects[0].polygons[0]
    # segments are in pixel edges: x = 1.0 is the right edge, half a pixel right of the last centre (7)
    assert poly.max(axis=0).tolist() == [7.5, 4.9]
    assert polygons_to_mask([poly], 6, 8)[:, 7].any()


def test_holes_survive_polygon_formats(tmp_path):
    """A part with holes (and an island in a hole) comes back exactly through COCO polygons, YOLO segments, labelme."""
    from pycocotools.coco import COCO

    m = np.zeros((40, 50), bool)
    m[4:36, 5:45] = True
    m[10:30, 12:38] = False  # a big hole
    m[15:25, 20:30] = True  # an island inside it
    m[6:8, 40:42] = False  # a small hole near the edge
    rng = np.random.default_rng(5)
    p = tmp_path / "ring.png"
    cv2.imwrite(str(p), (rng.random((40, 50)) * 255).astype(np.uint8))
    items = [ImageLabels(str(p), width=50, height=40, objects=[LabelObject("crack", mask=m)])]
    hole = ndi.binary_fill_holes(m) & ~m
    for fmt, opts in (("coco", {}), ("yolo", {"task": "segment"}), ("labelme", {})):
        write_labels(fmt, items, tmp_path / fmt, classes=CLASSES, **opts)
        ls = read_labels(
            fmt, tmp_path / fmt, classes=CLASSES, **({"size_of": lambda _: (50, 40)} if fmt == "yolo" else {})
        )
        got = category_masks(ls.items[0], 40, 50)["crack"]
        assert np.array_equal(got, m), (fmt, int((got != m).sum()))
        write_labels(fmt, items, tmp_path / f"{fmt}-plain", classes=CLASSES, holes=False, **opts)
        ls = read_labels(
            fmt,
            tmp_path / f"{fmt}-plain",
            classes=CLASSES,
            **({"size_of": lambda _: (50, 40)} if fmt == "yolo" else {}),
        )
        assert category_masks(ls.items[0], 40, 50)["crack"][hole].all()  # outer outlines only: holes filled
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    (ann,) = coco.loadAnns(coco.getAnnIds())
    decoded = coco.annToMask(ann).astype(bool)
    assert within_boundary(m, decoded) and not decoded[12:14, 14:18].any()  # pycocotools keeps the hole
    LabelFile, shape_to_mask = _labelme_loader()
    lf = LabelFile(str(tmp_path / "labelme" / "ring.json"))
    pil = np.zeros_like(m)
    for s in lf.shapes:
        pil |= shape_to_mask((40, 50), s["points"], shape_type=s["shape_type"])
    assert within_boundary(m, pil) and not pil[12:14, 14:18].any()  # so does labelme
