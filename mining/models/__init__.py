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

#: module: the public names it defines (imported when one of them is first asked for)
_EXPORTS = """
pixel_features: BANKS PADDINGS NORMALIZE FAMILIES LOG_OFFSET FeatureSpec preprocess grid_shape compute_features
    features_from_gray upsample
pixel_data: downscale_labels read_label_image find_training_pairs TrainingSet labelled_features balanced_sample
    sample_training_pixels load_training_pairs
pixel_classifier: PixelModelError PixelClassifier DEFAULT_CLASSIFIER
pixel_model: FORMAT_VERSION PixelModel load_pixel_model fit_pixel_model models_dir
pixel_stats: uncertainty valid_mask map_stats
descriptors: GLCM_PROPS descriptor_names glcm_properties describe
outliers: standardize knn_indices outlier_scores small_clusters
embedmap: ensure_numba_cache EmbeddingMap
pixel_tune: LOO_MAX K_FOLDS ROWS_PER_CLASS EVAL_PIXELS SCORE_RULES BORDER_FRACTIONS MAX_BORDER
    NORMALIZE_CANDIDATES FAMILY_CANDIDATES MIN_DEFECT_IMAGES SMOOTH_SIGMA TOP_K THRESHOLD TUNE_CLASSIFIER
    TuningError TuneResult check_labels defect_sizes scale_windows spec_for_window window_of image_score
    tune_pixel_model fit_tuned
autoencoder: ConvAutoencoder FeatureAutoencoder gaussian_blur error_map trimmed_mean
backbone: WEIGHTS_ENV TORCHVISION_SHA256 EFFICIENTNET_LITE0_SHA256 IMAGENET_MEAN IMAGENET_STD LITE_MEAN LITE_STD
    WeightsError MobileNetV2 EfficientNetLite0 Arch ARCHS DEFAULT_ARCH get_arch MissingWeightsError
    block_channels packaged_weights sha256_of WeightsFile resolve_weights load_backbone short_error
    state_dict_mismatch load_mobilenet_v2 input_shape prepare_threads
"""

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
