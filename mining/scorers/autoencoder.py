"""The ``autoencoder`` scorer: training glue around :mod:`mining.models.autoencoder`.

``prepare`` trains an autoencoder on a seeded sample of the catalogue (or
reuses the newest saved model trained with the same settings, or loads
``weights``), with a trimmed loss so the few defects inside its own sample are
not learned. By default (MobileNetV2 weights found) it rebuilds each image's
pooled pretrained feature vector; see :class:`AutoencoderScorer` for the
kinds. The model is saved as a ``state_dict`` beside the catalogue and
registered with :meth:`mining.store.Store.add_model`. ``score_image`` returns
the reconstruction-error map, the image score and the bottleneck embedding.

CPU by default and deterministic with a seed; ``device="auto"`` uses a CUDA
GPU for training when one is present.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time

import cv2
import numpy as np
import torch

from mining.catalogue.paths import models_dir
from mining.io import UnreadableImage, read_image, to_float_gray
from mining.models.autoencoder import (
    ConvAutoencoder,
    FeatureAutoencoder,
    error_map,
    gaussian_blur,
)
from mining.models.backbone import (
    numpy_state,
    prepare_threads,
    short_error,
    state_dict_mismatch,
    tensors_from_numpy,
)
from mining.scorers._autoencoder_features import FeatureKinds
from mining.scorers.base import Scorer, ScoreResult
from synthesis.atomic import atomic_write

logger = logging.getLogger(__name__)

#: Tensor attributes of the features kinds (the training vectors' mean and spread), pickled as numpy arrays.
_FEATURE_STATS = ("feature_mean_", "feature_std_")

#: input pixels of one inference pass in :meth:`AutoencoderScorer.score_batch` (about 4 MP: the
#: activations of the first stage alone are 16 x that in float32, ~256 MB)
INFER_PIXELS = 4_000_000

KINDS = ("auto", "features", "pixels")
POOLINGS = ("global", "patches")
RESIZE_MODES = ("resize", "crop")
ERRORS = ("l2", "ssim")
SCORE_KINDS = ("topk", "max")
DEVICES = ("auto", "cpu", "cuda")

#: training settings that change a trained global-pooling or pixels-mode model
_TRAINING_KEYS = ("sample_size", "epochs", "batch_size", "lr", "trim", "seed")
#: settings that change a trained features-mode model
_FEATURE_KEYS = ("kind", "layers", "feature_size", "sample_size", "epochs", "lr", "trim", "seed", "latent_channels")
#: settings that change a trained global-pooling model
_GLOBAL_KEYS = ("kind", "pooling", "global_layers", "feature_size", *_TRAINING_KEYS, "latent_channels")

#: settings that change a trained pixels-mode model (a saved model is reused only when they match)
_MODEL_KEYS = ("size", "resize", *_TRAINING_KEYS, "base_channels", "latent_channels")


def _distinct_blocks(layers, lo: int, hi: int) -> bool:
    """True when ``layers`` is a non-empty list of distinct integer block numbers from ``lo`` to ``hi``."""
    return (
        len(layers) > 0
        and all(isinstance(v, int) and lo <= v <= hi for v in layers)
        and len(set(layers)) == len(layers)
    )


class AutoencoderScorer(FeatureKinds, Scorer):
    """Reconstruction-error scorer with a bottleneck embedding.

    Two kinds. ``features`` (the default when the MobileNetV2 weights are
    found) rebuilds the ImageNet MobileNetV2 features of :mod:`mining.models.backbone`,
    pooled in one of two ways:

    - ``pooling="global"`` (the default): the image (aspect ratio kept,
      short side ``feature_size``, as the backbone scorer's input) becomes
      one vector, the average-pooled maps of blocks ``global_layers``,
      standardised per value over the training sample; a small autoencoder
      trained on the archive's own vectors squeezes it through
      ``latent_channels`` values and rebuilds it. The image score is the mean
      squared reconstruction error: how far the whole image lies from the
      archive's (nonlinear) normal manifold. The map splits that error over
      the patches: the residual's dot product with each patch's own
      (standardised) features, whose mean over the patches is the score
      (shown clipped at 0), so it shows where the part the autoencoder
      could not rebuild lies.
    - ``pooling="patches"``: every patch vector (blocks ``layers`` on the
      grid of the finest one, each averaged over 3x3 patches; the image
      resized, aspect kept, to about ``feature_size**2`` pixels) is rebuilt
      by a 1x1-convolution autoencoder; the map is each patch's squared
      reconstruction error, the score its top-k mean or max.

    ``pixels`` (the fallback without weights): a small convolutional
    autoencoder trained from scratch on the pixels (``size``, ``resize``,
    ``base_channels``, ``error``).

    Measured (``docs/benchmarks/autoencoder.md``): global pooling finds about
    half the defects of the magnetic-tile archives in the top 10 %, patches
    0.18, pixels 0.10 (random 0.10).

    Parameters
    ----------
    kind : {"auto", "features", "pixels"}, default="auto"
        ``auto``: features when a MobileNetV2 weights file is found, else pixels (one log line).
    backbone_weights : str, optional
        torchvision's ``mobilenet_v2`` ``state_dict`` (default: as the
        backbone scorer, :func:`mining.models.backbone.resolve_weights`).
    pooling : {"global", "patches"}, default="global"
        Features kind: rebuild the image's pooled vector or each patch vector.
    global_layers : tuple of int, default=(13, 18)
        MobileNetV2 blocks (0 to 18) average-pooled into the global vector
        (the backbone scorer's global blocks).
    layers : tuple of int, default=(6, 13)
        MobileNetV2 blocks whose maps make the patch vectors (``pooling="patches"``).
    feature_size : int, default=224
        Global pooling: the input's short side (a multiple of 32, aspect
        kept, long side at most 3 times it; rounded to a multiple of 32). Patches: the image is resized,
        aspect kept, to about ``feature_size**2`` pixels, each side a multiple of 16.
    size : int, default=64
        Pixels kind: side (px, multiple of 8) the image is resized to
        (``resize``) or the training crop side (``crop``; then whole images
        are scored at full resolution, padded to a multiple of 8).
    resize : {"resize", "crop"}, default="resize"
    sample_size : int, default=256
        Catalogue images drawn (seeded) to train on.
    epochs : int, optional
        Passes over the training sample (patches: over its patch vectors, at
        most 100 000 drawn). None: 30 (patches 10).
    batch_size : int, default=32
        Images per training step (patches: their patch vectors) and per inference pass.
    lr : float, default=2e-3
    trim : float, default=0.1
        Fraction of each batch's highest losses (per image; patches: per
        patch) left out of the loss, so defects in the sample are not learned.
    error : {"l2", "ssim"}, default="l2"
        Kind of error map (pixels kind).
    smooth_sigma : float, default=1.0
        Gaussian smoothing of the error map (px at the network's resolution; features kind: patches).
    score : {"topk", "max"}, default="topk"
        Image score: mean of the top ``top_fraction`` of the map, or its max.
    top_fraction : float, default=0.01
    base_channels : int, default=16
        Pixels kind: channels of the first stage.
    latent_channels : int, optional
        Bottleneck channels. None: pixels kind 16; features kind chosen from
        the archive, the principal components that explain ``explained`` of
        the training vectors' variance (at least 8, at most half the channels;
        global pooling: also at most half the training images, as more
        components than that are not estimated from the sample).
    explained : float, default=0.9
    seed : int, default=0
    device : {"auto", "cpu", "cuda"}, default="cpu"
        Where training runs (scoring in the workers stays on the CPU).
    weights : str, optional
        A saved autoencoder (written by :meth:`save`) to load instead of training.
    """

    name = "autoencoder"
    embedding_name = "autoencoder"

    @property
    def whole_image(self) -> bool:
        """Whole images for ``resize`` (squashed to ``size``) and the features kind; by tile for ``crop``."""
        return self.resize == "resize" or self.uses_features  # the features kind resamples the image itself

    @property
    def map_range(self) -> tuple[float, float]:
        """Map values shown as 0 and 255 in overlays (features kind: chosen from the training sample's errors)."""
        return self.__dict__.get("map_range_", (0.0, 0.05))

    def __init__(
        self,
        *,
        kind: str = "auto",
        backbone_weights: str | None = None,
        pooling: str = "global",
        global_layers: tuple[int, ...] = (13, 18),
        layers: tuple[int, ...] = (6, 13),
        feature_size: int = 224,
        size: int = 64,
        resize: str = "resize",
        sample_size: int = 256,
        epochs: int | None = None,
        batch_size: int = 32,
        lr: float = 2e-3,
        trim: float = 0.1,
        error: str = "l2",
        smooth_sigma: float = 1.0,
        score: str = "topk",
        top_fraction: float = 0.01,
        base_channels: int = 16,
        latent_channels: int | None = None,
        explained: float = 0.9,
        seed: int = 0,
        device: str = "cpu",
        weights: str | None = None,
    ):
        self.kind = kind
        self.backbone_weights = backbone_weights
        self.pooling = pooling
        self.global_layers = tuple(global_layers)
        self.layers = tuple(layers)
        self.feature_size = feature_size
        self.size = size
        self.resize = resize
        self.sample_size = sample_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.trim = trim
        self.error = error
        self.smooth_sigma = smooth_sigma
        self.score = score
        self.top_fraction = top_fraction
        self.base_channels = base_channels
        self.latent_channels = latent_channels
        self.explained = explained
        self.seed = seed
        self.device = device
        self.weights = weights

    # -- validation ---------------------------------------------------------------
    def _validate(self) -> None:
        checks = [
            (self.kind in KINDS, "kind", self.kind, f"one of {KINDS}"),
            (
                _distinct_blocks(self.layers, 1, 13),
                "layers",
                list(self.layers),
                "distinct MobileNetV2 block numbers 1 to 13 (stride <= 16)",
            ),
            (self.pooling in POOLINGS, "pooling", self.pooling, f"one of {POOLINGS}"),
            (
                _distinct_blocks(self.global_layers, 0, 18),
                "global_layers",
                list(self.global_layers),
                "distinct MobileNetV2 block numbers 0 to 18",
            ),
            (self.feature_size >= 32, "feature_size", self.feature_size, ">= 32"),
            (self.size >= 16 and self.size % 8 == 0, "size", self.size, "a multiple of 8, >= 16"),
            (self.resize in RESIZE_MODES, "resize", self.resize, f"one of {RESIZE_MODES}"),
            (self.sample_size >= 1, "sample_size", self.sample_size, ">= 1"),
            (self.epochs is None or self.epochs >= 1, "epochs", self.epochs, ">= 1"),
            (self.batch_size >= 1, "batch_size", self.batch_size, ">= 1"),
            (self.lr > 0, "lr", self.lr, "> 0"),
            (0 <= self.trim < 1, "trim", self.trim, "in [0, 1)"),
            (self.error in ERRORS, "error", self.error, f"one of {ERRORS}"),
            (self.smooth_sigma >= 0, "smooth_sigma", self.smooth_sigma, ">= 0"),
            (self.score in SCORE_KINDS, "score", self.score, f"one of {SCORE_KINDS}"),
            (0 < self.top_fraction <= 1, "top_fraction", self.top_fraction, "in (0, 1]"),
            (
                self.latent_channels is None or self.latent_channels >= 1,
                "latent_channels",
                self.latent_channels,
                ">= 1",
            ),
            (0 < self.explained < 1, "explained", self.explained, "in (0, 1)"),
            (self.device in DEVICES, "device", self.device, f"one of {DEVICES}"),
        ]
        for ok, key, value, allowed in checks:
            if not ok:
                raise ValueError(f"autoencoder.{key} must be {allowed}, got {value!r}")

    @property
    def uses_features(self) -> bool:
        """Whether this scorer reconstructs pretrained features (``kind`` resolved by :meth:`resolve_kind`)."""
        return getattr(self, "kind_", self.kind) == "features"

    @property
    def uses_global(self) -> bool:
        """Whether this scorer rebuilds each image's pooled feature vector (features kind, global pooling)."""
        return self.uses_features and self.pooling == "global"

    def resolve_kind(self) -> str:
        """``features`` or ``pixels``: ``auto`` becomes features when MobileNetV2 weights are found
        (logging one line when they are not); loads the backbone for the features kind."""
        self._validate()
        if getattr(self, "kind_", None) == "features" and hasattr(self, "backbone_"):
            return self.kind_
        kind = self.kind
        path = None
        if kind in ("auto", "features"):
            from mining.models.backbone import resolve_weights

            found = resolve_weights(self.backbone_weights, "mobilenet_v2")
            path = found.path if found is not None else None
            if path is None and kind == "features":
                raise ValueError(
                    "autoencoder.kind=features needs torchvision's mobilenet_v2 weights: set "
                    "autoencoder.backbone_weights or RAREMINE_BACKBONE_WEIGHTS"
                )
            if path is None:
                logger.warning(
                    "autoencoder: no MobileNetV2 weights file (autoencoder.backbone_weights or "
                    "RAREMINE_BACKBONE_WEIGHTS); falling back to the pixel autoencoder"
                )
            kind = "features" if path else "pixels"
        if kind == "features":
            from mining.models.backbone import load_backbone

            self.backbone_ = load_backbone(found, "mobilenet_v2")  # a packaged file's SHA-256 is checked
            self.backbone_file_ = (os.path.basename(path), os.path.getsize(path))
        self.kind_ = kind
        return kind

    def _model_config(self) -> dict:
        if self.uses_global:
            config = {k: getattr(self, k) for k in _GLOBAL_KEYS}
            config.update(
                kind="features",
                global_layers=list(self.global_layers),
                backbone=list(self.backbone_file_),
                epochs=self._epochs,
            )
            if self.latent_channels is None:
                config["explained"] = self.explained
            return config
        if self.uses_features:
            config = {k: getattr(self, k) for k in _FEATURE_KEYS}
            config.update(
                kind="features", layers=list(self.layers), backbone=list(self.backbone_file_), epochs=self._epochs
            )
            if self.latent_channels is None:
                config["explained"] = self.explained
            return config
        config = {k: getattr(self, k) for k in _MODEL_KEYS}
        if config["latent_channels"] is None:
            config["latent_channels"] = 16
        config["epochs"] = self._epochs
        return config

    @property
    def _epochs(self) -> int:
        return self.epochs if self.epochs is not None else (10 if self.uses_features and not self.uses_global else 30)

    @property
    def _pixel_latent(self) -> int:
        return 16 if self.latent_channels is None else self.latent_channels

    # -- input (pixels kind) --------------------------------------------------------
    def to_input(self, image: np.ndarray) -> np.ndarray:
        """The pixel network's input for one image: float32 gray, (size, size) or padded full size."""
        g = to_float_gray(image)
        if self.resize == "resize":
            return cv2.resize(g, (self.size, self.size), interpolation=cv2.INTER_AREA)
        h, w = g.shape
        ph, pw = (-h) % 8, (-w) % 8
        return cv2.copyMakeBorder(g, 0, ph, 0, pw, cv2.BORDER_REFLECT) if ph or pw else g

    def _train_patches(self, images: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        if self.resize == "resize":
            return np.stack([self.to_input(im) for im in images])[:, None]
        crops = []
        for im in images:
            g = to_float_gray(im)
            if min(g.shape) < self.size:
                g = cv2.resize(g, (max(self.size, g.shape[1]), max(self.size, g.shape[0])))
            for _ in range(4):
                y = rng.integers(0, g.shape[0] - self.size + 1)
                x = rng.integers(0, g.shape[1] - self.size + 1)
                crops.append(g[y : y + self.size, x : x + self.size])
        return np.stack(crops)[:, None].astype(np.float32)

    # -- features kind ------------------------------------------------------------
    # -- training -----------------------------------------------------------------
    def fit(self, images: list[np.ndarray]) -> AutoencoderScorer:
        """Train on a list of images (any dtype :func:`mining.io.to_float_gray` accepts); return self."""
        self.resolve_kind()
        if not images:
            raise ValueError("autoencoder: no images to train on")
        t0 = time.perf_counter()
        if self.uses_global or self.uses_features:
            if self.uses_global:
                self.fit_vectors(torch.stack([self.global_features(im)[0] for im in images]))
                blocks = f"global pooling of blocks {list(self.global_layers)}"
            else:
                self._fit_features(images)
                blocks = f"blocks {list(self.layers)}"
            logger.info(
                "autoencoder (features, %s, latent %d) trained on %d images in %.1f s, final loss %.4f",
                blocks,
                self.net_.encoder[-1].out_channels,
                len(images),
                time.perf_counter() - t0,
                self.train_losses_[-1],
            )
            return self
        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        device = "cuda" if self.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and device == "cpu":
            logger.warning("autoencoder.device=cuda but no CUDA GPU is present; training on the CPU")
        data = torch.from_numpy(self._train_patches(images, rng))
        net = ConvAutoencoder(self.base_channels, self._pixel_latent).to(device)
        losses = self._train_net(net, data, self.batch_size, device)
        self.net_ = net.cpu().eval().requires_grad_(False)
        self.train_losses_ = losses
        logger.info(
            "autoencoder (pixels) trained on %d images (%d patches) in %.1f s, final loss %.5f",
            len(images),
            len(data),
            time.perf_counter() - t0,
            losses[-1],
        )
        return self

    def save(self, path: str) -> None:
        """Write the trained network's ``state_dict`` (atomically); the features kind adds its
        standardisation and contrast as tensors (still a plain dict of tensors)."""
        self._check_fitted()
        state = dict(self.net_.state_dict())
        if self.uses_global:
            state = {f"net.{k}": v for k, v in state.items()}
            state["feature_mean"], state["feature_std"] = self.feature_mean_, self.feature_std_
            state["global_layers"] = torch.tensor(self.global_layers, dtype=torch.int64)
            state["map_range"] = torch.tensor(self.map_range, dtype=torch.float64)
        elif self.uses_features:
            state = {f"net.{k}": v for k, v in state.items()}
            state["feature_mean"], state["feature_std"] = self.feature_mean_, self.feature_std_
            state["intensity"] = torch.tensor(self.intensity_, dtype=torch.float64)
            state["scale"] = torch.tensor(self.scale_, dtype=torch.float64)
            state["map_range"] = torch.tensor(self.map_range, dtype=torch.float64)
        with atomic_write(path, "wb") as fh:
            torch.save(state, fh)

    def load(self, path: str) -> AutoencoderScorer:
        """Load a model saved by :meth:`save` (``weights_only=True``); return self."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as err:
            raise ValueError(f"autoencoder weights file {path!r} does not exist") from err
        except Exception as err:  # a damaged or foreign file: RuntimeError, UnpicklingError, EOFError...
            raise ValueError(
                f"autoencoder weights file {path!r} is not a state_dict saved by raremine's autoencoder "
                f"(read with weights_only=True): {short_error(err)}"
            ) from err
        if not isinstance(state, dict):
            raise ValueError(f"autoencoder weights file {path!r} does not hold a state_dict")
        if self.resolve_kind() == "features":
            if "feature_mean" not in state:
                raise ValueError(f"{path!r} is not a features-kind autoencoder (saved by the pixels kind?)")
            saved = "global" if "global_layers" in state else "patches"
            if saved != self.pooling:
                raise ValueError(f"{path!r} holds a pooling={saved} autoencoder, not pooling={self.pooling}")
            if saved == "global" and tuple(int(v) for v in state["global_layers"]) != self.global_layers:
                raise ValueError(
                    f"{path!r} was trained on blocks {[int(v) for v in state['global_layers']]}, "
                    f"not autoencoder.global_layers={list(self.global_layers)}"
                )
            net_state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
            c, latent = net_state["encoder.0.weight"].shape[1], net_state["encoder.2.weight"].shape[0]
            if self.latent_channels is not None and latent != self.latent_channels:
                raise ValueError(f"{path!r} has latent_channels={latent}, not {self.latent_channels}")
            net = FeatureAutoencoder(c, latent, net_state["encoder.0.weight"].shape[0])
            net.load_state_dict(net_state)
            self.feature_mean_, self.feature_std_ = state["feature_mean"], state["feature_std"]
            if saved == "patches":
                self.intensity_ = tuple(float(v) for v in state["intensity"])
                self.scale_ = float(state["scale"])
            self.map_range_ = tuple(float(v) for v in state["map_range"])
            self.net_ = net.eval().requires_grad_(False)
            return self
        net = ConvAutoencoder(self.base_channels, self._pixel_latent)
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"autoencoder weights file {path!r} does not match autoencoder base_channels={self.base_channels}, "
                f"latent_channels={self._pixel_latent}: {state_dict_mismatch(net, state)}"
            ) from err
        self.net_ = net.eval().requires_grad_(False)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise ValueError("the autoencoder is not trained: call prepare() or fit() first")

    def prepare(self, store, run_id: int | None = None) -> AutoencoderScorer:
        """Load ``weights``, reuse a model saved with the same settings, or train and save one."""
        with prepare_threads():
            return self._prepare(store, run_id)

    def _prepare(self, store, run_id: int | None = None) -> AutoencoderScorer:
        self.resolve_kind()
        if self.weights:
            if not os.path.isfile(self.weights):
                raise ValueError(
                    f"autoencoder.weights={self.weights!r}: no such file "
                    "(expected a state_dict saved by the autoencoder scorer, or null to train one)"
                )
            return self.load(self.weights)
        config = self._model_config()
        for row in store.query("SELECT * FROM models WHERE kind = 'autoencoder' ORDER BY id DESC"):
            if json.loads(row["config"] or "{}") == config and os.path.isfile(row["path"]):
                logger.info("autoencoder: reusing model %s (%s)", row["id"], row["path"])
                self.model_id_ = int(row["id"])
                return self.load(row["path"])
        rows = store.query("SELECT id, path FROM images WHERE status = 'ok' ORDER BY id")
        if not rows:
            raise ValueError("autoencoder: the catalogue has no readable images to train on")
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(len(rows), size=min(self.sample_size, len(rows)), replace=False)
        images = []
        for i in sorted(pick):
            try:
                images.append(read_image(rows[i]["path"]))
            except UnreadableImage as err:
                logger.warning("autoencoder: skipping %s in the training sample: %s", rows[i]["path"], err)
        self.fit(images)
        path = os.path.join(models_dir(store.path), f"autoencoder-run{run_id}.pt")
        self.save(path)
        self.model_id_ = store.add_model(
            "autoencoder",
            "autoencoder",
            path,
            "torch_state_dict",
            config=config,
            metrics={"train_loss": self.train_losses_[-1], "n_images": len(images)},
        )
        return self

    # -- pickling (to the workers) -------------------------------------------------
    def __getstate__(self) -> dict:
        state = numpy_state(self.__dict__, modules=("net_", "backbone_"), tensors=_FEATURE_STATS)
        state.pop("_infer", None)  # the inference copy is rebuilt where it is used
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        if isinstance(state.get("net_"), dict):
            sd = {k: torch.from_numpy(v) for k, v in state["net_"].items()}
            if state.get("kind_", state["kind"]) == "features":
                w = sd["encoder.0.weight"]
                net = FeatureAutoencoder(w.shape[1], sd["encoder.2.weight"].shape[0], w.shape[0])
            else:
                net = ConvAutoencoder(
                    state["base_channels"], 16 if state["latent_channels"] is None else state["latent_channels"]
                )
            net.load_state_dict(sd)
            state["net_"] = net.eval().requires_grad_(False)
        if isinstance(state.get("backbone_"), dict):
            from mining.models.backbone import MobileNetV2

            bb = MobileNetV2()
            bb.load_state_dict({k: torch.from_numpy(v) for k, v in state["backbone_"].items()})
            state["backbone_"] = bb.eval().requires_grad_(False)
        tensors_from_numpy(state, _FEATURE_STATS)
        self.__dict__.update(state)

    # -- scoring ------------------------------------------------------------------
    def _inference_net(self) -> ConvAutoencoder:
        """A channels-last copy of the fitted network for CPU inference (about 25 % faster
        than the contiguous layout with oneDNN here; the same results up to float rounding)."""
        cached = self.__dict__.get("_infer")
        if cached is None or cached[0] is not self.net_:
            net = self.net_
            if next(net.parameters()).device.type == "cpu":
                net = copy.deepcopy(net).to(memory_format=torch.channels_last)
            cached = self._infer = (self.net_, net)
        return cached[1]

    @torch.no_grad()
    def maps_and_embeddings(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Smoothed error maps at the network's resolution and embeddings of a batch.

        Returns
        -------
        maps : ndarray of shape (N, h, w), float32 (pixels kind: (N, S, S) in ``resize`` mode, ``crop``
            needs equal sizes; features kind: the patch grid, images of one input shape)
        embeddings : ndarray of shape (N, 2 * latent_channels), float32

        Not for global pooling (its map comes with each image's score: :meth:`score_batch`).
        """
        self._check_fitted()
        if self.uses_global:
            raise ValueError("autoencoder: pooling=global has no batch error maps; use score_batch")
        if self.uses_features:
            f = (self.raw_features(images) - self.feature_mean_[:, None, None]) / self.feature_std_[:, None, None]
            recon, emb = self.net_.reconstruct_and_embed(f)
            err = gaussian_blur(((f - recon) ** 2).mean(dim=1, keepdim=True), self.smooth_sigma)
            return err[:, 0].numpy(), emb.numpy()
        x = torch.from_numpy(np.stack([self.to_input(im) for im in images])[:, None].astype(np.float32))
        recon, emb = self._inference_net().reconstruct_and_embed(x)
        err = gaussian_blur(error_map(x, recon, self.error), self.smooth_sigma)
        return err[:, 0].numpy(), emb.numpy()

    def image_score(self, emap: np.ndarray) -> tuple[float, dict[str, float]]:
        """Image score and statistics of one error map."""
        flat = emap.ravel()
        k = max(1, round(self.top_fraction * flat.size))
        top = np.partition(flat, flat.size - k)[-k:]  # the k largest, unordered: no full sort
        topk, peak = float(top.mean()), float(top.max())
        stats = {"ae_max": peak, "ae_topk": topk, "ae_mean": float(flat.mean())}
        return (topk if self.score == "topk" else peak), stats

    def _result(self, image: np.ndarray, emap: np.ndarray, emb: np.ndarray) -> ScoreResult:
        score, stats = self.image_score(emap)
        h, w = image.shape[:2]
        if self.resize == "crop" and not self.uses_features:
            full = emap[:h, :w]
        else:
            full = cv2.resize(emap, (w, h), interpolation=cv2.INTER_LINEAR)
        return ScoreResult(score=score, stats=stats, map=full.astype(np.float32), embedding=emb)

    def score_batch(self, images: list[np.ndarray]) -> list[ScoreResult]:
        """:meth:`score_image` of several images with one network pass per input size.

        Pixels kind, ``resize`` mode: every image has the same input, so a
        batch is one pass; otherwise images are grouped by input size. The
        results equal those of :meth:`score_image` up to float rounding.
        """
        self._check_fitted()
        if self.uses_global:  # one network pass per image (faster on a CPU than batches, see mining.backbone)
            return [self._global_result(im) for im in images]
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            if self.uses_features:
                key = self._input_shape(im)
            else:
                key = () if self.resize == "resize" else tuple(im.shape[:2])
            groups.setdefault(key, []).append(i)
        out: list[ScoreResult | None] = [None] * len(images)
        for key, idx in groups.items():
            # passes of at most batch_size inputs and about INFER_PIXELS input pixels (crop mode: large tiles)
            h, w = key if self.uses_features else images[idx[0]].shape[:2]
            if self.resize == "resize" and not self.uses_features:
                h = w = self.size
            step = max(1, min(self.batch_size, INFER_PIXELS // (h * w)))
            for s in range(0, len(idx), step):
                part = idx[s : s + step]
                maps, embs = self.maps_and_embeddings([images[i] for i in part])
                for j, i in enumerate(part):
                    out[i] = self._result(images[i], maps[j], embs[j])
        return out

    def score_image(self, image: np.ndarray) -> ScoreResult:
        """Error map (at the image's resolution), image score and bottleneck embedding of one image."""
        if self.uses_global:
            self._check_fitted()
            return self._global_result(image)
        maps, emb = self.maps_and_embeddings([image])
        return self._result(image, maps[0], emb[0])
