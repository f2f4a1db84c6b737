"""Before/after speed of default ``raremine mine``: two code trees interleaved, with the PatchCore peer, N repeats.

On a shared machine the load changes from minute to minute, so the two trees
are run alternately on the same folder of images (fresh catalogue each time:
``raremine index`` then ``raremine mine`` with no config, 2 workers), and the
PatchCore peer of ``benchmarks/out_of_box.py`` runs after each pair on the
same files. Printed per run: the streaming pass's images/s, the whole run's
(prepare + streaming pass + finalize), each stage's seconds and the 1-minute
load average before it; then the medians.

Make a tree of a commit with ``git archive COMMIT | tar -x -C DIR``.

usage: python benchmarks/speed_ab.py IMAGES_DIR BEFORE_TREE AFTER_TREE [--repeats 3] [--peer-threads 1] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

PEER = """
import os, sys, time, torch
sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
import out_of_box as o
from mining.io import read_image
net = o._net()
torch.set_num_threads({threads})
arch = {arch!r}
images = [read_image(os.path.join(arch, p)) for p in sorted(os.listdir(arch))]
t0 = time.perf_counter()
o.patchcore_peer(net, images)
print(len(images) / (time.perf_counter() - t0))
"""


def mine_once(tree: str, images: str, db: str) -> dict:
    """Index ``images`` into a fresh ``db`` and mine it with the code of ``tree``; the run's counts."""
    env = dict(os.environ, PYTHONPATH=tree)
    env.setdefault("NUMBA_CACHE_DIR", os.path.join(tree, ".cache", "numba"))
    for suffix in ("", "-wal", "-shm", ".lock"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    py = [sys.executable, "-m", "raremine.cli"]
    subprocess.run([*py, "index", images, "--db", db], check=True, capture_output=True, env=env, cwd=tree)
    subprocess.run([*py, "mine", "--db", db], check=True, capture_output=True, env=env, cwd=tree)
    import sqlite3

    with sqlite3.connect(db) as con:
        row = con.execute("SELECT counts FROM runs WHERE kind = 'mine' ORDER BY id DESC LIMIT 1").fetchone()
    return json.loads(row[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images")
    ap.add_argument("trees", nargs=2, help="code trees: before, after")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/raremine_speed_ab")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    runs: dict[str, list[dict]] = {t: [] for t in a.trees}
    peer: list[float] = []
    for rep in range(a.repeats):
        for k, tree in enumerate(a.trees):
            load = os.getloadavg()[0]
            c = mine_once(tree, a.images, os.path.join(a.work, f"tree{k}.db"))
            t, n = c["timings"], c["done"]
            rec = {
                "stream_img_s": n / t["stream_s"],
                "run_img_s": n / c["seconds"],
                "prepare_s": t["prepare_s"],
                "stream_s": t["stream_s"],
                "finalize_s": t["finalize_s"],
                "load": load,
            }
            runs[tree].append(rec)
            print(rep, tree, {key: round(v, 2) for key, v in rec.items()}, flush=True)
        r = subprocess.run(
            [sys.executable, "-c", PEER.format(threads=a.peer_threads, arch=os.path.abspath(a.images))],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, PYTHONPATH=a.trees[0]),
            cwd=a.trees[0],
        )
        peer.append(float(r.stdout.strip().splitlines()[-1]))
        print(rep, "peer", round(peer[-1], 2), "load", round(os.getloadavg()[0], 2), flush=True)
    print(f"MEDIANS of {a.repeats} (peer {a.peer_threads} torch threads: {statistics.median(peer):.2f} img/s)")
    for tree in a.trees:
        med = {key: round(statistics.median(r[key] for r in runs[tree]), 2) for key in runs[tree][0]}
        print(tree, med, "stream/peer", round(med["stream_img_s"] / statistics.median(peer), 2))


if __name__ == "__main__":
    main()
