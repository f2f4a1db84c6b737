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
3. :func:`load_training_pairs` pairs images with label images of the same stem
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

The parts live in :mod:`~mining.models.pixel_features` (1, 2),
:mod:`~mining.models.pixel_data` (3), :mod:`~mining.models.pixel_classifier`,
:mod:`~mining.models.pixel_model` (4, training, saving) and
:mod:`~mining.models.pixel_stats` (5); this module is their one public face.
"""

from mining.models.pixel_classifier import (
    DEFAULT_CLASSIFIER,
    METHODS,
    PixelClassifier,
    PixelModelError,
)
from mining.models.pixel_data import (
    TrainingSet,
    balanced_sample,
    downscale_labels,
    find_training_pairs,
    labelled_features,
    load_training_pairs,
    read_label_image,
    sample_training_pixels,
)
from mining.models.pixel_features import (
    BANKS,
    FAMILIES,
    LOG_OFFSET,
    NORMALIZE,
    PADDINGS,
    FeatureSpec,
    compute_features,
    features_from_gray,
    grid_shape,
    preprocess,
    upsample,
)
from mining.models.pixel_model import (
    FORMAT_VERSION,
    PixelModel,
    fit_pixel_model,
    load_pixel_model,
    models_dir,
)
from mining.models.pixel_stats import (
    map_stats,
    uncertainty,
    valid_mask,
)

__all__ = [
    "BANKS",
    "DEFAULT_CLASSIFIER",
    "FAMILIES",
    "FORMAT_VERSION",
    "LOG_OFFSET",
    "METHODS",
    "NORMALIZE",
    "PADDINGS",
    "FeatureSpec",
    "PixelClassifier",
    "PixelModel",
    "PixelModelError",
    "TrainingSet",
    "balanced_sample",
    "compute_features",
    "downscale_labels",
    "features_from_gray",
    "find_training_pairs",
    "fit_pixel_model",
    "grid_shape",
    "labelled_features",
    "load_pixel_model",
    "load_training_pairs",
    "map_stats",
    "models_dir",
    "preprocess",
    "read_label_image",
    "sample_training_pixels",
    "uncertainty",
    "upsample",
    "valid_mask",
]
