"""CT-style augmentation and synthetic X-ray projections."""

from __future__ import annotations

import numpy as np
import pytest

from synthesis import ct, projection


def _phantom(n: int, inside, ss: int = 4) -> np.ndarray:
    """Partial-volume phantom: the fraction of each voxel inside a shape (supersampled ``ss`` per axis)."""
    c = (np.arange(n * ss) + 0.5) / ss - 0.5
    z, y, x = np.meshgrid(c, c, c, indexing="ij", sparse=True)
    return inside(z, y, x).reshape(n, ss, n, ss, n, ss).mean((1, 3, 5)).astype(np.float32)


N, R = 64, 24.0
CTR = (N - 1) / 2


@pytest.fixture(scope="module")
def sphere() -> np.ndarray:
    return _phantom(N, lambda z, y, x: (z - CTR) ** 2 + (y - CTR) ** 2 + (x - CTR) ** 2 <= R * R)


@pytest.fixture(scope="module")
def cylinder() -> np.ndarray:
    """Axis along 0 (z), length 40, radius R."""
    return _phantom(N, lambda z, y, x: ((y - CTR) ** 2 + (x - CTR) ** 2 <= R * R) & (np.abs(z - CTR) <= 20))


def _centre(p: np.ndarray) -> np.ndarray:
    oy, ox = (p.shape[0] - N) // 2, (p.shape[1] - N) // 2
    return p[oy : oy + N, ox : ox + N]


def _chord(d: np.ndarray) -> np.ndarray:
    return 2 * np.sqrt(np.clip(R * R - d * d, 0, None))


@pytest.mark.parametrize("angle", [0.0, 30.0, 45.0])
def test_sphere_projection_matches_chord_lengths(sphere, angle):
    mu = 0.02
    p = _centre(projection.line_integrals(sphere * mu, axis=0, angle=angle, rotate_about=1, spacing_mm=0.5))
    yy, xx = np.mgrid[0:N, 0:N]
    r = np.hypot(yy - CTR, xx - CTR)
    sel = r < 0.8 * R
    expected = _chord(r[sel]) * mu * 0.5
    assert np.max(np.abs(p[sel] / expected - 1)) < 0.01


def test_cylinder_projection_matches_chord_lengths(cylinder):
    # along its axis: every ray inside the disc crosses the full length 40 (|z - c| <= 20)
    along = projection.line_integrals(cylinder, axis=0)
    yy, xx = np.mgrid[0:N, 0:N]
    inside = np.hypot(yy - CTR, xx - CTR) < 0.8 * R
    assert np.max(np.abs(along[inside] / 40.0 - 1)) < 0.01
    # across it (rays along x): chord 2 sqrt(R^2 - (y - c)^2) for every z inside the length
    across = projection.line_integrals(cylinder, axis=2)
    zz, yy = np.mgrid[0:N, 0:N]
    sel = (np.abs(yy - CTR) < 0.8 * R) & (np.abs(zz - CTR) < 18)
    assert np.max(np.abs(across[sel] / _chord(np.abs(yy - CTR))[sel] - 1)) < 0.01
    # and tilted by 30 degrees about y, a mid-height ray across the axis still sees the chord
    tilted = _centre(projection.line_integrals(cylinder, axis=2, angle=30, rotate_about=1))
    row = tilted[:, int(CTR)]  # the plane x = centre of the rotated grid
    mid = np.abs(np.arange(N) - CTR) < 5
    exp = _chord(0.0) / np.cos(np.radians(30))  # the ray crosses the disc obliquely: length 2R / cos
    assert np.max(np.abs(row[mid] / exp - 1)) < 0.01


def test_beer_lambert_and_polychromatic_hardening(sphere):
    mu = sphere * 0.02
    inten, path = projection.project(mu, axis=0)
    assert np.allclose(inten, np.exp(-path), rtol=1e-5)
    assert inten.max() == pytest.approx(1.0)
    poly, _ = projection.project(mu, axis=0, spectrum=projection.DEFAULT_SPECTRUM)
    eff = -np.log(poly)
    # beam hardening: the effective attenuation per unit path falls as the path grows
    thick, thin = path > 0.8 * path.max(), (path > 0.05 * path.max()) & (path < 0.2 * path.max())
    assert (eff[thick] / path[thick]).mean() < (eff[thin] / path[thin]).mean()
    noisy, _ = projection.project(mu, axis=0, photons=1000, rng=0)
    again, _ = projection.project(mu, axis=0, photons=1000, rng=0)
    assert np.array_equal(noisy, again) and not np.array_equal(noisy, inten)


def test_label_projection_is_thickness(sphere):
    labels = (sphere > 0.5).astype(np.uint8)
    t = projection.project_labels(labels, 1, axis=0, spacing_mm=2.0)
    assert t.max() == pytest.approx(2.0 * labels.sum(axis=0).max())
    assert projection.project_labels(labels, 2, axis=0).max() == 0


def test_elastic_deformation_warps_image_and_labels_identically():
    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.int16)
    labels[10:40, 12:30] = 1
    labels[35:60, 30:55] = 2
    image = (labels * 100 + 7).astype(np.float32)
    img0, lab0 = ct.elastic_deform(image, labels, alpha=6, sigma=5, rng=3, order=0)
    assert np.array_equal(img0, (lab0 * 100 + 7).astype(np.float32))
    assert not np.array_equal(lab0, labels)
    # with linear interpolation, warp the coordinate ramps: they reveal where every output pixel sampled from,
    # and the warped labels must be the source labels at exactly those (rounded) positions
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    sy, lab1 = ct.elastic_deform(yy, labels, alpha=6, sigma=5, rng=3, order=1)
    sx, _ = ct.elastic_deform(xx, None, alpha=6, sigma=5, rng=3, order=1)
    assert np.array_equal(lab1, lab0)
    assert np.abs(sy - yy).max() > 2 and np.abs(sx - xx).max() > 2
    expected = labels[np.rint(sy).astype(int), np.rint(sx).astype(int)]
    assert (expected == lab1).mean() > 0.999
    vol = np.stack([image] * 4)
    vlab = np.stack([labels] * 4)
    v, vl = ct.elastic_deform(vol, vlab, alpha=4, sigma=4, rng=rng, order=0)
    assert np.array_equal(v, (vl * 100 + 7).astype(np.float32))


def test_ring_artifacts_are_radial():
    img = np.zeros((81, 81), np.float32)
    out, pattern = ct.ring_artifact(img, n_rings=5, rng=2)
    assert np.array_equal(out, pattern) and np.abs(pattern).max() > 5
    yy, xx = np.mgrid[0:81, 0:81]
    r = np.hypot(yy - 40, xx - 40)
    # constant on circles: rotating the pattern about the centre leaves it unchanged
    assert np.allclose(pattern, np.rot90(pattern), atol=1e-4)
    assert np.allclose(pattern, pattern.T, atol=1e-4)
    # and equal wherever the radius is equal
    ring = np.isclose(r, 25.0, atol=1e-6)
    assert ring.sum() >= 8 and np.ptp(pattern[ring]) < 1e-4
    vol, _ = ct.ring_artifact(np.zeros((3, 81, 81)), rng=2)
    assert np.allclose(vol[0], vol[2])


def test_density_noise_cupping_streaks_and_slice_blur():
    yy, xx = np.mgrid[0:96, 0:96]
    body = np.hypot(yy - 48, xx - 48) < 40
    labels = body.astype(np.int16) + (np.hypot(yy - 48, xx - 60) < 6)
    hu = np.where(body, 40.0, -1000.0).astype(np.float32)
    hu[labels == 2] = 3000.0
    shifted, applied = ct.density_shift(hu, labels, {1: (-20.0, -10.0)}, rng=0)
    assert np.allclose(shifted[labels == 1] - hu[labels == 1], applied[1]) and -20 <= applied[1] <= -10
    low = ct.dose_noise(hu, dose=2e3, rng=0) - hu
    high = ct.dose_noise(hu, dose=2e5, rng=0) - hu
    assert low[labels == 1].std() > 3 * high[labels == 1].std()
    cup = ct.cupping(hu, strength=50) - hu
    assert cup[48, 48] < cup[48, 12] <= 0 and cup[0, 0] == 0
    streaky = ct.streak_artifact(hu, threshold=1500, rng=0) - hu
    assert np.abs(streaky[labels == 1]).max() > 5
    assert np.array_equal(ct.streak_artifact(np.where(labels == 2, 40.0, hu), rng=0), np.where(labels == 2, 40.0, hu))
    vol = np.zeros((20, 8, 8), np.float32)
    vol[10] = 1000
    blurred = ct.slice_blur(vol, thickness_mm=3, spacing_mm=1)
    assert blurred[10, 0, 0] < 1000 and blurred[9, 0, 0] > 0 and blurred.sum() == pytest.approx(vol.sum(), rel=1e-3)


def test_sixteen_bit_round_trip_through_hu():
    stored = np.array([[0, 1024, 2048], [3000, 65535, 24]], np.uint16)
    hu = ct.to_hu(stored)
    assert hu.dtype == np.float32 and hu[0, 1] == 0 and hu[0, 0] == -1024
    assert np.array_equal(ct.from_hu(hu), stored)
    assert np.array_equal(ct.from_hu(ct.to_hu(stored, slope=0.5, intercept=-1000), slope=0.5, intercept=-1000), stored)
    assert ct.from_hu(np.array([-5000.0, 1e9]))[0] == 0 and ct.from_hu(np.array([1e9]))[0] == 65535
