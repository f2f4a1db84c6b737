"""Descriptors, outlier scores, fusion and the 2-D map (the unsupervised scorers' shared parts)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mining.catalogue.store import Store
from mining.models.descriptors import GLCM_PROPS, describe, descriptor_names, glcm_properties
from mining.models.embedmap import EmbeddingMap
from mining.models.outliers import knn_indices, outlier_scores, small_clusters
from mining.ranking.rank import fuse, rank_normalize


def test_descriptors_shape_and_signal():
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.normal(0.5, 0.1, (64, 64)).astype(np.float32), (0, 0), 3)
    rough = rng.uniform(0, 1, (64, 64)).astype(np.float32)
    a, b = describe(smooth), describe(rough)
    assert a.shape == (len(descriptor_names()),) and a.dtype == np.float32
    names = descriptor_names()
    assert b[names.index("glcm_contrast_d1")] > a[names.index("glcm_contrast_d1")]
    assert np.isfinite(describe(np.zeros((40, 30), np.uint16))).all()
    with pytest.raises(ValueError, match="lbp_radii"):
        describe(smooth, lbp_radii=(0,))


def test_glcm_properties_equal_graycoprops_and_percentiles_match_numpy():
    from skimage.feature import graycomatrix, graycoprops

    rng = np.random.default_rng(4)
    stripes = (np.arange(48)[None, :] // 3 * np.ones((48, 1))).astype(np.uint8) % 16
    for q in (rng.integers(0, 16, (40, 40)).astype(np.uint8), np.full((20, 20), 5, np.uint8), stripes):
        glcm = graycomatrix(q, [1, 3], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=16, symmetric=True, normed=True)
        ours = glcm_properties(glcm)
        assert ours.shape == (len(GLCM_PROPS), 2, 4)
        for k, prop in enumerate(GLCM_PROPS):
            np.testing.assert_allclose(ours[k], graycoprops(glcm, prop), rtol=1e-9, atol=1e-12, err_msg=prop)
    g8 = (rng.beta(2, 5, (64, 64)) * 255).astype(np.uint8)  # uint8: to_float_gray is then g8 / 255
    g, v = g8 / 255.0, describe(g8)
    names = descriptor_names()
    pct = [v[names.index(n)] for n in ("p01", "p10", "p50", "p90", "p99")]
    np.testing.assert_allclose(pct, np.percentile(g, (1, 10, 50, 90, 99)), atol=1.5 / 255)
    hist = v[[names.index(f"hist_{i}") for i in range(16)]]
    assert hist.sum() == pytest.approx(1.0) and np.abs(hist - np.histogram(g, 16, (0, 1))[0] / g.size).max() < 0.02


def test_outlier_scores_find_planted_point_and_cluster():
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (300, 5))
    X[7] = 8.0
    for method in ("knn", "lof", "iforest"):
        s = outlier_scores(X, method, k=10)
        assert int(np.argmax(s)) == 7, method
    Y = np.vstack([rng.normal(0, 1, (400, 4)), rng.normal(12, 0.2, (4, 4))])
    flags = small_clusters(Y)
    assert flags[-4:].all() and flags[:-4].mean() < 0.02
    with pytest.raises(ValueError, match="method"):
        outlier_scores(X, "svm")


def test_fusion_arithmetic():
    raw = np.array([[1.0, 10.0], [2.0, np.nan], [3.0, 30.0], [4.0, 20.0]])
    np.testing.assert_allclose(rank_normalize(raw[:, 0]), [0.25, 0.5, 0.75, 1.0])
    pct, fused = fuse(raw, np.array([1.0, 3.0]), rule="mean")
    np.testing.assert_allclose(pct[:, 1], [1 / 3, np.nan, 1.0, 2 / 3])
    np.testing.assert_allclose(fused, [(0.25 + 1.0) / 4, 0.5, (0.75 + 3.0) / 4, (1.0 + 2.0) / 4])
    # column 1 primary: it alone decides where it scored; row 1 (no primary score) falls back to column 0
    _, fused = fuse(raw, np.array([1.0, 3.0]), np.array([False, True]), rule="mean")
    np.testing.assert_allclose(fused, [1 / 3, 0.5, 1.0, 2 / 3])
    # a primary scorer with weight 0 does not take over
    _, fused = fuse(raw, np.array([1.0, 0.0]), np.array([False, True]), rule="mean")
    np.testing.assert_allclose(fused, [0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="primary must be 2 booleans"):
        fuse(raw, None, np.array([True]))
    with pytest.raises(ValueError, match="rule must be one of"):
        fuse(raw, rule="median")


def test_cauchy_fusion_arithmetic_and_a_lone_scorer_that_is_right():
    from scipy.stats import cauchy

    raw = np.array([[1.0, 10.0], [2.0, np.nan], [3.0, 30.0], [4.0, 20.0]])
    pct, fused = fuse(raw, np.array([1.0, 3.0]))  # the default rule
    # p-values: 1 - percentile + half a rank step (1/8 for 4 values, 1/6 for 3)
    p = np.column_stack([1 - pct[:, 0] + 1 / 8, 1 - pct[:, 1] + 1 / 6])
    t0 = (cauchy.isf(p[0, 0]) + 3 * cauchy.isf(p[0, 1])) / 4
    np.testing.assert_allclose(fused[0], 1 - cauchy.sf(t0))
    np.testing.assert_allclose(fused[1], 1 - p[1, 0])  # one scorer: its own p-value
    assert ((fused > 0) & (fused < 1)).all()
    # one scorer puts 10 rare rows in its top, three rank them at random: the rare rows stay on top
    rng = np.random.default_rng(0)
    n, rare = 1000, np.arange(10)
    signal = rng.normal(size=n)
    signal[rare] += 6
    table = np.column_stack([signal, rng.normal(size=(n, 3))])
    top = np.argsort(-fuse(table)[1])[: n // 10]
    top_mean = np.argsort(-fuse(table, rule="mean")[1])[: n // 10]
    assert np.isin(rare, top).sum() >= 8 > np.isin(rare, top_mean).sum()


def test_fused_scores_trust_no_scorer_by_default_and_primary_stays_an_option(tmp_path):
    """The stored scores of two scorers: by default every scorer counts; rank.primary lets one decide alone."""
    from mining.ranking.rank import fused_scores

    with Store(tmp_path / "c.db") as store:
        ids = []
        for i in range(4):
            p = tmp_path / f"{i}.png"
            cv2.imwrite(str(p), np.full((8, 8), i * 40, np.uint8))
        from mining.catalogue.index import index_archive

        index_archive(store, [str(tmp_path)])
        ids = sorted(r["id"] for r in store.images())
        bb = dict(zip(ids, [0.1, 0.4, 0.3, 0.2], strict=True))
        ae = dict(zip(ids, [9.0, 1.0, 2.0, 3.0], strict=True))
        from mining.scorers._whole import write_scores

        for name, table in (("backbone", bb), ("autoencoder", ae)):
            write_scores(store, name, np.array(ids), np.array([table[i] for i in ids]), [{}] * 4, None)
        default = fused_scores(store)
        np.testing.assert_allclose(default.fused, fuse(default.raw)[1])  # no primary scorer: the plain mean
        fs = fused_scores(store, primary=["backbone"])
        assert fs.image_ids[int(np.argmax(fs.fused))] == ids[1]
        assert set(fs.why(int(np.argmax(fs.fused)))) == {"autoencoder", "backbone"}
        everything = fused_scores(store, primary=[])
        np.testing.assert_allclose(everything.fused, fuse(everything.raw)[1])
        mean = fused_scores(store, primary=[], rule="mean")
        np.testing.assert_allclose(mean.fused, fuse(mean.raw, rule="mean")[1])
        # weight 0 may name a scorer that did not run (the tile config's embedding); a positive one may not
        only_bb = fused_scores(store, {"autoencoder": 0, "embedding": 0}, primary=[])
        assert only_bb.image_ids[int(np.argmax(only_bb.fused))] == ids[1]
        with pytest.raises(ValueError, match="embedding"):
            fused_scores(store, {"embedding": 1.0})


@pytest.fixture(scope="session")
def clustered():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (4, 10))
    X = np.vstack([c + rng.normal(0, 1, (40, 10)) for c in centres]).astype(np.float32)
    return X, np.repeat(np.arange(4), 40)


@pytest.fixture(scope="session")
def numba_fits(clustered):
    """The session's only numba work: one UMAP fit and one pynndescent graph (compiled once, cached)."""
    X = clustered[0]
    exact, _ = knn_indices(X, 5)
    approx, _ = knn_indices(X, 5, approx_threshold=100)
    return EmbeddingMap(method="umap", n_neighbors=10).fit(X), exact, approx


@pytest.fixture(scope="session")
def umap_map(numba_fits):
    return numba_fits[0]


@pytest.mark.slow  # the session's one numba compile (UMAP + pynndescent): 94 s cold on a busy 2-core machine
@pytest.mark.timeout(900)
def test_approximate_neighbours_agree_with_exact(numba_fits):
    _, exact, approx = numba_fits
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact, approx, strict=True)])
    assert overlap > 0.9
    assert not (exact == np.arange(len(exact))[:, None]).any()
    assert not (approx == np.arange(len(approx))[:, None]).any()


@pytest.mark.parametrize("method", ["tsne", pytest.param("umap", marks=pytest.mark.slow)])  # umap: numba_fits
def test_map_quality(clustered, request, method):
    from sklearn.manifold import trustworthiness

    X, _ = clustered
    emap = request.getfixturevalue("umap_map") if method == "umap" else EmbeddingMap(method="tsne").fit(X)
    assert emap.method_ == method
    Z = emap.embedding_
    assert Z.shape == (len(X), 2) and np.isfinite(Z).all()
    assert trustworthiness(X, Z, n_neighbors=10) > 0.9
    if method == "umap":
        assert np.isfinite(emap.transform(X[:5])).all()
    else:
        with pytest.raises(ValueError, match="t-SNE"):
            emap.transform(X[:5])


@pytest.mark.slow  # numba_fits
def test_large_map_regime_keeps_quality(clustered, umap_map):
    """From ``large`` points on: PCA start and fewer epochs (here forced on 160 points)."""
    from sklearn.manifold import trustworthiness

    X, _ = clustered
    emap = EmbeddingMap(method="umap", n_neighbors=10, large=100, large_epochs=50).fit(X)
    assert emap.model_.init == "pca" and emap.model_.n_epochs == 50
    assert np.isfinite(emap.embedding_).all() and trustworthiness(X, emap.embedding_, n_neighbors=10) > 0.9
    assert umap_map.model_.init == "spectral"  # below ``large``: umap-learn's defaults
    with pytest.raises(ValueError, match="large_epochs must be >= 1"):
        EmbeddingMap(large_epochs=0).fit(X)


def test_map_rejects_bad_parameters():
    with pytest.raises(ValueError, match="method"):
        EmbeddingMap(method="pca").fit(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="at least 4"):
        EmbeddingMap().fit(np.zeros((3, 3)))
