"""``raremine synth``: a config in, a folder of images, masks and a manifest out.

For output ``i`` a generator is seeded from ``SeedSequence([seed, i])``; the
manifest records that per-image seed, so each output can be made again alone
(:func:`synthesize_one`) and the same config gives the same bytes.

Layout of the output folder::

    images/00000.png ...   8- or 16-bit grayscale
    masks/00000.png ...    0 / 255: the defect's pixels (empty for normals). For procedural defects and
                           hard pastes these are exactly the changed pixels; feathered and Poisson pastes
                           also change a fringe around the mask (its size is in the manifest: fringe_px)
    manifest.csv           one row per image: image, mask, label, category, source,
                           crop, box, operations (JSON), seed
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from synthesis._common import bbox, to_unit
from synthesis.atomic import atomic_write
from synthesis.augment import classic, cutout, gridmask
from synthesis.config import (
    SynthConfig,
    augment_params,
    generator_params,
    generator_weights,
    load_synth_config,
)
from synthesis.paste import crops_from_mask, paste
from synthesis.procedural import simulate

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("image", "mask", "label", "category", "source", "crop", "box", "operations", "seed")


@dataclass
class SynthSummary:
    """What :func:`synthesize` wrote."""

    out_dir: str
    manifest: str
    n_images: int
    n_defective: int
    seconds: float


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as one channel, keeping 8 or 16 bits; a clear error when unreadable."""
    img = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read image {os.fspath(path)!r}")
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)
    return img


class Sources:
    """The normal images and the defect crops a config names, loaded once."""

    def __init__(self, cfg: SynthConfig):
        self.normals: list[tuple[str, np.ndarray]] = []
        for name in cfg.normals.skimage:
            import skimage.data

            img = getattr(skimage.data, name)()
            if img.ndim == 3:
                img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY)
            self.normals.append((f"skimage:{name}", to_unit(img)[0]))
        if cfg.normals.folder:
            files = sorted(glob.glob(os.path.join(cfg.normals.folder, cfg.normals.glob)))
            if not files:
                raise ValueError(f"normals.folder {cfg.normals.folder!r} has no files matching {cfg.normals.glob!r}")
            self.normals += [(os.path.abspath(f), to_unit(read_gray(f))[0]) for f in files]
        self.allowed: dict[str, np.ndarray] = {}
        if cfg.normals.allowed:
            for name, img in self.normals:
                stem = os.path.splitext(os.path.basename(name))[0]
                found = sorted(glob.glob(os.path.join(cfg.normals.allowed, stem + ".*")))
                if found:
                    a = read_gray(found[0]) > 0
                    if a.shape != img.shape:
                        raise ValueError(f"allowed mask {found[0]!r} shape {a.shape} differs from {name!r} {img.shape}")
                    self.allowed[name] = a
        if cfg.size is not None:
            small = [s for s, im in self.normals if im.shape[0] < cfg.size[0] or im.shape[1] < cfg.size[1]]
            if small:
                raise ValueError(f"size {tuple(cfg.size)} is larger than normal image(s) {small[:3]}")
        self.crops: list[tuple[str, np.ndarray, np.ndarray]] = []
        if cfg.defects is not None:
            self._load_crops(cfg)

    def _load_crops(self, cfg: SynthConfig) -> None:
        """One crop per defect region of every non-empty mask; the image is the file of the same stem."""
        d = cfg.defects
        masks = sorted(glob.glob(os.path.join(d.masks, d.glob)))
        if not masks:
            raise ValueError(f"defects.masks {d.masks!r} has no files matching {d.glob!r}")
        images: dict[str, str] = {}
        for f in sorted(glob.glob(os.path.join(d.folder, "*"))):
            images.setdefault(os.path.splitext(os.path.basename(f))[0], f)
        for mf in masks:
            mask = read_gray(mf) > 0
            if not mask.any():  # a confirmed normal (e.g. an empty mask from a label export)
                continue
            stem = os.path.splitext(os.path.basename(mf))[0]
            f = images.get(stem)
            if f is None:
                raise ValueError(f"no image named {stem}.* in defects.folder {d.folder!r} for mask {mf!r}")
            img = to_unit(read_gray(f))[0]
            if img.shape != mask.shape:
                raise ValueError(f"mask {mf!r} shape {mask.shape} differs from image {f!r} {img.shape}")
            self.crops += [(os.path.abspath(f), c, m) for c, m in crops_from_mask(img, mask, margin=d.margin)]
        if not self.crops:
            raise ValueError(f"no defect regions found in the masks under {d.masks!r}")


def image_seed(seed: int, index: int) -> int:
    """The seed of output ``index`` (written to the manifest)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def synthesize_one(cfg: SynthConfig, sources: Sources, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Make output ``index``: returns ``(image float32 in [0, 1], mask bool, manifest row without paths)``."""
    seed = image_seed(cfg.seed, index)
    rng = np.random.default_rng(seed)
    src_i = int(rng.integers(len(sources.normals)))
    src_name, src = sources.normals[src_i]
    ops: list[dict] = []
    if cfg.size is not None:
        h, w = cfg.size
        y, x = int(rng.integers(0, src.shape[0] - h + 1)), int(rng.integers(0, src.shape[1] - w + 1))
    else:
        h, w = src.shape
        y = x = 0
    img, crop = src[y : y + h, x : x + w].copy(), [y, x, h, w]
    allowed = sources.allowed.get(src_name)
    allowed = np.ones(img.shape, bool) if allowed is None else allowed[y : y + h, x : x + w].copy()
    aug = cfg.augment
    if aug.classic is not None:  # the allowed region follows the flips and rotations
        img, allowed, p = classic(img, allowed, rng=rng, **augment_params("classic", aug.classic))
        ops.append({"op": "classic", **p})
    mask = np.zeros(img.shape, bool)
    label, category = 0, ""
    if rng.random() < cfg.defect_rate:
        gi = int(rng.choice(len(cfg.generators), p=generator_weights(cfg)))
        gen = cfg.generators[gi]
        params = generator_params(gen)
        attempts = 0
        for _ in range(8):  # a Perlin blob can come out empty; draw again
            attempts += 1
            if gen.kind == "paste":
                ci = int(rng.integers(len(sources.crops)))
                cname, c, cm = sources.crops[ci]
                try:
                    res = paste(img, c, cm, rng=rng, allowed=allowed, **params)
                except ValueError as err:  # this crop fits nowhere in the allowed region: draw again
                    logger.debug("image %d: %s", index, err)
                    continue
                # the mask is the defect; a feathered or Poisson blend also nudges a fringe around it
                fringe = int((res.changed & ~res.mask).sum())
                new, dmask, extra = res.image, res.mask, {"crop_source": cname, "fringe_px": fringe, **res.params}
            else:
                new, dmask = simulate(gen.kind, img, rng=rng, **params)
                new, dmask = np.where(allowed, new, img), dmask & allowed  # clipped to the allowed region
                extra = {}
            if dmask.any():
                break
        else:
            raise ValueError(
                f"generator {gen.kind!r} made no visible defect in 8 attempts (image {index}); "
                "is the allowed region too small or the contrast too low?"
            )
        img, mask = new, dmask
        label, category = 1, gen.category or gen.kind
        ops.append({"op": gen.kind, "attempts": attempts, **params, **extra})
    if aug.cutout is not None and rng.random() < aug.cutout_prob:
        img, mask, p = cutout(img, mask, rng=rng, **augment_params("cutout", aug.cutout))
        ops.append({"op": "cutout", **p})
    if aug.gridmask is not None and rng.random() < aug.gridmask_prob:
        img, mask, p = gridmask(img, mask, rng=rng, **augment_params("gridmask", aug.gridmask))
        ops.append({"op": "gridmask", **p})
    mask = mask > 0
    label = int(label and mask.any())
    row = {
        "label": label,
        "category": category if label else "",
        "source": src_name,
        "crop": json.dumps(crop),
        "box": json.dumps(bbox(mask) or []),
        "operations": json.dumps(ops, sort_keys=True, default=_jsonable),
        "seed": seed,
    }
    return img, mask, row


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple | np.ndarray):
        return list(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def _encode(img: np.ndarray, bit_depth: int) -> bytes:
    if bit_depth == 16:
        arr = np.clip(np.rint(img * 65535), 0, 65535).astype(np.uint16)
    else:
        arr = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def synthesize(
    config: SynthConfig | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write ``n_images`` synthetic images, their masks and ``manifest.csv`` under ``out_dir``.

    Parameters
    ----------
    config : SynthConfig or path
        A validated config or a YAML file (see ``configs/synth-demo.yaml``).
    out_dir : path
        Created when missing; files of the same names are replaced.
    progress : callable, optional
        ``progress(done, total)`` after each image.

    Returns
    -------
    SynthSummary
    """
    cfg = config if isinstance(config, SynthConfig) else load_synth_config(config)
    t0 = time.perf_counter()
    out_dir = os.fspath(out_dir)
    sources = Sources(cfg)
    rows = []
    for i in range(cfg.n_images):
        img, mask, row = synthesize_one(cfg, sources, i)
        name = f"{i:05d}.png"
        with atomic_write(os.path.join(out_dir, "images", name), "wb") as fh:
            fh.write(_encode(img, cfg.bit_depth))
        with atomic_write(os.path.join(out_dir, "masks", name), "wb") as fh:
            fh.write(_encode(mask.astype(np.float32), 8))
        rows.append({"image": f"images/{name}", "mask": f"masks/{name}", **row})
        if progress is not None:
            progress(i + 1, cfg.n_images)
    manifest = os.path.join(out_dir, "manifest.csv")
    with atomic_write(manifest, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    n_def = sum(r["label"] for r in rows)
    secs = time.perf_counter() - t0
    logger.info("synthesized %d images (%d defective) in %.1fs into %s", len(rows), n_def, secs, out_dir)
    return SynthSummary(out_dir=out_dir, manifest=manifest, n_images=len(rows), n_defective=n_def, seconds=secs)
