"""The ``autoencoder`` scorer: training glue around :mod:`mining.autoencoder`.

``prepare`` trains a small convolutional autoencoder from scratch on a seeded
sample of the catalogue (or reuses the newest saved model trained with the
same settings, or loads ``weights``), with a trimmed loss so the few defects
inside its own sample are not learned. The model is saved as a ``state_dict``
beside the catalogue and registered with :meth:`mining.store.Store.add_model`.
``score_image`` returns the smoothed reconstruction-error map, the image score
(top-k mean or max of the map) and the bottleneck embedding.

CPU by default and deterministic with a seed; ``device="auto"`` uses a CUDA
GPU for training when one is present.
"""

from __future__ import annotations

import copy
import json
import logging
import os

import cv2
import numpy as np
import torch

from mining.autoencoder import ConvAutoencoder, error_map, gaussian_blur, trimmed_mean
from mining.backbone import short_error, state_dict_mismatch
from mining.io import UnreadableImage, read_image, to_float_gray
from mining.scorers.base import Scorer, ScoreResult
from synthesis.atomic import atomic_write

logger = logging.getLogger(__name__)

#: input pixels of one inference pass in :meth:`AutoencoderScorer.score_batch` (about 4 MP: the
#: activations of the first stage alone are 16 x that in float32, ~256 MB)
INFER_PIXELS = 4_000_000

RESIZE_MODES = ("resize", "crop")
ERRORS = ("l2", "ssim")
SCORE_KINDS = ("topk", "max")
DEVICES = ("auto", "cpu", "cuda")

#: settings that change the trained model (a saved model is reused only when they match)
_MODEL_KEYS = (
    "size",
    "resize",
    "sample_size",
    "epochs",
    "batch_size",
    "lr",
    "trim",
    "seed",
    "base_channels",
    "latent_channels",
)


def models_dir(store_path: str) -> str:
    """Folder where a catalogue's model files are kept."""
    base, _ = os.path.splitext(os.path.abspath(store_path))
    return base + ".models"


class AutoencoderScorer(Scorer):
    """Reconstruction-error scorer with a bottleneck embedding.

    Parameters
    ----------
    size : int, default=64
        Side (px, multiple of 8) the image is resized to (``resize``) or the
        training crop side (``crop``; then whole images are scored at full
        resolution, padded to a multiple of 8).
    resize : {"resize", "crop"}, default="resize"
    sample_size : int, default=256
        Catalogue images drawn (seeded) to train on.
    epochs : int, default=30
    batch_size : int, default=32
    lr : float, default=2e-3
    trim : float, default=0.1
        Fraction of each batch's highest per-image losses left out of the loss.
    error : {"l2", "ssim"}, default="l2"
        Kind of error map.
    smooth_sigma : float, default=1.0
        Gaussian smoothing (px at the network's resolution) of the error map.
    score : {"topk", "max"}, default="topk"
        Image score: mean of the top ``top_fraction`` of the map, or its max.
    top_fraction : float, default=0.01
    base_channels, latent_channels : int, default=16, 16
    seed : int, default=0
    device : {"auto", "cpu", "cuda"}, default="cpu"
        Where training runs (scoring in the workers stays on the CPU).
    weights : str, optional
        A saved ``state_dict`` to load instead of training.
    """

    name = "autoencoder"
    embedding_name = "autoencoder"

    @property
    def whole_image(self) -> bool:
        """``resize`` squashes the image to ``size`` x ``size``: a tiled image is scored whole; ``crop``: by tile."""
        return self.resize == "resize"

    map_range = (0.0, 0.05)

    def __init__(
        self,
        *,
        size: int = 64,
        resize: str = "resize",
        sample_size: int = 256,
        epochs: int = 30,
        batch_size: int = 32,
        lr: float = 2e-3,
        trim: float = 0.1,
        error: str = "l2",
        smooth_sigma: float = 1.0,
        score: str = "topk",
        top_fraction: float = 0.01,
        base_channels: int = 16,
        latent_channels: int = 16,
        seed: int = 0,
        device: str = "cpu",
        weights: str | None = None,
    ):
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
        self.seed = seed
        self.device = device
        self.weights = weights

    # -- validation ---------------------------------------------------------------
    def _validate(self) -> None:
        checks = [
            (self.size >= 16 and self.size % 8 == 0, "size", self.size, "a multiple of 8, >= 16"),
            (self.resize in RESIZE_MODES, "resize", self.resize, f"one of {RESIZE_MODES}"),
            (self.sample_size >= 1, "sample_size", self.sample_size, ">= 1"),
            (self.epochs >= 1, "epochs", self.epochs, ">= 1"),
            (self.batch_size >= 1, "batch_size", self.batch_size, ">= 1"),
            (self.lr > 0, "lr", self.lr, "> 0"),
            (0 <= self.trim < 1, "trim", self.trim, "in [0, 1)"),
            (self.error in ERRORS, "error", self.error, f"one of {ERRORS}"),
            (self.smooth_sigma >= 0, "smooth_sigma", self.smooth_sigma, ">= 0"),
            (self.score in SCORE_KINDS, "score", self.score, f"one of {SCORE_KINDS}"),
            (0 < self.top_fraction <= 1, "top_fraction", self.top_fraction, "in (0, 1]"),
            (self.device in DEVICES, "device", self.device, f"one of {DEVICES}"),
        ]
        for ok, key, value, allowed in checks:
            if not ok:
                raise ValueError(f"autoencoder.{key} must be {allowed}, got {value!r}")

    def _model_config(self) -> dict:
        return {k: getattr(self, k) for k in _MODEL_KEYS}

    # -- input --------------------------------------------------------------------
    def to_input(self, image: np.ndarray) -> np.ndarray:
        """The network's input for one image: float32 gray, (size, size) or padded full size."""
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

    # -- training -----------------------------------------------------------------
    def fit(self, images: list[np.ndarray]) -> AutoencoderScorer:
        """Train on a list of images (any dtype :func:`mining.io.to_float_gray` accepts); return self."""
        self._validate()
        if not images:
            raise ValueError("autoencoder: no images to train on")
        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        device = "cuda" if self.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and device == "cpu":
            logger.warning("autoencoder.device=cuda but no CUDA GPU is present; training on the CPU")
        data = torch.from_numpy(self._train_patches(images, rng))
        net = ConvAutoencoder(self.base_channels, self.latent_channels).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        losses = []
        for _ in range(self.epochs):
            order = torch.randperm(len(data), generator=gen)
            total = 0.0
            for i in range(0, len(data), self.batch_size):
                x = data[order[i : i + self.batch_size]].to(device)
                per = ((net(x) - x) ** 2).mean(dim=(1, 2, 3))
                loss = trimmed_mean(per, self.trim)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(x)
            losses.append(total / len(data))
        self.net_ = net.cpu().eval().requires_grad_(False)
        self.train_losses_ = losses
        logger.info(
            "autoencoder trained on %d images (%d patches), final loss %.5f", len(images), len(data), losses[-1]
        )
        return self

    def save(self, path: str) -> None:
        """Write the trained network's ``state_dict`` (atomically)."""
        self._check_fitted()
        with atomic_write(path, "wb") as fh:
            torch.save(self.net_.state_dict(), fh)

    def load(self, path: str) -> AutoencoderScorer:
        """Load a ``state_dict`` saved by :meth:`save` (``weights_only=True``); return self."""
        net = ConvAutoencoder(self.base_channels, self.latent_channels)
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
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"autoencoder weights file {path!r} does not match autoencoder base_channels={self.base_channels}, "
                f"latent_channels={self.latent_channels}: {state_dict_mismatch(net, state)}"
            ) from err
        self.net_ = net.eval().requires_grad_(False)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise ValueError("the autoencoder is not trained: call prepare() or fit() first")

    def prepare(self, store, run_id: int | None = None) -> AutoencoderScorer:
        """Load ``weights``, reuse a model saved with the same settings, or train and save one."""
        self._validate()
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
        # plain numpy arrays, not tensors (torch's multiprocessing reducers pass tensors as file descriptors)
        state = self.__dict__.copy()
        state.pop("_infer", None)  # the inference copy is rebuilt where it is used
        if "net_" in state:
            state["net_"] = {k: v.numpy() for k, v in state["net_"].state_dict().items()}
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        if isinstance(state.get("net_"), dict):
            net = ConvAutoencoder(state["base_channels"], state["latent_channels"])
            net.load_state_dict({k: torch.from_numpy(v) for k, v in state["net_"].items()})
            state["net_"] = net.eval().requires_grad_(False)
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
        maps : ndarray of shape (N, S, S), float32 (``resize`` mode; ``crop`` needs equal sizes)
        embeddings : ndarray of shape (N, 2 * latent_channels), float32
        """
        self._check_fitted()
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
        full = emap[:h, :w] if self.resize == "crop" else cv2.resize(emap, (w, h), interpolation=cv2.INTER_LINEAR)
        return ScoreResult(score=score, stats=stats, map=full.astype(np.float32), embedding=emb)

    def score_batch(self, images: list[np.ndarray]) -> list[ScoreResult]:
        """:meth:`score_image` of several images with one network pass per input size.

        In ``resize`` mode every image has the same input, so a batch is one
        pass; in ``crop`` mode images are grouped by size. The results equal
        those of :meth:`score_image` up to float rounding.
        """
        self._check_fitted()
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            key = () if self.resize == "resize" else tuple(im.shape[:2])
            groups.setdefault(key, []).append(i)
        out: list[ScoreResult | None] = [None] * len(images)
        for idx in groups.values():
            # passes of at most batch_size inputs and about INFER_PIXELS input pixels (crop mode: large tiles)
            h, w = images[idx[0]].shape[:2]
            if self.resize == "resize":
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
        maps, emb = self.maps_and_embeddings([image])
        return self._result(image, maps[0], emb[0])
