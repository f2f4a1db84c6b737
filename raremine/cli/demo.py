"""``raremine demo``: a small archive with known defects, mined and ranked (:mod:`mining.demo`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from raremine.cli._util import app, fail


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
