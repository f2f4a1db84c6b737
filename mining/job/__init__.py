"""The mining job: run the scorers over the catalogue in one streaming, resumable pass.

The loop's stage above :mod:`mining.scorers` (beside :mod:`mining.ranking`);
it imports nothing from review or learning.

- :mod:`~mining.job.mine`: :func:`~mining.job.mine.mine`, the job;
- :mod:`~mining.job.work`: what is left to score, the shards, the one writer;
- :mod:`~mining.job.executors`: inline or a local process pool, and the shard loop;
- :mod:`~mining.job.worker`: what a worker runs on a shard, the score-map PNGs;
- :mod:`~mining.job.lock`: one job at a time per catalogue;
- ``_dask`` (the dask.distributed backend, imported only when it is used) and
  ``_forkserver_preload`` (the process pool's forkserver).

Every name below is importable from :mod:`mining.job` (but ``mine``, the
module's name: ``from mining.job.mine import mine``); its module is imported
when the name is first asked for.
"""

from mining._lazy import lazy_exports

#: module: the public names it defines (imported when one of them is first asked for)
_EXPORTS = """
mine: BACKENDS START_METHODS SHARD_SIZE
work: LIST_CHUNK MineSummary iter_pending_work count_pending count_missing_maps pending_work write_shard
lock: CatalogueBusy lock_path catalogue_lock
worker: MAP_MAX_SIDE MAP_UNWRITABLE maps_dir save_map_png WORKER_MALLOC WORKER_MALLOC_ENV tune_worker_malloc
    die_with_parent BATCH_IMAGES BATCH_PIXELS score_shard WorkerDied
"""

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
