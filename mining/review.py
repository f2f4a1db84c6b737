"""Review logic behind the Streamlit app: queues, verdicts, consensus, progress, export.

Everything here is plain Python over :class:`mining.store.Store` (no
streamlit), so the app stays a thin shell and this module is tested on its
own. The app reads candidates and writes verdicts only through these
functions.

Conventions
-----------
- A *vote* is one row of ``reviews``; every vote is kept. For consensus only
  each reviewer's latest vote on an image counts (a reviewer may change their
  mind).
- A *decision* is what the configured :class:`ConsensusRule` makes of the
  votes on one image: ``open`` (no votes), ``pending`` (agreeing votes, not
  enough yet), ``disagreement`` (waiting for a tie-breaking vote),
  ``decided`` (verdict ``confirm``, ``reject``, ``unsure`` or ``neutral``) or
  ``dropped`` (ambiguous, left out of the labels). Votes, the rule and the
  labels it gives live in :mod:`mining.verdicts` (re-exported here), the one
  definition of a label that learning and every export share.
- Label images painted in the app use 0 = unlabelled, 1 = background,
  2 = defect, the format ``raremine fit-pixel`` reads; the vote itself
  carries a 0/255 defect mask (``reviews.mask_path``), the format the learn
  step and the label exports read. Both files are named by the image's
  identity (catalogue id and tile) and their content, never by the file name
  (two archive folders may hold ``cam.png``), so no image's file is ever
  overwritten by another's.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from mining.store import Store, is_patch_set
from mining.verdicts import (  # noqa: F401 (re-exported: the app and older code import them from here)
    LEFT_OUT,
    ON_DISAGREEMENT,
    STATUSES,
    VERDICTS,
    Confirmed,
    ConsensusRule,
    Decision,
    ImageLabel,
    Vote,
    _category,
    decide,
    decisions,
    describe_left_out,
    image_labels,
    latest_votes,
    left_out_counts,
)

logger = logging.getLogger(__name__)

#: Values of a painted label image.
UNLABELLED, BACKGROUND, DEFECT = 0, 1, 2


class PathOutsideRoots(ValueError):
    """A file the app was asked to show lies outside the catalogue's archive roots."""


# -- queue items ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One image (or tile) to review.

    Attributes
    ----------
    image_id, tile : int
    path : str
    root : str or None
        The archive root the image was indexed under.
    candidate_id : int or None
        The candidate row (None for images queued from the map).
    rank : int or None
    score : float or None
    strategy : str or None
    why : dict
        Why it was picked (strategy, fused score, percentile per scorer).
    """

    image_id: int
    tile: int
    path: str
    root: str | None = None
    candidate_id: int | None = None
    rank: int | None = None
    score: float | None = None
    strategy: str | None = None
    why: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> tuple[int, int]:
        """``(image_id, tile)``."""
        return (self.image_id, self.tile)


def _loads(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}


def rounds(store: Store) -> list[int]:
    """Candidate rounds present in the catalogue, ascending."""
    return [int(r[0]) for r in store.query("SELECT DISTINCT round FROM candidates ORDER BY round")]


def round_items(store: Store, round: int | None = None) -> list[Item]:
    """The candidates of a round (the current one by default) in rank order."""
    if round is None:
        round = store.current_round()
    rows = store.query(
        "SELECT c.id, c.image_id, c.tile, c.rank, c.score, c.strategy, c.why, i.path, i.root"
        " FROM candidates c JOIN images i ON i.id = c.image_id WHERE c.round = ? ORDER BY c.rank, c.id",
        (round,),
    )
    return [
        Item(
            image_id=r["image_id"],
            tile=r["tile"],
            path=r["path"],
            root=r["root"],
            candidate_id=r["id"],
            rank=r["rank"],
            score=r["score"],
            strategy=r["strategy"],
            why=_loads(r["why"]),
        )
        for r in rows
    ]


def image_items(store: Store, image_ids: Sequence[int]) -> list[Item]:
    """Items for arbitrary images (e.g. a selection on the map), in the order given.

    An image that is a candidate of the current round keeps its candidate row
    (rank, score, why); unknown ids are left out.
    """
    ids = [int(i) for i in image_ids]
    if not ids:
        return []
    cand = {it.image_id: it for it in round_items(store) if it.tile == -1}
    marks = ",".join("?" * len(ids))
    rows = {r["id"]: r for r in store.query(f"SELECT id, path, root FROM images WHERE id IN ({marks})", ids)}
    out = []
    for i in ids:
        if i in cand:
            out.append(cand[i])
        elif i in rows:
            out.append(
                Item(
                    image_id=i,
                    tile=-1,
                    path=rows[i]["path"],
                    root=rows[i]["root"],
                    why={"strategy": "map selection"},
                    strategy="map selection",
                )
            )
    return out


def reviewer_queue(
    store: Store,
    items: Sequence[Item],
    reviewer: str,
    rule: ConsensusRule = ConsensusRule(),
    *,
    include_done: bool = False,
) -> list[Item]:
    """The items a reviewer still has to look at, in the order given.

    An item is left out when this reviewer already voted on it, or when the
    consensus rule no longer needs a vote on it (decided or dropped), unless
    ``include_done``.
    """
    if include_done:
        return list(items)
    dec = decisions(store, rule, [it.key for it in items])
    out = []
    for it in items:
        d = dec[it.key]
        if any(v.reviewer == reviewer for v in d.votes):
            continue
        if d.status in ("decided", "dropped"):
            continue
        out.append(it)
    return out


# -- writing ------------------------------------------------------------------------------------
def record_verdict(
    store: Store,
    item: Item,
    reviewer: str,
    verdict: str,
    *,
    category: str | None = None,
    note: str | None = None,
    mask_path: str | None = None,
) -> int:
    """Store one vote for an item; return the review id.

    Raises
    ------
    ValueError
        For an unknown verdict or an empty reviewer name.
    """
    reviewer = (reviewer or "").strip()
    return store.add_review(
        item.image_id,
        reviewer,
        verdict,
        tile=item.tile,
        category=category or None,
        note=(note or "").strip() or None,
        mask_path=mask_path,
        candidate_id=item.candidate_id,
        source="app",
    )


def undo_review(store: Store, review_id: int, reviewer: str) -> bool:
    """Delete one vote, only if it belongs to ``reviewer``; return whether a row went.

    Its annotations go with it (``ON DELETE CASCADE``).
    """
    with store.transaction() as con:
        cur = con.execute("DELETE FROM reviews WHERE id = ? AND reviewer = ?", (int(review_id), reviewer))
    return cur.rowcount > 0


def add_mask_annotation(
    store: Store,
    image_id: int,
    review_id: int | None,
    label_path: str,
    category: str | None = None,
    *,
    mask_path: str | None = None,
) -> int:
    """Record painted labels as a ``mask`` annotation; return its id.

    ``data`` holds the label image (``path``, values 0/1/2 as ``fit-pixel``
    reads them) and the binary defect mask (``mask``, 0/255, the format of
    ``reviews.mask_path``) when defect pixels were painted.
    """
    with store.transaction() as con:
        cur = con.execute(
            "INSERT INTO annotations (image_id, review_id, category, kind, data, source, created_at)"
            " VALUES (?, ?, ?, 'mask', ?, 'app', ?)",
            (
                image_id,
                review_id,
                category,
                json.dumps(
                    {
                        "path": label_path,
                        "mask": mask_path,
                        "values": {"unlabelled": UNLABELLED, "background": BACKGROUND, "defect": DEFECT},
                    }
                ),
                time.time(),
            ),
        )
    return int(cur.lastrowid)


# -- views over the votes ---------------------------------------------------------------------
def disagreements(store: Store, rule: ConsensusRule = ConsensusRule()) -> list[dict]:
    """Images whose votes disagree (waiting for a tie-break, dropped, or decided neutral).

    Returns
    -------
    list of dict
        ``image_id, tile, path, status, verdict, votes`` (votes as
        ``reviewer: verdict`` strings), most votes first.
    """
    out = []
    dec = decisions(store, rule)
    disputed = {k: d for k, d in dec.items() if len({v.verdict for v in d.votes}) > 1}
    if not disputed:
        return []
    ids = sorted({k[0] for k in disputed})
    paths = dict(store.query(f"SELECT id, path FROM images WHERE id IN ({','.join('?' * len(ids))})", ids))
    for (iid, tile), d in disputed.items():
        out.append(
            {
                "image_id": iid,
                "tile": tile,
                "path": paths.get(iid),
                "status": d.status,
                "verdict": d.verdict,
                "votes": "; ".join(f"{v.reviewer}: {v.verdict}" for v in d.votes),
            }
        )
    out.sort(key=lambda r: (-r["votes"].count(";"), r["image_id"]))
    return out


def progress(store: Store, rule: ConsensusRule = ConsensusRule()) -> dict:
    """Review progress: counts and the hits-per-reviewed curve of every round.

    Returns
    -------
    dict
        ``candidates`` (current round), ``reviewed`` (images with a vote),
        ``votes``, ``confirmed`` (decided confirm), ``by_status`` and
        ``curves``: a list of ``{"round", "reviewed", "hits"}`` points, one per
        image reviewed in the order first reviewed (hits = images among them
        whose first vote was confirm).
    """
    dec = decisions(store, rule)
    by_status = Counter(d.status if d.status != "decided" else f"decided {d.verdict}" for d in dec.values())
    rows = store.query(
        "SELECT c.round, r.image_id, r.tile, r.verdict FROM reviews r JOIN candidates c ON c.id = r.candidate_id"
        " ORDER BY r.id"
    )
    seen: set = set()
    state: dict[int, list[int]] = {}
    curves = []
    for r in rows:
        key = (r["round"], r["image_id"], r["tile"])
        if key in seen:
            continue
        seen.add(key)
        n, hits = state.setdefault(r["round"], [0, 0])
        n, hits = n + 1, hits + (r["verdict"] == "confirm")
        state[r["round"]] = [n, hits]
        curves.append({"round": int(r["round"]), "reviewed": n, "hits": hits})
    current = store.current_round()
    n_cand = store.query("SELECT COUNT(*) FROM candidates WHERE round = ?", (current,))[0][0]
    return {
        "round": current,
        "candidates": int(n_cand),
        "reviewed": len(dec),
        "votes": int(store.query("SELECT COUNT(*) FROM reviews")[0][0]),
        "confirmed": sum(1 for d in dec.values() if d.status == "decided" and d.verdict == "confirm"),
        "by_status": dict(by_status),
        "curves": curves,
    }


def export_labels(
    store: Store,
    out: str | os.PathLike,
    rule: ConsensusRule = ConsensusRule(),
    *,
    verdicts: Sequence[str] = ("confirm",),
) -> int:
    """Write the decided labels as a CSV metadata table; return the number of rows.

    The labels are :func:`mining.verdicts.image_labels` (tiles included), the
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
    """The folder of the catalogue's score-map overlays (see :func:`mining.mine.maps_dir`)."""
    from mining.mine import maps_dir

    return os.path.realpath(maps_dir(store.path))


def labels_dir(store_path: str | os.PathLike) -> str:
    """Folder where label images painted in the app are saved (beside the catalogue)."""
    base, _ = os.path.splitext(os.path.abspath(os.fspath(store_path)))
    return base + ".labels"


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


# -- pixels -------------------------------------------------------------------------------------
def auto_window(image: np.ndarray) -> tuple[float, float]:
    """A level/width window covering the 0.5-99.5 percentiles of an image (native units)."""
    a = np.asarray(image, dtype=np.float64)
    if a.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(a[np.isfinite(a)] if not np.isfinite(a).all() else a, [0.5, 99.5])
    return float((lo + hi) / 2), float(max(hi - lo, 1e-6))


def value_range(image: np.ndarray) -> tuple[float, float]:
    """The range a window slider should span: the dtype's range for integers, min..max otherwise."""
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return float(info.min), float(info.max)
    a = np.asarray(image, dtype=np.float64)
    return float(np.nanmin(a)), float(max(np.nanmax(a), np.nanmin(a) + 1e-6))


def window(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map native values ``[level - width/2, level + width/2]`` to 0..255 (uint8).

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C), any numeric dtype
    level, width : float
        Window centre and width in the image's own units; ``width > 0``.

    Returns
    -------
    ndarray of the same shape, uint8
    """
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    lo = level - width / 2.0
    a = (np.asarray(image, dtype=np.float32) - np.float32(lo)) * np.float32(255.0 / width)
    return np.rint(np.clip(np.nan_to_num(a), 0, 255)).astype(np.uint8)


def stored_window(store: Store, image_id: int) -> dict | None:
    """The default display window an image's file carries (DICOM ``WindowCenter`` / ``WindowWidth``), or None.

    Indexing stores it in ``image_meta`` (``window_center``,
    ``window_width``, in the pixel values :func:`mining.io.read_image`
    gives, i.e. after the DICOM rescale); ``photometric`` ``MONOCHROME1``
    (low values white, as many X-ray files) asks for inverted grey.

    Returns
    -------
    dict or None
        ``{"level": float, "width": float, "invert": bool, "source": str}``;
        None when the image has no stored window (the app then uses
        :func:`auto_window`).
    """
    meta = {
        r[0]: r[1]
        for r in store.query(
            "SELECT key, value FROM image_meta WHERE image_id = ? AND key IN"
            " ('window_center', 'window_width', 'photometric')",
            (int(image_id),),
        )
    }
    try:
        level, width = float(meta["window_center"]), float(meta["window_width"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (np.isfinite(level) and np.isfinite(width) and width > 0):
        return None
    return {
        "level": level,
        "width": width,
        "invert": meta.get("photometric") == "MONOCHROME1",
        "source": f"DICOM window: level {level:g}, width {width:g}",
    }


def display_image(
    image: np.ndarray, level: float | None = None, width: float | None = None, *, invert: bool = False
) -> np.ndarray:
    """An 8-bit grey or RGB picture of an image for the screen.

    uint8 images are shown as they are unless a window is given; other
    dtypes use the window (the automatic one when none is given).
    ``invert`` shows low values white (DICOM ``MONOCHROME1``).
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.dtype == np.uint8 and level is None:
        out = img
    else:
        if level is None or width is None:
            level, width = auto_window(img)
        out = window(img, level, width)
    if out.ndim == 3:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)  # read_image gives OpenCV's BGR order
    if invert:
        out = 255 - out
    return out


def overlay(picture: np.ndarray, score_map: np.ndarray, opacity: float) -> np.ndarray:
    """Blend a score map (uint8, 0..255, any size) over a picture as a colour map.

    Parameters
    ----------
    picture : ndarray of shape (H, W) or (H, W, 3), uint8
    score_map : ndarray of shape (h, w), uint8
        Resized to (H, W).
    opacity : float in [0, 1]

    Returns
    -------
    ndarray of shape (H, W, 3), uint8 (RGB)
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    rgb = picture if picture.ndim == 3 else cv2.cvtColor(picture, cv2.COLOR_GRAY2RGB)
    h, w = rgb.shape[:2]
    m = score_map if score_map.ndim == 2 else score_map[:, :, 0]
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap(m.astype(np.uint8), cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1.0 - opacity, colour, opacity, 0.0)


def thumbnail(picture: np.ndarray, size: int = 160, *, square: bool = False) -> np.ndarray:
    """A picture scaled so that its longer side is at most ``size`` pixels.

    With ``square``, it is centred on a black ``size`` x ``size`` canvas so
    that a grid of thumbnails lines up.
    """
    h, w = picture.shape[:2]
    scale = min(size / max(h, w), 1.0) if not square else size / max(h, w)
    out = picture
    if scale != 1.0:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        out = cv2.resize(picture, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    if not square:
        return out
    canvas = np.zeros((size, size, *out.shape[2:]), out.dtype)
    y0, x0 = (size - out.shape[0]) // 2, (size - out.shape[1]) // 2
    canvas[y0 : y0 + out.shape[0], x0 : x0 + out.shape[1]] = out
    return canvas


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
    if name is None:
        counts = store.query("SELECT name, COUNT(*) n FROM embeddings WHERE tile = -1 GROUP BY name ORDER BY n DESC")
        row = [r for r in counts if not is_patch_set(r["name"])]
        if not row:
            return None, np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        name = row[0]["name"]
    rows = store.query(
        "SELECT image_id, vector FROM embeddings WHERE tile = -1 AND name = ? ORDER BY image_id", (name,)
    )
    if not rows:
        return name, np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return name, ids, (vecs / np.where(norms > 0, norms, 1)).astype(np.float32)


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
    from mining.rank import fused_scores

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


# -- painting -----------------------------------------------------------------------------------
def _points(path_cmds: list) -> list[tuple[float, float]]:
    pts = []
    for cmd in path_cmds or []:
        nums = [c for c in cmd[1:] if isinstance(c, int | float)]
        for j in range(0, len(nums) - 1, 2):
            pts.append((float(nums[j]), float(nums[j + 1])))
    return pts


def _object_shift(obj: Mapping, pts: np.ndarray) -> np.ndarray:
    """How far a path was moved on the canvas: its ``left``/``top`` against its own points."""
    shift = np.zeros(2)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    for axis, (pos, origin) in enumerate((("left", "originX"), ("top", "originY"))):
        if obj.get(pos) is None:
            continue
        anchor = {"center": (lo[axis] + hi[axis]) / 2, "right": hi[axis], "bottom": hi[axis]}.get(
            obj.get(origin, "left"), lo[axis]
        )
        shift[axis] = float(obj[pos]) - anchor
    return shift


def strokes_to_labels(
    drawing: Mapping | None, canvas_size: tuple[int, int], image_shape: tuple[int, int], colours: Mapping[str, int]
) -> np.ndarray:
    """Rasterise free-hand strokes (Fabric.js JSON from the canvas) into a label image.

    Parameters
    ----------
    drawing : mapping or None
        ``{"objects": [{"type": "path", "path": [["M", x, y], ["Q", ...], ...],
        "stroke": colour, "strokeWidth": w, ...}]}`` in canvas pixels.
    canvas_size : (width, height)
        The canvas the strokes were drawn on.
    image_shape : (H, W)
        The label image's shape (the image's own pixels).
    colours : mapping of stroke colour to label value
        E.g. ``{"#ff0000": DEFECT, "#00ff00": BACKGROUND}``; other colours are ignored.

    Returns
    -------
    ndarray of shape (H, W), uint8
        0 unlabelled, then each stroke painted in drawing order (later strokes win).
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    labels = np.zeros((h, w), np.uint8)
    cw, ch = canvas_size
    sx, sy = w / float(cw), h / float(ch)
    lookup = {str(k).lower(): int(v) for k, v in colours.items()}
    for obj in (drawing or {}).get("objects", []) or []:
        if str(obj.get("type", "")).lower() != "path":  # Fabric 7 writes "Path", older versions "path"
            continue
        value = lookup.get(str(obj.get("stroke", "")).lower())
        if value is None:
            continue
        pts = _points(obj.get("path"))
        if not pts:
            continue
        arr = np.array(pts, dtype=np.float64)
        arr += _object_shift(obj, arr)
        arr = np.round(arr * [sx, sy]).astype(np.int32).reshape(-1, 1, 2)
        thick = max(1, round(float(obj.get("strokeWidth", 1)) * (sx + sy) / 2))
        if len(pts) == 1:
            cv2.circle(labels, tuple(arr[0, 0]), max(1, thick // 2), value, -1)
        else:
            cv2.polylines(labels, [arr], False, value, thick, lineType=cv2.LINE_8)
    return labels


def masks_dir(store_path: str | os.PathLike) -> str:
    """Folder where binary defect masks painted in the app are saved (beside the catalogue)."""
    base, _ = os.path.splitext(os.path.abspath(os.fspath(store_path)))
    return base + ".masks"


def painted_name(image_id: int, tile: int, data: bytes) -> str:
    """The file name of a painted mask or label image: ``<image_id>[_t<tile>]_<content hash>.png``.

    Keyed by the image's catalogue identity, never by its file name (``day1/cam.png``
    and ``day2/cam.png`` share a stem), and by the file's content, so painting
    an image again never overwrites the file an earlier vote points at.

    Parameters
    ----------
    image_id : int
        The catalogue id of the image.
    tile : int
        The tile index, -1 for the whole image.
    data : bytes
        The encoded PNG.

    Returns
    -------
    str
    """
    if isinstance(image_id, bool) or not isinstance(image_id, int | np.integer):
        raise TypeError(f"painted files are named by the image's catalogue id (an int), got {image_id!r}")
    tile_part = f"_t{int(tile)}" if int(tile) != -1 else ""
    return f"{int(image_id)}{tile_part}_{hashlib.sha256(data).hexdigest()[:16]}.png"


def _write_painted(folder: str, image_id: int, tile: int, image: np.ndarray, what: str) -> str:
    from synthesis.atomic import atomic_write

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode the {what} of image {image_id}")
    data = buf.tobytes()
    out = os.path.join(folder, painted_name(image_id, tile, data))
    if os.path.isfile(out):
        with open(out, "rb") as fh:
            if fh.read() == data:
                return out  # the same picture of the same image: already there
    with atomic_write(out, "wb") as fh:
        fh.write(data)
    return out


def save_defect_mask(labels: np.ndarray, store_path: str | os.PathLike, image_id: int, tile: int = -1) -> str | None:
    """Save the painted defect pixels as a 0/255 mask in ``<catalogue>.masks/``; return its path.

    This is the format of ``reviews.mask_path`` that the learn step and the
    label exports read (non-zero = defect). The file is named by
    :func:`painted_name` (image id, tile, content hash).

    Parameters
    ----------
    labels : ndarray of shape (H, W), uint8
        A painted label image (:data:`DEFECT` marks defect pixels).
    store_path : path
        The catalogue.
    image_id : int
        The catalogue id of the painted image.
    tile : int, default=-1
        The tile, -1 for the whole image.

    Returns
    -------
    str or None
        The mask's path; None when no defect pixel was painted.
    """
    if not (labels == DEFECT).any():
        return None
    mask = np.where(labels == DEFECT, 255, 0).astype(np.uint8)
    return _write_painted(masks_dir(store_path), image_id, tile, mask, "defect mask")


def save_label_image(labels: np.ndarray, store_path: str | os.PathLike, image_id: int, tile: int = -1) -> str:
    """Save a label image (0 unlabelled, 1 background, 2 defect) in ``<catalogue>.labels/``; return its path.

    The file is named by :func:`painted_name` (image id, tile, content hash),
    so images of the same file name in different folders keep their own label
    images. (``raremine learn`` pairs them with their images through the
    catalogue; for ``raremine fit-pixel --labels``, copy them under the
    images' stems.)

    Parameters
    ----------
    labels : ndarray of shape (H, W), uint8
    store_path : path
        The catalogue.
    image_id : int
        The catalogue id of the painted image.
    tile : int, default=-1
        The tile, -1 for the whole image.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For a label image that is not 2-D uint8 with values 0, 1 and 2.
    """
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D uint8 array, got {labels.dtype} {labels.shape}")
    bad = set(np.unique(labels).tolist()) - {UNLABELLED, BACKGROUND, DEFECT}
    if bad:
        raise ValueError(f"label values must be 0, 1 or 2; got {sorted(bad)}")
    return _write_painted(labels_dir(store_path), image_id, tile, labels, "label image")


# -- several reviewers: claims, what others decided ------------------------------------------------
#: Seconds a claim on a shown image lasts unless renewed (a reviewer who leaves lets it lapse).
CLAIM_SECONDS = 120.0

_CLAIM = "review.claim."
_PREF = "review.pref."


def _claim_key(key: tuple[int, int]) -> str:
    return f"{_CLAIM}{int(key[0])}.{int(key[1])}"


def _holders(value: str) -> dict[str, float]:
    """The reviewers of a claim row and when their claims expire (older rows: one ``reviewer``)."""
    try:
        data = json.loads(value)
        if "by" in data:
            return {str(k): float(v) for k, v in data["by"].items()}
        return {str(data["reviewer"]): float(data["expires"])}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def claims(store: Store, *, now: float | None = None) -> dict[tuple[int, int], list[tuple[str, float]]]:
    """Unexpired claims: ``(image_id, tile)`` to the ``(reviewer, expires)`` looking at it, earliest first.

    A claim says a reviewer is looking at an image; it lives in the
    catalogue's ``meta`` table (key ``review.claim.<image_id>.<tile>``), so
    every app session on the catalogue sees it, and it lapses after
    :data:`CLAIM_SECONDS` unless renewed. Several reviewers hold one only when
    consensus needs their votes (see :func:`needs_vote`).

    Parameters
    ----------
    store : Store
    now : float, optional
        The time to compare expiry with (default ``time.time()``).

    Returns
    -------
    dict of (image_id, tile) to list of (str, float)
    """
    now = time.time() if now is None else now
    out = {}
    for k, v in store.query("SELECT key, value FROM meta WHERE key LIKE ?", (_CLAIM + "%",)):
        try:
            iid, tile = (int(x) for x in k[len(_CLAIM) :].split("."))
        except ValueError:
            continue
        live = sorted(((who, t) for who, t in _holders(v).items() if t > now), key=lambda x: x[1])
        if live:
            out[(iid, tile)] = live
    return out


def claim(store: Store, item: Item, reviewer: str, *, seconds: float = CLAIM_SECONDS, share: bool = False) -> bool:
    """Claim an item for ``reviewer`` for ``seconds``; False when another reviewer holds it (unless ``share``).

    Claiming again renews the reviewer's own claim; expired claims are dropped.

    Parameters
    ----------
    store : Store
    item : Item
    reviewer : str
    seconds : float, default=CLAIM_SECONDS
    share : bool, default=False
        Hold it beside other reviewers (consensus needs several votes).

    Returns
    -------
    bool
        Whether ``reviewer`` holds a claim on it now.
    """
    now = time.time()
    key = _claim_key(item.key)
    with store.transaction() as con:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        held = {who: t for who, t in (_holders(row[0]) if row else {}).items() if t > now and who != reviewer}
        if held and not share:
            logger.debug("%s is not claimed for %s: held by %s", item.path, reviewer, ", ".join(held))
            return False
        held[reviewer] = now + seconds
        con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps({"by": held})))
    return True


def release(store: Store, reviewer: str, item: Item | None = None) -> int:
    """Drop ``reviewer``'s claim on ``item`` (on every item when None) and every expired claim.

    Parameters
    ----------
    store : Store
    reviewer : str
    item : Item, optional
        The item to release; all of the reviewer's claims when None.

    Returns
    -------
    int
        Claims removed (the reviewer's and expired ones).
    """
    now = time.time()
    gone = 0
    with store.transaction() as con:
        rows = con.execute("SELECT key, value FROM meta WHERE key LIKE ?", (_CLAIM + "%",)).fetchall()
        for k, v in rows:
            holders = _holders(v)
            mine = item is None or k == _claim_key(item.key)
            keep = {who: t for who, t in holders.items() if t > now and not (mine and who == reviewer)}
            if len(keep) == len(holders):
                continue
            gone += len(holders) - len(keep)
            if keep:
                con.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps({"by": keep}), k))
            else:
                con.execute("DELETE FROM meta WHERE key = ?", (k,))
    if gone:
        logger.debug("released %d claim(s) of %s and expired ones", gone, reviewer)
    return gone


def votes_needed(decision: Decision, rule: ConsensusRule = ConsensusRule()) -> int:
    """The fewest further votes that can decide an image.

    Parameters
    ----------
    decision : Decision
        The image's current decision.
    rule : ConsensusRule

    Returns
    -------
    int
        0 when decided or dropped; ``agree`` for an image without votes; what
        is left to ``agree`` for agreeing votes; 1 for a disagreement.
    """
    if decision.status in ("decided", "dropped"):
        return 0
    if decision.status == "open":
        return rule.agree
    if decision.status == "pending":
        return max(1, rule.agree - len(decision.votes))
    return 1  # a disagreement waiting for a tie-break


def needs_vote(
    store: Store, item: Item, reviewer: str, rule: ConsensusRule = ConsensusRule(), *, include_done: bool = False
) -> tuple[bool, str]:
    """Whether ``reviewer`` should be shown ``item`` now, and why not.

    Not when the reviewer already voted on it or the consensus rule has
    decided or dropped it (both unless ``include_done``), nor when another
    reviewer holds an unexpired claim on it, unless consensus needs more
    votes than those reviewers can give (two agreeing votes and nobody has
    voted yet: two reviewers may look at it at once).

    Parameters
    ----------
    store : Store
    item : Item
    reviewer : str
    rule : ConsensusRule
    include_done : bool, default=False
        Show items this reviewer voted on and decided items too (other reviewers' claims still count).

    Returns
    -------
    (bool, str)
        The answer and, when False, a short reason (``"decided confirm (bob: confirm)"``,
        ``"bob is looking at it"``).
    """
    d = decisions(store, rule, [item.key])[item.key]
    if not include_done:
        if any(v.reviewer == reviewer for v in d.votes):
            return False, "you already voted on it"
        if d.status in ("decided", "dropped"):
            who = ", ".join(f"{v.reviewer}: {v.verdict}" for v in d.votes)
            what = f"decided {d.verdict}" if d.status == "decided" else "dropped"
            return False, f"{what} ({who})"
    others = [who for who, _ in claims(store).get(item.key, []) if who != reviewer]
    if others and votes_needed(d, rule) <= len(others):
        return False, f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} looking at it"
    return True, ""


def others_decided(
    store: Store, items: Sequence[Item], reviewer: str, since_review_id: int, rule: ConsensusRule = ConsensusRule()
) -> list[dict]:
    """Items of a queue that other reviewers voted on after review ``since_review_id``, with their decision.

    Parameters
    ----------
    store : Store
    items : sequence of Item
        The queue as it was built.
    reviewer : str
        Whose own votes are not reported.
    since_review_id : int
        Votes with a larger id count (see :func:`last_review_id`).
    rule : ConsensusRule

    Returns
    -------
    list of dict
        ``image_id, tile, path, status, verdict, votes`` (``reviewer: verdict`` strings) per item.
    """
    keys = {it.key: it for it in items}
    if not keys:
        return []
    rows = store.query(
        "SELECT DISTINCT image_id, tile FROM reviews WHERE id > ? AND reviewer != ?", (int(since_review_id), reviewer)
    )
    touched = [(r[0], r[1]) for r in rows if (r[0], r[1]) in keys]
    if not touched:
        return []
    dec = decisions(store, rule, touched)
    out = []
    for k in touched:
        d = dec[k]
        out.append(
            {
                "image_id": k[0],
                "tile": k[1],
                "path": keys[k].path,
                "status": d.status,
                "verdict": d.verdict,
                "votes": "; ".join(f"{v.reviewer}: {v.verdict}" for v in d.votes),
            }
        )
    return out


def last_review_id(store: Store) -> int:
    """The id of the newest vote, to report later what was voted after it.

    Parameters
    ----------
    store : Store

    Returns
    -------
    int
        0 when the catalogue has no vote.
    """
    return int(store.query("SELECT COALESCE(MAX(id), 0) FROM reviews")[0][0])


def earlier_votes(store: Store, items: Sequence[Item]) -> dict[tuple[int, int], list[Vote]]:
    """Every reviewer's latest vote on each item.

    Parameters
    ----------
    store : Store
    items : sequence of Item

    Returns
    -------
    dict of (image_id, tile) to list of Vote
        Items without votes are left out.
    """
    return latest_votes(store, [it.key for it in items])


# -- per-reviewer preferences ------------------------------------------------------------------------
def get_pref(store: Store, reviewer: str, name: str, default=None):
    """A reviewer's saved display preference, or ``default``.

    Parameters
    ----------
    store : Store
    reviewer : str
    name : str
        E.g. ``"opacity"``.
    default : object, optional
        Returned when none was saved.

    Returns
    -------
    object
        The JSON value saved by :func:`set_pref`.
    """
    rows = store.query("SELECT value FROM meta WHERE key = ?", (f"{_PREF}{reviewer}.{name}",))
    if not rows:
        return default
    try:
        return json.loads(rows[0][0])
    except ValueError:
        return default


def set_pref(store: Store, reviewer: str, name: str, value) -> None:
    """Save a reviewer's display preference in the catalogue's ``meta`` table (key ``review.pref.<reviewer>.<name>``).

    Parameters
    ----------
    store : Store
    reviewer : str
    name : str
        E.g. ``"opacity"``.
    value : object
        Anything JSON can hold.
    """
    with store.transaction() as con:
        con.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"{_PREF}{reviewer}.{name}", json.dumps(value))
        )


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


def why_sentences(store: Store, item: Item) -> list[str]:
    """One sentence per scorer on why an item was picked.

    E.g. ``"contrast: score 0.52; top 0.3 % (3rd highest of 959)"``; the strategy and
    fused score come first when known.

    Parameters
    ----------
    store : Store
    item : Item

    Returns
    -------
    list of str
    """
    out = []
    why = item.why or {}
    pick = why.get("strategy") or item.strategy
    head = []
    if pick:
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
    if name is None:
        row = store.query("SELECT name, COUNT(*) n FROM embeddings WHERE tile = -1 GROUP BY name ORDER BY n DESC")
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
    from mining.rank import fused_scores

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


# -- what the viewer is sent ---------------------------------------------------------------------------
def view_rendering(picture: np.ndarray, max_side: int = 2048) -> tuple[np.ndarray, float]:
    """A screen-sized copy of a picture, for the viewer.

    Parameters
    ----------
    picture : ndarray of shape (H, W) or (H, W, 3), uint8
    max_side : int, default=2048

    Returns
    -------
    (ndarray, float)
        The picture itself when it is small enough, else a copy whose longer
        side is ``max_side`` (area interpolation), and its scale (<= 1).
    """
    h, w = picture.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s >= 1.0:
        return picture, 1.0
    out = cv2.resize(picture, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return out, s


def hot_region(score_map: np.ndarray, shape: tuple[int, int], *, level: float = 0.5, max_regions: int = 12) -> dict:
    """The hot region of a score map in the image's pixel coordinates.

    The map (any size, uint8 or float) is thresholded half-way (``level``)
    between its median and its peak at its own resolution; the outlines of the
    largest regions above are returned, scaled to the image's ``shape``, with
    the peak.

    Parameters
    ----------
    score_map : ndarray of shape (h, w)
    shape : (H, W)
        The image's shape.
    level : float, default=0.5
        Where between the median (0) and the peak (1) the threshold lies.
    max_regions : int, default=12
        The largest regions kept.

    Returns
    -------
    dict
        ``contours``: list of point lists ``[[x, y], ...]`` (image pixels),
        ``peak``: ``[x, y]`` of the maximum (image pixels), ``regions``: per
        hot region (hottest first) its ``peak`` (image pixels), ``value`` and
        ``area`` (map pixels), ``threshold`` and ``peak_value`` (map units),
        ``fraction``: share of the map above the threshold.
    """
    m = np.asarray(score_map)
    if m.ndim == 3:
        m = m[:, :, 0]
    m = np.nan_to_num(m.astype(np.float32))
    H, W = int(shape[0]), int(shape[1])
    mh, mw = m.shape
    sx, sy = W / mw, H / mh
    peak_value = float(m.max())
    med = float(np.median(m))
    py, px = np.unravel_index(int(np.argmax(m)), m.shape)
    peak = [int(min(W - 1, (px + 0.5) * sx)), int(min(H - 1, (py + 0.5) * sy))]
    if peak_value <= med:
        return {
            "contours": [],
            "peak": peak,
            "regions": [],
            "threshold": peak_value,
            "peak_value": peak_value,
            "fraction": 0.0,
        }
    thr = med + level * (peak_value - med)
    mask = (m >= thr).astype(np.uint8)
    found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found = sorted(found, key=lambda c: -cv2.contourArea(c) - len(c))[:max_regions]
    contours = []
    for c in found:
        pts = c.reshape(-1, 2).astype(np.float64)
        if len(pts) == 1:  # a single map pixel: its square
            x, y = pts[0]
            pts = np.array([[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1]])
        else:
            pts = pts + 0.5
        contours.append(np.round(pts * [sx, sy], 1).tolist())
    n, labels = cv2.connectedComponents(mask, connectivity=8)
    regions = []
    for lab in range(1, n):
        ys, xs = np.nonzero(labels == lab)
        j = int(np.argmax(m[ys, xs]))
        regions.append(
            {
                "peak": [int(min(W - 1, (xs[j] + 0.5) * sx)), int(min(H - 1, (ys[j] + 0.5) * sy))],
                "value": float(m[ys[j], xs[j]]),
                "area": len(xs),
            }
        )
    regions.sort(key=lambda r: (-r["value"], -r["area"]))
    return {
        "contours": contours,
        "peak": peak,
        "regions": regions[:max_regions],
        "threshold": thr,
        "peak_value": peak_value,
        "fraction": float(mask.mean()),
    }


def crop_around(picture: np.ndarray, centre: tuple[int, int], size: int = 192) -> tuple[np.ndarray, tuple[int, int]]:
    """A full-resolution ``size`` x ``size`` crop of a picture centred on ``(x, y)`` (shifted to stay inside).

    Parameters
    ----------
    picture : ndarray of shape (H, W) or (H, W, C)
    centre : (int, int)
        ``(x, y)`` in the picture's pixels.
    size : int, default=192
        Smaller pictures give their whole extent.

    Returns
    -------
    (ndarray, (x0, y0))
        The crop and its top-left corner in the picture.
    """
    h, w = picture.shape[:2]
    cw, ch = min(size, w), min(size, h)
    x0 = int(np.clip(centre[0] - cw // 2, 0, w - cw))
    y0 = int(np.clip(centre[1] - ch // 2, 0, h - ch))
    return picture[y0 : y0 + ch, x0 : x0 + cw], (x0, y0)


def heat_colours(score_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A score map as an RGB colour map (inferno), for showing beside the image.

    Parameters
    ----------
    score_map : ndarray of shape (h, w) or (h, w, c)
        Stretched to its own minimum and maximum.
    shape : (H, W)
        The size of the result.

    Returns
    -------
    ndarray of shape (H, W, 3), uint8
    """
    m = score_map if score_map.ndim == 2 else score_map[:, :, 0]
    m = m.astype(np.float32)
    lo, hi = float(m.min()), float(m.max())
    m8 = np.zeros(m.shape, np.uint8) if hi <= lo else ((m - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if m8.shape != tuple(shape[:2]):
        m8 = cv2.resize(m8, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(cv2.applyColorMap(m8, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
