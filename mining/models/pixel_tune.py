"""Self-tuning of the pixel classifier: cross-validation over the user's own labelled images.

``raremine fit-pixel`` (with ``pixel.tune: true``, the default) calls :func:`tune_pixel_model`,
which chooses the settings that matter on *these* labels, by rules that hold for any archive:

1. **Scale range** from the labelled defects' sizes (:func:`defect_sizes`): the smallest scale
   follows the defects' width (twice the largest inscribed radius of each mask component), the
   largest their equivalent diameter; :func:`scale_windows` proposes that window and its
   neighbours (an octave narrower or wider at either end) beside the fixed default. When the
   smallest useful scale is 2 px or more, the features are computed on the image shrunk by it
   (``downscale``), which costs a fraction.
2. **Normalisation** (``none``, ``image``, ``log_centered``), then the **feature families**
   (all, or without the intensity/Gaussian channels).
3. **Border margin and image-score rule** of the scorer, from the held-out maps alone (no refit).

Each candidate is scored by cross-validation over images (leave one image out up to
:data:`LOO_MAX` images, else :data:`K_FOLDS` folds): a model trained on the other images maps each
held-out image. The objective is the fraction of (held-out defect image, held-out negative) pairs
ranked the right way plus the mean pixel average precision of held-out defect images; negatives
are the normal images and each defect image's own background (its map with the defect, widened
by the smoothing, blanked), so that false alarms in real background count even with few or no
normal images. The estimate reported to the user counts defect against normal images only.
Candidates are tried in a fixed order under a time
budget; the tuned model is then trained on every image with the choice.

The CV estimate is stored in the model (``metrics["tuning"]``) and printed by ``fit-pixel``, so
the user sees how good the model looks on their own data, with its uncertainty.
Library code: logging only; progress through an optional callback.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from mining.models.pixel import (
    FAMILIES,
    FeatureSpec,
    PixelClassifier,
    PixelModel,
    downscale_labels,
    features_from_gray,
    map_stats,
    preprocess,
    valid_mask,
)

logger = logging.getLogger(__name__)

LOO_MAX = 12  # leave one image out up to this many labelled images
K_FOLDS = 6  # folds beyond it
ROWS_PER_CLASS = 3000  # training pixels per class and image (feature grid), for every CV fit and the final one
EVAL_PIXELS = 40_000  # held-out prediction grid per image (about; stride chosen per image)
SCORE_RULES = ("max", "topk_mean", "largest_component", "area")
BORDER_FRACTIONS = (0.0, 0.01, 0.025, 0.05)  # border margins tried, as fractions of the images' shorter side
#: Largest border margin tried (px): half the index's default tile overlap (64), so that on images split
#: into tiles the margins of two neighbouring tiles leave no band of the image unscored.
MAX_BORDER = 32
NORMALIZE_CANDIDATES = ("log_centered", "image", "none")
FAMILY_CANDIDATES = (FAMILIES, tuple(f for f in FAMILIES if f != "gauss"))
MIN_DEFECT_IMAGES = 3  # fewer: a warning that the estimate is rough
SMOOTH_SIGMA, TOP_K, THRESHOLD = 2.0, 30, 0.5  # as the pixel scorer's defaults

#: The estimator of every CV fit and of the tuned model (XGBoost hist: fast to fit and to run).
TUNE_CLASSIFIER = {"method": "xgboost", "n_estimators": 80, "max_depth": 6, "learning_rate": 0.2, "class_weight": None}


class TuningError(ValueError):
    """The labels cannot be tuned on (the message names the files and what is needed)."""


@dataclass
class TuneResult:
    """What the tuning chose and how good it looked under cross-validation.

    Attributes
    ----------
    spec : FeatureSpec
        The chosen features.
    scorer : dict
        ``border`` (px) and ``score_rule`` for the pixel scorer.
    estimate : dict
        Cross-validated figures of the chosen settings (see :func:`tune_pixel_model`).
    candidates : list of dict
        Every candidate tried, with its objective.
    sizes : dict
        The labelled defects' sizes the scale window started from.
    warnings : list of str
    seconds, cpu_seconds : float
        Wall time and CPU time of this process.
    skipped : list of dict
        Candidates left out once the time budget was spent.
    """

    spec: FeatureSpec
    scorer: dict
    estimate: dict
    candidates: list[dict] = field(default_factory=list)
    sizes: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready form (stored as the model's ``metrics["tuning"]``)."""
        return {
            "features": self.spec.to_dict(),
            "scorer": dict(self.scorer),
            "estimate": self.estimate,
            "candidates": self.candidates,
            "sizes": self.sizes,
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "skipped": self.skipped,
        }


# -- labels -----------------------------------------------------------------------------------------
def check_labels(pairs: list[tuple[np.ndarray, np.ndarray, str]]) -> tuple[list[int], list[int], list[str]]:
    """Sort the labelled images into defect images and normal images; refuse labels that cannot train.

    Parameters
    ----------
    pairs : list of (image, labels, name)
        Labels: 0 unlabelled, 1 background, 2..K classes.

    Returns
    -------
    defect, normal : list of int
        Indices of images with some pixel of class >= 2, and of images with background only.
    warnings : list of str
        Too few defect images, no normal image (image ranking cannot be estimated).

    Raises
    ------
    TuningError
        No labelled pixel, no defect pixel, or no background pixel in any label image (the
        files are named, with what is needed).
    """
    names = ", ".join(n for _, _, n in pairs[:5]) + (" ..." if len(pairs) > 5 else "")
    if not pairs:
        raise TuningError("no training images: give label images (0 unlabelled, 1 background, 2..K classes)")
    defect = [i for i, (_, lab, _) in enumerate(pairs) if np.any(lab >= 2)]
    normal = [i for i, (_, lab, _) in enumerate(pairs) if i not in defect and np.any(lab == 1)]
    if not defect and not normal:
        raise TuningError(f"no labelled pixel in any of the {len(pairs)} label images ({names})")
    if not defect:
        raise TuningError(
            f"none of the {len(pairs)} label images ({names}) marks a defect (class id >= 2): only background is "
            "labelled. Paint the defects of at least one image with class 2 (or another class id >= 2)"
        )
    if not any(np.any(lab == 1) for _, lab, _ in pairs):
        raise TuningError(
            f"no label image ({names}) marks background (class id 1): only defect classes are labelled. "
            "Label some background with 1 (a mask image: 1 outside the defect, 2 inside)"
        )
    warnings = []
    if len(defect) < MIN_DEFECT_IMAGES:
        warnings.append(
            f"only {len(defect)} labelled defect image(s): the cross-validated estimate is rough and the settings "
            f"may fit these few; label {MIN_DEFECT_IMAGES} or more"
        )
    if not normal:
        warnings.append(
            "no normal image among the labels (one class of images only): how well the model ranks defect images "
            "above normal ones cannot be estimated; add a few normal images (label images all 1)"
        )
    return defect, normal, warnings


def defect_sizes(pairs: list[tuple[np.ndarray, np.ndarray, str]]) -> dict:
    """Sizes of the labelled defects: per connected component (class >= 2, 8-connected, >= 2 px).

    Returns
    -------
    dict
        ``components``; ``width`` (median of twice the largest inscribed radius, px) and
        ``diameter`` (median equivalent diameter ``sqrt(4 area / pi)``, px); ``width_p10``,
        ``diameter_p90``; ``min_side`` (the images' shorter side, median).
    """
    widths, diams = [], []
    for _, lab, _ in pairs:
        m = (lab >= 2).astype(np.uint8)
        if not m.any():
            continue
        n, cc, st, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        dist = cv2.distanceTransform(np.pad(m, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
        inscribed = np.zeros(n, np.float32)
        np.maximum.at(inscribed, cc.ravel(), dist.ravel())
        for k in range(1, n):
            area = st[k, cv2.CC_STAT_AREA]
            if area >= 2:
                widths.append(2.0 * float(inscribed[k]))
                diams.append(math.sqrt(4 * area / math.pi))
    sides = [min(img.shape[:2]) for img, _, _ in pairs]
    if not widths:
        widths, diams = [1.0], [1.0]
    return {
        "components": len(widths) if widths != [1.0] else 0,
        "width": float(np.median(widths)),
        "width_p10": float(np.percentile(widths, 10)),
        "diameter": float(np.median(diams)),
        "diameter_p90": float(np.percentile(diams, 90)),
        "min_side": float(np.median(sides)),
    }


def _pow2_floor(x: float) -> float:
    return 2.0 ** math.floor(math.log2(max(x, 1e-6)))


def _pow2_ceil(x: float) -> float:
    return 2.0 ** math.ceil(math.log2(max(x, 1e-6)))


def scale_windows(sizes: dict, *, default: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16)) -> list[tuple[float, ...]]:
    """Candidate scale lists (octaves, px of the original image), the size-derived window first.

    The smallest scale is a quarter of the defects' width (10th percentile; at least 0.5 px),
    the largest half their equivalent diameter (90th percentile; at least twice the smallest),
    both rounded out to powers of two and capped at an eighth of the images' shorter side. Then
    the same window an octave narrower or wider at either end, then ``default``.
    """
    cap = max(1.0, _pow2_floor(sizes["min_side"] / 8))
    lo = min(max(0.5, _pow2_floor(sizes["width_p10"] / 4)), cap)
    hi = min(max(_pow2_ceil(sizes["diameter_p90"] / 2), 2 * lo), cap)
    lo = min(lo, hi)

    def octaves(a, b):
        a, b = max(0.5, a), min(cap, b)
        if a > b:
            return None
        return tuple(float(2.0**e) for e in range(int(math.log2(a)), int(math.log2(b)) + 1))

    out = []
    for a, b in ((lo, hi), (lo, 2 * hi), (lo / 2, hi), (2 * lo, hi), (lo, hi / 2)):
        w = octaves(a, b)
        if w and len(w) >= 2 and w not in out:
            out.append(w)
    d = tuple(float(s) for s in default)
    if d not in out:
        out.append(d)
    return out


def spec_for_window(window: tuple[float, ...], base: FeatureSpec) -> FeatureSpec:
    """The feature spec of a scale window: when its smallest scale is 2 px or more, shrink the image by it.

    Scales are then given in px of the shrunk grid (``sigmas / downscale``), so the filters see
    the same structures at a fraction of the pixels (a rule for any archive: no scale below the
    window's smallest is asked for, so nothing finer than the shrunk grid is lost). The shrink is
    at most 4, so that the map keeps a defect's outline.
    """
    lo = min(window)
    f = min(lo, 4.0) if lo >= 2 else 1.0
    return replace(base, sigmas=tuple(s / f for s in window), downscale=float(f))


def window_of(spec: FeatureSpec) -> tuple[float, ...]:
    """Scales of a spec in px of the original image."""
    return tuple(s * spec.downscale for s in spec.sigmas)


# -- cross-validation data ---------------------------------------------------------------------------
@dataclass
class _ImageData:
    X: np.ndarray  # training rows (feature grid), all channels of the spec
    y: np.ndarray
    E: np.ndarray  # held-out prediction grid (gh, gw, F)
    lab: np.ndarray  # original labels on the common evaluation grid
    cell: float  # original px per evaluation-grid cell
    grid: float  # original px per prediction-grid cell


def _rows(lab: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of the training pixels of one label grid: up to ROWS_PER_CLASS per class."""
    flat = lab.ravel()
    keep = []
    for c in np.unique(flat[flat > 0]):
        idx = np.flatnonzero(flat == c)
        if len(idx) > ROWS_PER_CLASS:
            idx = rng.choice(idx, ROWS_PER_CLASS, replace=False)
        keep.append(idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def _image_data(image: np.ndarray, labels: np.ndarray, spec: FeatureSpec, seed: int) -> _ImageData:
    """Training rows and the held-out prediction grid of one image under ``spec``.

    The prediction grid is strided on the feature grid; its map is compared with the labels on a
    grid fixed in original px (the same for every candidate, whatever its downscale), so that
    candidates' pixel AP compare.
    """
    gray = preprocess(image, spec)
    lab = downscale_labels(labels, spec)
    f = features_from_gray(gray, spec)
    nf = f.shape[2]
    idx = _rows(lab, np.random.default_rng(seed))
    H, W = labels.shape
    s0 = max(1, round(math.sqrt(H * W / EVAL_PIXELS)))  # the common evaluation grid (original px)
    stride = max(1, round(s0 / spec.downscale))
    return _ImageData(
        X=f.reshape(-1, nf)[idx],
        y=lab.ravel()[idx].astype(np.int64),
        E=np.ascontiguousarray(f[::stride, ::stride]),
        lab=np.ascontiguousarray(labels[::s0, ::s0]),
        cell=float(s0),
        grid=spec.downscale * stride,
    )


def _to_eval(p: np.ndarray, d: _ImageData) -> np.ndarray:
    """A held-out map on the feature grid, resampled to the common evaluation grid."""
    if p.shape == d.lab.shape and d.grid == d.cell:
        return p.astype(np.float32)
    from mining.models.pixel_features import _sample_at

    # evaluation pixel i is original px i * cell; _sample_at places it on the grid of spacing d.grid
    ys = np.arange(d.lab.shape[0]) * d.cell
    xs = np.arange(d.lab.shape[1]) * d.cell
    return _sample_at([p.astype(np.float32)], d.grid, ys, xs)[0]


def _folds(n: int, defect: list[int], seed: int) -> list[list[int]]:
    """Held-out image indices per fold: one image each up to LOO_MAX, else K_FOLDS stratified folds."""
    if n <= LOO_MAX:
        return [[i] for i in range(n)]
    rng = np.random.default_rng(seed)
    d = rng.permutation(defect).tolist()
    o = rng.permutation([i for i in range(n) if i not in set(defect)]).tolist()
    folds = [[] for _ in range(K_FOLDS)]
    for j, i in enumerate(d + o):
        folds[j % K_FOLDS].append(i)
    return [f for f in folds if f]


# -- scoring a held-out map ----------------------------------------------------------------------------
def image_score(defect: np.ndarray, cell: float, rule: str, border: float) -> float:
    """Image score of a defect-probability grid as the pixel scorer computes it (smoothing, margin, rule)."""
    s = SMOOTH_SIGMA / cell
    p = defect.astype(np.float32)
    if s > 0.2:
        p = cv2.GaussianBlur(p, (0, 0), s, borderType=cv2.BORDER_REFLECT)
    mask = valid_mask(p.shape, int(np.ceil(border / cell)))
    st = map_stats(p, mask=mask, top_k=TOP_K, threshold=THRESHOLD, pixel_area=cell * cell)
    return {"max": st["max"], "topk_mean": st["topk_mean"], "area": st["area"], "largest_component": st["largest"]}[
        rule
    ]


def _pixel_ap(defect: np.ndarray, lab: np.ndarray) -> float | None:
    from sklearn.metrics import average_precision_score

    m = lab > 0
    y = lab[m] >= 2
    if not y.any() or y.all():
        return None
    return float(average_precision_score(y, defect[m]))


def _pairs(scores: dict[int, float], defect: list[int], normal: list[int]) -> tuple[float, int]:
    """Pairs (defect image, normal image) ranked right (ties count half), and the number of pairs."""
    good = 0.0
    for i in defect:
        for j in normal:
            good += 1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0
    return good, len(defect) * len(normal)


def _separation(scores: dict[int, float], defect: list[int], normal: list[int]) -> float:
    """Scale-free margin: (median defect score - highest normal score) / spread of all scores (tie-break)."""
    v = np.array(list(scores.values()), np.float64)
    spread = float(v.std()) or 1.0
    return (float(np.median([scores[i] for i in defect])) - max(scores[j] for j in normal)) / spread


# -- the tuner -----------------------------------------------------------------------------------------
def tune_pixel_model(
    pairs: list[tuple[np.ndarray, np.ndarray, str]],
    *,
    base: FeatureSpec | None = None,
    windows: list[tuple[float, ...]] | None = None,
    normalizations: tuple[str, ...] | None = NORMALIZE_CANDIDATES,
    families: tuple[tuple[str, ...], ...] | None = FAMILY_CANDIDATES,
    time_budget: float = 120.0,
    n_jobs: int = 1,
    random_state: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> TuneResult:
    """Choose features, border margin and score rule by cross-validation over the labelled images.

    Parameters
    ----------
    pairs : list of (image, labels, name)
        Labels: 0 unlabelled, 1 background, 2..K classes (all classes >= 2 count as defect).
    base : FeatureSpec, optional
        Padding, border feature and the settings not tuned come from here (default ``FeatureSpec``
        with ``fast_scales``).
    windows : list of tuple of float, optional
        Scale lists (px of the original image) to try; default :func:`scale_windows` of the
        labelled defects' sizes.
    normalizations, families : optional
        Candidates of the later stages (None: keep ``base``'s).
    time_budget : float, default=120
        CPU seconds of this process (``time.process_time``: the same choice on an idle and on a
        busy machine, where the wall time is longer); once spent, the remaining candidates are
        skipped (logged, and listed in ``skipped``; the first of each stage always runs).
    n_jobs : int, default=1
    random_state : int, default=0
    progress : callable(done, total), optional

    Returns
    -------
    TuneResult
        ``estimate`` holds ``images``, ``defect_images``, ``normal_images``, ``folds``,
        ``pairs_right``/``pairs`` (held-out defect images ranked above held-out normal ones),
        ``pair_fraction`` with ``pair_fraction_ci`` (Wilson 90 % interval over pairs),
        ``pixel_ap`` mean, ``pixel_ap_sd`` (over defect images) and per image.

    Raises
    ------
    TuningError
        Labels that cannot train (see :func:`check_labels`) or fewer than two labelled images.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    pairs = [p for p in pairs if np.any(p[1])]
    defect, normal, warnings = check_labels(pairs)
    if len(pairs) < 2:
        raise TuningError(
            f"tuning needs at least 2 labelled images to hold one out, got 1 ({pairs[0][2]}); "
            "label more images or train with the fixed settings (--no-tune, pixel.tune: false)"
        )
    for w in warnings:
        logger.warning(w)
    base = base or FeatureSpec(fast_scales=True, normalize="log_centered")
    sizes = defect_sizes(pairs)
    windows = windows or scale_windows(sizes)
    folds = _folds(len(pairs), defect, random_state)
    clf_params = {**TUNE_CLASSIFIER, "n_jobs": n_jobs, "random_state": random_state}
    n_norm = len(normalizations or ()) - (1 if normalizations and base.normalize in normalizations else 0)
    total = len(windows) + max(0, n_norm) + max(0, len(families or ()) - 1)
    done = 0
    cache: dict[str, list[_ImageData]] = {}
    results: list[dict] = []
    skipped: list[dict] = []

    def data_for(spec: FeatureSpec) -> list[_ImageData]:
        key = replace(spec, families=FAMILIES).fingerprint()
        if key not in cache:
            cache.clear()  # one spec's data at a time keeps memory flat
            full = replace(spec, families=FAMILIES)
            cache[key] = [_image_data(img, lab, full, random_state + i) for i, (img, lab, _) in enumerate(pairs)]
        return cache[key]

    def evaluate(spec: FeatureSpec) -> dict:
        data = data_for(spec)
        cols = _columns(spec)
        maps = {}
        for held in folds:
            train = [i for i in range(len(pairs)) if i not in held]
            X = np.concatenate([data[i].X[:, cols] for i in train])
            y = np.concatenate([data[i].y for i in train])
            y = np.where(y >= 2, 2, 1)
            if len(np.unique(y)) < 2:
                for i in held:
                    maps[i] = np.zeros(data[i].lab.shape, np.float32)
                continue
            clf = PixelClassifier(**clf_params).fit(X, y)
            col = list(clf.classes_).index(2)
            for i in held:
                e = data[i].E
                p = clf.predict_proba(e[..., cols].reshape(-1, len(cols)))[:, col].reshape(e.shape[:2])
                maps[i] = _to_eval(p, data[i])
        return _summarise(maps, data, defect, normal, sizes)

    def run(stage: str, spec: FeatureSpec, first: bool) -> dict | None:
        nonlocal done
        if not first and time.process_time() - c0 > time_budget:
            logger.info("tuning: time budget of %.0f CPU s spent; %s candidate %s skipped", time_budget, stage, spec)
            skipped.append({"stage": stage, "scales": list(window_of(spec)), "normalize": spec.normalize})
            done += 1
            return None
        t = time.perf_counter()
        r = evaluate(spec)
        r.update({"stage": stage, "spec": spec, "seconds": round(time.perf_counter() - t, 2)})
        results.append(r)
        logger.info(
            "tuning %s: scales %s, normalize %s, families %s: objective %.3f (pairs %.2f, pixel AP %.3f) in %.1fs",
            stage,
            window_of(spec),
            spec.normalize,
            ",".join(spec.families),
            r["objective"],
            r["pair_fraction"] if r["pair_fraction"] is not None else float("nan"),
            r["pixel_ap"],
            r["seconds"],
        )
        done += 1
        if progress:
            progress(done, total)
        return r

    def best() -> dict:
        return max(results, key=lambda r: (round(r["objective"], 6), -results.index(r)))

    for k, w in enumerate(windows):
        run("scales", spec_for_window(w, base), k == 0)
    chosen = best()["spec"]
    for k, nz in enumerate(n for n in (normalizations or ()) if n != chosen.normalize):
        run("normalize", replace(chosen, normalize=nz), k == 0)
    chosen = best()["spec"]
    for k, fam in enumerate(f for f in (families or ()) if tuple(f) != chosen.families):
        run("families", replace(chosen, families=tuple(fam)), k == 0)
    top = best()
    estimate = {
        "images": len(pairs),
        "defect_images": len(defect),
        "normal_images": len(normal),
        "folds": len(folds),
        **{k: top[k] for k in ("pairs_right", "pairs", "pair_fraction", "pair_fraction_ci", "pixel_ap", "pixel_ap_sd")},
        "pixel_ap_per_image": top["pixel_ap_per_image"],
        "objective": top["objective"],
    }
    candidates = [
        {
            "stage": r["stage"],
            "scales": list(window_of(r["spec"])),
            "downscale": r["spec"].downscale,
            "normalize": r["spec"].normalize,
            "families": list(r["spec"].families),
            "objective": round(r["objective"], 4),
            "pair_fraction": r["pair_fraction"],
            "pixel_ap": round(r["pixel_ap"], 4),
            "seconds": r["seconds"],
        }
        for r in results
    ]
    res = TuneResult(
        spec=top["spec"],
        scorer=top["scorer"],
        estimate=estimate,
        candidates=candidates,
        sizes={k: round(v, 2) for k, v in sizes.items()},
        warnings=warnings,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - c0,
        skipped=skipped,
    )
    res._data = data_for(top["spec"])  # the chosen spec's training rows, for the final fit
    return res


def _columns(spec: FeatureSpec) -> np.ndarray:
    """Columns of ``spec``'s features within those of the same spec with every family."""
    full = replace(spec, families=FAMILIES).feature_names()
    pos = {n: i for i, n in enumerate(full)}
    return np.array([pos[n] for n in spec.feature_names()], np.int64)


def _wilson(k: float, n: int, z: float = 1.645) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (round(max(0.0, c - h), 3), round(min(1.0, c + h), 3))


def _summarise(maps, data, defect, normal, sizes) -> dict:
    aps = {i: _pixel_ap(maps[i], data[i].lab) for i in defect}
    ap_vals = [v for v in aps.values() if v is not None]
    pixel_ap = float(np.mean(ap_vals)) if ap_vals else 0.0
    out = {
        "pixel_ap": pixel_ap,
        "pixel_ap_sd": float(np.std(ap_vals, ddof=1)) if len(ap_vals) > 1 else None,
        "pixel_ap_per_image": [round(v, 3) if v is not None else None for v in aps.values()],
    }
    side = sizes["min_side"]
    borders = sorted({min(MAX_BORDER, round(f * side)) for f in BORDER_FRACTIONS})
    # each defect image's own background (its map with the defect, widened by the smoothing, set to 0)
    # is one more normal example for choosing the rule and margin: false alarms in real background
    backgrounds = {}
    for i in defect:
        d = data[i]
        r = int(np.ceil((3 * SMOOTH_SIGMA + 2) / d.cell))
        grown = cv2.dilate((d.lab >= 2).astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
        backgrounds[("bg", i)] = np.where(grown, 0.0, maps[i]).astype(np.float32)
    negatives = [*normal, *backgrounds]
    best = None
    for rule in SCORE_RULES:
        for b in borders:
            sc = {i: image_score(maps[i], data[i].cell, rule, b) for i in (*defect, *normal)}
            sc.update({k: image_score(m, data[k[1]].cell, rule, b) for k, m in backgrounds.items()})
            right_all, n_all = _pairs(sc, defect, negatives)
            key = (right_all / n_all, _separation(sc, defect, negatives))
            if best is None or key > best[0]:
                best = (key, rule, b, sc)
    (frac_all, _), rule, b, sc = best
    out.update(scorer={"score_rule": rule, "border": b}, objective=frac_all + pixel_ap)
    out["pairs_with_backgrounds"] = round(frac_all, 4)
    if normal:
        right, n = _pairs(sc, defect, normal)
        out.update(
            pairs_right=right,
            pairs=n,
            pair_fraction=round(right / n, 4),
            pair_fraction_ci=_wilson(right, n),
        )
    else:
        out.update(pairs_right=None, pairs=0, pair_fraction=None, pair_fraction_ci=None)
    return out


def fit_tuned(
    pairs: list[tuple[np.ndarray, np.ndarray, str]],
    result: TuneResult,
    *,
    class_names: dict[int, str] | None = None,
    n_jobs: int = 1,
    random_state: int = 0,
) -> PixelModel:
    """Train the tuned model on every labelled image (the CV's own training rows and estimator).

    The tuning's choice and estimate are stored in ``metrics["tuning"]``; the pixel scorer takes
    its border and score rule from there unless set.
    """
    t0 = time.perf_counter()
    pairs = [p for p in pairs if np.any(p[1])]
    data = getattr(result, "_data", None)
    if data is None or len(data) != len(pairs):
        data = [_image_data(img, lab, result.spec, random_state + i) for i, (img, lab, _) in enumerate(pairs)]
        cols = np.arange(data[0].X.shape[1])
    else:
        cols = _columns(result.spec)
    X = np.concatenate([d.X[:, cols] for d in data])
    y = np.concatenate([d.y for d in data])
    clf = PixelClassifier(**{**TUNE_CLASSIFIER, "n_jobs": n_jobs, "random_state": random_state}).fit(X, y)
    names = {1: "background"}
    names.update({int(c): f"class_{int(c)}" for c in clf.classes_ if c != 1})
    names.update(class_names or {})
    metrics = {
        "pixels_per_class": {int(c): int((y == c).sum()) for c in clf.classes_},
        "images": len(pairs),
        "hard_rounds": 0,
        "feature_seconds": round(result.seconds, 3),
        "fit_seconds": round(time.perf_counter() - t0, 3),
        "tuning": result.to_dict(),
    }
    return PixelModel(
        spec=result.spec, classifier=clf, class_names={int(k): v for k, v in names.items()}, metrics=metrics
    )


def describe(tuning: dict) -> list[str]:
    """Lines for the user: the choice, the cross-validated estimate with its uncertainty, warnings."""
    e, f, s = tuning["estimate"], tuning["features"], tuning["scorer"]
    scales = [round(x * f["downscale"], 3) for x in f["sigmas"]]
    lines = [
        f"tuned in {tuning['seconds']:.0f}s ({tuning.get('cpu_seconds', 0):.0f} CPU s) over "
        f"{len(tuning['candidates'])} candidates ({e['folds']} folds; "
        f"labelled defects {tuning['sizes']['width']:.1f} px wide, {tuning['sizes']['diameter']:.1f} px across)",
        f"  chosen: scales {', '.join(f'{x:g}' for x in scales)} px (downscale {f['downscale']:g}), "
        f"normalize {f['normalize']}, families {','.join(f['families'])}; "
        f"scorer: score_rule {s['score_rule']}, border {s['border']} px",
    ]
    n = f"{e['images']} labelled images ({e['defect_images']} with defects, {e['normal_images']} normal)"
    if e["pairs"]:
        lo, hi = e["pair_fraction_ci"]
        lines.append(
            f"  expectation on {n}: held-out defect images ranked above held-out normal ones in "
            f"{e['pairs_right']:g} of {e['pairs']} pairs ({e['pair_fraction']:.0%}, 90 % interval {lo:.0%}-{hi:.0%})"
        )
    else:
        lines.append(f"  expectation on {n}: image ranking not estimable (no normal image)")
    sd = f" ± {e['pixel_ap_sd']:.2f}" if e.get("pixel_ap_sd") is not None else ""
    lines.append(f"  held-out pixel AP {e['pixel_ap']:.2f}{sd} (mean ± sd over defect images)")
    if tuning.get("skipped"):
        lines.append(f"  {len(tuning['skipped'])} candidate(s) skipped: time budget (pixel.tune_seconds) spent")
    lines += [f"  warning: {w}" for w in tuning.get("warnings", [])]
    return lines
