"""Synthetic X-ray projections of CT volumes (Beer-Lambert line integrals), with labels projected alongside.

A volume of linear attenuation ``mu`` (per mm; see :func:`synthesis.ct.hu_to_mu`)
is integrated along parallel rays, either along an axis or after rotating the
volume by an angle about another axis. The intensity is ``I0 * exp(-P)``
(monochromatic) or a weighted sum over energy bins (a polychromatic
approximation with beam hardening); Poisson noise is optional. A label volume
projects to the thickness (mm) of a tissue along each ray.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from synthesis._common import SeedLike, as_rng

logger = logging.getLogger(__name__)

#: A coarse 3-bin spectrum: (weight, mu scale relative to the reference energy).
DEFAULT_SPECTRUM: tuple[tuple[float, float], ...] = ((0.3, 1.45), (0.45, 1.0), (0.25, 0.78))


def _check_volume(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D (D, H, W), got shape {volume.shape}")
    return volume


def _rotate(volume: np.ndarray, axis: int, angle: float, rotate_about: int, order: int) -> np.ndarray:
    """Rotate in the plane normal to ``rotate_about`` about the volume's centre, after padding the plane
    symmetrically (by an even number of voxels per axis) to its diagonal, so nothing is cut off and the
    centre of the volume stays the centre of the grid."""
    if angle == 0:
        return volume
    plane = tuple(a for a in range(3) if a != rotate_about)
    if axis not in plane:
        raise ValueError(f"rotate_about={rotate_about} must differ from the projection axis {axis}")
    diag = float(np.hypot(volume.shape[plane[0]], volume.shape[plane[1]]))
    pad = [(0, 0)] * 3
    for a in plane:
        extra = int(np.ceil(diag)) - volume.shape[a]
        extra += extra % 2
        pad[a] = (extra // 2, extra // 2)
    vol = np.pad(volume, pad)
    return ndi.rotate(
        vol, angle, axes=plane, reshape=False, order=order, mode="constant", cval=0.0, prefilter=order > 1
    )


def line_integrals(
    mu: np.ndarray,
    *,
    axis: int = 0,
    angle: float = 0.0,
    rotate_about: int | None = None,
    spacing_mm: float = 1.0,
    order: int = 1,
) -> np.ndarray:
    """Line integrals of attenuation along parallel rays.

    Parameters
    ----------
    mu : ndarray of shape (D, H, W)
        Attenuation per mm (>= 0), isotropic voxels of ``spacing_mm``.
    axis : int, default=0
        Direction of the rays (before rotation).
    angle : float, default=0.0
        Rotate the volume by this many degrees first (the source turning about ``rotate_about``).
    rotate_about : int, optional
        Rotation axis; default the first axis that is not ``axis``.
    spacing_mm : float, default=1.0
    order : int, default=1
        Interpolation order of the rotation.

    Returns
    -------
    ndarray, float32
        The projection: the volume's shape without ``axis``; when rotated, the
        in-plane axis is padded symmetrically (even amount) to the plane's
        diagonal, so the volume's centre stays at the projection's centre.
    """
    mu = _check_volume(mu)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if spacing_mm <= 0:
        raise ValueError(f"spacing_mm must be > 0, got {spacing_mm}")
    if rotate_about is None:
        rotate_about = next(a for a in range(3) if a != axis)
    vol = _rotate(mu.astype(np.float32), axis, angle, rotate_about, order)
    return (vol.sum(axis=axis, dtype=np.float64) * spacing_mm).astype(np.float32)


def project(
    mu: np.ndarray,
    *,
    axis: int = 0,
    angle: float = 0.0,
    rotate_about: int | None = None,
    spacing_mm: float = 1.0,
    i0: float = 1.0,
    spectrum: Sequence[tuple[float, float]] | None = None,
    photons: float | None = None,
    rng: SeedLike = None,
) -> tuple[np.ndarray, np.ndarray]:
    """An X-ray projection image by Beer-Lambert.

    Parameters
    ----------
    mu : ndarray of shape (D, H, W)
        Attenuation per mm at the reference energy.
    axis, angle, rotate_about, spacing_mm
        As in :func:`line_integrals`.
    i0 : float, default=1.0
        Unattenuated intensity.
    spectrum : sequence of (weight, mu_scale), optional
        Polychromatic approximation: ``I = i0 * sum w * exp(-s * P)``
        (weights normalised); e.g. :data:`DEFAULT_SPECTRUM`. None: monochromatic.
    photons : float, optional
        Photons per pixel for Poisson noise (None: no noise).
    rng : int or numpy.random.Generator
        Needed only with ``photons``.

    Returns
    -------
    intensity : ndarray, float32
        Detected intensity (``i0`` where nothing attenuates).
    path : ndarray, float32
        The line integrals ``P``.
    """
    p = line_integrals(mu, axis=axis, angle=angle, rotate_about=rotate_about, spacing_mm=spacing_mm)
    if spectrum is None:
        inten = np.exp(-p.astype(np.float64))
    else:
        spec = np.asarray(spectrum, np.float64)
        if spec.ndim != 2 or spec.shape[1] != 2 or (spec[:, 0] < 0).any() or spec[:, 0].sum() <= 0:
            raise ValueError(f"spectrum must be a list of (weight >= 0, mu_scale) pairs, got {spectrum!r}")
        w = spec[:, 0] / spec[:, 0].sum()
        inten = sum(wi * np.exp(-si * p.astype(np.float64)) for wi, si in zip(w, spec[:, 1], strict=True))
    if photons is not None:
        if photons <= 0:
            raise ValueError(f"photons must be > 0, got {photons}")
        inten = as_rng(rng).poisson(inten * photons) / photons
    return (i0 * inten).astype(np.float32), p


def project_labels(
    labels: np.ndarray,
    label: int | Sequence[int],
    *,
    axis: int = 0,
    angle: float = 0.0,
    rotate_about: int | None = None,
    spacing_mm: float = 1.0,
) -> np.ndarray:
    """Thickness (mm) of the labelled tissue along each ray, on the same grid as :func:`project`.

    Parameters
    ----------
    labels : ndarray of shape (D, H, W), int
    label : int or sequence of int
        The tissue(s) to measure.
    axis, angle, rotate_about, spacing_mm
        As in :func:`line_integrals` (must match the image projection).

    Returns
    -------
    ndarray, float32, mm
    """
    labels = _check_volume(labels)
    sel = np.isin(labels, np.atleast_1d(label)).astype(np.float32)
    return line_integrals(sel, axis=axis, angle=angle, rotate_about=rotate_about, spacing_mm=spacing_mm)
