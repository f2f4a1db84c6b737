"""Training data of the pixel classifier: images with label images, labels on the grid, a balanced sample."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mining.io import IMAGE_EXTENSIONS, UnreadableImage, read_image
from mining.models.pixel_features import FeatureSpec, features_from_gray, grid_shape, preprocess

logger = logging.getLogger(__name__)


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
