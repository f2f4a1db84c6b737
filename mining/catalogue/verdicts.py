"""Verdicts and the one rule that turns them into labels.

Every place that reads what reviewers said goes through this module: the
review app (:mod:`mining.review` re-exports these names), the learn step and
the re-ranker's training labels (:func:`mining.ranking.rerank.consensus_labels`), the
pixel model's painted masks (:mod:`mining.learning.learn`), ``raremine export --what
labels`` in every format (:mod:`mining.labels`) and the app's CSV export. So an
image that trains nothing is exported as nothing, and the reverse.

Conventions
-----------
- A *vote* is a reviewer's latest verdict on an image (``reviews`` keeps every
  row; a reviewer may change their mind). A ``confirm`` vote carries the
  categories, masks and annotations of all the reviewer's ``confirm`` rows
  since their last ``reject`` or ``unsure`` on that image (an import source
  stores one ``confirm`` row per class).
- The :class:`ConsensusRule` makes a :class:`Decision` of the votes on one
  image: ``open``, ``pending``, ``disagreement``, ``decided`` (``confirm``,
  ``reject``, ``unsure`` or ``neutral``) or ``dropped``.
- :func:`image_labels` gives each reviewed image its :class:`ImageLabel`: a
  decided ``confirm`` is a defect (label 1) with the categories and masks of
  the confirming votes, a decided ``reject`` is normal (label 0); every other
  image is left out of training and of the label exports, with a reason from
  :data:`LEFT_OUT`.

This module depends only on :mod:`mining.store`, so the app's back end, the
learners and the exporters can all import it without a cycle.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mining.catalogue.store import Store

logger = logging.getLogger(__name__)

#: Verdicts a reviewer can give (the store's CHECK constraint).
VERDICTS = ("confirm", "reject", "unsure")

#: What to do when reviewers disagree.
ON_DISAGREEMENT = ("third_vote", "drop", "neutral")

#: Decision statuses (see :class:`Decision`).
STATUSES = ("open", "pending", "disagreement", "decided", "dropped")

#: Why a reviewed image has no label (it is neither trained on nor exported).
LEFT_OUT = {
    "pending": "not enough agreeing votes yet",
    "disagreement": "reviewers disagree, waiting for a tie-breaking vote",
    "dropped": "reviewers disagree, dropped by the consensus rule",
    "unsure": "decided unsure",
    "neutral": "reviewers disagree, decided neutral",
}


@dataclass(frozen=True)
class Confirmed:
    """One ``confirm`` row of a reviewer's vote: the review id, its category and its mask file."""

    review_id: int
    category: str | None
    mask_path: str | None


@dataclass(frozen=True)
class Vote:
    """A reviewer's latest vote on an image.

    Attributes
    ----------
    review_id, reviewer, verdict, category, note, mask_path, created_at
        The reviewer's latest ``reviews`` row.
    confirmed : tuple of Confirmed
        For a ``confirm`` vote, the reviewer's ``confirm`` rows since their
        last ``reject`` or ``unsure`` on the image, oldest first (the latest
        row included); empty otherwise.
    """

    review_id: int
    reviewer: str
    verdict: str
    category: str | None
    note: str | None
    mask_path: str | None
    created_at: float
    confirmed: tuple[Confirmed, ...] = ()

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories this vote gives (several for a multi-class import), first given first."""
        cats = [c.category for c in self.confirmed if c.category]
        if not cats and self.category:
            cats = [self.category]
        return tuple(dict.fromkeys(cats))

    @property
    def marks(self) -> tuple[Confirmed, ...]:
        """The confirm rows of this vote (the vote itself for a confirm built without ``confirmed``)."""
        if self.verdict != "confirm":
            return ()
        return self.confirmed or (Confirmed(self.review_id, self.category, self.mask_path),)


@dataclass(frozen=True)
class ConsensusRule:
    """How votes of several reviewers become one decision.

    Parameters
    ----------
    agree : int, default=1
        Agreeing votes that decide an image (2 for "two agreeing votes
        decide"). With 1, a single reviewer decides alone until someone
        disagrees.
    on_disagreement : {"third_vote", "drop", "neutral"}, default="third_vote"
        ``third_vote``: wait for more votes; a majority of ``agree`` decides;
        after ``max_votes`` votes without one, the image is dropped.
        ``drop``: drop an image as soon as its votes disagree.
        ``neutral``: decide it as the neutral class (verdict ``neutral``).
    max_votes : int, default=3
        Votes after which a still ambiguous image is dropped (``third_vote``).
    """

    agree: int = 1
    on_disagreement: str = "third_vote"
    max_votes: int = 3

    def __post_init__(self):
        if self.agree < 1:
            raise ValueError(f"consensus agree must be >= 1, got {self.agree}")
        if self.on_disagreement not in ON_DISAGREEMENT:
            raise ValueError(
                f"consensus on_disagreement must be one of {', '.join(ON_DISAGREEMENT)}; got {self.on_disagreement!r}"
            )
        if self.max_votes < max(self.agree, 2):
            raise ValueError(
                f"consensus max_votes must be >= max(agree, 2) = {max(self.agree, 2)}, got {self.max_votes}"
            )

    @classmethod
    def from_config(cls, config=None) -> ConsensusRule:
        """The rule of a config's ``review:`` section.

        Parameters
        ----------
        config : mining.config.Config, mining.config.ReviewConfig or None
            None gives the defaults (those of an empty config).

        Returns
        -------
        ConsensusRule
        """
        if config is None:
            return cls()
        rc = getattr(config, "review", config)
        return cls(agree=rc.agree, on_disagreement=rc.on_disagreement, max_votes=rc.max_votes)

    def as_dict(self) -> dict:
        """JSON-ready form (for run records and export reports)."""
        return {"agree": self.agree, "on_disagreement": self.on_disagreement, "max_votes": self.max_votes}


@dataclass(frozen=True)
class Decision:
    """What the consensus rule makes of an image's votes."""

    status: str
    verdict: str | None = None
    category: str | None = None
    votes: tuple[Vote, ...] = ()

    @property
    def label(self) -> str | None:
        """``defect`` / ``normal`` / ``neutral`` / ``unsure`` for a decided image, else None."""
        if self.status != "decided":
            return None
        return {"confirm": "defect", "reject": "normal"}.get(self.verdict, self.verdict)


def decide(votes: Iterable[Vote], rule: ConsensusRule = ConsensusRule()) -> Decision:
    """Apply a consensus rule to the latest votes of each reviewer on one image.

    Parameters
    ----------
    votes : iterable of Vote
        At most one per reviewer (see :func:`latest_votes`).
    rule : ConsensusRule

    Returns
    -------
    Decision
    """
    votes = tuple(votes)
    if not votes:
        return Decision("open")
    counts = Counter(v.verdict for v in votes)
    ranked = counts.most_common()
    top, n_top = ranked[0]
    unique_top = len(ranked) == 1 or ranked[1][1] < n_top
    if unique_top and n_top >= rule.agree:
        return Decision("decided", top, _category(votes, top), votes)
    if len(ranked) == 1:
        return Decision("pending", None, None, votes)
    if rule.on_disagreement == "drop":
        return Decision("dropped", None, None, votes)
    if rule.on_disagreement == "neutral":
        return Decision("decided", "neutral", None, votes)
    if len(votes) < rule.max_votes:
        return Decision("disagreement", None, None, votes)
    return Decision("dropped", None, None, votes)


def _category(votes: Sequence[Vote], verdict: str) -> str | None:
    """The category most votes for ``verdict`` give last (ties by name), None when none gives one."""
    cats = Counter(v.category for v in votes if v.verdict == verdict and v.category)
    if not cats:
        return None
    best = max(cats.values())
    return sorted(c for c, n in cats.items() if n == best)[0]


def latest_votes(
    store: Store,
    keys: Iterable[tuple[int, int]] | None = None,
    *,
    reviewers: Sequence[str] | None = None,
) -> dict[tuple[int, int], list[Vote]]:
    """Each reviewer's latest vote per ``(image_id, tile)``.

    Parameters
    ----------
    store : Store
    keys : iterable of (image_id, tile), optional
        Only these images (all reviewed images by default).
    reviewers : sequence of str, optional
        Only these reviewers (or import sources); all by default.

    Returns
    -------
    dict of (image_id, tile) to list of Vote
        One vote per reviewer, in the order the reviewers first voted.
    """
    sql = "SELECT id, image_id, tile, reviewer, verdict, category, note, mask_path, created_at FROM reviews"
    where, params = [], []
    if keys is not None:
        ids = sorted({int(k[0]) for k in keys})
        if not ids:
            return {}
        where.append(f"image_id IN ({','.join('?' * len(ids))})")
        params += ids
    if reviewers:
        where.append(f"reviewer IN ({','.join('?' * len(reviewers))})")
        params += list(reviewers)
    if where:
        sql += " WHERE " + " AND ".join(where)
    wanted = None if keys is None else {(int(a), int(b)) for a, b in keys}
    last: dict[tuple[int, int], dict[str, Vote]] = {}
    runs: dict[tuple[int, int, str], list[Confirmed]] = {}
    for r in store.query(sql + " ORDER BY id", params):
        key = (r["image_id"], r["tile"])
        if wanted is not None and key not in wanted:
            continue
        run = runs.setdefault((*key, r["reviewer"]), [])
        if r["verdict"] == "confirm":
            run.append(Confirmed(r["id"], r["category"], r["mask_path"]))
        else:
            run.clear()
        last.setdefault(key, {})[r["reviewer"]] = Vote(
            r["id"],
            r["reviewer"],
            r["verdict"],
            r["category"],
            r["note"],
            r["mask_path"],
            r["created_at"],
            tuple(run),
        )
    return {k: list(v.values()) for k, v in last.items()}


def decisions(
    store: Store,
    rule: ConsensusRule = ConsensusRule(),
    keys: Iterable[tuple[int, int]] | None = None,
    *,
    reviewers: Sequence[str] | None = None,
) -> dict[tuple[int, int], Decision]:
    """The decision per reviewed ``(image_id, tile)`` (unreviewed keys are ``open``).

    Parameters
    ----------
    store : Store
    rule : ConsensusRule
    keys : iterable of (image_id, tile), optional
        Only these images; each of them gets a decision.
    reviewers : sequence of str, optional
        Count only these reviewers' votes.

    Returns
    -------
    dict of (image_id, tile) to Decision
    """
    keys = None if keys is None else list(keys)
    votes = latest_votes(store, keys, reviewers=reviewers)
    out = {k: decide(v, rule) for k, v in votes.items()}
    for k in keys or ():
        out.setdefault((int(k[0]), int(k[1])), Decision("open"))
    return out


# -- labels -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageLabel:
    """An image's label as the consensus rule decides it.

    Attributes
    ----------
    image_id, tile : int
    decision : Decision
    """

    image_id: int
    tile: int
    decision: Decision

    @property
    def key(self) -> tuple[int, int]:
        """``(image_id, tile)``."""
        return (self.image_id, self.tile)

    @property
    def status(self) -> str:
        """The decision status (see :data:`STATUSES`)."""
        return self.decision.status

    @property
    def verdict(self) -> str | None:
        """The decided verdict (``confirm``, ``reject``, ``unsure``, ``neutral``) or None."""
        return self.decision.verdict

    @property
    def target(self) -> int | None:
        """1 for a defect (decided ``confirm``), 0 for normal (decided ``reject``), None for no label."""
        if self.decision.status != "decided":
            return None
        return {"confirm": 1, "reject": 0}.get(self.decision.verdict)

    @property
    def category(self) -> str | None:
        """The decided category of a defect (the one most confirming votes give last, ties by name), else None."""
        return self.decision.category if self.target == 1 else None

    @property
    def categories(self) -> tuple[str, ...]:
        """Every category the confirming votes of a defect give, :attr:`category` first, then by votes; else empty.

        Empty for a defect no reviewer gave a category (exports then use a default class).
        """
        if self.target != 1:
            return ()
        cats = Counter(c for v in self.decision.votes if v.verdict == "confirm" for c in v.categories)
        first = (self.decision.category,) if self.decision.category else ()
        return (*first, *sorted((c for c in cats if c not in first), key=lambda c: (-cats[c], c)))

    @property
    def marks(self) -> tuple[Confirmed, ...]:
        """The confirm rows of the confirming votes of a defect (their masks and annotations), oldest first."""
        if self.target != 1:
            return ()
        rows = {m.review_id: m for v in self.decision.votes for m in v.marks}
        return tuple(rows[i] for i in sorted(rows))

    @property
    def masks(self) -> tuple[str, ...]:
        """The defect mask files (``reviews.mask_path``) of the confirming votes, oldest first."""
        return tuple(dict.fromkeys(m.mask_path for m in self.marks if m.mask_path))

    @property
    def left_out(self) -> str | None:
        """Why the image has no label (a key of :data:`LEFT_OUT`), None for a defect or a normal image."""
        if self.target is not None:
            return None
        if self.decision.status == "decided":
            return self.decision.verdict
        return self.decision.status


def image_labels(
    store: Store,
    rule: ConsensusRule | None = None,
    *,
    reviewers: Sequence[str] | None = None,
    tiles: bool = False,
) -> dict[tuple[int, int], ImageLabel]:
    """Each reviewed image's label under the consensus rule: THE definition of a label.

    Learning (:func:`mining.ranking.rerank.consensus_labels`, the pixel model's masks)
    and every label export (``raremine export --what labels``, the app's
    export) read labels only through this function.

    Parameters
    ----------
    store : Store
    rule : ConsensusRule, optional
        Default ``ConsensusRule()`` (the defaults of the ``review:`` config section).
    reviewers : sequence of str, optional
        Count only these reviewers (or import sources).
    tiles : bool, default=False
        Also tiles' reviews; by default only whole images (``tile = -1``).

    Returns
    -------
    dict of (image_id, tile) to ImageLabel
        Every reviewed image, sorted by key; :attr:`ImageLabel.target` is 1
        (defect), 0 (normal) or None (left out, :attr:`ImageLabel.left_out`
        says why).
    """
    rule = rule or ConsensusRule()
    out = {}
    for key, d in sorted(decisions(store, rule, reviewers=reviewers).items()):
        if key[1] != -1 and not tiles:
            continue
        out[key] = ImageLabel(int(key[0]), int(key[1]), d)
    return out


def left_out_counts(labels: Mapping[tuple[int, int], ImageLabel] | Iterable[ImageLabel]) -> dict[str, int]:
    """How many images have no label, per reason.

    Parameters
    ----------
    labels : mapping of key to ImageLabel, or iterable of ImageLabel
        As :func:`image_labels` returns them.

    Returns
    -------
    dict of str to int
        Reasons (keys of :data:`LEFT_OUT`, in that order) with a non-zero count.
    """
    values = labels.values() if isinstance(labels, Mapping) else labels
    counts = Counter(lab.left_out for lab in values if lab.left_out is not None)
    return {r: counts[r] for r in (*LEFT_OUT, *sorted(set(counts) - set(LEFT_OUT))) if counts.get(r)}


def describe_left_out(counts: Mapping[str, int]) -> str:
    """A sentence for people on what was left out and why.

    Parameters
    ----------
    counts : mapping of str to int
        As :func:`left_out_counts` returns them.

    Returns
    -------
    str
        E.g. ``"3 reviewed images left out (no label): 2 pending (not enough agreeing votes yet), 1 unsure
        (decided unsure)"``, or ``"no reviewed image left out"``.
    """
    total = sum(counts.values())
    if not total:
        return "no reviewed image left out"
    parts = ", ".join(f"{n} {r} ({LEFT_OUT.get(r, r)})" for r, n in counts.items())
    return f"{total} reviewed image{'s' if total != 1 else ''} left out (no label): {parts}"


__all__ = [
    "LEFT_OUT",
    "ON_DISAGREEMENT",
    "STATUSES",
    "VERDICTS",
    "Confirmed",
    "ConsensusRule",
    "Decision",
    "ImageLabel",
    "Vote",
    "decide",
    "decisions",
    "describe_left_out",
    "image_labels",
    "latest_votes",
    "left_out_counts",
]
