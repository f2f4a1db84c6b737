"""The Map screen: the embedding map; box or lasso selections become a review queue."""

from __future__ import annotations

import streamlit as st

from raremine.screens.state import Ctx, act_queue, load_map


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
