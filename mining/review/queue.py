"""Review queues over the catalogue: rounds, items, verdicts, undo, disagreements, progress."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from mining.catalogue.store import Store
from mining.catalogue.verdicts import (
    ConsensusRule,
    decisions,
)
from mining.review.painting import BACKGROUND, DEFECT, UNLABELLED


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
