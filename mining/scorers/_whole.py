"""Helpers for whole-archive scorer steps (``finalize``): read embeddings, write scores and map coordinates."""

from __future__ import annotations

import json
import time

import numpy as np

from mining.catalogue.store import Store


def load_embeddings(store: Store, name: str, tile: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Image ids and vectors stored under ``name`` (whole images by default).

    Returns
    -------
    ids : ndarray of shape (n,), int64
    vectors : ndarray of shape (n, d), float32
        Rows whose length differs from the most common one are left out.

    Raises
    ------
    ValueError
        When vectors of different lengths are stored under the name.
    """
    rows = store.query(
        "SELECT image_id, vector FROM embeddings WHERE name = ? AND tile = ? ORDER BY image_id", (name, tile)
    )
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    vecs = [np.frombuffer(r[1], dtype=np.float32) for r in rows]
    sizes = {len(v) for v in vecs}
    if len(sizes) > 1:
        raise ValueError(f"embeddings {name!r} have mixed lengths {sorted(sizes)}: rescore with --rescore")
    return np.array([r[0] for r in rows], np.int64), np.stack(vecs)


def write_scores(
    store: Store, scorer: str, ids: np.ndarray, scores: np.ndarray, stats: list[dict], run_id: int | None
) -> None:
    """Upsert whole-image scores of one scorer in one transaction (keeps existing map paths)."""
    now = time.time()
    with store.transaction() as con:
        con.executemany(
            "INSERT INTO scores (image_id, tile, scorer, score, stats, run_id, created_at)"
            " VALUES (?, -1, ?, ?, ?, ?, ?) ON CONFLICT(image_id, tile, scorer) DO UPDATE SET"
            " score=excluded.score, stats=excluded.stats, run_id=excluded.run_id, created_at=excluded.created_at",
            [
                (int(i), scorer, float(s), json.dumps(st), run_id, now)
                for i, s, st in zip(ids, scores, stats, strict=True)
            ],
        )


def write_map(store: Store, method: str, ids: np.ndarray, coords: np.ndarray, run_id: int | None) -> None:
    """Replace the 2-D map coordinates stored under ``method``."""
    with store.transaction() as con:
        con.execute("DELETE FROM map_coords WHERE method = ?", (method,))
        con.executemany(
            "INSERT INTO map_coords (image_id, tile, method, x, y, run_id) VALUES (?, -1, ?, ?, ?, ?)",
            [(int(i), method, float(x), float(y), run_id) for i, (x, y) in zip(ids, coords, strict=True)],
        )
