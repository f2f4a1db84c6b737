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

#: public name -> the module that defines it (imported when the name is first asked for)
_EXPORTS = {
    "BACKENDS": "mine",
    "START_METHODS": "mine",
    "SHARD_SIZE": "mine",
    "LIST_CHUNK": "work",
    "MineSummary": "work",
    "iter_pending_work": "work",
    "count_pending": "work",
    "count_missing_maps": "work",
    "pending_work": "work",
    "write_shard": "work",
    "CatalogueBusy": "lock",
    "lock_path": "lock",
    "catalogue_lock": "lock",
    "MAP_MAX_SIDE": "worker",
    "MAP_UNWRITABLE": "worker",
    "maps_dir": "worker",
    "save_map_png": "worker",
    "WORKER_MALLOC": "worker",
    "WORKER_MALLOC_ENV": "worker",
    "tune_worker_malloc": "worker",
    "die_with_parent": "worker",
    "BATCH_IMAGES": "worker",
    "BATCH_PIXELS": "worker",
    "score_shard": "worker",
    "WorkerDied": "worker",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
