"""The pixel model bundle: classifier, feature spec and class names; fitted, saved, loaded, run on images."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.utils.validation import check_is_fitted

from mining.catalogue.paths import models_dir  # noqa: F401 (re-exported: mining.models.pixel_model.models_dir)
from mining.models.pixel_classifier import (
    DEFAULT_CLASSIFIER,
    PixelClassifier,
    PixelModelError,
    _load_estimator,
    _save_estimator,
)
from mining.models.pixel_data import balanced_sample, labelled_features
from mining.models.pixel_features import FeatureSpec, features_from_gray, preprocess, upsample

logger = logging.getLogger(__name__)


FORMAT_VERSION = 1
#: A class the pixel budget keeps fewer training pixels of than this (while it has more) is reported:
#: a tree ensemble learns little from a few dozen pixels. Large images in ``natural`` sampling hit it:
#: on 2 MP mosaics with 5 small defects, 100 000 pixels in natural proportions kept 10 defect pixels.
MIN_CLASS_PIXELS = 100


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
    warnings = sampling_warnings(y, kept_y, budget=budget, sampling=sampling)
    for w in warnings:
        logger.warning(w)
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
    if warnings:
        metrics["sampling_warnings"] = warnings
    logger.info("pixel model trained on %d pixels in %.1fs", len(keep), t2 - t0)
    return PixelModel(spec=spec, classifier=clf, class_names={int(k): v for k, v in names.items()}, metrics=metrics)


def sampling_warnings(y: np.ndarray, kept_y: np.ndarray, *, budget: int, sampling: str) -> list[str]:
    """Warnings for classes the pixel budget kept too few training pixels of.

    Parameters
    ----------
    y : ndarray of int
        Class ids of every labelled pixel.
    kept_y : ndarray of int
        Class ids of the training sample.
    budget : int
    sampling : str

    Returns
    -------
    list of str
        One line per class with fewer than :data:`MIN_CLASS_PIXELS` kept pixels although it has
        more labelled ones, naming the remedy (empty when none).
    """
    out = []
    for c in np.unique(y):
        have, kept = int((y == c).sum()), int((kept_y == c).sum())
        if kept < MIN_CLASS_PIXELS and kept < have:
            out.append(
                f"class {int(c)}: the training sample kept {kept} of its {have} labelled pixels "
                f"(pixel.budget {budget}, sampling {sampling}); a model learns little from so few: "
                "raise pixel.budget or try pixel.sampling: balanced"
            )
    return out
