"""Mining: run scorers over the catalogue in one streaming, resumable pass.

Work is split into shards of images. Workers (the calling process with
``backend="inline"``, a local process pool, or a dask.distributed cluster)
read each image once, run every scorer that has not scored it yet, save
small overlay PNGs of the maps, and return small results; the calling
process is the one writer and commits each shard in one transaction. A job
killed at any moment (SIGKILL included) therefore leaves only whole shards,
and running it again scores only what is missing.

Memory does not grow with the archive: the work list is read from the
catalogue in chunks (:func:`iter_pending_work`) and at most
``max_in_flight`` shards are submitted at a time.

A worker that dies (a crash in a decoder, the OOM killer) is replaced: the
process pool is rebuilt and the shards that were in flight are run again one
at a time, so a death can be pinned on one shard; a shard that kills a worker
on its own is split into single images, and an image that kills a worker on
its own ``retries + 1`` times is recorded as failed (``worker_died``).
On dask the scheduler reschedules the tasks of a dead worker itself and the
nanny restarts it; a task that keeps killing workers (``KilledWorker``) is
treated the same way.

One job at a time per catalogue: :func:`mine` holds an OS lock on
``<catalogue>.lock`` (``flock``, released by the kernel when the job dies, so a
killed job never blocks the next one) and a second job is refused with
:class:`CatalogueBusy`, which names the holder. SIGTERM stops a job like
Ctrl+C: the run is recorded as ``interrupted`` and running the job again
resumes it. Pool workers die with their job (Linux: ``PR_SET_PDEATHSIG`` in
the workers and in the forkserver, and a thread that watches the job's pid).

A map PNG that cannot be written (the maps folder is unwritable, the disk is
full) never costs the score: the score is kept without its map and a
``map_unwritable`` row in ``failures`` records what is missing; a later run
whose maps folder is writable scores those images again to write the maps.

The job's parts: :mod:`mining.job.work` (the work list, shards, the writer),
:mod:`mining.job.executors` (inline and process pool), :mod:`mining.job.lock`
(one job per catalogue) and :mod:`mining.worker` (what a worker runs); their
names are importable from here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from mining.catalogue.joblog import interrupt_on_sigterm
from mining.catalogue.store import Store
from mining.io import DEFAULT_MAX_PIXELS
from mining.job.executors import _InlineExecutor, _ProcessExecutor, _run_shards, start_forkserver
from mining.job.lock import CatalogueBusy, catalogue_lock, lock_path  # noqa: F401 (re-exported)
from mining.job.work import (  # noqa: F401 (re-exported: callers import them from here)
    LIST_CHUNK,
    MineSummary,
    _shards,
    count_missing_maps,
    count_pending,
    iter_pending_work,
    pending_work,
    write_shard,
)
from mining.job.worker import (  # noqa: F401 (the worker's names, re-exported: callers import them from here)
    _WORKER_BY_TOKEN,
    BATCH_IMAGES,
    BATCH_PIXELS,
    MAP_MAX_SIDE,
    MAP_UNWRITABLE,
    WORKER_MALLOC,
    WORKER_MALLOC_ENV,
    WorkerDied,
    _combine,
    _init_pool_worker,
    _init_worker,
    _units,
    _watch_job,
    _worker_state,
    die_with_parent,
    maps_dir,
    save_map_png,
    score_shard,
    tune_worker_malloc,
)
from mining.scorers import Scorer

logger = logging.getLogger(__name__)


BACKENDS = ("inline", "process", "dask")
START_METHODS = ("forkserver", "spawn", "fork")


#: default images per shard by backend. On dask each task costs the job process (scheduler,
#: client) several ms, about 18 % of the throughput with shards of 64 contrast-scored 256 x 256
#: images on 2 cores; shards of 256 brought dask to 0.91 of the pool (0.80 with 64).
SHARD_SIZE = {"inline": 64, "process": 64, "dask": 256}


def _maps_problem(maps_root: str) -> str | None:
    """Why map PNGs cannot be written to ``maps_root`` now, or None when a probe file can be."""
    probe = os.path.join(maps_root, f".probe{os.getpid()}")
    try:
        os.makedirs(maps_root, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"raremine")
        os.unlink(probe)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(probe)
        return f"{type(err).__name__}: {err}"
    return None


def _check_maps(store: Store, scorers: Sequence[Scorer], maps_root: str | None, rescore: bool) -> bool:
    """Whether this run writes the maps that earlier runs could not; warns when the maps folder is unwritable."""
    if maps_root is None:
        return False
    problem = _maps_problem(maps_root)
    missing = 0 if rescore else count_missing_maps(store, scorers)
    if problem is not None:
        logger.warning(
            "the maps folder %s cannot be written (%s): scores are kept without their maps%s; make it writable "
            "(or free disk space) and run again to write them, or set mine.save_maps=false",
            maps_root,
            problem,
            f" ({missing} maps of earlier runs are still missing)" if missing else "",
            extra={"event": "maps_unwritable", "maps_missing": missing},
        )
        return False
    if missing:
        logger.info(
            "%d maps that earlier runs could not write: their images are scored again to write them",
            missing,
            extra={"event": "maps_retry", "maps_missing": missing},
        )
    return bool(missing)


@contextlib.contextmanager
def archive_stage_threads(n: int | None = None) -> Iterator[int]:
    """Run a block (the scorers' ``finalize``) with at most ``n`` OpenMP and BLAS threads.

    Default: half the CPUs, at least 1, as :func:`mining.models.backbone.prepare_threads`
    does for torch. OpenMP threads spin while they wait for each other: on
    the 2-core development machine, busy with other work, scikit-learn's
    t-SNE of the 2-D map (400 points) took 22-30 s with two threads and 2.9 s
    with one, the same coordinates. The limits go through ``threadpoolctl``
    (a dependency of scikit-learn).

    Yields
    ------
    int
        The thread limit.
    """
    n = n or max(1, (os.cpu_count() or 1) // 2)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n):
        yield n


def mine(
    store: Store,
    scorers: Sequence[Scorer],
    *,
    backend: str = "process",
    workers: int = 2,
    shard_size: int | None = None,
    save_maps: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    rescore: bool = False,
    config: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
    scheduler: str | None = None,
    max_in_flight: int | None = None,
    retries: int = 1,
    start_method: str = "forkserver",
) -> MineSummary:
    """Score every readable image of the catalogue with the given scorers.

    Parameters
    ----------
    store : Store
        The catalogue; this process is its one writer.
    scorers : sequence of Scorer
        Unprepared scorers; each is prepared here, then sent to the workers
        once (pool initializer, or a dask worker plugin).
    backend : {"inline", "process", "dask"}, default="process"
        Where shards run: this process (debugging), a local process pool,
        or a dask.distributed cluster.
    workers : int, default=2
        Processes of the ``process`` backend; workers of the LocalCluster
        started by the ``dask`` backend when no ``scheduler`` is given.
    shard_size : int, optional
        Images per shard (and per write transaction); default
        :data:`SHARD_SIZE` for the backend: 64 in a process pool, 256 on dask,
        whose per-task overhead in the scheduler and client is larger.
    save_maps : bool, default=True
        Keep overlay PNGs of the score maps beside the catalogue (on a
        cluster the workers write them: the folder must be shared).
    max_pixels : int, optional
        Decompression-bomb guard passed to the reader.
    rescore : bool, default=False
        Score again images that already have scores.
    config : dict, optional
        The effective configuration, stored with the run.
    progress : callable, optional
        ``progress(processed, total)`` after each shard; ``total`` counts the
        images that still need work.
    scheduler : str, optional
        ``tcp://HOST:PORT`` of an existing dask scheduler (``dask`` backend).
    max_in_flight : int, optional
        Shards submitted but not yet written (default: twice the worker
        slots); bounds memory.
    retries : int, default=1
        Times an image that kills a worker on its own is tried again before
        it is recorded as failed (``worker_died``).
    start_method : {"forkserver", "spawn", "fork"}, default="forkserver"
        How the process pool starts its workers. ``fork`` starts fastest but
        is unsafe once the writer runs threads (a scorer's ``prepare`` that
        trained with XGBoost or torch leaves OpenMP pools that hang forked
        children); ``forkserver`` forks from a clean server process.

    Returns
    -------
    MineSummary

    Raises
    ------
    CatalogueBusy
        At once, when another mine job holds the catalogue.
    KeyboardInterrupt
        On Ctrl+C, or SIGTERM (:class:`mining.catalogue.joblog.JobInterrupted`): the
        run is recorded as ``interrupted`` with what was written so far kept;
        running the job again resumes it.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if shard_size is None:
        shard_size = SHARD_SIZE[backend]
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if max_in_flight is not None and max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    if start_method not in START_METHODS:
        raise ValueError(f"start_method must be one of {START_METHODS}, got {start_method!r}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if scheduler is not None and backend != "dask":
        raise ValueError(f"scheduler {scheduler!r} is only used by backend 'dask', got backend {backend!r}")
    with catalogue_lock(store), interrupt_on_sigterm():
        t0 = time.perf_counter()
        # this job holds the catalogue's lock: any mine run still marked running died without finishing
        for stale in store.close_stale_runs("mine", any_host=True):
            logger.info("run %s was interrupted; this run resumes it", stale, extra={"event": "resume", "run": stale})
        run_config = dict(config or {})
        run_config.setdefault("scorers", {s.name: s.config() for s in scorers})
        run_config["job"] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "backend": backend,
            "workers": workers,
            "scheduler": scheduler,
            "shard_size": shard_size,
            "start_method": start_method if backend == "process" else None,
        }
        run_id = store.start_run("mine", run_config)
        summary = MineSummary(run_id=run_id, backend=backend, workers=workers)
        logger.info(
            "mine run %s started: backend=%s workers=%s scorers=%s",
            run_id,
            backend,
            workers,
            [s.name for s in scorers],
            extra={"event": "start", "run": run_id, "backend": backend},
        )
        ex = None
        try:
            if backend == "process" and start_method == "forkserver" and count_pending(store, scorers, rescore=rescore):
                start_forkserver(scorers)  # its imports overlap prepare
            for s in scorers:  # prepare may use the cores the pool's workers will use
                s.prepare_workers = workers if backend == "process" else 1
            prepared = [s.prepare(store, run_id) for s in scorers]
            summary.timings["prepare_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            maps_root = maps_dir(store.path) if save_maps else None
            retry_maps = _check_maps(store, prepared, maps_root, rescore)
            summary.total = count_pending(store, prepared, rescore=rescore, retry_maps=retry_maps)
            initargs = (prepared, maps_root, max_pixels)
            skips: Counter = Counter()
            work = iter_pending_work(store, prepared, rescore=rescore, counts=skips, retry_maps=retry_maps)
            processed = 0

            def on_results(results: list[dict]) -> None:
                nonlocal processed
                failed = write_shard(store, results, run_id)
                unwritable = failed.pop(MAP_UNWRITABLE, 0)
                if unwritable:
                    summary.maps_unwritable += unwritable
                    if summary.map_error is None:
                        summary.map_error = next(
                            f["detail"] for r in results for f in r["failures"] if f["reason"] == MAP_UNWRITABLE
                        )
                summary.failed.update(failed)
                summary.done += sum(1 for r in results if r["scores"] or r["embeddings"])
                processed += len(results)
                logger.debug(
                    "shard written: %d images, %d failures",
                    len(results),
                    sum(failed.values()),
                    extra={
                        "event": "shard",
                        "run": run_id,
                        "images": len(results),
                        "processed": processed,
                        "total": summary.total,
                    },
                )
                if progress is not None:
                    progress(processed, summary.total)

            def on_dead(items: list[dict], detail: str) -> None:
                on_results(
                    [
                        {
                            "image_id": it["image_id"],
                            "scores": [],
                            "embeddings": [],
                            "failures": [
                                {"scorer": n, "reason": "worker_died", "detail": detail[:500]} for n in it["scorers"]
                            ],
                        }
                        for it in items
                    ]
                )

            if summary.total:
                t_start = time.perf_counter()
                if backend == "inline":
                    ex = _InlineExecutor(_worker_state(*initargs))
                    summary.workers = 1
                elif backend == "process":
                    ex = _ProcessExecutor(workers, initargs, start_method)
                else:
                    from mining.job._dask import DaskExecutor

                    ex = DaskExecutor(initargs, scheduler=scheduler, local_workers=workers)
                    summary.workers = ex.slots
                summary.timings["startup_s"] = time.perf_counter() - t_start
                t1 = time.perf_counter()
                _run_shards(
                    ex,
                    _shards(work, shard_size),
                    on_results,
                    on_dead,
                    max_in_flight=max_in_flight or 2 * ex.slots,
                    retries=retries,
                    summary=summary,
                )
            else:
                for _ in work:  # nothing pending: still count what was skipped
                    pass
            summary.skipped, summary.skipped_failed = skips["skipped"], skips["skipped_failed"]
            summary.maps_retried = skips["maps_retried"]
            summary.timings["stream_s"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            with archive_stage_threads():
                for s in prepared:
                    s.finalize(store, run_id)
            summary.timings["finalize_s"] = time.perf_counter() - t2
        except BaseException as err:
            interrupted = isinstance(err, KeyboardInterrupt)  # Ctrl+C, or SIGTERM (JobInterrupted)
            summary.seconds = time.perf_counter() - t0
            if ex is not None:
                # the shards in flight are not waited for (they are redone by the next run)
                try:
                    ex.close(kill=interrupted)
                except Exception as close_err:  # the run is still recorded below
                    logger.warning("could not stop the workers cleanly: %s", close_err)
                ex = None
            status = "interrupted" if interrupted else "failed"
            store.finish_run(run_id, {**summary.as_dict(), "error": repr(err)}, status=status)
            if interrupted:
                logger.warning(
                    "mine run %s interrupted (%s) after %d images: what was written is kept; "
                    "run the same command again to resume",
                    run_id,
                    err or type(err).__name__,
                    summary.done,
                    extra={"event": "interrupted", "run": run_id},
                )
            raise
        finally:
            if ex is not None:
                ex.close()
        summary.seconds = time.perf_counter() - t0
        store.finish_run(run_id, summary.as_dict())
        if summary.maps_unwritable:
            logger.warning(
                "mine run %s: %d score maps could not be written to %s (first: %s). The scores are kept without "
                "their maps; make the folder writable (or free disk space) and run the same command again to write "
                "them, or set mine.save_maps=false",
                run_id,
                summary.maps_unwritable,
                maps_dir(store.path),
                summary.map_error,
                extra={"event": "maps_unwritable", "run": run_id, "maps": summary.maps_unwritable},
            )
        logger.info(
            "mine run %s done: %d images scored, %d skipped, failed %s, %s img/s",
            run_id,
            summary.done,
            summary.skipped + summary.skipped_failed,
            dict(summary.failed),
            summary.as_dict()["images_per_second"],
            extra={"event": "done", **summary.as_dict()},
        )
        return summary
