"""Image-level labels: a CSV metadata table and a folder-per-class layout.

CSV table
---------
``labels.csv`` with a ``path`` column (also accepted: ``image``, ``file``,
``filename``; relative paths are relative to the CSV's folder) and either a
``labels`` column (also ``label``, ``category``, ``class``) holding one or
more class names separated by ``;`` (an empty cell means "no defect"), or one
0/1 column per class (one-hot / multi-hot). The writer writes both: ``path``,
``labels`` and one 0/1 column per class of the class map.

Folder per class
----------------
``ROOT/<class name>/<image file>``; an image in several class folders has
several labels. The writer copies each image into the folder of each of its
classes (negatives into the ``negative`` folder), renaming ``name.ext`` to
``name__2.ext`` when two different images share a name.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
from collections.abc import Sequence

from synthesis.atomic import atomic_write
from synthesis.labels._files import (
    IMAGE_EXTENSIONS,
    WriteResult,
    annotation_file,
    class_map_name,
    label_set,
    rejected,
    start_write,
    write_class_map,
    writer_doc,
)
from synthesis.labels.core import (
    ImageLabels,
    LabelError,
    LabelSet,
    class_map_from,
)

logger = logging.getLogger(__name__)

PATH_COLUMNS = ("path", "image", "file", "filename", "file_name")
LABEL_COLUMNS = ("labels", "label", "category", "categories", "class", "classes")
CSV_FILE = "labels.csv"
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def read_csv(path: str | os.PathLike, *, classes=None, sep: str = ";") -> LabelSet:
    """Read a CSV metadata table of image paths and labels (multi-label allowed).

    Parameters
    ----------
    path : str or path-like
        The CSV file (or a folder holding ``labels.csv``).
    classes : ClassMap, list of str, path or None
        When given, a label outside it rejects that row (``unknown_class``).
    sep : str
        Separator between several labels in one cell.

    Returns
    -------
    LabelSet
        One item per row; rows that cannot be used are in ``errors`` with
        ``file`` set to ``"labels.csv:LINE"``.
    """
    path, base = annotation_file(path, CSV_FILE)
    cmap = class_map_from(classes)
    items: list[ImageLabels] = []
    errors: list[LabelError] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        return rejected(path, f"cannot read the CSV: {err}")
    try:
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as err:
        return rejected(path, f"bad CSV header: {err}")
    lower = {h.lower(): h for h in header}
    path_col = next((lower[c] for c in PATH_COLUMNS if c in lower), None)
    if path_col is None:
        return rejected(path, f"no path column: expected one of {PATH_COLUMNS}, header {header}")
    label_col = next((lower[c] for c in LABEL_COLUMNS if c in lower), None)
    skip = {"width", "height", "note", "split", "mask", "source"}
    hot_cols = [h for h in header if h not in (path_col, label_col) and h.lower() not in skip]
    reader.fieldnames = header
    try:
        for row in reader:
            line = reader.line_num
            where = f"{path}:{line}"
            ref = (row.get(path_col) or "").strip()
            if not ref:
                errors.append(LabelError(where, "malformed", f"empty {path_col!r} cell"))
                continue
            image = ref if os.path.isabs(ref) else os.path.normpath(os.path.join(base, ref))
            if label_col is not None:
                cell = (row.get(label_col) or "").strip()
                labels = [s.strip() for s in cell.split(sep) if s.strip()] if cell else []
            else:
                labels, bad = [], []
                for h in hot_cols:
                    v = (row.get(h) or "").strip().lower()
                    if v in _TRUE:
                        labels.append(h)
                    elif v not in _FALSE:
                        bad.append(f"{h}={row.get(h)!r}")
                if bad:
                    errors.append(
                        LabelError(where, "malformed", f"one-hot columns must be 0/1, got {', '.join(bad)}", image=ref)
                    )
                    continue
            unknown = [lab for lab in labels if cmap is not None and lab not in cmap]
            if unknown:
                errors.append(
                    LabelError(where, "unknown_class", f"{unknown} not in the class map {list(cmap.names)}", image=ref)
                )
                continue
            items.append(ImageLabels(image=image, labels=list(dict.fromkeys(labels)), source=where))
    except csv.Error as err:
        errors.append(LabelError(path, "malformed", f"CSV error: {err}"))
    logger.info("read %d rows from %s (%d rejected)", len(items), path, len(errors))
    return label_set(items, errors, cmap)


@writer_doc
def write_csv(
    items: Sequence[ImageLabels], out: str | os.PathLike, *, classes=None, sep: str = ";", file_name: str | None = None
) -> WriteResult:
    """Write ``OUT/labels.csv`` (``path,labels,<one 0/1 column per class>``) and ``OUT/classes.json``.

    A row's ``path`` is the item's ``image``, its ``labels`` the item's classes joined by ``sep``.

    Parameters
    ----------
    items : sequence of ImageLabels
    {out}
    {classes}
    sep : str, default=";"
        Joins an image's classes in the ``labels`` column.
    file_name : str or None
        Write this file in ``out`` instead of ``labels.csv``, with the class
        map beside it as ``<stem>.classes.json``.
    """
    out, cmap, res = start_write(out, classes, items)
    rows = []
    for it in items:
        cats = it.categories()
        unknown = [c for c in cats if c not in cmap]
        if unknown:
            res.skipped.append(
                LabelError(it.source or it.image, "unknown_class", f"{unknown} not in the class map", image=it.image)
            )
            continue
        rows.append([it.image, sep.join(cats), *("1" if n in cats else "0" for n in cmap.names)])
    target = os.path.join(out, file_name or CSV_FILE)
    with atomic_write(target, newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "labels", *cmap.names])
        w.writerows(rows)
    res.images, res.files = len(rows), [target]
    res.class_map = write_class_map(out, cmap, name=class_map_name(file_name))
    return res


def read_folders(root: str | os.PathLike, *, classes=None) -> LabelSet:
    """Read a folder-per-class layout: every image under ``ROOT/<class>/`` gets that class.

    Files directly in ``root`` and non-image files are ignored. With a class
    map, a folder whose name is not in it rejects its images
    (``unknown_class``). The same file path appearing once per class folder
    is one item per folder; the caller merges items of the same image.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        return rejected(root, "not a folder")
    cmap = class_map_from(classes)
    items, errors = [], []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder) or name.startswith("."):
            continue
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for f in sorted(filenames):
                if os.path.splitext(f)[1].lower() not in IMAGE_EXTENSIONS or f.startswith("."):
                    continue
                p = os.path.join(dirpath, f)
                if cmap is not None and name not in cmap:
                    errors.append(
                        LabelError(
                            p, "unknown_class", f"folder {name!r} is not a class of the map {list(cmap.names)}", image=p
                        )
                    )
                    continue
                items.append(ImageLabels(image=p, labels=[name], source=p))
    return label_set(items, errors, cmap)


def write_folders(
    items: Sequence[ImageLabels],
    out: str | os.PathLike,
    *,
    classes=None,
    negative: str | None = "normal",
    link: str = "copy",
) -> WriteResult:
    """Write a folder-per-class layout: ``OUT/<class>/<image file>`` and ``OUT/classes.json``.

    Parameters
    ----------
    items : sequence of ImageLabels
        ``image`` must be an existing file.
    out : str or path-like
        Output folder.
    classes : ClassMap, list of str or None
        The class map (default: every category in ``items``).
    negative : str or None
        Folder for images labelled with nothing; None leaves them out.
    link : {"copy", "hardlink", "symlink"}
        How each image gets into its folder.
    """
    if link not in ("copy", "hardlink", "symlink"):
        raise ValueError(f"link must be one of copy, hardlink, symlink; got {link!r}")
    out, cmap, res = start_write(out, classes, items)
    if negative is not None and negative in cmap:
        raise ValueError(f"negative folder name {negative!r} is also a class of the map")
    used: dict[str, dict[str, str]] = {}  # folder -> file name -> source image
    for it in items:
        cats = it.categories() or ([negative] if negative is not None else [])
        unknown = [c for c in cats if c not in cmap and c != negative]
        if unknown:
            res.skipped.append(
                LabelError(it.source or it.image, "unknown_class", f"{unknown} not in the class map", image=it.image)
            )
            continue
        if not os.path.isfile(it.image):
            res.skipped.append(
                LabelError(it.source or it.image, "not_in_catalogue", "image file does not exist", image=it.image)
            )
            continue
        for c in cats:
            names = used.setdefault(c, {})
            base, ext = os.path.splitext(os.path.basename(it.image))
            fname, k = base + ext, 1
            while fname in names and names[fname] != it.image:
                k += 1
                fname = f"{base}__{k}{ext}"
            names[fname] = it.image
            res.files.append(_place(it.image, os.path.join(out, c, fname), link))
        res.images += 1
    res.class_map = write_class_map(out, cmap, {"negative": negative})
    return res


def _place(src: str, dst: str, link: str) -> str:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = os.path.join(os.path.dirname(dst), "." + os.path.basename(dst) + ".tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    if link == "copy":
        shutil.copy2(src, tmp)
    elif link == "hardlink":
        os.link(src, tmp)
    else:
        os.symlink(os.path.abspath(src), tmp)
    os.replace(tmp, dst)
    return dst
