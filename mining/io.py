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
image (:func:`mining.index.volume_tiles`), so every slice is scored on its
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
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
from dataclasses import dataclass, field
from typing import BinaryIO

import cv2
import numpy as np

logger = logging.getLogger(__name__)

#: File extensions that are indexed (lower case, with the dot).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy", ".dcm", ".dicom")
#: Extensions read as DICOM (Part 10 files).
DICOM_EXTENSIONS = (".dcm", ".dicom")
_TIFF_EXTENSIONS = (".tif", ".tiff")

#: ``image_meta`` keys that :func:`inspect_image` fills from DICOM headers (and ``frames`` for volumes).
DICOM_META_KEYS = (
    "modality",
    "body_part",
    "acquisition_time",
    "acquisition_date",
    "manufacturer",
    "series_uid",
    "series_description",
    "instance_number",
    "slice_position",
    "window_center",
    "window_width",
    "photometric",
    "rescale_slope",
    "rescale_intercept",
    "transfer_syntax",
)
#: ``image_meta`` keys of volumes: frames stacked in the image (multi-frame files), or slice order in a series.
VOLUME_META_KEYS = ("frames", "frame_height", "volume", "slice_index", "volume_slices")
#: Keys that describe how to read or show pixels, not where an image comes from (slice evaluation skips them).
TECHNICAL_META_KEYS = (
    "window_center",
    "window_width",
    "photometric",
    "rescale_slope",
    "rescale_intercept",
    "transfer_syntax",
    "instance_number",
    "slice_position",
    "frames",
    "frame_height",
    "slice_index",
    "volume_slices",
    "series_uid",
)

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
    "corrupt",
    "not_a_file",
    "bad_filename",
)

#: Default limit on width * height (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 200_000_000

#: Bytes per pixel of the largest image a file may hold: 16-bit RGBA (``.npy``: float64 with 4 channels).
#: A file larger than ``max_pixels`` times this plus :data:`FILE_HEADROOM` is refused from its size alone.
_MAX_BYTES_PER_PIXEL = {".npy": 32}
_DEFAULT_BYTES_PER_PIXEL = 8

#: Room for headers and metadata (EXIF, ICC profiles, thumbnails) on top of the pixel data.
FILE_HEADROOM = 16 * 2**20

_MAGIC = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".bmp": (b"BM",),
    ".tif": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    ".tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    ".npy": (b"\x93NUMPY",),
}
#: DICOM Part 10: a 128-byte preamble, then ``DICM``.
_DICOM_MAGIC_AT, _DICOM_MAGIC = 128, b"DICM"
_HEAD_BYTES = _DICOM_MAGIC_AT + len(_DICOM_MAGIC)
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


def _check_magic(path: str, ext: str, data: bytes) -> None:
    if ext in DICOM_EXTENSIONS:
        if data[_DICOM_MAGIC_AT:_HEAD_BYTES] != _DICOM_MAGIC:
            raise UnreadableImage(
                path, "not_an_image", "content is not a DICOM Part 10 file (no 'DICM' after the 128-byte preamble)"
            )
        return
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


def _pil_plugin(ext: str):
    from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

    return {
        ".png": PngImagePlugin.PngImageFile,
        ".jpg": JpegImagePlugin.JpegImageFile,
        ".jpeg": JpegImagePlugin.JpegImageFile,
        ".bmp": BmpImagePlugin.BmpImageFile,
        ".tif": TiffImagePlugin.TiffImageFile,
        ".tiff": TiffImagePlugin.TiffImageFile,
    }[ext]


def _header_size(path: str, ext: str, fp: BinaryIO) -> tuple[int, int] | None:
    """Width and height declared by the header, read without decoding any pixel (None when unknown).

    The format's PIL plugin is called directly: ``Image.open`` would raise
    ``DecompressionBombError`` past PIL's own limit instead of telling the size.
    TIFFs that PIL cannot open are tried with tifffile.
    """
    try:
        with _pil_plugin(ext)(fp) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception as err:
        logger.debug("PIL cannot read the header of %s: %s", path, err)
    if ext in (".tif", ".tiff"):
        try:
            import tifffile

            fp.seek(0)
            with tifffile.TiffFile(fp) as tif:
                page = tif.pages.first
                return int(page.imagewidth), int(page.imagelength)
        except Exception as err:
            logger.debug("tifffile cannot read the header of %s: %s", path, err)
    return None


def _check_declared_size(path: str, ext: str, fp: BinaryIO, max_pixels: int) -> tuple[int, int]:
    """Refuse an image whose header declares more than ``max_pixels`` (before any pixel is decoded)."""
    size = _header_size(path, ext, fp)
    if size is None:
        raise UnreadableImage(
            path, "decode_error", f"cannot read the image size from the {ext[1:].upper()} header; not decoded"
        )
    if size[0] * size[1] > max_pixels:
        raise UnreadableImage(path, "too_large", f"{size[0]}x{size[1]} px exceeds max_pixels={max_pixels}")
    return size


#: libjpeg's warnings that mean the pixel data is damaged (anything else, e.g. an unknown
#: JFIF revision or a bad ICC marker, leaves the pixels intact).
_JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file")
_warned_no_simplejpeg = False


def _verify_jpeg(path: str, data: bytes) -> None:
    """Refuse a JPEG whose entropy-coded data is cut or damaged.

    libjpeg (under OpenCV and PIL alike) fills what it cannot decode with grey and
    only warns, even when a file's middle was cut out and it still ends with its
    end marker. simplejpeg's strict mode turns those warnings into errors.
    """
    global _warned_no_simplejpeg
    try:
        import simplejpeg
    except ImportError:
        if not _warned_no_simplejpeg:
            _warned_no_simplejpeg = True
            logger.warning("simplejpeg is not installed: damaged JPEG data is not detected (run `make setup`)")
        return
    try:
        colorspace = "GRAY"
        if simplejpeg.decode_jpeg_header(data)[2] in ("CMYK", "YCCK"):
            colorspace = "CMYK"
        simplejpeg.decode_jpeg(data, colorspace=colorspace, fastdct=True, fastupsample=True, strict=True)
    except ValueError as err:
        msg = str(err)
        if not msg.startswith(_JPEG_DAMAGE) or "ICC" in msg:
            logger.debug("simplejpeg cannot check %s: %s", path, msg)
            return
        reason = "truncated" if "premature end" in msg.lower() else "corrupt"
        raise UnreadableImage(path, reason, f"JPEG data is damaged: {msg}") from err


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


def _stack(frames: np.ndarray) -> np.ndarray:
    """``(N, H, W[, C])`` frames as one ``(N * H, W[, C])`` image, top to bottom (a view when possible)."""
    return frames.reshape(frames.shape[0] * frames.shape[1], *frames.shape[2:])


def _decode_tiff_stack(path: str, data: bytes, max_pixels: int) -> tuple[np.ndarray, int, dict] | None:
    """A multi-page TIFF or a BigTIFF through tifffile; None for a classic single-page TIFF (OpenCV reads it).

    The first series is read: its pages (of one size) are the frames of a
    volume. A compression tifffile cannot decode without imagecodecs (LZW,
    JPEG...) is tried with OpenCV's libtiff (``imdecodemulti``); when that
    fails too the file is ``unsupported``.
    """
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if not tif.is_bigtiff and len(tif.pages) == 1:
                return None
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            if axes.endswith("SYX") and shape[-3] in (3, 4):  # planar colour: samples last, as everywhere else
                order = "YXS"
            else:
                order = axes[-3:] if axes.endswith("YXS") else axes[-2:]
            h, w = (shape[-3], shape[-2]) if order == "YXS" else (shape[-2], shape[-1])
            n = int(np.prod(shape[: len(shape) - len(order)], dtype=np.int64)) if len(shape) > len(order) else 1
            if n * h * w > max_pixels:
                raise UnreadableImage(
                    path, "too_large", f"{n} frames of {w}x{h} px exceed max_pixels={max_pixels} together"
                )
            try:
                arr = series.asarray()
            except (KeyError, ValueError, NotImplementedError, ImportError) as err:
                arr = _tiff_with_opencv(path, data, err)
    except UnreadableImage:
        raise
    except Exception as err:
        raise UnreadableImage(path, "corrupt", f"TIFF cannot be read: {type(err).__name__}: {err}") from err
    if order == "YXS" and axes.endswith("SYX") and arr.shape[-3] in (3, 4):
        arr = np.moveaxis(arr, -3, -1)
    tail = 3 if arr.ndim >= 3 and order == "YXS" else 2
    frames = arr.reshape(-1, *arr.shape[arr.ndim - tail :])
    if frames.dtype.type not in _SUPPORTED_DTYPES:
        allowed = ", ".join(np.dtype(t).name for t in _SUPPORTED_DTYPES)
        raise UnreadableImage(path, "unsupported", f"TIFF sample type {frames.dtype}; allowed {allowed}")
    if len(frames) == 1:
        return np.ascontiguousarray(frames[0]), 1, {}
    return np.ascontiguousarray(_stack(frames)), len(frames), {"frames": len(frames), "frame_height": h}


def _tiff_with_opencv(path: str, data: bytes, err: BaseException) -> np.ndarray:
    ok, pages = cv2.imdecodemulti(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if not ok or not pages or len({p.shape for p in pages}) != 1:
        raise UnreadableImage(
            path, "unsupported", f"TIFF compression not decodable here ({err}); install imagecodecs for tifffile"
        ) from err
    pages = [cv2.cvtColor(p, cv2.COLOR_BGR2RGB) if p.ndim == 3 and p.shape[2] == 3 else p for p in pages]
    return np.stack(pages)


def _first(value) -> float | None:
    """The first number of a DICOM value (single or multi-valued), or None."""
    if value is None or value == "":
        return None
    try:
        v = value[0] if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else value
        return float(v)
    except (TypeError, ValueError, IndexError):
        return None


def _dicom_time(ds) -> str | None:
    """Acquisition date-time as ISO 8601 text (AcquisitionDateTime, else acquisition, content or study date + time)."""
    dt = str(ds.get("AcquisitionDateTime", "") or "")
    if not dt:
        for d, t in (
            ("AcquisitionDate", "AcquisitionTime"),
            ("ContentDate", "ContentTime"),
            ("StudyDate", "StudyTime"),
        ):
            if ds.get(d):
                dt = str(ds.get(d)) + str(ds.get(t, "") or "")
                break
    if len(dt) < 8 or not dt[:8].isdigit():
        return None
    out = f"{dt[0:4]}-{dt[4:6]}-{dt[6:8]}"
    clock = dt[8:].split("+")[0].split("-")[0]
    if len(clock) >= 4 and clock[:4].isdigit():
        out += f"T{clock[0:2]}:{clock[2:4]}" + (f":{clock[4:6]}" if len(clock) >= 6 and clock[4:6].isdigit() else "")
    return out


def _dicom_meta(ds) -> dict:
    meta: dict = {}

    def put(key, value):
        if value is not None and str(value).strip() != "":
            meta[key] = str(value).strip()

    put("modality", ds.get("Modality"))
    put("body_part", ds.get("BodyPartExamined"))
    when = _dicom_time(ds)
    put("acquisition_time", when)
    put("acquisition_date", when[:10] if when else None)  # a slice of days, for slice evaluation
    put("manufacturer", ds.get("Manufacturer"))
    put("series_uid", ds.get("SeriesInstanceUID"))
    put("series_description", ds.get("SeriesDescription"))
    put("instance_number", ds.get("InstanceNumber"))
    pos, ori = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if pos is not None and ori is not None and len(pos) == 3 and len(ori) == 6:
        normal = np.cross(np.asarray(ori[:3], float), np.asarray(ori[3:], float))
        put("slice_position", f"{float(np.dot(normal, np.asarray(pos, float))):.6g}")
    elif ds.get("SliceLocation") is not None:
        put("slice_position", f"{float(ds.SliceLocation):.6g}")
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        put("window_center", f"{center:g}")
        put("window_width", f"{width:g}")
    put("photometric", ds.get("PhotometricInterpretation"))
    put("rescale_slope", ds.get("RescaleSlope"))
    put("rescale_intercept", ds.get("RescaleIntercept"))
    put("transfer_syntax", getattr(ds.file_meta, "TransferSyntaxUID", None))
    return meta


def _compact(values: np.ndarray, stored: np.dtype) -> np.ndarray:
    """Rescaled values in the narrowest dtype that holds them exactly: the stored one, (u)int16, int32, else float32."""
    if not np.isfinite(values).all() or not np.equal(np.mod(values, 1), 0).all():
        return values.astype(np.float32)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    for t in (stored, np.uint16, np.int16, np.int32):
        info = np.iinfo(t) if np.issubdtype(t, np.integer) else None
        if info is not None and info.min <= lo and hi <= info.max:
            return values.astype(t)
    return values.astype(np.float32)


def _decode_dicom(path: str, data: bytes, max_pixels: int) -> tuple[np.ndarray, int, dict]:
    """A DICOM file's pixels with the modality rescale applied, its frames and its metadata (see module notes)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError as err:
        raise UnreadableImage(path, "not_an_image", f"not a DICOM file: {err}") from err
    except (EOFError, OSError) as err:
        raise UnreadableImage(path, "truncated", f"DICOM header ends early: {type(err).__name__}: {err}") from err
    except Exception as err:
        raise UnreadableImage(path, "corrupt", f"DICOM header cannot be read: {type(err).__name__}: {err}") from err
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = ds.get("SOPClassUID")
        if not sop:  # no SOP class either: what follows the preamble is not a dataset
            raise UnreadableImage(path, "corrupt", "DICOM file has neither a SOP class nor pixel data")
        raise UnreadableImage(
            path, "unsupported", f"DICOM file holds no image (no pixel data; {getattr(sop, 'name', sop)})"
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError) as err:
        raise UnreadableImage(path, "corrupt", f"DICOM Rows / Columns / NumberOfFrames missing or bad: {err}") from err
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise UnreadableImage(path, "corrupt", f"DICOM declares {frames} frames of {cols}x{rows} px")
    if rows * cols * frames > max_pixels:
        raise UnreadableImage(
            path, "too_large", f"{frames} frames of {cols}x{rows} px exceed max_pixels={max_pixels} together"
        )
    ts = getattr(ds.file_meta, "TransferSyntaxUID", None)
    ts_name = f"{getattr(ts, 'name', ts)} ({ts})" if ts else "no transfer syntax"
    try:
        arr = ds.pixel_array
    except (RuntimeError, NotImplementedError) as err:
        first = str(err).splitlines()[0]
        raise UnreadableImage(
            path,
            "unsupported",
            f"DICOM transfer syntax {ts_name} is not decodable here: {first} (pydicom reads uncompressed, deflated"
            " and RLE data, JPEG baseline and JPEG 2000 through Pillow; others need pylibjpeg-libjpeg or"
            " python-gdcm)",
        ) from err
    except (ValueError, AttributeError, KeyError, TypeError, EOFError) as err:
        msg = f"{type(err).__name__}: {err}"
        reason = "truncated" if "less than expected" in str(err) or isinstance(err, EOFError) else "corrupt"
        raise UnreadableImage(path, reason, f"DICOM pixel data cannot be decoded ({ts_name}): {msg}"[:500]) from err
    samples = int(ds.get("SamplesPerPixel") or 1)
    slope, intercept = _first(ds.get("RescaleSlope")), _first(ds.get("RescaleIntercept"))
    rescale = (slope not in (None, 1.0)) or (intercept not in (None, 0.0)) or "ModalityLUTSequence" in ds
    if samples == 1 and rescale:
        from pydicom.pixels import apply_modality_lut

        arr = _compact(np.asarray(apply_modality_lut(arr, ds), dtype=np.float64), arr.dtype)
    if arr.dtype.type not in _SUPPORTED_DTYPES:
        arr = arr.astype(np.int32 if np.issubdtype(arr.dtype, np.signedinteger) else np.float32)
    meta = _dicom_meta(ds)
    if frames > 1:  # (frames, rows, cols[, samples]) -> frames stacked top to bottom
        arr = np.ascontiguousarray(arr.reshape(frames * rows, cols, *arr.shape[3:]))
        meta.update(frames=str(frames), frame_height=str(rows))
    return arr, frames, meta


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
