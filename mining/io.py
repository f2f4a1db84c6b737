"""Reading archive images: one decoder for indexing, mining, training and the app.

Every image in raremine passes through :func:`read_image` (or
:func:`inspect_image` when only the metadata is needed) so that training and
mining see the same pixels. A file that cannot be read raises
:class:`UnreadableImage` carrying a short machine-readable ``reason`` from
:data:`REASONS` and a human-readable ``detail``; callers record it and go on.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)

#: File extensions that are indexed (lower case, with the dot).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")

#: Reasons an image can be unreadable, as stored in the catalogue.
REASONS = (
    "empty",
    "truncated",
    "not_an_image",
    "unsupported",
    "too_large",
    "permission_denied",
    "broken_link",
    "missing",
    "decode_error",
)

#: Default limit on width * height (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 200_000_000

_MAGIC = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".bmp": (b"BM",),
    ".tif": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    ".tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    ".npy": (b"\x93NUMPY",),
}
_SUPPORTED_DTYPES = (np.uint8, np.uint16, np.float32, np.float64, np.int16, np.int32)


class UnreadableImage(Exception):
    """An image file that cannot be used.

    Parameters
    ----------
    path : str
        The file.
    reason : str
        One of :data:`REASONS`.
    detail : str
        What exactly went wrong, for people.
    """

    def __init__(self, path: str, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
        super().__init__(f"{path}: {reason}: {detail}")
        self.path = path
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageInfo:
    """Metadata of a readable image file."""

    path: str
    sha256: str
    bytes: int
    mtime_ns: int
    width: int
    height: int
    channels: int
    dtype: str


def _read_bytes(path: str) -> tuple[bytes, os.stat_result]:
    if os.path.islink(path) and not os.path.exists(path):
        raise UnreadableImage(path, "broken_link", f"symbolic link to missing {os.readlink(path)!r}")
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            data = fh.read()
    except PermissionError as err:
        raise UnreadableImage(path, "permission_denied", str(err)) from err
    except FileNotFoundError as err:
        raise UnreadableImage(path, "missing", str(err)) from err
    except IsADirectoryError as err:
        raise UnreadableImage(path, "not_an_image", "is a directory") from err
    except OSError as err:
        raise UnreadableImage(path, "decode_error", str(err)) from err
    if not data:
        raise UnreadableImage(path, "empty", "file has 0 bytes")
    return data, st


def _check_magic(path: str, ext: str, data: bytes) -> None:
    magics = _MAGIC.get(ext)
    if magics is None:
        raise UnreadableImage(path, "unsupported", f"extension {ext!r} not in {IMAGE_EXTENSIONS}")
    if not any(data.startswith(m) for m in magics):
        raise UnreadableImage(path, "not_an_image", f"content is not a {ext[1:].upper()} file")


def _check_complete(path: str, ext: str, data: bytes) -> None:
    # Decoders fill a truncated image with grey and only warn: look at the end.
    if ext == ".png" and b"IEND" not in data[-64:]:
        raise UnreadableImage(path, "truncated", "PNG has no IEND chunk at its end")
    if ext in (".jpg", ".jpeg") and b"\xff\xd9" not in data[-4096:]:
        raise UnreadableImage(path, "truncated", "JPEG has no end-of-image marker")


def _header_size(path: str, ext: str, data: bytes) -> tuple[int, int] | None:
    """Width and height from the header, without decoding (None when unknown)."""
    if ext == ".png" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if ext in (".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        try:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Exception:
            return None
    return None


def _decode_npy(path: str, data: bytes, max_pixels: int) -> np.ndarray:
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise UnreadableImage(path, "unsupported", "object arrays are not images") from err
        raise UnreadableImage(path, "truncated", str(err)) from err
    except Exception as err:
        raise UnreadableImage(path, "decode_error", str(err)) from err
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise UnreadableImage(path, "unsupported", f"array shape {arr.shape}; allowed (H, W) or (H, W, 1|3|4)")
    if arr.dtype.type not in _SUPPORTED_DTYPES:
        allowed = ", ".join(np.dtype(t).name for t in _SUPPORTED_DTYPES)
        raise UnreadableImage(path, "unsupported", f"dtype {arr.dtype}; allowed {allowed}")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise UnreadableImage(path, "too_large", f"{arr.shape[1]}x{arr.shape[0]} px exceeds max_pixels={max_pixels}")
    return arr


def decode_bytes(path: str, data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode the bytes of an image file.

    Parameters
    ----------
    path : str
        File name (its extension picks the decoder; used in errors).
    data : bytes
        The file's content.
    max_pixels : int, optional
        Refuse images with more pixels than this (reason ``too_large``).

    Returns
    -------
    image : ndarray of shape (H, W) or (H, W, C)
        Pixels as stored: uint8 or uint16 (or float / int for ``.npy``);
        colour images in RGB order.

    Raises
    ------
    UnreadableImage
        With one of :data:`REASONS`.
    """
    ext = os.path.splitext(path)[1].lower()
    if not data:
        raise UnreadableImage(path, "empty", "file has 0 bytes")
    _check_magic(path, ext, data)
    if ext == ".npy":
        return _decode_npy(path, data, max_pixels)
    _check_complete(path, ext, data)
    size = _header_size(path, ext, data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise UnreadableImage(path, "too_large", f"{size[0]}x{size[1]} px exceeds max_pixels={max_pixels}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        if size is None:
            raise UnreadableImage(path, "decode_error", "OpenCV could not decode the file")
        raise UnreadableImage(path, "truncated", "OpenCV could not decode the pixel data")
    if img.ndim == 3:
        if img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    if img.shape[0] * img.shape[1] > max_pixels:
        raise UnreadableImage(path, "too_large", f"{img.shape[1]}x{img.shape[0]} px exceeds max_pixels={max_pixels}")
    return img


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read one image file as stored (see :func:`decode_bytes`).

    Parameters
    ----------
    path : str or path-like
        PNG, JPEG, BMP, TIFF (8 or 16 bit) or NumPy ``.npy`` file.
    max_pixels : int, optional
        Refuse images with more pixels than this.

    Returns
    -------
    image : ndarray of shape (H, W) or (H, W, C)

    Raises
    ------
    UnreadableImage
        When the file cannot be used; its ``reason`` says why.
    """
    path = os.fspath(path)
    data, _ = _read_bytes(path)
    return decode_bytes(path, data, max_pixels=max_pixels)


def inspect_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read, hash and fully decode a file once; return its metadata.

    The full decode is what proves a file readable (a truncated JPEG has a
    valid header).

    Raises
    ------
    UnreadableImage
        When the file cannot be used.
    """
    path = os.fspath(path)
    data, st = _read_bytes(path)
    img = decode_bytes(path, data, max_pixels=max_pixels)
    return ImageInfo(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        mtime_ns=st.st_mtime_ns,
        width=int(img.shape[1]),
        height=int(img.shape[0]),
        channels=1 if img.ndim == 2 else int(img.shape[2]),
        dtype=img.dtype.name,
    )


def to_float_gray(image: np.ndarray) -> np.ndarray:
    """Normalise any supported image to float32 grayscale in [0, 1].

    The one documented rule used everywhere: uint8 is divided by 255, uint16
    by 65535; signed and float arrays are min-max scaled per image (constant
    images become 0). Colour is converted with ITU-R 601 luma weights; an
    alpha channel is dropped.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C)

    Returns
    -------
    gray : ndarray of shape (H, W), float32
    """
    img = np.asarray(image)
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[..., 0]
        else:
            rgb = img[..., :3].astype(np.float32)
            img = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
            img = img.astype(image.dtype) if image.dtype.kind in "ui" else img
    if img.ndim != 2:
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got {np.shape(image)}")
    return to_float(img)


def to_float(image: np.ndarray) -> np.ndarray:
    """Scale an image to float32 in [0, 1] by the rule of :func:`to_float_gray`.

    Parameters
    ----------
    image : ndarray of any shape

    Returns
    -------
    out : ndarray of the same shape, float32
    """
    img = np.asarray(image)
    # one pass into a float32 result (``astype`` then ``/`` makes a second array: ~6x slower, same values)
    if img.dtype == np.uint8:
        return np.divide(img, np.float32(255.0), dtype=np.float32)
    if img.dtype == np.uint16:
        return np.divide(img, np.float32(65535.0), dtype=np.float32)
    if img.dtype == np.bool_:
        return img.astype(np.float32)
    img = img.astype(np.float32)
    lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    if hi <= lo:
        return np.zeros_like(img)
    return (img - lo) / (hi - lo)
