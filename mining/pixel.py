"""Pixel classifiers: multiscale filter features + RandomForest / XGBoost, trained from scribbles or masks.

The recipe of ilastik's pixel classification, built for mining an archive:

1. :func:`preprocess` turns any image into the float grayscale grid the
   features are computed on (the one rule of :func:`mining.io.to_float_gray`,
   then an optional downscale). Training and mining call the same function.
2. :func:`compute_features` stacks a multiscale filter bank, shape
   ``(h, w, F)``: scikit-image's ``multiscale_basic_features`` (``bank="basic"``)
   or an ilastik-like bank (``bank="ilastik"``: Gaussian, Laplacian of
   Gaussian, gradient magnitude, difference of Gaussians, structure-tensor
   and Hessian eigenvalues) computed with OpenCV. Borders are handled
   deliberately: the filters see a chosen padding (``padding``) and an optional
   distance-to-border feature lets the classifier learn that the image edge
   looks different.
3. :func:`read_training_set` pairs images with label images of the same stem
   (0 unlabelled, 1 background, 2..K classes; scribbles or full masks) and
   :func:`sample_training_pixels` draws a class-balanced pixel budget.
4. :class:`PixelClassifier` wraps scikit-learn's RandomForest and XGBoost
   (hist) behind one scikit-learn estimator; :class:`PixelModel` bundles it
   with its feature spec and class names, is saved in safe formats only
   (XGBoost JSON; skops with an explicit list of trusted types) and refuses to
   run on features other than those it was trained with.
5. :meth:`PixelModel.predict_proba` gives per-class probability maps at full
   resolution (or on a strided grid, upsampled), tile by tile for large
   images; :func:`uncertainty` and :func:`map_stats` summarise them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from mining.io import IMAGE_EXTENSIONS, UnreadableImage, read_image, to_float_gray

logger = logging.getLogger(__name__)

BANKS = ("basic", "ilastik")
PADDINGS = {"reflect": cv2.BORDER_REFLECT_101, "nearest": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}
METHODS = ("xgboost", "random_forest")
NORMALIZE = ("none", "image", "log", "log_centered")
#: Channel families of the ilastik bank, in channel order within a scale ("gauss" includes the raw intensity).
FAMILIES = ("gauss", "log", "gradmag", "dog", "st", "hess")
_FAMILY_CHANNELS = {"gauss": (0,), "log": (1,), "gradmag": (2,), "dog": (3,), "st": (4, 5), "hess": (6, 7)}
LOG_OFFSET = 1.0 / 64  # normalize="log": log(gray + LOG_OFFSET), so black stays finite
FORMAT_VERSION = 1


class PixelModelError(ValueError):
    """A pixel model cannot be used (wrong features, bad file); the message says why."""


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


# -- labels and training data ---------------------------------------------------------------------
def downscale_labels(labels: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Labels on the feature grid: within a block the highest class id wins (thin scribbles survive)."""
    if spec.downscale == 1:
        return labels
    h, w = grid_shape(labels.shape, spec)
    k = max(1, int(np.ceil(spec.downscale)))
    pooled = cv2.dilate(labels.astype(np.uint8), np.ones((k, k), np.uint8)) if k > 1 else labels
    return cv2.resize(pooled.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)


def read_label_image(path: str | os.PathLike, shape: tuple[int, int], *, max_class: int = 255) -> np.ndarray:
    """Read a label image (0 unlabelled, 1 background, 2..K classes) and check it against its image.

    Raises
    ------
    ValueError
        Naming the file: unreadable, colour, size different from ``shape``.
    """
    path = os.fspath(path)
    try:
        lab = read_image(path)
    except UnreadableImage as err:
        raise ValueError(f"label image {path!r} cannot be read: {err.reason}: {err.detail}") from err
    if lab.ndim == 3:
        if lab.shape[2] >= 3 and not (
            np.array_equal(lab[..., 0], lab[..., 1]) and np.array_equal(lab[..., 0], lab[..., 2])
        ):
            raise ValueError(
                f"label image {path!r} is colour; labels must be single-channel class ids "
                "(0 unlabelled, 1 background, 2..K classes)"
            )
        lab = lab[..., 0]
    if lab.dtype.kind not in "ui":
        raise ValueError(f"label image {path!r} has dtype {lab.dtype}; class ids must be integers")
    if lab.shape != tuple(shape):
        raise ValueError(
            f"label image {path!r} is {lab.shape[1]}x{lab.shape[0]} px but its image is "
            f"{shape[1]}x{shape[0]} px; they must be the same size"
        )
    if lab.max() > max_class:
        raise ValueError(f"label image {path!r} holds class id {int(lab.max())}; allowed 0..{max_class}")
    return lab.astype(np.uint8)


def find_training_pairs(images_dir: str | os.PathLike, labels_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """Pair the images of a folder with label images of the same stem.

    Raises
    ------
    ValueError
        When a folder is missing or no image has a label image.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for d, what in ((images_dir, "images"), (labels_dir, "labels")):
        if not d.is_dir():
            raise ValueError(f"{what} folder {str(d)!r} does not exist")
    labels = {p.stem: p for p in sorted(labels_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    pairs = [
        (str(p), str(labels[p.stem]))
        for p in sorted(images_dir.iterdir())
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.stem in labels
    ]
    if not pairs:
        raise ValueError(
            f"no image in {str(images_dir)!r} has a label image of the same stem in "
            f"{str(labels_dir)!r} (found {len(labels)} label files)"
        )
    return pairs


@dataclass
class TrainingSet:
    """Sampled training pixels: features ``X`` (n, F) float32 and class ids ``y`` (n,) int."""

    X: np.ndarray
    y: np.ndarray
    counts: dict[int, int] = field(default_factory=dict)
    n_images: int = 0


def labelled_features(
    pairs: list[tuple[np.ndarray, np.ndarray, str]], spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``X`` (n, F) and class ids ``y`` (n,) of every labelled pixel of the training pairs.

    Raises
    ------
    ValueError
        When labels do not match their image, no pixel is labelled, or only
        one class is labelled (the files or names are given).
    """
    feats, labs = [], []
    for image, labels, name in pairs:
        if labels.shape != image.shape[:2]:
            raise ValueError(f"labels of {name!r} have shape {labels.shape}, image has {image.shape[:2]}")
        if not np.any(labels):
            logger.info("no labelled pixel in %s; skipped", name)
            continue
        lab = downscale_labels(labels, spec)
        f = features_from_gray(preprocess(image, spec), spec)
        m = lab > 0
        feats.append(f[m])
        labs.append(lab[m].astype(np.int64))
    if not labs:
        raise ValueError(
            f"no labelled pixel in any of the {len(pairs)} label images "
            f"({', '.join(n for _, _, n in pairs[:5])}); label 1 = background, 2..K = classes"
        )
    X, y = np.concatenate(feats), np.concatenate(labs)
    classes = np.unique(y)
    if len(classes) < 2:
        names = ", ".join(n for _, _, n in pairs[:5])
        raise ValueError(
            f"only class {int(classes[0])} is labelled in the training labels ({names}); at least two "
            "classes are needed (1 = background and one or more of 2..K)"
        )
    return X, y


def balanced_sample(
    y: np.ndarray, budget: int, rng: np.random.Generator, weights: np.ndarray | None = None, *, balanced: bool = True
) -> np.ndarray:
    """Indices of a class-balanced sample of at most ``budget`` rows.

    Every class gets an equal share; a class with fewer rows keeps all of them
    and what it cannot use goes to the others. ``weights`` (n,) >= 0 make
    some rows more likely within their class (hard examples). With
    ``balanced=False`` the sample keeps the labels' natural class proportions.
    """
    if not balanced:
        if budget >= len(y):
            return np.arange(len(y))
        p = None
        if weights is not None:
            w = weights.astype(np.float64) + 1e-12
            p = w / w.sum()
        return np.sort(rng.choice(len(y), budget, replace=False, p=p))
    classes, counts = np.unique(y, return_counts=True)
    keep, remaining = [], budget
    for i, ci in enumerate(np.argsort(counts)):  # rarest first
        idx = np.flatnonzero(y == classes[ci])
        n = min(len(idx), max(1, remaining // (len(classes) - i)))
        if n < len(idx):
            p = None
            if weights is not None:
                w = weights[idx].astype(np.float64) + 1e-12
                p = w / w.sum()
            idx = rng.choice(idx, n, replace=False, p=p)
        keep.append(idx)
        remaining -= n
    return np.sort(np.concatenate(keep))


def sample_training_pixels(
    pairs: list[tuple[np.ndarray, np.ndarray, str]],
    spec: FeatureSpec,
    *,
    budget: int = 60_000,
    random_state: int | None = 0,
) -> TrainingSet:
    """Features of labelled pixels with a class-balanced pixel budget.

    Parameters
    ----------
    pairs : list of (image, labels, name)
        Images (any supported type) and label arrays of the same (H, W);
        ``name`` is used in errors.
    spec : FeatureSpec
    budget : int, default=60000
        Total pixels kept (see :func:`balanced_sample`).
    random_state : int, optional

    Returns
    -------
    TrainingSet
    """
    X, y = labelled_features(pairs, spec)
    keep = balanced_sample(y, budget, np.random.default_rng(random_state))
    kept_y = y[keep]
    return TrainingSet(
        X=X[keep],
        y=kept_y,
        counts={int(c): int((kept_y == c).sum()) for c in np.unique(y)},
        n_images=sum(1 for _, lab, _ in pairs if np.any(lab)),
    )


# -- the estimator ---------------------------------------------------------------------------------
class PixelClassifier(ClassifierMixin, BaseEstimator):
    """RandomForest or XGBoost (hist) on pixel feature rows, behind one scikit-learn estimator.

    Parameters
    ----------
    method : {"xgboost", "random_forest"}, default="xgboost"
    n_estimators : int, default=100
    max_depth : int or None, default=8
    learning_rate : float, default=0.2
        XGBoost only.
    class_weight : {"balanced", None}, default="balanced"
        Reweight samples so every class weighs the same in training.
    n_jobs : int, default=1
    random_state : int or None, default=0
    """

    def __init__(
        self,
        method="xgboost",
        n_estimators=100,
        max_depth=8,
        learning_rate=0.2,
        class_weight="balanced",
        n_jobs=1,
        random_state=0,
    ):
        self.method = method
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _make(self, n_classes: int):
        if self.method == "xgboost":
            from xgboost import XGBClassifier

            return XGBClassifier(
                n_estimators=self.n_estimators,
                max_depth=self.max_depth or 0,
                learning_rate=self.learning_rate,
                tree_method="hist",
                n_jobs=self.n_jobs,
                random_state=self.random_state,
                objective="binary:logistic" if n_classes == 2 else "multi:softprob",
                max_bin=64,
            )
        if self.method == "random_forest":
            from sklearn.ensemble import RandomForestClassifier

            return RandomForestClassifier(
                n_estimators=self.n_estimators,
                max_depth=self.max_depth,
                n_jobs=self.n_jobs,
                random_state=self.random_state,
                min_samples_leaf=2,
            )
        raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    def fit(self, X, y, sample_weight=None):
        """Fit on feature rows ``X`` (n, F) and class ids ``y`` (n,); return self."""
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.class_weight not in ("balanced", None):
            raise ValueError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}")
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"training needs samples of at least 2 classes; got 1 class: {self.classes_.tolist()}")
        w = np.ones(len(y), np.float64) if sample_weight is None else np.asarray(sample_weight, np.float64)
        if w.shape != (len(y),) or not np.all(np.isfinite(w)) or w.min() < 0 or w.sum() <= 0:
            raise ValueError("sample_weight must be finite, non-negative, one per sample and not all zero")
        if self.class_weight == "balanced":
            counts = np.bincount(y_enc)
            w = w * (len(y) / (len(counts) * counts))[y_enc]
        self.model_ = self._make(len(self.classes_))
        self.model_.fit(X, y_enc, sample_weight=w)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n, n_classes), float32, columns in ``classes_`` order."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        if self.method == "random_forest" and self.model_.n_jobs in (None, 1):
            # the forest's own trees, summed in order as RandomForestClassifier.predict_proba does,
            # without its per-tree joblib dispatch (a fixed cost per tree that shows on small images)
            X = np.ascontiguousarray(X)
            p = np.zeros((X.shape[0], len(self.classes_)), np.float64)
            for tree in self.model_.estimators_:
                p += tree.predict_proba(X, check_input=False)
            p /= len(self.model_.estimators_)
        else:
            p = self.model_.predict_proba(X)
        return np.asarray(p, np.float32)

    def predict(self, X) -> np.ndarray:
        """Most probable class id per row, shape (n,)."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


#: The classifier of the default ``pixel:`` config (measured best on magnetic tiles).
DEFAULT_CLASSIFIER = {"method": "random_forest", "n_estimators": 50, "max_depth": 10, "class_weight": None}

#: scikit-learn types a skops file of a pixel model may contain (nothing else is loaded).
_SKOPS_TRUSTED = [
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "numpy.dtype",
    "numpy.ndarray",
]


def _save_estimator(clf: PixelClassifier, base: str) -> tuple[str, str]:
    if clf.method == "xgboost":
        path = base + ".xgb.json"
        clf.model_.save_model(path)
        return path, "xgboost-json"
    import skops.io as sio

    path = base + ".skops"
    sio.dump(clf.model_, path)
    return path, "skops"


def _load_estimator(path: str, fmt: str, meta: dict) -> PixelClassifier:
    clf = PixelClassifier(**meta["estimator"])
    n_classes = len(meta["classes"])
    if fmt == "xgboost-json":
        from xgboost import XGBClassifier

        model = XGBClassifier()
        model.load_model(path)
    elif fmt == "skops":
        import skops.io as sio

        untrusted = sio.get_untrusted_types(file=path)
        bad = sorted(set(untrusted) - set(_SKOPS_TRUSTED))
        if bad:
            raise PixelModelError(f"model file {path!r} contains types that are not trusted: {bad}")
        model = sio.load(path, trusted=untrusted)
        from sklearn.ensemble import RandomForestClassifier

        if not isinstance(model, RandomForestClassifier):
            raise PixelModelError(
                f"model file {path!r} holds a {type(model).__name__}, which is not trusted here; "
                "a pixel model's skops file must hold a RandomForestClassifier"
            )
    else:
        raise PixelModelError(f"model file {path!r}: unknown format {fmt!r}; allowed xgboost-json, skops")
    clf.model_ = model
    clf.classes_ = np.asarray(meta["classes"], np.int64)
    clf.n_features_in_ = int(meta["n_features"])
    if n_classes != len(clf.classes_):
        raise PixelModelError(f"model file {path!r} is inconsistent: {n_classes} classes")
    return clf


# -- the model bundle -------------------------------------------------------------------------------
@dataclass
class PixelModel:
    """A trained pixel classifier with its feature spec and class names.

    Attributes
    ----------
    spec : FeatureSpec
    classifier : PixelClassifier
        Fitted; its ``classes_`` are the label ids (1 = background).
    class_names : dict of int to str
    metrics : dict
        Training facts (pixels per class, seconds, ...).
    """

    spec: FeatureSpec
    classifier: PixelClassifier
    class_names: dict[int, str] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def classes(self) -> np.ndarray:
        """Class ids in probability-column order."""
        return self.classifier.classes_

    def check_spec(self, spec: FeatureSpec | dict | None) -> None:
        """Refuse a feature spec other than the training one.

        Raises
        ------
        PixelModelError
            Listing the keys that differ.
        """
        if spec is None:
            return
        spec = spec if isinstance(spec, FeatureSpec) else FeatureSpec.from_dict(spec)
        if spec != self.spec:
            a, b = self.spec.to_dict(), spec.to_dict()
            diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
            raise PixelModelError(
                "the pixel model was trained with other features than those asked for; "
                f"differences (model, asked): {diff}. Retrain with `raremine fit-pixel` or use the model's features"
            )

    # prediction -------------------------------------------------------------------
    def _proba_grid(self, gray: np.ndarray, stride: int, offset=None, full=None) -> np.ndarray:
        feats = features_from_gray(gray, self.spec, offset=offset, full=full, stride=stride)
        h, w, f = feats.shape
        p = self.classifier.predict_proba(feats.reshape(-1, f))
        return p.reshape(h, w, -1)

    def predict_proba(
        self, image: np.ndarray, *, stride: int = 1, full_resolution: bool = True, tile_size: int | None = None
    ) -> np.ndarray:
        """Per-class probability maps of one image.

        Parameters
        ----------
        image : ndarray of shape (H, W) or (H, W, C)
        stride : int, default=1
            Predict every ``stride``-th pixel of the feature grid only.
        full_resolution : bool, default=True
            Upsample (bilinear) to (H, W); otherwise return the prediction grid.
        tile_size : int, optional
            Compute features and predictions in tiles of this side (original
            px) with a halo, for large images; the result matches the untiled one
            up to floating-point and interpolation error.

        Returns
        -------
        proba : ndarray of shape (H, W, K) or (h, w, K), float32
            Columns in ``classes`` order; sums to 1 over K.
        """
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        gray = preprocess(image, self.spec)
        gh, gw = gray.shape
        if tile_size is None or (gh * self.spec.downscale <= tile_size and gw * self.spec.downscale <= tile_size):
            grid = self._proba_grid(gray, stride)
        else:
            unit = math.lcm(stride, self.spec.grid_unit)
            step = max(unit, int(tile_size / self.spec.downscale) // unit * unit)
            halo = int(np.ceil(self.spec.halo / self.spec.downscale / unit)) * unit
            gh_s, gw_s = -(-gh // stride), -(-gw // stride)
            grid = np.zeros((gh_s, gw_s, len(self.classes)), np.float32)
            for y0 in range(0, gh, step):
                for x0 in range(0, gw, step):
                    y1, x1 = min(y0 + step, gh), min(x0 + step, gw)
                    ya, xa = max(0, y0 - halo), max(0, x0 - halo)
                    yb, xb = min(gh, y1 + halo), min(gw, x1 + halo)
                    # tiles whose halo is cut by the image edge see the same padding as the whole image
                    p = self._proba_grid(gray[ya:yb, xa:xb], stride, offset=(ya, xa), full=(gh, gw))
                    oy, ox = (y0 - ya) // stride, (x0 - xa) // stride
                    ny, nx = -(-(y1 - y0) // stride), -(-(x1 - x0) // stride)
                    grid[y0 // stride : y0 // stride + ny, x0 // stride : x0 // stride + nx] = p[
                        oy : oy + ny, ox : ox + nx
                    ]
        if not full_resolution:
            return grid
        H, W = image.shape[:2]
        return upsample(grid, (H, W), self.spec.downscale * stride)

    # persistence -------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, name: str = "pixel") -> tuple[str, str]:
        """Write the model to ``folder`` in safe formats; return (metadata path, estimator format).

        The metadata JSON holds the feature spec, class ids and names, the
        estimator parameters and the estimator file (XGBoost JSON or skops).
        """
        check_is_fitted(self.classifier)
        os.makedirs(folder, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-{time.time_ns() % 10**6:06d}"
        base = os.path.join(os.fspath(folder), f"{name}-{stamp}")
        est_path, fmt = _save_estimator(self.classifier, base)
        meta = {
            "format_version": FORMAT_VERSION,
            "features": self.spec.to_dict(),
            "feature_names": self.spec.feature_names(),
            "n_features": int(self.classifier.n_features_in_),
            "classes": [int(c) for c in self.classes],
            "class_names": {str(k): v for k, v in self.class_names.items()},
            "estimator": self.classifier.get_params(),
            "estimator_file": os.path.basename(est_path),
            "estimator_format": fmt,
            "metrics": self.metrics,
        }
        meta_path = base + ".json"
        from synthesis.atomic import atomic_write

        with atomic_write(meta_path) as fh:
            json.dump(meta, fh, indent=1, default=float)
        return meta_path, fmt


def upsample(grid: np.ndarray, shape: tuple[int, int], factor: float) -> np.ndarray:
    """Bilinear upsampling of a (h, w, K) grid whose cells are ``factor`` px apart to (H, W, K)."""
    H, W = shape
    if grid.shape[:2] == (H, W):
        return grid
    chans = [grid[..., k] for k in range(grid.shape[2])]
    return _interleave(_sample_at(chans, factor, np.arange(H), np.arange(W)))


def load_pixel_model(meta_path: str | os.PathLike, *, expect: FeatureSpec | dict | None = None) -> PixelModel:
    """Load a pixel model written by :meth:`PixelModel.save` (no code is executed on load).

    Parameters
    ----------
    meta_path : path
        The model's metadata JSON.
    expect : FeatureSpec or dict, optional
        Refuse the model if it was trained with other features.

    Raises
    ------
    PixelModelError
        For a missing or malformed file, untrusted content or other features.
    """
    meta_path = os.fspath(meta_path)
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except FileNotFoundError as err:
        raise PixelModelError(f"pixel model file {meta_path!r} does not exist") from err
    except json.JSONDecodeError as err:
        raise PixelModelError(f"pixel model file {meta_path!r} is not valid JSON: {err}") from err
    except UnicodeDecodeError as err:
        raise PixelModelError(
            f"pixel model file {meta_path!r} is not UTF-8 JSON text (give the .json file fit-pixel wrote)"
        ) from err
    except OSError as err:
        raise PixelModelError(f"pixel model file {meta_path!r} cannot be read: {err.strerror or err}") from err
    try:
        spec = FeatureSpec.from_dict(meta["features"])
        if meta.get("format_version") != FORMAT_VERSION:
            raise PixelModelError(
                f"pixel model {meta_path!r} has format_version {meta.get('format_version')!r}; "
                f"this raremine reads {FORMAT_VERSION}"
            )
        if spec.feature_names() != meta["feature_names"] or int(meta["n_features"]) != len(meta["feature_names"]):
            raise PixelModelError(
                f"pixel model {meta_path!r} was trained with features {meta['feature_names']} "
                f"but this raremine computes {spec.feature_names()} for its spec"
            )
        est_path = os.path.join(os.path.dirname(meta_path), meta["estimator_file"])
        if not os.path.isfile(est_path):
            raise PixelModelError(
                f"pixel model {meta_path!r} names the estimator file {est_path!r}, which does not exist "
                "(keep a model's .json and its estimator file together)"
            )
        try:
            clf = _load_estimator(est_path, meta["estimator_format"], meta)
        except (PixelModelError, KeyError, TypeError):
            raise
        except Exception as err:  # whatever a damaged file makes XGBoost, skops or zipfile raise
            raise PixelModelError(
                f"estimator file {est_path!r} of pixel model {meta_path!r} cannot be read as "
                f"{meta['estimator_format']}: {type(err).__name__}: {err}"
            ) from err
    except (KeyError, TypeError) as err:
        raise PixelModelError(f"pixel model file {meta_path!r} lacks or mangles key {err}") from err
    except ValueError as err:
        if isinstance(err, PixelModelError):
            raise
        raise PixelModelError(f"pixel model file {meta_path!r}: {err}") from err
    model = PixelModel(
        spec=spec,
        classifier=clf,
        class_names={int(k): v for k, v in meta["class_names"].items()},
        metrics=meta.get("metrics", {}),
    )
    model.check_spec(expect)
    return model


# -- training -------------------------------------------------------------------------------------
def fit_pixel_model(
    pairs: list[tuple[np.ndarray, np.ndarray, str]],
    *,
    spec: FeatureSpec | None = None,
    classifier: PixelClassifier | None = None,
    budget: int = 100_000,
    hard_rounds: int = 0,
    sampling: str = "natural",
    class_names: dict[int, str] | None = None,
    random_state: int | None = 0,
) -> PixelModel:
    """Train a pixel model from images and label arrays.

    Parameters
    ----------
    pairs : list of (image, labels, name)
        Labels: 0 unlabelled, 1 background, 2..K classes; same (H, W) as the image.
    spec : FeatureSpec, optional
    classifier : PixelClassifier, optional
        Unfitted; defaults to :data:`DEFAULT_CLASSIFIER` (a RandomForest of 50
        trees, depth 10, as the ``pixel:`` config).
    budget : int, default=100000
        Training pixels per round.
    hard_rounds : int, default=0
        Rounds of hard-example mining: the model of the previous round
        predicts every labelled pixel, and a second budget is drawn with
        probability proportional to its error (1 - P(true class)) and added,
        so rare confusing background (stains, edges) is not left out by the
        uniform sample. 0 trains once on the uniform sample.
    sampling : {"balanced", "natural"}, default="natural"
        Equal pixel shares per class, or the labels' own proportions (the
        rare class then stays rare and its probability is not inflated; pair
        it with ``class_weight=None``).
    class_names : dict of int to str, optional
        Defaults to ``{1: "background", k: "class_k"}``.
    random_state : int, optional

    Returns
    -------
    PixelModel
    """
    from sklearn.base import clone

    spec = spec or FeatureSpec()
    proto = (
        classifier
        if classifier is not None
        else PixelClassifier(**{**DEFAULT_CLASSIFIER, "random_state": random_state})
    )
    if hard_rounds < 0:
        raise ValueError(f"hard_rounds must be >= 0, got {hard_rounds}")
    if sampling not in ("balanced", "natural"):
        raise ValueError(f"sampling must be 'balanced' or 'natural', got {sampling!r}")
    bal = sampling == "balanced"
    rng = np.random.default_rng(random_state)
    t0 = time.perf_counter()
    X, y = labelled_features(pairs, spec)
    keep = balanced_sample(y, budget, rng, balanced=bal)
    t1 = time.perf_counter()
    clf = clone(proto).fit(X[keep], y[keep])
    for _ in range(hard_rounds):
        p = clf.predict_proba(X)
        err = 1.0 - p[np.arange(len(y)), np.searchsorted(clf.classes_, y)]
        hard = balanced_sample(y, budget, rng, weights=err, balanced=bal)
        keep = np.union1d(keep, hard)
        clf = clone(proto).fit(X[keep], y[keep])
    t2 = time.perf_counter()
    kept_y = y[keep]
    names = {1: "background"}
    names.update({int(c): f"class_{int(c)}" for c in clf.classes_ if c != 1})
    names.update(class_names or {})
    metrics = {
        "pixels_per_class": {int(c): int((kept_y == c).sum()) for c in clf.classes_},
        "images": sum(1 for _, lab, _ in pairs if np.any(lab)),
        "hard_rounds": hard_rounds,
        "feature_seconds": round(t1 - t0, 3),
        "fit_seconds": round(t2 - t1, 3),
    }
    logger.info("pixel model trained on %d pixels in %.1fs", len(keep), t2 - t0)
    return PixelModel(spec=spec, classifier=clf, class_names={int(k): v for k, v in names.items()}, metrics=metrics)


def load_training_pairs(
    images_dir, labels_dir, *, classes: list[int] | None = None
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Read images and label images of the same stem from two folders.

    Parameters
    ----------
    images_dir, labels_dir : path
    classes : list of int, optional
        Allowed class ids besides 0 (unlabelled); an id outside is an error.

    Raises
    ------
    ValueError
        Naming the file: unreadable image, label of another size, unknown class id.
    """
    out = []
    for img_path, lab_path in find_training_pairs(images_dir, labels_dir):
        try:
            img = read_image(img_path)
        except UnreadableImage as err:
            raise ValueError(f"training image {img_path!r} cannot be read: {err.reason}: {err.detail}") from err
        lab = read_label_image(lab_path, img.shape[:2])
        if classes is not None:
            bad = sorted(set(np.unique(lab).tolist()) - {0, *classes})
            if bad:
                raise ValueError(
                    f"label image {lab_path!r} holds unknown class ids {bad}; allowed 0 (unlabelled) "
                    f"and {sorted(classes)}"
                )
        out.append((img, lab, lab_path))
    return out


def models_dir(store_path: str | os.PathLike) -> str:
    """Folder beside a catalogue where its models are kept (``<catalogue stem>.models``)."""
    base, _ = os.path.splitext(os.path.abspath(os.fspath(store_path)))
    return base + ".models"


def uncertainty(proba: np.ndarray, kind: str = "margin") -> np.ndarray:
    """Uncertainty map from (..., K) probabilities: ``"margin"`` = 1 - max, ``"entropy"`` normalised to [0, 1]."""
    if kind == "margin":
        return (1.0 - proba.max(axis=-1)).astype(np.float32)
    if kind == "entropy":
        p = np.clip(proba, 1e-7, 1)
        return (-(p * np.log(p)).sum(-1) / np.log(proba.shape[-1])).astype(np.float32)
    raise ValueError(f"uncertainty kind must be 'margin' or 'entropy', got {kind!r}")


def valid_mask(shape: tuple[int, int], border: int) -> np.ndarray:
    """True inside the image, ``border`` px away from its edges (all True when border is 0)."""
    m = np.zeros(shape, bool)
    b = min(border, (min(shape) - 1) // 2)
    m[b : shape[0] - b, b : shape[1] - b] = True
    return m


def map_stats(
    prob: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    top_k: int = 50,
    threshold: float = 0.5,
    pixel_area: float = 1.0,
) -> dict[str, float]:
    """Statistics of one probability map.

    Parameters
    ----------
    prob : ndarray of shape (h, w)
    mask : ndarray of bool, optional
        Pixels that count (e.g. :func:`valid_mask`).
    top_k : int, default=50
        Pixels averaged in ``topk_mean`` (scaled by ``pixel_area`` on coarse grids).
    threshold : float, default=0.5
    pixel_area : float, default=1.0
        Original-image pixels per map pixel.

    Returns
    -------
    dict
        ``max``, ``topk_mean``, ``area`` (fraction of counted pixels above
        ``threshold``), ``components`` and ``largest`` (original px).
    """
    vals = prob[mask] if mask is not None else prob.ravel()
    if vals.size == 0:
        return {"max": 0.0, "topk_mean": 0.0, "area": 0.0, "components": 0.0, "largest": 0.0}
    k = int(min(vals.size, max(1, round(top_k / pixel_area))))
    top = np.partition(vals, vals.size - k)[vals.size - k :]
    above = prob > threshold
    if mask is not None:
        above &= mask
    n, _, st, _ = cv2.connectedComponentsWithStats(above.astype(np.uint8), connectivity=8)
    largest = float(st[1:, cv2.CC_STAT_AREA].max()) * pixel_area if n > 1 else 0.0
    return {
        "max": float(vals.max()),
        "topk_mean": float(top.mean()),
        "area": float((vals > threshold).mean()),
        "components": float(n - 1),
        "largest": largest,
    }
