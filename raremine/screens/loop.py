"""The loop from the app: learn and rank the next round as background jobs, and their progress."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import threading
import time
from dataclasses import dataclass

import streamlit as st

from mining.catalogue.store import Store
from mining.config import load_config
from raremine.screens.state import Ctx


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
    """``mining.learning.learn.learn`` when it exists (issue 5), else None."""
    if importlib.util.find_spec("mining.learning.learn") is None:
        return None
    fn = getattr(importlib.import_module("mining.learning.learn"), "learn", None)
    return fn if callable(fn) else None


def rank_round(store: Store, *, config=None, progress=None) -> str:
    """Rank the next round as ``raremine rank`` does (the config's ``rank:`` and ``learn:`` sections)."""
    from mining.ranking.rank import rank

    cfg = config if config is not None else load_config(None)
    if progress:
        progress("choosing the candidates", 0, 1)
    r = rank(
        store,
        strategy=cfg.rank.strategy,
        n=cfg.rank.n,
        weights=cfg.rank.weights,
        primary=cfg.rank.primary,
        fusion=cfg.rank.fusion,
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
        st.info("The learn step is not available yet (mining.learning.learn.learn is not built).")
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
