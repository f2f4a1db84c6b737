"""What every screen of the review app shares: constants, components, cached images, queue actions, the page context."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import streamlit as st

from mining import review as rv
from mining.catalogue.store import Store
from mining.io import UnreadableImage, read_image

VIEWS = ("Queue", "Grid", "Map", "Disagreements", "Progress", "Export")
VERDICT_KEYS = {"confirm": "Y", "reject": "N", "unsure": "U"}
GRID_LABELS = {"confirm": "✓", "reject": "✗", "unsure": "?"}
PAINT_COLOURS = {"defect": "#ff0000", "background": "#00ff00"}
VIEW_MAX_SIDE = 2048  # px: the viewer gets a copy no larger than this, never the original of a large image
HOT_CROP = 160  # px: the full-resolution crop around the score map's peak
HOT_SPOTS = 3  # hot regions H steps through, hottest first
UI_DIR = Path(__file__).resolve().parents[1] / "review_ui"  # raremine/review_ui
#: Every shortcut, as the "?" help lists them.
SHORTCUTS = (
    ("Y", "confirm (with the chosen category)"),
    ("N", "reject"),
    ("U", "unsure"),
    ("1-9", "category for the next confirm"),
    ("J / K", "next / previous candidate"),
    ("Z", "undo your last vote (or grid page)"),
    ("Enter", "Grid: submit the page (unmarked thumbnails are skipped)"),
    ("+ / - / 0", "zoom in / out / whole image (also the mouse wheel; double-click zooms in)"),
    ("arrows", "pan the zoomed image (also drag it)"),
    ("H", "jump to the hot spot (the score map's peak) with a full-resolution crop; again: the next hot spot"),
    ("O", "overlay (outline of the hot region) on / off"),
    ("S", "raw image and score map side by side"),
    ("?", "this help"),
)


# -- custom components (streamlit components v2: plain JS/CSS in review_ui/, nothing from a CDN) --------
@st.cache_resource
def ui_components() -> dict:
    """The viewer and the keyboard-help components, registered once per server."""
    css = (UI_DIR / "viewer.css").read_text(encoding="utf-8")
    shared = (UI_DIR / "host.js").read_text(encoding="utf-8")  # host(): each component's own element
    return {
        name: st.components.v2.component(
            f"raremine_{name}", js=shared + (UI_DIR / f"{name}.js").read_text(encoding="utf-8"), css=css
        )
        for name in ("viewer", "keys")
    }


def keys_ui() -> None:
    """The "?" help listing every shortcut; Enter or Escape in a text field leaves it."""
    ui_components()["keys"](data={"keys": [list(k) for k in SHORTCUTS]}, key="keys_help", height=0)
    with st.sidebar.expander("All keys (?)"):
        st.markdown("\n".join(f"- **{k}** {what}" for k, what in SHORTCUTS))


def png_url(picture: np.ndarray, *, quality: int | None = None) -> str:
    """A picture (grey or RGB uint8) as a data URL: PNG, or JPEG at ``quality`` for large views."""
    bgr = picture if picture.ndim == 2 else cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
    if quality:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        mime = "image/jpeg"
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        mime = "image/png"
    if not ok:
        raise ValueError("could not encode the picture")
    return f"data:{mime};base64," + base64.b64encode(buf.tobytes()).decode("ascii")


# -- cached data ------------------------------------------------------------------------------
@st.cache_resource(max_entries=64, show_spinner=False)
def load_image(path: str, mtime_ns: int) -> np.ndarray:
    """An archive image as stored (through :func:`mining.io.read_image`), shared read-only, never copied."""
    img = read_image(path)
    img.flags.writeable = False
    return img


@st.cache_data(max_entries=4, show_spinner=False)
def load_embeddings(db: str, n_rows: int):
    """Unit embedding vectors of the catalogue (re-read when the row count changes)."""
    with Store(db, readonly=True) as s:
        return rv.embeddings(s)


@st.cache_data(max_entries=4, show_spinner=False)
def load_map(db: str, n_reviews: int, rule: tuple, method: str | None):
    """Map points with score and status (re-read when the number of votes changes)."""
    with Store(db, readonly=True) as s:
        return rv.map_table(s, rv.ConsensusRule(*rule), method)


def picture_of(store: Store, item: rv.Item, roots: list[str]) -> np.ndarray:
    """The raw pixels of an item (its tile when tiled); raises for missing or forbidden files."""
    real = rv.check_path(item.path, roots)
    try:
        mtime = os.stat(real).st_mtime_ns
    except OSError as err:
        raise UnreadableImage(item.path, "missing", f"cannot open: {err.strerror}") from err
    img = load_image(real, mtime)
    if item.tile >= 0:
        for idx, y, x, h, w in store.tiles(item.image_id):
            if idx == item.tile:
                return img[y : y + h, x : x + w]
    return img


def score_map_of(path: str | None, maps_root: str) -> np.ndarray | None:
    """A score-map overlay PNG, or None when missing or outside the maps folder."""
    if not path:
        return None
    try:
        real = rv.check_path(path, [maps_root])
        return load_image(real, os.stat(real).st_mtime_ns)
    except (rv.PathOutsideRoots, UnreadableImage, OSError):
        return None


# -- actions (callbacks run before the page is drawn again) ------------------------------------
def act_verdict(verdict: str, item: rv.Item, pos: int) -> None:
    """Store a vote for the current item and move on.

    A key pressed again before the page shows the next item arrives with the
    old item; it is ignored rather than stored as a second vote.
    """
    ss = st.session_state
    if ss["pos"] != pos:
        ss["last_action"] = "ignored a repeated key press"
        return
    store: Store = ss["store"]
    label_path, mask_path = ss["masks"].pop(item.key, (None, None))
    category = ss.get("category") if verdict == "confirm" else None
    rid = rv.record_verdict(
        store, item, ss["reviewer"], verdict, category=category, note=ss.get("note"), mask_path=mask_path
    )
    if label_path:
        rv.add_mask_annotation(store, item.image_id, rid, label_path, category, mask_path=mask_path)
    rv.release(store, ss["reviewer"], item)
    ss["undo"].append(([rid], ss["pos"]))
    ss["pos"] += 1
    ss["note"] = ""
    ss["last_action"] = f"{verdict} #{rid}"


def act_move(step: int) -> None:
    """Go to the next (+1) or previous (-1) item."""
    ss = st.session_state
    queue = ss["queue"] or []
    n = len(queue)
    if 0 <= ss["pos"] < n and ss.get("reviewer"):
        rv.release(ss["store"], ss["reviewer"], queue[ss["pos"]])  # others may take it now
    ss["pos"] = int(min(max(ss["pos"] + step, 0), n))


def act_undo() -> None:
    """Delete this session's last vote (or grid page of votes) and go back to it."""
    ss = st.session_state
    if not ss["undo"]:
        ss["last_action"] = "nothing to undo"
        return
    ids, pos = ss["undo"].pop()
    gone = sum(rv.undo_review(ss["store"], rid, ss["reviewer"]) for rid in ids)
    ss["pos"] = pos
    ss["last_action"] = f"undid {gone} vote(s)"


def act_category(cat: str) -> None:
    """Choose the category for the next confirm."""
    st.session_state["category"] = cat


def act_queue(ids: list[int], label: str) -> None:
    """Make a list of images the queue (from the map, the neighbours or the disagreements)."""
    ss = st.session_state
    ss["source"] = ("images", (label, tuple(int(i) for i in ids)))
    ss["queue"] = None
    ss["pos"] = 0
    ss["view"] = "Queue"


def act_round_queue() -> None:
    """Go back to the current round's candidates."""
    ss = st.session_state
    ss["source"] = ("round", None)
    ss["queue"] = None
    ss["pos"] = 0


def act_grid(items: list[rv.Item], pos: int) -> None:
    """Store the verdicts chosen on a grid page (unmarked thumbnails are skipped) and go to the next page."""
    ss = st.session_state
    if ss["pos"] != pos:
        ss["last_action"] = "ignored a repeated submit"
        return
    ids = []
    for it in items:
        verdict = ss.get(grid_key(it))
        if verdict:
            cat = ss.get("category") if verdict == "confirm" else None
            ids.append(rv.record_verdict(ss["store"], it, ss["reviewer"], verdict, category=cat))
        ss.pop(grid_key(it), None)
    ss["undo"].append((ids, ss["pos"]))
    ss["pos"] += len(items)
    ss["last_action"] = f"grid: {len(ids)} verdicts, {len(items) - len(ids)} skipped"


def grid_key(item: rv.Item) -> str:
    return f"grid_{item.image_id}_{item.tile}"


def rule_of(cfg) -> rv.ConsensusRule:
    rc = cfg.review
    return rv.ConsensusRule(agree=rc.agree, on_disagreement=rc.on_disagreement, max_votes=rc.max_votes)


def current_queue(store: Store, reviewer: str, rule: rv.ConsensusRule, show_all: bool) -> list[rv.Item]:
    """The session's queue, built once per reviewer / source and kept stable while reviewing.

    Items are checked again just before they are shown (see :func:`advance_to_readable`):
    one another reviewer is looking at, or that consensus decided meanwhile, is passed over.
    A queue of the current round grows in place when the round does (:func:`grow_queue`).
    """
    ss = st.session_state
    signature = (reviewer, ss["source"], show_all)
    if ss["queue"] is None or ss["queue_for"] != signature:
        kind, payload = ss["source"]
        r = store.current_round()
        items = rv.round_items(store, r) if kind == "round" else rv.image_items(store, payload[1])
        ss["queue"] = rv.reviewer_queue(store, items, reviewer, rule, include_done=show_all)
        ss["queue_built"] = list(ss["queue"])  # as built: a refresh reports on these
        ss["queue_for"] = signature
        ss["queue_round"] = r if kind == "round" else None
        ss["queue_keys"] = {it.key for it in items} if kind == "round" else set()
        ss["pos"] = 0
        ss["undo"] = []
        ss["seen"] = set()
        ss["deferred"] = set()
        ss["since_id"] = rv.last_review_id(store)
    else:
        grow_queue(store, reviewer, rule, show_all)
    return ss["queue"]


def grow_queue(store: Store, reviewer: str, rule: rv.ConsensusRule, show_all: bool) -> int:
    """Append the candidates the queue's round gained since the queue was built (a round chosen step by step).

    Position, undo stack and claims are left as they are; of the new
    candidates, those this reviewer voted on or that consensus decided stay out
    (:func:`mining.review.reviewer_queue`). Returns how many were appended.
    """
    from mining.ranking.rank import round_size

    ss = st.session_state
    r = ss.get("queue_round")
    if ss["source"][0] != "round" or not r:
        return 0
    held = round_size(store, r)
    known = ss.setdefault("queue_keys", set())
    if held <= len(known):
        return 0
    new = [it for it in rv.round_items(store, r) if it.key not in known]
    known.update(it.key for it in new)
    fresh = rv.reviewer_queue(store, new, reviewer, rule, include_done=show_all)
    ss["queue"].extend(fresh)
    ss.setdefault("queue_built", []).extend(fresh)
    if fresh:
        ss["passed"].append(f"{len(fresh)} more candidates chosen with the verdicts so far")
    return len(fresh)


def act_refresh_queue() -> None:
    """Build the queue again and say what other reviewers decided since it was built."""
    ss = st.session_state
    store: Store = ss["store"]
    old = list(ss.get("queue_built") or ss["queue"] or [])
    since = ss.get("since_id", 0)
    rule = ss.get("rule")
    changed = rv.others_decided(store, old, ss["reviewer"], since, rule) if rule else []
    ss["refresh_report"] = changed
    rv.release(store, ss["reviewer"])
    ss["queue"] = None


def embedding_count(store: Store) -> int:
    """Whole-image embedding rows in the catalogue (counted once per session)."""
    ss = st.session_state
    if "n_embeddings" not in ss:
        ss["n_embeddings"] = int(store.query("SELECT COUNT(*) FROM embeddings WHERE tile = -1")[0][0])
    return ss["n_embeddings"]


@st.cache_data(max_entries=4, show_spinner=False)
def load_raw_embeddings(db: str, n_rows: int):
    """Embedding vectors as stored (re-read when the row count changes)."""
    with Store(db, readonly=True) as s:
        return rv.raw_embeddings(s)


# -- views ------------------------------------------------------------------------------------
@dataclass
class Ctx:
    """What every view needs."""

    store: Store
    cfg: object
    rule: rv.ConsensusRule
    reviewer: str
    show_all: bool
    roots: list[str] = field(default_factory=list)
    maps_root: str = ""
