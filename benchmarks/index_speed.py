"""Indexing speed against plain OpenCV decoding of the same files, in one run.

Writes N PNGs of 256x256 to a temporary folder, then (repeated R times, medians
reported) decodes them with a plain ``cv2.imread`` loop, indexes them into a
fresh catalogue (first run) and indexes them again (incremental run).

    .venv/bin/python benchmarks/index_speed.py [--n 2000] [--repeats 5]

Goal (issue #2): first-run indexing at >= 50 % of the plain decode rate; the
incremental run well under half the time of the first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import cv2
import numpy as np

from mining.catalogue.index import index_archive
from mining.catalogue.store import Store


def make_pngs(folder: str, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    base = [cv2.GaussianBlur(rng.normal(128, 40, (256, 256)).astype(np.float32), (0, 0), 3) for _ in range(16)]
    paths = []
    for i in range(n):
        img = np.clip(base[i % 16] + rng.normal(0, 2, (256, 256)) + i % 50, 0, 255).astype(np.uint8)
        p = os.path.join(folder, f"img_{i:06d}.png")
        cv2.imwrite(p, img)
        paths.append(p)
    return paths


def plain_decode(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        img = cv2.imread(p, cv2.IMREAD_UNCHANGED)
        assert img is not None
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="raremine-index-bench-") as tmp:
        archive = os.path.join(tmp, "archive")
        os.makedirs(archive)
        paths = make_pngs(archive, a.n)
        plain_decode(paths)  # warm the page cache
        plain, first, second = [], [], []
        for r in range(a.repeats):
            plain.append(plain_decode(paths))
            db = os.path.join(tmp, f"c{r}.db")
            with Store(db) as s:
                t0 = time.perf_counter()
                res = index_archive(s, [archive])
                first.append(time.perf_counter() - t0)
                assert res.new == a.n and not res.unreadable
            with Store(db) as s:
                t0 = time.perf_counter()
                res = index_archive(s, [archive])
                second.append(time.perf_counter() - t0)
                assert res.unchanged == a.n
    med = statistics.median
    rate = {k: a.n / med(v) for k, v in (("plain", plain), ("first", first), ("second", second))}
    print(f"{a.n} PNGs of 256x256, {a.repeats} repeats, medians; {os.cpu_count()} CPUs")
    print(f"{'':<34}{'img/s':>10}{'seconds':>10}{'ratio to plain':>16}")
    print(f"{'plain cv2.imread loop (peer)':<34}{rate['plain']:>10.0f}{med(plain):>10.2f}{1.0:>16.2f}")
    print(
        f"{'raremine index, first run':<34}{rate['first']:>10.0f}{med(first):>10.2f}"
        f"{rate['first'] / rate['plain']:>16.2f}"
    )
    print(
        f"{'raremine index, incremental':<34}{rate['second']:>10.0f}{med(second):>10.2f}"
        f"{rate['second'] / rate['plain']:>16.2f}"
    )
    print(f"incremental / first time: {med(second) / med(first):.3f}")


if __name__ == "__main__":
    main()
