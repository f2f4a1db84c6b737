"""Does synthesis help? Pixel-model AP on real magnetic-tile defects, trained on real, simulated or pasted defects.

For each category (default Blowhole and Crack) the split of
the archive builder (``$RAREMINE_ARCHIVE_TOOL``) (seed 0, 5 training defects and
3 training normals) is rebuilt, then one pixel model is trained per setting:

- (a) ``real``: the K = 5 real defect images (and the 3 training normals), as the archive tool gives them;
- (b) ``simulated``: defects simulated by :mod:`synthesis.procedural` only (a preset per category),
  on ``--n-synth`` normal tiles from the archive; no real defect pixel is seen;
- (c) ``pasted``: the K real defect crops pasted (:func:`synthesis.paste.paste`, Poisson blending,
  random scale / rotation / flip) into ``--n-synth`` normal tiles.

The test set is held apart: every defective image of the category that is not
a training image (up to ``--n-test``) plus as many archive normals that no
setting trained on. Reported: pixel AP over all test pixels (defect = mask),
image AP (max probability per image) and images/s of synthesis (median of
three timings of the same work, same run).

The model is ``mining.models.pixel`` (``fit_pixel_model``, default features and
XGBoost) when it imports, else scikit-image's ``multiscale_basic_features`` +
RandomForest; the output says which.

usage: python benchmarks/synthesis_value.py [--categories Blowhole Crack] [--n-synth 60] [--n-test 40]
       [--seed 0] [--data $RAREMINE_MAGNETIC_TILE] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import average_precision_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rare_data import MAGNETIC_TILE as DATA  # noqa: E402 (benchmarks/rare_data.py, beside this script)
from rare_data import build_rare_archive  # noqa: E402

from synthesis.paste import crops_from_mask, paste  # noqa: E402
from synthesis.procedural import simulate  # noqa: E402

#: Simulator presets per category: (kind, params, weight). Chosen from the defect type and checked on the K = 5
#: training images only (a model trained on simulated defects, validated on them); never on the test tiles.
PRESETS: dict[str, list[tuple[str, dict, float]]] = {
    "Blowhole": [
        (
            "spots",
            {
                "count": (1, 1),
                "radius": (3.0, 8.0),
                "contrast": (0.25, 0.55),
                "texture": 0.2,
                "softness": 1.0,
                "polarity": "dark",
                "relative": True,
            },
            1.0,
        )
    ],
    "Crack": [
        (
            "crack",
            {
                "length": (0.15, 0.5),
                "width": (1.5, 4.0),
                "depth": (0.08, 0.25),
                "polarity": "dark",
                "branch_prob": 0.02,
            },
            2.0,
        ),
        ("scratch", {"length": (0.15, 0.5), "width": (1.5, 3.5), "depth": (0.08, 0.22), "polarity": "dark"}, 1.0),
    ],
}
PRESETS_DEFAULT = [
    ("spots", {"polarity": "dark", "contrast": (0.08, 0.3)}, 1.0),
    ("crack", {"polarity": "dark", "depth": (0.08, 0.25)}, 1.0),
    ("stain", {"polarity": "dark"}, 1.0),
]


def gray01(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    return img.astype(np.float32) / 255.0


# -- the pixel model: mining.models.pixel when present, else scikit-image + RandomForest -----------------
class Model:
    def __init__(self, seed: int):
        self.seed = seed
        try:
            from mining.models import pixel

            self.pixel = pixel
            self.name = "mining.models.pixel (fit_pixel_model: default FeatureSpec, PixelClassifier default = XGBoost)"
        except Exception as err:  # any import failure: fall back, and say so
            self.pixel = None
            self.name = (
                f"skimage multiscale_basic_features + RandomForest(100, depth 12) (mining.models.pixel: {err!r})"
            )

    def fit(self, pairs: list[tuple[np.ndarray, np.ndarray]]):
        """pairs: (image float [0, 1], labels 1 bg / 2 defect)."""
        if self.pixel is not None:
            clf = self.pixel.PixelClassifier(n_jobs=2, random_state=self.seed)
            named = [((im * 255).astype(np.uint8), lab, f"train{i}") for i, (im, lab) in enumerate(pairs)]
            return self.pixel.fit_pixel_model(named, classifier=clf, budget=60_000, random_state=self.seed)
        from skimage.feature import multiscale_basic_features
        from sklearn.ensemble import RandomForestClassifier

        rng = np.random.default_rng(self.seed)
        X, y = [], []
        for im, lab in pairs:
            f = multiscale_basic_features(im, sigma_min=0.5, sigma_max=16)
            for c in (1, 2):
                idx = np.flatnonzero(lab.ravel() == c)
                if idx.size:
                    idx = rng.choice(idx, min(idx.size, 60_000 // (2 * len(pairs))), replace=False)
                    X.append(f.reshape(-1, f.shape[-1])[idx])
                    y.append(np.full(idx.size, c))
        rf = RandomForestClassifier(100, max_depth=12, n_jobs=2, random_state=self.seed, class_weight="balanced")
        return rf.fit(np.concatenate(X), np.concatenate(y))

    def features(self, image: np.ndarray, like) -> np.ndarray:
        """Per-pixel features (H*W, F) of a test image, computed once and shared by the three models."""
        if self.pixel is not None:
            spec = like.spec
            f = self.pixel.features_from_gray(self.pixel.preprocess((image * 255).astype(np.uint8), spec), spec)
            if f.shape[:2] != image.shape:
                raise SystemExit(f"feature grid {f.shape[:2]} differs from the image {image.shape}: downscale?")
            return f.reshape(-1, f.shape[-1])
        from skimage.feature import multiscale_basic_features

        f = multiscale_basic_features(image, sigma_min=0.5, sigma_max=16)
        return f.reshape(-1, f.shape[-1])

    def proba_from_features(self, fitted, feats: np.ndarray) -> np.ndarray:
        clf = fitted.classifier if self.pixel is not None else fitted
        return clf.predict_proba(feats)[:, list(clf.classes_).index(2)]

    def proba(self, fitted, image: np.ndarray) -> np.ndarray:
        """The model's own full prediction (used once to check the shared-feature shortcut)."""
        if self.pixel is not None:
            p = fitted.predict_proba((image * 255).astype(np.uint8))
            return p[..., list(fitted.classes).index(2)]
        return self.proba_from_features(fitted, self.features(image, fitted)).reshape(image.shape)


# -- data ------------------------------------------------------------------------------------
def split(category: str, seed: int, work: str, data: Path) -> dict:
    out = os.path.join(work, category)
    build_rare_archive(out, category, "--rate", "0.01", "--train", "5", "--seed", seed, root=data, capture_output=True)
    ti, tl = os.path.join(out, "train", "images"), os.path.join(out, "train", "labels")
    train = []
    for f in sorted(os.listdir(ti)):
        lab = cv2.imread(os.path.join(tl, f), cv2.IMREAD_GRAYSCALE)
        train.append((f, gray01(os.path.join(ti, f)), lab))
    train_names = {os.path.splitext(f)[0] for f, _, _ in train}
    imgs = os.path.join(data, f"MT_{category}", "Imgs")
    held = [
        os.path.join(imgs, f)
        for f in sorted(os.listdir(imgs))
        if f.endswith(".jpg") and f"MT_{category}_{f[:-4]}" not in train_names
    ]
    import csv

    with open(os.path.join(out, "truth.csv"), newline="") as fh:
        normals = [r["path"] for r in csv.DictReader(fh) if r["label"] == "0"]
    return {"train": train, "held": held, "normals": normals}


def synth_simulated(targets: list[np.ndarray], preset, rng: np.random.Generator) -> list[tuple]:
    kinds = [k for k, _, _ in preset]
    w = np.array([x for _, _, x in preset], float)
    w /= w.sum()
    out = []
    for t in targets:
        i = int(rng.choice(len(kinds), p=w))
        img, mask = t, np.zeros(t.shape, bool)
        for _ in range(8):
            img, mask = simulate(kinds[i], t, rng=rng, **preset[i][1])
            if mask.any():
                break
        lab = np.where(mask, 2, 1).astype(np.uint8)
        out.append((img, lab))
    return out


def synth_pasted(
    targets: list[np.ndarray], crops: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator
) -> list[tuple]:
    out = []
    for t in targets:
        c, m = crops[int(rng.integers(len(crops)))]
        try:
            r = paste(t, c, m, rng=rng, blend="poisson", scale=(0.8, 1.25), rotation=(-20, 20), flip=True)
        except ValueError:  # a crop larger than this tile: paste another
            c, m = min(crops, key=lambda cm: cm[0].size)
            r = paste(t, c, m, rng=rng, blend="poisson")
        out.append((r.image, np.where(r.mask, 2, 1).astype(np.uint8)))
    return out


def timed(fn, repeats: int = 3) -> tuple[float, object]:
    times, res = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), res


def evaluate(model: Model, fitted: dict, test: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Pixel AP and image AP of each fitted model on the test images (features computed once per image)."""
    first = next(iter(fitted.values()))
    scores = {k: [] for k in fitted}
    truth, img_t = [], []
    for i, (im, m) in enumerate(test):
        feats = model.features(im, first)
        for k, f in fitted.items():
            p = model.proba_from_features(f, feats)
            if i == 0:  # the shortcut gives what the model's own prediction gives
                assert np.allclose(p.reshape(im.shape), model.proba(f, im), atol=1e-4), "feature shortcut differs"
            scores[k].append(p)
        truth.append(m.ravel())
        img_t.append(int(m.any()))
    t = np.concatenate(truth)
    return {
        k: {
            "pixel_ap": float(average_precision_score(t, np.concatenate(v))),
            "image_ap": float(average_precision_score(img_t, [float(p.max()) for p in v])),
        }
        for k, v in scores.items()
    }


def run_category(category: str, args, work: str, model: Model) -> dict:
    rng = np.random.default_rng(args.seed)
    s = split(category, args.seed, work, args.data)
    n_def = len(s["held"])
    held = [s["held"][i] for i in sorted(rng.choice(n_def, min(args.n_test, n_def), replace=False))]
    normals = [s["normals"][i] for i in rng.permutation(len(s["normals"]))]
    synth_targets = [gray01(p) for p in normals[: args.n_synth]]
    test_normals = normals[args.n_synth : args.n_synth + len(held)]
    test = [(gray01(p), cv2.imread(p[:-4] + ".png", cv2.IMREAD_GRAYSCALE) > 0) for p in held]
    test += [(gray01(p), np.zeros(gray01(p).shape, bool)) for p in test_normals]
    real = [(im, lab) for _, im, lab in s["train"]]
    crops = [cm for _, im, lab in s["train"] if (lab == 2).any() for cm in crops_from_mask(im, lab == 2, margin=6)]
    preset = PRESETS.get(category, PRESETS_DEFAULT)
    t_sim, simulated = timed(lambda: synth_simulated(synth_targets, preset, np.random.default_rng(args.seed)))
    t_paste, pasted = timed(lambda: synth_pasted(synth_targets, crops, np.random.default_rng(args.seed)))
    res = {
        "category": category,
        "n_test_defective": len(held),
        "n_test_normal": len(test_normals),
        "n_real_train": sum(1 for _, _, lab in s["train"] if (lab == 2).any()),
        "n_crops": len(crops),
        "n_synth": len(synth_targets),
        "synth_img_per_s": {"simulated": len(synth_targets) / t_sim, "pasted": len(synth_targets) / t_paste},
    }
    fitted = {}
    for name, pairs in (("a_real", real), ("b_simulated", simulated), ("c_pasted", pasted)):
        t0 = time.perf_counter()
        fitted[name] = model.fit(pairs)
        res[f"fit_seconds_{name}"] = round(time.perf_counter() - t0, 1)
    res.update(evaluate(model, fitted, test))
    for name in fitted:
        print(f"{category} {name}: {res[name]}", flush=True)
    a, b, c = (res[k]["pixel_ap"] for k in ("a_real", "b_simulated", "c_pasted"))
    res["goal_b_ge_half_a"] = bool(b >= 0.5 * a)
    res["goal_c_gt_a"] = bool(c > a)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--categories", nargs="+", default=["Blowhole", "Crack"])
    ap.add_argument("--n-synth", type=int, default=60, help="normal tiles that get a synthetic defect")
    ap.add_argument("--n-test", type=int, default=40, help="held-apart defective test images (and as many normals)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"magnetic-tile data not found at {args.data}")
    model = Model(args.seed)
    print(f"model: {model.name}", flush=True)
    results = {"model": model.name, "args": {k: str(v) for k, v in vars(args).items()}, "categories": []}
    with tempfile.TemporaryDirectory() as work:
        for cat in args.categories:
            results["categories"].append(run_category(cat, args, work, model))
    print(
        "\n| category | (a) K=5 real | (b) simulated only | (c) K real crops pasted | b >= 0.5a | c > a "
        "| synth img/s (sim / paste) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results["categories"]:
        a, b, c = (f"{r[k]['pixel_ap']:.3f} ({r[k]['image_ap']:.2f})" for k in ("a_real", "b_simulated", "c_pasted"))
        print(
            f"| {r['category']} | {a} | {b} | {c} | "
            f"{'yes' if r['goal_b_ge_half_a'] else 'NO'} | {'yes' if r['goal_c_gt_a'] else 'NO'} | "
            f"{r['synth_img_per_s']['simulated']:.0f} / {r['synth_img_per_s']['pasted']:.0f} |"
        )
    print("pixel AP (image AP in brackets) on held-apart real tiles")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
