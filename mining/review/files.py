"""The files behind a review: archive roots, the path check, the label export."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence

from mining.catalogue.paths import maps_dir
from mining.catalogue.store import Store
from mining.catalogue.verdicts import (
    VERDICTS,
    ConsensusRule,
    describe_left_out,
    image_labels,
    left_out_counts,
)

logger = logging.getLogger(__name__)


class PathOutsideRoots(ValueError):
    """A file the app was asked to show lies outside the catalogue's archive roots."""


def export_labels(
    store: Store,
    out: str | os.PathLike,
    rule: ConsensusRule = ConsensusRule(),
    *,
    verdicts: Sequence[str] = ("confirm",),
) -> int:
    """Write the decided labels as a CSV metadata table; return the number of rows.

    The labels are :func:`mining.catalogue.verdicts.image_labels` (tiles included), the
    definition the learn step and ``raremine export --what labels`` use.
    Columns: ``path, tile, label, category, verdict, votes, mask_path``
    (``label`` 1 for confirm, 0 otherwise; ``votes`` as
    ``reviewer:verdict[:category]`` joined by ``;``; ``mask_path`` the latest
    mask of the confirming votes). By default only confirmed images are
    written; the log says how many reviewed images were left out and why.

    Parameters
    ----------
    store : Store
    out : path
        The CSV file (written atomically).
    rule : ConsensusRule
    verdicts : sequence of str
        Decided verdicts to include (``confirm``, ``reject``, ``unsure``, ``neutral``).

    Returns
    -------
    int
        Rows written.
    """
    from synthesis.atomic import atomic_write

    allowed = (*VERDICTS, "neutral")
    bad = [v for v in verdicts if v not in allowed]
    if bad:
        raise ValueError(f"verdicts must be among {', '.join(allowed)}; got {bad}")
    labels = image_labels(store, rule, tiles=True)
    keep = {k: lab for k, lab in labels.items() if lab.status == "decided" and lab.verdict in verdicts}
    ids = sorted({k[0] for k in keep})
    paths: dict = {}
    if ids:
        paths = dict(store.query(f"SELECT id, path FROM images WHERE id IN ({','.join('?' * len(ids))})", ids))
    n = 0
    with atomic_write(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "tile", "label", "category", "verdict", "votes", "mask_path"])
        for (iid, tile), lab in keep.items():
            d = lab.decision
            votes = ";".join(":".join(x for x in (v.reviewer, v.verdict, v.category or "") if x) for v in d.votes)
            masks = lab.masks
            w.writerow(
                [
                    paths.get(iid),
                    tile,
                    int(d.verdict == "confirm"),
                    d.category or "",
                    d.verdict,
                    votes,
                    masks[-1] if masks else "",
                ]
            )
            n += 1
    logger.info("exported %d labels to %s; %s", n, out, describe_left_out(left_out_counts(labels)))
    return n


# -- files the app may show -------------------------------------------------------------------
def archive_roots(store: Store) -> list[str]:
    """The archive roots the catalogue was indexed from (real paths)."""
    rows = store.query("SELECT DISTINCT root FROM images WHERE root IS NOT NULL")
    return sorted({os.path.realpath(r[0]) for r in rows})


def maps_root(store: Store) -> str:
    """The folder of the catalogue's score-map overlays (:func:`mining.catalogue.paths.maps_dir`), real path."""
    return os.path.realpath(maps_dir(store.path))


def check_path(path: str, roots: Sequence[str]) -> str:
    """Return the real path of ``path`` if it lies under one of ``roots``.

    Raises
    ------
    PathOutsideRoots
        Naming the file and the allowed roots (symlinks are resolved first).
    """
    real = os.path.realpath(path)
    for root in roots:
        root = os.path.realpath(root)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return real
    raise PathOutsideRoots(
        f"{path!r} is outside the catalogue's archive roots ({', '.join(roots) or 'none'}); refusing to show it"
    )
