"""The mining job's workers: what runs in a worker process (or the caller, or a dask worker).

A worker reads each image of a shard once, runs every scorer that has not
scored it yet, saves small overlay PNGs of the maps and returns small,
picklable results (:func:`score_shard`); the job in :mod:`mining.mine` is the
one writer. The worker state (the prepared scorers, the maps folder, the
pixel limit) is set once per process by :func:`_init_worker` (process pool)
or kept per job token in :data:`_WORKER_BY_TOKEN` (dask, :mod:`mining._dask`).
Workers die with their job (Linux ``PR_SET_PDEATHSIG`` and a thread that
watches the job's pid) and tune glibc's allocator so that freed image memory
goes back to the system (:data:`WORKER_MALLOC`).

This module sits below :mod:`mining.mine` and :mod:`mining._dask`: both
import it, it imports neither.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from mining.catalogue.store import PATCH_SET_SUFFIX, pack_patch_set, process_alive
from mining.io import UnreadableImage, read_image
from mining.scorers import Scorer
from mining.tiling import stitch_max

logger = logging.getLogger(__name__)

#: Longest side of a stored overlay PNG (maps are downsampled to it).
MAP_MAX_SIDE = 256
#: Failure reason of a score kept without its map PNG (unwritable folder, full disk).
MAP_UNWRITABLE = "map_unwritable"


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
    ok, png = cv2.imencode(".png", (m * 255 + 0.5).astype(np.uint8))
    if not ok:
        raise ValueError(f"could not encode the map for {path} as PNG")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.png"
    try:  # written with Python's I/O so that a full disk raises with its errno (ENOSPC)
        with open(tmp, "wb") as f:
            f.write(png.tobytes())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # no half-written PNG is left behind
            os.unlink(tmp)
        raise


# -- the worker side ------------------------------------------------------------------
_WORKER: dict = {}
#: dask workers: token -> worker state, filled once per worker by :class:`ScorerPlugin`.
_WORKER_BY_TOKEN: dict[str, dict] = {}


def _worker_state(scorers: Sequence[Scorer], maps_root: str | None, max_pixels: int) -> dict:
    cv2.setNumThreads(1)
    torch = sys.modules.get("torch")  # only when a scorer already loaded it: importing torch costs ~200 MB
    if torch is not None:
        torch.set_num_threads(1)
    return {"scorers": {s.name: s for s in scorers}, "maps_root": maps_root, "max_pixels": max_pixels}


#: glibc malloc settings of the worker processes (mallopt parameter -> bytes). glibc serves blocks
#: above a dynamic threshold (128 KB at first) with mmap and returns free heap above 128 KB to the
#: system, so image-sized numpy temporaries keep costing fresh page faults (78,000 in 500 rounds of
#: 256 x 256 float32 temporaries, 190 with these settings). The process pool mined 256 x 256 PNGs
#: with the contrast scorer 12 % faster (median of 4 interleaved runs). Buffers are reused from the
#: heap; a worker keeps at most ``M_TRIM_THRESHOLD`` of free heap, whatever the job's length.
WORKER_MALLOC = {"M_MMAP_THRESHOLD": 32 * 2**20, "M_TRIM_THRESHOLD": 64 * 2**20}
#: the same settings as environment variables, for processes started fresh (dask's LocalCluster)
WORKER_MALLOC_ENV = {f"MALLOC_{name[2:]}_": str(value) for name, value in WORKER_MALLOC.items()}
_MALLOPT_PARAM = {"M_TRIM_THRESHOLD": -1, "M_MMAP_THRESHOLD": -3}  # glibc's <malloc.h>


def tune_worker_malloc() -> bool:
    """Apply :data:`WORKER_MALLOC` to this process with glibc's ``mallopt``.

    Returns
    -------
    bool
        True when every setting was accepted; False on other C libraries
        (nothing is changed there).
    """
    if not sys.platform.startswith("linux"):
        return False

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = True
    for name, value in WORKER_MALLOC.items():
        ok = bool(mallopt(_MALLOPT_PARAM[name], value)) and ok
    return ok


def _init_worker(scorers: Sequence[Scorer], maps_root: str | None, max_pixels: int) -> None:
    tune_worker_malloc()
    _WORKER.clear()
    _WORKER.update(_worker_state(scorers, maps_root, max_pixels))


#: prctl option of <linux/prctl.h>: the signal a process gets when its parent ends
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Linux: have this process killed (SIGKILL) when its parent process ends.

    The kernel's ``prctl(PR_SET_PDEATHSIG)``; the setting is not inherited
    across ``fork``, so each process of the chain (forkserver, worker) sets it.

    Returns
    -------
    bool
        True when set; False on other systems (nothing changes there).
    """
    if not sys.platform.startswith("linux"):
        return False

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0


def _watch_job(job_pid: int, interval: float = 0.5) -> None:
    """End this worker as soon as the job process ``job_pid`` is gone (a daemon thread).

    Waits on a pidfd where the system has one (no polling), else checks the
    pid every ``interval`` seconds. Covers what ``PR_SET_PDEATHSIG`` cannot:
    a job that died before the worker set it, other systems.
    """

    def watch() -> None:
        try:
            fd = os.pidfd_open(job_pid)
        except ProcessLookupError:
            os._exit(1)  # the job is already gone
        except (AttributeError, OSError):  # no pidfd on this system
            while process_alive(job_pid):
                time.sleep(interval)
            os._exit(1)
        select.select([fd], [], [])  # readable once the process has ended
        os._exit(1)

    threading.Thread(target=watch, name="raremine-job-watch", daemon=True).start()


def _init_pool_worker(job_pid: int, scorers: Sequence[Scorer], maps_root: str | None, max_pixels: int) -> None:
    """Initializer of the process pool's workers: die with the job, leave Ctrl+C to it, load the scorers."""
    die_with_parent()  # the worker's parent: the forkserver (which dies with the job) or the job
    _watch_job(job_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the whole process group: the job decides
    _init_worker(scorers, maps_root, max_pixels)


#: a worker decodes this many images (or fewer, see :data:`BATCH_PIXELS`) before scoring them
#: together, so that batched scorers (the autoencoder) run one network pass per batch.
BATCH_IMAGES = 32
#: pixel budget of one batch of decoded images: large images are scored in small batches.
BATCH_PIXELS = 16_000_000


def _units(image: np.ndarray, tiles: list, whole: bool = False) -> list[np.ndarray]:
    """What a scorer sees of one image: the whole image, or each of its tiles (views, no copy).

    ``whole`` (the scorer's :attr:`~mining.scorers.base.Scorer.whole_image`): the whole image even when it is tiled.
    """
    if whole or not tiles:
        return [image]
    return [image[y : y + h, x : x + w] for _idx, y, x, h, w in tiles]


def _combine(results: list, image_shape: tuple, tiles: list, whole: bool = False) -> tuple[dict, list[dict]]:
    """Image-level result and per-tile results (tile scores; the image takes their max).

    ``whole``: the scorer saw the whole image (see :func:`_units`): its one result is the image's, no tile rows.
    """
    if whole or not tiles:
        r = results[0]
        return {"score": r.score, "stats": r.stats, "map": r.map, "embedding": r.embedding, "patches": r.patches}, []
    per_tile, maps, boxes = [], [], []
    for (idx, y, x, h, w), r in zip(tiles, results, strict=True):
        per_tile.append({"tile": idx, "score": r.score, "stats": r.stats, "embedding": r.embedding})
        if r.map is not None:
            maps.append(r.map)
            boxes.append((y, x, h, w))
    best = max(per_tile, key=lambda t: t["score"])
    full = stitch_max(maps, boxes, image_shape[:2]) if maps and len(maps) == len(tiles) else None
    stats = dict(best["stats"])
    stats["best_tile"] = best["tile"]
    return {"score": best["score"], "stats": stats, "map": full, "embedding": None, "patches": None}, per_tile


def _score_units(scorer: Scorer, units: list[np.ndarray]) -> list:
    """``scorer.score_batch(units)``; when the batch raises, each unit alone, so that the
    error lands on the image that caused it. Returns one ScoreResult or exception per unit."""
    try:
        results = list(scorer.score_batch(units))
        if len(results) != len(units):
            raise RuntimeError(f"score_batch returned {len(results)} results for {len(units)} images")
        return results
    except Exception as err:  # retried one by one below, which attributes the error
        if len(units) == 1:
            return [err]
    out = []
    for u in units:
        try:
            out.append(scorer.score_image(u))
        except Exception as err:  # recorded as this image's failure
            out.append(err)
    return out


def _failure(name: str | None, err: BaseException) -> dict:
    return {"scorer": name, "reason": "scorer_error", "detail": f"{type(err).__name__}: {err}"[:500]}


def _decoded_batches(shard: list[dict], max_pixels: int) -> Iterator[list[tuple[dict, np.ndarray | None, dict]]]:
    """Decode a shard in batches of at most BATCH_IMAGES images and about BATCH_PIXELS pixels."""
    batch, pixels = [], 0
    for item in shard:
        res = {"image_id": item["image_id"], "scores": [], "embeddings": [], "failures": []}
        try:
            image = read_image(item["path"], max_pixels=max_pixels)
        except UnreadableImage as err:
            res["failures"].append({"scorer": None, "reason": err.reason, "detail": err.detail})
            image = None
        batch.append((item, image, res))
        pixels += 0 if image is None else image.shape[0] * image.shape[1]
        if len(batch) >= BATCH_IMAGES or pixels >= BATCH_PIXELS:
            yield batch
            batch, pixels = [], 0
    if batch:
        yield batch


def _score_batch(batch: list[tuple[dict, np.ndarray | None, dict]], scorers: dict, maps_root: str | None) -> None:
    """Score one decoded batch with every scorer its items still miss; fill each item's result."""
    names = list(dict.fromkeys(n for item, image, _ in batch if image is not None for n in item["scorers"]))
    for name in names:
        scorer = scorers[name]
        todo = [(item, image, res) for item, image, res in batch if image is not None and name in item["scorers"]]
        spans, units = [], []
        for item, image, _ in todo:
            u = _units(image, item["tiles"], scorer.whole_image)
            spans.append((len(units), len(units) + len(u)))
            units.extend(u)
        results = _score_units(scorer, units)
        for (item, image, res), (a, b) in zip(todo, spans, strict=True):
            mine_ = results[a:b]
            err = next((r for r in mine_ if isinstance(r, BaseException)), None)
            try:
                if err is not None:
                    raise err
                whole, tiles = _combine(mine_, image.shape, item["tiles"], scorer.whole_image)
            except Exception as e:  # one bad image never kills the job
                logger.warning("scorer %s failed on %s: %s", name, item["path"], e)
                res["failures"].append(_failure(name, e))
                continue
            map_path = None
            if maps_root is not None and whole["map"] is not None:
                path = os.path.join(maps_root, name, f"{item['image_id']}.png")
                try:
                    save_map_png(whole["map"], path, scorer.map_range)
                    map_path = path
                except Exception as e:  # maps are secondary: the score is kept, the missing map recorded
                    logger.debug("map of %s by %s not written: %s", item["path"], name, e)
                    detail = f"{path}: {type(e).__name__}: {e}"[:500]
                    res["failures"].append({"scorer": name, "reason": MAP_UNWRITABLE, "detail": detail})
            if not scorer.archive_stage:  # an archive-stage score is written by finalize(), final
                res["scores"].append(
                    {
                        "scorer": name,
                        "tile": -1,
                        "score": float(whole["score"]),
                        "stats": _jsonable(whole["stats"]),
                        "map_path": map_path,
                    }
                )
                for t in tiles:
                    res["scores"].append(
                        {
                            "scorer": name,
                            "tile": t["tile"],
                            "score": float(t["score"]),
                            "stats": _jsonable(t["stats"]),
                            "map_path": None,
                        }
                    )
            if scorer.embedding_name is not None:
                if whole["embedding"] is not None:
                    res["embeddings"].append((scorer.embedding_name, -1, _vec(whole["embedding"])))
                if whole["patches"] is not None:
                    res["embeddings"].append(
                        (scorer.embedding_name + PATCH_SET_SUFFIX, -1, pack_patch_set(whole["patches"]))
                    )
                for t in tiles:
                    if t["embedding"] is not None:
                        res["embeddings"].append((scorer.embedding_name, t["tile"], _vec(t["embedding"])))


def score_shard(shard: list[dict], state: dict | None = None) -> list[dict]:
    """Score one shard in a worker; return small, picklable results.

    The shard is decoded in batches (:data:`BATCH_IMAGES` images, about
    :data:`BATCH_PIXELS` pixels) and each scorer scores a batch with one
    :meth:`~mining.scorers.base.Scorer.score_batch` call; when that raises,
    the batch is scored image by image so the failure is recorded on the
    image that caused it.

    Parameters
    ----------
    shard : list of dict
        Each item has ``image_id``, ``path``, ``tiles`` and ``scorers``
        (names still missing for that image).
    state : dict, optional
        Worker state (scorers, maps folder, pixel limit); default: the one
        set up by the process pool's initializer.

    Returns
    -------
    list of dict
        One per item, in the shard's order: ``image_id``, ``scores``,
        ``embeddings`` and ``failures``.
    """
    state = _WORKER if state is None else state
    out = []
    for batch in _decoded_batches(shard, state["max_pixels"]):
        _score_batch(batch, state["scorers"], state["maps_root"])
        out.extend(res for _, _, res in batch)
    return out


def _vec(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype=np.float32).ravel().tobytes()


def _jsonable(stats: dict) -> dict:
    return {k: (float(v) if isinstance(v, (np.floating, np.integer, float)) else v) for k, v in stats.items()}


# -- listing the work -----------------------------------------------------------------


class WorkerDied(RuntimeError):
    """A worker died while running a shard.

    ``attributed`` is True when the death is known to be caused by this
    shard alone (it ran alone, or the dask scheduler says so).
    """

    def __init__(self, message: str, *, attributed: bool):
        super().__init__(message)
        self.attributed = attributed
