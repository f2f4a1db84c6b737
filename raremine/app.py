"""raremine review app: confirm or reject the candidates of a catalogue.

Run it with ``raremine review --db FILE [--port N]`` or
``streamlit run app.py -- --db FILE [--config YAML]``. It binds 127.0.0.1
unless told otherwise (``raremine review --address``).

A thin shell: the queue, consensus, progress and export logic lives in
:mod:`mining.review`; every read and write goes through
:class:`mining.store.Store`. Navigation is built in :func:`main`; widgets are
drawn by small ``*_ui()`` functions that return values.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import streamlit as st

from mining import review as rv
from mining.config import ConfigError, load_config
from mining.io import UnreadableImage, read_image
from mining.store import SchemaVersionError, Store

logger = logging.getLogger(__name__)

VIEWS = ("Queue", "Grid", "Map", "Disagreements", "Progress", "Export")
VERDICT_KEYS = {"confirm": "Y", "reject": "N", "unsure": "U"}
GRID_LABELS = {"confirm": "✓", "reject": "✗", "unsure": "?"}
PAINT_COLOURS = {"defect": "#ff0000", "background": "#00ff00"}
VIEW_MAX_SIDE = 2048  # px: the viewer gets a copy no larger than this, never the original of a large image
HOT_CROP = 160  # px: the full-resolution crop around the score map's peak
HOT_SPOTS = 3  # hot regions H steps through, hottest first
UI_DIR = Path(__file__).resolve().parent / "review_ui"
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


# -- input ------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    """``--db`` and ``--config`` after ``--`` (env ``RAREMINE_DB`` / ``RAREMINE_CONFIG`` as fallbacks)."""
    p = argparse.ArgumentParser(prog="raremine review app", add_help=False)
    p.add_argument("--db", default=os.environ.get("RAREMINE_DB"))
    p.add_argument("--config", default=os.environ.get("RAREMINE_CONFIG") or None)
    args, _ = p.parse_known_args(argv)
    return args


@st.cache_resource
def load_cfg(path: str | None):
    """The validated config (defaults when no file is given)."""
    return load_config(path)


def open_store(db: str | None) -> Store:
    """This session's catalogue connection, created once; stops the page on bad input."""
    if st.session_state.get("store_path") == db and "store" in st.session_state:
        return st.session_state["store"]
    if not db:
        st.error("no catalogue given: run `raremine review --db FILE` or `streamlit run app.py -- --db FILE`")
        st.stop()
    if not os.path.exists(db):
        st.error(f"catalogue {db!r} does not exist: run `raremine index ROOT --db {db}` first")
        st.stop()
    try:
        Store(db, readonly=True).close()  # refuses another schema version without migrating
        store = Store(db)
    except (SchemaVersionError, ValueError, OSError) as err:
        st.error(f"cannot open the catalogue: {err}")
        st.stop()
    st.session_state["store"] = store
    st.session_state["store_path"] = db
    return store


def init_state(reviewer_default: str) -> None:
    """Session state, created once per browser session."""
    defaults = {
        "reviewer": reviewer_default,
        "pos": 0,
        "queue": None,
        "queue_for": None,
        "source": ("round", None),
        "undo": [],
        "skipped": [],
        "passed": [],
        "note": "",
        "category": None,
        "masks": {},
        "view": "Queue",
        "show_all": False,
    }
    for k, v in defaults.items():
        if k not in st.session_state:
            st.session_state[k] = v


# -- custom components (streamlit components v2: plain JS/CSS in review_ui/, nothing from a CDN) --------
@st.cache_resource
def ui_components() -> dict:
    """The viewer and the keyboard-help components, registered once per server."""
    css = (UI_DIR / "viewer.css").read_text(encoding="utf-8")
    return {
        "viewer": st.components.v2.component(
            "raremine_viewer", js=(UI_DIR / "viewer.js").read_text(encoding="utf-8"), css=css
        ),
        "keys": st.components.v2.component(
            "raremine_keys", js=(UI_DIR / "keys.js").read_text(encoding="utf-8"), css=css
        ),
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


# -- widgets ------------------------------------------------------------------------------------
def sidebar_ui(cfg) -> tuple[str, str, bool]:
    """Reviewer name (set once, then shown), view and 'show reviewed too'; returns them."""
    sb = st.sidebar
    sb.title("raremine review")
    ss = st.session_state
    if ss.get("reviewer"):
        sb.markdown(f"Reviewer: **{ss['reviewer']}**")
        sb.button("Change reviewer", key="change_reviewer", on_click=act_change_reviewer)
    else:
        sb.text_input(
            "Reviewer",
            key="reviewer_name",
            on_change=act_set_reviewer,
            help="your name, asked once; every vote is stored under it (or open the page with ?reviewer=NAME)",
        )
    view = sb.radio("View", VIEWS, key="view")
    show_all = sb.checkbox("Show items I already voted on", key="show_all")
    sb.caption("Keys: Y confirm · N reject · U unsure · 1–9 category · J next · K previous · Z undo · **?** all keys")
    return ss.get("reviewer") or "", view, show_all


def act_set_reviewer() -> None:
    """Take the name typed in the sidebar as this session's reviewer (once) and put it in the address."""
    ss = st.session_state
    name = (ss.get("reviewer_name") or "").strip()
    if name:
        ss["reviewer"] = name
        ss["queue"] = None
        st.query_params["reviewer"] = name


def act_change_reviewer() -> None:
    """Forget the reviewer name (their claims are released) so that another can be typed."""
    ss = st.session_state
    if ss.get("reviewer") and "store" in ss:
        rv.release(ss["store"], ss["reviewer"])
    ss["reviewer"] = ""
    ss["reviewer_name"] = ""
    ss["queue"] = None
    ss["undo"] = []
    st.query_params.pop("reviewer", None)


def rule_of(cfg) -> rv.ConsensusRule:
    rc = cfg.review
    return rv.ConsensusRule(agree=rc.agree, on_disagreement=rc.on_disagreement, max_votes=rc.max_votes)


def current_queue(store: Store, reviewer: str, rule: rv.ConsensusRule, show_all: bool) -> list[rv.Item]:
    """The session's queue, built once per reviewer / source and kept stable while reviewing.

    Items are checked again just before they are shown (see :func:`advance_to_readable`):
    one another reviewer is looking at, or that consensus decided meanwhile, is passed over.
    """
    ss = st.session_state
    signature = (reviewer, ss["source"], show_all)
    if ss["queue"] is None or ss["queue_for"] != signature:
        kind, payload = ss["source"]
        items = rv.round_items(store) if kind == "round" else rv.image_items(store, payload[1])
        ss["queue"] = rv.reviewer_queue(store, items, reviewer, rule, include_done=show_all)
        ss["queue_built"] = list(ss["queue"])  # as built: a refresh reports on these
        ss["queue_for"] = signature
        ss["pos"] = 0
        ss["undo"] = []
        ss["seen"] = set()
        ss["deferred"] = set()
        ss["since_id"] = rv.last_review_id(store)
    return ss["queue"]


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


def window_ui(img: np.ndarray, stored: dict | None = None) -> tuple[float | None, float | None]:
    """Level/width sliders for images that are not 8-bit (or when asked); returns (level, width).

    ``stored`` (:func:`mining.review.stored_window`): the file's own window, the default when not manual.
    """
    wide = img.dtype != np.uint8
    with st.expander("Window (level / width)", expanded=False):
        use = st.checkbox("Manual window", key="manual_window", value=False)
        if not use:
            if stored is not None:
                st.caption(stored["source"])
                return stored["level"], stored["width"]
            st.caption("automatic: 0.5–99.5 percentiles" if wide else "8-bit image shown as stored")
            return None, None
        lo, hi = rv.value_range(img)
        lvl0, wid0 = (stored["level"], stored["width"]) if stored is not None else rv.auto_window(img)
        step = 1.0 if np.issubdtype(img.dtype, np.integer) else (hi - lo) / 1000
        level = st.slider("Level", lo, hi, float(np.clip(lvl0, lo, hi)), step=step, key="level")
        width = st.slider("Width", step, hi - lo, float(np.clip(wid0, step, hi - lo)), step=step, key="width")
        return level, width


def verdict_ui(item: rv.Item, categories: list[str], bar=None) -> None:
    """Verdict and navigation buttons (two full-width rows above the image) with their keyboard shortcuts.

    ``bar`` is the container they go in (made before the image, filled after it).
    """
    ss = st.session_state
    if ss.get("category") not in categories:
        ss["category"] = categories[0] if categories else None
    cat = f" · {ss['category']}" if categories and ss.get("category") else ""
    with bar if bar is not None else st.container(key="verdict_bar"):
        cols = st.columns(3)
        for col, (verdict, key) in zip(cols, VERDICT_KEYS.items(), strict=True):
            col.button(
                f"{verdict.capitalize()} ({key})" + (cat if verdict == "confirm" else ""),
                key=f"btn_{verdict}",
                shortcut=key,
                on_click=act_verdict,
                args=(verdict, item, ss["pos"]),
                type="primary" if verdict == "confirm" else "secondary",
                width="stretch",
            )
        n1, n2, n3 = st.columns(3)
        n1.button("Previous (K)", key="btn_prev", shortcut="K", on_click=act_move, args=(-1,), width="stretch")
        n2.button("Next (J)", key="btn_next", shortcut="J", on_click=act_move, args=(1,), width="stretch")
        n3.button("Undo (Z)", key="btn_undo", shortcut="Z", on_click=act_undo, width="stretch", disabled=not ss["undo"])


def category_note_ui(categories: list[str]) -> None:
    """Category buttons (1-9) and the note field (Enter leaves it, so the next key votes)."""
    ss = st.session_state
    if categories:
        ccols = st.columns(min(len(categories), 9))
        for i, cat in enumerate(categories[:9]):
            ccols[i].button(
                f"{cat}",
                key=f"cat_{i}",
                shortcut=str(i + 1),
                on_click=act_category,
                args=(cat,),
                type="primary" if ss["category"] == cat else "tertiary",
            )
        st.caption(f"category for a confirm: **{ss['category']}**")
    st.text_input("Note", key="note", placeholder="optional", help="stored with your next vote; Enter keeps it")


def details_ui(ctx: Ctx, item: rv.Item) -> None:
    """Why it was picked (a sentence per scorer), earlier votes, neighbours, a normal reference, path, metadata."""
    store = ctx.store
    st.markdown(f"**{os.path.basename(item.path)}**" + (f" · tile {item.tile}" if item.tile >= 0 else ""))
    sentences = rv.why_sentences(store, item)
    if sentences:
        st.markdown("**Why picked**\n" + "\n".join(f"- {x}" for x in sentences))
    votes = rv.earlier_votes(store, [item]).get(item.key)
    if votes:
        st.caption("votes so far: " + "; ".join(f"{v.reviewer}: {v.verdict}" for v in votes))
    with st.expander("Path and metadata"):
        st.code(item.path, language=None)
        meta = rv.image_meta(store, item.image_id)
        st.markdown("\n".join(f"- {k}: `{v}`" for k, v in meta.items() if v is not None))
    neighbours_ui(store, item, ctx.roots)
    reference_ui(ctx, item)


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


def neighbours_ui(store: Store, item: rv.Item, roots: list[str]) -> None:
    """'More like this': nearest neighbours by embedding distance, when there is an embedding (on demand)."""
    if not embedding_count(store) or not st.toggle("More like this", key="show_neighbours"):
        return
    name, ids, vecs = load_raw_embeddings(store.path, embedding_count(store))
    near = rv.nearest(ids, vecs, item.image_id, k=6)
    if not near:
        st.caption("no embedding for this image")
        return
    with st.container(border=True):
        st.caption(f"nearest by {name} embedding (Euclidean distance d; smaller is more alike)")
        others = {it.image_id: it for it in rv.image_items(store, [i for i, _ in near])}
        cols = st.columns(3)
        for j, (iid, dist) in enumerate(near):
            it = others.get(iid)
            if it is None:
                continue
            try:
                pic = rv.thumbnail(rv.display_image(picture_of(store, it, roots)), 120)
                cols[j % 3].image(pic, caption=f"{os.path.basename(it.path)} (d = {dist:.3g})")
            except (rv.PathOutsideRoots, UnreadableImage) as err:
                cols[j % 3].caption(f"{os.path.basename(it.path)}: {err}")
        st.button(
            "Review these",
            key="queue_neighbours",
            on_click=act_queue,
            args=([i for i, _ in near], f"like {os.path.basename(item.path)}"),
        )


def reference_ui(ctx: Ctx, item: rv.Item) -> None:
    """The nearest normal-looking image by embedding, beside the candidate, on request."""
    store = ctx.store
    if not embedding_count(store) or not st.toggle("Normal reference", key="show_reference"):
        return
    ref = rv.reference_image(store, item, ctx.rule, load_raw_embeddings(store.path, embedding_count(store)))
    if ref is None:
        st.caption("no normal-looking image with an embedding to compare with")
        return
    iid, dist, how = ref
    found = rv.image_items(store, [iid])
    if not found:
        return
    it = found[0]
    try:
        pic = rv.display_image(picture_of(store, it, ctx.roots))
    except (rv.PathOutsideRoots, UnreadableImage) as err:
        st.caption(f"reference {os.path.basename(it.path)}: {err}")
        return
    st.image(
        rv.thumbnail(pic, 360),
        caption=f"reference: {os.path.basename(it.path)}, the nearest normal-looking image ({how}; d = {dist:.3g})",
    )


def paint_ui(store: Store, item: rv.Item, picture: np.ndarray) -> None:
    """Scribbles or a mask painted on the image, saved as a label image (0/1/2) for fit-pixel."""
    if not st.toggle("Paint scribbles / mask", key="paint"):
        return
    try:
        from PIL import Image
        from streamlit_drawable_canvas import st_canvas
    except ImportError as err:
        st.warning(f"painting needs streamlit-drawable-canvas: {err}")
        return
    c1, c2 = st.columns(2)
    label = c1.radio("Brush", list(PAINT_COLOURS), horizontal=True, key="brush")
    size = c2.slider("Brush size", 2, 40, 10, key="brush_size")
    h, w = picture.shape[:2]
    cw = min(640, w * 3) if w < 320 else 640
    ch = max(1, round(h * cw / w))
    bg = Image.fromarray(picture if picture.ndim == 2 else picture[:, :, :3])
    result = st_canvas(
        stroke_width=size,
        stroke_color=PAINT_COLOURS[label],
        background_image=bg,
        width=cw,
        height=ch,
        drawing_mode="freedraw",
        key=f"canvas_{item.image_id}_{item.tile}",
    )
    if st.button("Save label image", key="save_mask"):
        labels = rv.strokes_to_labels(
            result.json_data,
            (cw, ch),
            (h, w),
            {PAINT_COLOURS["defect"]: rv.DEFECT, PAINT_COLOURS["background"]: rv.BACKGROUND},
        )
        if not labels.any():
            st.warning("nothing painted yet")
            return
        path = rv.save_label_image(labels, store.path, item.image_id, item.tile)
        mask = rv.save_defect_mask(labels, store.path, item.image_id, item.tile)
        st.session_state["masks"][item.key] = (path, mask)
        st.success(
            f"saved {path}"
            + (f" and the defect mask {mask}" if mask else " (no defect pixels)")
            + "; they are stored with your next verdict on this image"
        )


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


def advance_to_readable(ctx: Ctx, queue: list[rv.Item]) -> tuple[rv.Item | None, np.ndarray | None]:
    """The current item and its pixels, claimed for this reviewer.

    Passes over (with a message) images that cannot be shown, and, the first
    time an item comes up, items that no longer need this reviewer's vote
    (another reviewer voted and consensus decided) or that another reviewer is
    looking at (an unexpired claim: moved to the end of the queue once).
    Items already shown in this session (Previous, Undo) are shown again.
    """
    ss = st.session_state
    seen, deferred = ss.setdefault("seen", set()), ss.setdefault("deferred", set())
    while ss["pos"] < len(queue):
        item = queue[ss["pos"]]
        if item.key not in seen:
            ok, why = rv.needs_vote(ctx.store, item, ctx.reviewer, ctx.rule, include_done=ctx.show_all)
            if ok:  # (several reviewers share a claim only when consensus needs their votes)
                rv.claim(ctx.store, item, ctx.reviewer, share=True)
            if not ok:
                if "looking at it" in why and item.key not in deferred:
                    deferred.add(item.key)
                    queue.append(item)  # back of the queue: their claim may lapse
                    ss["passed"].append(f"{os.path.basename(item.path)}: {why}; moved to the end of your queue")
                else:
                    ss["passed"].append(f"passed over {os.path.basename(item.path)}: {why}")
                del queue[ss["pos"]]
                continue
        else:
            rv.claim(ctx.store, item, ctx.reviewer, share=True)
        try:
            pic = picture_of(ctx.store, item, ctx.roots)
        except (UnreadableImage, rv.PathOutsideRoots) as err:
            ss["skipped"].append(
                f"skipped {item.path}: {getattr(err, 'reason', 'refused')} — {getattr(err, 'detail', err)}"
            )
            ss["pos"] += 1
            continue
        seen.add(item.key)
        return item, pic
    return None, None


def queue_header(ctx: Ctx, queue: list[rv.Item], item: rv.Item | None = None, *, later: bool = False):
    """The header line, then progress, refresh and messages (``later``: a container for them is returned)."""
    ss = st.session_state
    kind, payload = ss["source"]
    src = f"round {ctx.store.current_round()}" if kind == "round" else payload[0]
    left = max(len(queue) - ss["pos"], 0)
    st.markdown(
        f"**{src}** · item {min(ss['pos'] + 1, len(queue))} of {len(queue)} · {left} left · "
        f"reviewer **{ctx.reviewer}**" + (f" · `{os.path.basename(item.path)}`" if item else "")
    )
    if later:
        return st.container()
    queue_status(ctx)
    return None


def queue_status(ctx: Ctx) -> None:
    """The round's progress bar, Refresh and what it found, the last action and skipped items."""
    ss = st.session_state
    kind, _ = ss["source"]
    c1, c2 = st.columns([3, 1], vertical_alignment="center")
    if kind == "round":
        done, total = round_progress(ctx)
        c1.progress(done / total if total else 0.0, text=f"round: {done} of {total} candidates decided")
    else:
        c1.button("Back to the round's candidates", on_click=act_round_queue, key="back_round")
    c2.button(
        "Refresh",
        key="refresh_queue",
        on_click=act_refresh_queue,
        width="stretch",
        help="build your queue again and see what other reviewers decided meanwhile",
    )
    report = ss.pop("refresh_report", None)
    if report is not None:
        if report:
            lines = "\n".join(
                f"- `{os.path.basename(r['path'])}`: "
                + (f"decided **{r['verdict']}**" if r["status"] == "decided" else r["status"])
                + f" ({r['votes']})"
                for r in report
            )
            st.info(f"Since your queue was built, other reviewers voted on {len(report)} of its images:\n{lines}")
        else:
            st.info("Since your queue was built, no other reviewer voted on its images.")
    # the same elements on every run: a shifting layout remounts the buttons and can drop a shortcut
    st.caption(f"last: {ss['last_action']}" if ss.get("last_action") else "last: -")
    with st.container():
        for msg in ss["skipped"][-5:]:
            st.warning(msg)
        for msg in ss["passed"][-3:]:
            st.caption(msg)


def round_progress(ctx: Ctx) -> tuple[int, int]:
    """Candidates of the current round that the consensus rule has decided (or dropped), and all of them."""
    keys = [
        (r[0], r[1])
        for r in ctx.store.query("SELECT image_id, tile FROM candidates WHERE round = ?", (ctx.store.current_round(),))
    ]
    if not keys:
        return 0, 0
    dec = rv.decisions(ctx.store, ctx.rule, keys)
    return sum(1 for k in keys if dec[k].status in ("decided", "dropped")), len(keys)


def empty_queue(ctx: Ctx, queue: list[rv.Item]) -> None:
    ss = st.session_state
    if not queue:
        if ctx.store.current_round() == 0 and ss["source"][0] == "round":
            st.info("No candidates in this catalogue yet: rank the first round below (or `raremine rank`).")
        else:
            st.info("Nothing to review here: every item in this queue has your vote or a decision.")
    else:
        st.success(f"End of the queue: all {len(queue)} items seen.")
    c1, c2 = st.columns(2)
    c1.button("Previous", key="btn_prev_end", shortcut="K", on_click=act_move, args=(-1,), disabled=not queue)
    c2.button("Undo", key="btn_undo_end", shortcut="Z", on_click=act_undo, disabled=not ss["undo"])
    if ss["source"][0] == "round":
        loop_ui(ctx)


@st.cache_resource
def payload_cache() -> dict:
    """Recent viewer payloads shared by the sessions of this server (and filled ahead by :func:`prefetch`)."""
    return {"lock": threading.Lock(), "items": {}}


def viewer_payload(
    real: str,
    mtime: int,
    box: tuple | None,
    level,
    width,
    map_real: str | None,
    map_mtime: int,
    reviewer: str,
    invert: bool = False,
) -> dict:
    """What the viewer component is sent for one candidate (cached: moving back or on is free).

    A view-sized 8-bit rendering (never the original of a large or 16-bit
    image), the score map's colours, the outline of its hot region and a
    full-resolution crop around its peak.
    """
    cache = payload_cache()
    key = (real, mtime, box, level, width, map_real, map_mtime, reviewer, invert)
    with cache["lock"]:
        hit = cache["items"].pop(key, None)
        if hit is not None:
            cache["items"][key] = hit  # most recent last
            return hit
    out = _viewer_payload(real, mtime, box, level, width, map_real, map_mtime, reviewer, invert)
    with cache["lock"]:
        cache["items"][key] = out
        while len(cache["items"]) > 48:
            cache["items"].pop(next(iter(cache["items"])))
    return out


def _viewer_payload(real, mtime, box, level, width, map_real, map_mtime, reviewer, invert=False) -> dict:
    raw = load_image(real, mtime)
    if box is not None:
        y, x, h, w = box
        raw = raw[y : y + h, x : x + w]
    picture = rv.display_image(raw, level, width, invert=invert)
    h, w = picture.shape[:2]
    view, scale = rv.view_rendering(picture, VIEW_MAX_SIDE)
    big = view.shape[0] * view.shape[1] > 1_000_000
    out = {"w": w, "h": h, "scale": scale, "img": png_url(view, quality=90 if big else None), "reviewer": reviewer}
    if map_real:
        smap = load_image(map_real, map_mtime)
        smap = smap if smap.ndim == 2 else smap[:, :, 0]
        hot = rv.hot_region(smap, (h, w))
        spots = []
        for region in hot["regions"][:HOT_SPOTS] or [{"peak": hot["peak"]}]:
            crop, (x0, y0) = rv.crop_around(picture, region["peak"], HOT_CROP)
            spots.append(
                {
                    "peak": region["peak"],
                    "crop": png_url(crop),
                    "crop_xy": [x0, y0],
                    "crop_size": [int(crop.shape[1]), int(crop.shape[0])],
                }
            )
        out.update(
            contours=hot["contours"],
            heat=png_url(rv.heat_colours(smap, smap.shape), quality=85),  # a smooth colour map: JPEG is exact enough
            spots=spots,
            peak=spots[0]["peak"],
        )
    return out


def tile_box(store: Store, item: rv.Item) -> tuple | None:
    """``(y, x, h, w)`` of a tile item, None for a whole image."""
    if item.tile < 0:
        return None
    for idx, y, x, h, w in store.tiles(item.image_id):
        if idx == item.tile:
            return (int(y), int(x), int(h), int(w))
    return None


def act_opacity() -> None:
    """Remember the overlay opacity for this reviewer (in the catalogue)."""
    ss = st.session_state
    rv.set_pref(ss["store"], ss["reviewer"], "opacity", float(ss["opacity"]))


def queue_view(ctx: Ctx) -> None:
    """One candidate at a time: verdict bar, zoomable image with the hot region, why, neighbours."""
    ss = st.session_state
    queue = current_queue(ctx.store, ctx.reviewer, ctx.rule, ctx.show_all)
    item, raw = advance_to_readable(ctx, queue)
    status = queue_header(ctx, queue, item, later=True)  # filled after the viewer: the picture is sent early
    if item is None:
        with status:
            queue_status(ctx)
        empty_queue(ctx, queue)
        return
    categories = list(ctx.cfg.review.categories)
    bar = st.container(key="verdict_bar")  # above the image; filled once the image is on its way
    scores = rv.item_scores(ctx.store, item)
    maps = {s["scorer"]: s["map_path"] for s in scores if s["map_path"]}
    which = ss.get("map_scorer") if ss.get("map_scorer") in maps else next(iter(maps), None)
    map_real, map_mtime = None, 0
    if which:
        try:
            map_real = rv.check_path(maps[which], [ctx.maps_root])
            map_mtime = os.stat(map_real).st_mtime_ns
        except (rv.PathOutsideRoots, OSError):
            map_real = None
        if "opacity" not in ss:
            ss["opacity"] = float(rv.get_pref(ctx.store, ctx.reviewer, "opacity", 0.0))
    stored = rv.stored_window(ctx.store, item.image_id)  # the file's own window (DICOM), if any
    level, width = window_of(raw, stored)
    invert = bool(stored and stored["invert"])
    left, right = st.columns([3, 2])
    with left:
        real = rv.check_path(item.path, ctx.roots)
        data = viewer_payload(
            real,
            os.stat(real).st_mtime_ns,
            tile_box(ctx.store, item),
            level,
            width,
            map_real,
            map_mtime,
            ctx.reviewer,
            invert,
        )
        opacity = float(ss.get("opacity", 0.0)) if map_real else 0.0
        data = {**data, "opacity": opacity, "name": os.path.basename(item.path)}
        ui_components()["viewer"](data=data, key="viewer")
        st.caption(item.path)
    verdict_ui(item, categories, bar)
    with status:
        queue_status(ctx)
    with left:
        if maps:
            m1, m2 = st.columns(2) if len(maps) > 1 else (None, st.container())
            if m1:
                m1.selectbox("Score map", list(maps), key="map_scorer")
            m2.slider(
                "Map tint",
                0.0,
                1.0,
                step=0.05,
                key="opacity",
                on_change=act_opacity,
                help="opacity of the score map's colours over the image (remembered for you); the outline of the "
                "hot region is drawn whenever the overlay is on (key O)",
            )
            if map_real is None:
                st.caption(f"score map of {which} not available")
        window_ui(raw, stored)
        paint_ui(ctx.store, item, rv.display_image(raw, level, width, invert=invert))
    with right:
        category_note_ui(categories)
        details_ui(ctx, item)
    prefetch(ctx, queue, ss["pos"] + 1, (level, width) if ss.get("manual_window") else None)


def window_of(raw: np.ndarray, stored: dict | None = None) -> tuple[float | None, float | None]:
    """The level / width :func:`window_ui` will give, read from the session before its sliders are drawn.

    The sliders' values when the window is manual; else the file's own window
    (``stored``, :func:`mining.review.stored_window`) or (None, None), the automatic one.
    """
    ss = st.session_state
    if not ss.get("manual_window") or ss.get("level") is None or ss.get("width") is None:
        return (stored["level"], stored["width"]) if stored is not None else (None, None)
    return float(ss["level"]), float(ss["width"])


def prefetch(ctx: Ctx, queue: list[rv.Item], pos: int, manual: tuple | None) -> None:
    """Prepare the next candidate's viewer data in the background, so the next key finds it ready.

    ``manual``: the manual window's (level, width), else None (the next image's own or automatic window).
    """
    if pos >= len(queue):
        return
    item = queue[pos]
    scorer = st.session_state.get("map_scorer")
    threading.Thread(
        target=_prefetch,
        args=(ctx.store.path, item, ctx.roots, ctx.maps_root, scorer, manual, ctx.reviewer),
        daemon=True,
    ).start()


def _prefetch(db: str, item: rv.Item, roots, maps_root, scorer, manual, reviewer) -> None:
    try:
        real = rv.check_path(item.path, roots)
        map_real, map_mtime = None, 0
        with Store(db, readonly=True) as store:
            scores = rv.item_scores(store, item)
            box = tile_box(store, item)
            stored = rv.stored_window(store, item.image_id)
        level, width = manual or ((stored["level"], stored["width"]) if stored else (None, None))
        for s in scores:
            if s["map_path"] and s["scorer"] == (scorer or s["scorer"]):
                map_real = rv.check_path(s["map_path"], [maps_root])
                map_mtime = os.stat(map_real).st_mtime_ns
                break
        invert = bool(stored and stored["invert"])
        viewer_payload(real, os.stat(real).st_mtime_ns, box, level, width, map_real, map_mtime, reviewer, invert)
    except Exception as err:  # a prefetch never breaks the page; the item shows its own message in its turn
        logger.debug("prefetch of %s failed: %s", item.path, err)


def grid_view(ctx: Ctx) -> None:
    """Thumbnails of the next page of the queue; a verdict only where one is chosen, earlier votes shown."""
    ss = st.session_state
    queue = current_queue(ctx.store, ctx.reviewer, ctx.rule, ctx.show_all)
    size = ctx.cfg.review.grid_size
    seen = ss.setdefault("seen", set())
    i = ss["pos"]
    while i < min(len(queue), ss["pos"] + size):  # decided by others, or being looked at: not offered again
        it = queue[i]
        if it.key not in seen:
            ok, why = rv.needs_vote(ctx.store, it, ctx.reviewer, ctx.rule, include_done=ctx.show_all)
            if not ok:
                deferred = ss.setdefault("deferred", set())
                if "looking at it" in why and it.key not in deferred:
                    deferred.add(it.key)
                    queue.append(it)  # back of the queue: their claim may lapse
                ss["passed"].append(f"passed over {os.path.basename(it.path)}: {why}")
                del queue[i]
                continue
            seen.add(it.key)
        i += 1
    queue_header(ctx, queue)
    page = queue[ss["pos"] : ss["pos"] + size]
    if not page:
        empty_queue(ctx, queue)
        return
    earlier = rv.earlier_votes(ctx.store, page)
    st.caption(
        "Mark a thumbnail ✓ confirm · ✗ reject · ? unsure. Unmarked thumbnails are skipped: "
        "the submit button (Enter) records only the verdicts you chose."
    )
    ncol = 3
    for row in range(0, len(page), ncol):
        cols = st.columns(ncol)
        for col, it in zip(cols, page[row : row + ncol], strict=False):
            with col:
                try:
                    pic = rv.thumbnail(rv.display_image(picture_of(ctx.store, it, ctx.roots)), 200, square=True)
                    st.image(pic, caption=f"#{it.rank or '-'} {os.path.basename(it.path)}", width="stretch")
                except (UnreadableImage, rv.PathOutsideRoots) as err:
                    st.warning(f"{os.path.basename(it.path)}: {getattr(err, 'reason', 'refused')}")
                st.segmented_control(
                    "verdict",
                    list(VERDICT_KEYS),
                    key=grid_key(it),
                    format_func=GRID_LABELS.get,
                    label_visibility="collapsed",
                )
                votes = earlier.get(it.key)
                if votes:
                    st.caption("earlier: " + "; ".join(f"{v.reviewer} {v.verdict}" for v in votes))
    chosen = sum(1 for it in page if ss.get(grid_key(it)))
    c1, c2 = st.columns(2)
    c1.button(
        f"Submit {chosen} verdict(s), next page",
        key="grid_submit",
        shortcut="Enter",
        type="primary",
        on_click=act_grid,
        args=(page, ss["pos"]),
    )
    c2.button("Undo", key="btn_undo_grid", shortcut="Z", on_click=act_undo, disabled=not ss["undo"])


def map_view(ctx: Ctx) -> None:
    """The embedding map coloured by score or verdict; a box or lasso selection becomes a queue."""
    n_votes = ctx.store.query("SELECT COUNT(*) FROM reviews")[0][0]
    methods = [r[0] for r in ctx.store.query("SELECT DISTINCT method FROM map_coords WHERE tile = -1")]
    if not methods:
        st.info(
            "This catalogue has no 2-D map yet (the map_coords table is empty): run a scorer that writes "
            "embeddings and a UMAP / t-SNE map."
        )
        return
    c1, c2 = st.columns(2)
    method = c1.selectbox("Map", methods, key="map_method") if len(methods) > 1 else methods[0]
    colour = c2.radio("Colour by", ["score", "verdict"], horizontal=True, key="map_colour")
    r = ctx.rule
    pts = load_map(ctx.store.path, int(n_votes), (r.agree, r.on_disagreement, r.max_votes), method)
    import plotly.express as px

    data = {
        "x": [p["x"] for p in pts],
        "y": [p["y"] for p in pts],
        "score": [p["score"] for p in pts],
        "verdict": [p["status"] for p in pts],
        "image_id": [p["image_id"] for p in pts],
    }
    fig = px.scatter(
        data,
        x="x",
        y="y",
        color="score" if colour == "score" else "verdict",
        custom_data=["image_id"],
        hover_data=["image_id", "score", "verdict"],
        color_continuous_scale="Inferno",
    )
    fig.update_traces(marker={"size": 6})
    fig.update_layout(dragmode="lasso", height=560, margin={"l": 10, "r": 10, "t": 30, "b": 10})
    event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("box", "lasso"))
    chosen = selected_ids(event)
    st.caption(f"{len(pts)} images; select with the box or lasso tool. Selected: {len(chosen)}")
    st.button(
        f"Review the {len(chosen)} selected",
        key="queue_map",
        disabled=not chosen,
        on_click=act_queue,
        args=(chosen, f"map selection ({len(chosen)})"),
    )


def selected_ids(event) -> list[int]:
    """Image ids of the points selected on the map (empty when none)."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    out = []
    for p in points:
        cd = p.get("customdata")
        if cd:
            out.append(int(cd[0] if isinstance(cd, list | tuple) else cd))
    return list(dict.fromkeys(out))


def disagreements_view(ctx: Ctx) -> None:
    """Images whose reviewers disagree, with a button to review them."""
    rows = rv.disagreements(ctx.store, ctx.rule)
    r = ctx.rule
    st.caption(
        f"rule: {r.agree} agreeing vote(s) decide; on disagreement: {r.on_disagreement}"
        + (f" (up to {r.max_votes} votes)" if r.on_disagreement == "third_vote" else "")
    )
    if not rows:
        st.info("No disagreements.")
        return
    st.dataframe(rows, hide_index=True, width="stretch")
    waiting = [x["image_id"] for x in rows if x["status"] == "disagreement"]
    st.button(
        f"Review the {len(waiting)} waiting for a tie-break",
        key="queue_disagree",
        disabled=not waiting,
        on_click=act_queue,
        args=(waiting, "disagreements"),
    )


def progress_view(ctx: Ctx) -> None:
    """Counts, hits per reviewed per round, and the learn button."""
    p = rv.progress(ctx.store, ctx.rule)
    c = st.columns(4)
    c[0].metric(f"Candidates (round {p['round']})", p["candidates"])
    c[1].metric("Images reviewed", p["reviewed"])
    c[2].metric("Votes", p["votes"])
    c[3].metric("Confirmed", p["confirmed"])
    if p["by_status"]:
        st.caption(" · ".join(f"{k}: {v}" for k, v in sorted(p["by_status"].items())))
    if p["curves"]:
        import plotly.express as px

        data = {k: [pt[k] for pt in p["curves"]] for k in ("round", "reviewed", "hits")}
        data["round"] = [f"round {r}" for r in data["round"]]
        fig = px.line(
            data,
            x="reviewed",
            y="hits",
            color="round",
            markers=True,
            labels={"reviewed": "images reviewed", "hits": "confirmed (hits)"},
        )
        fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 30, "b": 10})
        st.plotly_chart(fig, key="hits_chart")
    else:
        st.info("No verdicts on candidates yet.")
    learn_ui(ctx)


@st.cache_resource
def learn_jobs() -> dict:
    """Background jobs (learn, rank), keyed by ``(catalogue, kind)``, shared by all sessions of this server."""
    return {}


@dataclass
class LearnJob:
    """A background job of the loop (learn or rank) and its progress."""

    thread: threading.Thread | None = None
    started: float = 0.0
    done: int = 0
    total: int = 0
    message: str = ""
    result: object = None
    error: str | None = None
    finished: float | None = None
    kind: str = "learn"


def learn_function():
    """``mining.learn.learn`` when it exists (issue 5), else None."""
    if importlib.util.find_spec("mining.learn") is None:
        return None
    fn = getattr(importlib.import_module("mining.learn"), "learn", None)
    return fn if callable(fn) else None


def rank_round(store: Store, *, config=None, progress=None) -> str:
    """Rank the next round as ``raremine rank`` does (the config's ``rank:`` and ``learn:`` sections)."""
    from mining.rank import rank

    cfg = config if config is not None else load_config(None)
    if progress:
        progress("choosing the candidates", 0, 1)
    r = rank(
        store,
        strategy=cfg.rank.strategy,
        n=cfg.rank.n,
        weights=cfg.rank.weights,
        primary=cfg.rank.primary,
        random_state=0,
        per_category=cfg.learn.per_category,
        cold_start=cfg.learn.cold_start,
    )
    if progress:
        progress("done", 1, 1)
    return f"round {r}: {len(store.candidates(r))} candidates"


def _run_learn(job: LearnJob, fn, db: str, cfg) -> None:
    def cb(*args) -> None:
        nums = [a for a in args if isinstance(a, int | float)]
        if len(nums) >= 2:
            job.done, job.total = int(nums[-2]), int(nums[-1])
        texts = [a for a in args if isinstance(a, str)]
        if texts:
            job.message = texts[0]

    try:
        params = inspect.signature(fn).parameters
        kwargs = {}
        if "progress" in params:
            kwargs["progress"] = cb
        if "config" in params:
            kwargs["config"] = cfg
        with Store(db) as store:
            job.result = fn(store, **kwargs)
    except Exception as err:  # shown on the page; the thread must not die silently
        job.error = f"{type(err).__name__}: {err}"
    finally:
        job.finished = time.time()


def job_running(db: str, kind: str) -> bool:
    """Whether a ``kind`` job (learn, rank) runs on this catalogue now."""
    job = learn_jobs().get((db, kind))
    return job is not None and job.finished is None


def loop_ui(ctx: Ctx) -> None:
    """The loop from the app: rank the next round and learn from the verdicts, in the background, with progress."""
    st.subheader("Next round")
    fn = learn_function()
    busy = job_running(ctx.store.path, "learn") or job_running(ctx.store.path, "rank")
    c1, c2 = st.columns(2)
    c1.button(
        "Rank the next round",
        key="rank_next",
        disabled=busy,
        on_click=start_job,
        args=("rank", rank_round, ctx),
        help="as `raremine rank`: the config's strategy and round size; the queue shows the new round when done",
    )
    c2.button(
        "Learn from the verdicts",
        key="learn",
        disabled=busy or fn is None,
        on_click=start_job,
        args=("learn", fn, ctx),
        help="as `raremine learn`: retrain the re-ranker (and the pixel model); rank afterwards to use it",
    )
    if fn is None:
        st.info("The learn step is not available yet (mining.learn.learn is not built).")
    st.session_state["jobs_drawn_busy"] = busy
    jobs_status(ctx.store.path)


def learn_ui(ctx: Ctx) -> None:
    """The learn and rank buttons (kept under its old name for the Progress view)."""
    loop_ui(ctx)


def start_job(kind: str, fn, ctx: Ctx) -> None:
    """Start a learn or rank job in a background thread unless one of them runs on this catalogue."""
    jobs = learn_jobs()
    db = ctx.store.path
    if job_running(db, "learn") or job_running(db, "rank"):
        return
    job = jobs[(db, kind)] = LearnJob(started=time.time(), kind=kind)
    job.thread = threading.Thread(target=_run_learn, args=(job, fn, db, ctx.cfg), daemon=True)
    job.thread.start()
    st.session_state["jobs_drawn_busy"] = True


def start_learn(fn, ctx: Ctx) -> None:
    """Start the learn job in a background thread unless a job runs on this catalogue."""
    start_job("learn", fn, ctx)


@st.fragment(run_every=1.0)
def jobs_status(db: str) -> None:
    """Progress of the learn and rank jobs, refreshed every second; the page is redrawn when one ends."""
    ss = st.session_state
    busy = False
    for kind in ("rank", "learn"):
        job = learn_jobs().get((db, kind))
        if job is None:
            continue
        if job.finished is None:
            busy = True
            frac = job.done / job.total if job.total else 0.0
            st.progress(min(frac, 1.0), text=f"{kind}: {job.message or 'working'}… ({time.time() - job.started:.0f}s)")
        elif job.error:
            st.error(f"{kind} failed: {job.error}")
        else:
            st.success(f"{kind} finished in {job.finished - job.started:.1f}s: {summary(job.result)}")
            if kind == "learn":
                with st.expander("learn report"):
                    res = job.result
                    st.json(dataclasses.asdict(res) if dataclasses.is_dataclass(res) else {"result": str(res)})
    if ss.get("jobs_drawn_busy") and not busy:
        # the buttons were drawn disabled (and the queue may be of an older round): draw the page again
        ss["jobs_drawn_busy"] = False
        ss["queue"] = None
        st.rerun(scope="app")


def summary(result) -> str:
    """A line about a job's result."""
    if isinstance(result, str):
        return result
    n = getattr(result, "n_labelled", None)
    return f"{n} labelled images; rank the next round to use it" if n is not None else "done"


def export_view(ctx: Ctx) -> None:
    """Confirmed labels as a CSV metadata table."""
    verdicts = st.multiselect(
        "Decided verdicts to export",
        ["confirm", "reject", "unsure", "neutral"],
        default=["confirm"],
        key="export_verdicts",
    )
    if not verdicts:
        st.warning("choose at least one verdict")
        return
    fd, tmp = tempfile.mkstemp(suffix=".csv")
    os.close(fd)
    try:
        n = rv.export_labels(ctx.store, tmp, ctx.rule, verdicts=verdicts)
        with open(tmp, "rb") as fh:
            data = fh.read()
    finally:
        os.unlink(tmp)
    st.caption(f"{n} rows: path, tile, label, category, verdict, votes, mask_path")
    st.caption(
        "Labels follow the consensus rule, as learning and `raremine export --what labels` do; "
        + rv.describe_left_out(rv.left_out_counts(rv.image_labels(ctx.store, ctx.rule, tiles=True)))
    )
    st.download_button("Download labels.csv", data, file_name="labels.csv", mime="text/csv", key="export_dl")
    folder = os.path.dirname(os.path.abspath(ctx.store.path))
    default = os.path.splitext(os.path.basename(ctx.store.path))[0] + ".labels.csv"
    name = st.text_input(f"or write it beside the catalogue, in {folder}", value=default, key="export_path")
    if st.button("Write CSV", key="export_write"):
        out = os.path.join(folder, name)
        if os.path.dirname(os.path.realpath(out)) != os.path.realpath(folder) or not name.endswith(".csv"):
            st.error(f"{name!r} must be a plain .csv file name (it is written in {folder})")
            return
        try:
            n = rv.export_labels(ctx.store, out, ctx.rule, verdicts=verdicts)
        except (OSError, ValueError) as err:
            st.error(f"could not write {out!r}: {err}")
        else:
            st.success(f"wrote {n} rows to {out}")


PAGES = {
    "Queue": queue_view,
    "Grid": grid_view,
    "Map": map_view,
    "Disagreements": disagreements_view,
    "Progress": progress_view,
    "Export": export_view,
}


def main(argv: list[str] | None = None) -> None:
    """Build the page: input checks, sidebar navigation, then the chosen view."""
    st.set_page_config(page_title="raremine review", layout="wide")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_cfg(args.config)
    except ConfigError as err:
        st.error(str(err))
        st.stop()
    store = open_store(args.db)
    init_state(st.query_params.get("reviewer", "").strip())
    ss = st.session_state
    reviewer = ss.get("reviewer") or ""
    if not reviewer:
        sidebar_ui(cfg)
        keys_ui()
        st.warning("Enter your name as reviewer in the sidebar to start (once); every vote is stored under it.")
        st.stop()
    if "roots" not in ss:
        ss["roots"] = (rv.archive_roots(store), rv.maps_root(store))
    roots, maps_root = ss["roots"]
    ctx = Ctx(store, cfg, rule_of(cfg), reviewer, bool(ss.get("show_all")), roots, maps_root)
    ss["rule"] = ctx.rule
    PAGES[ss.get("view") or VIEWS[0]](ctx)
    # the sidebar (its widgets' values are read from the session state above) and the keyboard help are
    # drawn after the page, so that the candidate reaches the browser first
    sidebar_ui(cfg)
    keys_ui()


if __name__ == "__main__":
    main()
