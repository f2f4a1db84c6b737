"""Models: what the scorers run, trained or fitted on an archive's images.

The loop's second floor beside :mod:`mining.catalogue`, above :mod:`mining.io`;
it imports nothing from the floors above (scorers, ranking, the job, review,
learning).

- the pixel classifier: :mod:`~mining.models.pixel` (its public face) over
  :mod:`~mining.models.pixel_features` (filter bank),
  :mod:`~mining.models.pixel_data` (training data),
  :mod:`~mining.models.pixel_classifier`, :mod:`~mining.models.pixel_model`
  (the bundle) and :mod:`~mining.models.pixel_stats` (map statistics), tuned by
  :mod:`~mining.models.pixel_tune`;
- :mod:`~mining.models.descriptors` (hand-made texture descriptors),
  :mod:`~mining.models.outliers` (outlier scores, neighbours),
  :mod:`~mining.models.embedmap` (the 2-D map of the embeddings);
- :mod:`~mining.models.backbone` (the pretrained CNN) and
  :mod:`~mining.models.autoencoder`.

Every name below is importable from :mod:`mining.models`; its module is
imported when the name is first asked for (the backbone's torch only when a
backbone name is).
"""

from mining._lazy import lazy_exports

#: public name -> the module that defines it (imported when the name is first asked for)
_EXPORTS = {
    "BANKS": "pixel_features",
    "PADDINGS": "pixel_features",
    "NORMALIZE": "pixel_features",
    "FAMILIES": "pixel_features",
    "LOG_OFFSET": "pixel_features",
    "FeatureSpec": "pixel_features",
    "preprocess": "pixel_features",
    "grid_shape": "pixel_features",
    "compute_features": "pixel_features",
    "features_from_gray": "pixel_features",
    "upsample": "pixel_features",
    "downscale_labels": "pixel_data",
    "read_label_image": "pixel_data",
    "find_training_pairs": "pixel_data",
    "TrainingSet": "pixel_data",
    "labelled_features": "pixel_data",
    "balanced_sample": "pixel_data",
    "sample_training_pixels": "pixel_data",
    "load_training_pairs": "pixel_data",
    "PixelModelError": "pixel_classifier",
    "PixelClassifier": "pixel_classifier",
    "DEFAULT_CLASSIFIER": "pixel_classifier",
    "FORMAT_VERSION": "pixel_model",
    "PixelModel": "pixel_model",
    "load_pixel_model": "pixel_model",
    "fit_pixel_model": "pixel_model",
    "models_dir": "pixel_model",
    "uncertainty": "pixel_stats",
    "valid_mask": "pixel_stats",
    "map_stats": "pixel_stats",
    "GLCM_PROPS": "descriptors",
    "descriptor_names": "descriptors",
    "glcm_properties": "descriptors",
    "describe": "descriptors",
    "standardize": "outliers",
    "knn_indices": "outliers",
    "outlier_scores": "outliers",
    "small_clusters": "outliers",
    "ensure_numba_cache": "embedmap",
    "EmbeddingMap": "embedmap",
    "LOO_MAX": "pixel_tune",
    "K_FOLDS": "pixel_tune",
    "ROWS_PER_CLASS": "pixel_tune",
    "EVAL_PIXELS": "pixel_tune",
    "SCORE_RULES": "pixel_tune",
    "BORDER_FRACTIONS": "pixel_tune",
    "MAX_BORDER": "pixel_tune",
    "NORMALIZE_CANDIDATES": "pixel_tune",
    "FAMILY_CANDIDATES": "pixel_tune",
    "MIN_DEFECT_IMAGES": "pixel_tune",
    "SMOOTH_SIGMA": "pixel_tune",
    "TOP_K": "pixel_tune",
    "THRESHOLD": "pixel_tune",
    "TUNE_CLASSIFIER": "pixel_tune",
    "TuningError": "pixel_tune",
    "TuneResult": "pixel_tune",
    "check_labels": "pixel_tune",
    "defect_sizes": "pixel_tune",
    "scale_windows": "pixel_tune",
    "spec_for_window": "pixel_tune",
    "window_of": "pixel_tune",
    "image_score": "pixel_tune",
    "tune_pixel_model": "pixel_tune",
    "fit_tuned": "pixel_tune",
    "ConvAutoencoder": "autoencoder",
    "FeatureAutoencoder": "autoencoder",
    "gaussian_blur": "autoencoder",
    "error_map": "autoencoder",
    "trimmed_mean": "autoencoder",
    "WEIGHTS_ENV": "backbone",
    "TORCHVISION_SHA256": "backbone",
    "EFFICIENTNET_LITE0_SHA256": "backbone",
    "IMAGENET_MEAN": "backbone",
    "IMAGENET_STD": "backbone",
    "LITE_MEAN": "backbone",
    "LITE_STD": "backbone",
    "WeightsError": "backbone",
    "MobileNetV2": "backbone",
    "EfficientNetLite0": "backbone",
    "Arch": "backbone",
    "ARCHS": "backbone",
    "DEFAULT_ARCH": "backbone",
    "get_arch": "backbone",
    "MissingWeightsError": "backbone",
    "block_channels": "backbone",
    "packaged_weights": "backbone",
    "sha256_of": "backbone",
    "WeightsFile": "backbone",
    "resolve_weights": "backbone",
    "load_backbone": "backbone",
    "short_error": "backbone",
    "state_dict_mismatch": "backbone",
    "load_mobilenet_v2": "backbone",
    "input_shape": "backbone",
    "prepare_threads": "backbone",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
