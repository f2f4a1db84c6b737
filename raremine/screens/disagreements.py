"""The Disagreements screen: images whose reviewers disagree, queued for a tie-breaking vote."""

from __future__ import annotations

import streamlit as st

from mining import review as rv
from raremine.screens.state import Ctx, act_queue


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
