"""Exported polygons decoded by each tool's own decoder give the masks back (issue 22).

COCO polygons through pycocotools (``COCO.annToMask``), YOLO segments
through Ultralytics' rasterisation (``polygon2mask`` after
``resample_segments``, reproduced below from its source: Ultralytics is not
a dependency) and labelme through ``labelme.utils.shape_to_mask``; on real
Blowhole masks when the development data is present, on synthetic masks
always. Each decoded mask is compared with the original mask, never with
the export itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from synthesis.labels import ClassMap, ImageLabels, LabelObject, write_labels
from tests.conftest import MAGNETIC_TILE, requires_magnetic_tile

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
CLASSES = ClassMap(("defect",))


# -- the tools' own decoders ------------------------------------------------------------------------
def coco_decode(out: Path) -> dict[str, np.ndarray]:
    from pycocotools.coco import COCO

    coco = COCO(str(out / "annotations.json"))
    got = {}
    for img in coco.loadImgs(coco.getImgIds()):
        m = np.zeros((img["height"], img["width"]), bool)
        for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            m |= coco.annToMask(a).astype(bool)
        got[Path(img["file_name"]).stem] = m
    return got


def ultralytics_resample_segments(segments, n=1000):
    """As ``ultralytics.utils.ops.resample_segments``: n points along each closed segment (float32)."""
    for i, s in enumerate(segments):
        s = np.concatenate((s, s[0:1, :]), axis=0)
        x = np.linspace(0, len(s) - 1, n)
        xp = np.arange(len(s))
        segments[i] = np.concatenate([np.interp(x, xp, s[:, i]) for i in range(2)], dtype=np.float32).reshape(2, -1).T
    return segments


def ultralytics_polygon2mask(imgsz, polygons, color=1):
    """As ``ultralytics.data.utils.polygon2mask`` at full resolution: int32 truncation and ``cv2.fillPoly``."""
    mask = np.zeros(imgsz, dtype=np.uint8)
    polygons = np.asarray(polygons, dtype=np.int32)
    polygons = polygons.reshape((polygons.shape[0], -1, 2))
    cv2.fillPoly(mask, polygons, color=color)
    return mask


def yolo_decode(out: Path, sizes: dict[str, tuple[int, int]], resample: bool) -> dict[str, np.ndarray]:
    """Ultralytics' path: label text parsed as float32, scaled by (w, h), optionally resampled, rasterised."""
    got = {}
    for f in sorted((out / "labels").glob("*.txt")):
        w, h = sizes[f.stem]
        m = np.zeros((h, w), bool)
        for line in f.read_text().splitlines():
            seg = np.array(line.split()[1:], dtype=np.float32).reshape(-1, 2) * np.array([w, h], np.float32)
            segs = ultralytics_resample_segments([seg]) if resample else [seg]
            m |= ultralytics_polygon2mask((h, w), [segs[0].reshape(-1)]).astype(bool)
        got[f.stem] = m
    return got


def labelme_decode(out: Path) -> dict[str, np.ndarray]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from labelme.utils import shape_to_mask
    except Exception as err:  # labelme imports Qt; a machine without it skips, saying why
        pytest.skip(f"labelme cannot be imported here: {type(err).__name__}: {err}")
    got = {}
    for f in sorted(out.glob("*.json")):
        if f.name == "classes.json":
            continue
        d = json.loads(f.read_text())
        m = np.zeros((d["imageHeight"], d["imageWidth"]), bool)
        for s in d["shapes"]:
            assert s["shape_type"] == "polygon", s["shape_type"]  # no mask fallback needed for these masks
            m |= shape_to_mask(m.shape, s["points"], shape_type=s["shape_type"])
        got[f.stem] = m
    return got


def ious(truth: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> np.ndarray:
    assert set(got) == set(truth)
    return np.array([(truth[k] & got[k]).sum() / max((truth[k] | got[k]).sum(), 1) for k in sorted(truth)])


def check_all_tools(items: list[ImageLabels], truth: dict[str, np.ndarray], tmp_path: Path) -> dict[str, np.ndarray]:
    sizes = {k: (m.shape[1], m.shape[0]) for k, m in truth.items()}
    write_labels("coco", items, tmp_path / "coco", classes=CLASSES, segmentation="polygon")
    write_labels("yolo", items, tmp_path / "yolo", classes=CLASSES, task="segment")
    write_labels("labelme", items, tmp_path / "labelme", classes=CLASSES)
    res = {
        "coco": ious(truth, coco_decode(tmp_path / "coco")),
        "yolo": ious(truth, yolo_decode(tmp_path / "yolo", sizes, resample=False)),
        "yolo-resampled": ious(truth, yolo_decode(tmp_path / "yolo", sizes, resample=True)),
        "labelme": ious(truth, labelme_decode(tmp_path / "labelme")),
    }
    cm = json.loads((tmp_path / "coco" / "classes.json").read_text())
    assert cm["segmentation"]["written"] == "polygon" and cm["segmentation"]["rle_fallback"] == []
    assert json.loads((tmp_path / "yolo" / "classes.json").read_text())["segments"]["inexact"] == []
    assert json.loads((tmp_path / "labelme" / "classes.json").read_text())["shapes"]["mask_fallback"] == []
    return res


# -- synthetic masks (always) ---------------------------------------------------------------------
def synthetic(tmp_path: Path) -> tuple[list[ImageLabels], dict[str, np.ndarray]]:
    """Small awkward masks: single pixels, diagonal chains, a ring with an island, a 1-px line, two parts."""
    h, w = 24, 30
    masks = {}
    m = np.zeros((h, w), bool)
    m[3, 4] = m[10, 20] = True
    masks["pixels"] = m
    m = np.zeros((h, w), bool)
    for i in range(12):
        m[2 + i, 3 + i] = True  # 8-connected diagonal
    masks["diagonal"] = m
    m = np.zeros((h, w), bool)
    m[2:22, 2:28] = True
    m[6:18, 8:22] = False
    m[10:14, 12:16] = True
    masks["ring"] = m
    m = np.zeros((h, w), bool)
    m[12, 1:29] = True
    m[0:3, 27:30] = True  # touching the image corner
    masks["line"] = m
    items = []
    for k, m in masks.items():
        p = tmp_path / f"{k}.png"
        cv2.imwrite(str(p), np.zeros((h, w), np.uint8))
        items.append(ImageLabels(str(p), width=w, height=h, objects=[LabelObject("defect", mask=m)]))
    return items, masks


def test_awkward_masks_come_back_exactly_through_each_tools_decoder(tmp_path):
    items, truth = synthetic(tmp_path)
    res = check_all_tools(items, truth, tmp_path)
    for tool in ("coco", "labelme", "yolo", "yolo-resampled"):
        assert res[tool].min() == 1.0, (tool, dict(zip(sorted(truth), res[tool], strict=True)))


def test_old_centre_outline_loses_pixels_in_pycocotools(tmp_path):
    """The check is sharp: the pixel-centre outline written before issue 22 shrinks masks in pycocotools."""
    from pycocotools import mask as mask_utils

    from synthesis.labels.core import mask_to_polygons

    _, truth = synthetic(tmp_path)
    m = truth["ring"]
    flat = [list((p + 0.5).ravel()) for p in mask_to_polygons(m, holes=True)]
    old = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(flat, *m.shape))).astype(bool)
    assert (m & ~old).sum() > 20 and not (old & ~m).any()


# -- real Blowhole masks --------------------------------------------------------------------------
@requires_magnetic_tile
def test_blowhole_masks_through_pycocotools_ultralytics_and_labelme(tmp_path):
    pngs = sorted((MAGNETIC_TILE / "MT_Blowhole" / "Imgs").glob("*.png"))
    assert len(pngs) > 100
    truth = {p.stem: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 0 for p in pngs}
    items = [
        ImageLabels(
            str(p.with_suffix(".jpg")),
            width=truth[p.stem].shape[1],
            height=truth[p.stem].shape[0],
            objects=[LabelObject("defect", mask=truth[p.stem])],
        )
        for p in pngs
    ]
    res = check_all_tools(items, truth, tmp_path)
    for tool, v in res.items():
        print(f"{tool}: {len(v)} masks, median IoU {np.median(v):.4f}, min {v.min():.4f}")
        assert np.median(v) >= 0.98 and v.min() >= 0.9, tool
    assert res["coco"].min() == 1.0 and res["labelme"].min() == 1.0 and res["yolo"].min() == 1.0
