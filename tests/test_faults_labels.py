"""Reviewers' labels: painted masks keyed by image identity (7) and one label definition for learn and export (8).

Both reproduce faults of the project's reliability issue and fail on the code before the fix:

7. masks painted in the app were named ``<catalogue>.masks/<file stem>.png``, so ``day1/cam.png`` and
   ``day2/cam.png`` shared one file and day 1's verdict pointed at day 2's defect;
8. ``raremine export --what labels`` took the union of reviewers while ``learn`` used the consensus rule,
   so an image with one confirm and one reject trained nothing but was exported as a defect.
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from mining import review as rv
from mining.index import index_archive
from mining.rank import rank
from mining.store import Store

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SIZE = 64

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _archive(folder: Path, names: list[str], seed: int = 0) -> dict[str, int]:
    """Write grey PNGs under ``folder/archive`` at the relative ``names``, index them, score and rank them.

    Returns the image id of each relative name.
    """
    root = folder / "archive"
    rng = np.random.default_rng(seed)
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), rng.integers(60, 200, (SIZE, SIZE)).astype(np.uint8))
    db = str(folder / "cat.db")
    with Store(db) as store:
        index_archive(store, [str(root)], workers=1)
        ids = {str(Path(r["path"]).relative_to(root)): int(r["id"]) for r in store.images()}
        with store.transaction() as con:
            con.executemany(
                "INSERT INTO scores (image_id, tile, scorer, score, created_at) VALUES (?, -1, 'contrast', ?, ?)",
                [(i, float(k + 1), time.time()) for k, i in enumerate(sorted(ids.values()))],
            )
        rank(store, n=len(ids))
    return ids


# -- 7: painted masks are keyed by image identity ------------------------------------------------------------
#: A stroke per image, in canvas pixels (the app draws a 64-pixel image on a 192-pixel canvas).
STROKES = {0: [["M", 20, 20], ["L", 100, 20]], 1: [["M", 120, 100], ["L", 120, 180]]}
CANVAS = (192, 192)


@pytest.fixture
def fake_canvas(monkeypatch):
    """streamlit-drawable-canvas stand-in: returns a red (defect) stroke that differs per image.

    The real component is a browser widget that AppTest cannot drive; the app's own code (rasterising
    the strokes, saving the label image and the mask, storing them with the next verdict) runs unchanged.
    """
    calls = []

    def st_canvas(**kw):
        calls.append((kw["key"], kw["width"], kw["height"]))
        image_id = int(kw["key"].split("_")[1])
        path = STROKES[image_id % 2]
        obj = {"type": "path", "stroke": "#ff0000", "strokeWidth": 15, "path": path}
        return types.SimpleNamespace(json_data={"objects": [obj]}, image_data=None)

    mod = types.ModuleType("streamlit_drawable_canvas")
    mod.st_canvas = st_canvas
    monkeypatch.setitem(sys.modules, "streamlit_drawable_canvas", mod)
    return calls


def _paint_and_confirm(at: AppTest) -> rv.Item:
    item = at.session_state["queue"][at.session_state["pos"]]
    at.toggle(key="paint").set_value(True).run()
    assert not at.exception, at.exception
    at.button(key="save_mask").click().run()
    assert not at.exception, at.exception
    assert any("defect mask" in s.value for s in at.success), [w.value for w in at.warning]
    at.button(key="btn_confirm").click().run()
    assert not at.exception, at.exception
    return item


def test_masks_of_two_images_with_the_same_file_name_are_both_kept(tmp_path, monkeypatch, fake_canvas):
    ids = _archive(tmp_path, ["day1/cam.png", "day2/cam.png"])
    db = str(tmp_path / "cat.db")
    monkeypatch.setenv("RAREMINE_DB", db)
    monkeypatch.delenv("RAREMINE_CONFIG", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["reviewer"] = "alice"
    at.run()
    assert not at.exception, at.exception
    painted = [_paint_and_confirm(at), _paint_and_confirm(at)]
    assert {it.image_id for it in painted} == set(ids.values())
    assert {(w, h) for _, w, h in fake_canvas} == {CANVAS}, fake_canvas

    with Store(db, readonly=True) as s:
        rows = {
            r["image_id"]: r for r in s.query("SELECT image_id, verdict, mask_path FROM reviews WHERE reviewer='alice'")
        }
        anns = {r["image_id"]: json.loads(r["data"]) for r in s.query("SELECT image_id, data FROM annotations")}
    assert set(rows) == set(ids.values()) and all(r["verdict"] == "confirm" for r in rows.values())
    masks = {i: r["mask_path"] for i, r in rows.items()}
    assert len(set(masks.values())) == 2, f"two images share one mask file: {masks}"
    labels = {i: a["path"] for i, a in anns.items()}
    assert len(set(labels.values())) == 2, f"two images share one label image: {labels}"
    for image_id, mask_path in masks.items():
        assert Path(mask_path).name.startswith(f"{image_id}_"), mask_path  # named by the image's id
        assert anns[image_id]["mask"] == mask_path
        # each verdict's mask shows its own image's stroke (the stroke of the other image is elsewhere)
        expect = rv.strokes_to_labels(
            {"objects": [{"type": "path", "stroke": "#ff0000", "strokeWidth": 15, "path": STROKES[image_id % 2]}]},
            CANVAS,
            (SIZE, SIZE),
            {"#ff0000": rv.DEFECT},
        )
        got = cv2.imread(mask_path, cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got > 0, expect == rv.DEFECT, err_msg=f"image {image_id}: {mask_path}")
        lab = cv2.imread(labels[image_id], cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(lab == rv.DEFECT, expect == rv.DEFECT)


def test_painting_again_never_overwrites_an_earlier_votes_mask(tmp_path):
    store_path = tmp_path / "cat.db"
    first = np.zeros((8, 8), np.uint8)
    first[1:3, 1:3] = rv.DEFECT
    second = np.zeros((8, 8), np.uint8)
    second[5:7, 5:7] = rv.DEFECT
    a = rv.save_defect_mask(first, store_path, 3)
    b = rv.save_defect_mask(second, store_path, 3)
    c = rv.save_defect_mask(first, store_path, 4)  # the same picture for another image: its own file
    t = rv.save_defect_mask(first, store_path, 3, tile=2)
    assert len({a, b, c, t}) == 4
    assert (cv2.imread(a, cv2.IMREAD_UNCHANGED) > 0).sum() == 4 and cv2.imread(a, cv2.IMREAD_UNCHANGED)[1, 1] == 255
    assert rv.save_defect_mask(first, store_path, 3) == a  # the same painting again: the same file
