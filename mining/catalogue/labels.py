"""Labels in and out of the catalogue, in every format of :mod:`synthesis.labels`.

Import
------
:func:`import_labels` reads a label file or folder, finds each labelled
image in the catalogue and stores the labels as *reviews by a named source*
(``reviewer`` = the source name, ``source = 'import'``), so they count as
verdicts for learning like any reviewer's:

- an image with one or more classes gets one ``confirm`` review per class;
  an image labelled with nothing (an empty mask, an empty YOLO file, a VOC
  file without objects, a CSV row without labels, a file in a ``normal``
  folder) gets one ``reject`` review;
- every box, polygon or mask becomes a row of ``annotations`` (``kind`` its
  richest geometry; ``data`` JSON holds ``box`` ``[x0, y0, x1, y1]`` in pixel
  edges, ``polygons`` ``[[x, y, ...]]`` in pixel centres and ``rle``, a COCO
  compressed RLE of masks), linked to its class's review;
- the union of each class's masks and polygons is written as a binary mask
  PNG (0 background, 255 defect) for the pixel model (``reviews.mask_path``;
  ``mining.learning.learn`` retrains the pixel model from these, non-zero = defect).
  Boxes are not pixel-exact and get no mask file.

Importing again with the same source name replaces that source's earlier
reviews of the same images. Label files that cannot be used are reported
one by one with the reason (see :data:`synthesis.labels.REASONS`, and
``failures`` rows of the import run); the rest is imported.

Images are matched by path, then (class folders and CSV tables) by content
hash, then by file name, then by file stem; several catalogue images with
the same name or stem are ``ambiguous_image``.

Export
------
:func:`export_labels` turns the catalogue's verdicts back into labels, with
the one definition of a label that learning uses too
(:func:`mining.verdicts.image_labels` under the consensus rule of the
``review:`` config section): each reviewer's latest verdict is their vote
(a later ``reject`` cancels their earlier ``confirm`` s); an image decided
``confirm`` is exported with the categories of its confirming votes (a
confirm without a category as :data:`DEFAULT_CATEGORY`), one decided
``reject`` as a negative, and every other reviewed image (pending,
reviewers disagreeing, dropped, unsure, neutral) as nothing: the result's
``left_out`` counts those per reason. Boxes, polygons and masks come from
the ``annotations`` of the confirming votes (the app's ``{"path",
"values"}`` mask annotations included), and from a vote's ``mask_path``
when it has no annotation (values >= 2 are the defect: 2.. in the app's
painted label images, 255 in the imported and painted masks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
from pycocotools import mask as mask_utils

from mining.catalogue.paths import labels_dir
from mining.catalogue.store import Store
from mining.catalogue.verdicts import ConsensusRule, describe_left_out, image_labels, left_out_counts
from mining.io import UnreadableImage, read_image
from synthesis.labels import (
    FORMATS,
    IMPORT_FORMATS,
    ImageLabels,
    LabelError,
    LabelFormatError,
    LabelObject,
    WriteResult,
    category_masks,
    check_format,
    read_labels,
    write_labels,
)
from synthesis.labels._files import write_png
from synthesis.labels.core import ClassMap, check_box, check_polygon, class_map_from, stem

logger = logging.getLogger(__name__)

#: Class of a confirmed image whose confirming votes give no category.
DEFAULT_CATEGORY = "defect"

#: Class names (case-insensitive) that mean "no defect" on import.
DEFAULT_NEGATIVE = ("normal", "good", "ok", "none", "background", "negative", "free")

_HASH_FORMATS = ("folders", "csv")

#: Pixel values of the mask files written for the pixel model (``mining.learning.learn`` reads non-zero as defect).
BACKGROUND, DEFECT = 0, 255
#: In a review's label image painted in the app (0 unlabelled, 1 background, 2.. classes), the defect values.
_PAINTED_DEFECT_MIN = 2
_BATCH = 200


@dataclass
class ImportSummary:
    """What :func:`import_labels` did.

    ``errors`` are files (or images in them) not imported, with the reason;
    ``skipped`` are parts of imported files left out, each a dict with
    ``file``, ``image`` and ``reason`` (a labelme ``line``, a CVAT
    ``polyline``, a COCO polygon part of fewer than 3 points, an image flag
    outside the class map).
    """

    format: str
    path: str
    source: str
    run_id: int | None = None
    images: int = 0
    positives: int = 0
    negatives: int = 0
    reviews: int = 0
    annotations: int = 0
    masks: int = 0
    errors: list[LabelError] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """JSON-ready form (errors as dicts)."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("errors", "skipped")}
        d["skipped"] = [dict(p) for p in self.skipped]
        d["errors"] = [e.as_dict() for e in self.errors]
        return d


class _Catalogue:
    """Finds catalogue images from the references label files make to them."""

    def __init__(self, store: Store):
        self.rows = {int(r["id"]): r for r in store.images("ok")}
        self.by_path, self.by_name, self.by_stem = {}, {}, {}
        self._by_sha: dict[str, list[int]] | None = None
        for i, r in self.rows.items():
            p = os.path.normpath(os.path.abspath(r["path"]))
            self.by_path[p] = i
            self.by_name.setdefault(os.path.basename(p), []).append(i)
            self.by_stem.setdefault(stem(p), []).append(i)

    def by_sha(self, path: str) -> list[int]:
        if self._by_sha is None:
            self._by_sha = {}
            for i, r in self.rows.items():
                if r["sha256"]:
                    self._by_sha.setdefault(r["sha256"], []).append(i)
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return self._by_sha.get(h.hexdigest(), [])

    def resolve(self, ref: str, *, exclude: str | None = None, use_hash: bool = False) -> int:
        """The catalogue id of the image ``ref`` names; raises LabelFormatError when none or several."""
        excl = os.path.normpath(os.path.abspath(exclude)) if exclude else None
        p = os.path.normpath(os.path.abspath(ref))
        if p in self.by_path and p != excl:
            return self.by_path[p]
        if use_hash and os.path.isfile(ref):
            ids = self.by_sha(ref)
            if len(ids) == 1:
                return ids[0]
        for table, key in ((self.by_name, os.path.basename(ref)), (self.by_stem, stem(ref))):
            ids = [i for i in table.get(key, []) if os.path.normpath(os.path.abspath(self.rows[i]["path"])) != excl]
            if len(ids) == 1:
                return ids[0]
            if len(ids) > 1:
                shown = ", ".join(self.rows[i]["path"] for i in ids[:3])
                raise LabelFormatError("ambiguous_image", f"{key!r} matches {len(ids)} catalogue images ({shown}...)")
        raise LabelFormatError("not_in_catalogue", f"no catalogue image matches {ref!r}")

    def size_of_stem(self, label_path: str) -> tuple[int, int]:
        """Size of the catalogue image named like a YOLO label file (raises when none or several)."""
        r = self.rows[self.resolve(stem(label_path))]
        return int(r["width"]), int(r["height"])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "x"


def default_mask_dir(store: Store, source: str) -> str:
    """Where imported label images go: ``<catalogue without extension>.labels/import-<source>``.

    Beside the label images painted in the review app (:func:`mining.catalogue.paths.labels_dir`).
    """
    return os.path.join(labels_dir(store.path), "import-" + _safe(source))


def import_labels(
    store: Store,
    fmt: str,
    path: str | os.PathLike,
    *,
    source: str | None = None,
    classes=None,
    negative: Iterable[str] = DEFAULT_NEGATIVE,
    default_category: str = "defect",
    mask_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
) -> ImportSummary:
    """Import labels in format ``fmt`` from ``path`` into the catalogue as reviews and annotations.

    Parameters
    ----------
    store : Store
        An open, writable catalogue holding the images.
    fmt : str
        One of :data:`synthesis.labels.IMPORT_FORMATS` (the written formats and ``cvat``).
    path : str or path-like
        The label file or folder.
    source : str or None
        The reviewer name the labels are stored under (default ``import-<fmt>``).
    classes : ClassMap, list of names, class-map file or None
        The class map: required for YOLO unless a ``classes.txt`` /
        ``data.yaml`` lies beside the labels; for masks it maps pixel values
        to classes; for other formats a class outside it rejects the file.
    negative : iterable of str
        Class names meaning "no defect" (a ``normal`` folder, a ``good`` CSV
        label); compared case-insensitively.
    default_category : str
        Class of non-zero mask pixels when no class map is given.
    mask_dir : path or None
        Where the per-class mask PNGs go (default :func:`default_mask_dir`).
    image_root : path or None
        COCO and CVAT: folder that relative image names are relative to.

    Returns
    -------
    ImportSummary
    """
    check_format(fmt, IMPORT_FORMATS)
    t0 = time.perf_counter()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"label path {path!r} does not exist")
    source = source or f"import-{fmt}"
    neg = {n.lower() for n in negative}
    cmap = class_map_from(classes)
    cat = _Catalogue(store)
    opts: dict = {"classes": cmap}
    if fmt == "masks":
        opts.update(default=default_category, read=read_image)
    elif fmt == "yolo":
        opts.update(size_of=cat.size_of_stem)
    elif fmt in ("coco", "cvat") and image_root is not None:
        opts.update(image_root=image_root)
    if fmt in ("csv", "folders") and cmap is not None:
        opts["classes"] = ClassMap(tuple(dict.fromkeys([*cmap.names, *(n for n in negative)])))
    labels = read_labels(fmt, path, **opts)
    summary = ImportSummary(format=fmt, path=os.path.abspath(path), source=source, errors=list(labels.errors))
    summary.skipped = list(labels.skipped) + [
        {"file": it.source or path, "image": it.image, **part} for it in labels.items for part in it.skipped
    ]
    merged: dict[int, ImageLabels] = {}
    for it in labels.items:
        try:
            image_id = cat.resolve(
                it.image, exclude=it.source if fmt == "masks" else None, use_hash=fmt in _HASH_FORMATS
            )
            row = cat.rows[image_id]
            _check_size(it, int(row["width"]), int(row["height"]))
        except LabelFormatError as err:
            summary.errors.append(LabelError(it.source or path, err.reason, err.detail, image=it.image))
            continue
        if image_id in merged:
            if fmt not in _HASH_FORMATS:
                summary.errors.append(
                    LabelError(
                        it.source or path,
                        "duplicate",
                        f"{row['path']} is already labelled by {merged[image_id].source}",
                        image=it.image,
                    )
                )
                continue
            prev = merged[image_id]
            prev.labels = list(dict.fromkeys([*prev.labels, *it.labels]))
            prev.objects += it.objects
        else:
            merged[image_id] = it
    folder = os.fspath(mask_dir) if mask_dir is not None else default_mask_dir(store, source)
    summary.run_id = store.start_run("import", {"format": fmt, "path": summary.path, "source": source})
    ids = list(merged)
    for k in range(0, len(ids), _BATCH):
        _store_batch(store, cat, [(i, merged[i]) for i in ids[k : k + _BATCH]], neg, source, folder, summary)
    _record_errors(store, summary)
    summary.seconds = time.perf_counter() - t0
    counts = {k: v for k, v in summary.as_dict().items() if isinstance(v, int) and k != "run_id"}
    counts["rejected"] = len(summary.errors)
    store.finish_run(summary.run_id, counts)
    logger.info(
        "imported %s labels for %d images from %s (%d rejected)", fmt, summary.images, path, len(summary.errors)
    )
    return summary


def _check_size(it: ImageLabels, width: int, height: int) -> None:
    if it.width is not None and it.height is not None and (it.width, it.height) != (width, height):
        raise LabelFormatError(
            "size_mismatch", f"labels are for a {it.width}x{it.height} image, the catalogue image is {width}x{height}"
        )
    it.width, it.height = width, height
    for obj in it.objects:
        if obj.box is not None:
            check_box(obj.box, width, height)
        for p in obj.polygons or []:
            check_polygon(p, width, height)


def _store_batch(
    store: Store, cat: _Catalogue, batch, neg: set[str], source: str, folder: str, summary: ImportSummary
) -> None:
    now = time.time()
    prepared = []
    for image_id, it in batch:
        cats = [c for c in it.categories() if c.lower() not in neg]
        objs = [o for o in it.objects if o.category.lower() not in neg and o.geometry() != "none"]
        masks = category_masks(
            ImageLabels(it.image, objects=[o for o in objs if o.geometry() != "box"]), it.height, it.width
        )
        paths = {}
        for c, m in masks.items():
            if m.any():
                name = f"{image_id}_{_safe(stem(cat.rows[image_id]['path']))}_{_safe(c)}.png"
                paths[c] = write_png(os.path.join(folder, name), np.where(m, DEFECT, BACKGROUND).astype(np.uint8))
        prepared.append((image_id, it, cats, objs, paths))
    with store.transaction() as con:
        for image_id, it, cats, objs, paths in prepared:
            con.execute(
                "DELETE FROM reviews WHERE image_id = ? AND reviewer = ? AND source = 'import'", (image_id, source)
            )
            note = f"imported from {it.source}" if it.source else "imported"
            if not cats:
                con.execute(
                    "INSERT INTO reviews (image_id, tile, reviewer, verdict, category, note, source, created_at)"
                    " VALUES (?, -1, ?, 'reject', NULL, ?, 'import', ?)",
                    (image_id, source, note, now),
                )
                summary.reviews += 1
                summary.negatives += 1
            else:
                summary.positives += 1
            for c in cats:
                cur = con.execute(
                    "INSERT INTO reviews (image_id, tile, reviewer, verdict, category, note, mask_path, source,"
                    " created_at) VALUES (?, -1, ?, 'confirm', ?, ?, ?, 'import', ?)",
                    (image_id, source, c, note, paths.get(c), now),
                )
                review_id = int(cur.lastrowid)
                summary.reviews += 1
                summary.masks += int(c in paths)
                for obj in objs:
                    if obj.category != c:
                        continue
                    con.execute(
                        "INSERT INTO annotations (image_id, review_id, category, kind, data, source, created_at)"
                        " VALUES (?, ?, ?, ?, ?, 'import', ?)",
                        (image_id, review_id, c, obj.geometry(), json.dumps(_encode_object(obj)), now),
                    )
                    summary.annotations += 1
            summary.images += 1


def _record_errors(store: Store, summary: ImportSummary) -> None:
    if not summary.errors:
        return
    now = time.time()
    with store.transaction() as con:
        con.executemany(
            "INSERT INTO failures (run_id, image_id, tile, scorer, reason, detail, created_at)"
            " VALUES (?, NULL, -1, ?, ?, ?, ?)",
            [
                (
                    summary.run_id,
                    f"labels:{summary.format}",
                    e.reason,
                    f"{e.file}" + (f" [{e.image}]" if e.image else "") + f": {e.detail}",
                    now,
                )
                for e in summary.errors
            ],
        )
    for e in summary.errors:
        logger.info("label file rejected: %s: %s: %s", e.file, e.reason, e.detail)


def _encode_object(obj: LabelObject) -> dict:
    data: dict = {"box": [float(v) for v in obj.box] if obj.box is not None else None}
    if obj.polygons:
        data["polygons"] = [[float(v) for v in np.asarray(p, np.float64).ravel()] for p in obj.polygons]
    if obj.mask is not None:
        rle = mask_utils.encode(np.asfortranarray(np.asarray(obj.mask, np.uint8)))
        data["rle"] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    if obj.attrs:
        data["attrs"] = obj.attrs
    return data


def _decode_object(category: str, data: dict) -> LabelObject:
    obj = LabelObject(category, attrs=dict(data.get("attrs") or {}))
    if data.get("path"):  # a label image painted in the review app
        arr = _read_label_image(data["path"])
        if arr is not None:
            values = data.get("values") or {}
            obj.mask = arr == int(values["defect"]) if "defect" in values else arr != 0
        return obj
    if data.get("box") is not None:
        obj.box = tuple(float(v) for v in data["box"])
    if data.get("polygons"):
        obj.polygons = [np.asarray(p, np.float64).reshape(-1, 2) for p in data["polygons"]]
    if data.get("rle"):
        rle = {"size": data["rle"]["size"], "counts": data["rle"]["counts"].encode("ascii")}
        obj.mask = mask_utils.decode(rle).astype(bool)
    return obj


def _read_label_image(path: str) -> np.ndarray | None:
    try:
        arr = np.asarray(read_image(path))
    except UnreadableImage as err:
        logger.warning("label image %s unreadable: %s", path, err)
        return None
    return arr[..., 0] if arr.ndim == 3 else arr


def catalogue_labels(
    store: Store, *, reviewers: Sequence[str] | None = None, rule: ConsensusRule | None = None
) -> list[ImageLabels]:
    """The catalogue's labels as :class:`ImageLabels` (see the module notes): decided defects and normals.

    Parameters
    ----------
    store : Store
    reviewers : sequence of str or None
        Count only these reviewers (or import sources); default all.
    rule : ConsensusRule or None
        The consensus rule (default ``ConsensusRule()``, the defaults of the
        ``review:`` config section).

    Returns
    -------
    list of ImageLabels
        Images decided ``confirm`` (with their classes and geometry) or
        ``reject`` (no labels), in catalogue order; ``image`` is the catalogue
        path. Other reviewed images are left out (see :func:`export_labels`).
    """
    return _catalogue_labels(store, image_labels(store, rule, reviewers=reviewers))


def _catalogue_labels(store: Store, labels: dict) -> list[ImageLabels]:
    decided = {image_id: lab for (image_id, _), lab in labels.items() if lab.target is not None}
    ids = sorted(decided)
    images: dict[int, object] = {}
    for k in range(0, len(ids), 500):
        chunk = ids[k : k + 500]
        for r in store.query(
            f"SELECT id, path, width, height, channels FROM images WHERE id IN ({', '.join('?' * len(chunk))})", chunk
        ):
            images[int(r["id"])] = r
    review_ids = [m.review_id for lab in decided.values() for m in lab.marks]
    anns: dict[int, list] = {}
    for k in range(0, len(review_ids), 500):
        chunk = review_ids[k : k + 500]
        for a in store.query(
            f"SELECT review_id, category, kind, data FROM annotations WHERE review_id IN "
            f"({', '.join('?' * len(chunk))}) ORDER BY id",
            chunk,
        ):
            anns.setdefault(a["review_id"], []).append(a)
    items = []
    for image_id in ids:
        img = images.get(image_id)
        if img is None:
            continue
        lab = decided[image_id]
        it = ImageLabels(
            image=img["path"],
            width=img["width"],
            height=img["height"],
            channels=img["channels"],
            labels=list(lab.categories or (DEFAULT_CATEGORY,)) if lab.target == 1 else [],
            source=f"catalogue:{image_id}",
        )
        for m in lab.marks:
            category = m.category or lab.category or DEFAULT_CATEGORY
            rows = anns.get(m.review_id, [])
            it.objects += [_decode_object(a["category"] or category, json.loads(a["data"])) for a in rows]
            if not rows and m.mask_path:
                arr = _read_label_image(m.mask_path)
                if arr is not None and (arr >= _PAINTED_DEFECT_MIN).any():
                    it.objects.append(LabelObject(category, mask=arr >= _PAINTED_DEFECT_MIN))
        items.append(it)
    return items


@dataclass
class LabelExport(WriteResult):
    """What :func:`export_labels` did: the writer's result, and the reviewed images left out and why.

    Attributes
    ----------
    left_out : dict of str to int
        Reviewed images exported as nothing, per reason (a key of
        :data:`mining.verdicts.LEFT_OUT`: ``pending``, ``disagreement``,
        ``dropped``, ``unsure``, ``neutral``).
    negatives_left_out : int
        Images decided normal that were not exported (``include_negatives=False``).
    rule : dict
        The consensus rule the labels follow.
    """

    left_out: dict = field(default_factory=dict)
    negatives_left_out: int = 0
    rule: dict = field(default_factory=dict)

    def describe_left_out(self) -> str:
        """A sentence for people on what was left out and why."""
        text = describe_left_out(self.left_out)
        if self.negatives_left_out:
            text += f"; {self.negatives_left_out} images decided normal not exported (negatives off)"
        return text

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {
            **super().as_dict(),
            "left_out": dict(self.left_out),
            "negatives_left_out": self.negatives_left_out,
            "rule": dict(self.rule),
        }


def export_labels(
    store: Store,
    fmt: str,
    out: str | os.PathLike,
    *,
    reviewers: Sequence[str] | None = None,
    classes=None,
    include_negatives: bool = True,
    rule: ConsensusRule | None = None,
    **options,
) -> LabelExport:
    """Export the catalogue's labels in format ``fmt`` into the folder ``out`` (class map alongside).

    ``out`` may also name the file of a single-file format (``x.json`` for
    COCO, ``x.csv`` for CSV); a file name for a folder format is refused
    with ValueError.

    Parameters
    ----------
    store : Store
    fmt : str
        One of :data:`synthesis.labels.FORMATS`.
    out : path
        Output folder (or COCO / CSV file); each file is written atomically,
        the class map last.
    reviewers : sequence of str or None
        Count only these reviewers or import sources.
    classes : ClassMap, list, class-map file or None
        The class map (ids in YOLO/COCO/masks follow its order); default all
        confirmed classes, sorted. Images with a class outside it are skipped.
    include_negatives : bool
        Also export images decided as having no defect (empty labels).
    rule : ConsensusRule or None
        The consensus rule that decides each image's label (default
        ``ConsensusRule()``; the CLI passes the config's ``review:`` section),
        the same one ``raremine learn`` uses.
    **options
        Passed to the format's writer: ``segmentation`` (coco: polygon/rle),
        ``task`` (yolo: detect/segment), ``negative`` and ``link`` (folders),
        ``image_root`` (coco), ``masks`` (voc).

    Returns
    -------
    LabelExport
        The writer's result, with ``left_out``: the reviewed images exported
        as nothing, per reason.
    """
    check_format(fmt)
    rule = rule or ConsensusRule()
    labels = image_labels(store, rule, reviewers=reviewers)
    items = _catalogue_labels(store, labels)
    n_neg = 0
    if not include_negatives:
        n_neg = sum(1 for it in items if it.is_negative)
        items = [it for it in items if not it.is_negative]
    res = write_labels(fmt, items, out, classes=class_map_from(classes), **options)
    res = LabelExport(
        **{f.name: getattr(res, f.name) for f in fields(WriteResult)},
        left_out=left_out_counts(labels),
        negatives_left_out=n_neg,
        rule=rule.as_dict(),
    )
    logger.info(
        "exported %d images as %s to %s (%d skipped); %s",
        res.images,
        fmt,
        out,
        len(res.skipped),
        res.describe_left_out(),
    )
    return res


__all__ = [
    "DEFAULT_CATEGORY",
    "DEFAULT_NEGATIVE",
    "FORMATS",
    "ImportSummary",
    "LabelExport",
    "catalogue_labels",
    "default_mask_dir",
    "export_labels",
    "import_labels",
]
