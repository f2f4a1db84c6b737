"""Several reviewers on one catalogue: claims on shown images, votes still needed, others' decisions, preferences."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from mining.catalogue.store import Store
from mining.catalogue.verdicts import (
    ConsensusRule,
    Decision,
    Vote,
    decisions,
    latest_votes,
)
from mining.review.queue import Item

logger = logging.getLogger(__name__)


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
    store, reviewer, name
        As in :func:`get_pref`.
    value : object
        Anything JSON can hold.
    """
    with store.transaction() as con:
        con.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"{_PREF}{reviewer}.{name}", json.dumps(value))
        )
