"""A rare-event archive of another kind: ``synthesis`` defects pasted into the normal images of an archive.

Reads an archive's ``truth.csv`` (``path,label[,category,mask]``), keeps its
normal images, and writes a new archive where ``--defects`` of them (seeded)
carry a procedural defect from :mod:`synthesis.procedural` (``spots``:
small bright or dark blobs, ``scratch``: thin curves, ``crack``, ``stain``...).
The defects are subtle on purpose: small, of modest contrast, local. The
result is a check that a method finds *local* marks on a texture it was not
chosen on, where the magnetic tiles' own defects are mostly found by the
whole image's look (``--strength demo``: the bolder spots and scratches of
the ``make demo`` archive instead). Images are written as 8-bit PNG (``--bits 16`` writes
16-bit PNG, values x 257) with ``truth.csv`` and the defect masks.

usage: python benchmarks/synthetic_archive.py SOURCE_TRUTH_CSV OUT --kind spots [--defects 10] [--seed 0]
       [--bits 8] [--strength subtle|demo]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthesis.procedural import SIMULATORS, simulate

#: Subtle settings per kind: small and of modest contrast (the defaults of synthesis are bolder).
SUBTLE = {
    "spots": {"radius": (2.0, 5.0), "contrast": (0.15, 0.35)},
    "scratch": {"width": (1.0, 2.0), "depth": (0.15, 0.35)},
}
#: The bolder settings of the ``make demo`` archive (``mining.demo._add_defect``): one visible spot or scratch.
DEMO = {
    "spots": {"count": (1, 1), "radius": (4.0, 8.0), "contrast": (0.7, 0.95), "texture": 0.15, "margin": 0.15},
    "scratch": {"length": (0.14, 0.28), "width": (2.5, 3.5), "depth": (0.55, 0.8), "wiggle": 0.03},
}
STRENGTHS = {"subtle": SUBTLE, "demo": DEMO}


def build(
    source: str, out: str, kind: str, defects: int = 10, seed: int = 0, bits: int = 8, strength: str = "subtle"
) -> Path:
    """Write the archive; return the path of its ``truth.csv`` (``strength``: settings from :data:`STRENGTHS`)."""
    with open(source, newline="") as fh:
        normals = [r["path"] for r in csv.DictReader(fh) if r["label"] == "0"]
    if len(normals) <= defects:
        raise SystemExit(f"{source}: {len(normals)} normal images, need more than --defects {defects}")
    out_p = Path(out)
    (out_p / "archive").mkdir(parents=True, exist_ok=True)
    (out_p / "masks").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    bad = set(rng.choice(len(normals), defects, replace=False).tolist())
    truth = out_p / "truth.csv"
    scale = 65535 if bits == 16 else 255
    with open(truth, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "category", "mask"])
        for k, src in enumerate(normals):
            img = cv2.imread(src, cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise SystemExit(f"{src}: not readable as an image")
            img = img.astype(np.float32) / 255
            mask_path = ""
            if k in bad:
                img, mask = simulate(kind, img, rng=rng, **STRENGTHS[strength].get(kind, {}))
                mask_path = str((out_p / "masks" / f"{k:05d}.png").resolve())
                cv2.imwrite(mask_path, (np.asarray(mask) > 0).astype(np.uint8) * 255)
            dst = (out_p / "archive" / f"{k:05d}.png").resolve()
            pixels = np.clip(img * scale + 0.5, 0, scale).astype(np.uint16 if bits == 16 else np.uint8)
            cv2.imwrite(str(dst), pixels)
            w.writerow([str(dst), int(k in bad), kind if k in bad else "", mask_path])
    return truth


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", help="truth.csv of an archive whose label-0 images are the normal texture")
    ap.add_argument("out")
    ap.add_argument("--kind", default="spots", choices=sorted(SIMULATORS))
    ap.add_argument("--defects", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bits", type=int, default=8, choices=(8, 16))
    ap.add_argument("--strength", default="subtle", choices=sorted(STRENGTHS), help="defect settings")
    a = ap.parse_args(argv)
    print(build(a.source, a.out, a.kind, a.defects, a.seed, a.bits, a.strength))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
