"""Labels made by other tools import with their geometry, and say what they skipped (issue 22).

labelme 3.x, 4.x and 5.x files (embedded ``imageData``, no size fields,
``group_id``, flags, masks, circles, lines), CVAT for images 1.1 XML
(boxes, polygons, masks as RLE, tags, polylines, tracks) and COCO from
other exporters (crowd RLE, multi-part polygons, degenerate parts). Each
imported mask is compared with what the tool itself means: labelme's
``shape_to_mask``, pycocotools' decoder, or masks known independently.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mining.catalogue.index import index_archive
from mining.catalogue.labels import catalogue_labels, import_labels
from mining.catalogue.store import Store
from raremine.cli import app
from synthesis.labels import category_masks, read_labels

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
H, W = 40, 56


@pytest.fixture
def cat(tmp_path):
    """Three grey PNGs a0, a1, a2 (40 x 56) in a catalogue."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(images / f"a{i}.png"), (rng.random((H, W)) * 255).astype(np.uint8))
    store = Store(tmp_path / "cat.db")
    index_archive(store, [str(images)], workers=1)
    yield store, images
    store.close()


def masks_of(store: Store, source: str) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for it in catalogue_labels(store, reviewers=[source]):
        out[Path(it.image).stem] = {c: m for c, m in category_masks(it, it.height, it.width).items() if m.any()}
    return out


def labelme_rule():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from labelme.utils import shape_to_mask
    except Exception as err:  # labelme imports Qt; a machine without it skips, saying why
        pytest.skip(f"labelme cannot be imported here: {type(err).__name__}: {err}")
    return shape_to_mask


def test_labelme_files_from_another_team_3x_to_5x(cat, tmp_path):
    shape_to_mask = labelme_rule()
    store, images = cat
    lm = tmp_path / "team"
    lm.mkdir()
    png = base64.b64encode(cv2.imencode(".png", cv2.imread(str(images / "a0.png")))[1].tobytes()).decode()
    crack = [[5.5, 4.2], [30.7, 6.1], [28.3, 20.9], [7.1, 17.4]]  # fractional, as people click
    v3 = {  # labelme 3.x: no shape_type, no size fields, colours, the image embedded, Windows path
        "version": "3.16.7",
        "flags": {},
        "shapes": [{"label": "crack", "line_color": None, "fill_color": None, "points": crack}],
        "lineColor": [0, 255, 0, 128],
        "fillColor": [255, 0, 0, 128],
        "imagePath": "..\\images\\a0.png",
        "imageData": png,
    }
    part1, part2 = [[2, 25], [10, 25], [10, 33], [2, 33]], [[14, 28], [20, 28], [17, 36]]
    v4 = {  # labelme 4.x: shape_type, group_id (two polygons, one object), flags, a line
        "version": "4.5.13",
        "flags": {"reviewed": True, "pit": True},
        "shapes": [
            {"label": "pit", "points": part1, "group_id": 1, "shape_type": "polygon", "flags": {}},
            {"label": "pit", "points": part2, "group_id": 1, "shape_type": "polygon", "flags": {"deep": True}},
            {"label": "crack", "points": [[40, 5], [50, 30]], "group_id": None, "shape_type": "linestrip", "flags": {}},
            {"label": "crack", "points": [[30, 2], [44, 12]], "group_id": None, "shape_type": "rectangle", "flags": {}},
        ],
        "imagePath": "../images/a1.png",
        "imageData": None,
        "imageHeight": H,
        "imageWidth": W,
    }
    blob = np.zeros((6, 9), np.uint8)
    blob[1:5, 2:8] = 1
    v5 = {  # labelme 5.x: mask shape (crop as base64 PNG between two corner pixels), circle, description
        "version": "5.4.1",
        "flags": {},
        "shapes": [
            {
                "label": "crack",
                "points": [[20, 10], [28, 15]],
                "group_id": None,
                "description": "",
                "shape_type": "mask",
                "flags": {},
                "mask": base64.b64encode(cv2.imencode(".png", blob * 255)[1].tobytes()).decode(),
            },
            {"label": "pit", "points": [[40.3, 25.6], [44.9, 27.1]], "shape_type": "circle", "description": "x"},
        ],
        "imagePath": "a2.png",
        "imageData": None,
        "imageHeight": H,
        "imageWidth": W,
    }
    for name, d in (("a0", v3), ("a1", v4), ("a2", v5)):
        (lm / f"{name}.json").write_text(json.dumps(d))
    s = import_labels(store, "labelme", lm, source="team", classes=["crack", "pit"])
    assert s.images == 3 and not s.errors, s.errors
    why = sorted((Path(p["file"]).stem, p.get("shape_type") or p.get("flag")) for p in s.skipped)
    assert why == [("a1", "linestrip"), ("a1", "reviewed")]  # the line, and the flag not in the class map
    got = masks_of(store, "team")
    # polygons and circles: exactly labelme's own rasteriser
    assert np.array_equal(got["a0"]["crack"], shape_to_mask((H, W), crack, "polygon"))
    pit = shape_to_mask((H, W), part1, "polygon") | shape_to_mask((H, W), part2, "polygon")
    assert np.array_equal(got["a1"]["pit"], pit)
    assert got["a1"]["crack"][2:13, 30:45].all() and got["a1"]["crack"].sum() == 11 * 15  # inclusive corners
    circle = shape_to_mask((H, W), [[40.3, 25.6], [44.9, 27.1]], "circle")
    assert np.array_equal(got["a2"]["pit"], circle)
    want = np.zeros((H, W), bool)
    want[10:16, 20:29] = blob.astype(bool)
    assert np.array_equal(got["a2"]["crack"], want)
    kinds = store.query(
        "SELECT i.path, a.kind FROM annotations a JOIN images i ON i.id = a.image_id WHERE a.category = 'pit'"
    )
    assert sorted(Path(r["path"]).stem for r in kinds) == ["a1", "a2"]  # the group is one object
    labels = {Path(it.image).stem: it.labels for it in catalogue_labels(store, reviewers=["team"])}
    assert set(labels["a1"]) == {"crack", "pit"}  # the image flag 'pit' is in the class map: a label


def _cvat_rle(mask: np.ndarray) -> str:
    """CVAT's mask RLE written independently: row-major runs over the box, from background."""
    flat = mask.ravel().astype(int)
    runs, value, n = [], 0, 0
    for v in flat:
        if v != value:
            runs.append(n)
            value, n = v, 0
        n += 1
    runs.append(n)
    return ", ".join(map(str, runs))


def test_cvat_for_images_xml(cat, tmp_path):
    store, _ = cat
    m = np.zeros((7, 9), bool)
    m[1:6, 2:7] = True
    m[3, 4] = False
    xml = f"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><name>t</name></task></meta>
  <image id="0" name="a0.png" width="{W}" height="{H}">
    <box label="pit" source="manual" occluded="0" xtl="3.00" ytl="4.00" xbr="20.00" ybr="31.00" z_order="0"/>
    <polygon label="crack" source="manual" occluded="1" points="30,5;40,5;40,12;30,12" z_order="0"/>
    <polyline label="crack" source="manual" occluded="0" points="1,1;5,5" z_order="0"/>
  </image>
  <image id="1" name="a1.png" width="{W}" height="{H}">
    <mask label="crack" source="manual" occluded="0" rle="{_cvat_rle(m)}" left="10" top="20" width="9" height="7"/>
    <polygon label="pit" points="2,2;6,2;6,6;2,6" group_id="3"/>
    <polygon label="pit" points="8,2;12,2;12,6;8,6" group_id="3"/>
  </image>
  <image id="2" name="a2.png" width="{W}" height="{H}">
    <tag label="normal" source="manual"/>
  </image>
  <track id="0" label="crack" source="manual"><box frame="0" xtl="1" ytl="1" xbr="3" ybr="3" outside="0"/></track>
</annotations>
"""
    (tmp_path / "annotations.xml").write_text(xml)
    r = CliRunner().invoke(
        app, ["import", str(tmp_path / "annotations.xml"), "--db", store.path, "--format", "cvat", "--source", "cv"]
    )
    assert r.exit_code == 0, r.output
    assert "labels of 3 images" in r.output and "rejected: 0; parts skipped: 2" in r.output
    assert "polyline crack: not an area" in r.output and "CVAT for images" in r.output
    store.con.execute("PRAGMA wal_checkpoint")
    got = masks_of(store, "cv")
    crack = np.zeros((H, W), bool)
    crack[5:12, 30:40] = True  # the outline's pixel edges enclose exactly these pixels
    assert np.array_equal(got["a0"]["crack"], crack)
    want = np.zeros((H, W), bool)
    want[20:27, 10:19] = m
    assert np.array_equal(got["a1"]["crack"], want)
    pit = np.zeros((H, W), bool)
    pit[2:6, 2:6] = pit[2:6, 8:12] = True
    assert np.array_equal(got["a1"]["pit"], pit)
    (it,) = [it for it in read_labels("cvat", tmp_path).items if Path(it.image).name == "a0.png"]
    assert [o.box for o in it.objects if o.category == "pit"] == [(3.0, 4.0, 20.0, 31.0)]
    assert [o.attrs for o in it.objects if o.category == "crack"] == [{"occluded": 1}]
    decided = {Path(i.image).stem: i for i in catalogue_labels(store, reviewers=["cv"])}
    assert decided["a2"].is_negative  # the 'normal' tag


def test_coco_from_other_exporters(cat, tmp_path):
    from pycocotools import mask as mask_utils

    store, _ = cat
    crowd = np.zeros((H, W), np.uint8)
    crowd[30:38, 40:52] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    coco = {
        "images": [
            {"id": 11, "file_name": "a0.png", "width": W, "height": H},
            {"id": 12, "file_name": "sub/a1.png", "width": W, "height": H},
        ],
        "categories": [{"id": 7, "name": "crack"}, {"id": 12, "name": "pit"}],
        "annotations": [
            {  # two parts, pixel-edge rectangles, and a 2-point part some exporters write for a stroke
                "id": 1,
                "image_id": 11,
                "category_id": 7,
                "iscrowd": 0,
                "bbox": [2, 2, 20, 10],
                "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8], [15, 4, 22, 4, 22, 12, 15, 12], [30, 30, 31, 31]],
                "area": 104,
            },
            {
                "id": 2,
                "image_id": 11,
                "category_id": 12,
                "iscrowd": 1,
                "bbox": [40, 30, 12, 8],
                "segmentation": {"size": [H, W], "counts": rle["counts"].decode()},
            },
            {"id": 3, "image_id": 12, "category_id": 12, "iscrowd": 0, "bbox": [5, 5, 4, 4], "segmentation": []},
        ],
    }
    (tmp_path / "other.json").write_text(json.dumps(coco))
    s = import_labels(store, "coco", tmp_path / "other.json", source="ext")
    assert s.images == 2 and not s.errors, s.errors
    assert [p["reason"] for p in s.skipped] == ["polygon part 2 has 2 points (3 needed)"]
    got = masks_of(store, "ext")
    crack = np.zeros((H, W), bool)
    crack[2:8, 2:10] = crack[4:12, 15:22] = True
    assert np.array_equal(got["a0"]["crack"], crack)
    assert np.array_equal(got["a0"]["pit"], crowd.astype(bool))
    assert got["a1"]["pit"].sum() == 16  # a box-only annotation (empty segmentation)
