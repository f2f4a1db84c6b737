"""The ``raremine`` command line: a thin shell over the ``mining`` and ``synthesis`` libraries.

Each command parses its options, calls one library function and prints the
result. Bad usage exits 2 with a message; bad files never change the exit
code (they are recorded in the catalogue).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="raremine",
    help="Find rare defects in large unlabeled image archives, review them, learn, synthesize.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

log = logging.getLogger("raremine")

DbOpt = Annotated[Path, typer.Option("--db", help="catalogue file (SQLite)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config key: section.key=value")]


def fail(message: str, code: int = 2) -> None:
    """Print an error and exit (2 = bad usage)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def not_built(command: str, issue: str) -> None:
    """Say clearly that a command is not built yet and exit 2."""
    fail(f"`raremine {command}` is not built yet ({issue}); see README.md for what works today")


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


def open_store(db: Path, *, must_exist: bool = True):
    """Open the catalogue, exiting 2 with a clear message when it cannot be."""
    from mining.store import SchemaVersionError, Store

    if must_exist and not db.exists():
        fail(f"catalogue {str(db)!r} does not exist: run `raremine index ROOT --db {db}` first")
    try:
        return Store(db)
    except (SchemaVersionError, ValueError) as err:
        fail(str(err))


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

    cfg = load_config_or_fail(config, set_)
    for r in roots:
        if not r.exists():
            fail(f"archive root {str(r)!r} does not exist")
    ic = cfg.index
    with open_store(db, must_exist=False) as store, progress_bar("index") as cb:
        try:
            s = index_archive(
                store, roots, tile_size=tile_size or ic.tile_size, tile_overlap=ic.tile_overlap,
                max_pixels=max_pixels or ic.max_pixels, workers=workers or ic.workers,
                extensions=[e if e.startswith(".") else "." + e for e in ext] if ext else ic.extensions,
                progress=cb,
            )
        except ValueError as err:
            fail(str(err))
    unread = ", ".join(f"{k} {v}" for k, v in sorted(s.unreadable.items())) or "none"
    typer.echo(
        f"indexed {s.seen} files in {s.seconds:.1f}s: {s.new} new, {s.changed} changed, "
        f"{s.unchanged} unchanged, {s.missing} missing, {s.tiled} tiled; unreadable: {unread}"
    )


@app.command()
def status(db: DbOpt, as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False) -> None:
    """Show what the catalogue holds."""
    with open_store(db) as store:
        st = store.status()
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
) -> None:
    """Train the pixel classifier from scribbles or masks."""
    not_built("fit-pixel", "pixel classifiers")


@app.command()
def mine(
    db: DbOpt,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    scorers: Annotated[str | None, typer.Option(help="comma-separated scorer names (default: config)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes")] = None,
    backend: Annotated[str | None, typer.Option(help="inline or process")] = None,
    rescore: Annotated[bool, typer.Option(help="score again what already has scores")] = False,
) -> None:
    """Run the scorers over every readable image of the catalogue."""
    from mining.config import scorer_params
    from mining.mine import mine as mine_fn
    from mining.scorers import get_scorer

    overrides = list(set_ or [])
    if workers is not None:
        overrides.append(f"mine.workers={workers}")
    if backend is not None:
        overrides.append(f"mine.backend={backend}")
    cfg = load_config_or_fail(config, overrides)
    names = [n.strip() for n in scorers.split(",") if n.strip()] if scorers else cfg.mine.scorers
    try:
        objs = [get_scorer(n, **scorer_params(cfg, n)) for n in names]
    except ValueError as err:
        fail(str(err))
    mc = cfg.mine
    with open_store(db) as store, progress_bar("mine") as cb:
        try:
            s = mine_fn(store, objs, backend=mc.backend, workers=mc.workers, shard_size=mc.shard_size,
                        save_maps=mc.save_maps, max_pixels=cfg.index.max_pixels, rescore=rescore,
                        config=cfg.model_dump(), progress=cb)
        except ValueError as err:
            fail(str(err))
    failed = ", ".join(f"{k} {v}" for k, v in s.failed.items()) or "none"
    rate = f"{s.done / s.seconds:.1f} img/s" if s.seconds and s.done else "-"
    typer.echo(f"mined {s.done} images with {', '.join(names)} in {s.seconds:.1f}s ({rate}); "
               f"skipped {s.skipped} already scored; failed: {failed}")


@app.command("rank")
def rank_cmd(
    db: DbOpt,
    strategy: Annotated[str | None, typer.Option(help="selection strategy")] = None,
    n: Annotated[int | None, typer.Option("--n", help="candidates in the round")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Choose the next round of candidates for review."""
    from mining.rank import rank

    cfg = load_config_or_fail(config, set_)
    with open_store(db) as store:
        try:
            r = rank(store, strategy=strategy or cfg.rank.strategy, n=n or cfg.rank.n, weights=cfg.rank.weights)
        except ValueError as err:
            fail(str(err))
        rows = store.candidates(r)
    typer.echo(f"round {r}: {len(rows)} candidates")
    for c in rows:
        typer.echo(f"  {c['rank']:>3}  {c['score']:.3f}  {c['path']}")


@app.command()
def export(
    db: DbOpt,
    what: Annotated[str, typer.Option(help="scores, candidates or labels")],
    out: Annotated[Path, typer.Option(help="output file")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Export scores or candidates as CSV."""
    from mining.export import export_candidates, export_scores

    allowed = ("scores", "candidates", "labels")
    if what not in allowed:
        fail(f"--what must be one of {', '.join(allowed)}; got {what!r}")
    if what == "labels":
        not_built("export --what labels", "label formats")
    cfg = load_config_or_fail(config, set_)
    with open_store(db) as store:
        try:
            if what == "scores":
                n = export_scores(store, out, weights=cfg.rank.weights)
            else:
                n = export_candidates(store, out)
        except ValueError as err:
            fail(str(err))
    typer.echo(f"wrote {n} rows to {out}")


# -- not built yet ---------------------------------------------------------------------------
@app.command()
def simulate(db: DbOpt, truth: Annotated[Path, typer.Option(help="truth CSV path,label")]) -> None:
    """Simulated review rounds with known truth."""
    not_built("simulate", "learning from verdicts")


@app.command()
def synth(
    config: Annotated[Path, typer.Option("--config", "-c", help="synthesis YAML")],
    out: Annotated[Path, typer.Option(help="output folder")],
) -> None:
    """Synthesize training images with exact masks."""
    not_built("synth", "synthesis")


@app.command()
def review(
    db: DbOpt,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8501,
) -> None:
    """Run the review app for a catalogue."""
    not_built("review", "the review app")


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
    typer.echo(f"\nround {res.round}: top {len(res.top)} of {n_images} images "
               f"({res.n_defects} carry a defect; truth in {res.truth})")
    typer.echo(f"{'rank':>4}  {'score':>6}  {'truth':<14} path")
    for t in res.top:
        mark = f"DEFECT {t['category']}" if t["defect"] else "-"
        typer.echo(f"{t['rank']:>4}  {t['score']:.3f}  {mark:<14} {os.path.relpath(t['path'])}")
    typer.echo(f"\nfound {res.found_in_top} of {res.n_defects} defects in the top {len(res.top)}")
    typer.echo(f"review them: raremine review --db {os.path.relpath(res.db)}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
