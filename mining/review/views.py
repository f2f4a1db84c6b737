"""What the review screens show about an item: scores, metadata, the map, neighbours, why it was picked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mining.catalogue.store import Store, is_patch_set
from mining.catalogue.verdicts import (
    ConsensusRule,
    decisions,
    image_labels,
)
from mining.review.queue import Item, _loads


# -- scores, neighbours, map ----------------------------------------------------------------------
def item_scores(store: Store, item: Item) -> list[dict]:
    """The scores of an item: ``scorer, score, stats, map_path`` per scorer."""
    rows = store.query(
        "SELECT scorer, score, stats, map_path FROM scores WHERE image_id = ? AND tile = ? ORDER BY scorer",
        (item.image_id, item.tile),
    )
    return [
        {"scorer": r["scorer"], "score": r["score"], "stats": _loads(r["stats"]), "map_path": r["map_path"]}
        for r in rows
    ]


def image_meta(store: Store, image_id: int) -> dict:
    """An image's catalogue row and its ``image_meta`` key/values as one dict."""
    row = store.query(
        "SELECT path, root, width, height, channels, dtype, bytes, sha256 FROM images WHERE id = ?", (image_id,)
    )
    out = dict(row[0]) if row else {}
    out.update({r[0]: r[1] for r in store.query("SELECT key, value FROM image_meta WHERE image_id = ?", (image_id,))})
    return out


def embeddings(store: Store, name: str | None = None) -> tuple[str | None, np.ndarray, np.ndarray]:
    """Whole-image embeddings as ``(name, image_ids (n,), unit vectors (n, d) float32)``.

    ``name`` defaults to the embedding with most rows; empty arrays when none.
    """
    name, ids, vecs = _stored_embeddings(store, name, patch_sets=False)
    if len(ids) == 0:
        return name, ids, vecs
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return name, ids, (vecs / np.where(norms > 0, norms, 1)).astype(np.float32)


def _stored_embeddings(
    store: Store, name: str | None, *, patch_sets: bool
) -> tuple[str | None, np.ndarray, np.ndarray]:
    """``(name, image ids, vectors)`` of a whole-image embedding as stored; empty arrays when none.

    ``name`` None: the embedding with most rows (a patch set only when ``patch_sets``).
    """
    if name is None:
        counts = store.query("SELECT name, COUNT(*) n FROM embeddings WHERE tile = -1 GROUP BY name ORDER BY n DESC")
        row = [r for r in counts if patch_sets or not is_patch_set(r["name"])]
        if not row:
            return None, np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        name = row[0]["name"]
    rows = store.query(
        "SELECT image_id, vector FROM embeddings WHERE tile = -1 AND name = ? ORDER BY image_id", (name,)
    )
    if not rows:
        return name, np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    return name, ids, np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])


def neighbours(ids: np.ndarray, unit_vectors: np.ndarray, image_id: int, k: int = 6) -> list[tuple[int, float]]:
    """The ``k`` images most like ``image_id`` by cosine similarity (itself excluded).

    Returns
    -------
    list of (image_id, similarity), most similar first; empty when the image has no embedding.
    """
    where = np.flatnonzero(ids == image_id)
    if where.size == 0 or len(ids) < 2:
        return []
    sims = unit_vectors @ unit_vectors[where[0]]
    sims[where[0]] = -np.inf
    k = min(k, len(ids) - 1)
    top = np.argpartition(-sims, k - 1)[:k]
    top = top[np.argsort(-sims[top])]
    return [(int(ids[i]), float(sims[i])) for i in top]


def map_table(store: Store, rule: ConsensusRule = ConsensusRule(), method: str | None = None) -> list[dict]:
    """Points of the 2-D map with their fused score and review status.

    Returns
    -------
    list of dict
        ``image_id, x, y, method, score, status`` (status: the decided verdict,
        or the decision status).
    """
    methods = [r[0] for r in store.query("SELECT DISTINCT method FROM map_coords WHERE tile = -1 ORDER BY method")]
    if not methods:
        return []
    method = method or methods[0]
    if method not in methods:
        raise ValueError(f"map method {method!r} not in the catalogue; available: {', '.join(methods)}")
    rows = store.query(
        "SELECT image_id, x, y FROM map_coords WHERE tile = -1 AND method = ? ORDER BY image_id", (method,)
    )
    from mining.ranking.rank import fused_scores

    try:
        fs = fused_scores(store)
        fused = dict(zip(fs.image_ids.tolist(), np.nan_to_num(fs.fused).tolist(), strict=True))
    except ValueError:
        fused = {}
    dec = decisions(store, rule)
    out = []
    for r in rows:
        d = dec.get((r["image_id"], -1))
        status = "unreviewed" if d is None else (d.verdict if d.status == "decided" else d.status)
        out.append(
            {
                "image_id": r["image_id"],
                "x": r["x"],
                "y": r["y"],
                "method": method,
                "score": fused.get(r["image_id"], 0.0),
                "status": status,
            }
        )
    return out


# -- why it was picked, in words --------------------------------------------------------------------
def ordinal(n: int) -> str:
    """An ordinal number in English.

    Parameters
    ----------
    n : int

    Returns
    -------
    str
        ``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``22nd`` ...
    """
    n = int(n)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def percent(fraction: float | None) -> str:
    """A fraction as a percentage for people.

    Parameters
    ----------
    fraction : float or None

    Returns
    -------
    str
        ``0.997`` -> ``"99.7 %"``, ``1`` -> ``"100 %"``, None -> ``"-"``.
    """
    if fraction is None or not np.isfinite(fraction):
        return "-"
    p = 100.0 * float(fraction)
    text = f"{p:.1f}".rstrip("0").rstrip(".") if p < 99.95 or p == 100 else f"{p:.2f}".rstrip("0").rstrip(".")
    return f"{text} %"


def scorer_ranks(store: Store, item: Item) -> dict[str, tuple[int, int]]:
    """The item's place among everything each scorer scored.

    Parameters
    ----------
    store : Store
    item : Item
        The image, or tile: a tile is placed among the tiles, an image among the whole images.

    Returns
    -------
    dict of str to (int, int)
        Per scorer: the place by score (1 = highest) and how many images (or
        tiles, for a tile) it scored.
    """
    rows = store.query(
        "SELECT s.scorer,"
        " (SELECT COUNT(*) FROM scores o WHERE o.scorer = s.scorer AND (o.tile = -1) = (s.tile = -1)"
        "  AND o.score > s.score) + 1,"
        " (SELECT COUNT(*) FROM scores o WHERE o.scorer = s.scorer AND (o.tile = -1) = (s.tile = -1)"
        "  AND o.score IS NOT NULL)"
        " FROM scores s WHERE s.image_id = ? AND s.tile = ? AND s.score IS NOT NULL",
        (item.image_id, item.tile),
    )
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


#: How the adaptive strategy's rankings (arms) read in "why"; a scorer's arm is its name.
ARM_NAMES = {
    "fused": "the fused score",
    "rerank": "the re-ranker",
    "like": "more like the confirmed images (nearest)",
    "learned": "more like the confirmed images (learned)",
}


def why_sentences(store: Store, item: Item) -> list[str]:
    """One sentence per scorer on why an item was picked.

    E.g. ``"contrast: score 0.52; top 0.3 % (3rd highest of 959)"``; the strategy and
    fused score come first when known.

    Parameters
    ----------
    store : Store
    item : Item
        The candidate; its ``why`` (from the strategy that picked it) and ``strategy`` are read.

    Returns
    -------
    list of str
    """
    out = []
    why = item.why or {}
    pick = why.get("strategy") or item.strategy
    head = []
    if pick:
        arm = why.get("by")
        if arm and pick == "adaptive":  # the adaptive strategy: which ranking it followed, and that ranking's record
            record = ""
            if "arm_hits" in why and "arm_misses" in why:
                seen = int(why["arm_hits"]) + int(why["arm_misses"])
                record = f", {int(why['arm_hits'])} of its {seen} earlier picks confirmed" if seen else ", first try"
            head.append(f"picked by {pick} following {ARM_NAMES.get(arm, arm)}{record}")
        else:
            head.append(f"picked by {pick}")
    if item.rank is not None:
        head.append(f"rank {item.rank} of the round")
    fused = why.get("fused", item.score)
    if fused is not None:
        head.append(f"fused score {float(fused):.3f}")
    if head:
        out.append("; ".join(head))
    pct = why.get("scorers") or {}
    ranks = scorer_ranks(store, item)
    raw = {
        r[0]: r[1]
        for r in store.query(
            "SELECT scorer, score FROM scores WHERE image_id = ? AND tile = ?", (item.image_id, item.tile)
        )
    }
    for name in sorted(set(pct) | set(ranks)):
        parts = []
        if raw.get(name) is not None:
            parts.append(f"score {raw[name]:.4g}")
        if name in ranks:
            r, n = ranks[name]
            top = 100.0 * r / max(n, 1)
            parts.append(f"top {top:.2g} % ({ordinal(r)} highest of {n})")
        if pct.get(name) is not None and name not in ranks:
            parts.append(f"percentile {percent(pct[name])}")
        out.append(f"{name}: " + "; ".join(parts))
    return out


# -- neighbours and a normal reference ----------------------------------------------------------------
def raw_embeddings(store: Store, name: str | None = None) -> tuple[str | None, np.ndarray, np.ndarray]:
    """Whole-image embeddings as stored (not normalised).

    Parameters
    ----------
    store : Store
    name : str, optional
        The embedding (default: the one with most rows).

    Returns
    -------
    (str or None, ndarray of shape (n,), ndarray of shape (n, d) float32)
        Name, image ids and vectors; empty arrays when none.
    """
    return _stored_embeddings(store, name, patch_sets=True)


def nearest(
    ids: np.ndarray, vectors: np.ndarray, image_id: int, k: int = 6, *, among: Sequence[int] | None = None
) -> list[tuple[int, float]]:
    """The ``k`` images nearest ``image_id`` by Euclidean distance between embeddings (itself excluded).

    Parameters
    ----------
    ids : ndarray of shape (n,)
    vectors : ndarray of shape (n, d)
        Embeddings as stored (see :func:`raw_embeddings`).
    image_id : int
    k : int, default=6
    among : sequence of int, optional
        Only these images (e.g. those decided normal).

    Returns
    -------
    list of (image_id, distance), nearest first; empty when the image has no embedding.
    """
    where = np.flatnonzero(ids == image_id)
    if where.size == 0 or len(ids) < 2:
        return []
    d = np.linalg.norm(vectors.astype(np.float64) - vectors[where[0]].astype(np.float64), axis=1)
    d[where[0]] = np.inf
    if among is not None:
        allowed = np.isin(ids, np.asarray(list(among), dtype=np.int64))
        d[~allowed] = np.inf
    ok = np.flatnonzero(np.isfinite(d))
    if ok.size == 0:
        return []
    k = min(k, ok.size)
    top = ok[np.argsort(d[ok], kind="stable")[:k]]
    return [(int(ids[i]), float(d[i])) for i in top]


def normal_pool(store: Store, rule: ConsensusRule = ConsensusRule()) -> tuple[list[int], str]:
    """Images that look normal, for a reference: decided ``reject``, else the lower half by fused score.

    Three images decided ``reject`` are enough; with fewer, the images in the
    lower half by fused score are added.

    Parameters
    ----------
    store : Store
    rule : ConsensusRule

    Returns
    -------
    (list of int, str)
        Image ids and how they were chosen.
    """
    rejected = [k[0] for k, lab in image_labels(store, rule).items() if lab.target == 0]
    if len(rejected) >= 3:
        return rejected, "decided normal by reviewers"
    from mining.ranking.rank import fused_scores

    try:
        fs = fused_scores(store)
    except ValueError:
        return rejected, "decided normal by reviewers"
    fused = np.nan_to_num(fs.fused, nan=np.inf)
    low = fs.image_ids[fused <= np.median(fused)].tolist()
    return sorted(set(low) | set(rejected)), "decided normal, or in the lower half by fused score"


def reference_image(
    store: Store, item: Item, rule: ConsensusRule = ConsensusRule(), embeddings=None
) -> tuple[int, float, str] | None:
    """The nearest normal-looking image to an item by embedding (see :func:`normal_pool`).

    Parameters
    ----------
    store : Store
    item : Item
    rule : ConsensusRule
    embeddings : tuple, optional
        ``(name, ids, vectors)`` as :func:`raw_embeddings` returns them (read when None).

    Returns
    -------
    (int, float, str) or None
        The image id, its Euclidean distance and how the pool was chosen;
        None when the item or the pool has no embedding.
    """
    _, ids, vecs = embeddings if embeddings is not None else raw_embeddings(store)
    pool, how = normal_pool(store, rule)
    near = nearest(ids, vecs, item.image_id, 1, among=[i for i in pool if i != item.image_id])
    if not near:
        return None
    return near[0][0], near[0][1], how
