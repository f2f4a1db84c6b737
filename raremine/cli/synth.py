"""``raremine synth``: synthesize a labelled data set from a config (:mod:`synthesis.pipeline`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raremine.cli._options import SetOpt
from raremine.cli._util import app, fail, progress_bar


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
