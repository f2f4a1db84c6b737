"""An ImageNet MobileNetV2 in plain torch, reading torchvision's ``state_dict`` format.

The network is defined here (torchvision is not needed) with the same module
names as ``torchvision.models.mobilenet_v2`` so that torchvision's published
file ``mobilenet_v2-b0353104.pth`` loads with ``strict=True`` and
``weights_only=True``. Nothing is downloaded: the weights come from a local
file named by the config key ``backbone.weights`` or the environment variable
:data:`WEIGHTS_ENV`.

:func:`preprocess` turns gray or colour images into the network's input and
:meth:`MobileNetV2.feature_maps` returns the maps of chosen blocks; the
``backbone`` scorer (:mod:`mining.scorers.backbone`) pools them into global
vectors and PatchCore-style patch features.
"""

from __future__ import annotations

import hashlib
import logging
import os

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)

#: Environment variable naming the weights file when the config does not.
WEIGHTS_ENV = "RAREMINE_BACKBONE_WEIGHTS"

#: SHA-256 of torchvision's published ``mobilenet_v2-b0353104.pth``.
TORCHVISION_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

#: ImageNet normalisation used by torchvision's weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (expand ratio t, channels c, repeats n, first stride s) as in the paper and torchvision
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class _ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_ConvBNReLU(cin, hidden, kernel=1))
        layers += [
            _ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with torchvision's module names.

    Parameters
    ----------
    num_classes : int, default=1000
        Size of the classifier (kept so torchvision's file loads strictly).
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        cin = 32
        layers: list[nn.Module] = [_ConvBNReLU(3, cin, stride=2)]
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_ConvBNReLU(cin, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        x = self.features(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def feature_maps(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Outputs of the ``features`` blocks listed in ``layers`` (stops after the deepest)."""
        out, last = [], max(layers)
        for i, block in enumerate(self.features):
            x = block(x)
            if i in layers:
                out.append(x)
            if i == last:
                break
        return out


def block_channels(layer: int) -> int:
    """Channels of the output of ``features[layer]`` (0 to 18) of MobileNetV2 width 1.0.

    Raises
    ------
    ValueError
        When ``layer`` is not a block number.
    """
    channels = [32] + [c for _, c, n, _ in _SETTINGS for _ in range(n)] + [1280]
    if not isinstance(layer, int) or not 0 <= layer < len(channels):
        raise ValueError(f"MobileNetV2 has feature blocks 0 to {len(channels) - 1}, got {layer!r}")
    return channels[layer]


class MissingWeightsError(FileNotFoundError, ValueError):
    """A weights file is named (config or environment) but is not there.

    A :class:`FileNotFoundError`, and a :class:`ValueError` like every other
    refused input, so callers that turn ValueError into a message catch it.
    """


def resolve_weights(path: str | os.PathLike | None) -> str | None:
    """The weights file to use: ``path``, else :data:`WEIGHTS_ENV`, else None.

    Raises
    ------
    MissingWeightsError
        When a path is given (or set in the environment) but no file is there
        (a FileNotFoundError and a ValueError).
    """
    if path:
        source = "backbone.weights"
    else:
        path, source = os.environ.get(WEIGHTS_ENV) or None, WEIGHTS_ENV
    if not path:
        return None
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingWeightsError(f"{source}={path!r}: no such file (expected torchvision's mobilenet_v2 state_dict)")
    return path


def load_mobilenet_v2(path: str | os.PathLike, device: str | torch.device = "cpu") -> MobileNetV2:
    """Build the network and load torchvision's ``state_dict`` from a local file.

    Parameters
    ----------
    path : path
        A ``.pth`` file holding a plain ``state_dict`` (read with ``weights_only=True``).
    device : str or torch.device, default="cpu"

    Returns
    -------
    MobileNetV2
        In eval mode, gradients off.

    Raises
    ------
    ValueError
        When the file is missing, is not a torch file, is not a MobileNetV2
        ``state_dict`` (missing or unexpected keys named), or is named as
        torchvision's file but its SHA-256 differs.
    """
    path = os.fspath(path)
    _check_torchvision_hash(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise ValueError(f"backbone weights file {path!r} does not exist") from err
    except Exception as err:  # a damaged or foreign file: torch raises RuntimeError, UnpicklingError, EOFError...
        raise ValueError(
            f"backbone weights file {path!r} is not a torch state_dict file that loads with weights_only=True "
            f"(expected torchvision's mobilenet_v2-b0353104.pth): {short_error(err)}"
        ) from err
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} does not hold a state_dict (got {type(state).__name__})")
    net = MobileNetV2()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"backbone weights file {path!r} is not a torchvision mobilenet_v2 state_dict: "
            + state_dict_mismatch(net, state)
        ) from err
    net.eval().requires_grad_(False)
    return net.to(device)


def short_error(err: BaseException, limit: int = 160) -> str:
    """``Type: first sentence`` of an exception (torch's load errors run to paragraphs)."""
    text = (str(err).strip().splitlines() or [""])[0]
    text = text.split(". ")[0]
    return f"{type(err).__name__}: {text[:limit]}" + ("..." if len(text) > limit else "")


def state_dict_mismatch(net: nn.Module, state: dict) -> str:
    """What differs between a network's parameters and a ``state_dict``, in a few words."""
    want = net.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [
        f"{k} {tuple(getattr(v, 'shape', ()))} (expected {tuple(want[k].shape)})"
        for k, v in state.items()
        if k in want and tuple(getattr(v, "shape", ())) != tuple(want[k].shape)
    ]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", shapes)):
        if items:
            parts.append(f"{len(items)} {label} (e.g. {', '.join(map(str, items[:3]))})")
    return "; ".join(parts) or "the parameters do not load"


def _check_torchvision_hash(path: str) -> None:
    """Refuse a file named as torchvision's weights whose SHA-256 is not the published one.

    torchvision names its files ``<arch>-<first 8 hex digits of the SHA-256>.pth``;
    a file of that name with another digest is damaged (a cut download) or
    replaced. Files of other names are checked by the strict load only.
    """
    if os.path.basename(path) != "mobilenet_v2-b0353104.pth" or not os.path.isfile(path):
        return
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != TORCHVISION_SHA256:
        raise ValueError(
            f"backbone weights file {path!r} has SHA-256 {h.hexdigest()}, but torchvision's "
            f"mobilenet_v2-b0353104.pth has {TORCHVISION_SHA256}: the file is damaged or not torchvision's; "
            "copy it again"
        )


def input_shape(height: int, width: int, size: int = 224, max_aspect: float = 3.0) -> tuple[int, int]:
    """The network input (rows, columns) for an image of ``height`` x ``width``: aspect kept, short side ``size``.

    The short side becomes ``size``; the long side ``size`` times the image's
    aspect ratio, at most ``max_aspect`` times ``size`` (so the cost per image
    is bounded whatever the archive), rounded to a multiple of 32 (the
    network's total stride). ``max_aspect=1`` squashes every image to
    ``size`` x ``size``.

    Parameters
    ----------
    height, width : int
        The image's size in pixels.
    size : int, default=224
        The short side of the input (a multiple of 32).
    max_aspect : float, default=3.0
        Longest long side, in multiples of ``size`` (>= 1).

    Returns
    -------
    (int, int)
    """
    if size % 32 or size < 32:
        raise ValueError(f"size must be a multiple of 32, >= 32, got {size}")
    if max_aspect < 1:
        raise ValueError(f"max_aspect must be >= 1, got {max_aspect}")
    aspect = max(height, width) / max(1, min(height, width))
    long = int(min(max(1, round(size * min(aspect, max_aspect) / 32)) * 32, 32 * int(size * max_aspect // 32)))
    long = max(long, size)
    return (size, long) if height <= width else (long, size)


def preprocess(images: list[np.ndarray], size: int, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Resize to ``shape`` (default ``size`` x ``size``), gray to RGB, ImageNet-normalise.

    Parameters
    ----------
    images : list of ndarray
        Float images in [0, 1], shape (H, W) or (H, W, 3).
    size : int
        Side of the square input when ``shape`` is not given.
    shape : (int, int), optional
        Input rows and columns (see :func:`input_shape`), the same for the whole batch.

    Returns
    -------
    Tensor of shape (N, 3, rows, columns), float32
    """
    rows, cols = (size, size) if shape is None else shape
    batch = np.empty((len(images), rows, cols, 3), np.float32)
    for i, im in enumerate(images):
        im = cv2.resize(np.asarray(im, np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
        batch[i] = im[..., None] if im.ndim == 2 else im[..., :3]
    batch = (batch - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
