"""The Progress screen: counts per round and status, and the loop's next step."""

from __future__ import annotations

import streamlit as st

from mining import review as rv
from raremine.screens.loop import learn_ui
from raremine.screens.state import Ctx


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
