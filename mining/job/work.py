"""The mining job's work: what is left to score, read in chunks, cut into shards, each written in one transaction."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from mining.catalogue.store import Store
from mining.job.worker import (
    MAP_UNWRITABLE,
)
from mining.scorers import Scorer

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
