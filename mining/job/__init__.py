"""The mining job: run the scorers over the catalogue in shards (:func:`mining.mine.mine`).

The job's parts: :mod:`~mining.job.work` (what is left to score, shards, the one writer),
:mod:`~mining.job.executors` (inline, process pool) and :mod:`~mining.job.lock` (one job per catalogue).
"""
