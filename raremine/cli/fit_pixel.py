"""``raremine fit-pixel``: train the pixel model from label images (:func:`mining.learning.pixel_fit.fit_pixel`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raremine.cli._options import ConfigOpt, DbOpt, SetOpt
from raremine.cli._util import app, fail, load_config_or_fail, open_store, progress_bar


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
    from mining.learning.pixel_fit import fit_pixel as fit_pixel_fn
    from mining.models.pixel_tune import describe

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
    for w in m.get("sampling_warnings", []):
        typer.echo(f"  warning: {w}")
    if "tuning" in m:
        for line in describe(m["tuning"]):
            typer.echo(line)
    elif m.get("tuning_skipped"):
        typer.echo(f"  warning: {m['tuning_skipped']}")
    else:
        typer.echo("  fixed settings (--no-tune): no cross-validated estimate")
