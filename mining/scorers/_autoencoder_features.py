"""The ``autoencoder`` scorer's pretrained-feature kinds: MobileNetV2 features in, vectors to rebuild out.

:class:`FeatureKinds` holds the part of
:class:`~mining.scorers.autoencoder.AutoencoderScorer` that turns images into
the features its autoencoder rebuilds and trains on them: the patch vectors
(``pooling="patches"``) and the image's pooled vector (``pooling="global"``),
and the global kind's score and map. The scorer's module keeps the settings,
the pixel kind, persistence and the catalogue glue.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from mining.io import to_float, to_float_gray
from mining.models.autoencoder import FeatureAutoencoder, trimmed_mean
from mining.scorers.base import ScoreResult

#: ImageNet normalisation of the MobileNetV2 input (as :mod:`mining.models.backbone`)
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)

#: features mode: the largest stride among the blocks used (block 13 of MobileNetV2 is at 1/16)
_STRIDE = 16

#: features mode: patch vectors drawn (seeded) from the training sample; more add time, not accuracy
_MAX_VECTORS = 100_000

#: global pooling: a feature's spread over the training sample is floored at this fraction of the median
#: feature's (a channel that is constant over the sample, a dead ReLU, would otherwise turn any deviation
#: into an unbounded error)
_STD_FLOOR = 0.01


def _aspect_shape(h: int, w: int, scale: float, side: int) -> tuple[int, int]:
    """(height, width) of (h, w) resized by ``scale`` (aspect kept), at most about ``(2 * side)**2``
    pixels, each side a multiple of :data:`_STRIDE` and at least two of them."""
    scale = min(scale, 2 * side / float(np.sqrt(h * w)))
    return (
        max(2 * _STRIDE, _STRIDE * round(h * scale / _STRIDE)),
        max(2 * _STRIDE, _STRIDE * round(w * scale / _STRIDE)),
    )


def _network_input(image: np.ndarray, shape: tuple[int, int], lo: float, hi: float) -> np.ndarray:
    """One image as MobileNetV2 input, (3, H, W) float32: resized (aspect kept), contrast set by the
    archive's ``lo``/``hi`` intensities, gray to RGB, ImageNet-normalised."""
    im = to_float(image)
    if im.ndim == 3:
        im = im[..., 0] if im.shape[2] == 1 else im[..., :3]
    im = cv2.resize(im, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    im = (im - lo) / max(hi - lo, 1e-6)
    im = np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im
    return ((im - _MEAN) / _STD).transpose(2, 0, 1)


class FeatureKinds:
    """Mixin of :class:`~mining.scorers.autoencoder.AutoencoderScorer`: its pretrained-feature kinds."""

    def _input_shape(self, image: np.ndarray) -> tuple[int, int]:
        return _aspect_shape(image.shape[0], image.shape[1], self.scale_, self.feature_size)

    @torch.no_grad()
    def raw_features(self, images: list[np.ndarray]) -> torch.Tensor:
        """Patch features of images that share :meth:`_input_shape`, (N, C, H/8, W/8) (finest block's
        grid; coarser blocks upsampled to it), each block averaged over 3x3 patches; not standardised."""
        lo, hi = self.intensity_
        x = torch.from_numpy(np.stack([_network_input(im, self._input_shape(im), lo, hi) for im in images]))
        maps = self.backbone_.feature_maps(x, tuple(sorted(self.layers)))
        grid = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        out = []
        for m in maps:
            m = F.avg_pool2d(m, 3, 1, 1, count_include_pad=False)
            if tuple(m.shape[-2:]) != tuple(grid):
                m = F.interpolate(m, size=tuple(grid), mode="bilinear", align_corners=False)
            out.append(m)
        return torch.cat(out, dim=1)

    def _by_shape(self, images: list[np.ndarray]) -> dict[tuple[int, int], list[int]]:
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(self._input_shape(im), []).append(i)
        return groups

    def _fit_features(self, images: list[np.ndarray]) -> None:
        rng = np.random.default_rng(self.seed)
        # the archive's contrast (a rule for any archive, chosen from the sample): its 0.5 and 99.5
        # percentile intensities become 0 and 1 (a 12-bit archive in 16-bit files is not near-black)
        pix = np.concatenate([rng.choice(to_float_gray(im).ravel(), 4096) for im in images])
        lo, hi = np.percentile(pix, [0.5, 99.5])
        self.intensity_ = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
        # one scale for the whole archive (a rule, chosen from the sample): its median image gets about
        # feature_size**2 pixels; every image is resized by the same factor, so a defect keeps its size
        # relative to the network's receptive fields whatever the image's crop
        self.scale_ = self.feature_size / float(np.median([np.sqrt(im.shape[0] * im.shape[1]) for im in images]))
        feats = []
        for idx in self._by_shape(images).values():
            for s in range(0, len(idx), self.batch_size):
                f = self.raw_features([images[i] for i in idx[s : s + self.batch_size]])
                feats.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]))
        X = torch.cat(feats)
        if len(X) > _MAX_VECTORS:
            X = X[torch.from_numpy(np.sort(rng.choice(len(X), _MAX_VECTORS, replace=False)))]
        mean, std = X.mean(0), X.std(0).clamp_min(1e-6)
        X = (X - mean) / std
        latent = self.latent_channels
        if latent is None:  # chosen from the archive: principal components explaining `explained` of the variance
            ev = torch.linalg.eigvalsh(X.T @ X / len(X)).flip(0).clamp_min(0)
            need = int(torch.searchsorted(torch.cumsum(ev, 0) / ev.sum(), torch.tensor(self.explained))) + 1
            latent = int(min(max(8, need), max(8, X.shape[1] // 2)))
        torch.manual_seed(self.seed)
        net = FeatureAutoencoder(X.shape[1], latent)
        per_image = max(1, len(X) // len(images))
        step = self.batch_size * per_image
        losses = self._train_net(net, X[:, :, None, None], step)
        self.net_ = net.eval().requires_grad_(False)
        self.feature_mean_, self.feature_std_ = mean, std
        self.train_losses_ = losses
        # overlay range (chosen from the archive): zero to a high quantile of the training patches' error
        with torch.no_grad():
            err = ((net(X[:, :, None, None][:50_000]) - X[:, :, None, None][:50_000]) ** 2).mean(dim=(1, 2, 3))
        self.map_range_ = (0.0, float(torch.quantile(err, 0.999)) * 2)

    def _train_net(self, net, data: torch.Tensor, batch_size: int, device: str = "cpu") -> list[float]:
        """Train ``net`` to rebuild ``data`` (N, C, H, W); return each epoch's mean loss.

        Adam at ``lr``, batches of ``batch_size`` in an order shuffled each
        epoch (seeded by ``seed``), the loss a batch's trimmed mean
        (``trim``) of the samples' squared error.
        """
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        losses = []
        for _ in range(self._epochs):
            order = torch.randperm(len(data), generator=gen)
            total = 0.0
            for i in range(0, len(data), batch_size):
                x = data[order[i : i + batch_size]].to(device)
                loss = trimmed_mean(((net(x) - x) ** 2).mean(dim=(1, 2, 3)), self.trim)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(x)
            losses.append(total / len(data))
        return losses

    # -- features kind, global pooling ----------------------------------------------
    def _global_shape(self, image: np.ndarray) -> tuple[int, int]:
        """Network input (rows, columns) of one image: short side ``feature_size``, aspect kept (<= 3)."""
        from mining.models.backbone import input_shape

        return input_shape(image.shape[0], image.shape[1], 32 * max(1, round(self.feature_size / 32)), 3.0)

    @torch.no_grad()
    def global_features(self, image: np.ndarray) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One image's pooled vector (D,) (blocks ``global_layers`` average-pooled, concatenated, not
        standardised) and those blocks' maps (each (C_b, h_b, w_b), in ``global_layers`` order)."""
        from mining.models.backbone import preprocess

        x = preprocess([to_float(image)], self.feature_size, self._global_shape(image))
        layers = tuple(sorted(self.global_layers))
        maps = dict(zip(layers, self.backbone_.feature_maps(x, layers), strict=True))
        ordered = [maps[layer][0] for layer in self.global_layers]
        return torch.cat([m.mean(dim=(1, 2)) for m in ordered]), ordered

    def fit_vectors(self, vectors: np.ndarray | torch.Tensor) -> FeatureKinds:
        """Train the global-pooling autoencoder on pooled vectors (N, D) of the archive's images; return self.

        Every choice here is a rule for any archive or is read from the
        vectors: each value is standardised by the sample's mean and spread
        (floored at :data:`_STD_FLOOR` of the median spread); the latent size
        is the number of principal components explaining ``explained`` of the
        variance (at least 8, at most half the values and half the vectors);
        the hidden layers have twice the latent size, at least
        ``min(D, 256)``; the loss leaves out each batch's ``trim`` highest
        per-vector errors (defects in the sample are not learned).
        """
        V = torch.as_tensor(np.asarray(vectors, np.float32))
        if V.ndim != 2 or len(V) < 2:
            raise ValueError(f"autoencoder: need >= 2 pooled vectors to train on, got shape {tuple(V.shape)}")
        mean, std = V.mean(0), V.std(0)
        std = std.clamp_min(max(float(std.median()) * _STD_FLOOR, 1e-6))
        X = (V - mean) / std
        n, d = X.shape
        latent = self.latent_channels
        if latent is None:  # chosen from the archive: principal components explaining `explained` of the variance
            Xc = X - X.mean(0)
            ev = torch.linalg.eigvalsh(Xc.T @ Xc / max(1, n - 1)).flip(0).clamp_min(0)
            need = int(torch.searchsorted(torch.cumsum(ev, 0) / ev.sum(), torch.tensor(self.explained))) + 1
            latent = int(min(max(8, need), max(8, min(d // 2, n // 2))))
        torch.manual_seed(self.seed)
        net = FeatureAutoencoder(d, latent, max(2 * latent, min(d, 256)))
        x4 = X[:, :, None, None]
        losses = self._train_net(net, x4, self.batch_size)
        self.net_ = net.eval().requires_grad_(False)
        self.feature_mean_, self.feature_std_ = mean, std
        self.train_losses_ = losses
        # overlay range (chosen from the archive): zero to twice a high quantile of the sample's scores
        with torch.no_grad():
            err = ((net(x4) - x4) ** 2).mean(dim=(1, 2, 3))
        self.map_range_ = (0.0, float(torch.quantile(err, 0.99)) * 2)
        return self

    @torch.no_grad()
    def _global_result(self, image: np.ndarray) -> ScoreResult:
        v, maps = self.global_features(image)
        z = (v - self.feature_mean_) / self.feature_std_
        code = self.net_.encoder(z[None, :, None, None])
        recon = self.net_.decoder(code)[0, :, 0, 0]
        r = z - recon
        d = float(len(z))
        score = float((r * r).sum()) / d
        # the error split over the patches: the mean-pooled vector is the mean of the patch vectors, so
        # <r, z_patch - recon> / d averages, over the patches, to the score
        grid = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        emap = torch.zeros(tuple(grid))
        stats = {"ae_error": score}
        start = 0
        for layer, m in zip(self.global_layers, maps, strict=True):
            c = m.shape[0]
            sl = slice(start, start + c)
            start += c
            zp = (m - self.feature_mean_[sl, None, None]) / self.feature_std_[sl, None, None]
            part = (r[sl, None, None] * (zp - recon[sl, None, None])).sum(0) / d
            if tuple(part.shape) != tuple(grid):
                part = F.interpolate(part[None, None], size=tuple(grid), mode="bilinear", align_corners=False)[0, 0]
            emap += part
            stats[f"ae_block{layer}"] = float((r[sl] * r[sl]).sum()) / d
        h, w = image.shape[:2]
        full = cv2.resize(emap.clamp_min(0).numpy(), (w, h), interpolation=cv2.INTER_LINEAR)
        return ScoreResult(
            score=score, stats=stats, map=full.astype(np.float32), embedding=code[0, :, 0, 0].numpy().copy()
        )
