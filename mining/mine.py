"""Mining: run scorers over the catalogue in one streaming, resumable pass.

Work is split into shards of images. Workers (a local process pool, or the
calling process with ``backend="inline"``) read each image once, run every
scorer that has not scored it yet, save small overlay PNGs of the maps, and
return small results; the calling process is the one writer and commits each
shard in one transaction. A killed job therefore leaves only whole shards,
and running it again scores only what is missing.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from mining.io import DEFAULT_MAX_PIXELS, UnreadableImage, read_image
from mining.scorers import Scorer
from mining.store import Store
from mining.tiling import stitch_max

logger = logging.getLogger(__name__)

#: Largest side of a saved overlay PNG.
MAP_MAX_SIDE = 256

BACKENDS = ("inline", "process")


@dataclass
class MineSummary:
    """What one mining run did."""

    run_id: int | None = None
    done: int = 0
    skipped: int = 0
    failed: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {"run_id": self.run_id, "done": self.done, "skipped": self.skipped,
                "failed": dict(self.failed), "seconds": round(self.seconds, 3),
                "images_per_second": round(self.done / self.seconds, 2) if self.seconds else None}


def maps_dir(store_path: str) -> str:
    """Folder where overlay PNGs of a catalogue's score maps are kept."""
    base, _ = os.path.splitext(os.path.abspath(store_path))
    return base + ".maps"


def save_map_png(score_map: np.ndarray, path: str, value_range: tuple[float, float]) -> None:
    """Save a score map as a small 8-bit PNG (written to a temporary name, then renamed).

    Parameters
    ----------
    score_map : ndarray of shape (H, W)
    path : str
        Destination ``.png``.
    value_range : (float, float)
        Map values sent to 0 and 255.
    """
    lo, hi = value_range
    m = np.clip((np.asarray(score_map, np.float32) - lo) / max(hi - lo, 1e-12), 0, 1)
    m = np.nan_to_num(m, nan=0.0)
    scale = MAP_MAX_SIDE / max(m.shape)
    if scale < 1:
        size = (max(1, round(m.shape[1] * scale)), max(1, round(m.shape[0] * scale)))
        m = cv2.resize(m, size, interpolation=cv2.INTER_AREA)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.png"
    if not cv2.imwrite(tmp, (m * 255 + 0.5).astype(np.uint8)):
        raise OSError(f"could not write {tmp}")
    os.replace(tmp, path)


# -- the worker side ------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(scorers: Sequence[Scorer], maps_root: str | None, max_pixels: int) -> None:
    _WORKER["scorers"] = {s.name: s for s in scorers}
    _WORKER["maps_root"] = maps_root
    _WORKER["max_pixels"] = max_pixels
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _score_one(scorer: Scorer, image: np.ndarray, tiles: list) -> tuple[dict, list[dict]]:
    """Image-level result and per-tile results (tile scores; the image takes their max)."""
    if not tiles:
        r = scorer.score_image(image)
        return {"score": r.score, "stats": r.stats, "map": r.map, "embedding": r.embedding}, []
    per_tile, maps, boxes = [], [], []
    for idx, y, x, h, w in tiles:
        r = scorer.score_image(image[y : y + h, x : x + w])
        per_tile.append({"tile": idx, "score": r.score, "stats": r.stats, "embedding": r.embedding})
        if r.map is not None:
            maps.append(r.map)
            boxes.append((y, x, h, w))
    best = max(per_tile, key=lambda t: t["score"])
    full = stitch_max(maps, boxes, image.shape[:2]) if maps and len(maps) == len(tiles) else None
    stats = dict(best["stats"])
    stats["best_tile"] = best["tile"]
    return {"score": best["score"], "stats": stats, "map": full, "embedding": None}, per_tile


def score_shard(shard: list[dict]) -> list[dict]:
    """Score one shard in a worker; return small, picklable results.

    Each item of ``shard`` has ``image_id``, ``path``, ``tiles`` and
    ``scorers`` (names still missing for that image). Each result has
    ``image_id`` and either ``scores`` or ``failures``.
    """
    scorers: dict[str, Scorer] = _WORKER["scorers"]
    maps_root = _WORKER["maps_root"]
    out = []
    for item in shard:
        res = {"image_id": item["image_id"], "scores": [], "embeddings": [], "failures": []}
        try:
            image = read_image(item["path"], max_pixels=_WORKER["max_pixels"])
        except UnreadableImage as err:
            res["failures"].append({"scorer": None, "reason": err.reason, "detail": err.detail})
            out.append(res)
            continue
        for name in item["scorers"]:
            scorer = scorers[name]
            try:
                whole, tiles = _score_one(scorer, image, item["tiles"])
                map_path = None
                if maps_root is not None and whole["map"] is not None:
                    map_path = os.path.join(maps_root, name, f"{item['image_id']}.png")
                    save_map_png(whole["map"], map_path, scorer.map_range)
            except Exception as err:  # noqa: BLE001 - one bad image never kills the job
                logger.warning("scorer %s failed on %s: %s", name, item["path"], err)
                res["failures"].append({"scorer": name, "reason": "scorer_error",
                                        "detail": f"{type(err).__name__}: {err}"[:500]})
                continue
            res["scores"].append({"scorer": name, "tile": -1, "score": float(whole["score"]),
                                  "stats": _jsonable(whole["stats"]), "map_path": map_path})
            for t in tiles:
                res["scores"].append({"scorer": name, "tile": t["tile"], "score": float(t["score"]),
                                      "stats": _jsonable(t["stats"]), "map_path": None})
            if scorer.embedding_name is not None:
                if whole["embedding"] is not None:
                    res["embeddings"].append((scorer.embedding_name, -1, _vec(whole["embedding"])))
                for t in tiles:
                    if t["embedding"] is not None:
                        res["embeddings"].append((scorer.embedding_name, t["tile"], _vec(t["embedding"])))
        out.append(res)
    return out


def _vec(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype=np.float32).ravel().tobytes()


def _jsonable(stats: dict) -> dict:
    return {k: (float(v) if isinstance(v, (np.floating, np.integer, float)) else v) for k, v in stats.items()}


# -- the writer side ------------------------------------------------------------------
def pending_work(store: Store, scorers: Sequence[Scorer], *, rescore: bool = False) -> list[dict]:
    """Images that still miss a score from at least one streaming scorer."""
    streaming = [s.name for s in scorers if s.per_image]
    done = {name: (set() if rescore else store.scored_ids(name)) for name in streaming}
    failed = {}
    if not rescore:
        # images that failed a scorer before are not retried in every run
        for image_id, scorer in store.query("SELECT image_id, scorer FROM failures WHERE scorer IS NOT NULL"):
            failed.setdefault(scorer, set()).add(image_id)
    tiles: dict[int, list] = {}
    for row in store.query("SELECT image_id, idx, y, x, h, w FROM tiles ORDER BY image_id, idx"):
        tiles.setdefault(row[0], []).append(tuple(row[1:]))
    work = []
    for row in store.query("SELECT id, path FROM images WHERE status = 'ok' ORDER BY id"):
        missing = [n for n in streaming if row[0] not in done[n] and row[0] not in failed.get(n, ())]
        if missing:
            work.append({"image_id": row[0], "path": row[1], "tiles": tiles.get(row[0], []), "scorers": missing})
    return work


def write_shard(store: Store, results: list[dict], run_id: int | None) -> Counter:
    """Commit one shard's results in one transaction; return failure counts by reason."""
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
                [(iid, s["tile"], s["scorer"], s["score"], _dumps(s["stats"]), s["map_path"], run_id, now)
                 for s in res["scores"]],
            )
            con.executemany(
                "INSERT INTO embeddings (image_id, tile, name, vector, run_id) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(image_id, tile, name) DO UPDATE SET vector=excluded.vector, run_id=excluded.run_id",
                [(iid, tile, name, blob, run_id) for name, tile, blob in res["embeddings"]],
            )
            for f in res["failures"]:
                failed[f["reason"]] += 1
                con.execute(
                    "INSERT INTO failures (run_id, image_id, scorer, reason, detail, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, iid, f["scorer"], f["reason"], f["detail"], now),
                )
    return failed


def _dumps(stats: dict) -> str:
    import json

    return json.dumps(stats)


def _shards(work: list[dict], size: int) -> Iterator[list[dict]]:
    for i in range(0, len(work), size):
        yield work[i : i + size]


def mine(
    store: Store,
    scorers: Sequence[Scorer],
    *,
    backend: str = "process",
    workers: int = 2,
    shard_size: int = 64,
    save_maps: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    rescore: bool = False,
    config: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MineSummary:
    """Score every readable image of the catalogue with the given scorers.

    Parameters
    ----------
    store : Store
        The catalogue; this process is its one writer.
    scorers : sequence of Scorer
        Unprepared scorers; each is prepared here, then sent to the workers.
    backend : {"inline", "process"}, default="process"
        Where shards run: this process (debugging) or a local process pool.
    workers : int, default=2
        Processes for the ``process`` backend.
    shard_size : int, default=64
        Images per shard (and per write transaction).
    save_maps : bool, default=True
        Keep overlay PNGs of the score maps beside the catalogue.
    max_pixels : int, optional
        Decompression-bomb guard passed to the reader.
    rescore : bool, default=False
        Score again images that already have scores.
    config : dict, optional
        The effective configuration, stored with the run.
    progress : callable, optional
        ``progress(done, total)`` after each shard.

    Returns
    -------
    MineSummary
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    t0 = time.perf_counter()
    run_config = dict(config or {})
    run_config.setdefault("scorers", {s.name: s.config() for s in scorers})
    run_id = store.start_run("mine", run_config)
    summary = MineSummary(run_id=run_id)
    try:
        prepared = [s.prepare(store, run_id) for s in scorers]
        work = pending_work(store, prepared, rescore=rescore)
        total_ok = len(store.query("SELECT id FROM images WHERE status = 'ok'"))
        summary.skipped = total_ok - len(work)
        maps_root = maps_dir(store.path) if save_maps else None
        args = (prepared, maps_root, max_pixels)
        shards = list(_shards(work, shard_size))
        if backend == "inline" or not shards:
            _init_worker(*args)
            results_iter = map(score_shard, shards)
            summary = _consume(store, results_iter, run_id, summary, len(work), progress)
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=args) as pool:
                summary = _consume(store, pool.map(score_shard, shards), run_id, summary, len(work), progress)
        for s in prepared:
            s.finalize(store, run_id)
    except BaseException as err:
        summary.seconds = time.perf_counter() - t0
        store.finish_run(run_id, {**summary.as_dict(), "error": repr(err)}, status="failed")
        raise
    summary.seconds = time.perf_counter() - t0
    store.finish_run(run_id, summary.as_dict())
    logger.info("mined %s", summary.as_dict())
    return summary


def _consume(store, results_iter, run_id, summary, total, progress) -> MineSummary:
    for results in results_iter:
        failed = write_shard(store, results, run_id)
        summary.failed.update(failed)
        summary.done += sum(1 for r in results if r["scores"])
        if progress is not None:
            progress(summary.done + sum(summary.failed.values()), total)
    return summary
