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
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as cf_wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from mining.io import DEFAULT_MAX_PIXELS
from mining.joblog import interrupt_on_sigterm
from mining.scorers import Scorer
from mining.store import Store
from mining.worker import (  # noqa: F401 (the worker's names, re-exported: callers import them from here)
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

logger = logging.getLogger(__name__)


BACKENDS = ("inline", "process", "dask")
START_METHODS = ("forkserver", "spawn", "fork")

#: Images read from the catalogue per query while listing the work.
LIST_CHUNK = 2000


@dataclass
class MineSummary:
    """What one mining run did.

    Attributes
    ----------
    run_id : int or None
    done : int
        Images that received at least one new score.
    skipped : int
        Images skipped because every scorer had already scored them.
    skipped_failed : int
        Images skipped because a scorer failed on them in an earlier run.
    failed : Counter
        Failures of this run by reason (``scorer_error``, ``worker_died``,
        the reader's reasons such as ``truncated``).
    seconds : float
        Wall time of the whole run.
    timings : dict
        Seconds spent in ``prepare``, the streaming pass and ``finalize``.
    worker_restarts : int
        Times a dead worker was replaced (process pool rebuilt or a dask
        task lost to a dead worker).
    maps_unwritable : int
        Scores of this run kept without their map PNG (the map could not be
        written; a later run with a writable maps folder writes it).
    maps_retried : int
        Images listed again only to write maps that earlier runs could not write.
    """

    run_id: int | None = None
    done: int = 0
    skipped: int = 0
    skipped_failed: int = 0
    failed: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    total: int = 0
    shards: int = 0
    worker_restarts: int = 0
    backend: str = ""
    workers: int = 0
    timings: dict = field(default_factory=dict)
    maps_unwritable: int = 0
    maps_retried: int = 0
    map_error: str | None = None

    def as_dict(self) -> dict:
        """JSON-ready form."""
        stream = self.timings.get("stream_s") or self.seconds
        return {
            "run_id": self.run_id,
            "done": self.done,
            "skipped": self.skipped,
            "skipped_failed": self.skipped_failed,
            "failed": dict(self.failed),
            "total": self.total,
            "shards": self.shards,
            "worker_restarts": self.worker_restarts,
            "maps_unwritable": self.maps_unwritable,
            "maps_retried": self.maps_retried,
            "backend": self.backend,
            "workers": self.workers,
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "images_per_second": round(self.done / stream, 2) if stream else None,
        }


def iter_pending_work(
    store: Store,
    scorers: Sequence[Scorer],
    *,
    rescore: bool = False,
    chunk: int = LIST_CHUNK,
    counts: Counter | None = None,
    retry_maps: bool = False,
) -> Iterator[dict]:
    """Stream the images that still miss a score from at least one streaming scorer.

    The catalogue is read ``chunk`` images at a time (by increasing id), so
    memory does not depend on the size of the archive. Images that a scorer
    failed on in an earlier run are not retried unless ``rescore``; a score
    kept without its map (``map_unwritable``) is not a failure.

    Parameters
    ----------
    store : Store
    scorers : sequence of Scorer
    rescore : bool, default=False
        List every readable image, scored or not.
    chunk : int, default=2000
        Images read per query.
    counts : Counter, optional
        Incremented with ``skipped`` (already scored by every scorer) and
        ``skipped_failed`` (a scorer failed on it before) as images go by,
        and ``maps_retried`` (listed again only for a missing map).
    retry_maps : bool, default=False
        List again, for the scorers concerned, the images whose score was
        kept without its map (to write the map).

    Yields
    ------
    dict
        ``image_id``, ``path``, ``tiles`` (list of (idx, y, x, h, w)) and
        ``scorers`` (names still missing).
    """
    streaming = [s.name for s in scorers if s.per_image]
    if not streaming:
        return
    marks = ",".join("?" * len(streaming))
    # an archive-stage scorer has streamed an image once its embedding is stored (its score comes later)
    staged = {s.embedding_name: s.name for s in scorers if s.per_image and s.archive_stage}
    staged_marks = ",".join("?" * len(staged))
    last = -1
    while True:
        rows = store.query(
            "SELECT id, path FROM images WHERE status = 'ok' AND id > ? ORDER BY id LIMIT ?", (last, chunk)
        )
        if not rows:
            return
        lo, hi = rows[0][0], rows[-1][0]
        last = hi
        done: dict[int, set] = {}
        failed: dict[int, set] = {}
        no_map: dict[int, set] = {}
        if not rescore:
            for iid, sc in store.query(
                "SELECT image_id, scorer FROM scores WHERE image_id BETWEEN ? AND ? AND tile = -1"
                f" AND scorer IN ({marks})",
                (lo, hi, *streaming),
            ):
                done.setdefault(iid, set()).add(sc)
            if staged:
                for iid, emb in store.query(
                    "SELECT image_id, name FROM embeddings WHERE image_id BETWEEN ? AND ? AND tile = -1"
                    f" AND name IN ({staged_marks})",
                    (lo, hi, *staged),
                ):
                    done.setdefault(iid, set()).add(staged[emb])
            for iid, sc, reason in store.query(
                f"SELECT image_id, scorer, reason FROM failures WHERE image_id BETWEEN ? AND ? AND scorer IN ({marks})",
                (lo, hi, *streaming),
            ):
                (no_map if reason == MAP_UNWRITABLE else failed).setdefault(iid, set()).add(sc)
        tiles: dict[int, list] = {}
        for row in store.query(
            "SELECT image_id, idx, y, x, h, w FROM tiles WHERE image_id BETWEEN ? AND ? ORDER BY image_id, idx",
            (lo, hi),
        ):
            tiles.setdefault(row[0], []).append(tuple(row[1:]))
        for iid, path in rows:
            have, bad = done.get(iid, ()), failed.get(iid, ())
            missing = [n for n in streaming if n not in have and n not in bad]
            if retry_maps and iid in no_map:
                maps = [n for n in streaming if n in have and n in no_map[iid] and n not in missing]
                if maps and counts is not None:
                    counts["maps_retried"] += 1
                missing += maps
            if missing:
                yield {"image_id": iid, "path": path, "tiles": tiles.get(iid, []), "scorers": missing}
            elif counts is not None:
                counts["skipped_failed" if any(n in bad for n in streaming) else "skipped"] += 1


def count_pending(store: Store, scorers: Sequence[Scorer], *, rescore: bool = False, retry_maps: bool = False) -> int:
    """Number of images :func:`iter_pending_work` will yield (one SQL count, no list in memory)."""
    streaming = [s.name for s in scorers if s.per_image]
    if not streaming:
        return 0
    if rescore:
        return int(store.query("SELECT COUNT(*) FROM images WHERE status = 'ok'")[0][0])
    one = (
        "(NOT EXISTS (SELECT 1 FROM scores s WHERE s.image_id = i.id AND s.tile = -1 AND s.scorer = ?)"
        " AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.image_id = i.id AND f.scorer = ? AND f.reason != ?))"
    )
    staged = {s.name: s.embedding_name for s in scorers if s.per_image and s.archive_stage}
    if staged and not retry_maps:  # archive-stage scorers: streamed once the embedding is stored
        conds, params = [], []
        for n in streaming:
            if n in staged:
                conds.append(
                    "(NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.image_id = i.id AND e.tile = -1 AND e.name = ?)"
                    " AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.image_id = i.id AND f.scorer = ?"
                    " AND f.reason != ?))"
                )
                params += [staged[n], n, MAP_UNWRITABLE]
            else:
                conds.append(one)
                params += [n, n, MAP_UNWRITABLE]
        return int(
            store.query(f"SELECT COUNT(*) FROM images i WHERE i.status = 'ok' AND ({' OR '.join(conds)})", params)[0][0]
        )
    params = [p for n in streaming for p in (n, n, MAP_UNWRITABLE)]
    if retry_maps:
        one = one[:-1] + (
            " OR (EXISTS (SELECT 1 FROM scores s WHERE s.image_id = i.id AND s.tile = -1 AND s.scorer = ?)"
            " AND EXISTS (SELECT 1 FROM failures f WHERE f.image_id = i.id AND f.scorer = ? AND f.reason = ?)))"
        )
        params = [p for n in streaming for p in (n, n, MAP_UNWRITABLE, n, n, MAP_UNWRITABLE)]
    cond = " OR ".join([one] * len(streaming))
    return int(store.query(f"SELECT COUNT(*) FROM images i WHERE i.status = 'ok' AND ({cond})", params)[0][0])


def count_missing_maps(store: Store, scorers: Sequence[Scorer]) -> int:
    """Scores of these scorers kept without their map PNG (``map_unwritable``), not written since."""
    streaming = [s.name for s in scorers if s.per_image]
    if not streaming:
        return 0
    marks = ",".join("?" * len(streaming))
    return int(
        store.query(
            "SELECT COUNT(*) FROM (SELECT DISTINCT f.image_id, f.scorer FROM failures f"
            f" JOIN scores s ON s.image_id = f.image_id AND s.tile = -1 AND s.scorer = f.scorer"
            f" WHERE f.reason = ? AND f.scorer IN ({marks}))",
            (MAP_UNWRITABLE, *streaming),
        )[0][0]
    )


def pending_work(store: Store, scorers: Sequence[Scorer], *, rescore: bool = False) -> list[dict]:
    """Images that still miss a score, as a list (small catalogues and tests; see :func:`iter_pending_work`)."""
    return list(iter_pending_work(store, scorers, rescore=rescore))


def _shards(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    shard: list[dict] = []
    for item in items:
        shard.append(item)
        if len(shard) == size:
            yield shard
            shard = []
    if shard:
        yield shard


# -- the writer side ------------------------------------------------------------------
def write_shard(store: Store, results: list[dict], run_id: int | None) -> Counter:
    """Commit one shard's results in one transaction; return failure counts by reason.

    Scores and embeddings are upserted on their primary keys, so writing a
    shard twice never duplicates rows. A map written at last clears its
    ``map_unwritable`` record; a map still not written keeps one record per
    image and scorer.
    """
    now = time.time()
    failed: Counter = Counter()
    with store.transaction() as con:
        for res in results:
            iid = res["image_id"]
            con.executemany(
                "INSERT INTO scores (image_id, tile, scorer, score, stats, map_path, run_id, created_at)"
                " VALUES (?, ?, ?, ?, json(?), ?, ?, ?) ON CONFLICT(image_id, tile, scorer) DO UPDATE SET"
                " score=excluded.score, stats=excluded.stats, map_path=excluded.map_path,"
                " run_id=excluded.run_id, created_at=excluded.created_at",
                [
                    (iid, s["tile"], s["scorer"], s["score"], json.dumps(s["stats"]), s["map_path"], run_id, now)
                    for s in res["scores"]
                ],
            )
            con.executemany(
                "DELETE FROM failures WHERE image_id = ? AND scorer = ? AND reason = ?",
                [(iid, s["scorer"], MAP_UNWRITABLE) for s in res["scores"] if s["tile"] == -1 and s["map_path"]],
            )
            con.executemany(
                "INSERT INTO embeddings (image_id, tile, name, vector, run_id) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(image_id, tile, name) DO UPDATE SET vector=excluded.vector, run_id=excluded.run_id",
                [(iid, tile, name, blob, run_id) for name, tile, blob in res["embeddings"]],
            )
            for f in res["failures"]:
                failed[f["reason"]] += 1
                if f["reason"] == MAP_UNWRITABLE:
                    con.execute(
                        "DELETE FROM failures WHERE image_id = ? AND scorer = ? AND reason = ?",
                        (iid, f["scorer"], MAP_UNWRITABLE),
                    )
                con.execute(
                    "INSERT INTO failures (run_id, image_id, scorer, reason, detail, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, iid, f["scorer"], f["reason"], f["detail"], now),
                )
    return failed


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


def forkserver_preload(scorers: Sequence[Scorer]) -> list[str]:
    """Modules the process pool's forkserver imports before it forks any worker.

    :mod:`mining.mine`, the modules of the scorers' classes that belong to
    this package (``mining.scorers.backbone`` brings torch: about 3 s of CPU
    that each worker would otherwise pay on its own) and, last,
    :mod:`mining._forkserver_preload` (the server dies with the job).
    """
    modules = [type(s).__module__ for s in scorers]
    return ["mining.mine", *dict.fromkeys(m for m in modules if m.startswith("mining.")), "mining._forkserver_preload"]


def start_forkserver(scorers: Sequence[Scorer]) -> bool:
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
            # mining._forkserver_preload makes the server die with the job; it ends by itself anyway once
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


#: default images per shard by backend. On dask each task costs the job process (scheduler,
#: client) several ms, about 18 % of the throughput with shards of 64 contrast-scored 256 x 256
#: images on 2 cores; shards of 256 brought dask to 0.91 of the pool (0.80 with 64).
SHARD_SIZE = {"inline": 64, "process": 64, "dask": 256}


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


# -- the job --------------------------------------------------------------------------
class CatalogueBusy(RuntimeError):
    """Another mine job holds the catalogue (one job at a time per catalogue).

    Attributes
    ----------
    holder : dict
        What is known of the holder: ``pid``, ``host``, ``since`` (epoch
        seconds) and ``run`` (its run id), each possibly missing.
    """

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


def lock_path(store_path: str) -> str:
    """The side file whose OS lock a mine job holds: ``<catalogue>.lock``."""
    return os.path.abspath(store_path) + ".lock"


def _busy_message(store: Store, path: str, holder: dict) -> str:
    runs = store.query(
        "SELECT id, pid, host, started_at FROM runs WHERE kind = 'mine' AND status = 'running' ORDER BY id DESC"
    )
    run = next((r for r in runs if holder.get("pid") in (None, r["pid"])), None)
    if run is not None:
        holder = {"pid": run["pid"], "host": run["host"], "since": run["started_at"], **holder, "run": run["id"]}
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "an unknown time"
    who = f"run {holder['run']} " if holder.get("run") else "another job "
    pid = holder.get("pid", "?")
    return (
        f"catalogue {os.path.abspath(store.path)!r} is already being mined by {who}(pid {pid} on host "
        f"{holder.get('host', '?')}, since {when}; lock {path}): one mine job at a time per catalogue. "
        f"Wait for it to finish, or stop it (kill {pid} on that host) and run this command again to resume."
    )


@contextlib.contextmanager
def catalogue_lock(store: Store) -> Iterator[dict]:
    """Hold the catalogue for one mine job; raise :class:`CatalogueBusy` at once if another job holds it.

    The lock is ``flock`` on the side file :func:`lock_path`, never on the
    catalogue itself (closing any other descriptor of the catalogue would drop
    this process's SQLite locks). The kernel releases it when the holder dies,
    so a killed job never blocks the next one. The holder's pid, host and
    start time are written into the file for the message of a refused job.

    Yields
    ------
    dict
        ``pid``, ``host``, ``since`` of this job.
    """
    try:
        import fcntl
    except ImportError:  # no flock on this system: no protection against a second job
        logger.debug("no fcntl.flock here: %s is not locked", store.path)
        yield {}
        return
    path = lock_path(store.path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise OSError(err.errno, f"cannot create the lock file {path} of the catalogue: {err.strerror}") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            raise CatalogueBusy(_busy_message(store, path, holder), holder) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield me
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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

    Default: half the CPUs, at least 1, as :func:`mining.backbone.prepare_threads`
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
        On Ctrl+C, or SIGTERM (:class:`mining.joblog.JobInterrupted`): the
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
        return _mine_locked(
            store,
            scorers,
            backend=backend,
            workers=workers,
            shard_size=shard_size,
            save_maps=save_maps,
            max_pixels=max_pixels,
            rescore=rescore,
            config=config,
            progress=progress,
            scheduler=scheduler,
            max_in_flight=max_in_flight,
            retries=retries,
            start_method=start_method,
        )


def _mine_locked(
    store: Store,
    scorers: Sequence[Scorer],
    *,
    backend: str,
    workers: int,
    shard_size: int,
    save_maps: bool,
    max_pixels: int,
    rescore: bool,
    config: dict | None,
    progress: Callable[[int, int], None] | None,
    scheduler: str | None,
    max_in_flight: int | None,
    retries: int,
    start_method: str,
) -> MineSummary:
    """The job of :func:`mine`, its arguments checked, the catalogue held by this job."""
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
                from mining._dask import DaskExecutor

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
