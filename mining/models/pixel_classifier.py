"""The pixel classifier: RandomForest or XGBoost (hist) as one scikit-learn estimator, saved in safe formats."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

METHODS = ("xgboost", "random_forest")


class PixelModelError(ValueError):
    """A pixel model cannot be used (wrong features, bad file); the message says why."""


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
