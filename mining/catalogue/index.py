"""Indexing: walk archive roots and record every image in the catalogue.

Incremental: a file whose size and modification time are unchanged is not
read again. Unreadable files are recorded with their reason and the job goes
on. Decoding runs in a thread pool (OpenCV and hashlib release the GIL); the
calling thread is the one writer.

Volumes (see :mod:`mining.io`): a multi-frame DICOM file or multi-page TIFF
is one image whose tiles are its frames (:func:`volume_tiles`, each frame
tiled further when it is larger than ``tile_size``); single-frame DICOM files
of one series are one image each, ordered into a volume after the walk
(``image_meta`` ``volume``, ``slice_index``, ``volume_slices``).
:func:`volumes` lists every volume's slices as ``(image_id, tile)`` units,
the units that get scores.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

from mining.catalogue.store import Store
from mining.io import (
    DEFAULT_MAX_PIXELS,
    DICOM_META_KEYS,
    IMAGE_EXTENSIONS,
    VOLUME_META_KEYS,
    ImageInfo,
    UnreadableImage,
    inspect_image,
)
from mining.tiling import needs_tiling, tile_grid

logger = logging.getLogger(__name__)

#: Reasons that may go away without the file changing; such files are retried.
_RETRY_REASONS = ("permission_denied",)


@dataclass
class IndexSummary:
    """What one indexing run did."""

    seen: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    missing: int = 0
    unreadable: Counter = field(default_factory=Counter)
    tiled: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """JSON-ready form: every field, the reasons sorted and the seconds rounded."""
        return {
            **{f.name: getattr(self, f.name) for f in fields(self)},
            "unreadable": dict(sorted(self.unreadable.items())),
            "seconds": round(self.seconds, 3),
        }


def walk_images(
    root: str, extensions: Iterable[str] = IMAGE_EXTENSIONS, *, visited: set[tuple[int, int]] | None = None
) -> Iterator[str]:
    """Yield image file paths under ``root`` (recursive, sorted, symbolic links included).

    Symbolic links to folders are followed, but each real folder (by device and
    inode) is walked once: a link to an ancestor (a loop) or a second link to
    the same folder is skipped with a log message, so every file is yielded
    under one folder path. Links to files are yielded like files (the reader
    decides whether their target is usable). Broken links and unreadable
    sub-folders are yielded or logged, never raised.

    Parameters
    ----------
    root : str
        A folder, or a single file (yielded as is).
    extensions : iterable of str, optional
        File extensions to yield (lower case, with the dot).
    visited : set of (int, int), optional
        ``(st_dev, st_ino)`` of folders already walked; updated. Share one set
        between roots so that overlapping roots are walked once.

    Yields
    ------
    str
        File paths.
    """
    exts = tuple(e.lower() for e in extensions)
    if os.path.isfile(root):
        yield root
        return
    visited = set() if visited is None else visited
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as err:
            logger.warning("cannot list %s: %s", folder, err)
            continue
        if (st.st_dev, st.st_ino) in visited:
            logger.info("skipping %s: the same folder was already walked (a symbolic link loop or duplicate)", folder)
            continue
        visited.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            logger.warning("cannot list %s: %s", folder, err)
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(entry.path)
            elif entry.name.lower().endswith(exts):
                yield entry.path
        stack.extend(reversed(subdirs))


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def catalogue_path(path: str) -> tuple[str, bool]:
    """The form of a file path stored in the catalogue, and whether it is the path itself.

    SQLite stores text as UTF-8. A file name that is not UTF-8 reaches Python
    with surrogate escapes (:func:`os.fsdecode`) that SQLite cannot encode; it
    is stored with its undecodable bytes as ``\\xNN`` escapes (``caf\\xe9.png``)
    and recorded as unreadable (reason ``bad_filename``), since no later
    command could open the file from that text.

    Parameters
    ----------
    path : str
        A path as the file system gave it.

    Returns
    -------
    text : str
        What the catalogue stores.
    exact : bool
        False when ``text`` is an escaped form.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace"), False
    return path, True


def _bad_filename(text: str) -> UnreadableImage:
    return UnreadableImage(
        text,
        "bad_filename",
        "file name is not valid UTF-8 (its bytes are shown as \\xNN); rename it to UTF-8, e.g. with convmv,"
        " and index again",
    )


def _inspect(path: str, max_pixels: int) -> ImageInfo | UnreadableImage:
    text, exact = catalogue_path(path)
    if not exact:
        return _bad_filename(text)
    try:
        return inspect_image(path, max_pixels=max_pixels)
    except UnreadableImage as err:
        return err
    except Exception as err:
        logger.exception("unexpected error reading %s", path)
        return UnreadableImage(path, "decode_error", f"{type(err).__name__}: {err}")


def _inspect_chunk(paths: list[str], max_pixels: int) -> list[ImageInfo | UnreadableImage]:
    return [_inspect(p, max_pixels) for p in paths]


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def index_archive(
    store: Store,
    roots: Iterable[str | os.PathLike],
    *,
    tile_size: int = 1024,
    tile_overlap: int = 64,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    workers: int | None = None,
    batch_size: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> IndexSummary:
    """Index image files under one or more roots into the catalogue.

    Parameters
    ----------
    store : Store
        The catalogue (the one writer).
    roots : iterable of path
        Folders (walked recursively) or single files.
    tile_size, tile_overlap : int, optional
        Images larger than ``tile_size`` either way are split into tiles of
        that size overlapping by ``tile_overlap`` pixels.
    max_pixels : int, optional
        Larger images are recorded as unreadable, reason ``too_large``.
    extensions : iterable of str, optional
        File extensions to index.
    workers : int, optional
        Decoding threads (default: CPU count).
    batch_size : int, optional
        Files per write transaction.
    progress : callable, optional
        Called as ``progress(done, total)`` after each batch.

    Returns
    -------
    IndexSummary
    """
    t0 = time.perf_counter()
    tile_grid(tile_size, tile_size, tile_size, tile_overlap)  # validates both numbers
    roots = [os.path.abspath(os.fspath(r)) for r in roots]
    for r in roots:
        if not os.path.exists(r):
            raise FileNotFoundError(f"archive root {r!r} does not exist")
        text, exact = catalogue_path(r)
        if not exact:
            raise ValueError(f"archive root '{text}' is not valid UTF-8; rename it to UTF-8 (e.g. with convmv)")
    summary = IndexSummary()
    known: dict[str, tuple[int, int, str]] = {}
    for r in roots:
        known.update(store.known_files(r if os.path.isdir(r) else None))
    marks = ",".join("?" * len(_RETRY_REASONS))
    retry = {r[0] for r in store.query(f"SELECT path FROM images WHERE reason IN ({marks})", _RETRY_REASONS)}
    todo: list[str] = []
    seen: set[str] = set()  # as stored (catalogue_path)
    visited: set[tuple[int, int]] = set()
    for root in roots:
        for path in walk_images(root, extensions, visited=visited):
            key, exact = catalogue_path(path)
            if key in seen:
                if not exact:
                    logger.warning("skipping %r: its escaped name %s is another file's name", path, key)
                continue
            seen.add(key)
            old = known.get(key)
            if old is not None and key not in retry:
                st = _stat(path)
                if st is not None and (st[0], st[1]) == (old[0], old[1]):
                    summary.unchanged += 1
                    continue
            todo.append(path)
    summary.seen = len(seen)
    run_id = store.start_run(
        "index", {"roots": roots, "tile_size": tile_size, "tile_overlap": tile_overlap, "max_pixels": max_pixels}
    )
    workers = workers or os.cpu_count() or 1
    done = 0
    chunk = max(1, min(64, len(todo) // (workers * 4) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for batch in _chunks(todo, batch_size):
            results = [
                r for part in pool.map(_inspect_chunk, _chunks(batch, chunk), [max_pixels] * len(batch)) for r in part
            ]
            _write_batch(store, batch, results, known, roots, tile_size, tile_overlap, summary)
            done += len(batch)
            if progress is not None:
                progress(done, len(todo))
    summary.missing = _mark_missing(store, roots, known, seen, tuple(e.lower() for e in extensions))
    order_series(store)
    summary.seconds = time.perf_counter() - t0
    store.finish_run(run_id, summary.as_dict())
    logger.info("indexed %s", summary.as_dict())
    return summary


def _root_of(path: str, roots: list[str]) -> str:
    for r in roots:
        if path == r or path.startswith(r.rstrip(os.sep) + os.sep):
            return r
    return os.path.dirname(path)


def _write_batch(store, paths, results, known, roots, tile_size, tile_overlap, summary) -> None:
    now = time.time()
    with store.transaction() as con:
        for fs_path, res in zip(paths, results, strict=True):
            path = catalogue_path(fs_path)[0]
            old = known.get(path)
            if isinstance(res, UnreadableImage):
                summary.unreadable[res.reason] += 1
                st = _lstat(fs_path)
                row = (
                    path,
                    _root_of(path, roots),
                    None,
                    st[0],
                    st[1],
                    None,
                    None,
                    None,
                    None,
                    "unreadable",
                    res.reason,
                    catalogue_path(res.detail[:500])[0],
                    now,
                )
            else:
                row = (
                    path,
                    _root_of(path, roots),
                    res.sha256,
                    res.bytes,
                    res.mtime_ns,
                    res.width,
                    res.height,
                    res.channels,
                    res.dtype,
                    "ok",
                    None,
                    None,
                    now,
                )
            image_id = con.execute(
                "INSERT INTO images (path, root, sha256, bytes, mtime_ns, width, height, channels, dtype,"
                " status, reason, detail, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(path) DO UPDATE SET root=excluded.root, sha256=excluded.sha256,"
                " bytes=excluded.bytes, mtime_ns=excluded.mtime_ns, width=excluded.width,"
                " height=excluded.height, channels=excluded.channels, dtype=excluded.dtype,"
                " status=excluded.status, reason=excluded.reason, detail=excluded.detail,"
                " indexed_at=excluded.indexed_at RETURNING id",
                row,
            ).fetchone()[0]
            if old is None:
                summary.new += 1
            else:
                summary.changed += 1
                # the content may differ: what was computed from the old file is stale
                for table in ("tiles", "scores", "embeddings", "map_coords"):
                    con.execute(f"DELETE FROM {table} WHERE image_id = ?", (image_id,))
            _write_meta(con, image_id, res.meta if isinstance(res, ImageInfo) else {}, path)
            if isinstance(res, ImageInfo) and res.frames > 1:
                con.execute("DELETE FROM tiles WHERE image_id = ?", (image_id,))
                grid = volume_tiles(res.frames, res.height // res.frames, res.width, tile_size, tile_overlap)
                con.executemany(
                    "INSERT INTO tiles (image_id, idx, y, x, h, w) VALUES (?, ?, ?, ?, ?, ?)",
                    [(image_id, i, *t) for i, t in enumerate(grid)],
                )
                summary.tiled += 1
            elif isinstance(res, ImageInfo) and needs_tiling(res.height, res.width, tile_size):
                grid = tile_grid(res.height, res.width, tile_size, tile_overlap)
                con.executemany(
                    "INSERT INTO tiles (image_id, idx, y, x, h, w) VALUES (?, ?, ?, ?, ?, ?)",
                    [(image_id, i, *t) for i, t in enumerate(grid)],
                )
                summary.tiled += 1


_INDEX_KEYS = (*DICOM_META_KEYS, *VOLUME_META_KEYS)


def _write_meta(con, image_id: int, meta: dict, path: str) -> None:
    """Replace the ``image_meta`` keys indexing writes (DICOM and volume keys); other keys are left alone."""
    con.execute(
        f"DELETE FROM image_meta WHERE image_id = ? AND key IN ({', '.join('?' * len(_INDEX_KEYS))})",
        (image_id, *_INDEX_KEYS),
    )
    meta = dict(meta)
    if int(meta.get("frames", 1)) > 1:  # a multi-frame file is a volume by itself
        meta.setdefault("volume", meta.get("series_uid") or path)
        meta["volume_slices"] = meta["frames"]
    if meta:
        con.executemany(
            "INSERT INTO image_meta (image_id, key, value) VALUES (?, ?, ?)",
            [(image_id, k, str(v)) for k, v in meta.items()],
        )


def volume_tiles(
    frames: int, frame_height: int, width: int, tile_size: int, overlap: int = 0
) -> list[tuple[int, int, int, int]]:
    """Tiles of a volume stored as frames stacked top to bottom: each frame's own tile grid, frame by frame.

    A frame no larger than ``tile_size`` is one tile, so tile ``k`` is slice
    ``k``; a larger frame is tiled like any image and never shares a tile
    with its neighbours.

    Parameters
    ----------
    frames, frame_height, width : int
        Number of frames and the size of one frame.
    tile_size, overlap : int
        As for :func:`mining.tiling.tile_grid`.

    Returns
    -------
    list of (y, x, h, w)
        In the stacked image's coordinates; slice of a tile = ``y // frame_height``.
    """
    grid = tile_grid(frame_height, width, tile_size, overlap)
    return [(y + k * frame_height, x, h, w) for k in range(frames) for y, x, h, w in grid]


def _float_or_none(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def order_series(store: Store) -> int:
    """Make each DICOM series of single-frame files a volume: ``volume``, ``slice_index``, ``volume_slices``.

    Slices are ordered by their position along the slice normal
    (``ImagePositionPatient`` on ``ImageOrientationPatient``) when every
    slice has one, else by ``InstanceNumber``, else by path. A series of one
    readable file is not a volume.

    Returns
    -------
    int
        Number of series volumes.
    """
    rows = store.query(
        "SELECT m.image_id, m.value AS series, i.path,"
        " (SELECT value FROM image_meta WHERE image_id = m.image_id AND key = 'slice_position') AS pos,"
        " (SELECT value FROM image_meta WHERE image_id = m.image_id AND key = 'instance_number') AS inst,"
        " (SELECT value FROM image_meta WHERE image_id = m.image_id AND key = 'frames') AS frames"
        " FROM image_meta m JOIN images i ON i.id = m.image_id"
        " WHERE m.key = 'series_uid' AND i.status = 'ok'"
    )
    series: dict[str, list] = {}
    for r in rows:
        if r["frames"] is None or int(r["frames"]) <= 1:
            series.setdefault(r["series"], []).append(r)
    n = 0
    with store.transaction() as con:
        con.execute(
            "DELETE FROM image_meta WHERE key IN ('slice_index', 'volume_slices', 'volume') AND image_id NOT IN"
            " (SELECT image_id FROM image_meta WHERE key = 'frames' AND CAST(value AS INTEGER) > 1)"
        )
        for uid, members in series.items():
            if len(members) < 2:
                continue
            if all(_float_or_none(m["pos"]) is not None for m in members):
                members.sort(key=lambda m: (float(m["pos"]), m["path"]))
            elif all(_float_or_none(m["inst"]) is not None for m in members):
                members.sort(key=lambda m: (float(m["inst"]), m["path"]))
            else:
                members.sort(key=lambda m: m["path"])
            con.executemany(
                "INSERT OR REPLACE INTO image_meta (image_id, key, value) VALUES (?, ?, ?)",
                [
                    (m["image_id"], k, v)
                    for i, m in enumerate(members)
                    for k, v in (("volume", uid), ("slice_index", str(i)), ("volume_slices", str(len(members))))
                ],
            )
            n += 1
    return n


def volumes(store: Store) -> dict[str, list[tuple[int, int]]]:
    """Every volume's slices in order, as the ``(image_id, tile)`` units that are scored.

    A multi-frame image gives ``(its id, tile)`` per frame (all tiles of a
    frame, when frames are tiled further); a series of files gives
    ``(image id, -1)`` per file, by ``slice_index``.

    Returns
    -------
    dict of str to list of (int, int)
        Volume key (series UID, or the file path of a multi-frame file
        without one) to its slices.
    """
    out: dict[str, list] = {}
    rows = store.query(
        "SELECT m.image_id, m.value AS volume,"
        " (SELECT value FROM image_meta WHERE image_id = m.image_id AND key = 'slice_index') AS idx,"
        " (SELECT value FROM image_meta WHERE image_id = m.image_id AND key = 'frames') AS frames"
        " FROM image_meta m JOIN images i ON i.id = m.image_id WHERE m.key = 'volume' AND i.status = 'ok'"
    )
    for r in sorted(rows, key=lambda r: (r["volume"], int(r["idx"] or 0), r["image_id"])):
        if r["frames"] is not None and int(r["frames"]) > 1:
            out.setdefault(r["volume"], []).extend((int(r["image_id"]), t[0]) for t in store.tiles(int(r["image_id"])))
        else:
            out.setdefault(r["volume"], []).append((int(r["image_id"]), -1))
    return out


def _lstat(path: str) -> tuple[int | None, int | None]:
    try:
        st = os.lstat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def _mark_missing(store: Store, roots: list[str], known: dict, seen: set[str], extensions: tuple) -> int:
    # only files this run would have seen: under its roots, with its extensions
    gone = [
        p
        for p, (_, _, status) in known.items()
        if p not in seen
        and status == "ok"
        and p.lower().endswith(extensions)
        and any(p.startswith(r.rstrip(os.sep) + os.sep) or p == r for r in roots)
    ]
    if not gone:
        return 0
    with store.transaction() as con:
        con.executemany(
            "UPDATE images SET status = 'unreadable', reason = 'missing',"
            " detail = 'file no longer in the archive' WHERE path = ?",
            [(p,) for p in gone],
        )
    return len(gone)
