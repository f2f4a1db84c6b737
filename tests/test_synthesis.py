"""Synthesis of 2-D defects: paste, procedural defects, augmentation, the synth pipeline and CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from synthesis import augment, paste, procedural
from synthesis.config import SynthConfigError, load_synth_config
from synthesis.pipeline import synthesize
from tests.conftest import MAGNETIC_TILE, requires_magnetic_tile


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    rng = np.random.default_rng(0)
    noise = rng.normal(0.5, 0.12, (96, 96)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5), 0, 1)


@pytest.fixture(scope="module")
def dark_crop() -> tuple[np.ndarray, np.ndarray]:
    crop = np.full((28, 28), 0.55, np.float32)
    mask = np.zeros((28, 28), np.uint8)
    cv2.ellipse(mask, (14, 14), (8, 5), 30, 0, 360, 1, -1)
    crop[mask > 0] = 0.1
    return crop, mask.astype(bool)


@pytest.mark.parametrize("kind", sorted(procedural.SIMULATORS))
def test_procedural_mask_is_exactly_the_changed_pixels(texture, kind):
    out, mask = procedural.simulate(kind, texture, rng=3)
    assert out.shape == texture.shape and out.dtype == np.float32
    assert mask.any(), f"{kind} drew nothing"
    assert np.array_equal(out != texture, mask)


@pytest.mark.parametrize("kind", sorted(procedural.SIMULATORS))
def test_procedural_same_seed_same_result_other_seed_differs(texture, kind):
    a, ma = procedural.simulate(kind, texture, rng=np.random.default_rng(7))
    b, mb = procedural.simulate(kind, texture, rng=7)
    c, _ = procedural.simulate(kind, texture, rng=8)
    assert a.tobytes() == b.tobytes() and np.array_equal(ma, mb)
    assert a.tobytes() != c.tobytes()


def test_perlin_noise_shape_range_and_seed():
    n = procedural.perlin_noise((50, 70), (4, 3), rng=1)
    assert n.shape == (50, 70) and np.abs(n).max() <= 1.5
    assert np.array_equal(n, procedural.perlin_noise((50, 70), (4, 3), rng=1))
    # smooth: neighbouring pixels differ far less than the range
    assert np.abs(np.diff(n, axis=1)).max() < 0.3 * (n.max() - n.min())


def test_crack_branches_and_is_dark(texture):
    _, single = procedural.crack(texture, rng=5, branch_prob=0.0, length=(0.4, 0.4))
    out, branched = procedural.crack(texture, rng=5, branch_prob=0.2, max_branches=4, length=(0.4, 0.4))
    assert branched.sum() > single.sum()
    assert (out[branched] <= texture[branched]).all()


def test_hard_paste_changes_nothing_outside_the_mask(texture, dark_crop):
    crop, cmask = dark_crop
    res = paste.paste(texture, crop, cmask, rng=0, blend="hard", scale=(0.8, 1.3), rotation=(0, 180), flip=True)
    assert res.mask.sum() > 0.5 * cmask.sum()
    assert np.array_equal(res.image[~res.mask], texture[~res.mask])
    assert np.array_equal(res.changed, res.mask)
    x, y, w, h = res.box
    ys, xs = np.nonzero(res.mask)
    assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    # the defect really is there: darker than the target under the mask
    assert (res.image[res.mask] < texture[res.mask]).mean() > 0.9


def test_paste_respects_the_allowed_region(texture, dark_crop):
    allowed = np.zeros(texture.shape, bool)
    allowed[50:90, 10:60] = True
    for seed in range(5):
        res = paste.paste(texture, *dark_crop, rng=seed, allowed=allowed, blend="feather")
        assert res.mask.any() and not (res.mask & ~allowed).any()
        assert np.array_equal(res.image[~res.changed], texture[~res.changed])
    with pytest.raises(ValueError, match="allowed region"):
        paste.paste(texture, *dark_crop, rng=0, allowed=np.zeros(texture.shape, bool))


def test_poisson_blending_keeps_the_defect_shape(texture, dark_crop):
    crop, cmask = dark_crop
    res = paste.paste(texture, crop, cmask, rng=1, blend="poisson")
    assert np.array_equal(res.image[~res.changed], texture[~res.changed])
    darker = (texture - res.image) > 0.5 * float(np.percentile(texture - res.image, 99.5))
    inter = (darker & res.mask).sum()
    iou = inter / (darker | res.mask).sum()
    assert iou > 0.7, f"Poisson-blended defect lost its shape (IoU {iou:.2f})"


def test_transform_crop_moves_image_and_mask_together(dark_crop):
    crop, cmask = dark_crop
    c, m = paste.transform_crop(crop, cmask, scale=1.5, rotation=45, flip=True)
    assert c.shape == m.shape
    assert abs(m.sum() / cmask.sum() - 1.5**2) < 0.15 * 1.5**2
    assert c[m].mean() < 0.2 and c[~m].mean() > 0.45


def test_crops_from_mask_one_per_region():
    img = np.full((40, 60), 0.5, np.float32)
    mask = np.zeros((40, 60), bool)
    mask[5:10, 5:10] = mask[25:35, 40:50] = True
    crops = paste.crops_from_mask(img, mask, margin=3)
    assert sorted(m.sum() for _, m in crops) == [25, 100]
    assert all(c.shape == m.shape for c, m in crops)


def test_augmentations_carry_masks(texture):
    mask = np.zeros(texture.shape, bool)
    mask[10:20, 30:50] = True
    img = texture.copy()
    img[mask] = 1.0
    out, m, p = augment.classic(img, mask, rng=2, noise=0.0, brightness=0, contrast=0, gamma=0)
    assert np.array_equal(out == 1.0, m) and m.sum() == mask.sum()
    out, m, p = augment.cutout(img, mask, rng=0, holes=3, size=(0.2, 0.3))
    for y, x, h, w in p["boxes"]:
        assert not m[y : y + h, x : x + w].any()
    assert (m <= mask).all()
    out, m, p = augment.gridmask(img, mask, rng=0, period=(10, 10), ratio=0.5)
    assert (m <= mask).all() and not m[out == 0].any()
    other = np.zeros(texture.shape, bool)
    other[60:70, 60:80] = True
    out, m, p = augment.mixup(img, mask, texture, other, rng=0)
    assert np.allclose(m[mask], p["lam"], atol=1e-6) and np.allclose(m[other], 1 - p["lam"], atol=1e-6)
    out, m, p = augment.cutmix(img, mask, texture, other, rng=1)
    y, x, h, w = p["box"]
    assert np.array_equal(m[y : y + h, x : x + w], other[y : y + h, x : x + w])
    assert abs(p["lam"] - (1 - h * w / img.size)) < 1e-6


def test_tiles_cover_with_overlap():
    img = np.arange(100 * 130, dtype=np.float32).reshape(100, 130)
    cover = np.zeros(img.shape, int)
    for (y, x, h, w), t, m in augment.tiles(img, img > 50, tile=48, overlap=8):
        assert t.shape == (h, w) == m.shape and np.array_equal(t, img[y : y + h, x : x + w])
        cover[y : y + h, x : x + w] += 1
    assert cover.min() >= 1 and cover.max() > 1


def _tiny_config(tmp_path: Path, seed: int = 0, **extra) -> Path:
    cfg = {
        "seed": seed,
        "n_images": 6,
        "size": [48, 48],
        "defect_rate": 0.8,
        "normals": {"skimage": ["brick", "grass"]},
        "generators": [{"kind": "spots"}, {"kind": "scratch"}, {"kind": "perlin", "params": {"max_scale": 4}}],
        "augment": {"classic": {"noise": 0.01}, "cutout": {"holes": 1}, "cutout_prob": 0.3},
        **extra,
    }
    p = tmp_path / f"synth-{seed}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def test_same_config_and_seed_give_the_same_bytes(tmp_path):
    cfg = _tiny_config(tmp_path)
    synthesize(cfg, tmp_path / "a")
    synthesize(cfg, tmp_path / "b")
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert da == db and len(da) == 13  # 6 images, 6 masks, manifest
    synthesize(_tiny_config(tmp_path, seed=1), tmp_path / "c")
    assert _digest(tmp_path / "c") != da


def test_manifest_rows_match_the_masks(tmp_path):
    s = synthesize(_tiny_config(tmp_path), tmp_path / "o")
    import csv
    import json

    rows = list(csv.DictReader(open(s.manifest, encoding="utf-8")))
    assert len(rows) == 6 and s.n_defective == sum(int(r["label"]) for r in rows)
    for r in rows:
        m = cv2.imread(str(tmp_path / "o" / r["mask"]), cv2.IMREAD_GRAYSCALE) > 0
        assert int(r["label"]) == int(m.any())
        ops = json.loads(r["operations"])
        assert ops and all("op" in o for o in ops) and int(r["seed"]) >= 0
        if m.any():
            x, y, w, h = json.loads(r["box"])
            assert m[y : y + h, x : x + w].sum() == m.sum()


def test_paste_generator_from_a_folder(tmp_path, dark_crop):
    crop, cmask = dark_crop
    (tmp_path / "d").mkdir()
    (tmp_path / "m").mkdir()
    cv2.imwrite(str(tmp_path / "d" / "x.png"), (crop * 255).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "m" / "x.png"), cmask.astype(np.uint8) * 255)
    cfg = _tiny_config(
        tmp_path,
        defects={"folder": str(tmp_path / "d"), "masks": str(tmp_path / "m")},
        generators=[{"kind": "paste", "params": {"blend": "poisson"}}],
        defect_rate=1.0,
        augment={},
    )
    s = synthesize(cfg, tmp_path / "o")
    assert s.n_defective == 6


def test_bad_config_names_key_value_and_allowed(tmp_path):
    base = yaml.safe_load(_tiny_config(tmp_path).read_text())
    bad = {**base, "generators": [{"kind": "blobz"}]}
    with pytest.raises(SynthConfigError) as e:
        load_synth_config(data=bad)
    msg = str(e.value)
    assert "generators.0.kind" in msg and "blobz" in msg and "'crack'" in msg and "'paste'" in msg
    bad = {**base, "generators": [{"kind": "spots", "params": {"radios": 3}}]}
    with pytest.raises(SynthConfigError, match=r"generators\.0\.params\.radios.*allowed keys: count, radius"):
        load_synth_config(data=bad)
    bad = {**base, "generators": [{"kind": "spots", "params": {"polarity": "up"}}]}
    with pytest.raises(SynthConfigError, match=r"polarity.*'up'.*'dark', 'bright' or 'random'"):
        load_synth_config(data=bad)
    with pytest.raises(SynthConfigError, match=r"unknown key 'sead'.*allowed keys: seed"):
        load_synth_config(data={**base, "sead": 1})


def test_cli_synth_writes_and_reports_bad_config(tmp_path):
    from typer.testing import CliRunner

    from raremine.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["synth", "--config", str(_tiny_config(tmp_path)), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "manifest.csv").exists() and "wrote 6 images" in r.output
    r = runner.invoke(app, ["synth", "-c", str(_tiny_config(tmp_path)), "--out", str(tmp_path / "s1"), "--seed", "1"])
    assert r.exit_code == 0, r.output
    synthesize(_tiny_config(tmp_path, seed=1), tmp_path / "ref1")
    assert _digest(tmp_path / "s1") == _digest(tmp_path / "ref1") != _digest(tmp_path / "o")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"normals": {"skimage": ["wood"]}, "generators": [{"kind": "spots"}]}))
    r = runner.invoke(app, ["synth", "--config", str(bad), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2
    assert "normals.skimage.0" in r.output and "wood" in r.output and "'brick'" in r.output


def test_demo_config_is_valid():
    cfg = load_synth_config(Path(__file__).resolve().parents[1] / "configs" / "synth-demo.yaml")
    assert cfg.normals.skimage and len(cfg.generators) >= 5


def test_demo_archive_defects_come_from_synthesis(tmp_path):
    import csv

    from mining.demo import build_demo_archive

    truth = build_demo_archive(tmp_path, n_images=30, rate=0.1, size=64, seed=2)
    rows = list(csv.DictReader(open(truth, encoding="utf-8")))
    defective = [r for r in rows if r["label"] == "1"]
    assert len(rows) == 30 and len(defective) == 3
    for r in defective:
        assert r["category"] in ("spot", "scratch")
        m = cv2.imread(r["mask"], cv2.IMREAD_GRAYSCALE)
        assert m is not None and set(np.unique(m).tolist()) == {0, 255}


def test_allowed_region_masks_keep_defects_inside(tmp_path, texture):
    (tmp_path / "n").mkdir()
    (tmp_path / "a").mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / "n" / f"t{i}.png"), (np.roll(texture, 9 * i, 0) * 255).astype(np.uint8))
        allowed = np.zeros(texture.shape, np.uint8)
        allowed[:, :40] = 255
        cv2.imwrite(str(tmp_path / "a" / f"t{i}.png"), allowed)
    cfg = _tiny_config(
        tmp_path,
        normals={"folder": str(tmp_path / "n"), "allowed": str(tmp_path / "a")},
        size=None,
        defect_rate=1.0,
        augment={},
        generators=[{"kind": "spots"}, {"kind": "crack"}, {"kind": "perlin"}],
    )
    s = synthesize(cfg, tmp_path / "o")
    assert s.n_defective == 6
    for f in sorted((tmp_path / "o" / "masks").glob("*.png")):
        m = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 0
        assert m.any() and not m[:, 40:].any()
    for f in sorted((tmp_path / "o" / "images").glob("*.png")):  # and nothing changed outside it
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        src = [cv2.imread(str(tmp_path / "n" / f"t{i}.png"), cv2.IMREAD_GRAYSCALE) for i in range(2)]
        assert any(np.array_equal(img[:, 40:], s_[:, 40:]) for s_ in src)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.5, 1.6),
    rotation=st.floats(-180, 180),
)
def test_hard_paste_never_touches_pixels_outside_its_mask(seed, scale, rotation):
    rng = np.random.default_rng(seed)
    target = rng.random((40, 50), dtype=np.float32)
    crop = rng.random((12, 14), dtype=np.float32)
    cmask = np.zeros((12, 14), bool)
    cmask[3:9, 2:12] = True
    res = paste.paste(target, crop, cmask, rng=rng, blend="hard", scale=(scale, scale), rotation=(rotation, rotation))
    assert res.mask.any()
    assert np.array_equal(res.image[~res.mask], target[~res.mask])


@requires_magnetic_tile
def test_real_blowhole_poisson_pasted_onto_a_free_tile_keeps_its_shape():
    blow = sorted((MAGNETIC_TILE / "MT_Blowhole" / "Imgs").glob("*.jpg"))[0]
    free = sorted((MAGNETIC_TILE / "MT_Free" / "Imgs").glob("*.jpg"))[0]
    img = cv2.imread(str(blow), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    mask = cv2.imread(str(blow.with_suffix(".png")), cv2.IMREAD_GRAYSCALE) > 0
    target = cv2.imread(str(free), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    crop, cmask = max(paste.crops_from_mask(img, mask, margin=6), key=lambda cm: cm[1].sum())
    res = paste.paste(target, crop, cmask, rng=0, blend="poisson")
    assert res.mask.sum() == cmask.sum()
    assert np.array_equal(res.image[~res.changed], target[~res.changed])
    # the pit stays darker than its surroundings in the new tile
    ring = cv2.dilate(res.mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~res.mask
    assert res.image[res.mask].mean() < res.image[ring].mean() - 0.03


def test_paste_crops_come_from_masks_and_skip_empty_ones(tmp_path, dark_crop):
    from synthesis.config import load_synth_config as load
    from synthesis.pipeline import Sources

    crop, cmask = dark_crop
    (tmp_path / "imgs").mkdir()
    (tmp_path / "m").mkdir()
    for name, m in (("pit", cmask), ("normal", np.zeros_like(cmask))):
        cv2.imwrite(str(tmp_path / "imgs" / f"{name}.jpg"), (crop * 255).astype(np.uint8))
        cv2.imwrite(str(tmp_path / "m" / f"{name}.png"), m.astype(np.uint8) * 255)
    cv2.imwrite(str(tmp_path / "imgs" / "unlabelled.png"), (crop * 255).astype(np.uint8))
    base = yaml.safe_load(_tiny_config(tmp_path).read_text())
    cfg = load(data={**base, "defects": {"folder": str(tmp_path / "imgs"), "masks": str(tmp_path / "m")}})
    crops = Sources(cfg).crops
    assert len(crops) == 1 and crops[0][0].endswith("pit.jpg") and crops[0][2].sum() == cmask.sum()
    (tmp_path / "m" / "orphan.png").write_bytes((tmp_path / "m" / "pit.png").read_bytes())
    with pytest.raises(ValueError, match="no image named orphan"):
        Sources(cfg)
