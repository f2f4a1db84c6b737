"""Pixel classifiers: features, training, prediction, persistence, scorer, CLI."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from mining.models.pixel import (
    FeatureSpec,
    PixelClassifier,
    PixelModelError,
    compute_features,
    features_from_gray,
    fit_pixel_model,
    load_pixel_model,
    load_training_pairs,
    map_stats,
    uncertainty,
)
from mining.scorers import get_scorer
from tests.conftest import add_blob, make_texture

FAST = PixelClassifier(n_estimators=20, max_depth=4, random_state=0)


def _blob_pair(rng, center, size=64):
    img = add_blob(make_texture(rng, size), center, radius=4)
    lab = np.ones((size, size), np.uint8)
    cv2.circle(lab, center, 4, 2, -1)
    return img, lab


@pytest.fixture(scope="module")
def blob_model():
    rng = np.random.default_rng(1)
    pairs = [(*_blob_pair(rng, (16 + 10 * i, 40 - 6 * i)), f"train{i}") for i in range(4)]
    pairs.append((make_texture(rng), np.ones((64, 64), np.uint8), "clean"))
    return fit_pixel_model(pairs, classifier=FAST, budget=4000, class_names={2: "blob"})


@pytest.fixture
def label_dirs(tmp_path):
    rng = np.random.default_rng(2)
    imgs, labs = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labs.mkdir()
    for i in range(3):
        img, lab = _blob_pair(rng, (20 + 8 * i, 30))
        cv2.imwrite(str(imgs / f"t{i}.png"), img)
        cv2.imwrite(str(labs / f"t{i}.png"), lab)
    return imgs, labs


# -- features ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bank", ["ilastik", "basic"])
@pytest.mark.parametrize(
    "image",
    [
        np.zeros((40, 50), np.uint8),
        np.full((40, 50, 3), 30000, np.uint16),
        np.random.default_rng(0).random((40, 50)).astype(np.float32),
    ],
)
def test_feature_shapes_and_dtypes(bank, image):
    spec = FeatureSpec(bank=bank, downscale=2, sigmas=(1, 2))
    f = compute_features(image, spec)
    assert f.dtype == np.float32
    assert f.shape == (20, 25, len(spec.feature_names()))
    assert np.isfinite(f).all()


@pytest.mark.parametrize("bank", ["ilastik", "basic", "ilastik-fast"])
@pytest.mark.parametrize("stride", [2, 3])
def test_strided_features_equal_the_subsampled_full_ones(bank, stride):
    """Mining at a stride computes the same feature values as training does, at those pixels."""
    gray = make_texture(np.random.default_rng(5), 61).astype(np.float32) / 255
    fast = bank == "ilastik-fast"
    spec = FeatureSpec(bank=bank.split("-")[0], sigmas=(0.5, 2.0, 4.0, 8.0), border_feature=True, fast_scales=fast)
    full = features_from_gray(gray, spec)
    strided = features_from_gray(gray, spec, stride=stride, offset=(3, 4), full=(80, 90))
    np.testing.assert_array_equal(
        strided, features_from_gray(gray, spec, offset=(3, 4), full=(80, 90))[::stride, ::stride]
    )
    assert strided.shape == (-(-61 // stride), -(-61 // stride), full.shape[-1])
    np.testing.assert_array_equal(strided[..., :-1], full[::stride, ::stride, :-1])
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        features_from_gray(gray, spec, stride=0)


def test_fast_scales_approximate_the_full_resolution_channels():
    """The shrunk-grid scales follow the exact ones closely away from the border, and cost less."""
    rng = np.random.default_rng(7)
    noise = rng.normal(0.5, 0.2, (160, 200)).astype(np.float32)
    gray = cv2.GaussianBlur(noise, (0, 0), 3.0) + cv2.GaussianBlur(noise, (0, 0), 12.0) * 4
    exact = FeatureSpec(sigmas=(1.0, 4.0, 8.0, 16.0))
    fast = FeatureSpec(sigmas=(1.0, 4.0, 8.0, 16.0), fast_scales=True)
    a, b = features_from_gray(gray, exact), features_from_gray(gray, fast)
    names = exact.feature_names()
    for i, name in enumerate(names):
        if name == "intensity" or name.endswith("_1"):  # below 4 px nothing is shrunk
            np.testing.assert_array_equal(a[..., i], b[..., i], err_msg=name)
            continue
        x, y = a[40:-40, 40:-40, i].ravel(), b[40:-40, 40:-40, i].ravel()
        assert np.corrcoef(x, y)[0, 1] > 0.99, name
        assert np.abs(x - y).max() < 0.15 * (x.max() - x.min()), name
    assert fast.grid_unit == 4 and exact.grid_unit == 1
    assert fast.fingerprint() != exact.fingerprint()
    # a grid too small to shrink 4x is shrunk less, or not at all
    tiny = features_from_gray(gray[:12, :12], fast)
    np.testing.assert_array_equal(tiny, features_from_gray(gray[:12, :12], exact))


def test_border_feature_and_padding_change_features():
    img = make_texture(np.random.default_rng(0))
    a = compute_features(img, FeatureSpec(downscale=1, sigmas=(1, 2), padding="reflect", border_feature=True))
    b = compute_features(img, FeatureSpec(downscale=1, sigmas=(1, 2), padding="constant", border_feature=True))
    names = FeatureSpec(border_feature=True).feature_names()
    assert names[-1] == "border_distance"
    assert a[0, 0, -1] < 0.05 and a[32, 32, -1] > 0.95
    # padding changes only pixels near the border
    assert not np.allclose(a[0], b[0])
    np.testing.assert_allclose(a[28:36, 28:36], b[28:36, 28:36], atol=1e-4)


def test_log_normalize_gives_a_pit_the_same_response_under_bright_and_dim_light():
    """A pit that reflects half the light has one DoG response whatever the illumination."""
    yy, xx = np.mgrid[:48, :48]
    pit = np.where((yy - 24) ** 2 + (xx - 24) ** 2 <= 9, 0.5, 1.0)
    spec = FeatureSpec(sigmas=(1.0, 2.0), normalize="log")
    dog = spec.feature_names().index("dog_1")
    responses = {}
    for normalize in ("none", "log"):
        spec = FeatureSpec(sigmas=(1.0, 2.0), normalize=normalize)
        bright, dim = (compute_features(np.uint8(np.round(200 * light * pit)), spec) for light in (1.0, 0.5))
        responses[normalize] = dim[24, 24, dog] / bright[24, 24, dog]
    np.testing.assert_allclose(
        compute_features(np.full((8, 8), 255, np.uint8), FeatureSpec(sigmas=(1.0,), normalize="log"))[..., 0],
        np.log(1 + 1 / 64),
        rtol=1e-6,
    )
    assert abs(responses["log"] - 1) < 0.1  # 1/64 offset: not exactly ratio-invariant
    assert abs(responses["none"] - 0.5) < 0.02  # linear: the response halves with the light


def test_log_centered_features_do_not_move_with_the_exposure():
    """Under a global gain every log_centered channel stays (the smoothed ones hold relative brightness)."""
    yy, xx = np.mgrid[:48, :48]
    scene = np.where((yy - 24) ** 2 + (xx - 24) ** 2 <= 9, 0.5, 1.0) * np.where(yy < 12, 1.3, 1.0)  # pit, bright band
    feats = {}
    for normalize in ("log", "log_centered"):
        spec = FeatureSpec(sigmas=(1.0, 4.0), normalize=normalize)
        feats[normalize] = [compute_features(np.uint16(np.round(60000 * g * scene)), spec) for g in (0.8, 0.4)]
    bright, dim = feats["log_centered"]
    np.testing.assert_allclose(dim, bright, atol=0.03)  # the 1/64 offset: the dim pit (0.2) moves by 0.02
    bright, dim = feats["log"]
    assert (bright[..., 0] - dim[..., 0]).min() > 0.6  # "log" keeps the level: about log(2) lower
    # centred: the median surface sits at 0, the band above it, the pit below
    assert abs(feats["log_centered"][0][36, 36, 0]) < 1e-6
    assert feats["log_centered"][0][4, 36, 0] > 0.2 and feats["log_centered"][0][24, 24, 0] < -0.5


def test_bad_feature_spec_is_named():
    with pytest.raises(ValueError, match="bank"):
        FeatureSpec(bank="fancy")
    with pytest.raises(ValueError, match="unknown feature keys"):
        FeatureSpec.from_dict({"sigma": 1})


# -- the known answer ----------------------------------------------------------------------------------
def test_bright_blob_is_found(blob_model):
    rng = np.random.default_rng(9)
    img = add_blob(make_texture(rng), (40, 22), radius=4)
    proba = blob_model.predict_proba(img)
    assert proba.shape == (64, 64, 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(-1), 1, atol=1e-5)
    blob = proba[..., list(blob_model.classes).index(2)]
    assert blob[22, 40] > 0.8
    assert np.percentile(blob, 90) < 0.2

    scorer = get_scorer("pixel", border=0).set_model(blob_model)
    clean = [scorer.score_image(make_texture(rng)).score for _ in range(5)]
    with_blob = [scorer.score_image(add_blob(make_texture(rng), (20 + 5 * i, 35), radius=4)).score for i in range(5)]
    assert min(with_blob) > max(clean)
    r = scorer.score_image(img)
    assert r.map.shape == img.shape and r.map.dtype == np.float32
    assert r.stats["blob_components"] >= 1 and r.stats["blob_largest"] > 10
    assert 0 <= r.stats["uncertainty_mean"] <= 0.5


@pytest.mark.parametrize("fast", [False, True])
def test_tiled_equals_untiled(blob_model, fast):
    rng = np.random.default_rng(3)
    big = np.hstack([make_texture(rng, 96), add_blob(make_texture(rng, 96), (50, 50)), make_texture(rng, 96)])
    if fast:  # the shrunk grids need tiles that start at multiples of 4 and wide halos
        pairs = [(*_blob_pair(rng, (20 + 8 * i, 30 + 5 * i)), f"t{i}") for i in range(3)]
        spec = FeatureSpec(sigmas=(1.0, 4.0, 8.0), fast_scales=True)
        blob_model = fit_pixel_model(pairs, spec=spec, classifier=FAST, budget=4000, class_names={2: "blob"})
    whole = blob_model.predict_proba(big)
    tiled = blob_model.predict_proba(big, tile_size=48)
    np.testing.assert_allclose(tiled, whole, atol=1e-4)
    s_whole = blob_model.predict_proba(big, stride=2)
    s_tiled = blob_model.predict_proba(big, stride=2, tile_size=48)
    np.testing.assert_allclose(s_tiled, s_whole, atol=1e-4)


def test_stride_grid_shape(blob_model):
    img = make_texture(np.random.default_rng(4), 64)
    assert blob_model.predict_proba(img, stride=2, full_resolution=False).shape == (32, 32, 2)


def test_map_stats_and_uncertainty():
    p = np.zeros((20, 20), np.float32)
    p[2:5, 2:5] = 0.9
    p[10:12, 15:17] = 0.7
    st = map_stats(p, threshold=0.5, top_k=9)
    assert st["components"] == 2 and st["largest"] == 9
    assert st["max"] == pytest.approx(0.9) and st["topk_mean"] == pytest.approx(0.9)
    assert st["area"] == pytest.approx(13 / 400)
    two = np.stack([1 - p, p], -1)
    assert uncertainty(two, "margin").max() == pytest.approx(0.3)
    assert uncertainty(np.full((1, 2), 0.5), "entropy")[0] == pytest.approx(1.0)


def test_a_budget_that_keeps_too_few_defect_pixels_is_reported():
    """Natural proportions on large images keep a handful of defect pixels: fit-pixel says so, balanced does not."""
    rng = np.random.default_rng(7)
    img, lab = _blob_pair(rng, (100, 100), size=256)  # a radius-4 blob: 49 of 65 536 pixels
    pairs = [(img, lab, "large")]
    natural = fit_pixel_model(pairs, classifier=FAST, budget=20_000, sampling="natural")
    (w,) = natural.metrics["sampling_warnings"]
    assert "class 2" in w and "pixel.budget" in w
    balanced = fit_pixel_model(pairs, classifier=FAST, budget=20_000, sampling="balanced")
    assert "sampling_warnings" not in balanced.metrics  # every defect pixel kept: nothing more to give


# -- persistence --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["xgboost", "random_forest"])
def test_save_load_identical(tmp_path, method, blob_model):
    rng = np.random.default_rng(5)
    pairs = [(*_blob_pair(rng, (30, 30)), "a"), (*_blob_pair(rng, (20, 40)), "b")]
    clf = PixelClassifier(method=method, n_estimators=10, max_depth=5)
    model = fit_pixel_model(pairs, classifier=clf, budget=2000, hard_rounds=0)
    path, fmt = model.save(tmp_path / "models")
    assert fmt == {"xgboost": "xgboost-json", "random_forest": "skops"}[method]
    loaded = load_pixel_model(path)
    img = add_blob(make_texture(rng), (33, 33))
    np.testing.assert_array_equal(loaded.predict_proba(img), model.predict_proba(img))
    assert loaded.class_names == model.class_names


def test_forest_probabilities_and_feature_layout_match_the_libraries():
    """The pixel classifier's own loop over the forest's trees gives the forest's probabilities."""
    rng = np.random.default_rng(6)
    X = rng.random((3000, 7)).astype(np.float32)
    y = np.where(X[:, 0] + X[:, 1] > 1.2, 2, 1)
    clf = PixelClassifier(method="random_forest", n_estimators=7, max_depth=4).fit(X, y)
    Xt = np.asfortranarray(rng.random((500, 7)).astype(np.float32))
    np.testing.assert_array_equal(clf.predict_proba(Xt), clf.model_.predict_proba(Xt).astype(np.float32))
    gray = make_texture(rng, 40).astype(np.float32) / 255
    spec = FeatureSpec(sigmas=(1.0, 4.0), fast_scales=True, border_feature=True)
    f = features_from_gray(gray, spec, stride=2)
    assert f.flags.c_contiguous and f.dtype == np.float32
    from mining.models.pixel_features import _ilastik_bank, _interleave

    chans = _ilastik_bank(gray, spec, 2)
    np.testing.assert_array_equal(_interleave(chans), np.stack(chans, axis=-1))
    np.testing.assert_array_equal(f[..., :-1], np.stack(chans, axis=-1))


def test_other_features_refused(tmp_path, blob_model):
    path, _ = blob_model.save(tmp_path)
    with pytest.raises(PixelModelError, match=r"other features.*downscale"):
        load_pixel_model(path, expect={**blob_model.spec.to_dict(), "downscale": 2.0})
    meta = json.loads(open(path).read())
    meta["feature_names"] = meta["feature_names"][:-1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(PixelModelError, match="trained with features"):
        load_pixel_model(bad)


def test_untrusted_skops_refused(tmp_path):
    import skops.io as sio
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(6)
    model = fit_pixel_model(
        [(*_blob_pair(rng, (30, 30)), "a")],
        budget=500,
        hard_rounds=0,
        classifier=PixelClassifier(method="random_forest", n_estimators=3),
    )
    path, _ = model.save(tmp_path)
    meta = json.loads(open(path).read())
    sio.dump(Pipeline([("f", FunctionTransformer(np.exp))]), tmp_path / meta["estimator_file"])
    with pytest.raises(PixelModelError, match="not trusted"):
        load_pixel_model(path)


# -- the estimator --------------------------------------------------------------------------------------
_EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": (
        "bootstrap / histogram binning: integer weights are not exactly repeated rows"
    ),
    "check_class_weight_classifiers": "class_weight takes only 'balanced' or None (no per-class dict)",
}


@parametrize_with_checks(
    [
        PixelClassifier(n_estimators=5, max_depth=3),
        PixelClassifier(method="random_forest", n_estimators=5, max_depth=3),
    ],
    expected_failed_checks=lambda est: _EXPECTED_FAILURES,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- training data errors -----------------------------------------------------------------------------
def test_label_of_other_size_names_file(label_dirs):
    imgs, labs = label_dirs
    cv2.imwrite(str(labs / "t1.png"), np.ones((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"t1\.png.*10x10 px but its image is 64x64"):
        load_training_pairs(imgs, labs)


def test_unknown_class_id_names_file(label_dirs):
    imgs, labs = label_dirs
    lab = np.ones((64, 64), np.uint8)
    lab[5, 5] = 7
    cv2.imwrite(str(labs / "t2.png"), lab)
    with pytest.raises(ValueError, match=r"t2\.png.*unknown class ids \[7\]"):
        load_training_pairs(imgs, labs, classes=[1, 2])


def test_no_labelled_pixel_and_one_class(label_dirs):
    imgs, labs = label_dirs
    for p in labs.iterdir():
        cv2.imwrite(str(p), np.zeros((64, 64), np.uint8))
    pairs = load_training_pairs(imgs, labs)
    with pytest.raises(ValueError, match=r"no labelled pixel.*t0\.png"):
        fit_pixel_model(pairs)
    for p in labs.iterdir():
        cv2.imwrite(str(p), np.ones((64, 64), np.uint8))
    with pytest.raises(ValueError, match="only class 1 is labelled"):
        fit_pixel_model(load_training_pairs(imgs, labs))


def test_no_matching_stems(tmp_path, label_dirs):
    imgs, _ = label_dirs
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no image in .* has a label image"):
        load_training_pairs(imgs, empty)


# -- end to end through the CLI ---------------------------------------------------------------------------
def test_cli_fit_mine_export(tmp_path, tiny_archive, label_dirs):
    from typer.testing import CliRunner

    from raremine.cli import app

    runner = CliRunner()
    db = tmp_path / "cat.db"
    imgs, labs = label_dirs
    archive = tmp_path / "archive"
    archive.mkdir()
    linked = sorted(set(list(tiny_archive["truth"])[:12]) | {p for p, t in tiny_archive["truth"].items() if t})
    for p in linked:
        os.symlink(p, archive / os.path.basename(p))
    res = runner.invoke(app, ["index", str(archive), "--db", str(db)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "fit-pixel",
            "--db",
            str(db),
            "--images",
            str(imgs),
            "--labels",
            str(labs),
            "--set",
            "pixel.n_estimators=20",
            "--set",
            "pixel.budget=3000",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "classes background, defect" in res.output
    assert os.path.isdir(tmp_path / "cat.models" / "pixel")
    # an image that breaks after indexing is recorded, not fatal
    broken = archive / "img_000.png"
    os.unlink(broken)
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    res = runner.invoke(
        app, ["mine", "--db", str(db), "--scorers", "pixel", "--backend", "inline", "--set", "scorers.pixel.border=0"]
    )
    assert res.exit_code == 0, res.output
    assert "failed: truncated 1" in res.output or "failed: decode_error 1" in res.output, res.output
    from mining.catalogue.store import Store

    with Store(db) as store:
        rows = store.query(
            "SELECT i.path, s.score, s.map_path FROM scores s JOIN images i ON i.id = s.image_id"
            " WHERE s.scorer = 'pixel' AND s.tile = -1 ORDER BY s.score DESC"
        )
    assert len(rows) == len(linked) - 1  # the broken one has no score
    top2 = {os.path.basename(r[0]) for r in rows[:2]}
    assert top2 == {"img_007.png", "img_023.png"}
    assert all(os.path.exists(r[2]) for r in rows)
    out = tmp_path / "scores.csv"
    res = runner.invoke(app, ["export", "--db", str(db), "--what", "scores", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "pixel" in out.read_text().splitlines()[0]


def test_cli_fit_pixel_bad_labels_exit_2(tmp_path, label_dirs):
    from typer.testing import CliRunner

    from raremine.cli import app

    imgs, labs = label_dirs
    cv2.imwrite(str(labs / "t0.png"), np.full((64, 64), 3, np.uint8))
    res = CliRunner().invoke(
        app, ["fit-pixel", "--db", str(tmp_path / "c.db"), "--images", str(imgs), "--labels", str(labs)]
    )
    assert res.exit_code == 2
    assert "t0.png" in res.output and "unknown class ids [3]" in res.output


def test_scorer_without_model_says_what_to_do(tmp_path):
    from mining.catalogue.store import Store

    with Store(tmp_path / "c.db") as store, pytest.raises(ValueError, match="fit-pixel"):
        get_scorer("pixel").prepare(store)
    with pytest.raises(ValueError, match="score_rule"):
        get_scorer("pixel", score_rule="median").prepare(None)


def test_demo_pixel_model_is_registered_and_scores(tmp_path):
    from mining.catalogue.store import Store
    from mining.demo import build_demo_archive, fit_demo_pixel, read_truth

    with Store(tmp_path / "catalogue.db") as store:
        res = fit_demo_pixel(store, tmp_path, n_train=6, seed=3)
        assert store.latest_model("pixel")["path"] == res["path"]
        scorer = get_scorer("pixel").prepare(store)
    truth = read_truth(build_demo_archive(tmp_path / "check", n_images=6, rate=0.5, seed=7))
    scores = {p: scorer.score_image(cv2.imread(p, cv2.IMREAD_UNCHANGED)).score for p in truth}
    assert all(0 <= s <= 1 for s in scores.values())


# -- self-tuning (mining.models.pixel_tune) ---------------------------------------------------------------------
def _dips(radius, seed, n_def=5, n_norm=3, size=128):
    """Noisy images; a defect is a smooth dark dip of scale ``radius``; background has bright bumps of that scale."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    pairs = []
    for i in range(n_def + n_norm):
        img = rng.normal(128, 25, (size, size))
        lab = np.ones((size, size), np.uint8)
        for k in range(3):
            c = rng.integers(2 * radius + 2, size - 2 * radius - 2, 2)
            d2 = (yy - c[0]) ** 2 + (xx - c[1]) ** 2
            if i < n_def and k == 0:
                img -= 40 * np.exp(-d2 / (2 * radius**2))
                lab[d2 <= (1.2 * radius) ** 2] = 2
            else:
                img += 40 * np.exp(-d2 / (2 * radius**2))
        pairs.append((np.clip(img, 0, 255).astype(np.uint8), lab, f"im{i}.png"))
    return pairs


@pytest.fixture
def quick_tuner(monkeypatch):
    import mining.models.pixel_tune as pt

    monkeypatch.setattr(pt, "TUNE_CLASSIFIER", {**pt.TUNE_CLASSIFIER, "n_estimators": 20, "max_depth": 4})
    monkeypatch.setattr(pt, "ROWS_PER_CLASS", 400)
    return pt


@pytest.mark.parametrize(("radius", "right"), [(2, (0.5, 1.0)), (7, (4.0, 8.0))])
def test_tuner_picks_the_scale_of_the_defects(quick_tuner, radius, right):
    pt = quick_tuner
    pairs = _dips(radius, seed=0)
    windows = [(0.5, 1.0), (4.0, 8.0), (16.0, 32.0)]
    res = pt.tune_pixel_model(
        pairs, windows=windows, normalizations=None, families=None, base=FeatureSpec(fast_scales=True, normalize="none")
    )
    assert pt.window_of(res.spec) == right
    objectives = {tuple(c["scales"]): c["objective"] for c in res.candidates}
    assert objectives[right] == max(objectives.values())
    # the window proposed from the masks' sizes covers the defects' scale, whatever the candidates given
    first = pt.scale_windows(pt.defect_sizes(pairs))[0]
    assert min(first) <= radius <= max(first)


def test_defect_sizes_measure_width_and_diameter():
    import mining.models.pixel_tune as pt

    disc = np.ones((100, 100), np.uint8)
    cv2.circle(disc, (30, 30), 10, 2, -1)  # width = diameter = 21 px
    line = np.ones((100, 100), np.uint8)
    line[70:73, 10:90] = 2  # 3 px wide, 80 long: equivalent diameter sqrt(4 * 240 / pi) = 17.5
    blank = np.zeros((100, 100), np.uint8)
    s = pt.defect_sizes([(blank, disc, "a")])
    assert s["components"] == 1 and 19 <= s["width"] <= 23 and 20 <= s["diameter"] <= 22
    s = pt.defect_sizes([(blank, line, "b")])
    assert 3 <= s["width"] <= 5 and 17 <= s["diameter"] <= 18


def test_tuned_choice_is_stored_reloaded_and_used_by_the_scorer(tmp_path, quick_tuner):
    from mining.catalogue.store import Store
    from mining.config import PixelConfig
    from mining.learning.pixel_fit import fit_pixel

    pairs = _dips(3, seed=2, n_def=3, n_norm=2, size=64)
    imgs, labs = _write_pairs(tmp_path, pairs)
    with Store(tmp_path / "c.db") as store:
        res = fit_pixel(store, imgs, labs, PixelConfig(tune_final="tuner", n_estimators=10), progress=None)
        assert res["method"] == "xgboost"  # the tuner's own estimator
        own = fit_pixel(store, imgs, labs, PixelConfig(n_estimators=10), progress=None)
        assert own["method"] == "random_forest"  # the section's classifier on the tuned features
        assert own["metrics"]["tuning"]["features"] == res["metrics"]["tuning"]["features"]
    tuning = res["metrics"]["tuning"]
    assert tuning["estimate"]["pairs"] == 3 * 2 and tuning["estimate"]["folds"] == 5
    model = load_pixel_model(res["path"])
    assert model.metrics["tuning"]["scorer"] == tuning["scorer"]
    assert model.spec.to_dict() == tuning["features"]
    scorer = get_scorer("pixel").set_model(model)
    assert (scorer._score_rule, scorer._border) == (tuning["scorer"]["score_rule"], tuning["scorer"]["border"])
    explicit = get_scorer("pixel", border=5, score_rule="area").set_model(model)
    assert (explicit._score_rule, explicit._border) == ("area", 5)
    untuned = get_scorer("pixel").set_model(fit_pixel_model(pairs, classifier=FAST, budget=2000))
    assert (untuned._score_rule, untuned._border) == ("max", 12)


def test_bad_labels_for_tuning_say_what_is_needed(quick_tuner):
    pt = quick_tuner
    pairs = _dips(3, seed=1, n_def=2, n_norm=2, size=64)
    only_bg = [(img, np.ones_like(lab), name) for img, lab, name in pairs]
    with pytest.raises(pt.TuningError, match=r"im0\.png.*only background is labelled.*class 2"):
        pt.tune_pixel_model(only_bg)
    only_defect = [(img, np.where(lab == 2, 2, 0).astype(np.uint8), name) for img, lab, name in pairs]
    with pytest.raises(pt.TuningError, match=r"no label image .*im0\.png.* marks background \(class id 1\)"):
        pt.tune_pixel_model(only_defect)
    with pytest.raises(pt.TuningError, match=r"at least 2 labelled images.*im0\.png.*--no-tune"):
        pt.tune_pixel_model(pairs[:1])
    _, _, warnings = pt.check_labels(pairs[:2])  # two defect images, no normal one
    assert any("only 2 labelled defect image" in w for w in warnings)
    assert any("no normal image" in w for w in warnings)


def test_feature_families_select_channels():
    spec = FeatureSpec(sigmas=(1.0, 2.0), families=("log", "hess"))
    assert spec.feature_names() == ["log_1", "hess_e1_1", "hess_e2_1", "log_2", "hess_e1_2", "hess_e2_2"]
    img = make_texture(np.random.default_rng(0))
    full = compute_features(img, FeatureSpec(sigmas=(1.0, 2.0)))
    names = FeatureSpec(sigmas=(1.0, 2.0)).feature_names()
    sub = compute_features(img, spec)
    np.testing.assert_array_equal(sub, full[..., [names.index(n) for n in spec.feature_names()]])
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match=r"features.families must be a non-empty list from .*'edges'"):
        FeatureSpec(families=("edges",))


def test_cli_fit_pixel_prints_the_estimate_and_no_tune_keeps_defaults(tmp_path, quick_tuner):
    from typer.testing import CliRunner

    from raremine.cli import app

    pairs = _dips(3, seed=3, n_def=3, n_norm=2, size=64)
    imgs, labs = _write_pairs(tmp_path, pairs)
    args = ["fit-pixel", "--db", str(tmp_path / "c.db"), "--images", str(imgs), "--labels", str(labs)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "held-out defect images ranked above held-out normal ones in" in res.output
    assert "of 6 pairs" in res.output and "held-out pixel AP" in res.output
    assert "warning: only 3 labelled defect image" not in res.output
    res = CliRunner().invoke(app, [*args, "--no-tune"])
    assert res.exit_code == 0, res.output
    assert "random_forest" in res.output and "no cross-validated estimate" in res.output


def _write_pairs(folder, pairs):
    """``folder/images/NAME`` and ``folder/labels/NAME`` for each (image, label image, NAME); the two folders."""
    imgs, labs = folder / "images", folder / "labels"
    imgs.mkdir()
    labs.mkdir()
    for img, lab, name in pairs:
        cv2.imwrite(str(imgs / name), img)
        cv2.imwrite(str(labs / name), lab)
    return imgs, labs
