"""The pixel classifier's filter bank: the preprocessed grid and its multiscale features.

Step 1 and 2 of the recipe in :mod:`mining.models.pixel`: :func:`preprocess` and
:func:`compute_features` (scikit-image's basic bank or an ilastik-like bank computed with OpenCV).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from mining.io import to_float_gray

BANKS = ("basic", "ilastik")
PADDINGS = {"reflect": cv2.BORDER_REFLECT_101, "nearest": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}
NORMALIZE = ("none", "image", "log", "log_centered")
#: Channel families of the ilastik bank, in channel order within a scale ("gauss" includes the raw intensity).
FAMILIES = ("gauss", "log", "gradmag", "dog", "st", "hess")
_FAMILY_CHANNELS = {"gauss": (0,), "log": (1,), "gradmag": (2,), "dog": (3,), "st": (4, 5), "hess": (6, 7)}
LOG_OFFSET = 1.0 / 64  # normalize="log": log(gray + LOG_OFFSET), so black stays finite


# -- features -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSpec:
    """What the features of a pixel model are; stored with the model and checked at prediction.

    Parameters
    ----------
    bank : {"ilastik", "basic"}, default="ilastik"
        ``"basic"``: :func:`skimage.feature.multiscale_basic_features` (intensity,
        Sobel edges, Hessian eigenvalues at ``num_sigma`` scales from
        ``sigma_min`` to ``sigma_max``). ``"ilastik"``: Gaussian, LoG, gradient
        magnitude, DoG, structure-tensor and Hessian eigenvalues at ``sigmas``.
    sigmas : tuple of float, default=(0.5, 1, 2, 4, 8, 16)
        Scales (px of the downscaled grid) of the ilastik bank.
    sigma_min, sigma_max : float, default=0.5, 16
        Scale range of the basic bank.
    num_sigma : int or None, default=None
        Scales of the basic bank (None: log2 spacing, as scikit-image).
    intensity, edges, texture : bool, default=True
        Feature families of the basic bank.
    downscale : float, default=1.0
        The image is shrunk by this factor (area averaging) before the
        features are computed; predictions are upsampled back.
    padding : {"nearest", "reflect", "constant"}, default="nearest"
        What the filters see beyond the image border. On magnetic tiles
        ``"nearest"`` (the edge pixel repeated, scikit-image's default) ranks
        far better than ``"reflect"`` (benchmarks/pixel_mining.py).
    border_feature : bool, default=False
        Add the distance to the nearest image border (px of the original
        image, divided by ``border_scale`` and clipped at 1) as a feature.
    border_scale : float, default=32.0
        Distance (original px) at which the border feature saturates.
    normalize : {"none", "image", "log", "log_centered"}, default="none"
        ``"image"``: after the [0, 1] rule, subtract the image's median and
        divide by its robust spread (1.4826 MAD, at least 1e-3), so that
        lighting and exposure differences between images do not move the
        features. ``"log"``: after the [0, 1] rule, ``log(gray + 1/64)``.
        Reflected light is illumination times reflectance, so on a log scale
        a pit or a stain differs from its surroundings by the same amount on
        a bright and on a dim part of the surface: the filters' responses
        (DoG, LoG, Hessian, gradients) no longer grow with the local
        brightness. The offset keeps black finite and damps sensor noise in
        the darkest pixels. ``"log_centered"``: ``"log"``, then the image's
        median subtracted, so that a change of exposure or gain (a factor on
        every pixel) leaves every feature as it was; the smoothed channels
        then hold brightness relative to the rest of the image (a brighter
        band, a darker stain) instead of the absolute level, which a forest
        trained on a few images would otherwise learn.
    fast_scales : bool, default=False
        Ilastik bank: compute the scales from 4 px on from a copy shrunk 2x
        (sigma 4) or 4x (sigma 8 and up) and interpolate back. The channels
        differ from the full-resolution ones by a few percent of their
        range; the bank costs about a third. Models stored without this key
        were trained with ``False``.
    families : tuple of str, default=FAMILIES
        Ilastik bank: the channel families kept, any of ``"gauss"`` (the
        intensity and its Gaussian smoothings), ``"log"``, ``"gradmag"``,
        ``"dog"``, ``"st"`` (structure-tensor eigenvalues), ``"hess"``
        (Hessian eigenvalues). Models stored without this key keep all.
    """

    bank: str = "ilastik"
    sigmas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    sigma_min: float = 0.5
    sigma_max: float = 16.0
    num_sigma: int | None = None
    intensity: bool = True
    edges: bool = True
    texture: bool = True
    downscale: float = 1.0
    padding: str = "nearest"
    border_feature: bool = False
    border_scale: float = 32.0
    normalize: str = "none"
    fast_scales: bool = False
    families: tuple[str, ...] = FAMILIES

    def __post_init__(self):
        if self.bank not in BANKS:
            raise ValueError(f"features.bank must be one of {BANKS}, got {self.bank!r}")
        if self.padding not in PADDINGS:
            raise ValueError(f"features.padding must be one of {tuple(PADDINGS)}, got {self.padding!r}")
        object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))
        if isinstance(self.families, str) or not self.families or set(self.families) - set(FAMILIES):
            raise ValueError(f"features.families must be a non-empty list from {FAMILIES}, got {self.families!r}")
        object.__setattr__(self, "families", tuple(f for f in FAMILIES if f in set(self.families)))
        if not self.sigmas or min(self.sigmas) <= 0:
            raise ValueError(f"features.sigmas must be a non-empty list of positive numbers, got {self.sigmas!r}")
        if not 0 < self.sigma_min <= self.sigma_max:
            raise ValueError(
                f"features.sigma_min/sigma_max must satisfy 0 < min <= max, got {self.sigma_min}, {self.sigma_max}"
            )
        if self.downscale < 1:
            raise ValueError(f"features.downscale must be >= 1, got {self.downscale}")
        if self.normalize not in NORMALIZE:
            raise ValueError(f"features.normalize must be one of {NORMALIZE}, got {self.normalize!r}")
        if self.border_scale <= 0:
            raise ValueError(f"features.border_scale must be > 0, got {self.border_scale}")
        if self.bank == "basic" and not (self.intensity or self.edges or self.texture):
            raise ValueError("features: the basic bank needs at least one of intensity, edges, texture")

    @classmethod
    def from_dict(cls, data: dict | None) -> FeatureSpec:
        """Build from a mapping (config section or stored model), naming unknown keys."""
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown feature keys {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}")
        for key in ("sigmas", "families"):
            if key in data and not isinstance(data[key], str):
                data[key] = tuple(data[key])
        return cls(**data)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        d = asdict(self)
        d["sigmas"] = list(self.sigmas)
        d["families"] = list(self.families)
        return d

    def fingerprint(self) -> str:
        """Short hash of the spec (two models with the same fingerprint see the same features)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def halo(self) -> int:
        """Pixels of context (original resolution) a feature depends on, for tiling."""
        s = max(self.sigmas) * 2 if self.bank == "ilastik" else self.sigma_max
        return int(np.ceil((4 * s + self.grid_unit) * self.downscale)) + 2

    @property
    def grid_unit(self) -> int:
        """Tiles must start at multiples of this (feature-grid px) to see the whole image's shrunk grids."""
        return 4 if self.fast_scales and self.bank == "ilastik" else 1

    def channel_indices(self) -> tuple[int, ...]:
        """Ilastik bank: positions (0..7) of the kept channels within one scale's eight."""
        return tuple(sorted(i for f in self.families for i in _FAMILY_CHANNELS[f]))

    def feature_names(self) -> list[str]:
        """One name per feature channel, in order."""
        if self.bank == "basic":
            sig = _basic_sigmas(self)
            names = []
            for s in sig:
                if self.intensity:
                    names.append(f"gauss_{s:g}")
                if self.edges:
                    names.append(f"sobel_{s:g}")
                if self.texture:
                    names += [f"hess_e1_{s:g}", f"hess_e2_{s:g}"]
        else:
            per_scale = ["gauss", "log", "gradmag", "dog", "st_e1", "st_e2", "hess_e1", "hess_e2"]
            keep = self.channel_indices()
            names = ["intensity"] if "gauss" in self.families else []
            for s in self.sigmas:
                names += [f"{per_scale[i]}_{s:g}" for i in keep]
        if self.border_feature:
            names.append("border_distance")
        return names


def _basic_sigmas(spec: FeatureSpec) -> np.ndarray:
    num = spec.num_sigma or int(np.floor(np.log2(spec.sigma_max) - np.log2(spec.sigma_min) + 1))
    return np.logspace(np.log2(spec.sigma_min), np.log2(spec.sigma_max), num=num, base=2, endpoint=True)


def preprocess(image: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """The one preprocessing of training and mining: float grayscale in [0, 1], the downscale, ``normalize``.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C)
        As read by :func:`mining.io.read_image`: uint8 (/255), uint16
        (/65535), other types min-max scaled; colour to luma.
    spec : FeatureSpec

    Returns
    -------
    gray : ndarray of shape (h, w), float32
        ``h = round(H / downscale)``, ``w = round(W / downscale)``; in [0, 1]
        unless ``spec.normalize`` is ``"image"``, ``"log"`` or ``"log_centered"``.
    """
    gray = to_float_gray(image)
    if spec.downscale != 1:
        h, w = grid_shape(gray.shape, spec)
        gray = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)
    if spec.normalize == "image":
        med = float(np.median(gray))
        mad = float(np.median(np.abs(gray - med))) * 1.4826
        gray = (gray - med) / max(mad, 1e-3)
    elif spec.normalize in ("log", "log_centered"):
        gray = np.log(gray + np.float32(LOG_OFFSET))
        if spec.normalize == "log_centered":
            gray -= np.float32(np.median(gray))
    return np.ascontiguousarray(gray, np.float32)


def grid_shape(shape: tuple[int, ...], spec: FeatureSpec) -> tuple[int, int]:
    """Size of the feature grid of an image of ``shape`` (H, W, ...)."""
    return max(1, round(shape[0] / spec.downscale)), max(1, round(shape[1] / spec.downscale))


def _border_distance(shape: tuple[int, int], spec: FeatureSpec, offset=None, full=None) -> np.ndarray:
    """Distance to the nearest image border in original px / border_scale, clipped at 1."""
    h, w = shape
    oy, ox = offset or (0, 0)
    fh, fw = full or shape
    ys = (np.arange(h, dtype=np.float32) + oy + 0.5) * spec.downscale
    xs = (np.arange(w, dtype=np.float32) + ox + 0.5) * spec.downscale
    H, W = fh * spec.downscale, fw * spec.downscale
    dy = np.minimum(ys, H - ys)[:, None]
    dx = np.minimum(xs, W - xs)[None, :]
    return np.minimum(np.minimum(dy, dx) / spec.border_scale, 1.0).astype(np.float32)


def _gauss(img: np.ndarray, sigma: float, border: int) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=border)


def _eig2(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (larger, smaller) of the symmetric 2x2 field [[a, b], [b, c]]."""
    mean = (a + c) * 0.5
    root = np.sqrt(((a - c) * 0.5) ** 2 + b * b)
    return mean + root, mean - root


def _shrink_factor(spec: FeatureSpec, sigma: float, shape: tuple[int, int]) -> int:
    """Shrink factor of the grid on which the scale ``sigma`` is computed (1: full resolution)."""
    if not spec.fast_scales:
        return 1
    f = 4 if sigma >= 8 else 2 if sigma >= 4 else 1
    while f > 1 and min(shape) < 8 * f:
        f //= 2
    return f


def _sample_at(grids: list[np.ndarray], f: float, ys: np.ndarray, xs: np.ndarray) -> list[np.ndarray]:
    """Bilinear values of (h, w) grids whose cells are ``f`` px apart, at full-resolution pixels ``ys`` x ``xs``."""
    # full pixel i lies at grid coordinate (i + 0.5) / f - 0.5 (cell j covers [j*f, (j+1)*f), as INTER_AREA's blocks)
    h, w = grids[0].shape
    my, mx = ((np.asarray(v, np.float32) + 0.5) / f - 0.5 for v in (ys, xs))
    mx, my = np.meshgrid(mx.clip(0, w - 1), my.clip(0, h - 1))
    return [
        cv2.remap(np.ascontiguousarray(g), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for g in grids
    ]


def _scale_channels(gray: np.ndarray, s: float, border: int, f: int, stride: int) -> list[np.ndarray]:
    """The eight channels of scale ``s``, computed on the grid shrunk by ``f``, at every ``stride``-th pixel.

    With ``f`` > 1 the image is padded to a multiple of ``f`` (the filters' padding), block-averaged
    (``INTER_AREA``), filtered there with the sigmas divided by ``f`` (less the block's own
    smoothing, ``f**2 / 12``) and sampled back bilinearly; the channels are scale-normalised, so
    they need no rescaling. With ``f`` = 1 the filters run at full resolution and only their
    outputs are subsampled before the per-pixel arithmetic (products, eigenvalues, roots).
    """
    h, w = gray.shape
    if f > 1:
        ph, pw = -h % f, -w % f
        src = cv2.copyMakeBorder(gray, 0, ph, 0, pw, border) if ph or pw else gray
        src = cv2.resize(src, ((w + pw) // f, (h + ph) // f), interpolation=cv2.INTER_AREA)
        block = f * f / 12.0
        sub = (slice(None), slice(None))
    else:
        src, block = gray, 0.0
        sub = (slice(None, None, stride), slice(None, None, stride))
    ss = s / f  # the scale in px of src; scale-normalised channels are the same in either unit
    g = _gauss(src, np.sqrt(s * s - block) / f, border)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3, scale=0.125, borderType=border)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3, scale=0.125, borderType=border)
    gxx = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3, scale=0.25, borderType=border)[sub]
    gyy = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3, scale=0.25, borderType=border)[sub]
    gxy = cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3, scale=0.25, borderType=border)[sub]
    st1, st2 = _eig2(*(_gauss(a * b, 2 * ss, border)[sub] for a, b in ((gx, gx), (gx, gy), (gy, gy))))
    dog = g[sub] - _gauss(src, np.sqrt((1.6 * s) ** 2 - block) / f, border)[sub]
    g, gx, gy = g[sub], gx[sub], gy[sub]
    h1, h2 = _eig2(gxx, gxy, gyy)
    chans = [
        g,
        (gxx + gyy) * (ss * ss),  # scale-normalised Laplacian of Gaussian
        np.sqrt(gx * gx + gy * gy) * ss,
        dog,
        np.sqrt(np.maximum(st1, 0)) * ss,
        np.sqrt(np.maximum(st2, 0)) * ss,
        h1 * (ss * ss),
        h2 * (ss * ss),
    ]
    if f > 1:
        chans = _sample_at(chans, f, np.arange(0, h, stride), np.arange(0, w, stride))
    return chans


def _ilastik_bank(gray: np.ndarray, spec: FeatureSpec, stride: int = 1) -> list[np.ndarray]:
    """The ilastik-like channels; with ``stride``, only at every ``stride``-th pixel each way.

    Either way the values equal the full computation's at those pixels (mining at a stride skips
    most of the per-pixel arithmetic). With ``spec.fast_scales`` the scales from 4 px on are
    computed on a grid shrunk 2x (sigma 4) or 4x (sigma 8 and up): a close approximation, since
    those channels hold no detail finer than the shrunk grid, at a fraction of the cost.
    """
    border = PADDINGS[spec.padding]
    keep = spec.channel_indices()
    out = [gray[::stride, ::stride]] if "gauss" in spec.families else []
    for s in spec.sigmas:
        chans = _scale_channels(gray, s, border, _shrink_factor(spec, s, gray.shape), stride)
        out += [chans[i] for i in keep]
    return out


def _basic_bank(gray: np.ndarray, spec: FeatureSpec) -> list[np.ndarray]:
    from skimage.feature import multiscale_basic_features

    pad = int(np.ceil(4 * spec.sigma_max)) + 1
    mode = {"reflect": "reflect", "nearest": "edge", "constant": "constant"}[spec.padding]
    padded = np.pad(gray, pad, mode=mode)
    feats = multiscale_basic_features(
        padded,
        intensity=spec.intensity,
        edges=spec.edges,
        texture=spec.texture,
        sigma_min=spec.sigma_min,
        sigma_max=spec.sigma_max,
        num_sigma=spec.num_sigma,
        workers=1,
    )
    feats = feats[pad:-pad, pad:-pad]
    return [np.ascontiguousarray(feats[..., i], np.float32) for i in range(feats.shape[-1])]


def compute_features(image: np.ndarray, spec: FeatureSpec | None = None) -> np.ndarray:
    """Multiscale filter features of one image.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C)
        Any image read by :func:`mining.io.read_image` (grayscale, RGB, 16-bit).
    spec : FeatureSpec, optional
        Defaults to ``FeatureSpec()``.

    Returns
    -------
    features : ndarray of shape (h, w, F), float32
        ``(h, w) = grid_shape(image.shape, spec)``; ``F = len(spec.feature_names())``.
    """
    spec = spec or FeatureSpec()
    return features_from_gray(preprocess(image, spec), spec)


def features_from_gray(gray: np.ndarray, spec: FeatureSpec, *, offset=None, full=None, stride: int = 1) -> np.ndarray:
    """Features of an already preprocessed grid (see :func:`preprocess`), shape (h, w, F) float32.

    ``offset`` and ``full`` place a tile inside its image for the border feature. With
    ``stride`` > 1 only every ``stride``-th pixel each way is returned, shape
    ``(ceil(h / stride), ceil(w / stride), F)``, equal to ``features_from_gray(gray, spec)[::stride,
    ::stride]`` (the ilastik bank does its per-pixel arithmetic only there).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    sub = (slice(None, None, stride), slice(None, None, stride))
    if spec.bank == "basic":
        chans = [c[sub] for c in _basic_bank(gray, spec)]
    else:
        chans = _ilastik_bank(gray, spec, stride)
    if spec.border_feature:
        chans.append(_border_distance(gray.shape, spec, offset, full)[sub])
    return _interleave(chans)


def _interleave(chans: list[np.ndarray]) -> np.ndarray:
    """Stack (h, w) channels into one C-contiguous (h, w, C) float32 array.

    Equal to ``np.stack(chans, axis=-1)``; stacking on a new first axis and copying the
    transpose is several times faster (contiguous writes), which matters once per image.
    """
    stacked = np.stack([np.asarray(c, np.float32) for c in chans])
    return np.ascontiguousarray(stacked.transpose(1, 2, 0))


def upsample(grid: np.ndarray, shape: tuple[int, int], factor: float) -> np.ndarray:
    """Bilinear upsampling of a (h, w, K) grid whose cells are ``factor`` px apart to (H, W, K)."""
    H, W = shape
    if grid.shape[:2] == (H, W):
        return grid
    chans = [grid[..., k] for k in range(grid.shape[2])]
    return _interleave(_sample_at(chans, factor, np.arange(H), np.arange(W)))
