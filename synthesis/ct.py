"""CT-style augmentation of 2-D slices and 3-D volumes (float HU or 16-bit), with label maps.

Every function takes an array of shape ``(H, W)`` (a slice) or ``(D, H, W)``
(a volume, slices along axis 0) in HU and returns a new float32 array of the
same shape; nothing is changed in place. 16-bit stored volumes go through
:func:`to_hu` and back through :func:`from_hu` (DICOM rescale slope and
intercept). Artefacts are image-domain models (no forward projection and
reconstruction), cheap enough for on-the-fly augmentation:

- :func:`elastic_deform`: smooth random displacement; labels warped with the
  same field (nearest neighbour).
- :func:`density_shift`: a HU offset per labelled tissue.
- :func:`dose_noise`: photon (Poisson) and electronic (Gaussian) noise at a dose.
- :func:`ring_artifact`: concentric rings about the rotation centre (detector gain errors).
- :func:`streak_artifact`: dark and bright streaks through dense objects.
- :func:`cupping`: beam-hardening cupping (the middle of the object darker).
- :func:`slice_blur`: slice-thickness blur along the slice axis.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

from synthesis._common import SeedLike, as_rng

logger = logging.getLogger(__name__)

#: Linear attenuation of water at about 70 keV, per mm.
MU_WATER = 0.0193


def _check(volume: np.ndarray, name: str = "volume") -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2-D (H, W) or 3-D (D, H, W), got shape {volume.shape}")
    if not np.issubdtype(volume.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {volume.dtype}")
    return volume


def _check_labels(labels: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != shape:
        raise ValueError(f"labels shape {labels.shape} differs from image shape {shape}")
    return labels


def elastic_deform(
    volume: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    alpha: float = 8.0,
    sigma: float = 6.0,
    rng: SeedLike = None,
    order: int = 1,
    in_plane: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Smooth random (elastic) deformation; image and labels are warped by the same field.

    Parameters
    ----------
    volume : ndarray of shape (H, W) or (D, H, W)
    labels : ndarray of the same shape, optional
        Integer label map, warped with nearest-neighbour sampling.
    alpha : float, default=8.0
        Largest typical displacement in pixels.
    sigma : float, default=6.0
        Smoothness of the field (Gaussian sigma in pixels).
    rng : int or numpy.random.Generator
    order : int, default=1
        Spline order for the image (0 nearest, 1 linear, 3 cubic).
    in_plane : bool, default=True
        For volumes, displace only within slices (no motion along axis 0).

    Returns
    -------
    volume : ndarray, float32, same shape
    labels : ndarray, same dtype and shape, or None
    """
    volume = _check(volume)
    labels = _check_labels(labels, volume.shape)
    rng = as_rng(rng)
    shape = volume.shape
    coords = list(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    axes = range(1, len(shape)) if (len(shape) == 3 and in_plane) else range(len(shape))
    for ax in axes:
        d = ndi.gaussian_filter(rng.uniform(-1, 1, shape).astype(np.float32), sigma, mode="reflect")
        peak = float(np.abs(d).max()) or 1.0
        coords[ax] = coords[ax] + d * (alpha / peak)
    out = ndi.map_coordinates(volume.astype(np.float32), coords, order=order, mode="nearest")
    lab = None
    if labels is not None:
        lab = ndi.map_coordinates(labels, coords, order=0, mode="nearest").astype(labels.dtype)
    return out.astype(np.float32), lab


def density_shift(
    volume: np.ndarray, labels: np.ndarray, shifts: dict[int, float | tuple[float, float]], *, rng: SeedLike = None
) -> tuple[np.ndarray, dict[int, float]]:
    """Add a HU offset to each labelled tissue.

    Parameters
    ----------
    volume : ndarray of shape (H, W) or (D, H, W)
    labels : ndarray of the same shape, int
    shifts : dict label -> float or (lo, hi)
        A fixed offset, or a range to draw one from.
    rng : int or numpy.random.Generator

    Returns
    -------
    volume : ndarray, float32
    applied : dict label -> float
        The offsets used.
    """
    volume = _check(volume)
    labels = _check_labels(labels, volume.shape)
    rng = as_rng(rng)
    out = volume.astype(np.float32).copy()
    applied = {}
    for lab, s in shifts.items():
        v = float(rng.uniform(*s)) if isinstance(s, tuple | list) else float(s)
        out[labels == lab] += v
        applied[int(lab)] = v
    return out, applied


def to_hu(volume: np.ndarray, *, slope: float = 1.0, intercept: float = -1024.0) -> np.ndarray:
    """Stored values (e.g. 16-bit CT) to HU by the DICOM rescale: ``HU = value * slope + intercept``.

    Float input is taken as HU already and returned as float32 unchanged in value.
    """
    volume = _check(volume)
    if np.issubdtype(volume.dtype, np.floating):
        return volume.astype(np.float32)
    return (volume.astype(np.float32) * slope + intercept).astype(np.float32)


def from_hu(hu: np.ndarray, dtype: str = "uint16", *, slope: float = 1.0, intercept: float = -1024.0) -> np.ndarray:
    """HU back to stored integers (rounded and clipped to ``dtype``'s range), the inverse of :func:`to_hu`."""
    info = np.iinfo(np.dtype(dtype))
    stored = np.rint((np.asarray(hu, np.float64) - intercept) / slope)
    return np.clip(stored, info.min, info.max).astype(dtype)


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER) -> np.ndarray:
    """Linear attenuation (per mm) from Hounsfield units: ``mu = mu_water * (1 + HU / 1000)``, >= 0."""
    return np.maximum(mu_water * (1.0 + np.asarray(hu, np.float32) / 1000.0), 0.0)


def mu_to_hu(mu: np.ndarray, mu_water: float = MU_WATER) -> np.ndarray:
    """Inverse of :func:`hu_to_mu`."""
    return (np.asarray(mu, np.float32) / mu_water - 1.0) * 1000.0


def dose_noise(
    volume: np.ndarray,
    *,
    dose: float = 1e4,
    path_mm: float = 200.0,
    electronic: float = 0.0,
    rng: SeedLike = None,
    correlation: float = 0.7,
) -> np.ndarray:
    """Photon (Poisson) and electronic (Gaussian) noise at a given dose, on a HU image.

    Each pixel is treated as a ray of ``path_mm`` through material of its own
    attenuation: the detector counts ``N ~ Poisson(dose * exp(-mu * L))`` plus
    Gaussian noise of ``electronic`` counts, and the noisy HU is read back
    from ``-log(N / dose) / L``. Dense pixels and low doses are noisier, as
    in CT; a light Gaussian blur (``correlation`` pixels) mimics the
    reconstruction kernel's noise correlation.

    Parameters
    ----------
    volume : ndarray of shape (H, W) or (D, H, W), HU
    dose : float, default=1e4
        Incident photons per ray (higher is less noise).
    path_mm : float, default=200
        Path length per ray in mm.
    electronic : float, default=0.0
        Standard deviation of additive detector noise, in counts.
    rng : int or numpy.random.Generator
    correlation : float, default=0.7
        Sigma (pixels) of the in-plane blur of the noise; 0 for white noise.

    Returns
    -------
    ndarray, float32, HU
    """
    volume = _check(volume)
    if dose <= 0 or path_mm <= 0:
        raise ValueError(f"dose and path_mm must be > 0, got dose={dose}, path_mm={path_mm}")
    rng = as_rng(rng)
    hu = volume.astype(np.float32)
    mu = hu_to_mu(hu)
    expected = dose * np.exp(-mu * path_mm)
    counts = rng.poisson(expected).astype(np.float32)
    if electronic > 0:
        counts += rng.normal(0, electronic, counts.shape).astype(np.float32)
    counts = np.maximum(counts, 0.5)
    noisy_mu = -np.log(counts / dose) / path_mm
    noise = mu_to_hu(noisy_mu) - mu_to_hu(-np.log(np.maximum(expected, 0.5) / dose) / path_mm)
    if correlation > 0:
        sig = (0, correlation, correlation) if hu.ndim == 3 else correlation
        std0 = float(noise.std()) or 1.0
        noise = ndi.gaussian_filter(noise, sig)
        noise *= std0 / (float(noise.std()) or 1.0)
    return (hu + noise).astype(np.float32)


def _radius(shape: tuple[int, int], center: tuple[float, float] | None) -> np.ndarray:
    h, w = shape
    cy, cx = center if center is not None else ((h - 1) / 2, (w - 1) / 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.hypot(yy - cy, xx - cx)


def ring_artifact(
    volume: np.ndarray,
    *,
    n_rings: int = 6,
    amplitude: tuple[float, float] = (10.0, 40.0),
    width: float = 0.8,
    center: tuple[float, float] | None = None,
    rng: SeedLike = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Concentric rings about the rotation centre, as from miscalibrated detector elements.

    The added pattern is a function of the distance to ``center`` only (it is
    radial), the same on every slice of a volume.

    Parameters
    ----------
    volume : ndarray of shape (H, W) or (D, H, W), HU
    n_rings : int, default=6
    amplitude : (lo, hi)
        HU of each ring (sign drawn at random).
    width : float, default=0.8
        Ring half-width (Gaussian sigma) in pixels.
    center : (cy, cx), optional
        Rotation centre; default the image centre.
    rng : int or numpy.random.Generator

    Returns
    -------
    volume : ndarray, float32
    pattern : ndarray of shape (H, W), float32
        The added ring pattern.
    """
    volume = _check(volume)
    if n_rings < 0:
        raise ValueError(f"n_rings must be >= 0, got {n_rings}")
    rng = as_rng(rng)
    r = _radius(volume.shape[-2:], center)
    rmax = float(r.max())
    radii = rng.uniform(2.0, 0.9 * rmax, n_rings)
    amps = rng.uniform(*amplitude, n_rings) * rng.choice([-1.0, 1.0], n_rings)
    pattern = np.zeros(r.shape, np.float32)
    for r0, a in zip(radii, amps, strict=True):
        pattern += (a * np.exp(-0.5 * ((r - r0) / width) ** 2)).astype(np.float32)
    return (volume.astype(np.float32) + pattern).astype(np.float32), pattern


def streak_artifact(
    volume: np.ndarray,
    *,
    threshold: float = 1500.0,
    n_streaks: int = 12,
    amplitude: float = 60.0,
    decay: float = 0.01,
    rng: SeedLike = None,
) -> np.ndarray:
    """Dark and bright streaks radiating through dense objects (metal, dense bone).

    Each connected region above ``threshold`` HU (per slice) emits
    ``n_streaks`` lines through its centroid at random angles, alternately
    dark and bright, scaled by the region's size and fading with distance.

    Parameters
    ----------
    volume : ndarray of shape (H, W) or (D, H, W), HU
    threshold : float, default=1500
    n_streaks : int, default=12
    amplitude : float, default=60
        HU of a streak next to a region of 100 pixels.
    decay : float, default=0.01
        Fading per pixel of distance (exponential).
    rng : int or numpy.random.Generator

    Returns
    -------
    ndarray, float32, HU
    """
    volume = _check(volume)
    rng = as_rng(rng)
    out = volume.astype(np.float32).copy()
    slices = out if out.ndim == 3 else out[None]
    h, w = slices.shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for s in slices:
        lab, n = ndi.label(s > threshold)
        if n == 0:
            continue
        centers = ndi.center_of_mass(np.ones_like(s), lab, range(1, n + 1))
        sizes = ndi.sum_labels(np.ones_like(s), lab, range(1, n + 1))
        add = np.zeros((h, w), np.float32)
        for (cy, cx), size in zip(centers, sizes, strict=True):
            dist = np.hypot(yy - cy, xx - cx)
            for k, ang in enumerate(rng.uniform(0, np.pi, n_streaks)):
                # distance of each pixel to the line through the centroid at this angle
                d = np.abs((xx - cx) * np.sin(ang) - (yy - cy) * np.cos(ang))
                sign = 1.0 if k % 2 else -1.0
                add += sign * amplitude * np.sqrt(size / 100.0) * np.exp(-0.5 * d**2) * np.exp(-decay * dist)
        s += add
    return out


def cupping(
    volume: np.ndarray,
    *,
    strength: float = 40.0,
    body_threshold: float = -500.0,
    center: tuple[float, float] | None = None,
) -> np.ndarray:
    """Beam-hardening cupping: the middle of the object reads lower than its rim.

    Subtracts ``strength * (1 - (r / R)**2)`` HU inside the object (pixels
    above ``body_threshold``), where ``R`` is the object's largest radius
    from ``center`` on that slice.

    Parameters
    ----------
    volume : ndarray of shape (H, W) or (D, H, W), HU
    strength : float, default=40
        HU drop at the centre.
    body_threshold : float, default=-500
    center : (cy, cx), optional

    Returns
    -------
    ndarray, float32, HU
    """
    volume = _check(volume)
    out = volume.astype(np.float32).copy()
    slices = out if out.ndim == 3 else out[None]
    r = _radius(slices.shape[-2:], center)
    for s in slices:
        body = s > body_threshold
        if not body.any():
            continue
        big_r = float(r[body].max()) or 1.0
        s -= np.where(body, strength * np.clip(1 - (r / big_r) ** 2, 0, 1), 0).astype(np.float32)
    return out


def slice_blur(volume: np.ndarray, *, thickness_mm: float, spacing_mm: float = 1.0) -> np.ndarray:
    """Blur a volume along the slice axis (0) to mimic thicker slices.

    The slice profile is a box of ``thickness_mm`` convolved with a Gaussian
    of a third of it (a trapezoid-like profile).

    Parameters
    ----------
    volume : ndarray of shape (D, H, W)
    thickness_mm : float
        Nominal slice thickness to simulate.
    spacing_mm : float, default=1.0
        Distance between the volume's slices.

    Returns
    -------
    ndarray of shape (D, H, W), float32
    """
    volume = _check(volume)
    if volume.ndim != 3:
        raise ValueError(f"slice_blur needs a 3-D volume (D, H, W), got shape {volume.shape}")
    if thickness_mm <= 0 or spacing_mm <= 0:
        raise ValueError(f"thickness_mm and spacing_mm must be > 0, got {thickness_mm}, {spacing_mm}")
    n = thickness_mm / spacing_mm
    out = volume.astype(np.float32)
    if n > 1:
        out = ndi.uniform_filter1d(out, size=max(1, round(n)), axis=0, mode="nearest")
    return ndi.gaussian_filter1d(out, sigma=max(n / 3, 1e-3), axis=0, mode="nearest").astype(np.float32)
