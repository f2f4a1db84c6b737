"""Review logic behind the Streamlit app: queues, verdicts, consensus, progress, export.

Everything here is plain Python over :class:`mining.catalogue.store.Store` (no
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
  labels it gives live in :mod:`mining.catalogue.verdicts` (re-exported here), the one
  definition of a label that learning and every export share.
- Label images painted in the app use 0 = unlabelled, 1 = background,
  2 = defect, the format ``raremine fit-pixel`` reads; the vote itself
  carries a 0/255 defect mask (``reviews.mask_path``), the format the learn
  step and the label exports read. Both files are named by the image's
  identity (catalogue id and tile) and their content, never by the file name
  (two archive folders may hold ``cam.png``), so no image's file is ever
  overwritten by another's.

Modules
-------
- :mod:`mining.review.queue`: rounds, items, verdicts, undo, disagreements, progress.
- :mod:`mining.review.reviewers`: claims, votes still needed, others' decisions, preferences.
- :mod:`mining.review.views`: scores, metadata, the map, neighbours, why, reference images.
- :mod:`mining.review.display`: windowing, overlays, thumbnails, hot regions, crops.
- :mod:`mining.review.painting`: strokes to label images, masks written beside the catalogue.
- :mod:`mining.review.files`: archive roots, the path check, the label export.

Every public name is importable from :mod:`mining.review` itself.
"""

from mining.catalogue.paths import labels_dir
from mining.catalogue.verdicts import (
    LEFT_OUT,
    ON_DISAGREEMENT,
    STATUSES,
    VERDICTS,
    Confirmed,
    ConsensusRule,
    Decision,
    ImageLabel,
    Vote,
    decide,
    decisions,
    describe_left_out,
    image_labels,
    latest_votes,
    left_out_counts,
)
from mining.review.display import (
    auto_window,
    crop_around,
    display_image,
    heat_colours,
    hot_region,
    overlay,
    stored_window,
    thumbnail,
    value_range,
    view_rendering,
    window,
)
from mining.review.files import (
    PathOutsideRoots,
    archive_roots,
    check_path,
    export_labels,
    maps_root,
)
from mining.review.painting import (
    BACKGROUND,
    DEFECT,
    UNLABELLED,
    masks_dir,
    painted_name,
    save_defect_mask,
    save_label_image,
    strokes_to_labels,
)
from mining.review.queue import (
    Item,
    add_mask_annotation,
    disagreements,
    image_items,
    progress,
    record_verdict,
    reviewer_queue,
    round_items,
    rounds,
    undo_review,
)
from mining.review.reviewers import (
    CLAIM_SECONDS,
    claim,
    claims,
    earlier_votes,
    get_pref,
    last_review_id,
    needs_vote,
    others_decided,
    release,
    set_pref,
    votes_needed,
)
from mining.review.views import (
    embeddings,
    image_meta,
    item_scores,
    map_table,
    nearest,
    neighbours,
    normal_pool,
    ordinal,
    percent,
    raw_embeddings,
    reference_image,
    scorer_ranks,
    why_sentences,
)

__all__ = [
    "BACKGROUND",
    "CLAIM_SECONDS",
    "DEFECT",
    "LEFT_OUT",
    "ON_DISAGREEMENT",
    "STATUSES",
    "UNLABELLED",
    "VERDICTS",
    "Confirmed",
    "ConsensusRule",
    "Decision",
    "ImageLabel",
    "Item",
    "PathOutsideRoots",
    "Vote",
    "add_mask_annotation",
    "archive_roots",
    "auto_window",
    "check_path",
    "claim",
    "claims",
    "crop_around",
    "decide",
    "decisions",
    "describe_left_out",
    "disagreements",
    "display_image",
    "earlier_votes",
    "embeddings",
    "export_labels",
    "get_pref",
    "heat_colours",
    "hot_region",
    "image_items",
    "image_labels",
    "image_meta",
    "item_scores",
    "labels_dir",
    "last_review_id",
    "latest_votes",
    "left_out_counts",
    "map_table",
    "maps_root",
    "masks_dir",
    "nearest",
    "needs_vote",
    "neighbours",
    "normal_pool",
    "ordinal",
    "others_decided",
    "overlay",
    "painted_name",
    "percent",
    "progress",
    "raw_embeddings",
    "record_verdict",
    "reference_image",
    "release",
    "reviewer_queue",
    "round_items",
    "rounds",
    "save_defect_mask",
    "save_label_image",
    "scorer_ranks",
    "set_pref",
    "stored_window",
    "strokes_to_labels",
    "thumbnail",
    "undo_review",
    "value_range",
    "view_rendering",
    "votes_needed",
    "why_sentences",
    "window",
]
