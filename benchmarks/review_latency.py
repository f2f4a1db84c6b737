"""Review app latency in a real browser: verdict key press -> next candidate shown.

Starts the app on a free loopback port, opens the queue in Debian's chromium
(Playwright, no browser download), presses verdict keys and times each one
until the next candidate's header is on the screen (the figure the goal is
set on) and until the viewer has drawn its picture. As a peer measured in
the same run it also times the "next" key (J), which redraws the page without
writing a vote; the machine is shared, so compare medians and the ratio.

usage:
    python benchmarks/review_latency.py                     # small synthetic catalogue
    python benchmarks/review_latency.py --db CATALOGUE      # your own catalogue (votes as 'bench-...')
    python benchmarks/review_latency.py --build-magnetic DIR [--n-images 300]
        # copy a few hundred magnetic-tile images (about 3 % defective) to DIR/archive,
        # index, mine with the contrast scorer, add histogram embeddings and a 2-D PCA
        # map (demo data for the app's map), rank 24 candidates; then measure on it
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rare_data import MAGNETIC_TILE as MAGNETIC  # noqa: E402 (benchmarks/rare_data.py, beside this script)

from tests import review_browser as rb  # noqa: E402


def build_magnetic(folder: Path, n_images: int, seed: int = 0) -> str:
    """A realistic catalogue from the magnetic-tile data; returns its path."""
    import cv2
    import numpy as np

    from mining.catalogue.store import Store

    if not MAGNETIC.is_dir():
        sys.exit(f"magnetic-tile data not found at {MAGNETIC}")
    rng = random.Random(seed)
    free = sorted((MAGNETIC / "MT_Free" / "Imgs").glob("*.jpg"))
    defects = [
        p
        for d in ("MT_Blowhole", "MT_Crack", "MT_Break", "MT_Fray", "MT_Uneven")
        for p in sorted((MAGNETIC / d / "Imgs").glob("*.jpg"))
    ]
    n_def = max(2, round(0.03 * n_images))
    chosen = rng.sample(free, n_images - n_def) + rng.sample(defects, n_def)
    archive = folder / "archive"
    archive.mkdir(parents=True, exist_ok=True)
    for p in chosen:
        shutil.copyfile(p, archive / f"{p.parent.parent.name}_{p.name}")
    db = str(folder / "catalogue.db")
    raremine = [sys.executable, "-m", "raremine.cli"]
    subprocess.run([*raremine, "index", str(archive), "--db", db], check=True)
    subprocess.run([*raremine, "mine", "--db", db, "--scorers", "contrast", "--workers", "2"], check=True)
    with Store(db) as store:
        rows = store.images()
        feats = []
        for r in rows:
            img = cv2.imread(r["path"], cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
            h = np.histogram(img, bins=16, range=(0, 1))[0].astype(np.float32)
            feats.append(np.concatenate([h / h.sum(), [img.std(), np.abs(np.diff(img, axis=1)).mean()]]))
        x = np.asarray(feats, np.float32)
        z = (x - x.mean(0)) / (x.std(0) + 1e-6)
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        xy = z @ vt[:2].T
        with store.transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO embeddings (image_id, tile, name, vector) VALUES (?, -1, ?, ?)",
                [(r["id"], "histogram", v.tobytes()) for r, v in zip(rows, x, strict=True)],
            )
            con.executemany(
                "INSERT OR REPLACE INTO map_coords (image_id, tile, method, x, y) VALUES (?, -1, ?, ?, ?)",
                [(r["id"], "pca", float(a), float(b)) for r, (a, b) in zip(rows, xy, strict=True)],
            )
    subprocess.run([*raremine, "rank", "--db", db, "--n", "24"], check=True, stdout=subprocess.DEVNULL)
    return db


def measure(db: str, presses: int, warmup: int = 2) -> dict:
    """Median seconds from a verdict key to the next candidate (header; picture drawn), and from J (peer)."""
    reviewer = f"bench-{int(time.time())}"
    header, picture, nxt = [], [], []
    with rb.run_app(db) as url, rb.browser() as b:
        page = rb.open_queue(b, url, reviewer)
        if rb.header(page) is None:
            sys.exit("the queue is empty for a new reviewer; rank a new round first")
        for i in range(warmup + presses):
            h, d = rb.press_and_measure(page, "n" if i % 2 else "y")
            if i >= warmup:
                header.append(h)
                if d is not None:
                    picture.append(d)
            if rb.header(page) is None or "· 0 left" in rb.header(page) or "· 1 left" in rb.header(page):
                break  # the end of the queue is near: no J / K round trip past it
            # the peer: J moves on without a vote; K comes back so the queue is not skipped
            if i >= warmup:
                nxt.append(rb.press_and_wait(page, "j", image=True))
                rb.press_and_wait(page, "k", image=True)

    def ms(xs, q=0.5):
        return (
            round(1000 * sorted(xs)[int(q * (len(xs) - 1))], 1) if q != 0.5 else round(1000 * statistics.median(xs), 1)
        )

    return {
        "reviewer": reviewer,
        "n": len(header),
        "verdict_median_ms": ms(header),
        "verdict_p90_ms": ms(header, 0.9),
        "picture_median_ms": ms(picture) if picture else None,
        "picture_p90_ms": ms(picture, 0.9) if picture else None,
        "next_median_ms": ms(nxt) if nxt else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="catalogue to measure on (votes go in as reviewer bench-...)")
    ap.add_argument("--build-magnetic", metavar="DIR", help="build a magnetic-tile catalogue in DIR and use it")
    ap.add_argument("--n-images", type=int, default=300)
    ap.add_argument("--presses", type=int, default=12)
    a = ap.parse_args()
    reason = rb.skip_reason()
    if reason:
        sys.exit(reason)
    if a.build_magnetic:
        db = build_magnetic(Path(a.build_magnetic), a.n_images)
    elif a.db:
        db = a.db
    else:
        from tests.review_catalogue import build_catalogue

        db = build_catalogue(tempfile.mkdtemp(prefix="review_latency_"), n=2 * a.presses + 8, size=256)["db"]
    res = measure(db, a.presses)
    print(json.dumps(res))
    print(
        f"median verdict key -> next candidate's header shown: {res['verdict_median_ms']:.0f} ms "
        f"(p90 {res['verdict_p90_ms']:.0f} ms, n={res['n']}; goal <= 150 ms); "
        f"-> its picture drawn by the viewer: {res['picture_median_ms']:.0f} ms (p90 {res['picture_p90_ms']:.0f} ms); "
        f"peer 'next' key without a vote, to the picture: {res['next_median_ms']:.0f} ms; "
        f"load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
