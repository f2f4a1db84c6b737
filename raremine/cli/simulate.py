"""``raremine simulate``: review rounds played from known labels (:func:`mining.learning.simulate.simulate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raremine.cli._options import ConfigOpt, DbOpt, SetOpt
from raremine.cli._util import app, fail, load_config_or_fail, open_store, progress_bar, read_catalogue


# -- not built yet ---------------------------------------------------------------------------
@app.command()
def simulate(
    db: DbOpt,
    truth: Annotated[Path, typer.Option(help="truth CSV: path,label[,category,mask]")],
    out: Annotated[Path, typer.Option(help="output folder (summary.json, rounds.csv, plots, a catalogue copy)")],
    strategy: Annotated[str | None, typer.Option(help="selection strategy or mixture")] = None,
    batch: Annotated[int, typer.Option(help="images reviewed per round")] = 24,
    rounds: Annotated[int, typer.Option(help="review rounds")] = 4,
    step: Annotated[
        int | None,
        typer.Option(help="choose each round this many at a time, learning in between (default rank.step; 0: whole)"),
    ] = None,
    masks_per_round: Annotated[int | None, typer.Option(help="masks painted per round (mixed supervision)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Simulated review rounds with known truth, on a copy of the catalogue (DB is not changed)."""
    from mining.learning.simulate import read_truth, write_outputs
    from mining.learning.simulate import simulate as simulate_fn

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
                step=cfg.rank.step if step is None else step,
                masks_per_round=lc.masks_per_round if masks_per_round is None else masks_per_round,
                learn_kwargs={"config": cfg},
                rank_kwargs={
                    "weights": cfg.rank.weights,
                    "primary": cfg.rank.primary,
                    "fusion": cfg.rank.fusion,
                    "per_category": lc.per_category,
                    "cold_start": lc.cold_start,
                },
                random_state=seed,
                progress=cb,
            )
        except ValueError as err:
            fail(str(err))
    paths = write_outputs(summary, out)
    typer.echo(
        f"{summary['n_positives']} events in {summary['n_images']} images; strategy {summary['strategy']}, "
        f"rounds of {summary['batch']} chosen {summary['step']} at a time"
    )
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
