"""The contrast scorer: its fast approximations agree with the exact computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from mining.scorers import get_scorer
from tests.conftest import add_blob, make_texture


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    out = [make_texture(rng, 256) for _ in range(24)]
    out[5] = add_blob(out[5], (100, 140), radius=3, value=235)
    out[17] = add_blob(out[17], (200, 60), radius=5, value=20)
    return out


def test_fast_path_matches_exact(images):
    fast = get_scorer("contrast").prepare()
    exact = get_scorer("contrast", stat_stride=1, fast_background=False).prepare()
    rf = [fast.score_image(im) for im in images]
    re = [exact.score_image(im) for im in images]
    for a, b in zip(rf, re, strict=True):
        assert a.map.shape == b.map.shape == (256, 256) and a.map.dtype == np.float32
        assert np.abs(a.map - b.map).max() <= 0.05 * b.map.max()
        assert a.score == pytest.approx(b.score, rel=0.08)
    sf, se = np.array([r.score for r in rf]), np.array([r.score for r in re])
    assert spearmanr(sf, se)[0] > 0.95
    assert set(np.argsort(-sf)[:2]) == set(np.argsort(-se)[:2]) == {5, 17}


def test_small_images_and_bad_parameters():
    tiny = make_texture(np.random.default_rng(0), 20)
    r = get_scorer("contrast").prepare().score_image(tiny)
    assert r.map.shape == (20, 20) and np.isfinite(r.score)
    with pytest.raises(ValueError, match="stat_stride must be an integer >= 1, got 0"):
        get_scorer("contrast", stat_stride=0).prepare()


@pytest.mark.parametrize("n", [1, 2, 7, 64, 4096, 4097])
def test_median_and_percentile_match_numpy(n):
    from mining.scorers.contrast import _median, _percentile

    values = np.random.default_rng(n).normal(size=(n, 1)).astype(np.float32)
    assert _median(values) == pytest.approx(float(np.median(values)), abs=1e-6)
    for q in (0.0, 10.0, 90.0, 99.5, 100.0):
        assert _percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-6)


def test_input_image_is_not_modified(images):
    im = images[5].astype(np.float32) / 255
    before = im.copy()
    get_scorer("contrast").prepare().score_image(im)
    np.testing.assert_array_equal(im, before)
