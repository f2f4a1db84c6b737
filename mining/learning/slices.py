"""Slice evaluation: do confirmed events (or the model's scores) concentrate in one camera, side, date...?

The DMRI pork-belly report tells of a network that learned "left-hand side"
instead of "defect" because the defects happened to be photographed on one
side. This module splits the catalogue by each metadata key (the
``image_meta`` table, or a CSV with a ``path`` column) and reports per slice:

- images, reviewed images, confirmed events, prevalence among the reviewed
  and the lift over the overall prevalence, with Fisher's exact test
  (scipy) of confirmed vs rejected inside vs outside the slice;
- the model's mean score, and how well the score alone tells *normal*
  images of this slice from normal images of the others (AUROC; 0.5 = not
  at all). A high value means the model scores the slice, not the defect.

A slice is flagged ``events_concentrate`` when its prevalence is at least
``min_lift`` times the overall one with p < ``alpha``, and
``model_prefers_slice`` when the normal-image AUROC exceeds ``shortcut_auroc``.
"""

from __future__ import annotations

import csv
import logging
import os

import numpy as np
from scipy.stats import fisher_exact

from mining.catalogue.store import Store
from mining.io import TECHNICAL_META_KEYS
from mining.metrics import auroc

logger = logging.getLogger(__name__)


def slice_table(
    meta: dict[str, list],
    labels: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    min_images: int = 1,
    alpha: float = 0.01,
    min_lift: float = 2.0,
    shortcut_auroc: float = 0.8,
) -> list[dict]:
    """Per (key, value) slice statistics and flags.

    Parameters
    ----------
    meta : dict of key to sequence of str or None, each of length n
        Metadata value per image (None = unknown, not a slice).
    labels : ndarray of shape (n,)
        1 confirmed, 0 rejected, NaN not reviewed.
    scores : ndarray of shape (n,), optional
        Model score per image (higher = rarer); NaN where unknown.
    min_images : int, default=1
        Slices with fewer images are left out.
    alpha, min_lift, shortcut_auroc : float
        Flag thresholds (see the module docstring).

    Returns
    -------
    list of dict
        One per slice, sorted by key, then by decreasing lift.
    """
    y = np.asarray(labels, dtype=np.float64)
    n = len(y)
    s = None if scores is None else np.asarray(scores, dtype=np.float64)
    if s is not None and s.shape != (n,):
        raise ValueError(f"scores must have shape ({n},), got {s.shape}")
    reviewed = ~np.isnan(y)
    conf = reviewed & (y == 1)
    rej = reviewed & (y == 0)
    overall = conf.sum() / max(reviewed.sum(), 1)
    out = []
    for key in sorted(meta):
        vals = np.array([None if v is None or v == "" else str(v) for v in meta[key]], dtype=object)
        if len(vals) != n:
            raise ValueError(f"metadata key {key!r} has {len(vals)} values for {n} images")
        rows = []
        for value in sorted({v for v in vals if v is not None}):
            m = vals == value
            if m.sum() < min_images:
                continue
            a, b = int((conf & m).sum()), int((rej & m).sum())
            c, d = int((conf & ~m).sum()), int((rej & ~m).sum())
            prev = a / (a + b) if a + b else float("nan")
            lift = prev / overall if overall > 0 and a + b else float("nan")
            p_value = float(fisher_exact([[a, b], [c, d]], alternative="greater")[1]) if (a + b and c + d) else 1.0
            row = {
                "key": key,
                "value": value,
                "images": int(m.sum()),
                "reviewed": a + b,
                "confirmed": a,
                "prevalence": _r(prev),
                "lift": _r(lift),
                "share_of_confirmed": _r(a / max(conf.sum(), 1)),
                "share_of_images": _r(m.sum() / n),
                "p_value": _r(p_value),
            }
            if s is not None:
                ok = ~np.isnan(s)
                row["mean_score"] = _r(float(np.mean(s[m & ok]))) if (m & ok).any() else None
                normal = ok & ~conf
                row["normal_score_auroc"] = (
                    _r(auroc(m[normal].astype(int), s[normal])) if (normal & m).any() and (normal & ~m).any() else None
                )
            row["events_concentrate"] = bool(a + b and lift >= min_lift and p_value < alpha)
            row["model_prefers_slice"] = bool(
                row.get("normal_score_auroc") is not None and row["normal_score_auroc"] >= shortcut_auroc
            )
            rows.append(row)
        out += sorted(rows, key=lambda r: -(r["lift"] if r["lift"] is not None else -1))
    return out


def _r(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else round(float(v), 6)


def read_metadata(store: Store, csv_path: str | os.PathLike | None = None) -> tuple[np.ndarray, dict[str, list]]:
    """Metadata per readable image: ``(image_ids, {key: [value per image]})``.

    From ``csv_path`` (a ``path`` column and one column per key; paths matched
    as real paths) when given, else from the ``image_meta`` table (where
    indexing puts DICOM modality, body part, acquisition time, series and
    volume; keys about reading or showing pixels,
    :data:`mining.io.TECHNICAL_META_KEYS`, are not slices).

    Raises
    ------
    ValueError
        When the CSV is missing or lacks a ``path`` column.
    """
    ids = np.array([r["id"] for r in store.images()], dtype=np.int64)
    pos = {int(i): k for k, i in enumerate(ids)}
    meta: dict[str, list] = {}
    if csv_path is not None:
        csv_path = os.fspath(csv_path)
        if not os.path.exists(csv_path):
            raise ValueError(f"metadata CSV {csv_path!r} does not exist")
        by_path = {os.path.realpath(r["path"]): int(r["id"]) for r in store.images()}
        with open(csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if "path" not in (reader.fieldnames or []):
                raise ValueError(f"metadata CSV {csv_path!r} needs a 'path' column, has {reader.fieldnames}")
            keys = [k for k in reader.fieldnames if k != "path"]
            meta = {k: [None] * len(ids) for k in keys}
            for row in reader:
                iid = by_path.get(os.path.realpath(row["path"]))
                if iid is not None:
                    for k in keys:
                        meta[k][pos[iid]] = row[k]
        return ids, meta
    for image_id, key, value in store.query("SELECT image_id, key, value FROM image_meta"):
        if image_id in pos and key not in TECHNICAL_META_KEYS:
            meta.setdefault(key, [None] * len(ids))[pos[image_id]] = value
    return ids, meta


def slice_report(
    store: Store, *, csv_path: str | os.PathLike | None = None, keys: list[str] | None = None, **kwargs
) -> list[dict]:
    """Slice statistics of a catalogue: consensus verdicts and the model's scores per metadata value.

    The score is the re-ranker's probability when one was learned, else the
    fused unsupervised score. ``kwargs`` go to :func:`slice_table`.

    Raises
    ------
    ValueError
        When ``keys`` names a key the metadata lacks, or there is no metadata.
    """
    from mining.ranking.rank import fused_scores
    from mining.ranking.rerank import RERANK_SCORER, consensus_labels

    ids, meta = read_metadata(store, csv_path)
    if not meta:
        raise ValueError("no metadata: fill the image_meta table or pass a CSV with a path column")
    if keys is not None:
        unknown = sorted(set(keys) - set(meta))
        if unknown:
            raise ValueError(f"unknown metadata keys {unknown}; known: {sorted(meta)}")
        meta = {k: meta[k] for k in keys}
    labels = np.full(len(ids), np.nan)
    pos = {int(i): k for k, i in enumerate(ids)}
    for iid, (label, _) in consensus_labels(store).items():
        if iid in pos:
            labels[pos[iid]] = label
    scores = np.full(len(ids), np.nan)
    fs = fused_scores(store)
    if len(fs.image_ids):
        col = fs.raw[:, fs.scorers.index(RERANK_SCORER)] if RERANK_SCORER in fs.scorers else fs.fused
        for r, iid in enumerate(fs.image_ids):
            if int(iid) in pos:
                scores[pos[int(iid)]] = col[r]
    return slice_table(meta, labels, scores, **kwargs)
