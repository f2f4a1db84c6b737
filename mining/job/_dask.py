"""The dask.distributed backend of :func:`mining.mine.mine` (imported only when it is used).

The prepared scorers travel to every worker once, in a worker plugin, and
are kept there under a per-job token; tasks name the token and a shard, and
return the same small results as the process pool.
"""

from __future__ import annotations

import logging
import os
import uuid

import dask
from distributed import Client, KilledWorker, LocalCluster, WorkerPlugin, wait

from mining.job import worker as _worker

logger = logging.getLogger(__name__)

#: ``distributed.admin.low-level-log-length`` while a job runs. Every ``BatchedSend`` (the
#: scheduler's stream to each worker, the client's stream to the scheduler) keeps its last
#: that-many batches in ``recent_message_log``, and a ``compute-task`` batch holds the task with
#: its shard (64 image dicts, about 30 KB once unpickled): with dask's default of 1000 the job
#: process grew by about 50 KB per task until some 1,000 tasks per worker had run (116 -> 161 MB
#: from 10,000 to 100,000 images). The scheduler's transition log and event topics share the key;
#: all of them only feed debugging (``Scheduler.story``, cluster dumps, ``Client.get_events``).
LOW_LEVEL_LOG_LENGTH = 0


class ScorerPlugin(WorkerPlugin):
    """Load the prepared scorers once per worker, under ``token``.

    Workers that join later, or that a nanny restarts after a crash, run
    :meth:`setup` too, so every worker holds the models exactly once.

    Parameters
    ----------
    token : str
        Key of this job's scorers on the workers.
    initargs : tuple
        ``(scorers, maps_root, max_pixels)`` as for the process pool.
    """

    def __init__(self, token: str, initargs: tuple):
        self.token = token
        self.initargs = initargs

    def setup(self, worker) -> None:
        """Unpickle and keep the scorers on this worker."""
        _worker._WORKER_BY_TOKEN[self.token] = _worker._worker_state(*self.initargs)

    def teardown(self, worker) -> None:
        """Drop them when the job ends."""
        _worker._WORKER_BY_TOKEN.pop(self.token, None)


def score_shard_task(shard: list[dict], token: str) -> list[dict]:
    """Task run on a dask worker: score with the scorers its plugin loaded once."""
    state = _worker._WORKER_BY_TOKEN.get(token)
    if state is None:
        raise RuntimeError(f"raremine scorers {token!r} are not loaded on this worker (plugin missing)")
    return _worker.score_shard(shard, state)


def _restore_environ(saved: dict[str, str | None]) -> None:
    """Put back the job process's environment variables that dask's nannies overwrote."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class DaskExecutor:
    """Shards as tasks on a dask.distributed cluster (an existing one, or a LocalCluster on 127.0.0.1).

    Parameters
    ----------
    initargs : tuple
        ``(scorers, maps_root, max_pixels)``.
    scheduler : str, optional
        ``tcp://HOST:PORT`` of a running scheduler; None starts a LocalCluster.
    local_workers : int, optional
        Worker processes of the LocalCluster (one thread each).
    """

    breaks_all = False  # the scheduler reschedules a dead worker's tasks; nannies restart it

    def __init__(self, initargs: tuple, *, scheduler: str | None, local_workers: int | None):
        self.cluster = None
        self.client = None
        self._environ: dict[str, str | None] = {}  # the job process's values of what the nannies set
        # Held until close(): streams opened later (a worker restarted by its nanny) read it too.
        self._config = dask.config.set({"distributed.admin.low-level-log-length": LOW_LEVEL_LOG_LENGTH})
        try:
            self._connect(initargs, scheduler, local_workers)
        except BaseException:
            for part in (self.client, self.cluster):  # e.g. the plugin failed to register
                if part is not None:
                    part.close()
            self._config.__exit__(None, None, None)
            _restore_environ(self._environ)
            raise

    def _connect(self, initargs: tuple, scheduler: str | None, local_workers: int | None) -> None:
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="30s")
            except OSError as err:
                raise ValueError(f"cannot reach the dask scheduler at {scheduler!r}: {err}") from err
        else:
            # dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in their workers, which turns off glibc's
            # adaptive mmap threshold: every image-sized numpy temporary then costs an mmap/munmap and
            # fresh page faults. Our workers hold nothing between tasks: they get the process pool's
            # settings instead (mining.mine.WORKER_MALLOC_ENV: heap reuse, bounded free heap).
            # The statistical profiler feeds only the dashboard (off here) and keeps up to 1000
            # snapshots per worker, which grows worker memory for the first ~17 minutes of a job.
            env = {
                k: v
                for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
                if k != "MALLOC_TRIM_THRESHOLD_"
            }
            env.update(_worker.WORKER_MALLOC_ENV)
            # each nanny does os.environ.update(env) in this process before it spawns its worker
            self._environ = {k: os.environ.get(k) for k in env}
            with dask.config.set(
                {"distributed.nanny.pre-spawn-environ": env, "distributed.worker.profile.enabled": False}
            ):
                self.cluster = LocalCluster(
                    n_workers=local_workers or 2,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
            self.client = Client(self.cluster)
        self.token = uuid.uuid4().hex
        self.plugin_name = f"raremine-scorers-{self.token}"
        self.client.register_plugin(ScorerPlugin(self.token, initargs), name=self.plugin_name)
        self.slots = max(1, sum(self.client.nthreads().values()))
        logger.info("dask cluster %s: %d worker threads", self.client.scheduler.address, self.slots)

    def submit(self, shard: list[dict]):
        """Submit one shard; returns a dask future."""
        return self.client.submit(score_shard_task, shard, self.token, pure=False)

    def wait_any(self, futures: list) -> set:
        """Futures that are finished (at least one)."""
        return set(wait(futures, return_when="FIRST_COMPLETED").done)

    def result(self, fut) -> list[dict]:
        """The shard's results; :class:`mining.mine.WorkerDied` when workers kept dying on it."""
        try:
            return fut.result()
        except KilledWorker as err:
            raise _worker.WorkerDied(f"dask workers died running this shard ({err})", attributed=True) from err
        finally:
            fut.release()

    def restart(self) -> None:
        """Nothing to do: the cluster replaces dead workers itself."""
        return None

    def close(self, kill: bool = False) -> None:
        """Unload the scorers from the workers, close the client (and the LocalCluster), restore the log length.

        Parameters
        ----------
        kill : bool, default=False
            The job was interrupted: the tasks still running are not waited
            for (closing the client cancels them; a LocalCluster's workers end
            with it).
        """
        try:
            self.client.unregister_worker_plugin(self.plugin_name)
        except Exception as err:  # closing anyway
            logger.debug("could not unregister the scorer plugin: %s", err)
        try:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            self._config.__exit__(None, None, None)
            _restore_environ(self._environ)
