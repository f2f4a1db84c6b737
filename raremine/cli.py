"""The ``raremine`` command line: a thin shell over the ``mining`` and ``synthesis`` libraries.

Each command parses its options, calls one library function and prints the
result. Bad usage exits 2 with a message; bad files never change the exit
code (they are recorded in the catalogue). ``mine`` exits 3 when another mine
job holds the catalogue; a job stopped by Ctrl+C or SIGTERM exits 130 or 143
(its run is recorded as ``interrupted``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    name="raremine",
    help="Find rare defects in large unlabeled image archives, review them, learn, synthesize.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

log = logging.getLogger("raremine")
T = TypeVar("T")

DbOpt = Annotated[Path, typer.Option("--db", help="catalogue file (SQLite)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config key: section.key=value")]
LabelFormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="label format: csv, folders, masks, coco, yolo, voc, labelme; cvat (import only)"),
]
ClassesOpt = Annotated[Path | None, typer.Option(help="class map file (classes.json, classes.txt, data.yaml)")]


#: exit status of ``mine`` when another mine job holds the catalogue
EXIT_BUSY = 3


def fail(message: str, code: int = 2) -> None:
    """Print an error and exit (2 = bad usage)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def load_config_or_fail(config: Path | None, overrides: list[str] | None):
    """Load and validate the config, exiting 2 with the message on error."""
    from mining.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as err:
        fail(str(err))


#: The catalogue the running command opened last (named when SQLite fails later on).
_CATALOGUE: list[Path] = []


def open_store(db: Path, *, must_exist: bool = True, readonly: bool = False, snapshot: bool = False):
    """Open the catalogue, exiting 2 with a clear message when it cannot be.

    Parameters
    ----------
    db : Path
        The catalogue file.
    must_exist : bool
        Refuse a missing file (otherwise a new catalogue is created; never with ``readonly``).
    readonly : bool
        Open for reading only: nothing is written, no file is created.
    snapshot : bool
        With ``readonly``: read an idle catalogue as a snapshot (see :class:`mining.store.Store`).
    """
    import sqlite3

    from mining.store import SchemaVersionError, Store, describe_sqlite_error

    _CATALOGUE[:] = [db]
    if (must_exist or readonly) and not db.exists():
        fail(f"catalogue {str(db)!r} does not exist: run `raremine index ROOT --db {db}` first")
    try:
        return Store(db, readonly=readonly, snapshot=snapshot)
    except (SchemaVersionError, ValueError) as err:
        fail(str(err))
    except sqlite3.Error as err:
        fail(describe_sqlite_error(db, err))
    except OSError as err:
        fail(f"catalogue {str(db)!r} cannot be opened: {err.strerror or err}")


def read_catalogue(db: Path, work: Callable[[Any], T]) -> T:
    """Run ``work(store)`` on a read-only catalogue without writing anything, not even a -wal or -shm file.

    An idle catalogue is read as a snapshot; should a writer change the file
    meanwhile, the work is done again on a live read-only connection.
    """
    with open_store(db, readonly=True, snapshot=True) as store:
        result = work(store)
        again = store.snapshot_changed()
    if again:
        log.info("catalogue %s changed while it was read; reading it again", db)
        with open_store(db, readonly=True) as store:
            result = work(store)
    return result


@contextmanager
def progress_bar(desc: str, unit: str = "img"):
    """A tqdm bar driven by a ``progress(done, total)`` callback."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, dynamic_ncols=True, disable=None, file=sys.stderr)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


# -- index / status ---------------------------------------------------------------------------
@app.command()
def index(
    roots: Annotated[list[Path], typer.Argument(help="archive folders or files", show_default=False)],
    db: DbOpt,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workers: Annotated[int | None, typer.Option(help="decoding threads")] = None,
    tile_size: Annotated[int | None, typer.Option(help="tile images larger than this (px)")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="refuse images with more pixels")] = None,
    ext: Annotated[list[str] | None, typer.Option("--ext", help="only these extensions, e.g. --ext .jpg")] = None,
) -> None:
    """Index image files (PNG, JPEG, BMP, TIFF, .npy) under ROOTS into the catalogue."""
    from mining.index import index_archive
    from mining.joblog import exit_code, interrupt_on_sigterm

    cfg = load_config_or_fail(config, set_)
    for r in roots:
        if not r.exists():
            fail(f"archive root {str(r)!r} does not exist")
    ic = cfg.index
    try:
        with interrupt_on_sigterm(), open_store(db, must_exist=False) as store, progress_bar("index") as cb:
            try:
                s = index_archive(
                    store,
                    roots,
                    tile_size=tile_size or ic.tile_size,
                    tile_overlap=ic.tile_overlap,
                    max_pixels=max_pixels or ic.max_pixels,
                    workers=workers or ic.workers,
                    extensions=[e if e.startswith(".") else "." + e for e in ext] if ext else ic.extensions,
                    progress=cb,
                )
            except ValueError as err:
                fail(str(err))
    except KeyboardInterrupt as err:  # the catalogue marked the run interrupted on the way out
        typer.secho(f"interrupted ({err or 'Ctrl+C'}): run the same command again to finish", err=True)
        raise typer.Exit(exit_code(err)) from None
    unread = ", ".join(f"{k} {v}" for k, v in sorted(s.unreadable.items())) or "none"
    typer.echo(
        f"indexed {s.seen} files in {s.seconds:.1f}s: {s.new} new, {s.changed} changed, "
        f"{s.unchanged} unchanged, {s.missing} missing, {s.tiled} tiled; unreadable: {unread}"
    )


@app.command()
def status(db: DbOpt, as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False) -> None:
    """Show what the catalogue holds (reads only: the catalogue is not changed)."""
    st = read_catalogue(db, lambda store: store.status())
    if as_json:
        typer.echo(json.dumps(st, sort_keys=True))
        return
    typer.echo(f"catalogue {st['catalogue']} (schema v{st['schema_version']})")
    typer.echo(f"  images: {st['images_ok']} readable, {st['images_unreadable']} unreadable, {st['tiles']} tiles")
    for reason, n in st["unreadable_reasons"].items():
        typer.echo(f"    {reason}: {n}")
    scored = ", ".join(f"{k} {v}" for k, v in st["scores_by_scorer"].items()) or "none"
    typer.echo(f"  scores: {scored}; failures: {st['failures']}")
    typer.echo(f"  runs: {st['runs']}; models: {st['models']}")
    typer.echo(f"  candidates: {st['candidates']} in {st['candidate_rounds']} rounds; reviews: {st['reviews']}")


# -- mining ---------------------------------------------------------------------------
@app.command("fit-pixel")
def fit_pixel(
    db: DbOpt,
    images: Annotated[Path, typer.Option(help="folder of training images")],
    labels: Annotated[Path, typer.Option(help="folder of label images with the same stems")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    tune: Annotated[
        bool | None,
        typer.Option(
            "--tune/--no-tune",
            help="choose scales, feature families, normalisation, border and score rule by cross-validation "
            "over the labelled images (default pixel.tune: true); --no-tune keeps the fixed pixel: settings",
        ),
    ] = None,
) -> None:
    """Train the pixel classifier from scribbles or masks (label images: 0 unlabelled, 1 background, 2..K classes)."""
    from mining.pixel_fit import fit_pixel as fit_pixel_fn
    from mining.pixel_tune import describe

    cfg = load_config_or_fail(config, set_)
    with open_store(db, must_exist=False) as store, progress_bar("tune", unit="candidate") as cb:
        try:
            res = fit_pixel_fn(store, images, labels, cfg.pixel, tune=tune, progress=cb)
        except ValueError as err:
            fail(str(err))
    m = res["metrics"]
    method = res.get("method", cfg.pixel.method)
    typer.echo(
        f"pixel model {res['model_id']} ({method}, classes {', '.join(res['classes'])}) trained on "
        f"{sum(m['pixels_per_class'].values())} pixels of {m['images']} images in "
        f"{m['feature_seconds'] + m['fit_seconds']:.1f}s; saved to {res['path']}"
    )
    if "tuning" in m:
        for line in describe(m["tuning"]):
            typer.echo(line)
    elif m.get("tuning_skipped"):
        typer.echo(f"  warning: {m['tuning_skipped']}")
    else:
        typer.echo("  fixed settings (--no-tune): no cross-validated estimate")


@app.command()
def mine(
    db: DbOpt,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    scorers: Annotated[str | None, typer.Option(help="comma-separated scorer names (default: mine.scorers)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (mine.workers)")] = None,
    backend: Annotated[str | None, typer.Option(help="inline, process or dask (mine.backend)")] = None,
    scheduler: Annotated[str | None, typer.Option(help="existing dask scheduler tcp://HOST:PORT")] = None,
    dask_local: Annotated[int | None, typer.Option(help="start a dask LocalCluster of N workers")] = None,
    shard_size: Annotated[int | None, typer.Option(help="images per shard (mine.shard_size)")] = None,
    rescore: Annotated[bool, typer.Option(help="score again what already has scores")] = False,
    log_json: Annotated[Path | None, typer.Option(help="append structured logs (JSON lines) to this file")] = None,
) -> None:
    """Run the configured scorers over every readable image; resumable (run it again after a kill)."""
    from mining.config import scorer_params
    from mining.joblog import exit_code, json_log_handler
    from mining.mine import CatalogueBusy
    from mining.mine import mine as mine_fn
    from mining.scorers import get_scorer, resolve_scorers

    if scheduler is not None and dask_local is not None:
        fail("give either --scheduler (an existing cluster) or --dask-local N (a local one), not both")
    overrides = list(set_ or [])
    if scorers is not None:
        overrides.append(f"mine.scorers=[{scorers}]")
    if backend is not None:
        overrides.append(f"mine.backend={backend}")
    if scheduler is not None or dask_local is not None:
        overrides.append("mine.backend=dask")
    if scheduler is not None:
        overrides.append(f"mine.scheduler={scheduler}")
    if dask_local is not None:
        overrides.append(f"mine.workers={dask_local}")
    if workers is not None:
        overrides.append(f"mine.workers={workers}")
    if shard_size is not None:
        overrides.append(f"mine.shard_size={shard_size}")
    if rescore:
        overrides.append("mine.rescore=true")
    cfg = load_config_or_fail(config, overrides)
    mc = cfg.mine
    if not db.exists():
        fail(f"catalogue {str(db)!r} does not exist: run `raremine index ROOT --db {db}` first")
    with open_store(db) as probe:
        names = resolve_scorers(mc.scorers, probe)
    try:
        objs = [get_scorer(n, **scorer_params(cfg, n)) for n in names]
    except ValueError as err:
        fail(str(err))
    root = logging.getLogger()
    for h in root.handlers:  # the console keeps its level (dask's INFO logs and --log-json stay off it)
        if h.level == logging.NOTSET:
            h.setLevel(root.level)
    handler = json_log_handler(log_json) if log_json is not None else None
    try:
        with open_store(db) as store, mine_progress() as cb:
            try:
                s = mine_fn(
                    store,
                    objs,
                    backend=mc.backend,
                    workers=mc.workers,
                    shard_size=mc.shard_size,
                    save_maps=mc.save_maps,
                    max_pixels=cfg.index.max_pixels,
                    rescore=mc.rescore,
                    scheduler=mc.scheduler,
                    max_in_flight=mc.max_in_flight,
                    retries=mc.retries,
                    start_method=mc.start_method,
                    config=cfg.model_dump(mode="json"),
                    progress=cb,
                )
            except ValueError as err:
                fail(str(err))
            except CatalogueBusy as err:
                fail(str(err), code=EXIT_BUSY)
            finally:
                if handler is not None:
                    logging.getLogger("mining").removeHandler(handler)
                    handler.close()
    except KeyboardInterrupt as err:  # mine recorded the run as interrupted and said how to resume
        typer.secho(f"interrupted ({err or 'Ctrl+C'}): run the same command again to resume", err=True)
        raise typer.Exit(exit_code(err)) from None
    failed = ", ".join(f"{k} {v}" for k, v in sorted(s.failed.items())) or "none"
    rate = f"{s.done / s.timings['stream_s']:.1f} img/s" if s.done and s.timings.get("stream_s") else "-"
    typer.echo(
        f"run {s.run_id}: mined {s.done} images with {', '.join(names)} on {s.backend} "
        f"({s.workers} workers) in {s.seconds:.1f}s ({rate}); skipped {s.skipped} already scored, "
        f"{s.skipped_failed} failed before; failed: {failed}"
        + (f"; {s.maps_retried} images scored again to write maps missing before" if s.maps_retried else "")
        + (f"; maps not written: {s.maps_unwritable} (scores kept; see the warning)" if s.maps_unwritable else "")
    )


@contextmanager
def mine_progress():
    """A tqdm bar (images/s, ETA) driven by mine's ``progress(processed, total)`` callback."""
    from tqdm import tqdm

    bar = tqdm(desc="mine", unit="img", dynamic_ncols=True, disable=None, file=sys.stderr, smoothing=0.1)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


@app.command("rank")
def rank_cmd(
    db: DbOpt,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="top, least_confidence, entropy, margin, random, diversity, balanced, or a mixture "
            "such as top:0.8,least_confidence:0.2"
        ),
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="candidates in the round")] = None,
    seed: Annotated[int, typer.Option(help="seed of the random parts of a strategy")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Choose the next round of candidates for review."""
    from mining.rank import rank

    cfg = load_config_or_fail(config, set_)
    with open_store(db) as store:
        try:
            r = rank(
                store,
                strategy=strategy or cfg.rank.strategy,
                n=n or cfg.rank.n,
                weights=cfg.rank.weights,
                primary=cfg.rank.primary,
                random_state=seed,
                per_category=cfg.learn.per_category,
                cold_start=cfg.learn.cold_start,
            )
        except ValueError as err:
            fail(str(err))
        rows = store.candidates(r)
    typer.echo(f"round {r}: {len(rows)} candidates")
    for c in rows:
        typer.echo(f"  {c['rank']:>3}  {c['score']:.3f}  {c['strategy']:<16} {c['path']}")


@app.command("learn")
def learn_cmd(
    db: DbOpt,
    calibration: Annotated[str | None, typer.Option(help="none, threshold, isotonic or sigmoid")] = None,
    folds: Annotated[int | None, typer.Option(help="folds for out-of-fold probabilities")] = None,
    pixel: Annotated[bool | None, typer.Option("--pixel/--no-pixel", help="retrain the pixel model")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Retrain the re-ranker (and the pixel model) from the verdicts; the next `rank` uses it."""
    from mining.learn import learn

    overrides = list(set_ or [])
    if calibration is not None:
        overrides.append(f"learn.calibration={calibration}")
    if folds is not None:
        overrides.append(f"learn.n_folds={folds}")
    cfg = load_config_or_fail(config, overrides)
    with open_store(db) as store, progress_bar("learn", unit="step") as cb:
        try:
            rep = learn(
                store, config=cfg, pixel=pixel, random_state=seed, progress=lambda stage, done, total: cb(done, total)
            )
        except ValueError as err:
            fail(str(err))
    if as_json:
        typer.echo(json.dumps(rep.as_dict(), sort_keys=True, default=str))
        return
    typer.echo(f"verdicts: {rep.n_labelled} images ({rep.n_confirmed} confirmed, {rep.n_rejected} rejected)")
    if rep.reranker:
        rr = rep.reranker
        typer.echo(
            f"re-ranker: {rr['n_folds']} folds, {rr['n_features']} features, calibration "
            f"{rr['calibration']}; out-of-fold AP {rr['oof_ap']:.3f}, AUROC {rr['oof_auroc']:.3f}"
        )
    else:
        typer.echo(f"re-ranker not trained: {rep.reranker_skipped}")
    typer.echo(f"pixel model: {rep.pixel if rep.pixel else rep.pixel_skipped}")


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
    from mining.export import export_candidates, export_scores

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
                return export_scores(store, out, weights=cfg.rank.weights, primary=cfg.rank.primary)
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
    from mining.labels import export_labels
    from mining.verdicts import ConsensusRule
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
    from mining.labels import DEFAULT_NEGATIVE, import_labels
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


# -- not built yet ---------------------------------------------------------------------------
@app.command()
def simulate(
    db: DbOpt,
    truth: Annotated[Path, typer.Option(help="truth CSV: path,label[,category,mask]")],
    out: Annotated[Path, typer.Option(help="output folder (summary.json, rounds.csv, plots, a catalogue copy)")],
    strategy: Annotated[str | None, typer.Option(help="selection strategy or mixture")] = None,
    batch: Annotated[int, typer.Option(help="images reviewed per round")] = 24,
    rounds: Annotated[int, typer.Option(help="review rounds")] = 4,
    masks_per_round: Annotated[int | None, typer.Option(help="masks painted per round (mixed supervision)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Simulated review rounds with known truth, on a copy of the catalogue (DB is not changed)."""
    from mining.simulate import read_truth, write_outputs
    from mining.simulate import simulate as simulate_fn

    cfg = load_config_or_fail(config, set_)
    if not db.exists():
        fail(f"catalogue {str(db)!r} does not exist: run `raremine index` and `raremine mine` first")
    lc = cfg.learn
    work = out / "catalogue.db"
    if work.resolve() == db.resolve():
        fail(f"--out {str(out)!r} would overwrite the catalogue {str(db)!r}: give another folder")
    read_catalogue(db, lambda store: _backup(store, work))
    with open_store(work, must_exist=True) as store, progress_bar("simulate", unit="round") as cb:
        try:
            t = read_truth(truth, store)
            summary = simulate_fn(
                store,
                t,
                strategy=strategy or cfg.rank.strategy,
                batch=batch,
                rounds=rounds,
                masks_per_round=lc.masks_per_round if masks_per_round is None else masks_per_round,
                learn_kwargs={"config": cfg},
                rank_kwargs={
                    "weights": cfg.rank.weights,
                    "primary": cfg.rank.primary,
                    "per_category": lc.per_category,
                    "cold_start": lc.cold_start,
                },
                random_state=seed,
                progress=cb,
            )
        except ValueError as err:
            fail(str(err))
    paths = write_outputs(summary, out)
    typer.echo(f"{summary['n_positives']} events in {summary['n_images']} images; strategy {summary['strategy']}")
    for k, (rev, rec) in enumerate(zip(summary["reviewed_per_round"], summary["recall_per_round"], strict=True)):
        ap = summary["ap_per_round"][k]
        typer.echo(f"  round {k + 1}: reviewed {rev:>5}, recall {rec:.3f}, AP {'-' if ap is None else f'{ap:.3f}'}")
    typer.echo("wrote " + ", ".join(paths))


def _backup(store, dst: Path) -> None:
    """Copy a (read-only) store's catalogue to ``dst`` with SQLite's backup API (a consistent copy)."""
    import sqlite3

    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    target = sqlite3.connect(dst)
    try:
        store.con.backup(target)
    finally:
        target.close()


@app.command()
def synth(
    config: Annotated[Path, typer.Option("--config", "-c", help="synthesis YAML")],
    out: Annotated[Path, typer.Option(help="output folder")],
    seed: Annotated[int | None, typer.Option(help="override the config's seed")] = None,
    n_images: Annotated[int | None, typer.Option(help="override the config's n_images")] = None,
    set_: SetOpt = None,
) -> None:
    """Synthesize training images with exact masks and a manifest (same config + seed = same bytes)."""
    from synthesis.config import SynthConfigError, load_synth_config
    from synthesis.pipeline import synthesize

    overrides = list(set_ or [])
    overrides += [f"{k}={v}" for k, v in (("seed", seed), ("n_images", n_images)) if v is not None]
    try:
        cfg = load_synth_config(config, overrides=overrides)
    except SynthConfigError as err:
        fail(str(err))
    with progress_bar("synth") as cb:
        try:
            s = synthesize(cfg, out, progress=cb)
        except ValueError as err:
            fail(str(err))
    rate = s.n_images / s.seconds if s.seconds else float("inf")
    typer.echo(
        f"wrote {s.n_images} images ({s.n_defective} with a defect) to {out} in {s.seconds:.1f}s "
        f"({rate:.1f} img/s); manifest {s.manifest}"
    )


@app.command()
def review(
    db: DbOpt,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8501,
    config: ConfigOpt = None,
    address: Annotated[str, typer.Option(help="address to bind (loopback unless told otherwise)")] = "127.0.0.1",
) -> None:
    """Run the review app for a catalogue (Streamlit, headless, in the foreground until stopped)."""
    app_file = Path(__file__).resolve().parent / "app.py"  # raremine/app.py, shipped in the wheel
    if not app_file.is_file():
        fail(f"the review app {str(app_file)!r} is missing from this installation")
    read_catalogue(db, lambda store: None)  # refuses a missing, foreign, damaged or other-version file
    load_config_or_fail(config, None)
    if not 0 < port < 65536:
        fail(f"--port must be in 1..65535; got {port}")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_file),
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--",
        "--db",
        str(db.resolve()),
    ]
    if config is not None:
        cmd += ["--config", str(config.resolve())]
    typer.echo(f"review app for {db} on http://{address}:{port} (Ctrl+C stops it)")
    sys.stdout.flush()
    # become the server (no child left behind when this process is stopped)
    os.execv(cmd[0], cmd)


# -- demo ---------------------------------------------------------------------------
@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="working folder")] = Path("raremine-demo"),
    n_images: Annotated[int, typer.Option(help="images in the demo archive")] = 400,
    top: Annotated[int, typer.Option(help="candidates to show")] = 20,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    workers: Annotated[int, typer.Option(help="worker processes")] = 2,
) -> None:
    """Build a small archive with ~1 % synthetic defects, mine it and show the top candidates."""
    from mining.demo import run_demo

    bars: dict = {}

    def cb(stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(desc=stage, total=total, unit="img", file=sys.stderr, disable=None)
        bar.n = done
        bar.refresh()

    try:
        res = run_demo(out, n_images=n_images, n_top=top, seed=seed, workers=workers, progress=cb)
    except ValueError as err:
        fail(str(err))
    finally:
        for b in bars.values():
            b.close()
    typer.echo(
        f"\nround {res.round}: top {len(res.top)} of {n_images} images "
        f"({res.n_defects} carry a defect; truth in {res.truth})"
    )
    typer.echo(f"{'rank':>4}  {'score':>6}  {'truth':<14} path")
    for t in res.top:
        mark = f"DEFECT {t['category']}" if t["defect"] else "-"
        typer.echo(f"{t['rank']:>4}  {t['score']:.3f}  {mark:<14} {os.path.relpath(t['path'])}")
    typer.echo(f"\nfound {res.found_in_top} of {res.n_defects} defects in the top {len(res.top)}")
    typer.echo(f"review them: raremine review --db {os.path.relpath(res.db)}")


def main() -> None:
    """Console-script entry point.

    An SQLite error that escapes a command (a catalogue damaged beyond its
    first pages, a lock held too long) becomes one ``error:`` line naming the
    catalogue and what to do, with exit code 2, instead of a traceback.
    """
    import sqlite3

    try:
        app()
    except sqlite3.Error as err:
        from mining.store import describe_sqlite_error

        log.debug("SQLite error", exc_info=True)
        where = _CATALOGUE[-1] if _CATALOGUE else Path("?")
        typer.secho(f"error: {describe_sqlite_error(where, err)}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
