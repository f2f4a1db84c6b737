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
import dataclasses
import importlib
import importlib.util
import inspect
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from mining import review as rv
from mining.config import ConfigError, load_config
from mining.io import UnreadableImage, read_image
from mining.store import SchemaVersionError, Store

VIEWS = ("Queue", "Grid", "Map", "Disagreements", "Progress", "Export")
VERDICT_KEYS = {"confirm": "Y", "reject": "N", "unsure": "U"}
PAINT_COLOURS = {"defect": "#ff0000", "background": "#00ff00"}
MAX_IMAGE_HEIGHT = 560  # px: the whole candidate fits on a laptop screen beside the verdict buttons


# -- input ------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    """``--db`` and ``--config`` after ``--`` (env ``RAREMINE_DB`` / ``RAREMINE_CONFIG`` as fallbacks)."""
    p = argparse.ArgumentParser(prog="app.py", add_help=False)
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
        "note": "",
        "category": None,
        "masks": {},
        "view": "Queue",
    }
    for k, v in defaults.items():
        if k not in st.session_state:
            st.session_state[k] = v


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
    ss["undo"].append(([rid], ss["pos"]))
    ss["pos"] += 1
    ss["note"] = ""
    ss["last_action"] = f"{verdict} #{rid}"


def act_move(step: int) -> None:
    """Go to the next (+1) or previous (-1) item."""
    ss = st.session_state
    n = len(ss["queue"] or [])
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


def act_grid(items: list[rv.Item], default: str, pos: int) -> None:
    """Store the verdicts chosen on a grid page and go to the next page."""
    ss = st.session_state
    if ss["pos"] != pos:
        ss["last_action"] = "ignored a repeated submit"
        return
    ids = []
    for it in items:
        verdict = ss.get(grid_key(it)) or (default if default != "skip" else None)
        if verdict:
            cat = ss.get("category") if verdict == "confirm" else None
            ids.append(rv.record_verdict(ss["store"], it, ss["reviewer"], verdict, category=cat))
        ss.pop(grid_key(it), None)
    ss["undo"].append((ids, ss["pos"]))
    ss["pos"] += len(items)
    ss["last_action"] = f"grid: {len(ids)} verdicts"


def grid_key(item: rv.Item) -> str:
    return f"grid_{item.image_id}_{item.tile}"


# -- widgets ------------------------------------------------------------------------------------
def sidebar_ui(cfg) -> tuple[str, str, bool]:
    """Reviewer name, view and 'show reviewed too'; returns them."""
    sb = st.sidebar
    sb.title("raremine review")
    reviewer = sb.text_input("Reviewer", key="reviewer", help="your name; every vote is stored under it").strip()
    view = sb.radio("View", VIEWS, key="view")
    show_all = sb.checkbox("Show items I already voted on", key="show_all")
    sb.caption("Keys: Y confirm · N reject · U unsure · 1–9 category · J next · K previous · Z undo")
    return reviewer, view, show_all


def rule_of(cfg) -> rv.ConsensusRule:
    rc = cfg.review
    return rv.ConsensusRule(agree=rc.agree, on_disagreement=rc.on_disagreement, max_votes=rc.max_votes)


def current_queue(store: Store, reviewer: str, rule: rv.ConsensusRule, show_all: bool) -> list[rv.Item]:
    """The session's queue, built once per reviewer / source and kept stable while reviewing."""
    ss = st.session_state
    signature = (reviewer, ss["source"], show_all)
    if ss["queue"] is None or ss["queue_for"] != signature:
        kind, payload = ss["source"]
        items = rv.round_items(store) if kind == "round" else rv.image_items(store, payload[1])
        ss["queue"] = rv.reviewer_queue(store, items, reviewer, rule, include_done=show_all)
        ss["queue_for"] = signature
        ss["pos"] = 0
        ss["undo"] = []
    return ss["queue"]


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


def verdict_ui(item: rv.Item, categories: list[str]) -> None:
    """Verdict, category, note, navigation and undo buttons with their keyboard shortcuts."""
    ss = st.session_state
    if ss.get("category") not in categories:
        ss["category"] = categories[0] if categories else None
    cols = st.columns(3)
    for col, (verdict, key) in zip(cols, VERDICT_KEYS.items(), strict=True):
        col.button(
            f"{verdict.capitalize()}",
            key=f"btn_{verdict}",
            shortcut=key,
            on_click=act_verdict,
            args=(verdict, item, ss["pos"]),
            type="primary" if verdict == "confirm" else "secondary",
            width="stretch",
        )
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
    st.text_input("Note", key="note", placeholder="optional; stored with the vote")
    n1, n2, n3 = st.columns(3)
    n1.button("Previous", key="btn_prev", shortcut="K", on_click=act_move, args=(-1,), width="stretch")
    n2.button("Next", key="btn_next", shortcut="J", on_click=act_move, args=(1,), width="stretch")
    n3.button("Undo", key="btn_undo", shortcut="Z", on_click=act_undo, width="stretch", disabled=not ss["undo"])


def details_ui(store: Store, item: rv.Item, scores: list[dict], roots: list[str]) -> None:
    """Scores, why it was picked, neighbours, path and metadata."""
    st.markdown(f"**{os.path.basename(item.path)}**" + (f" · tile {item.tile}" if item.tile >= 0 else ""))
    why = item.why or {}
    pick = why.get("strategy") or item.strategy or "-"
    line = f"picked by **{pick}**"
    if item.rank is not None:
        line += f" · rank {item.rank}"
    if item.score is not None:
        line += f" · fused score {item.score:.3f}"
    st.caption(line)
    if scores:  # a markdown table: much lighter to draw than a data grid on every candidate
        pct = why.get("scorers") or {}
        rows = "".join(f"| {s['scorer']} | {s['score']:.4g} | {_fmt(pct.get(s['scorer']))} |\n" for s in scores)
        st.markdown("| scorer | score | percentile |\n|---|---:|---:|\n" + rows)
    with st.expander("Path and metadata"):
        st.code(item.path, language=None)
        st.json(rv.image_meta(store, item.image_id), expanded=False)
        if why:
            st.json(why, expanded=False)
    neighbours_ui(store, item, roots)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def neighbours_ui(store: Store, item: rv.Item, roots: list[str]) -> None:
    """'More like this': nearest neighbours in the embedding table, when there is one (drawn on demand)."""
    ss = st.session_state
    if "n_embeddings" not in ss:
        ss["n_embeddings"] = int(store.query("SELECT COUNT(*) FROM embeddings WHERE tile = -1")[0][0])
    if not ss["n_embeddings"] or not st.toggle("More like this", key="show_neighbours"):
        return
    name, ids, vecs = load_embeddings(store.path, ss["n_embeddings"])
    near = rv.neighbours(ids, vecs, item.image_id, k=6)
    if not near:
        st.caption("no embedding for this image")
        return
    with st.container(border=True):
        st.caption(f"nearest by {name} embedding (cosine similarity)")
        others = {it.image_id: it for it in rv.image_items(store, [i for i, _ in near])}
        cols = st.columns(3)
        for j, (iid, sim) in enumerate(near):
            it = others.get(iid)
            if it is None:
                continue
            try:
                pic = rv.thumbnail(rv.display_image(picture_of(store, it, roots)), 120)
                cols[j % 3].image(pic, caption=f"{os.path.basename(it.path)} ({sim:.2f})")
            except (rv.PathOutsideRoots, UnreadableImage) as err:
                cols[j % 3].caption(f"{os.path.basename(it.path)}: {err}")
        st.button(
            "Review these",
            key="queue_neighbours",
            on_click=act_queue,
            args=([i for i, _ in near], f"like {os.path.basename(item.path)}"),
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
    """The current item and its pixels, skipping (with a message) images that cannot be shown."""
    ss = st.session_state
    while ss["pos"] < len(queue):
        item = queue[ss["pos"]]
        try:
            return item, picture_of(ctx.store, item, ctx.roots)
        except (UnreadableImage, rv.PathOutsideRoots) as err:
            ss["skipped"].append(
                f"skipped {item.path}: {getattr(err, 'reason', 'refused')} — {getattr(err, 'detail', err)}"
            )
            ss["pos"] += 1
    return None, None


def queue_header(ctx: Ctx, queue: list[rv.Item], item: rv.Item | None = None) -> None:
    ss = st.session_state
    kind, payload = ss["source"]
    src = f"round {ctx.store.current_round()}" if kind == "round" else payload[0]
    left = max(len(queue) - ss["pos"], 0)
    st.markdown(
        f"**{src}** · item {min(ss['pos'] + 1, len(queue))} of {len(queue)} · {left} left · "
        f"reviewer **{ctx.reviewer}**" + (f" · `{os.path.basename(item.path)}`" if item else "")
    )
    if kind != "round":
        st.button("Back to the round's candidates", on_click=act_round_queue, key="back_round")
    # the same elements on every run: a shifting layout remounts the buttons and can drop a shortcut
    st.caption(f"last: {ss['last_action']}" if ss.get("last_action") else "last: -")
    with st.container():
        for msg in ss["skipped"][-5:]:
            st.warning(msg)


def empty_queue(ctx: Ctx, queue: list[rv.Item]) -> None:
    ss = st.session_state
    if not queue:
        if ctx.store.current_round() == 0 and ss["source"][0] == "round":
            st.info(f"No candidates in this catalogue yet: run `raremine rank --db {ctx.store.path}` first.")
        else:
            st.info("Nothing to review here: every item in this queue has your vote or a decision.")
    else:
        st.success(f"End of the queue: all {len(queue)} items seen.")
    c1, c2 = st.columns(2)
    c1.button("Previous", key="btn_prev_end", shortcut="K", on_click=act_move, args=(-1,), disabled=not queue)
    c2.button("Undo", key="btn_undo_end", shortcut="Z", on_click=act_undo, disabled=not ss["undo"])


def queue_view(ctx: Ctx) -> None:
    """One candidate at a time: image, overlay, scores, verdicts."""
    queue = current_queue(ctx.store, ctx.reviewer, ctx.rule, ctx.show_all)
    item, raw = advance_to_readable(ctx, queue)
    queue_header(ctx, queue, item)
    if item is None:
        empty_queue(ctx, queue)
        return
    scores = rv.item_scores(ctx.store, item)
    left, right = st.columns([3, 2])
    with left:
        stored = rv.stored_window(ctx.store, item.image_id)  # the file's own window (DICOM), if any
        level, width = window_ui(raw, stored)
        picture = rv.display_image(raw, level, width, invert=bool(stored and stored["invert"]))
        maps = {s["scorer"]: s["map_path"] for s in scores if s["map_path"]}
        shown = picture
        if maps:
            m1, m2 = st.columns(2) if len(maps) > 1 else (None, st.container())
            which = m1.selectbox("Score map", list(maps), key="map_scorer") if m1 else next(iter(maps))
            opacity = m2.slider("Overlay opacity", 0.0, 1.0, 0.35, 0.05, key="opacity")
            smap = score_map_of(maps[which], ctx.maps_root)
            if smap is None:
                st.caption(f"score map of {which} not available")
            elif opacity > 0:
                shown = rv.overlay(picture, rv.display_image(smap), opacity)
        h, w = shown.shape[:2]
        st.image(shown, caption=item.path, width=max(120, min(720, round(MAX_IMAGE_HEIGHT * w / h))))
        paint_ui(ctx.store, item, picture)
    with right:
        verdict_ui(item, list(ctx.cfg.review.categories))
        details_ui(ctx.store, item, scores, ctx.roots)


def grid_view(ctx: Ctx) -> None:
    """Thumbnails of the next page of the queue, with a verdict on each."""
    ss = st.session_state
    queue = current_queue(ctx.store, ctx.reviewer, ctx.rule, ctx.show_all)
    queue_header(ctx, queue)
    page = queue[ss["pos"] : ss["pos"] + ctx.cfg.review.grid_size]
    if not page:
        empty_queue(ctx, queue)
        return
    default = st.radio(
        "Unmarked thumbnails",
        ["reject", "skip", "unsure"],
        horizontal=True,
        key="grid_default",
        help="what the submit button records for thumbnails you did not mark",
    )
    ncol = 4
    for row in range(0, len(page), ncol):
        cols = st.columns(ncol)
        for col, it in zip(cols, page[row : row + ncol], strict=False):
            with col:
                try:
                    pic = rv.thumbnail(rv.display_image(picture_of(ctx.store, it, ctx.roots)), 200, square=True)
                    st.image(pic, caption=f"#{it.rank or '-'} {os.path.basename(it.path)}", width="stretch")
                except (UnreadableImage, rv.PathOutsideRoots) as err:
                    st.warning(f"{os.path.basename(it.path)}: {getattr(err, 'reason', 'refused')}")
                st.segmented_control("verdict", list(VERDICT_KEYS), key=grid_key(it), label_visibility="collapsed")
    c1, c2 = st.columns(2)
    c1.button(
        f"Submit page ({len(page)})",
        key="grid_submit",
        shortcut="Enter",
        type="primary",
        on_click=act_grid,
        args=(page, default, ss["pos"]),
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
    """Background learn jobs, one per catalogue, shared by all sessions of this server."""
    return {}


@dataclass
class LearnJob:
    thread: threading.Thread | None = None
    started: float = 0.0
    done: int = 0
    total: int = 0
    message: str = ""
    result: object = None
    error: str | None = None
    finished: float | None = None


def learn_function():
    """``mining.learn.learn`` when it exists (issue 5), else None."""
    if importlib.util.find_spec("mining.learn") is None:
        return None
    fn = getattr(importlib.import_module("mining.learn"), "learn", None)
    return fn if callable(fn) else None


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


def learn_ui(ctx: Ctx) -> None:
    """The learn button: runs the learn step in a background thread and shows its progress."""
    st.subheader("Learn")
    fn = learn_function()
    if fn is None:
        st.info("The learn step is not available yet (mining.learn.learn is not built).")
        return
    jobs = learn_jobs()
    job = jobs.get(ctx.store.path)
    running = job is not None and job.finished is None
    st.button("Learn from the verdicts", key="learn", disabled=running, on_click=start_learn, args=(fn, ctx))
    learn_status(ctx.store.path)


def start_learn(fn, ctx: Ctx) -> None:
    """Start the learn job in a background thread unless one is running for this catalogue."""
    jobs = learn_jobs()
    job = jobs.get(ctx.store.path)
    if job is not None and job.finished is None:
        return
    job = jobs[ctx.store.path] = LearnJob(started=time.time())
    job.thread = threading.Thread(target=_run_learn, args=(job, fn, ctx.store.path, ctx.cfg), daemon=True)
    job.thread.start()


@st.fragment(run_every=1.0)
def learn_status(db: str) -> None:
    """Progress of the learn job, refreshed every second without redrawing the page."""
    job = learn_jobs().get(db)
    if job is None:
        return
    if job.finished is None:
        frac = job.done / job.total if job.total else 0.0
        st.progress(min(frac, 1.0), text=f"learning… {job.message} ({time.time() - job.started:.0f}s)")
    elif job.error:
        st.error(f"learn failed: {job.error}")
    else:
        st.success(f"learn finished in {job.finished - job.started:.1f}s; rank a new round to use it")
        with st.expander("learn report"):
            res = job.result
            st.json(dataclasses.asdict(res) if dataclasses.is_dataclass(res) else {"result": str(res)}, expanded=1)


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
    init_state(st.query_params.get("reviewer", ""))
    reviewer, view, show_all = sidebar_ui(cfg)
    if not reviewer:
        st.warning("Enter your name as reviewer in the sidebar to start; every vote is stored under it.")
        st.stop()
    if "roots" not in st.session_state:
        st.session_state["roots"] = (rv.archive_roots(store), rv.maps_root(store))
    roots, maps_root = st.session_state["roots"]
    ctx = Ctx(store, cfg, rule_of(cfg), reviewer, show_all, roots, maps_root)
    PAGES[view](ctx)


if __name__ == "__main__":
    main()
