"""Does the ``autoencoder`` scorer alone find rare defects? recall@10 % and AP per archive.

Each archive directory holds ``archive/`` (the images) and ``truth.csv``
(``path,label[,category,mask]``), as written by
the archive builder (``$RAREMINE_ARCHIVE_TOOL``). For each archive and each variant the
archive is indexed and mined through the command line with only the
autoencoder scorer, then its image scores are compared with the truth
(:func:`mining.metrics.recall_at_fraction`, :func:`mining.metrics.average_precision`).
Milliseconds per image are the ``mine`` wall time (training in ``prepare``
included) divided by the number of images, and the training time alone is
read from the log.

usage: python benchmarks/autoencoder_signal.py ARCHIVE_DIR [ARCHIVE_DIR ...]
       [--variant NAME=SETTINGS ...] [--workers 2] [--out results.json]

``--variant`` takes a name and ``;``-separated ``--set`` overrides, e.g.
``--variant 'pixels=autoencoder.kind=pixels'`` (the pixel autoencoder),
``--variant 'patches=autoencoder.pooling=patches'`` (the patch-feature
autoencoder) and ``--variant 'global='`` (the defaults: global pooling).
All three are the default.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from mining.catalogue.store import Store  # noqa: E402
from mining.learning.simulate import read_truth  # noqa: E402
from mining.metrics import average_precision, recall_at_fraction  # noqa: E402

DEFAULT_VARIANTS = ("pixels=autoencoder.kind=pixels", "patches=autoencoder.pooling=patches", "global=")


def _cli(args: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "raremine.cli", *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise RuntimeError(f"raremine {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout + proc.stderr


def run_one(archive: Path, sets: list[str], workers: int, tmp: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    db = tmp / f"{archive.name}.db"
    for p in tmp.glob(f"{archive.name}.*"):
        if p.is_file():
            p.unlink()
    _cli(["index", str(archive / "archive"), "--db", str(db)], env)
    args = ["mine", "--db", str(db), "--set", "mine.scorers=[autoencoder]", "--set", "mine.save_maps=false"]
    args += ["--workers", str(workers)]
    for s in sets:
        args += ["--set", s]
    wall, log = _cli(args, env)
    with Store(db) as store:
        truth = read_truth(archive / "truth.csv", store)
        rows = store.query("SELECT image_id, score FROM scores WHERE scorer = 'autoencoder' AND tile = -1")
    score = {int(r[0]): float(r[1]) for r in rows}
    s = np.array([score.get(int(i), -np.inf) for i in truth.image_ids])
    m = re.search(r"autoencoder[^\n]*trained[^\n]*?in ([0-9.]+) s", log)
    return {
        "n": len(s),
        "defects": int(truth.label.sum()),
        "recall10": recall_at_fraction(truth.label, s, 0.10),
        "ap": average_precision(truth.label, s),
        "ms_per_image": 1000 * wall / len(s),
        "train_s": float(m.group(1)) if m else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archives", nargs="+", type=Path)
    ap.add_argument("--variant", action="append", default=None, help="NAME=key=value;key=value (repeatable)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="JSON results (appended per archive)")
    a = ap.parse_args(argv)
    variants = []
    for v in a.variant or DEFAULT_VARIANTS:
        name, _, rest = v.partition("=")
        variants.append((name, [s for s in rest.split(";") if s]))
    results = json.loads(a.out.read_text()) if a.out and a.out.exists() else {}
    with tempfile.TemporaryDirectory(prefix="ae-signal-") as td:
        for archive in a.archives:
            for name, sets in variants:
                r = run_one(archive, sets, a.workers, Path(td))
                results.setdefault(archive.name, {})[name] = r
                print(
                    f"{archive.name:24s} {name:8s} recall@10%={r['recall10']:.2f} AP={r['ap']:.3f} "
                    f"{r['ms_per_image']:.1f} ms/image (train {r['train_s']} s) n={r['n']} defects={r['defects']}",
                    flush=True,
                )
                if a.out:
                    a.out.write_text(json.dumps(results, indent=1))
    names = [n for n, _ in variants]
    print("\n| archive | " + " | ".join(f"{n} recall@10% | {n} AP | {n} ms/img" for n in names) + " |")
    print("|---" * (1 + 3 * len(names)) + "|")
    for arch, rs in results.items():
        cells = []
        for n in names:
            r = rs.get(n)
            cells += [f"{r['recall10']:.2f}", f"{r['ap']:.3f}", f"{r['ms_per_image']:.1f}"] if r else ["", "", ""]
        print(f"| {arch} | " + " | ".join(cells) + " |")
    for n in names:
        rec = [rs[n]["recall10"] for rs in results.values() if n in rs and rs[n].get("mt", True)]
        if rec:
            print(f"mean recall@10% {n}: {np.mean(rec):.3f} over {len(rec)} archives")
    return 0


if __name__ == "__main__":
    sys.exit(main())
