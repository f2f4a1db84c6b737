"""``raremine export``, ``import`` and ``convert``: labels in and out of the catalogue, and between formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from raremine.cli._options import ClassesOpt, ConfigOpt, DbOpt, LabelFormatOpt, SetOpt
from raremine.cli._util import app, fail, load_config_or_fail, open_store, read_catalogue


@app.command()
def export(
    db: DbOpt,
    what: Annotated[str, typer.Option(help="scores, candidates or labels")],
    out: Annotated[Path, typer.Option(help="output file; labels: a folder, or a .json file for coco (.csv for csv)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    format_: LabelFormatOpt = None,
    classes: ClassesOpt = None,
    reviewer: Annotated[list[str] | None, typer.Option(help="labels: count only this reviewer / import source")] = None,
    negatives: Annotated[bool, typer.Option(help="labels: also export images reviewed as normal")] = True,
    coco_segmentation: Annotated[str, typer.Option(help="labels, coco: polygon or rle")] = "polygon",
    yolo_task: Annotated[str, typer.Option(help="labels, yolo: detect (boxes) or segment")] = "detect",
    link: Annotated[str, typer.Option(help="labels, folders: copy, hardlink or symlink")] = "copy",
) -> None:
    """Export scores or candidates as CSV, or labels in a label format (--what labels --format F)."""
    from mining.ranking.export import export_candidates, export_scores

    allowed = ("scores", "candidates", "labels")
    if what not in allowed:
        fail(f"--what must be one of {', '.join(allowed)}; got {what!r}")
    cfg = load_config_or_fail(config, set_)
    if what == "labels":
        export_labels_cmd(db, out, format_, classes, reviewer, negatives, coco_segmentation, yolo_task, link, cfg)
        return

    def work(store) -> int:
        try:
            if what == "scores":
                return export_scores(
                    store, out, weights=cfg.rank.weights, primary=cfg.rank.primary, fusion=cfg.rank.fusion
                )
            return export_candidates(store, out)
        except ValueError as err:
            fail(str(err))

    n = read_catalogue(db, work)
    typer.echo(f"wrote {n} rows to {out}")


# -- labels in and out -------------------------------------------------------------------------
def _label_writer_options(fmt: str, coco_segmentation: str, yolo_task: str, link: str) -> dict:
    """Writer options of a label format, checked (exit 2 naming the bad value)."""
    if fmt == "coco":
        if coco_segmentation not in ("polygon", "rle"):
            fail(f"--coco-segmentation must be polygon or rle; got {coco_segmentation!r}")
        return {"segmentation": coco_segmentation}
    if fmt == "yolo":
        if yolo_task not in ("detect", "segment"):
            fail(f"--yolo-task must be detect or segment; got {yolo_task!r}")
        return {"task": yolo_task}
    if fmt == "folders":
        if link not in ("copy", "hardlink", "symlink"):
            fail(f"--link must be copy, hardlink or symlink; got {link!r}")
        return {"link": link}
    return {}


def _check_label_format(fmt: str | None, allowed: tuple[str, ...]) -> str:
    if fmt is None:
        fail(f"--format is required: one of {', '.join(allowed)}")
    if fmt not in allowed:
        fail(f"--format must be one of {', '.join(allowed)}; got {fmt!r}")
    return fmt


def _print_write_result(res, fmt: str, out: Path) -> None:
    typer.echo(f"wrote {res.images} images as {fmt} to {out} ({len(res.files)} files; class map {res.class_map})")
    for e in res.skipped:
        typer.echo(f"  skipped {e.image or e.file}: {e.reason}: {e.detail}")


def export_labels_cmd(
    db: Path,
    out: Path,
    fmt: str | None,
    classes: Path | None,
    reviewer: list[str] | None,
    negatives: bool,
    coco_segmentation: str,
    yolo_task: str,
    link: str,
    cfg=None,
) -> None:
    """``raremine export --what labels``: the labels the consensus rule (``review:``) decides, as ``learn`` uses."""
    from mining.catalogue.labels import export_labels
    from mining.catalogue.verdicts import ConsensusRule
    from synthesis.labels import FORMATS

    fmt = _check_label_format(fmt, FORMATS)
    opts = _label_writer_options(fmt, coco_segmentation, yolo_task, link)

    def work(store):
        try:
            return export_labels(
                store,
                fmt,
                out,
                reviewers=reviewer,
                classes=classes,
                include_negatives=negatives,
                rule=ConsensusRule.from_config(cfg),
                **opts,
            )
        except ValueError as err:
            fail(str(err))

    res = read_catalogue(db, work)
    _print_write_result(res, fmt, out)
    rule = ", ".join(f"{k} {v}" for k, v in res.rule.items())
    typer.echo(f"labels by the consensus rule (review: {rule}); {res.describe_left_out()}")


@app.command("import")
def import_cmd(
    path: Annotated[Path, typer.Argument(help="label file or folder", show_default=False)],
    db: DbOpt,
    format_: LabelFormatOpt = None,
    classes: ClassesOpt = None,
    source: Annotated[str | None, typer.Option(help="reviewer name the labels are stored under")] = None,
    negative: Annotated[list[str] | None, typer.Option(help="class name meaning no defect (repeatable)")] = None,
    default_category: Annotated[str, typer.Option(help="masks: class of non-zero pixels")] = "defect",
    image_root: Annotated[Path | None, typer.Option(help="coco, cvat: folder of relative image names")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object")] = False,
) -> None:
    """Import labels (csv, folders, masks, coco, yolo, voc, labelme, cvat) as reviews and annotations."""
    from mining.catalogue.labels import DEFAULT_NEGATIVE, import_labels
    from synthesis.labels import IMPORT_FORMATS

    fmt = _check_label_format(format_, IMPORT_FORMATS)
    if not path.exists():
        fail(f"label path {str(path)!r} does not exist")
    with open_store(db) as store:
        try:
            s = import_labels(
                store,
                fmt,
                path,
                source=source,
                classes=classes,
                negative=negative or DEFAULT_NEGATIVE,
                default_category=default_category,
                image_root=image_root,
            )
        except ValueError as err:
            fail(str(err))
    if as_json:
        typer.echo(json.dumps(s.as_dict(), sort_keys=True))
        return
    typer.echo(
        f"imported {fmt} labels of {s.images} images as reviewer {s.source!r} in {s.seconds:.1f}s: "
        f"{s.positives} with defects, {s.negatives} normal; {s.reviews} reviews, {s.annotations} annotations, "
        f"{s.masks} masks; rejected: {len(s.errors)}; parts skipped: {len(s.skipped)}"
    )
    for e in s.errors:
        typer.echo(f"  rejected {e.file}" + (f" [{e.image}]" if e.image else "") + f": {e.reason}: {e.detail}")
    for p in s.skipped:
        what = " ".join(str(p[k]) for k in ("shape_type", "label", "flag", "count") if p.get(k) is not None)
        typer.echo(
            f"  skipped in {p.get('file')}"
            + (f" [{p['image']}]" if p.get("image") else "")
            + f": {what}: {p['reason']}"
        )


@app.command()
def convert(
    path: Annotated[Path, typer.Argument(help="label file or folder", show_default=False)],
    from_: Annotated[str, typer.Option("--from", help="input format, or synth (a synthesis output folder)")],
    to: Annotated[str, typer.Option("--to", help="output format")],
    out: Annotated[Path, typer.Option(help="output folder")],
    classes: ClassesOpt = None,
    coco_segmentation: Annotated[str, typer.Option(help="coco: polygon or rle")] = "polygon",
    yolo_task: Annotated[str, typer.Option(help="yolo: detect (boxes) or segment")] = "detect",
    link: Annotated[str, typer.Option(help="folders: copy, hardlink or symlink")] = "copy",
) -> None:
    """Convert labels between formats without a catalogue (e.g. VOC to YOLO, synthesis outputs to COCO)."""
    from synthesis.labels import FORMATS, IMPORT_FORMATS, class_map_from, read_labels, write_labels

    src = _check_label_format(from_, (*IMPORT_FORMATS, "synth"))
    dst = _check_label_format(to, FORMATS)
    if not path.exists():
        fail(f"label path {str(path)!r} does not exist")
    try:
        cmap = class_map_from(classes)
        ls = read_labels(src, path, **({"classes": cmap} if src != "synth" else {}))
        res = write_labels(
            dst,
            ls.items,
            out,
            classes=cmap or (ls.classes or None),
            **_label_writer_options(dst, coco_segmentation, yolo_task, link),
        )
    except ValueError as err:
        fail(str(err))
    for e in ls.errors:
        typer.echo(f"  rejected {e.file}" + (f" [{e.image}]" if e.image else "") + f": {e.reason}: {e.detail}")
    _print_write_result(res, dst, out)
