"""The loop from the app: learn and rank the next round as background jobs, and their progress.

A round is chosen step by step (config ``rank.step``): "Rank the next round"
writes its first ``rank.step`` candidates, and when a reviewer's queue of the
round runs low (:data:`STEP_LOOKAHEAD`), a background "step" job adds the
next step, chosen with every verdict so far
(:func:`mining.ranking.rank.extend_round`), as ``raremine simulate --step``
models it. Every session reviewing the round gets the new candidates appended
to its queue (:func:`raremine.screens.state.grow_queue`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import logging
import math
import threading
import time
from dataclasses import dataclass

import streamlit as st

from mining.catalogue.store import Store
from mining.config import load_config
from raremine.screens.state import Ctx

logger = logging.getLogger(__name__)

#: A reviewer's unreviewed candidates left in the round's queue when the next step is started. The step job
#: (re-ranker learn without the pixel model, then the next candidates) takes about as long as one or two verdicts,
#: so two left keeps the reviewer from waiting, while every verdict of a step but the last two (at most half of
#: the step: :func:`step_lookahead`) already steers the next step; those last two steer the step after it.
STEP_LOOKAHEAD = 2
KINDS = ("rank", "learn", "step")  # background jobs, at most one of them at a time per catalogue
STEP_SEED = 7919  # random_state of round r's k-th extension: r - 1 + k * STEP_SEED, as simulate(step=) draws them


@st.cache_resource
def learn_jobs() -> dict:
    """Background jobs (learn, rank, step), keyed by ``(catalogue, kind)``, shared by all sessions of this server."""
    return {}


@st.cache_resource
def jobs_lock() -> threading.Lock:
    """Held while a job is checked for and started: two sessions cannot start two jobs on one catalogue."""
    return threading.Lock()


@dataclass
class LearnJob:
    """A background job of the loop (learn, rank or a round's next step) and its progress."""

    thread: threading.Thread | None = None
    started: float = 0.0
    done: int = 0
    total: int = 0
    message: str = ""
    result: object = None
    error: str | None = None
    finished: float | None = None
    kind: str = "learn"
    sig: tuple | None = None  # a step job: (round, candidates held) when it started


def learn_function():
    """``mining.learning.learn.learn`` when it exists (issue 5), else None."""
    if importlib.util.find_spec("mining.learning.learn") is None:
        return None
    fn = getattr(importlib.import_module("mining.learning.learn"), "learn", None)
    return fn if callable(fn) else None


def round_step(cfg) -> int:
    """Candidates per step of a round chosen from the app (``rank.step``); 0 when written whole."""
    step = int(cfg.rank.step)
    return step if 0 < step < int(cfg.rank.n) else 0


def strategy_kwargs(cfg) -> dict:
    """The ranking arguments ``rank_round`` and ``step_round`` share (the config's ``rank:`` and ``learn:``)."""
    return {
        "strategy": cfg.rank.strategy,
        "weights": cfg.rank.weights,
        "primary": cfg.rank.primary,
        "fusion": cfg.rank.fusion,
        "per_category": cfg.learn.per_category,
        "cold_start": cfg.learn.cold_start,
    }


def rank_round(store: Store, *, config=None, progress=None) -> str:
    """Learn from the verdicts (the re-ranker), then rank the next round as ``raremine rank`` does.

    The re-ranker is retrained first when the catalogue holds a verdict, as
    ``raremine simulate`` does at the end of every round, so that the new
    round can follow it (the pixel model only on "Learn from the verdicts").
    With ``0 < rank.step < rank.n`` only the round's first ``rank.step``
    candidates are written now (target ``rank.n``); :func:`step_round` adds
    the others as the verdicts come in. Else the whole round.
    """
    from mining.ranking.rank import rank

    cfg = config if config is not None else load_config(None)
    step = round_step(cfg)
    fn = learn_function()
    note = ""
    if fn is not None and store.query("SELECT 1 FROM reviews LIMIT 1"):
        if progress:
            progress("learning from the verdicts", 0, 2)
        try:
            fn(store, config=cfg, pixel=False)
        except Exception as err:  # the round is still ranked, with the re-ranker as it was
            logger.warning("re-ranker not retrained before ranking: %s", err)
            note = f" (the re-ranker was not retrained: {type(err).__name__}: {err})"
    if progress:
        progress("choosing the candidates", 1, 2)
    r = rank(
        store,
        n=step or cfg.rank.n,
        target=cfg.rank.n if step else None,
        random_state=store.current_round(),  # round r draws with r - 1, as simulate does
        **strategy_kwargs(cfg),
    )
    if progress:
        progress("done", 2, 2)
    out = f"round {r}: {len(store.candidates(r))} candidates"
    return out + (f", the first step of {cfg.rank.n} ({step} at a time)" if step else "") + note


def step_round(store: Store, *, config=None, progress=None) -> str:
    """The next step of the current round: candidates chosen with every verdict so far.

    As ``simulate(step=)`` does between steps:
    :func:`mining.ranking.rank.extend_round` with ``rank.step`` candidates (the
    rest of the round when ``rank.step`` is 0), never beyond the round's target.
    The verdicts steer it through the adaptive strategy (each ranking judged
    by its own picks, "more like this" from the confirmed images); the
    re-ranker is not retrained between steps (measured: no gain, and it is
    the slower half on a large archive), only by "Learn from the verdicts".
    """
    from mining.ranking.rank import extend_round, round_size, round_target

    cfg = config if config is not None else load_config(None)
    r = store.current_round()
    held = round_size(store, r)
    target = round_target(store, r)
    n = int(cfg.rank.step) or max(target - held, 1)
    if progress:
        progress("choosing the next candidates from the verdicts", 0, 1)
    seed = r - 1 + STEP_SEED * max(math.ceil(held / n), 1)  # a different stream per step
    added = extend_round(store, n=n, random_state=seed, **strategy_kwargs(cfg))
    if progress:
        progress("done", 1, 1)
    logger.info("round %d: %d more candidates (%d of %d)", r, added, held + added, target)
    return f"round {r}: {added} more candidates ({held + added} of {target})"


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
    """Whether a ``kind`` job (learn, rank, step) runs on this catalogue now."""
    job = learn_jobs().get((db, kind))
    return job is not None and job.finished is None


def any_job_running(db: str) -> bool:
    """Whether a learn, rank or step job runs on this catalogue now."""
    return any(job_running(db, kind) for kind in KINDS)


def loop_ui(ctx: Ctx) -> None:
    """The loop from the app: rank the next round and learn from the verdicts, in the background, with progress."""
    st.subheader("Next round")
    fn = learn_function()
    busy = any_job_running(ctx.store.path)
    c1, c2 = st.columns(2)
    c1.button(
        "Rank the next round",
        key="rank_next",
        disabled=busy,
        on_click=start_job,
        args=("rank", rank_round, ctx),
        help="as `raremine rank`, with the config's strategy and round size, but `rank.step` candidates at a "
        "time: the rest follow as your verdicts come in; the queue shows the new round when done",
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
    ss = st.session_state
    # set until jobs_status sees the jobs ended (also one started by a click this run and ended before it)
    ss["jobs_drawn_busy"] = bool(ss.get("jobs_drawn_busy")) or busy
    jobs_status(ctx.store.path)


def learn_ui(ctx: Ctx) -> None:
    """The learn and rank buttons (kept under its old name for the Progress view)."""
    loop_ui(ctx)


def start_job(kind: str, fn, ctx: Ctx, sig: tuple | None = None) -> bool:
    """Start a learn, rank or step job in a background thread unless one of them runs on this catalogue.

    Returns whether it started.
    """
    jobs = learn_jobs()
    db = ctx.store.path
    with jobs_lock():
        if any_job_running(db):
            return False
        job = jobs[(db, kind)] = LearnJob(started=time.time(), kind=kind, sig=sig)
        job.thread = threading.Thread(target=_run_learn, args=(job, fn, db, ctx.cfg), daemon=True)
        job.thread.start()
    st.session_state["jobs_drawn_busy"] = True
    return True


def start_learn(fn, ctx: Ctx) -> None:
    """Start the learn job in a background thread unless a job runs on this catalogue."""
    start_job("learn", fn, ctx)


# -- a round chosen step by step ------------------------------------------------------------------
def step_lookahead(cfg) -> int:
    """Unreviewed candidates left in a reviewer's queue when the next step starts.

    :data:`STEP_LOOKAHEAD`, but at most half a step (``rank.step`` 3: 1), so
    that most of a step's verdicts steer the next one.
    """
    return min(STEP_LOOKAHEAD, max(int(cfg.rank.step), 0) // 2)


def step_ahead(ctx: Ctx, queue: list) -> str | None:
    """Start the round's next step in the background when this reviewer's queue of it runs low.

    Only for the current round's queue (source "round"), and only while the
    round holds fewer candidates than its target (a round written whole is
    never extended). A step is tried once for a given number of candidates:
    a failed job, or one that found nothing more to add, is not started again
    by itself (:func:`retry_step`).

    Returns
    -------
    str or None
        ``"running"`` (a step job chooses the next candidates now),
        ``"waiting"`` (a learn or rank job runs: the step starts after it),
        ``"failed"`` (the last step job failed), ``"stalled"`` (it found no
        more candidates), or None (nothing to wait for).
    """
    from mining.ranking.rank import round_size, round_target

    ss = st.session_state
    if ss["source"][0] != "round":
        return None
    db = ctx.store.path
    job = learn_jobs().get((db, "step"))
    if job_running(db, "step"):
        return "running"
    if len(queue) - ss["pos"] > step_lookahead(ctx.cfg):
        return None
    r = ctx.store.current_round()
    if not r or ss.get("queue_round") != r:
        return None
    held = round_size(ctx.store, r)
    if held >= round_target(ctx.store, r):
        return None
    if job is not None and job.sig == (r, held):  # this step was tried: not again by itself
        return "failed" if job.error else "stalled"
    if start_job("step", step_round, ctx, sig=(r, held)):
        return "running"
    return "waiting"  # a learn or rank job runs: its end draws the page again, and the step starts then


def retry_step(ctx: Ctx) -> None:
    """Start the round's next step again (after a failed step job)."""
    from mining.ranking.rank import round_size

    r = ctx.store.current_round()
    held = round_size(ctx.store, r)
    start_job("step", step_round, ctx, sig=(r, held))


def step_ui(ctx: Ctx, state: str | None) -> None:
    """At the end of a reviewer's queue: the next step is being chosen, or why it is not."""
    if state == "running":
        st.info(
            "The next candidates of this round are being chosen from your verdicts; "
            "they appear here by themselves when ready."
        )
    elif state == "waiting":
        st.info("The next candidates of this round are chosen when the job below ends.")
    elif state == "failed":  # (its error is shown with the jobs below)
        st.button(
            "Choose the next candidates again",
            key="retry_step",
            on_click=retry_step,
            args=(ctx,),
            help="the last try failed (its error is below); this round is not full yet",
        )
    elif state == "stalled":
        st.info(
            "No more candidates could be added to this round: the last step found none "
            "(an image with a verdict, or already in the round, is not chosen again)."
        )


def step_error(db: str, round_: int | None) -> str | None:
    """The error of the last step job on this catalogue when it failed on round ``round_``."""
    job = learn_jobs().get((db, "step"))
    if job is None or not job.error or job.finished is None or not job.sig or job.sig[0] != round_:
        return None
    return job.error


@st.fragment(run_every=1.0)
def jobs_status(db: str) -> None:
    """Progress of the jobs, refreshed every second; the page is redrawn when one ends.

    The queue is built again only when a new round was ranked meanwhile: a
    step adds its candidates to the queues of the round (position, undo and
    claims kept), learning changes no queue.
    """
    ss = st.session_state
    busy = False
    for kind in KINDS:
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
        jobs_ended(ss, ss.get("store"))
        st.rerun(scope="app")


def jobs_ended(ss, store: Store | None) -> None:
    """What a session does when the jobs it saw running have ended, before the page is drawn again.

    Its queue is built again only when it is not of the current round (a rank
    job wrote a new one), or is a selection; a queue of the round keeps its
    position, undo stack and claims, and gets a step's new candidates appended
    (:func:`raremine.screens.state.grow_queue`).
    """
    ss["jobs_drawn_busy"] = False
    if ss.get("source", ("round", None))[0] != "round" or store is None:
        ss["queue"] = None
    elif ss.get("queue_round") != store.current_round():
        ss["queue"] = None


def summary(result) -> str:
    """A line about a job's result."""
    if isinstance(result, str):
        return result
    n = getattr(result, "n_labelled", None)
    return f"{n} labelled images; rank the next round to use it" if n is not None else "done"
