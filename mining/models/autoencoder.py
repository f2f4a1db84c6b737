"""A small convolutional autoencoder: the network's math (training glue lives in
:mod:`mining.scorers.autoencoder`).

Input: gray images in [0, 1], shape (N, 1, S, S) with S a multiple of 8.
Three stride-2 convolutions bring S to S/8 with ``latent_channels`` channels
(the bottleneck); three transposed convolutions bring it back. The image's
embedding is the bottleneck's channel-wise mean and standard deviation.

Error maps (:func:`error_map`): squared error, or an SSIM-style
``(1 - SSIM) / 2`` computed with Gaussian-weighted local statistics.

:class:`FeatureAutoencoder` is the other kind: a 1x1-convolution autoencoder
over pretrained feature maps (C channels per patch, any grid), as in
feature-reconstruction anomaly detection (DFR, Shi et al. 2021): every patch
vector is squeezed through ``latent_channels`` values and rebuilt; a patch
unlike those it was trained on is rebuilt badly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder for gray images.

    Parameters
    ----------
    base_channels : int, default=16
        Channels of the first stage (doubled at each of the next two).
    latent_channels : int, default=16
        Channels of the bottleneck (at 1/8 of the input resolution).
    """

    def __init__(self, base_channels: int = 16, latent_channels: int = 16):
        super().__init__()
        if base_channels < 1 or latent_channels < 1:
            raise ValueError(f"base_channels and latent_channels must be >= 1, got {base_channels}, {latent_channels}")
        c1, c2, c3 = base_channels, base_channels * 2, base_channels * 4
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3, 2, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(c1, c2, 3, 2, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(c2, c3, 3, 2, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(c3, latent_channels, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, c3, 1),
            nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(c3, c2, 4, 2, 1),
            nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(c2, c1, 4, 2, 1),
            nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(c1, 1, 4, 2, 1),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck maps, shape (N, latent_channels, S/8, S/8)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction, same shape as ``x``."""
        return self.decoder(self.encoder(x))

    def reconstruct_and_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (N, 1, S, S) and embedding (N, 2 * latent_channels): bottleneck mean and std."""
        z = self.encoder(x)
        emb = torch.cat([z.mean(dim=(2, 3)), z.std(dim=(2, 3))], dim=1)
        return self.decoder(z), emb


class FeatureAutoencoder(nn.Module):
    """1x1-convolution autoencoder over feature maps: C -> hidden -> latent -> hidden -> C.

    Parameters
    ----------
    in_channels : int
        Channels of the feature maps.
    latent_channels : int
        Channels of the bottleneck.
    hidden_channels : int, optional
        Channels of the two hidden layers (default: the mean of in and latent).
    """

    def __init__(self, in_channels: int, latent_channels: int, hidden_channels: int | None = None):
        super().__init__()
        if in_channels < 1 or latent_channels < 1:
            raise ValueError(f"in_channels and latent_channels must be >= 1, got {in_channels}, {latent_channels}")
        hidden = hidden_channels or max(latent_channels, (in_channels + latent_channels) // 2)
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, latent_channels, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, hidden, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, in_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction, same shape as ``x`` (N, C, H, W)."""
        return self.decoder(self.encoder(x))

    def reconstruct_and_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (N, C, H, W) and embedding (N, 2 * latent_channels): bottleneck mean and std."""
        z = self.encoder(x)
        flat = z.flatten(2)
        std = flat.std(dim=2) if flat.shape[2] > 1 else torch.zeros_like(flat[:, :, 0])
        return self.decoder(z), torch.cat([flat.mean(dim=2), std], dim=1)


def _gaussian_window(sigma: float, device, dtype) -> torch.Tensor:
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W) maps with reflect padding (``sigma <= 0``: unchanged)."""
    if sigma <= 0:
        return x
    g = _gaussian_window(sigma, x.device, x.dtype)
    r = len(g) // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1))


def error_map(x: torch.Tensor, recon: torch.Tensor, kind: str = "l2", ssim_sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel reconstruction error, shape (N, 1, H, W).

    Parameters
    ----------
    x, recon : Tensor of shape (N, 1, H, W)
    kind : {"l2", "ssim"}, default="l2"
        ``l2``: squared difference; ``ssim``: ``(1 - SSIM) / 2`` in [0, 1].
    ssim_sigma : float, default=1.5
        Gaussian window of the local SSIM statistics.
    """
    if kind == "l2":
        return (x - recon) ** 2
    if kind != "ssim":
        raise ValueError(f"kind must be 'l2' or 'ssim', got {kind!r}")
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = gaussian_blur(x, ssim_sigma), gaussian_blur(recon, ssim_sigma)
    sxx = gaussian_blur(x * x, ssim_sigma) - mu_x**2
    syy = gaussian_blur(recon * recon, ssim_sigma) - mu_y**2
    sxy = gaussian_blur(x * recon, ssim_sigma) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return ((1 - ssim) / 2).clamp(0, 1)


def trimmed_mean(per_sample: torch.Tensor, trim: float) -> torch.Tensor:
    """Mean of the per-sample losses after dropping the highest ``trim`` fraction.

    A few defects inside the training sample then cannot teach the network
    to reconstruct them.
    """
    if not 0 <= trim < 1:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    n = per_sample.numel()
    keep = max(1, n - int(trim * n))
    return torch.topk(per_sample.flatten(), keep, largest=False).values.mean()
