"""The supervised re-ranker: XGBoost on each image's scores, map statistics and embeddings.

It learns from consensus verdicts (confirm = 1, reject = 0) and gives every
image a probability of being a rare event (higher = rarer, like every score).

Out-of-fold rule: an image that has a verdict is scored only by a model that
did not see it. Labelled images are split into K stratified folds; the model
of fold k is trained on the other folds and scores fold k. Unlabelled images
get the mean of the K fold models (their spread across folds is kept as an
uncertainty).

Calibration (optional, fitted inside each fold on the fold's training part
only, through an inner cross-validation, so it never sees the images it
scores):

- ``"threshold"``: the piecewise-linear map of the active-learning paper
  (mixed supervision on KolektorSDD2), which sends the fold's best-F1
  threshold to 0.5 and keeps [0, 1] (see :func:`threshold_map`);
- ``"isotonic"`` and ``"sigmoid"``: scikit-learn's
  :class:`~sklearn.calibration.CalibratedClassifierCV`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.metrics import precision_recall_curve
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from mining.catalogue.store import Store, is_patch_set
from mining.catalogue.verdicts import image_labels

logger = logging.getLogger(__name__)

#: Scorer name under which re-ranker probabilities are stored in the ``scores`` table.
RERANK_SCORER = "rerank"

CALIBRATIONS = (None, "threshold", "isotonic", "sigmoid")

#: Statistics that are bookkeeping, not features.
_SKIP_STATS = {"best_tile"}


# -- features -------------------------------------------------------------------------
@dataclass
class FeatureTable:
    """Per-image features for the re-ranker.

    Attributes
    ----------
    image_ids : ndarray of shape (n,), int64
        Every readable image of the catalogue, ordered by id.
    names : list of str
        Column names: ``scorer`` (the score), ``scorer.stat`` (a map
        statistic), ``emb.name.k`` (principal component k of an embedding).
    X : ndarray of shape (n, d), float32
        NaN where a scorer or embedding is missing for an image.
    """

    image_ids: np.ndarray
    names: list[str]
    X: np.ndarray

    def rows(self, image_ids) -> np.ndarray:
        """Row positions of the given image ids (-1 where absent)."""
        pos = {int(i): r for r, i in enumerate(self.image_ids)}
        return np.array([pos.get(int(i), -1) for i in image_ids], dtype=np.int64)


def build_features(
    store: Store,
    *,
    scorers: list[str] | None = None,
    embeddings: list[str] | None = None,
    embedding_components: int = 16,
    random_state: int = 0,
) -> FeatureTable:
    """Gather scores, numeric map statistics and embeddings into one table.

    Parameters
    ----------
    store : Store
    scorers : list of str, optional
        Use only these scorers (default: every scorer with scores, except
        the re-ranker's own :data:`RERANK_SCORER`).
    embeddings : list of str, optional
        Use only these embedding names (default: all).
    embedding_components : int, default=16
        Each embedding is reduced to at most this many principal components
        (fitted on all images, without labels), so a few dozen verdicts do
        not face hundreds of columns. 0 leaves embeddings out.
    random_state : int, default=0

    Returns
    -------
    FeatureTable
    """
    if embedding_components < 0:
        raise ValueError(f"embedding_components must be >= 0, got {embedding_components}")
    ids = np.array([r[0] for r in store.query("SELECT id FROM images WHERE status = 'ok' ORDER BY id")], dtype=np.int64)
    pos = {int(i): r for r, i in enumerate(ids)}
    cols: dict[str, np.ndarray] = {}

    def col(name: str) -> np.ndarray:
        if name not in cols:
            cols[name] = np.full(len(ids), np.nan, dtype=np.float32)
        return cols[name]

    for image_id, scorer, score, stats in store.query(
        "SELECT image_id, scorer, score, stats FROM scores WHERE tile = -1 AND scorer != ? ORDER BY scorer",
        (RERANK_SCORER,),
    ):
        r = pos.get(image_id)
        if r is None or (scorers is not None and scorer not in scorers):
            continue
        col(scorer)[r] = score
        for key, value in (json.loads(stats) if stats else {}).items():
            if key in _SKIP_STATS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            col(f"{scorer}.{key}")[r] = value
    if embedding_components:
        vectors: dict[str, dict[int, np.ndarray]] = {}
        for image_id, name, blob in store.query("SELECT image_id, name, vector FROM embeddings WHERE tile = -1"):
            if image_id in pos and not is_patch_set(name) and (embeddings is None or name in embeddings):
                vectors.setdefault(name, {})[pos[image_id]] = np.frombuffer(blob, dtype=np.float32)
        for name in sorted(vectors):
            rows = np.array(sorted(vectors[name]))
            dims = {vectors[name][r].size for r in rows}
            if len(dims) != 1:
                logger.warning("embedding %r has vectors of several lengths %s; left out", name, sorted(dims))
                continue
            V = np.stack([vectors[name][r] for r in rows]).astype(np.float64)
            k = min(embedding_components, V.shape[1], max(len(rows) - 1, 1))
            Z = PCA(n_components=k, random_state=random_state).fit_transform(V) if V.shape[1] > k else V
            for j in range(Z.shape[1]):
                col(f"emb.{name}.{j}")[rows] = Z[:, j]
    names = sorted(cols)
    X = np.column_stack([cols[n] for n in names]) if names else np.zeros((len(ids), 0), np.float32)
    return FeatureTable(ids, names, X.astype(np.float32))


def monotone_constraints(names: list[str]) -> list[int]:
    """1 for columns that are a scorer's score (higher means rarer, by the scorer contract), else 0."""
    return [0 if ("." in n) else 1 for n in names]


# -- labels ---------------------------------------------------------------------------
def consensus_labels(store: Store, rule=None) -> dict[int, tuple[int, str | None]]:
    """Training label per image (whole-image reviews), by the consensus rule.

    Reads :func:`mining.verdicts.image_labels`, the one definition of a label
    that the review app and every label export share: an image counts when
    its decision is ``confirm`` (label 1) or ``reject`` (label 0);
    ``unsure``, ``neutral``, pending, disagreeing and dropped images are left
    out (and exported as nothing).

    Parameters
    ----------
    store : Store
    rule : mining.verdicts.ConsensusRule, optional
        Default: ``ConsensusRule()`` (one vote decides until someone disagrees;
        then a majority of further votes).

    Returns
    -------
    dict of image_id to (label, category)
        label 1 = confirmed rare event, 0 = rejected; category as decided
        (None when none was given).
    """
    return {
        image_id: (lab.target, lab.category)
        for (image_id, _), lab in image_labels(store, rule).items()
        if lab.target is not None
    }


# -- calibration ----------------------------------------------------------------------
def threshold_map(p: np.ndarray, threshold: float) -> np.ndarray:
    """The paper's piecewise-linear calibration: ``threshold`` goes to 0.5, 0 to 0 and 1 to 1.

    Parameters
    ----------
    p : ndarray of shape (n,)
        Probabilities in [0, 1].
    threshold : float
        In (0, 1).

    Returns
    -------
    ndarray of shape (n,), float64, in [0, 1]
        ``0.5 p / t`` below the threshold, ``0.5 + 0.5 (p - t) / (1 - t)`` above.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    p = np.clip(np.asarray(p, dtype=np.float64), 0, 1)
    return np.where(p <= threshold, 0.5 * p / threshold, 0.5 + 0.5 * (p - threshold) / (1 - threshold))


def best_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold with the best F1 on ``(y, p)``, kept inside (0, 1)."""
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    t = float(thresholds[int(np.argmax(f1))]) if len(thresholds) else 0.5
    return float(np.clip(t, 1e-3, 1 - 1e-3))


# -- the model ------------------------------------------------------------------------
@dataclass
class RerankResult:
    """Probabilities for every row of a feature table.

    Attributes
    ----------
    proba : ndarray of shape (n,), float64
        Out-of-fold probability for labelled rows, mean of the fold models
        for the others.
    std : ndarray of shape (n,), float64
        Spread of the fold models (0 for labelled rows, scored by one model).
    fold : ndarray of shape (n,), int64
        The fold that scored a labelled row (-1 for unlabelled rows).
    thresholds : list of float
        Per fold, the threshold sent to 0.5 (``"threshold"`` calibration).
    """

    proba: np.ndarray
    std: np.ndarray
    fold: np.ndarray
    thresholds: list[float] = field(default_factory=list)


class ReRanker:
    """K-fold XGBoost re-ranker with optional calibration (higher means rarer).

    Parameters
    ----------
    n_folds : int, default=5
        Folds for out-of-fold probabilities (fewer when a class has fewer
        labelled images; at least 2 of each class are needed).
    calibration : {None, "threshold", "isotonic", "sigmoid"}, default=None
    n_estimators, max_depth, learning_rate, subsample, colsample_bytree : XGBoost parameters
        Shallow trees and half the columns per tree by default: the re-ranker
        mostly learns from a few dozen verdicts with a handful of events.
    monotone : sequence of int, optional
        Per column: 1 = the probability may only rise with it (a scorer's
        score: higher means rarer, by contract), 0 = free. See
        :func:`monotone_constraints`.
    random_state : int, default=0
    n_jobs : int, default=1
        XGBoost threads.
    """

    def __init__(
        self,
        *,
        n_folds: int = 5,
        calibration: str | None = None,
        n_estimators: int = 100,
        max_depth: int = 2,
        learning_rate: float = 0.1,
        subsample: float = 0.9,
        colsample_bytree: float = 0.5,
        monotone=None,
        random_state: int = 0,
        n_jobs: int = 1,
    ):
        self.n_folds = n_folds
        self.monotone = monotone
        self.calibration = calibration
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.random_state = random_state
        self.n_jobs = n_jobs

    def get_params(self) -> dict:
        """Constructor arguments (JSON-ready)."""
        return {
            k: (list(v) if k == "monotone" and v is not None else v)
            for k, v in vars(self).items()
            if not k.endswith("_")
        }

    def _validate(self) -> None:
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {self.n_folds}")

    def _xgb(self, y: np.ndarray):
        from xgboost import XGBClassifier

        n_pos = max(int(y.sum()), 1)
        return XGBClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            subsample=self.subsample,
            colsample_bytree=self.colsample_bytree,
            tree_method="hist",
            scale_pos_weight=(len(y) - n_pos) / n_pos,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            eval_metric="logloss",
            verbosity=0,
            monotone_constraints=None if self.monotone is None else tuple(int(m) for m in self.monotone),
        )

    @staticmethod
    def can_fit(y: np.ndarray) -> str | None:
        """None when labels allow K-fold training, else the reason why not."""
        y = np.asarray(y, dtype=np.float64)
        lab = y[~np.isnan(y)]
        n_pos, n_neg = int((lab == 1).sum()), int((lab == 0).sum())
        if n_pos < 2 or n_neg < 2:
            return f"needs at least 2 confirmed and 2 rejected images, has {n_pos} confirmed and {n_neg} rejected"
        return None

    def _fit_fold(self, X: np.ndarray, y: np.ndarray):
        """One fold's model and its calibration, fitted on (X, y) only."""
        n_min = int(min(y.sum(), len(y) - y.sum()))
        if self.calibration is None or n_min < 2:
            if self.calibration is not None:
                logger.info("fold has %d images of its rarer class: calibration skipped", n_min)
            return self._xgb(y).fit(X, y), None
        inner = StratifiedKFold(n_splits=min(3, n_min), shuffle=True, random_state=self.random_state)
        if self.calibration in ("isotonic", "sigmoid"):
            model = CalibratedClassifierCV(self._xgb(y), method=self.calibration, cv=inner, ensemble=False)
            return model.fit(X, y), None
        p_inner = cross_val_predict(self._xgb(y), X, y, cv=inner, method="predict_proba")[:, 1]
        return self._xgb(y).fit(X, y), best_threshold(y, p_inner)

    def fit_predict(self, X: np.ndarray, y: np.ndarray) -> RerankResult:
        """Train the fold models on the labelled rows and score every row.

        Parameters
        ----------
        X : ndarray of shape (n, d)
            Features (NaN allowed).
        y : ndarray of shape (n,)
            1 (rare event), 0 (normal) or NaN (no verdict).

        Returns
        -------
        RerankResult

        Raises
        ------
        ValueError
            When there are fewer than 2 labelled images of a class, or shapes disagree.
        """
        self._validate()
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or y.shape != (X.shape[0],):
            raise ValueError(f"X must be (n, d) and y (n,), got {X.shape} and {y.shape}")
        reason = self.can_fit(y)
        if reason:
            raise ValueError(f"cannot train the re-ranker: {reason}")
        labelled = np.flatnonzero(~np.isnan(y))
        unlabelled = np.flatnonzero(np.isnan(y))
        yl = y[labelled].astype(int)
        k = int(min(self.n_folds, yl.sum(), len(yl) - yl.sum()))
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=self.random_state)
        proba = np.zeros(len(y))
        fold = np.full(len(y), -1, dtype=np.int64)
        per_fold_u = np.zeros((k, len(unlabelled)))
        self.models_, self.thresholds_, self.train_rows_ = [], [], []
        for f, (tr, te) in enumerate(skf.split(labelled, yl)):
            model, t = self._fit_fold(X[labelled[tr]], yl[tr])
            self.models_.append(model)
            self.thresholds_.append(t)
            self.train_rows_.append(labelled[tr])
            proba[labelled[te]] = self._apply(model, t, X[labelled[te]])
            fold[labelled[te]] = f
            if len(unlabelled):
                per_fold_u[f] = self._apply(model, t, X[unlabelled])
        std = np.zeros(len(y))
        if len(unlabelled):
            proba[unlabelled] = per_fold_u.mean(axis=0)
            std[unlabelled] = per_fold_u.std(axis=0)
        self.n_splits_ = k
        return RerankResult(proba, std, fold, [t for t in self.thresholds_ if t is not None])

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise RuntimeError("this ReRanker is not fitted yet: call fit_predict first")

    @staticmethod
    def _apply(model, threshold: float | None, X: np.ndarray) -> np.ndarray:
        p = model.predict_proba(X)[:, 1].astype(np.float64)
        return threshold_map(p, threshold) if threshold is not None else p

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Mean probability of the fold models for new rows, shape (n,)."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        return np.mean([self._apply(m, t, X) for m, t in zip(self.models_, self.thresholds_, strict=True)], axis=0)

    def save(self, folder: str) -> list[str]:
        """Write the fold models as XGBoost JSON (plus ``calibration.json``); return the paths.

        Isotonic and sigmoid calibrators are not saved (their probabilities are
        in the catalogue); the threshold map is.
        """
        import os

        self._check_fitted()
        os.makedirs(folder, exist_ok=True)
        paths = []
        for f, m in enumerate(self.models_):
            base = m if hasattr(m, "get_booster") else m.calibrated_classifiers_[0].estimator
            booster = base.get_booster()
            path = os.path.join(folder, f"fold{f}.json")
            booster.save_model(path)
            paths.append(path)
        from synthesis.atomic import atomic_write

        with atomic_write(os.path.join(folder, "calibration.json"), "w") as fh:
            json.dump({"calibration": self.calibration, "thresholds": self.thresholds_}, fh)
        return paths
