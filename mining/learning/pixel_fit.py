"""Training the pixel model of a catalogue from the user's labelled folders (``raremine fit-pixel``).

:func:`fit_pixel` reads the image and label folders, tunes the settings by
cross-validation over the labelled images (:mod:`mining.models.pixel_tune`, unless
told not to), trains the model (:mod:`mining.models.pixel`) and registers it in the
catalogue (the demo's few labelled images go the same way,
:func:`mining.demo.fit_demo_pixel`). This module sits above the filter bank,
the classifier and the tuner (it imports them; none of them imports it).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from mining.models.pixel import FeatureSpec, PixelClassifier, fit_pixel_model, load_training_pairs, models_dir

logger = logging.getLogger(__name__)


def fit_pixel(
    store,
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    config=None,
    *,
    base: dict | None = None,
    tune: bool | None = None,
    reuse: dict | None = None,
    progress=None,
) -> dict:
    """Train a pixel model from a folder of images and label images; save it and register it in the catalogue.

    This is ``raremine fit-pixel``. The training images need not be in the catalogue.
    The model's record keeps the training folders (``config["training"]``),
    and the *base* folders: those of ``raremine fit-pixel`` itself, which a
    retraining from painted masks (:func:`mining.learn.learn`) trains on again.

    Parameters
    ----------
    store : mining.catalogue.store.Store
    images_dir, labels_dir : path
        Images and label images of the same stem (0 unlabelled, 1 background,
        2..K the classes named in ``config.class_names``).
    config : mining.config.PixelConfig, optional
        Features, classifier and budget (defaults: ``PixelConfig()``).
    base : dict, optional
        ``{"images": DIR, "labels": DIR}`` of the user's own training set
        when these folders add painted masks to it (default: these folders).
    tune : bool, optional
        Choose the features, the scorer's border and score rule by cross-validation over the
        labelled images (:mod:`mining.models.pixel_tune`); default ``config.tune``. The tuned model
        is trained with the chosen features and the config's classifier, budget and sampling
        (``config.tune_final: "config"``, the default) or with the tuner's own XGBoost on the
        CV's pixels (``"tuner"``); untuned ones with the config's features and classifier.
    reuse : dict, optional
        A previous model's ``metrics["tuning"]``: train with its choice without tuning again
        (:func:`mining.learn.learn` between two tunings); its estimate is kept and marked reused.
    progress : callable(done, total), optional
        Called after each tuning candidate.

    Returns
    -------
    dict
        ``model_id``, ``path`` (metadata JSON), ``format``, ``classes`` and the training
        ``metrics`` (with ``tuning``: the choice and the cross-validated estimate, when tuned).

    Raises
    ------
    ValueError
        Bad folders or label files (the file is named), or one class only.
    """
    from mining.config import PixelConfig

    cfg = config if config is not None else PixelConfig()
    bad = sorted(k for k in cfg.class_names if k < 2)
    if bad:
        raise ValueError(f"pixel.class_names: class ids must be >= 2 (1 is background), got {bad}")
    spec = FeatureSpec.from_dict(cfg.features.model_dump())
    clf = PixelClassifier(
        method=cfg.method,
        n_estimators=cfg.n_estimators,
        max_depth=cfg.max_depth,
        learning_rate=cfg.learning_rate,
        class_weight=cfg.class_weight,
        n_jobs=cfg.n_jobs,
        random_state=cfg.random_state,
    )
    pairs = load_training_pairs(images_dir, labels_dir, classes=[1, *cfg.class_names])
    tune = cfg.tune if tune is None else tune
    skipped = None
    if tune and reuse is None and sum(1 for _, lab, _ in pairs if np.any(lab)) < 2:
        skipped = (
            f"only {sum(1 for _, lab, _ in pairs if np.any(lab))} labelled image: tuning needs 2 or more to hold "
            "one out; trained with the fixed settings and no estimate"
        )
        logger.warning(skipped)
        tune = False

    def fit_configured(features: FeatureSpec):
        """The model on ``features`` with this section's classifier, budget, sampling and seed."""
        return fit_pixel_model(
            pairs,
            spec=features,
            classifier=clf,
            budget=cfg.budget,
            hard_rounds=cfg.hard_rounds,
            sampling=cfg.sampling,
            class_names=dict(cfg.class_names),
            random_state=cfg.random_state,
        )

    if reuse is not None or tune:
        from mining.models import pixel_tune as pt

        if reuse is not None:
            prev = reuse
            result = pt.TuneResult(
                spec=FeatureSpec.from_dict(prev["features"]),
                scorer=dict(prev["scorer"]),
                estimate={**prev["estimate"], "reused": True},
                candidates=prev.get("candidates", []),
                sizes=prev.get("sizes", {}),
                warnings=list(prev.get("warnings", [])),
                seconds=0.0,
            )
            pt.check_labels([p for p in pairs if np.any(p[1])])
        else:
            result = pt.tune_pixel_model(
                pairs,
                base=spec,
                time_budget=cfg.tune_seconds,
                n_jobs=cfg.n_jobs,
                random_state=cfg.random_state,
                progress=progress,
            )
        if cfg.tune_final == "config":  # the tuned features, this section's classifier, budget and sampling
            model = fit_configured(result.spec)
            model.metrics["tuning"] = result.to_dict()
        else:
            model = pt.fit_tuned(
                pairs, result, class_names=dict(cfg.class_names), n_jobs=cfg.n_jobs, random_state=cfg.random_state
            )
        spec, clf = model.spec, model.classifier
    else:
        model = fit_configured(spec)
    if skipped:
        model.metrics["tuning_skipped"] = skipped
    meta_path, fmt = model.save(os.path.join(models_dir(store.path), "pixel"), name="pixel")
    classes = [model.class_names.get(int(c), f"class_{int(c)}") for c in model.classes]
    model_id = store.add_model(
        "pixel",
        "pixel",
        meta_path,
        fmt,
        config={
            "features": spec.to_dict(),
            "estimator": clf.get_params(),
            "budget": cfg.budget,
            "hard_rounds": cfg.hard_rounds,
            "sampling": cfg.sampling,
            "tuned": "tuning" in model.metrics,
            "training": {
                "images": os.path.abspath(images_dir),
                "labels": os.path.abspath(labels_dir),
                "pairs": len(pairs),
                "base": base or {"images": os.path.abspath(images_dir), "labels": os.path.abspath(labels_dir)},
            },
        },
        classes=classes,
        metrics=model.metrics,
    )
    return {
        "model_id": model_id,
        "path": meta_path,
        "format": fmt,
        "method": clf.method,
        "classes": classes,
        "metrics": model.metrics,
    }
