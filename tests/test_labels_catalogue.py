"""Labels in and out of the catalogue (mining.catalogue.labels) and through the CLI; the magnetic-tile round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mining.catalogue.index import index_archive
from mining.catalogue.labels import catalogue_labels, export_labels, import_labels
from mining.catalogue.store import Store
from raremine.cli import app
from synthesis.labels import ClassMap, category_masks, object_box, read_labels, write_labels
from tests.conftest import MAGNETIC_TILE, requires_magnetic_tile
from tests.test_labels import CLASSES, blob, by_stem, class_masks, make_dataset

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Six small labelled images (``tests.test_labels.make_dataset``)."""
    return make_dataset(tmp_path_factory.mktemp("catalogue_images"))


@pytest.fixture
def catalogue(tmp_path, dataset):
    """A fresh catalogue indexing the images of ``dataset``."""
    store = Store(tmp_path / "cat.db")
    index_archive(store, [str(Path(dataset[0].image).parent)], workers=1)
    yield store
    store.close()


def catalogue_masks(store: Store, reviewer: str) -> dict[str, dict[str, np.ndarray]]:
    return {Path(it.image).stem: class_masks(it) for it in catalogue_labels(store, reviewers=[reviewer])}


def test_import_masks_makes_reviews_annotations_and_mask_files(catalogue, dataset, tmp_path):
    write_labels("masks", dataset, tmp_path / "masks", classes=CLASSES)
    s = import_labels(
        catalogue, "masks", tmp_path / "masks", classes=tmp_path / "masks" / "classes.json", source="legacy"
    )
    assert s.images == len(dataset) and not s.errors
    assert s.negatives == 1 and s.positives == len(dataset) - 1
    rows = catalogue.query("SELECT verdict, category, mask_path, reviewer, source FROM reviews ORDER BY id")
    assert {r["reviewer"] for r in rows} == {"legacy"} and {r["source"] for r in rows} == {"import"}
    assert sum(r["verdict"] == "reject" for r in rows) == 1
    confirms = [r for r in rows if r["verdict"] == "confirm"]
    assert all(r["mask_path"] and Path(r["mask_path"]).is_file() for r in confirms)
    kinds = catalogue.query("SELECT kind, COUNT(*) n FROM annotations GROUP BY kind")
    assert {r["kind"]: r["n"] for r in kinds} == {"mask": len(confirms)}
    # the mask file of each review is the class's union, 0 / 255 (mining.learning.learn reads non-zero as defect)
    got = catalogue_masks(catalogue, "legacy")
    for it in dataset:
        ref = class_masks(it)
        assert set(got[Path(it.image).stem]) == set(ref)
        for c in ref:
            assert np.array_equal(got[Path(it.image).stem][c], ref[c])
    for r in confirms:
        img_id = catalogue.query("SELECT image_id FROM reviews WHERE mask_path = ?", (r["mask_path"],))[0][0]
        stem = Path(catalogue.query("SELECT path FROM images WHERE id = ?", (img_id,))[0][0]).stem
        lab = cv2.imread(r["mask_path"], cv2.IMREAD_UNCHANGED)
        assert set(np.unique(lab)) <= {0, 255} and np.array_equal(lab == 255, got[stem][r["category"]])
    # importing again under the same name replaces, never duplicates
    import_labels(catalogue, "masks", tmp_path / "masks", classes=tmp_path / "masks" / "classes.json", source="legacy")
    assert catalogue.query("SELECT COUNT(*) FROM reviews")[0][0] == len(rows)


@pytest.mark.parametrize(
    "fmt,opts",
    [
        ("coco", {}),
        ("coco", {"segmentation": "rle"}),
        ("yolo", {"task": "segment"}),
        ("yolo", {}),
        ("voc", {}),
        ("labelme", {}),
        ("masks", {}),
        ("csv", {}),
        ("folders", {}),
    ],
)
def test_catalogue_export_import_roundtrip(catalogue, dataset, tmp_path, fmt, opts):
    """Import, export as F, import the export under another name: the same labels (boxes, masks) come back."""
    write_labels("coco", dataset, tmp_path / "src", classes=CLASSES, segmentation="rle")
    import_labels(catalogue, "coco", tmp_path / "src", source="a")
    res = export_labels(catalogue, fmt, tmp_path / "out", reviewers=["a"], classes=CLASSES, **opts)
    assert res.class_map and Path(res.class_map).is_file()
    assert res.images == len(dataset) and not res.skipped
    s = import_labels(catalogue, fmt, tmp_path / "out", source="b", classes=tmp_path / "out" / "classes.json")
    assert not s.errors, s.errors
    a = {Path(it.image).stem: it for it in catalogue_labels(catalogue, reviewers=["a"])}
    b = {Path(it.image).stem: it for it in catalogue_labels(catalogue, reviewers=["b"])}
    assert set(b) == set(a)
    for k, it in a.items():
        assert set(b[k].categories()) == set(it.categories()), (fmt, k)
        if fmt in ("csv", "folders"):
            continue
        if fmt != "masks" and not (fmt == "yolo" and opts.get("task") == "segment"):  # these keep no boxes
            assert sorted((o.category, object_box(o, it.height, it.width)) for o in b[k].objects) == sorted(
                (o.category, object_box(o, it.height, it.width)) for o in it.objects
            ), (fmt, k)
        if fmt == "yolo" and not opts:
            continue  # boxes only
        ma, mb = class_masks(it), class_masks(b[k])
        for c in ma:
            assert np.array_equal(ma[c], mb[c]), (fmt, k, c)


def test_bad_input_is_reported_per_file_and_the_rest_imported(catalogue, dataset, tmp_path):
    write_labels("voc", dataset, tmp_path / "voc", classes=CLASSES)
    ann = tmp_path / "voc" / "Annotations"
    (ann / "img_1.xml").write_text((ann / "img_1.xml").read_text().replace("<width>56</width>", "<width>60</width>"))
    (ann / "img_2.xml").write_text("<annotation>")
    (ann / "other.xml").write_text((ann / "img_0.xml").read_text().replace("img_0", "nowhere"))
    (ann / "img_3.xml").write_text((ann / "img_3.xml").read_text().replace("<name>pit</name>", "<name>dent</name>"))
    s = import_labels(catalogue, "voc", tmp_path / "voc", classes=CLASSES, source="voc")
    reasons = sorted((Path(e.file).stem, e.reason) for e in s.errors)
    assert reasons == [
        ("img_1", "size_mismatch"),
        ("img_2", "malformed"),
        ("img_3", "unknown_class"),
        ("other", "not_in_catalogue"),
    ]
    assert s.images == 3  # img_0, img_4, img_5
    fails = catalogue.query("SELECT reason FROM failures WHERE run_id = ?", (s.run_id,))
    assert sorted(r[0] for r in fails) == sorted(r for _, r in reasons)
    run = catalogue.query("SELECT status, counts FROM runs WHERE id = ?", (s.run_id,))[0]
    assert run["status"] == "done" and json.loads(run["counts"])["rejected"] == 4


def test_folders_and_csv_import_with_negative_class(catalogue, dataset, tmp_path):
    root = tmp_path / "layout"
    for i, it in enumerate(dataset):
        folder = root / ("normal" if i == 0 else "crack" if i % 2 else "pit")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(it.image, folder / f"copy_{i}.png")  # another name: matched by content hash
    s = import_labels(catalogue, "folders", root, source="folders")
    assert s.images == len(dataset) and s.negatives == 1 and not s.errors
    (tmp_path / "t.csv").write_text("path,labels\nimg_1.png,crack;pit\nimg_2.png,\nmissing.png,crack\n")
    shutil.copy(dataset[1].image, tmp_path / "img_1.png")
    shutil.copy(dataset[2].image, tmp_path / "img_2.png")
    s = import_labels(catalogue, "csv", tmp_path / "t.csv", source="table")
    assert s.images == 2 and s.positives == 1 and s.negatives == 1
    assert [(Path(e.file).name, e.reason) for e in s.errors] == [("t.csv:4", "not_in_catalogue")]
    labs = {Path(it.image).stem: sorted(it.labels) for it in catalogue_labels(catalogue, reviewers=["table"])}
    assert labs == {"img_1": ["crack", "pit"], "img_2": []}


def test_later_reject_cancels_a_reviewers_confirm(catalogue, dataset, tmp_path):
    image_id = catalogue.image_id(dataset[1].image)
    catalogue.add_review(image_id, "bob", "confirm", category="pit")
    catalogue.add_review(image_id, "bob", "reject")
    (it,) = catalogue_labels(catalogue)
    assert it.labels == [] and it.is_negative  # bob's vote is his latest: reject
    catalogue.add_review(image_id, "ann", "confirm", category="crack")
    assert catalogue_labels(catalogue) == []  # ann confirms, bob rejects: undecided under the consensus rule


def _import_labelme(runner: CliRunner, db: str, dataset, tmp_path):
    """Write ``dataset`` as labelme files in ``tmp_path/lm`` and import them with the CLI (source ``lm``)."""
    write_labels("labelme", dataset, tmp_path / "lm", classes=CLASSES)
    r = runner.invoke(app, ["import", str(tmp_path / "lm"), "--db", db, "--format", "labelme", "--source", "lm"])
    assert r.exit_code == 0, r.output
    return r


def test_cli_import_and_export(catalogue, dataset, tmp_path):
    db = catalogue.path
    runner = CliRunner()
    r = _import_labelme(runner, db, dataset, tmp_path)
    assert f"labels of {len(dataset)} images" in r.output and "rejected: 0" in r.output
    r = runner.invoke(
        app,
        [
            "export",
            "--db",
            db,
            "--what",
            "labels",
            "--format",
            "coco",
            "--out",
            str(tmp_path / "coco"),
            "--coco-segmentation",
            "rle",
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert len(data["images"]) == len(dataset) and (tmp_path / "coco" / "classes.json").is_file()
    r = runner.invoke(app, ["export", "--db", db, "--what", "labels", "--format", "nope", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--format must be one of" in r.output
    r = runner.invoke(app, ["import", str(tmp_path / "lm"), "--db", db])
    assert r.exit_code == 2 and "--format is required" in r.output
    r = runner.invoke(
        app,
        [
            "convert",
            str(tmp_path / "coco"),
            "--from",
            "coco",
            "--to",
            "yolo",
            "--out",
            str(tmp_path / "yolo"),
            "--classes",
            str(tmp_path / "coco" / "classes.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "yolo" / "labels" / "img_3.txt").read_text().startswith("1 ")


def test_cli_out_names_a_file_for_coco_and_is_refused_for_folder_formats(catalogue, dataset, tmp_path):
    """``--out x.json`` writes that COCO file (class map beside it); folder formats refuse a file name."""
    db = catalogue.path
    runner = CliRunner()
    _import_labelme(runner, db, dataset, tmp_path)
    base = ["export", "--db", db, "--what", "labels", "--reviewer", "lm"]
    r = runner.invoke(app, [*base, "--format", "coco", "--out", str(tmp_path / "coco.json")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "coco.json").is_file() and (tmp_path / "coco.classes.json").is_file()
    data = json.loads((tmp_path / "coco.json").read_text())
    assert len(data["images"]) == len(dataset)
    assert len(read_labels("coco", tmp_path / "coco.json").items) == len(dataset)
    for fmt in ("yolo", "labelme", "voc", "masks"):
        r = runner.invoke(app, [*base, "--format", fmt, "--out", str(tmp_path / f"{fmt}.json")])
        assert r.exit_code == 2, (fmt, r.output)
        assert f"the {fmt} format writes a folder of files: give a folder" in r.output
        assert not (tmp_path / f"{fmt}.json").exists()
    (tmp_path / "existing.txt").write_text("x")
    r = runner.invoke(app, [*base, "--format", "yolo", "--out", str(tmp_path / "existing.txt")])
    assert r.exit_code == 2 and "names a file" in r.output
    r = runner.invoke(app, [*base, "--format", "coco", "--out", str(tmp_path / "c.csv")])
    assert r.exit_code == 2 and "writes one .json file or a folder" in r.output


def test_synthesis_outputs_export(tmp_path):
    """A synthesis output folder (manifest.csv + images/ + masks/) exports with exact masks."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rows = ["image,mask,label,category"]
    masks = {}
    for i in range(3):
        cv2.imwrite(str(tmp_path / "images" / f"{i:05d}.png"), np.full((30, 40), 100, np.uint8))
        m = blob(rng, (30, 40)) if i else np.zeros((30, 40), bool)
        masks[f"{i:05d}"] = m
        cv2.imwrite(str(tmp_path / "masks" / f"{i:05d}.png"), m.astype(np.uint8) * 255)
        rows.append(f"images/{i:05d}.png,masks/{i:05d}.png,{int(i > 0)},{'scratch' if i else ''}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    ls = read_labels("synth", tmp_path)
    write_labels("coco", ls.items, tmp_path / "coco", segmentation="rle")
    back = by_stem(read_labels("coco", tmp_path / "coco").items)
    for k, m in masks.items():
        got = category_masks(back[k], 30, 40)
        assert np.array_equal(got.get("scratch", np.zeros_like(m)), m)


@requires_magnetic_tile
def test_magnetic_tile_masks_through_coco_yolo_voc(tmp_path):
    """Real masks imported, exported as COCO, YOLO-seg and VOC, imported back: same masks within one pixel."""
    picks = []
    for cls in ("MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Uneven", "MT_Free"):
        jpgs = sorted((MAGNETIC_TILE / cls / "Imgs").glob("*.jpg"))[:2]
        picks += [(cls, p) for p in jpgs]
    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir()
    masks.mkdir()
    for _, p in picks:
        shutil.copy(p, imgs / p.name)
        shutil.copy(p.with_suffix(".png"), masks / (p.stem + ".png"))
    store = Store(tmp_path / "mt.db")
    index_archive(store, [str(imgs)], workers=1)
    s = import_labels(store, "masks", masks, source="truth", default_category="defect")
    assert s.images == len(picks) and not s.errors and s.negatives >= 2
    truth = {p.stem: cv2.imread(str(p.with_suffix(".png")), cv2.IMREAD_UNCHANGED) > 0 for _, p in picks}
    for fmt, opts in (("coco", {}), ("yolo", {"task": "segment"}), ("voc", {})):
        out = tmp_path / fmt
        res = export_labels(store, fmt, out, reviewers=["truth"], **opts)
        assert res.images == len(picks) and not res.skipped
        s2 = import_labels(store, fmt, out, source=f"back-{fmt}", classes=ClassMap(("defect",)))
        assert s2.images == len(picks) and not s2.errors, s2.errors
        back = {Path(it.image).stem: it for it in catalogue_labels(store, reviewers=[f"back-{fmt}"])}
        for stem, ref in truth.items():
            it = back[stem]
            got = category_masks(it, it.height, it.width).get("defect", np.zeros_like(ref))
            assert np.array_equal(got, ref), (fmt, stem, int((got != ref).sum()))  # every format is exact
    store.close()


def test_masks_painted_in_the_app_are_exported(catalogue, dataset, tmp_path):
    """A review's label image (0 unlabelled, 1 background, 2 defect), with or without an app annotation row."""
    h, w = dataset[1].height, dataset[1].width
    lab = np.zeros((h, w), np.uint8)
    lab[2:9, 3:12] = 1
    lab[4:7, 5:9] = 2
    cv2.imwrite(str(tmp_path / "lab.png"), lab)
    a = catalogue.add_review(
        catalogue.image_id(dataset[1].image), "ann", "confirm", category="crack", mask_path=str(tmp_path / "lab.png")
    )
    b = catalogue.add_review(
        catalogue.image_id(dataset[2].image), "ann", "confirm", category="pit", mask_path=str(tmp_path / "lab.png")
    )
    with catalogue.transaction() as con:
        con.execute(
            "INSERT INTO annotations (image_id, review_id, category, kind, data, source, created_at)"
            " VALUES (?, ?, 'pit', 'mask', ?, 'app', 0)",
            (
                catalogue.image_id(dataset[2].image),
                b,
                json.dumps({"path": str(tmp_path / "lab.png"), "values": {"defect": 2}}),
            ),
        )
    assert a
    export_labels(catalogue, "coco", tmp_path / "coco", segmentation="rle")
    back = by_stem(read_labels("coco", tmp_path / "coco").items)
    assert np.array_equal(category_masks(back["img_1"], h, w)["crack"], lab == 2)
    assert np.array_equal(category_masks(back["img_2"], h, w)["pit"], lab == 2)


def test_yolo_label_for_an_image_not_in_the_catalogue(catalogue, dataset, tmp_path):
    write_labels("yolo", dataset, tmp_path / "y", classes=CLASSES)
    (tmp_path / "y" / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    s = import_labels(catalogue, "yolo", tmp_path / "y", source="y")
    assert [(Path(e.file).name, e.reason) for e in s.errors] == [("ghost.txt", "not_in_catalogue")]
    assert s.images == len(dataset)
