"""The Grid screen: a page of thumbnails marked at once."""

from __future__ import annotations

import os

import streamlit as st

from mining import review as rv
from mining.io import UnreadableImage
from raremine.screens.loop import step_ahead
from raremine.screens.queue import empty_queue, queue_header
from raremine.screens.state import (
    GRID_LABELS,
    VERDICT_KEYS,
    Ctx,
    act_grid,
    act_undo,
    current_queue,
    grid_key,
    picture_of,
)


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
    step = step_ahead(ctx, queue)  # a submitted page counts as verdicts: the round's next step when few are left
    queue_header(ctx, queue)
    page = queue[ss["pos"] : ss["pos"] + size]
    if not page:
        empty_queue(ctx, queue, step)
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
