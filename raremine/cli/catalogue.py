"""``raremine index`` and ``raremine status``: build the catalogue of an archive, and say what it holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from raremine.cli._options import ConfigOpt, DbOpt, SetOpt
from raremine.cli._util import app, fail, load_config_or_fail, open_store, progress_bar, read_catalogue


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
    from mining.catalogue.index import index_archive
    from mining.catalogue.joblog import exit_code, interrupt_on_sigterm

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
