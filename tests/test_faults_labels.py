"""Reviewers' labels: painted masks keyed by image identity (7) and one label definition for learn and export (8).

Both reproduce faults of the project's reliability issue and fail on the code before the fix:

7. masks painted in the app were named ``<catalogue>.masks/<file stem>.png``, so ``day1/cam.png`` and
   ``day2/cam.png`` shared one file and day 1's verdict pointed at day 2's defect;
8. ``raremine export --what labels`` took the union of reviewers while ``learn`` used the consensus rule,
   so an image with one confirm and one reject trained nothing but was exported as a defect.
"""

from __future__ import annotations

import csv
import json
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from mining import review as rv
from mining.catalogue.index import index_archive
from mining.catalogue.store import Store
from mining.learning.learn import learn
from mining.ranking.rank import rank
from mining.ranking.rerank import consensus_labels
from mining.review import ConsensusRule
from raremine.cli import app as cli
from synthesis.labels import category_masks, read_labels

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


# -- 8: one label definition for learn and every export --------------------------------------------------------
#: image -> votes (reviewer, verdict, category, mask). Every confirm carries a mask painted through the app's
#: writer (COCO and YOLO need geometry) unless it says "old" (a stem-named mask file of an older catalogue)
#: or "none" (an image-level confirm: CSV exports it, COCO and YOLO skip it as ``no_geometry``).
PATTERNS = {
    "one_confirm.png": [("ann", "confirm", "crack", None)],
    "confirm_reject.png": [("ann", "confirm", "crack", None), ("bob", "reject", None, None)],
    "two_confirms.png": [("ann", "confirm", "crack", None), ("bob", "confirm", "pit", None)],
    "reject.png": [("ann", "reject", None, None)],
    "unsure.png": [("ann", "unsure", None, None)],
    "confirm_old_mask.png": [("ann", "confirm", "pit", "old")],
    "confirm_no_mask.png": [("ann", "confirm", "crack", "none")],
    "changed_mind.png": [("ann", "confirm", "crack", None), ("ann", "reject", None, None)],
    "majority.png": [
        ("ann", "confirm", "crack", None),
        ("bob", "reject", None, None),
        ("cy", "confirm", "crack", None),
    ],
}
#: What the consensus rule decides with the default rule (agree 1, a third vote breaks a tie).
EXPECTED = {
    "one_confirm.png": 1,
    "confirm_reject.png": None,
    "two_confirms.png": 1,
    "reject.png": 0,
    "unsure.png": None,
    "confirm_old_mask.png": 1,
    "confirm_no_mask.png": 1,
    "changed_mind.png": 0,
    "majority.png": 1,
}


def _mask(name: str) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), bool)
    k = sorted(PATTERNS).index(name)
    m[4 + 2 * k : 14 + 2 * k, 10:30] = True
    return m


@pytest.fixture
def voted(tmp_path):
    """A catalogue holding one image per vote pattern (and an unreviewed one)."""
    ids = _archive(tmp_path, [*PATTERNS, "unreviewed.png"])
    db = str(tmp_path / "cat.db")
    with Store(db) as store:
        for name, votes in PATTERNS.items():
            for reviewer, verdict, category, mask in votes:
                path = None
                if verdict == "confirm" and mask is None:  # a 0/255 mask, as the app saves a painting
                    path = str(tmp_path / "cat.masks" / f"{ids[name]}_{reviewer}.png")
                    Path(path).parent.mkdir(exist_ok=True)
                    cv2.imwrite(path, _mask(name).astype(np.uint8) * 255)
                elif mask == "old":  # a mask an older version saved as <catalogue>.masks/<stem>.png
                    path = str(tmp_path / "cat.masks" / (Path(name).stem + ".png"))
                    Path(path).parent.mkdir(exist_ok=True)
                    cv2.imwrite(path, _mask(name).astype(np.uint8) * 255)
                store.add_review(ids[name], reviewer, verdict, category=category, mask_path=path, source="app")
    return {"db": db, "ids": ids, "folder": tmp_path}


def _export(db: str, fmt: str, out: Path, *extra: str) -> str:
    r = CliRunner().invoke(
        cli,
        ["export", "--db", db, "--what", "labels", "--format", fmt, "--out", str(out), *extra],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    return r.output


def _coco(out: Path) -> dict[str, int | None]:
    data = json.loads((out / "annotations.json").read_text())
    with_ann = {a["image_id"] for a in data["annotations"]}
    return {Path(im["file_name"]).name: int(im["id"] in with_ann) for im in data["images"]}


def _yolo(out: Path) -> dict[str, int]:
    return {p.stem + ".png": int(bool(p.read_text().strip())) for p in (out / "labels").glob("*.txt")}


def _csv(out: Path) -> dict[str, int]:
    with open(out / "labels.csv", newline="") as fh:
        return {Path(r["path"]).name: int(bool(r["labels"])) for r in csv.DictReader(fh)}


def _learned(db: str, rule: ConsensusRule) -> dict[str, int]:
    with Store(db, readonly=True) as s:
        names = {int(r["id"]): Path(r["path"]).name for r in s.images()}
        return {names[i]: lab for i, (lab, _) in consensus_labels(s, rule).items()}


def test_export_and_learn_agree_on_every_images_label(voted, tmp_path):
    db = voted["db"]
    learned = _learned(db, ConsensusRule())
    assert learned == {k: v for k, v in EXPECTED.items() if v is not None}

    geometry = {k: v for k, v in learned.items() if k != "confirm_no_mask.png"}
    for fmt, read, expect in (("csv", _csv, learned), ("coco", _coco, geometry), ("yolo", _yolo, geometry)):
        output = _export(db, fmt, tmp_path / fmt)
        exported = read(tmp_path / fmt)
        assert exported == expect, (fmt, exported, expect)
        assert "2 reviewed images left out (no label): 1 disagreement" in output, output
        assert "1 unsure (decided unsure)" in output
        if expect is geometry:
            assert "confirm_no_mask.png: no_geometry" in output, output

    # the confirming votes' masks are exported (one of an older catalogue, named by stem), each in its class
    items = {Path(it.image).name: it for it in read_labels("coco", tmp_path / "coco").items}
    for name, category in (("one_confirm.png", "crack"), ("confirm_old_mask.png", "pit")):
        got = category_masks(items[name], SIZE, SIZE)
        assert set(got) == {category} and np.array_equal(got[category], _mask(name)), name
    assert sorted(items["two_confirms.png"].categories()) == ["crack", "pit"]
    assert not items["reject.png"].objects and not items["reject.png"].labels

    with Store(db) as s:  # learn reports the same counts, and what it left out
        rep = learn(s, rerank=False, pixel=False)
    assert (rep.n_confirmed, rep.n_rejected) == (5, 2)
    assert rep.left_out == {"disagreement": 1, "unsure": 1}


def test_the_pixel_model_learns_only_from_images_decided_as_defects(voted, monkeypatch):
    """``learn``'s pixel step trains on the masks of images decided as defects, not of every confirm vote."""
    px = pytest.importorskip("mining.learning.pixel_fit")
    seen = {}

    def fit_pixel(store, images_dir, labels_dir, config=None, base=None, reuse=None):
        seen.update({int(Path(p).stem): cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in Path(labels_dir).iterdir()})
        return {"model_id": 0, "path": str(labels_dir), "metrics": {}}

    monkeypatch.setattr(px, "fit_pixel", fit_pixel)
    with Store(voted["db"]) as s:
        rep = learn(s, rerank=False, pixel=True)
    assert rep.pixel is not None, rep.pixel_skipped
    names = {i: name for name, i in voted["ids"].items()}
    # confirm_reject holds a painted mask too, but the reviewers disagree: it trains nothing
    defects = {i for i, lab in seen.items() if (lab == 2).any()}
    assert sorted(names[i] for i in defects) == sorted(
        ["one_confirm.png", "two_confirms.png", "confirm_old_mask.png", "majority.png"]
    )
    for i in defects:
        np.testing.assert_array_equal(seen[i] == 2, _mask(names[i]), err_msg=names[i])
    # images decided normal train too, as background everywhere (mixed supervision); never a disputed one
    normals = {names[i] for i in set(seen) - defects}
    assert all((seen[i] == 1).all() for i in set(seen) - defects)
    assert "confirm_reject.png" not in normals and "reject.png" in normals, normals


def test_export_follows_the_configs_consensus_rule_as_learn_does(voted, tmp_path):
    """With ``review: agree: 2`` one confirm is not enough, for learn and for the export alike."""
    db = voted["db"]
    cfg = tmp_path / "review.yaml"
    cfg.write_text("review:\n  agree: 2\n  on_disagreement: drop\n")
    rule = ConsensusRule(agree=2, on_disagreement="drop")
    learned = _learned(db, rule)
    assert learned == {"two_confirms.png": 1, "majority.png": 1}
    for fmt, read in (("coco", _coco), ("yolo", _yolo)):
        output = _export(db, fmt, tmp_path / fmt, "--config", str(cfg))
        assert read(tmp_path / fmt) == learned, fmt
        assert "(review: agree 2, on_disagreement drop, max_votes 3)" in output, output
        assert "6 pending (not enough agreeing votes yet)" in output and "dropped" in output
    from mining.catalogue.verdicts import image_labels

    with Store(db, readonly=True) as s:
        labels = image_labels(s, rule)
        assert sum(lab.target is not None for lab in labels.values()) == len(learned)


def test_the_apps_export_uses_the_same_labels(voted, tmp_path):
    db = voted["db"]
    with Store(db, readonly=True) as s:
        n = rv.export_labels(s, tmp_path / "app.csv", ConsensusRule(), verdicts=("confirm", "reject"))
    with open(tmp_path / "app.csv", newline="") as fh:
        rows = {Path(r["path"]).name: int(r["label"]) for r in csv.DictReader(fh)}
    assert n == len(rows) and rows == _learned(db, ConsensusRule())
