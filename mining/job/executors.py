"""Where shards run: inline or in a local process pool rebuilt when a worker dies; at most max_in_flight at a time."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as cf_wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from mining.job.work import MineSummary
from mining.job.worker import (
    WorkerDied,
    _init_pool_worker,
    score_shard,
)

logger = logging.getLogger(__name__)


# -- executors: the same loop drives every backend --------------------------------------
class _InlineExecutor:
    """Runs shards in the calling process (debugging); futures come back finished."""

    slots = 1
    breaks_all = False

    def __init__(self, state: dict):
        self.state = state

    def submit(self, shard: list[dict]) -> Future:
        fut: Future = Future()
        fut.set_result(score_shard(shard, self.state))
        return fut

    def wait_any(self, futures: list) -> set:
        return set(futures)

    def result(self, fut: Future) -> list[dict]:
        return fut.result()

    def restart(self) -> None:
        return None

    def close(self, kill: bool = False) -> None:
        return None


def forkserver_preload(scorers) -> list[str]:
    """Modules the process pool's forkserver imports before it forks any worker.

    :mod:`mining.job.mine`, the modules of the scorers' classes that belong to
    this package (``mining.scorers.backbone`` brings torch: about 3 s of CPU
    that each worker would otherwise pay on its own) and, last,
    :mod:`mining.job._forkserver_preload` (the server dies with the job).
    """
    modules = [type(s).__module__ for s in scorers]
    return [
        "mining.job.mine",
        *dict.fromkeys(m for m in modules if m.startswith("mining.")),
        "mining.job._forkserver_preload",
    ]


def start_forkserver(scorers) -> bool:
    """Start the process pool's forkserver now, with :func:`forkserver_preload`, while the scorers prepare.

    Its imports (torch, OpenCV, scikit-learn) then run on another core
    during ``prepare`` instead of delaying the first shard. Nothing happens
    where the server already runs (a second job of the same process).

    Returns
    -------
    bool
        True when the server was started or already ran; False when this
        system cannot start one (the pool starts it later).
    """
    try:
        from multiprocessing import forkserver

        multiprocessing.get_context("forkserver").set_forkserver_preload(forkserver_preload(scorers))
        forkserver.ensure_running()
    except (ValueError, OSError) as err:  # no forkserver on this system
        logger.debug("forkserver not started early: %s", err)
        return False
    return True


class _ProcessExecutor:
    """A local process pool that is rebuilt when one of its workers dies."""

    breaks_all = True  # a dead worker breaks the pool: every shard in flight fails with it

    def __init__(self, workers: int, initargs: tuple, start_method: str = "forkserver"):
        self.slots = workers
        self.initargs = initargs
        self.context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # the server imports the heavy modules once; each worker forks from it, clean of the
            # writer's threads (OpenMP pools started by XGBoost or torch in prepare() hang forked children).
            # mining.job._forkserver_preload makes the server die with the job; it ends by itself anyway once
            # the job and its workers are gone, and the resource tracker once every process that holds
            # its pipe is. When start_forkserver() ran before prepare, the server is already up.
            self.context.set_forkserver_preload(forkserver_preload(initargs[0]))
        self.pool = self._make()

    def _make(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.slots,
            initializer=_init_pool_worker,
            initargs=(os.getpid(), *self.initargs),
            mp_context=self.context,
        )

    def submit(self, shard: list[dict]) -> Future:
        return self.pool.submit(score_shard, shard)

    def wait_any(self, futures: list) -> set:
        return cf_wait(futures, return_when=FIRST_COMPLETED)[0]

    def result(self, fut: Future) -> list[dict]:
        try:
            return fut.result()
        except BrokenProcessPool as err:
            raise WorkerDied(f"a worker process died ({err})", attributed=False) from err

    def _kill_leftovers(self) -> None:
        # In a broken pool the surviving workers wait on the call queue forever and the
        # executor's thread joins them (Python 3.11): end them, their shards are redone.
        for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.kill()

    def restart(self) -> None:
        self._kill_leftovers()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = self._make()

    def close(self, kill: bool = False) -> None:
        """Shut the pool down; ``kill``: end the workers first (the job was interrupted)."""
        if kill or getattr(self.pool, "_broken", False):
            self._kill_leftovers()
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Task:
    items: list[dict]
    attempts: int = 0


def _run_shards(
    ex,
    shards: Iterator[list[dict]],
    on_results: Callable[[list[dict]], None],
    on_dead: Callable[[list[dict], str], None],
    *,
    max_in_flight: int,
    retries: int,
    summary: MineSummary,
) -> None:
    """Keep at most ``max_in_flight`` shards running; hand each result to ``on_results``.

    After an unattributed worker death the shards that were in flight become
    suspects and run one at a time, so the next death names its shard.
    """
    in_flight: dict = {}
    suspects: deque[_Task] = deque()
    source = iter(shards)
    exhausted = False
    while True:
        while not exhausted or suspects:
            limit = 1 if suspects else max_in_flight
            if len(in_flight) >= limit:
                break
            if suspects:
                task = suspects.popleft()
            else:
                items = next(source, None)
                if items is None:
                    exhausted = True
                    break
                task = _Task(items)
                summary.shards += 1
            try:
                in_flight[ex.submit(task.items)] = task
            except BrokenProcessPool:
                # a worker died under a shard still in flight: the wait below sees that death
                # and restarts the pool; this shard goes back to run after it
                suspects.appendleft(task)
                if not in_flight:
                    ex.restart()
                    summary.worker_restarts += 1
                    continue
                break
        if not in_flight:
            return
        died = False
        running = len(in_flight)
        for fut in ex.wait_any(list(in_flight)):
            task = in_flight.pop(fut)
            try:
                results = ex.result(fut)
            except WorkerDied as err:
                died = True
                alone = err.attributed or running == 1
                logger.warning(
                    "worker died on a shard of %d images (attempt %d, alone=%s): %s",
                    len(task.items),
                    task.attempts + 1,
                    alone,
                    err,
                    extra={"event": "worker_died", "images": len(task.items)},
                )
                if not alone:
                    suspects.append(task)
                elif len(task.items) > 1:
                    suspects.extend(_Task([item]) for item in task.items)
                elif task.attempts < retries:
                    suspects.append(_Task(task.items, task.attempts + 1))
                else:
                    on_dead(task.items, str(err))
                continue
            on_results(results)
        if died:
            summary.worker_restarts += 1
        if died and ex.breaks_all:
            # the pool is broken: what finished is kept, the rest runs again one shard at a time
            for fut, task in list(in_flight.items()):
                if fut.done() and fut.exception() is None:
                    on_results(fut.result())
                else:
                    suspects.append(task)
            in_flight.clear()
            ex.restart()
