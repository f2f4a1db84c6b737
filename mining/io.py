"""Reading archive images: one decoder for indexing, mining, training and the app.

Every image in raremine passes through :func:`read_image` (or
:func:`inspect_image` when only the metadata is needed) so that training and
mining see the same pixels. A file that cannot be read raises
:class:`UnreadableImage` carrying a short machine-readable ``reason`` from
:data:`REASONS` and a human-readable ``detail``; callers record it and go on.

Volumes
-------
A multi-frame DICOM file or a multi-page TIFF stack (pages of one size) is
a *volume*: :func:`read_image` returns its frames stacked top to bottom, one
``(frames * H, W)`` array, and indexing makes each frame a tile of that
image (:func:`mining.catalogue.index.volume_tiles`), so every slice is scored on its
own and shown on its own in the review app. A series of single-frame DICOM
files (one ``SeriesInstanceUID``) is a volume too: each file is one image
and ``image_meta`` records the series and the slice order.

DICOM
-----
Read with pydicom (Part 10 files: ``DICM`` at byte 128). Pixel data that
pydicom decodes (uncompressed, deflated, RLE lossless; JPEG baseline and
JPEG 2000 through Pillow) is read; another transfer syntax (JPEG lossless,
JPEG-LS...) is ``unsupported``, naming it and the plugin that would decode
it. ``RescaleSlope`` / ``RescaleIntercept`` (or a modality LUT) are applied:
CT values come out in Hounsfield units, kept as 16-bit integers (``int16``
or ``uint16``) when they are whole numbers that fit, float32 otherwise,
never squeezed to 8 bits. The DICOM window (``WindowCenter`` /
``WindowWidth``, first value, in those same units), modality, body part,
acquisition time and series are returned by :func:`inspect_image` as
``ImageInfo.meta`` (see :data:`DICOM_META_KEYS`).

The formats themselves (magic numbers, declared sizes, the JPEG check, the
NumPy, TIFF-stack and DICOM decoders) live in :mod:`mining.formats`; its
public names are importable from here.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass, field

import cv2
import numpy as np

from mining.formats import (  # noqa: F401 (re-exported: callers import them from here)
    _HEAD_BYTES,
    _TIFF_EXTENSIONS,
    DICOM_EXTENSIONS,
    DICOM_META_KEYS,
    DICOM_PIXEL_META_KEYS,
    IMAGE_EXTENSIONS,
    REASONS,
    VOLUME_META_KEYS,
    UnreadableImage,
    _check_complete,
    _check_declared_size,
    _check_magic,
    _decode_dicom,
    _decode_npy,
    _decode_tiff_stack,
    _verify_jpeg,
)

#: Keys that describe how to read or show pixels, not where an image comes from (slice evaluation skips them).
TECHNICAL_META_KEYS = (
    *DICOM_PIXEL_META_KEYS,
    "instance_number",
    "slice_position",
    "frames",
    "frame_height",
    "slice_index",
    "volume_slices",
    "series_uid",
)

#: Default limit on width * height (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 200_000_000

#: Bytes per pixel of the largest image a file may hold: 16-bit RGBA (``.npy``: float64 with 4 channels).
#: A file larger than ``max_pixels`` times this plus :data:`FILE_HEADROOM` is refused from its size alone.
_MAX_BYTES_PER_PIXEL = {".npy": 32}
_DEFAULT_BYTES_PER_PIXEL = 8

#: Room for headers and metadata (EXIF, ICC profiles, thumbnails) on top of the pixel data.
FILE_HEADROOM = 16 * 2**20


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
    frames: int = 1
    meta: dict = field(default_factory=dict)


def max_file_bytes(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The largest file size accepted for an image file, checked before reading it.

    Parameters
    ----------
    path : str
        File name (its extension sets the bytes per pixel).
    max_pixels : int, optional
        The limit on width * height.

    Returns
    -------
    int
        ``max_pixels`` times the bytes per pixel of an uncompressed 16-bit RGBA
        image (8; 32 for ``.npy``, float64 with 4 channels), plus
        :data:`FILE_HEADROOM` for headers and metadata.
    """
    ext = os.path.splitext(path)[1].lower()
    return max_pixels * _MAX_BYTES_PER_PIXEL.get(ext, _DEFAULT_BYTES_PER_PIXEL) + FILE_HEADROOM


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular(path: str, st: os.stat_result) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "not a regular file")
    via = " (through a symbolic link)" if os.path.islink(path) else ""
    raise UnreadableImage(path, "not_a_file", f"is {kind}{via}; only regular files (or links to them) are read")


def _check_file_size(path: str, size: int, max_pixels: int) -> None:
    limit = max_file_bytes(path, max_pixels)
    if size > limit:
        raise UnreadableImage(
            path,
            "too_large",
            f"{size} bytes exceeds {limit} bytes, the most an image of max_pixels={max_pixels} can take",
        )


def _open_nonblocking(path: str, flags: int) -> int:
    # never block on a FIFO that replaced the file after the check; no controlling terminal
    return os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))


def _read_file(path: str, max_pixels: int) -> tuple[bytes, os.stat_result]:
    """Read a regular file whole after checking its type, size, magic number and declared size.

    Nothing is read from anything but a regular file, nor from a file larger than
    :func:`max_file_bytes` allows, nor past the header of an image whose header
    declares more than ``max_pixels``.
    """
    ext = os.path.splitext(path)[1].lower()
    try:
        st = os.stat(path)  # follows symbolic links: the target must be a regular file
    except FileNotFoundError as err:
        if os.path.islink(path):
            raise UnreadableImage(path, "broken_link", f"symbolic link to missing {os.readlink(path)!r}") from err
        raise UnreadableImage(path, "missing", str(err)) from err
    except PermissionError as err:
        raise UnreadableImage(path, "permission_denied", str(err)) from err
    except OSError as err:  # e.g. ELOOP: a loop of symbolic links
        reason = "broken_link" if os.path.islink(path) else "decode_error"
        raise UnreadableImage(path, reason, str(err)) from err
    _check_regular(path, st)
    _check_file_size(path, st.st_size, max_pixels)
    if st.st_size == 0:
        raise UnreadableImage(path, "empty", "file has 0 bytes")
    try:
        with open(path, "rb", opener=_open_nonblocking) as fh:
            fst = os.fstat(fh.fileno())
            _check_regular(path, fst)  # replaced between stat and open
            _check_file_size(path, fst.st_size, max_pixels)
            head = fh.read(_HEAD_BYTES)
            _check_magic(path, ext, head)
            if ext != ".npy" and ext not in DICOM_EXTENSIONS:  # DICOM: checked from its header in decode_bytes
                fh.seek(0)
                _check_declared_size(path, ext, fh, max_pixels)
            fh.seek(0)
            data = fh.read(fst.st_size)  # within max_file_bytes: checked above
    except PermissionError as err:
        raise UnreadableImage(path, "permission_denied", str(err)) from err
    except FileNotFoundError as err:
        raise UnreadableImage(path, "missing", str(err)) from err
    except IsADirectoryError as err:
        raise UnreadableImage(path, "not_a_file", "is a directory") from err
    except OSError as err:
        raise UnreadableImage(path, "decode_error", str(err)) from err
    if not data:
        raise UnreadableImage(path, "empty", "file has 0 bytes")
    return data, fst


def decode_bytes(path: str, data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, verify: bool = False) -> np.ndarray:
    """Decode the bytes of an image file.

    The size the header declares is checked before any pixel is decoded, so a
    small file that declares a huge image (a decompression bomb) is refused
    with reason ``too_large`` at no cost.

    Parameters
    ----------
    path : str
        File name (its extension picks the decoder; used in errors).
    data : bytes
        The file's content.
    max_pixels : int, optional
        Refuse images with more pixels than this (reason ``too_large``).
    verify : bool, optional
        Also check a JPEG's compressed data in full (reason ``truncated`` or
        ``corrupt`` when damaged): libjpeg otherwise fills what it cannot
        decode with grey. About as costly as a second decode; indexing does
        it, so that only verified files are ever mined.

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
    return _decode(path, data, max_pixels, verify)[0]


def _decode(path: str, data: bytes, max_pixels: int, verify: bool) -> tuple[np.ndarray, int, dict]:
    """Pixels, frames (1, or the frames stacked top to bottom) and metadata of a file's bytes."""
    ext = os.path.splitext(path)[1].lower()
    if not data:
        raise UnreadableImage(path, "empty", "file has 0 bytes")
    _check_magic(path, ext, data)
    if ext == ".npy":
        return _decode_npy(path, data, max_pixels), 1, {}
    if ext in DICOM_EXTENSIONS:
        return _decode_dicom(path, data, max_pixels)
    _check_complete(path, ext, data)
    _check_declared_size(path, ext, io.BytesIO(data), max_pixels)
    if verify and ext in (".jpg", ".jpeg"):
        _verify_jpeg(path, data)
    if ext in _TIFF_EXTENSIONS:
        stack = _decode_tiff_stack(path, data, max_pixels)
        if stack is not None:
            return stack
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UnreadableImage(path, "truncated", "OpenCV could not decode the pixel data")
    if img.ndim == 3:
        if img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    if img.shape[0] * img.shape[1] > max_pixels:
        raise UnreadableImage(path, "too_large", f"{img.shape[1]}x{img.shape[0]} px exceeds max_pixels={max_pixels}")
    return img, 1, {}


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
    data, _ = _read_file(path, max_pixels)
    return decode_bytes(path, data, max_pixels=max_pixels)


def inspect_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read, hash and fully decode a file once; return its metadata.

    The full decode is what proves a file readable (a truncated JPEG has a
    valid header); a JPEG's compressed data is also verified (see
    :func:`decode_bytes`).

    Parameters
    ----------
    path : str or path-like
        The file; it must be a regular file (or a symbolic link to one).
    max_pixels : int, optional
        Refuse images with more pixels than this, and files larger than
        :func:`max_file_bytes` allows, without decoding them.

    Returns
    -------
    ImageInfo

    Raises
    ------
    UnreadableImage
        When the file cannot be used.
    """
    path = os.fspath(path)
    data, st = _read_file(path, max_pixels)
    img, frames, meta = _decode(path, data, max_pixels, True)
    return ImageInfo(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        mtime_ns=st.st_mtime_ns,
        width=int(img.shape[1]),
        height=int(img.shape[0]),
        channels=1 if img.ndim == 2 else int(img.shape[2]),
        dtype=img.dtype.name,
        frames=frames,
        meta=meta,
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
