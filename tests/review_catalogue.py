"""A small, fully populated catalogue for the review app's tests and benchmark.

Images are indexed by the real indexer; scores, overlay maps, embeddings and
map coordinates are written directly (cheap and deterministic), and the round
of candidates comes from the real ``mining.ranking.rank.rank``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from mining.catalogue.index import index_archive
from mining.catalogue.store import Store
from mining.job.mine import maps_dir, save_map_png
from mining.ranking.rank import rank


def build_catalogue(
    folder: str | os.PathLike,
    *,
    n: int = 12,
    size: int = 96,
    seed: int = 0,
    n_candidates: int | None = None,
    missing: tuple[int, ...] = (),
    sixteen_bit: tuple[int, ...] = (),
    with_map: bool = True,
    width: int | None = None,
) -> dict:
    """Write ``n`` PNGs (every fourth with a bright blob), index, score and rank them.

    Parameters
    ----------
    folder : path
        Gets ``archive/`` and ``catalogue.db``.
    n, size, seed : int
    n_candidates : int, optional
        Candidates in round 1 (default: all images).
    missing : tuple of int
        Indices of images deleted after indexing (to test missing files).
    sixteen_bit : tuple of int
        Indices written as 16-bit PNGs.
    with_map : bool
        Write embeddings and 2-D map coordinates.
    width : int, optional
        Image width (default ``size``: square images); the blobs are 15 px wide whatever the size.

    Returns
    -------
    dict
        ``db`` (path), ``root``, ``paths`` (list, by index), ``ids`` (image id by path),
        ``blobs`` (the centre (x, y) of the bright blob by path, for images that have one).
    """
    folder = Path(folder)
    root = folder / "archive"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    width = width or size
    blobs = {}
    for i in range(n):
        img = np.clip(cv2.GaussianBlur(rng.normal(120, 25, (size, width)).astype(np.float32), (0, 0), 2), 0, 255)
        if i % 4 == 0:
            blobs[i] = (int(rng.integers(20, width - 20)), int(rng.integers(20, size - 20)))
            cv2.circle(img, blobs[i], 7, 250, -1)
        p = root / f"img_{i:03d}.png"
        if i in sixteen_bit:
            cv2.imwrite(str(p), (img * 257).astype(np.uint16))
        else:
            cv2.imwrite(str(p), img.astype(np.uint8))
        paths.append(str(p))
    db = str(folder / "catalogue.db")
    with Store(db) as store:
        index_archive(store, [str(root)], workers=1)
        ids = {r["path"]: r["id"] for r in store.images()}
        now = time.time()
        rows, emb, coords = [], [], []
        for p in paths:
            img = cv2.imread(p, cv2.IMREAD_UNCHANGED).astype(np.float32)
            img /= 65535.0 if img.max() > 255 else 255.0
            resid = np.abs(img - cv2.GaussianBlur(img, (0, 0), 4))
            mp = os.path.join(maps_dir(db), "contrast", f"{ids[p]}.png")
            save_map_png(resid, mp, (0.0, 0.5))
            rows.append((ids[p], -1, "contrast", float(resid.max()), json.dumps({"max": float(resid.max())}), mp, now))
            hist = np.histogram(img, bins=8, range=(0, 1))[0].astype(np.float32) + 1
            emb.append((ids[p], -1, "hist", hist.tobytes()))
            coords.append((ids[p], -1, "umap", float(hist[-1] + rng.normal()), float(hist[3] + rng.normal())))
        with store.transaction() as con:
            con.executemany(
                "INSERT INTO scores (image_id, tile, scorer, score, stats, map_path, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if with_map:
                con.executemany("INSERT INTO embeddings (image_id, tile, name, vector) VALUES (?, ?, ?, ?)", emb)
                con.executemany("INSERT INTO map_coords (image_id, tile, method, x, y) VALUES (?, ?, ?, ?, ?)", coords)
        rank(store, n=n_candidates or n)
    for i in missing:
        os.unlink(paths[i])
    return {"db": db, "root": str(root), "paths": paths, "ids": ids, "blobs": {paths[i]: xy for i, xy in blobs.items()}}


def clone_catalogue(cat: dict, folder: str | os.PathLike) -> dict:
    """Copy a built catalogue (archive, maps, database) to ``folder``, rewriting its paths.

    Much cheaper than building a new one for every test.
    """
    import shutil
    import sqlite3

    src = str(Path(cat["db"]).parent)
    dst = str(folder)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    db = os.path.join(dst, os.path.basename(cat["db"]))
    con = sqlite3.connect(db)
    with con:
        for table, col in (("images", "path"), ("images", "root"), ("scores", "map_path")):
            con.execute(
                f"UPDATE {table} SET {col} = ? || substr({col}, ?) WHERE {col} LIKE ? || '%'", (dst, len(src) + 1, src)
            )
    con.close()
    paths = [p.replace(src, dst, 1) for p in cat["paths"]]
    return {
        "db": db,
        "root": cat["root"].replace(src, dst, 1),
        "paths": paths,
        "ids": {p.replace(src, dst, 1): i for p, i in cat["ids"].items()},
        "blobs": {p.replace(src, dst, 1): xy for p, xy in cat.get("blobs", {}).items()},
    }
