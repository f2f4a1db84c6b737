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


def _grooved(rng: np.random.Generator, vertical: bool = True) -> np.ndarray:
    """A tile-like texture: grooves along one axis, a little noise."""
    x = np.arange(128)
    grooves = 0.5 + 0.15 * np.sin(x / 2.0)
    im = np.tile(grooves, (128, 1)) if vertical else np.tile(grooves[:, None], (1, 128))
    return (im + rng.normal(0, 0.01, im.shape)).astype(np.float32)


def test_polarity_dark_ignores_bright_spots():
    rng = np.random.default_rng(3)
    base = _grooved(rng)
    dark, bright = base.copy(), base.copy()
    dark[60:64, 60:64] -= 0.3
    bright[60:64, 60:64] += 0.3
    s = get_scorer("contrast", polarity="dark", background_sigma=(24, 3)).prepare()
    rd, rb, r0 = (s.score_image(im) for im in (dark, bright, base))
    assert rd.score > 2 * rb.score and rd.score > 2 * r0.score
    assert rd.map.min() >= 0 and np.unravel_index(rd.map.argmax(), rd.map.shape) in [
        (i, j) for i in range(58, 66) for j in range(58, 66)
    ]
    both = get_scorer("contrast", polarity="both", background_sigma=(24, 3)).prepare()
    assert both.score_image(bright).score > 1.5 * both.score_image(base).score  # "both" still sees it


@pytest.mark.parametrize("vertical", [True, False])
def test_auto_orientation_follows_the_grooves(vertical):
    """An elongated background along the grooves removes them; across them it leaves them as 'defects'."""
    rng = np.random.default_rng(4)
    im = _grooved(rng, vertical)
    spot = im.copy()
    spot[60:64, 60:64] -= 0.3
    auto = get_scorer("contrast", background_sigma=(24, 3), polarity="dark").prepare()
    wrong = get_scorer(
        "contrast", background_sigma=(24, 3), polarity="dark", orientation="horizontal" if vertical else "vertical"
    ).prepare()
    assert auto._axis_sigmas(im) == ((24.0, 3.0) if vertical else (3.0, 24.0))

    # along the grooves: the spot stands out of the groove texture far more than across them
    def gain(scorer):
        return scorer.score_image(spot).score / scorer.score_image(im).score

    assert gain(auto) > gain(wrong)


def test_size_option_and_new_bad_parameters():
    im = np.random.default_rng(5).random((300, 170)).astype(np.float32)
    r = get_scorer("contrast", size=64).prepare().score_image(im)
    assert r.map.shape == (64, 64) and r.map.dtype == np.float32 and np.isfinite(r.score)
    for kw, word in [
        ({"polarity": "darker"}, "polarity"),
        ({"orientation": "diagonal"}, "orientation"),
        ({"size": 8}, "size"),
        ({"background_sigma": (24, 3, 1)}, "background_sigma"),
        ({"background_sigma": (24, 0)}, "background_sigma"),
    ]:
        with pytest.raises(ValueError, match=word):
            get_scorer("contrast", **kw).prepare()


@pytest.mark.parametrize("polarity", ["both", "dark", "bright"])
@pytest.mark.parametrize("smooth_sigma", [0.0, 1.5, 2.0])
def test_map_is_the_smoothed_robust_z_score(images, polarity, smooth_sigma):
    """The map equals the textbook steps: z = (x - bg - median) / (1.4826 MAD), sign, Gaussian, clamp."""
    import cv2

    s = get_scorer("contrast", polarity=polarity, smooth_sigma=smooth_sigma, stat_stride=1).prepare()
    im = images[17]
    gray = im.astype(np.float32) / 255
    d = gray - s._background(gray)
    d = d - np.median(d)
    mad = float(np.median(np.abs(d))) * 1.4826
    z = {"both": np.abs(d), "dark": -d, "bright": d}[polarity] / (mad + 1e-3)
    if smooth_sigma:
        z = cv2.GaussianBlur(z.astype(np.float32), (0, 0), smooth_sigma, borderType=cv2.BORDER_REFLECT)
    if polarity != "both":
        z = np.maximum(z, 0)
    r = s.score_image(im)
    np.testing.assert_allclose(r.map, z, rtol=1e-4, atol=1e-4 * float(z.max()))
    inner = z[8:-8, 8:-8]
    assert r.score == pytest.approx(inner.max() / (np.percentile(inner, 90) + 1e-6), rel=1e-4)
