"""Synthesis outputs as labels: ``manifest.csv`` + ``images/`` + ``masks/`` (see ``synthesis.pipeline``).

Only the manifest's ``image``, ``mask``, ``label`` and ``category`` columns
are used (paths relative to the manifest's folder), so any folder laid out
that way can be exported to every label format with
:func:`synthesis.labels.write_labels`.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from synthesis.labels._files import MaskReader, annotation_file, read_mask_file, rejected
from synthesis.labels.core import ImageLabels, LabelError, LabelObject, LabelSet, collect_classes

MANIFEST = "manifest.csv"


def read_synth(path: str | os.PathLike, *, default: str = "defect", read: MaskReader | None = None) -> LabelSet:
    """Read a synthesis output folder (or its ``manifest.csv``) as labels with exact masks.

    Parameters
    ----------
    path : str or path-like
        The output folder or its manifest.
    default : str
        Category of defective rows whose ``category`` cell is empty.
    read : callable or None
        Reads a mask file (default: OpenCV).

    Returns
    -------
    LabelSet
        Defective rows carry one mask object (non-zero mask pixels); normal
        rows are negatives.
    """
    manifest, base = annotation_file(path, MANIFEST)
    read = read or read_mask_file
    items, errors = [], []
    try:
        with open(manifest, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        return rejected(manifest, f"cannot read the manifest: {err}")
    for n, row in enumerate(rows, 2):
        where = f"{manifest}:{n}"
        try:
            image = os.path.normpath(os.path.join(base, row["image"]))
            mask = np.asarray(read(os.path.join(base, row["mask"])))
            if mask.ndim == 3:
                mask = mask[..., 0]
            h, w = mask.shape
            defect = int(float(row.get("label") or 0)) == 1 and bool((mask != 0).any())
            objs = [LabelObject(row.get("category") or default, mask=mask != 0)] if defect else []
        except (KeyError, ValueError, TypeError, OSError) as err:
            errors.append(LabelError(where, "malformed", f"{type(err).__name__}: {err}", image=row.get("image")))
            continue
        items.append(ImageLabels(image=image, width=w, height=h, objects=objs, source=where))
    return LabelSet(items, errors, list(collect_classes(items).names))
