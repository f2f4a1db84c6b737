"""Image formats behind :func:`mining.io.read_image`: magic numbers, declared sizes, reasons, and the decoders."""

from __future__ import annotations

import io
import logging
from typing import BinaryIO

import cv2
import numpy as np

logger = logging.getLogger(__name__)


#: File extensions that are indexed (lower case, with the dot).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy", ".dcm", ".dicom")
#: Extensions read as DICOM (Part 10 files).
DICOM_EXTENSIONS = (".dcm", ".dicom")
_TIFF_EXTENSIONS = (".tif", ".tiff")

#: DICOM ``image_meta`` keys that say how to read or show the pixels (technical, not where an image comes from).
DICOM_PIXEL_META_KEYS = (
    "window_center",
    "window_width",
    "photometric",
    "rescale_slope",
    "rescale_intercept",
    "transfer_syntax",
)
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
    *DICOM_PIXEL_META_KEYS,
)
#: ``image_meta`` keys of volumes: frames stacked in the image (multi-frame files), or slice order in a series.
VOLUME_META_KEYS = ("frames", "frame_height", "volume", "slice_index", "volume_slices")

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
