"""The Export screen: the labels as files."""

from __future__ import annotations

import os
import tempfile

import streamlit as st

from mining import review as rv
from raremine.screens.state import Ctx


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
