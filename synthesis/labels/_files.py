"""File helpers shared by the label formats: atomic writes of JSON, text and PNG, small reads."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from synthesis.atomic import atomic_write
from synthesis.labels.core import (
    ClassMap,
    ImageLabels,
    LabelError,
    LabelFormatError,
    LabelSet,
    check_exportable,
    class_map_from,
    collect_classes,
    stem,
)

#: Image file extensions recognised in folder layouts (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")

#: Name of the class map written beside every export.
CLASS_MAP_FILE = "classes.json"

MaskReader = Callable[[str], np.ndarray]


@dataclass
class WriteResult:
    """What a writer did: images written, files written, images skipped and why."""

    images: int = 0
    files: list[str] = field(default_factory=list)
    skipped: list[LabelError] = field(default_factory=list)
    class_map: str = ""

    def skip(self, item, err: ValueError) -> None:
        """Record ``item`` as skipped for ``err`` (its ``reason`` and ``detail``; a plain ValueError: ``malformed``)."""
        reason, detail = getattr(err, "reason", "malformed"), getattr(err, "detail", str(err))
        self.skipped.append(LabelError(item.source or item.image, reason, detail, image=item.image))

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "images": self.images,
            "files": len(self.files),
            "skipped": [e.as_dict() for e in self.skipped],
            "class_map": self.class_map,
        }


def annotation_file(path: str | os.PathLike, name: str, image_root: str | os.PathLike | None = None) -> tuple[str, str]:
    """The annotation file a reader reads, and the folder its image names are relative to.

    Parameters
    ----------
    path : str or path-like
        The file, or a folder holding it as ``name``.
    name : str
        The format's file name (e.g. ``annotations.json``).
    image_root : str, path-like or None
        The images' folder, when given (default: the file's folder).

    Returns
    -------
    file : str
    root : str
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, name)
    root = os.fspath(image_root) if image_root is not None else os.path.dirname(os.path.abspath(path))
    return path, root


def rejected(where: str, detail: str) -> LabelSet:
    """What a reader returns for a file or folder it cannot read at all: no items, one ``malformed`` error.

    Parameters
    ----------
    where : str
        The file or folder.
    detail : str
        Why it cannot be read.

    Returns
    -------
    LabelSet
    """
    return LabelSet([], [LabelError(where, "malformed", detail)], [])


def read_error(where: str, err: Exception, *, image: str | None = None, prefix: str = "") -> LabelError:
    """The error that rejects one file (or entry) a reader could not use.

    Parameters
    ----------
    where : str
        The file (or ``file:line``) rejected.
    err : Exception
        A :class:`~synthesis.labels.core.LabelFormatError` gives its reason
        and detail; any other error is ``malformed``, detailed as
        ``"<prefix><ExceptionType>: <message>"``.
    image : str or None
        The image the file labels, when known.
    prefix : str
        Put before the detail of errors that are not LabelFormatErrors.

    Returns
    -------
    LabelError
    """
    if isinstance(err, LabelFormatError):
        return LabelError(where, err.reason, err.detail, image=image)
    return LabelError(where, "malformed", f"{prefix}{type(err).__name__}: {err}", image=image)


def label_set(items: list[ImageLabels], errors: list[LabelError], cmap: ClassMap | None, skipped=None) -> LabelSet:
    """What a reader returns: its items and errors, with the class map's names (or every category read).

    Parameters
    ----------
    items : list of ImageLabels
    errors : list of LabelError
    cmap : ClassMap or None
        The class map the reader was given; None: the categories in ``items``, sorted.
    skipped : list of dict or None
        Parts of files not read that belong to no one image.

    Returns
    -------
    LabelSet
    """
    names = list(cmap.names) if cmap is not None else list(collect_classes(items).names)
    return LabelSet(items, errors, names, skipped if skipped is not None else [])


def read_files(
    files: Sequence[str],
    read_one: Callable[[str, ClassMap | None], ImageLabels],
    classes=None,
    *,
    malformed: tuple[type[Exception], ...],
) -> LabelSet:
    """Read label files one image each; a file that cannot be used is rejected with the reason.

    Parameters
    ----------
    files : sequence of str
    read_one : callable
        ``read_one(path, cmap)`` reads one file; it raises
        :class:`~synthesis.labels.core.LabelFormatError` (or one of
        ``malformed``) to reject it.
    classes : ClassMap, list, path or None
        The class map (:func:`~synthesis.labels.core.class_map_from`).
    malformed : tuple of exception types
        Other errors that reject a file as ``malformed`` (others propagate).

    Returns
    -------
    LabelSet
        Rejected files are named by their stem as ``image``.
    """
    cmap = class_map_from(classes)
    items, errors = [], []
    for p in files:
        try:
            items.append(read_one(p, cmap))
        except (LabelFormatError, *malformed) as err:
            errors.append(read_error(p, err, image=stem(p)))
    return label_set(items, errors, cmap)


def start_write(out: str | os.PathLike, classes, items: Sequence[ImageLabels]) -> tuple[str, ClassMap, WriteResult]:
    """What every writer starts from: its output folder, the class map it writes and an empty result.

    Parameters
    ----------
    out : str or path-like
    classes : ClassMap, list, path or None
        The class map (:func:`~synthesis.labels.core.class_map_from`); None: every category in ``items``, sorted.
    items : sequence of ImageLabels

    Returns
    -------
    out : str
    cmap : ClassMap
    res : WriteResult
    """
    return os.fspath(out), class_map_from(classes) or collect_classes(items), WriteResult()


def write_json(path: str, data, *, indent: int | None = None) -> str:
    """Write JSON atomically; return the path."""
    with atomic_write(path, encoding="utf-8") as fh:
        json.dump(data, fh, indent=indent, ensure_ascii=False)
        fh.write("\n")
    return path


def write_text(path: str, text: str) -> str:
    """Write text atomically; return the path."""
    with atomic_write(path, encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return path


def write_png(path: str, array: np.ndarray) -> str:
    """Write a single-channel uint8/uint16 PNG atomically (lossless); return the path."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise ValueError(f"could not encode {path!r} as PNG (dtype {array.dtype}, shape {array.shape})")
    with atomic_write(path, "wb") as fh:
        fh.write(buf.tobytes())
    return path


def write_class_map(out: str, classes: ClassMap, extra: dict | None = None, *, name: str = CLASS_MAP_FILE) -> str:
    """Write ``classes.json`` (the explicit class map, or ``name``) into ``out``; written last by every writer."""
    data = classes.to_json()
    if extra:
        data.update(extra)
    return write_json(os.path.join(out, name), data, indent=2)


def class_map_name(file_name: str | None) -> str:
    """The class map's file name beside an export: ``classes.json``, or ``<stem>.classes.json`` beside a file."""
    return CLASS_MAP_FILE if not file_name else os.path.splitext(file_name)[0] + ".classes.json"


#: Formats that can write one file, and that file's extension.
SINGLE_FILE = {"coco": ".json", "csv": ".csv"}
#: Extensions that make an output path name a file rather than a folder.
FILE_EXTENSIONS = (".json", ".csv", ".txt", ".xml", ".yaml", ".yml", ".zip")


def resolve_output(fmt: str, out: str | os.PathLike) -> tuple[str, str | None]:
    """Where a writer of ``fmt`` writes for the output path ``out``: ``(folder, file name or None)``.

    A path ending in the format's own file extension (``.json`` for COCO,
    ``.csv`` for CSV) that is not an existing folder is that file (the class
    map goes beside it as ``<stem>.classes.json``); any other path is a
    folder.

    Raises
    ------
    ValueError
        When ``out`` names a file (an existing one, or a name ending in
        ``.json``, ``.csv``, ``.txt``, ...) that the format cannot write
        into: naming the path, the format and what it writes.
    """
    out = os.fspath(out)
    ext = os.path.splitext(out)[1].lower()
    if os.path.isdir(out):
        return out, None
    if SINGLE_FILE.get(fmt) == ext:
        return os.path.dirname(os.path.abspath(out)), os.path.basename(out)
    if os.path.exists(out) or ext in FILE_EXTENSIONS:
        what = f"one {SINGLE_FILE[fmt]} file or a folder" if fmt in SINGLE_FILE else "a folder of files"
        raise ValueError(
            f"output {out!r} names a file, but the {fmt} format writes {what}: give a folder"
            + (f" or a path ending in {SINGLE_FILE[fmt]}" if fmt in SINGLE_FILE else "")
        )
    return out, None


def read_mask_file(path: str) -> np.ndarray:
    """Read a mask image as stored (PNG, BMP, TIFF or ``.npy``) with OpenCV / NumPy.

    Raises
    ------
    ValueError
        When the file cannot be decoded.
    """
    if path.lower().endswith(".npy"):
        return np.load(path, allow_pickle=False)
    arr = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError(f"cannot decode mask image {path!r}")
    return arr


def image_size(path: str) -> tuple[int, int] | None:
    """``(width, height)`` of an image file from its header (PIL), or None when unreadable."""
    try:
        if path.lower().endswith(".npy"):
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            return int(arr.shape[1]), int(arr.shape[0])
        from PIL import Image

        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:
        return None


def find_image(folder: str, stem: str) -> str | None:
    """An image file named ``stem`` (any known extension) in ``folder``, or None."""
    for ext in IMAGE_EXTENSIONS:
        for e in (ext, ext.upper()):
            p = os.path.join(folder, stem + e)
            if os.path.isfile(p):
                return p
    return None


def unique_names(items, key) -> tuple[dict[int, str], list[int]]:
    """Map item index -> output name; indices whose name repeats an earlier one are returned apart."""
    seen: dict[str, int] = {}
    names: dict[int, str] = {}
    dups: list[int] = []
    for i, it in enumerate(items):
        name = key(it)
        if name in seen:
            dups.append(i)
        else:
            seen[name] = i
            names[i] = name
    return names, dups


def duplicate_errors(items, dups: list[int]) -> list[LabelError]:
    """``duplicate`` errors for items whose output name repeats an earlier one."""
    out = []
    for i in dups:
        it = items[i]
        name = os.path.splitext(os.path.basename(it.image))[0]
        out.append(
            LabelError(it.source or it.image, "duplicate", f"another image is also named {name!r}", image=it.image)
        )
    return out


def exportable(
    items: Sequence[ImageLabels], cmap: ClassMap, res: WriteResult, *, catch: type[ValueError] = LabelFormatError
) -> Iterator[tuple[str, ImageLabels, int, int]]:
    """The items a writer writes, one file each named by the image's stem, with their size.

    An item whose stem repeats an earlier one's is skipped as ``duplicate``;
    one whose size is unknown or whose objects cannot be written
    (:func:`~synthesis.labels.core.check_exportable`) is skipped with the
    reason. Skipped items are recorded in ``res``, in the items' order.

    Parameters
    ----------
    items : sequence of ImageLabels
    cmap : ClassMap
        The class map the writer writes.
    res : WriteResult
        Where the skipped items are recorded.
    catch : type of ValueError, default=LabelFormatError
        The errors that skip an item (others propagate).

    Yields
    ------
    name : str
        The output name (the image's stem).
    item : ImageLabels
    width, height : int
    """
    names, dups = unique_names(items, lambda it: stem(it.image))
    res.skipped += duplicate_errors(items, dups)
    for i, name in names.items():
        it = items[i]
        try:
            w, h = it.size()
            check_exportable(it, cmap)
        except catch as err:
            res.skip(it, err)
            continue
        yield name, it, w, h


#: Parameters the label writers share, as numpydoc text (indented for a function's docstring).
WRITER_PARAMETERS = {
    "items": "items : sequence of ImageLabels\n        Width and height must be known.",
    "out": "out : str or path-like\n        Output folder.",
    "classes": "classes : ClassMap, list or None\n        The class map (default: every category in ``items``).",
    "items_out_classes": "{items}\n    {out}\n    {classes}",
    "holes": (
        "holes : bool\n"
        "        Masks with holes: join each hole to its outline by a zero-width cut\n"
        "        (one self-touching polygon per part, which even-odd rasterisers such\n"
        "        as OpenCV ``fillPoly``, pycocotools and PIL fill with the hole kept);\n"
        "        False writes outer outlines only (holes come back filled)."
    ),
}


def writer_doc(func: Callable) -> Callable:
    """Fill ``{items}``, ``{out}``, ``{classes}``, ``{holes}`` (:data:`WRITER_PARAMETERS`) in a writer's docstring.

    Parameters
    ----------
    func : callable
        A label writer whose docstring names the shared parameters by ``{name}``.

    Returns
    -------
    callable
        ``func``, its docstring filled in.
    """
    doc = func.__doc__ or ""
    for name, text in reversed(WRITER_PARAMETERS.items()):  # the combined entries first: they name the others
        doc = doc.replace("{" + name + "}", text)
    func.__doc__ = doc
    return func
