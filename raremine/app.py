"""raremine review app: confirm or reject the candidates of a catalogue.

Run it with ``raremine review --db FILE [--port N]`` or
``streamlit run app.py -- --db FILE [--config YAML]``. It binds 127.0.0.1
unless told otherwise (``raremine review --address``).

A thin shell: the queue, consensus, progress and export logic lives in
:mod:`mining.review`; every read and write goes through
:class:`mining.catalogue.store.Store`. Navigation is built in :func:`main`; widgets are
drawn by small ``*_ui()`` functions that return values, one module a screen in
:mod:`raremine.screens` (queue, grid, map, disagreements, progress, export; the
loop's background jobs in :mod:`raremine.screens.loop`).
"""

from __future__ import annotations

import argparse
import os
import sys

import streamlit as st

from mining import review as rv
from mining.catalogue.store import SchemaVersionError, Store
from mining.config import ConfigError, load_config
from raremine.screens.disagreements import disagreements_view
from raremine.screens.export import export_view
from raremine.screens.grid import grid_view
from raremine.screens.map import map_view
from raremine.screens.progress import progress_view
from raremine.screens.queue import queue_view
from raremine.screens.state import VIEWS, Ctx, keys_ui, rule_of


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
