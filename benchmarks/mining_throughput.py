"""Mining throughput and memory at scale: process pool (1 and 2 workers) and a dask LocalCluster (2 workers).

For each archive size (default 10,000 and 100,000 PNGs of 256x256, written to
a temporary folder that is removed afterwards) this script

1. writes the archive: a few hundred distinct textures are PNG-encoded once;
   every file is one of them with its own ``tEXt`` chunk, so all files differ
   (own content hash) and cost the same to decode as real ones;
2. indexes it into a catalogue;
3. measures, each in a fresh subprocess and interleaved so that the machine's
   load hits peers alike: plain decoding (``mining.io.read_image`` of every
   file, with 1 and 2 processes), then ``mining.job.mine.mine`` with the cheap
   unsupervised scorers on a copy of the catalogue for process/1,
   process/2 and dask/2;
4. samples the resident memory (RSS) of the measured process (the writer)
   and of all its descendants (pool workers; dask nannies and workers) every
   0.2 s with psutil, and keeps the peaks.

It prints images/s, the ratio to plain decoding with the same number of
processes, peak RSS of the writer and of the largest worker, and the dask to
process-pool ratio; ``--out`` also writes every figure as JSON. Timings on a
shared machine are noisy: compare the ratios measured in the same run.

Usage::

    .venv/bin/python benchmarks/mining_throughput.py                    # 10k and 100k (long)
    .venv/bin/python benchmarks/mining_throughput.py --sizes 2000       # a quick look
    .venv/bin/python benchmarks/mining_throughput.py --runs decode/2 process/2 dask/2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np
import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


# -- the archive ----------------------------------------------------------------------------
def _textures(n: int, size: int, seed: int) -> list[bytes]:
    """``n`` distinct PNG-encoded textures (smooth noise, a few with a spot or a scratch)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        noise = rng.normal(128, 25, (size, size)).astype(np.float32)
        img = cv2.GaussianBlur(noise, (0, 0), float(rng.uniform(0.8, 2.5)))
        img += np.linspace(-20, 20, size, dtype=np.float32)[None, :] * rng.uniform(-1, 1)
        if i % 37 == 0:
            cv2.circle(img, tuple(int(v) for v in rng.integers(20, size - 20, 2)), int(rng.integers(3, 8)), 250, -1)
        if i % 53 == 0:
            p = rng.integers(10, size - 10, 4)
            cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), 40, 2)
        ok, buf = cv2.imencode(".png", np.clip(img, 0, 255).astype(np.uint8))
        assert ok
        out.append(buf.tobytes())
    return out


def _with_text_chunk(png: bytes, text: bytes) -> bytes:
    """Insert a ``tEXt`` chunk after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    data = b"Comment\x00" + text
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:33] + chunk + png[33:]


def write_archive(root: str, n: int, *, distinct: int = 300, size: int = 256, seed: int = 0) -> float:
    """Write ``n`` PNGs under ``root`` (1,000 per folder); return seconds."""
    t0 = time.perf_counter()
    bases = _textures(distinct, size, seed)
    for i in range(n):
        folder = os.path.join(root, f"{i // 1000:04d}")
        if i % 1000 == 0:
            os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"img_{i:07d}.png"), "wb") as fh:
            fh.write(_with_text_chunk(bases[i % distinct], str(i).encode()))
    return time.perf_counter() - t0


# -- measured children ------------------------------------------------------------------------
def _decode_chunk(paths: list[str]) -> int:
    from mining.io import read_image

    for p in paths:
        read_image(p)
    return len(paths)


def child_decode(db: str, workers: int) -> dict:
    """Plain decoding of every catalogued file with ``workers`` processes (paths streamed in chunks)."""
    from mining.catalogue.store import Store

    def chunks():
        with Store(db, readonly=True) as store:
            last = -1
            while True:
                rows = store.query(
                    "SELECT id, path FROM images WHERE status = 'ok' AND id > ? ORDER BY id LIMIT 256", (last,)
                )
                if not rows:
                    return
                last = rows[-1][0]
                yield [r[1] for r in rows]

    t0 = time.perf_counter()
    n = 0
    if workers == 1:
        for c in chunks():
            n += _decode_chunk(c)
    else:
        with ProcessPoolExecutor(workers) as pool:
            pending = []
            for c in chunks():
                pending.append(pool.submit(_decode_chunk, c))
                if len(pending) >= 4 * workers:
                    n += pending.pop(0).result()
            n += sum(f.result() for f in pending)
    seconds = time.perf_counter() - t0
    return {"images": n, "seconds": seconds, "images_per_second": n / seconds}


def child_mine(
    db: str,
    backend: str,
    workers: int,
    scorers: list[str],
    save_maps: bool,
    shard_size: int | None,
    start_method: str = "forkserver",
) -> dict:
    """One mining job, as ``raremine mine`` would run it."""
    from mining.catalogue.store import Store
    from mining.job.mine import mine
    from mining.scorers import get_scorer

    with Store(db) as store:
        s = mine(
            store,
            [get_scorer(n) for n in scorers],
            backend=backend,
            workers=workers,
            save_maps=save_maps,
            shard_size=shard_size,
            start_method=start_method,
        )
    d = s.as_dict()
    return {
        "images": s.done,
        "seconds": d["timings"]["stream_s"],
        "wall_seconds": s.seconds,
        "startup_seconds": d["timings"].get("startup_s", 0.0),
        "images_per_second": d["images_per_second"],
        "failed": d["failed"],
    }


def measure(args: list[str]) -> dict:
    """Run this script's ``_child`` mode in a subprocess; sample RSS of it and its descendants."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "_child", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    ps = psutil.Process(proc.pid)
    peak_writer = peak_worker = peak_total = 0
    while proc.poll() is None:
        try:
            own = ps.memory_info().rss
            kids = []
            for c in ps.children(recursive=True):
                try:
                    kids.append(c.memory_info().rss)
                except psutil.Error:
                    pass
        except psutil.Error:
            break
        peak_writer = max(peak_writer, own)
        peak_worker = max(peak_worker, max(kids, default=0))
        peak_total = max(peak_total, own + sum(kids))
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"measured child failed ({args}):\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res.update(
        peak_rss_writer_mb=peak_writer / 2**20,
        peak_rss_worker_mb=peak_worker / 2**20,
        peak_rss_total_mb=peak_total / 2**20,
    )
    return res


# -- the benchmark ----------------------------------------------------------------------------
PLAN = (("decode", 2), ("process", 2), ("dask", 2), ("decode", 1), ("process", 1))


def run_size(
    n: int, tmp: str, scorers: list[str], save_maps: bool, shard_size: int | None, log, checkpoint=None, only=None
) -> dict:
    from mining.catalogue.index import index_archive
    from mining.catalogue.store import Store

    root = os.path.join(tmp, f"archive_{n}")
    res: dict = {"images": n, "scorers": scorers, "save_maps": save_maps, "shard_size": shard_size}
    res["write_seconds"] = write_archive(root, n)
    log(f"[{n}] wrote archive in {res['write_seconds']:.0f}s")
    base = os.path.join(tmp, f"base_{n}.db")
    t0 = time.perf_counter()
    with Store(base) as store:
        s = index_archive(store, [root])
    res["index_seconds"] = time.perf_counter() - t0
    log(f"[{n}] indexed {s.seen} files in {res['index_seconds']:.0f}s")
    runs = res["runs"] = {}
    plan = [(k, w) for k, w in PLAN if only is None or f"{k}/{w}" in only]
    for kind, w in plan:
        key = f"{kind}/{w}"
        if kind == "decode":
            runs[key] = measure(["decode", base, str(w)])
        else:
            db = os.path.join(tmp, f"mine_{n}_{kind}_{w}.db")
            shutil.copy(base, db)
            runs[key] = measure(["mine", db, kind, str(w), ",".join(scorers), str(int(save_maps)), str(shard_size)])
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.remove(db + suffix)
            shutil.rmtree(os.path.splitext(db)[0] + ".maps", ignore_errors=True)
        r = runs[key]
        if checkpoint is not None:
            checkpoint(res)
        log(
            f"[{n}] {key:<10} {r['images_per_second']:8.1f} img/s  peak RSS writer {r['peak_rss_writer_mb']:6.0f} MB"
            f"  largest worker {r['peak_rss_worker_mb']:6.0f} MB  all {r['peak_rss_total_mb']:6.0f} MB"
        )
    for kind, w in plan:
        if kind != "decode" and f"decode/{w}" in runs:
            runs[f"{kind}/{w}"]["ratio_to_decode"] = (
                runs[f"{kind}/{w}"]["images_per_second"] / runs[f"decode/{w}"]["images_per_second"]
            )
    if "dask/2" in runs and "process/2" in runs:
        res["dask_over_process"] = runs["dask/2"]["images_per_second"] / runs["process/2"]["images_per_second"]
    shutil.rmtree(root, ignore_errors=True)
    return res


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        mode, *a = sys.argv[2:]
        if mode == "decode":
            out = child_decode(a[0], int(a[1]))
        else:
            out = child_mine(
                a[0], a[1], int(a[2]), a[3].split(","), bool(int(a[4])), None if a[5] == "None" else int(a[5]), *a[6:]
            )
        print(json.dumps(out))
        return
    from mining.scorers import available_scorers

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument(
        "--scorers",
        default=None,
        help="comma-separated (default: the cheap unsupervised ones available: contrast, embedding)",
    )
    ap.add_argument("--maps", action="store_true", help="also save overlay PNGs of the maps (off by default)")
    ap.add_argument("--shard-size", type=int, default=None, help="default: the backend's (mine.SHARD_SIZE)")
    ap.add_argument(
        "--runs",
        nargs="+",
        default=None,
        choices=[f"{k}/{w}" for k, w in PLAN],
        help="measure only these (default: all; the dask/process ratio needs dask/2 and process/2)",
    )
    ap.add_argument("--tmp", default=None, help="parent of the temporary folder (default: the system's)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    scorers = (
        args.scorers.split(",") if args.scorers else [n for n in ("contrast", "embedding") if n in available_scorers()]
    )

    def log(msg: str) -> None:
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    log(f"scorers {scorers}, maps {'on' if args.maps else 'off'}, CPUs {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    results = []
    tmp = tempfile.mkdtemp(prefix="raremine-bench-", dir=args.tmp)
    try:

        def checkpoint(partial: dict) -> None:  # every measurement is kept, even if a later one never ends
            if args.out:
                with open(args.out, "w") as fh:
                    json.dump([*results, partial], fh, indent=1)

        for n in args.sizes:
            results.append(run_size(n, tmp, scorers, args.maps, args.shard_size, log, checkpoint, args.runs))
            if args.out:
                with open(args.out, "w") as fh:
                    json.dump(results, fh, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("\nimages  run         img/s  x decode  writer MB  worker MB  all MB")
    for r in results:
        for key, m in r["runs"].items():
            ratio = f"{m['ratio_to_decode']:8.2f}" if "ratio_to_decode" in m else "       -"
            print(
                f"{r['images']:>7} {key:<10} {m['images_per_second']:7.1f} {ratio}  {m['peak_rss_writer_mb']:9.0f}"
                f"  {m['peak_rss_worker_mb']:9.0f}  {m['peak_rss_total_mb']:6.0f}"
            )
        if "dask_over_process" in r:
            print(f"{r['images']:>7} dask/2 over process/2: {r['dask_over_process']:.2f}")
    if len(results) >= 2:
        small, big = results[0], results[-1]
        for key in ("process/1", "process/2", "dask/2"):
            if key not in small["runs"] or key not in big["runs"]:
                continue
            a, b = small["runs"][key], big["runs"][key]
            print(
                f"peak RSS {key} at {big['images']} / at {small['images']}: writer "
                f"{b['peak_rss_writer_mb'] / a['peak_rss_writer_mb']:.2f}, largest worker "
                f"{b['peak_rss_worker_mb'] / max(a['peak_rss_worker_mb'], 1e-9):.2f}, all "
                f"{b['peak_rss_total_mb'] / a['peak_rss_total_mb']:.2f}"
            )


if __name__ == "__main__":
    main()
