"""The Queue screen: one candidate at a time in the viewer, verdict keys, window, details, painting."""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import streamlit as st

from mining import review as rv
from mining.catalogue.store import Store
from mining.io import UnreadableImage
from raremine.screens.loop import loop_ui, step_ahead, step_error, step_ui
from raremine.screens.state import (
    HOT_CROP,
    HOT_SPOTS,
    PAINT_COLOURS,
    VERDICT_KEYS,
    VIEW_MAX_SIDE,
    Ctx,
    act_category,
    act_move,
    act_queue,
    act_refresh_queue,
    act_round_queue,
    act_undo,
    act_verdict,
    current_queue,
    embedding_count,
    load_image,
    load_raw_embeddings,
    picture_of,
    png_url,
    ui_components,
)

logger = logging.getLogger(__name__)


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
    src = f"round {ss.get('queue_round') or ctx.store.current_round()}" if kind == "round" else payload[0]
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
        from mining.ranking.rank import round_target

        done, total = round_progress(ctx)
        target = round_target(ctx.store)
        more = f" (of {target}: the rest are chosen as your verdicts come in)" if target > total else ""
        c1.progress(done / total if total else 0.0, text=f"round: {done} of {total} candidates decided{more}")
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
        mid = ss["pos"] < len(ss["queue"] or [])  # (at the end of the queue the loop's panel says it)
        err = step_error(ctx.store.path, ss.get("queue_round")) if kind == "round" and mid else None
        if err:
            st.warning(f"Choosing the next candidates failed: {err}; you can go on voting.")
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


def empty_queue(ctx: Ctx, queue: list[rv.Item], step: str | None = None) -> None:
    """The end of a reviewer's queue: the round's next step on its way, or done; rank / learn below.

    ``step``: what :func:`raremine.screens.loop.step_ahead` said about the round's next step.
    """
    ss = st.session_state
    if step in ("running", "waiting"):
        step_ui(ctx, step)
    elif not queue:
        if ctx.store.current_round() == 0 and ss["source"][0] == "round":
            st.info("No candidates in this catalogue yet: rank the first round below (or `raremine rank`).")
        else:
            st.info("Nothing to review here: every item in this queue has your vote or a decision.")
    else:
        st.success(f"End of the queue: all {len(queue)} items seen.")
    if step in ("failed", "stalled"):
        step_ui(ctx, step)
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
    step = step_ahead(ctx, queue)  # the round's next step, in the background, when few candidates are left
    status = queue_header(ctx, queue, item, later=True)  # filled after the viewer: the picture is sent early
    if item is None:
        with status:
            queue_status(ctx)
        empty_queue(ctx, queue, step)
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
